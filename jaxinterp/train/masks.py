"""Pruning masks for parameter trees: magnitude masks, random masks of the same sparsity, and
applying a mask to the weights and to the optimizer's updates (lottery tickets, neuron pruning).

A mask is a tree shaped like the parameters whose leaves are float 0/1 arrays of the leaf's
shape (1 keeps the weight). Only leaves chosen by `prunable` (default: weight matrices, ndim
>= 2) are pruned; every other leaf gets an all-ones mask. Masks are plain arrays, so a batch
of masks (one per arm) can be `jax.vmap`ped over.

    mask = magnitude_mask(trained_params, sparsity=0.6)          # keep the largest 40%
    rand = random_mask(key, trained_params, sparsity=0.6)         # same count per leaf
    params = apply_mask(init_params, mask)                        # rewound ticket
    opt = optax.chain(optax.adamw(1e-3), mask_updates(mask))      # updates stay masked
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

Prunable = Callable[[tuple, jax.Array], bool]  # (key path, leaf) -> prune this leaf?


def weight_matrices(path: tuple, leaf: jax.Array) -> bool:
    """The default `prunable`: leaves with ndim >= 2 (weight matrices, embeddings)."""
    del path
    return leaf.ndim >= 2


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1) (the fraction of weights removed), "
                         f"got {sparsity}")


def _keep_count(size: int, sparsity: float) -> int:
    return size - round(sparsity * size)


def magnitude_mask(params: Any, sparsity: float, prunable: Prunable = weight_matrices) -> Any:
    """Per leaf, 1 for the `1 - sparsity` fraction of largest |weight| (ties broken by
    position), 0 for the rest; leaves not `prunable` are all ones. Shapes as `params`."""
    _check_sparsity(sparsity)

    def leaf_mask(path, w):
        if not prunable(path, w):
            return jnp.ones(w.shape, jnp.float32)
        keep = _keep_count(w.size, sparsity)
        order = jnp.argsort(-jnp.abs(w).ravel(), stable=True)
        flat = jnp.zeros(w.size, jnp.float32).at[order[:keep]].set(1.0)
        return flat.reshape(w.shape)

    return jax.tree_util.tree_map_with_path(leaf_mask, params)


def random_mask(key: jax.Array, params: Any, sparsity: float,
                prunable: Prunable = weight_matrices) -> Any:
    """Like `magnitude_mask` (the same number of kept weights per leaf), at random positions."""
    _check_sparsity(sparsity)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, (path, w) in zip(keys, leaves, strict=True):
        if not prunable(path, w):
            out.append(jnp.ones(w.shape, jnp.float32))
            continue
        keep = _keep_count(w.size, sparsity)
        order = jax.random.permutation(k, w.size)
        out.append(jnp.zeros(w.size, jnp.float32).at[order[:keep]].set(1.0).reshape(w.shape))
    return jax.tree.unflatten(treedef, out)


def ones_mask(params: Any) -> Any:
    """The mask that keeps everything (the dense arm)."""
    return jax.tree.map(lambda w: jnp.ones(w.shape, jnp.float32), params)


def apply_mask(params: Any, mask: Any) -> Any:
    """`params * mask` leaf by leaf (dtypes kept); the trees must have the same structure."""
    return jax.tree.map(lambda w, m: (w * m).astype(w.dtype), params, mask)


def sparsity_of(mask: Any, prunable: Prunable = weight_matrices) -> float:
    """Fraction of zeros among the `prunable` leaves of `mask`."""
    leaves = [m for path, m in jax.tree_util.tree_flatten_with_path(mask)[0]
              if prunable(path, m)]
    total = sum(m.size for m in leaves)
    zeros = sum(float(jnp.sum(m == 0)) for m in leaves)
    return zeros / max(total, 1)


def mask_updates(mask: Any) -> optax.GradientTransformation:
    """An optax transformation multiplying the updates by `mask` (put it last in a chain, so
    weight decay and Adam's step both stay masked): weights at 0 in a masked init stay 0."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return apply_mask(updates, mask), state

    return optax.GradientTransformation(init_fn, update_fn)
