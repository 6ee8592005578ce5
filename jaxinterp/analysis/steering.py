"""Steering vectors: build them from contrastive activations, add them, sweep their strength.

Construction (from paired activations `positive[i]`, `negative[i]`, each [n, d]):
- `mean_difference`: `mean(positive) - mean(negative)` (ActAdd, Turner et al. 2023; contrastive
  activation addition, Rimsky et al. 2024).
- `principal_direction`: the top principal direction of the paired differences
  `positive[i] - negative[i]` (representation engineering, Zou et al. 2023), unit norm, with
  its sign chosen so that the mean difference projects positively on it.

Use:
- `steering_vectors` captures the activations of contrastive prompt sets at one position of
  each site and builds a vector per site;
- `steer` turns `{site: vector}` and per-site weights into `ji.Add` interventions (per-layer
  weighted steering);
- `strength_sweep` runs a whole range of strengths as one vmapped (optionally chunked) call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.interventions import Add
from jaxinterp.run import run


def _check_pairs(positive: jax.Array, negative: jax.Array, paired: bool) -> None:
    if positive.ndim != 2 or negative.ndim != 2:
        raise ValueError(f"activations must be [n, d], got {positive.shape} and {negative.shape}")
    if positive.shape[1] != negative.shape[1]:
        raise ValueError(f"positive and negative widths differ: {positive.shape} vs "
                         f"{negative.shape}")
    if paired and positive.shape != negative.shape:
        raise ValueError("paired differences need as many positive as negative examples, got "
                         f"{positive.shape} and {negative.shape}")
    if positive.shape[0] == 0 or negative.shape[0] == 0:
        raise ValueError("need at least one positive and one negative example")


def mean_difference(positive: jax.Array, negative: jax.Array) -> jax.Array:
    """`mean(positive) - mean(negative)`: [n_pos, d], [n_neg, d] -> [d]."""
    positive, negative = jnp.asarray(positive), jnp.asarray(negative)
    _check_pairs(positive, negative, paired=False)
    return positive.mean(0) - negative.mean(0)


def principal_direction(positive: jax.Array, negative: jax.Array,
                        center: bool = False) -> jax.Array:
    """Top principal direction of the paired differences: [n, d], [n, d] -> unit [d].

    Uncentred by default: the direction that maximises the summed squared projection of the
    differences, which keeps the consistent shift between the pairs. `center=True` removes the
    mean difference first (then the direction is the main *variation* of the shift).
    """
    positive, negative = jnp.asarray(positive), jnp.asarray(negative)
    _check_pairs(positive, negative, paired=True)
    diffs = (positive - negative).astype(jnp.float32)
    mean = diffs.mean(0)
    if center:
        diffs = diffs - mean
    _, _, vt = jnp.linalg.svd(diffs, full_matrices=False)
    direction = vt[0]
    return jnp.where(direction @ mean < 0, -direction, direction)


def steering_vectors(
    model: nn.Module,
    variables: Any,
    positive_inputs: Any,
    negative_inputs: Any,
    sites: str | Sequence[str],
    *,
    position: int = -1,
    method: Literal["mean", "pca"] = "mean",
) -> dict[str, jax.Array]:
    """`{site: vector [d]}` from the activations of contrastive inputs at `position`.

    Args:
      model, variables: a model whose sites have a position axis second ([batch, pos, ..., d]).
      positive_inputs, negative_inputs: model inputs, e.g. tokens [n, pos] (the same shape for
        `method="pca"`, whose examples are paired by index).
      sites: site names or globs (`"blocks.*.hook_resid_post"` gives one vector per layer).
      position: the position whose activation is used (-1: the last token).
      method: "mean" (`mean_difference`) or "pca" (`principal_direction`).
    """
    builders: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
        "mean": mean_difference, "pca": principal_direction}
    if method not in builders:
        raise ValueError(f"method={method!r}; choose from {sorted(builders)}")
    patterns = (sites,) if isinstance(sites, str) else tuple(sites)
    _, pos_cache = run(model, variables, positive_inputs, capture=patterns)
    _, neg_cache = run(model, variables, negative_inputs, capture=patterns)
    out = {}
    for name, a in pos_cache.items():
        b = neg_cache[name]
        if a.ndim < 3 or not -a.shape[1] <= position < a.shape[1]:
            raise ValueError(f"site {name!r} of shape {a.shape} has no position {position}")
        pa, nb = a[:, position], b[:, position]
        out[name] = builders[method](pa.reshape(pa.shape[0], -1),
                                     nb.reshape(nb.shape[0], -1)).reshape(pa.shape[1:])
    return out


def steer(
    vectors: Mapping[str, jax.Array],
    weights: Mapping[str, float] | float = 1.0,
    *,
    scale: float | jax.Array = 1.0,
    positions: Any = None,
) -> list[Add]:
    """`ji.Add` interventions adding `scale * weights[site] * vectors[site]` at each site.

    Args:
      vectors: `{site: vector}`, e.g. from `steering_vectors`.
      weights: one weight per site (per-layer weighted steering) or one for all.
      scale: a global strength (a leaf: vmap or differentiate it).
      positions: where to add (default every position).
    """
    if not isinstance(weights, Mapping):
        weights = dict.fromkeys(vectors, weights)
    missing, extra = sorted(set(vectors) - set(weights)), sorted(set(weights) - set(vectors))
    if missing or extra:
        raise ValueError(f"weights must name exactly the vector sites; missing {missing}, "
                         f"extra {extra}")
    return [Add(site, jnp.asarray(v), scale=jnp.asarray(scale) * weights[site],
                positions=positions) for site, v in vectors.items()]


def strength_sweep(
    model: nn.Module,
    variables: Any,
    inputs: Any,
    vectors: Mapping[str, jax.Array],
    strengths: jax.Array,
    *,
    weights: Mapping[str, float] | float = 1.0,
    positions: Any = None,
    metric: Callable[[jax.Array], jax.Array] | None = None,
    batch_size: int | None = None,
) -> jax.Array:
    """The model's output (or `metric(output)`) at every steering strength, in one compiled
    call: `vmap` over `strengths`, or `lax.map` in chunks of `batch_size` to bound memory.

    Args:
      inputs: one model input (e.g. tokens [batch, pos]).
      vectors, weights, positions: as for `steer`.
      strengths: [n] global scales.
      metric: maps the model output to what is kept (e.g. the last position's logits); default
        the whole output.
      batch_size: strengths per chunk (None: all at once).

    Returns:
      `[n, ...]`: the stacked `metric(output)`.
    """
    strengths = jnp.asarray(strengths)
    if strengths.ndim != 1:
        raise ValueError(f"strengths must be 1-D, got shape {strengths.shape}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    metric = metric or (lambda out: out)

    def one(s):
        out, _ = run(model, variables, inputs,
                     interventions=steer(vectors, weights, scale=s, positions=positions))
        return metric(out)

    if batch_size is None:
        return jax.jit(jax.vmap(one))(strengths)
    return jax.jit(lambda s: jax.lax.map(one, s, batch_size=batch_size))(strengths)
