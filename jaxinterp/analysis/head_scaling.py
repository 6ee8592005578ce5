"""Head scaling: multiply one head's attention to chosen keys by gamma, for every (gamma,
layer, head) at once.

    deltas = head_scale_sweep(model, variables, tokens, gammas=[0.0, 0.5], keys=0,
                              metric=lambda logits: accuracy(logits, targets))  # [G, L, H]

The scaling acts on the post-softmax pattern `blocks.{l}.attn.hook_pattern` [batch, head,
query_pos, key_pos] of one layer and one head, on the keys `keys` selects (for an attention
sink, key position 0, the BOS token), for every query. Two forms:

  plain (`redistribute=False`): `A'[q, k] = gamma A[q, k]` on the selected keys, the rest
    unchanged; this is `ji.Scale` with a multiplier of shape [batch or 1, head, 1, key_pos]
    that is gamma at (head h, selected keys) and 1 elsewhere. With gamma < 1 the removed mass
    is simply gone (the head's output loses `(1 - gamma) A[q, s] v_s`).
  redistribute (`redistribute=True`): the same scaling, and the mass removed from the selected
    keys is given to the other keys of the row in proportion to their attention, so each row
    keeps its sum (`redistribute_attention`). This is the calibration of ACT (Yu et al. 2024,
    "Unveiling and Harnessing Hidden Attention Sinks: Enhancing Large Language Models without
    Training through Attention Calibration": the attention of a sink token is scaled by
    beta < 1 and the freed attention goes to the other tokens; here the sink is chosen by the
    caller, not detected per input by ACT's `attention > alpha / N` rule), applied through
    `ji.Apply`.

`ji.Scale` expresses the plain form as it is (its `scale` broadcasts against the site), so it
is not extended; the redistribution depends on each row's own attention, which no constant
multiplier expresses, so it is a function applied through `ji.Apply`.

`head_scale_sweep` evaluates the whole (gamma x layer x head) grid as one compiled call, each
grid point a single run with one intervention at one head: per layer, `jax.vmap` over the
(gamma, head) points (or `lax.map` in chunks of `batch_size`, to bound memory), as
`steering.strength_sweep` does for steering strengths. An all-ones multiplier leaves a
pattern exactly as it was, in both forms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.interventions import Apply, Scale
from jaxinterp.run import run

PATTERN_SITE = "blocks.{}.attn.hook_pattern"


def redistribute_attention(pattern: jax.Array, multiplier: jax.Array) -> jax.Array:
    """Scales attention by `multiplier` and gives the removed mass to the unscaled keys.

    Keys whose multiplier is not 1 are the scaled keys: they get `pattern * multiplier`. The
    other keys of each row are multiplied by one common factor `1 + removed / rest`, where
    `removed = sum over scaled keys of pattern * (1 - multiplier)` and `rest` is the row's
    attention on the unscaled keys: so each row keeps its sum and the unscaled keys keep their
    proportions (ACT's calibration, see the module docstring). A row with no attention on
    unscaled keys (e.g. the first query of a causal model, which sees only key 0) is left as
    it was. With multipliers > 1 the factor is clipped at 0 (the scaled keys then hold more
    than the row's sum). An all-ones multiplier returns `pattern` exactly.

    Args:
      pattern: [..., query_pos, key_pos] attention weights (e.g. [batch, head, q, k]).
      multiplier: broadcastable to `pattern`, e.g. [batch or 1, head, 1, key_pos].

    Returns:
      The calibrated pattern, same shape and dtype as `pattern`.
    """
    multiplier = jnp.asarray(multiplier, pattern.dtype)
    try:
        fits = np.broadcast_shapes(multiplier.shape, pattern.shape) == pattern.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"multiplier of shape {multiplier.shape} does not broadcast to the "
                         f"pattern's shape {pattern.shape}")
    scaled = pattern * multiplier
    free = multiplier == 1
    rest = jnp.sum(jnp.where(free, pattern, 0), axis=-1, keepdims=True)
    removed = jnp.sum(pattern - scaled, axis=-1, keepdims=True)
    ok = rest > 0
    factor = jnp.maximum(1 + removed / jnp.where(ok, rest, 1), 0)
    new = jnp.where(free, pattern * factor, scaled)
    return jnp.where(ok, new, pattern)


def head_key_multiplier(n_heads: int, n_keys: int, head: jax.Array, gamma: jax.Array,
                        keys: Any) -> jax.Array:
    """[batch or 1, n_heads, 1, n_keys]: gamma at (`head`, selected keys), 1 elsewhere; it
    broadcasts against a `hook_pattern` [batch, head, query_pos, key_pos].

    `keys`: an int key position, a bool mask [n_keys] or a per-sequence bool mask
    [batch, n_keys]. `head` and `gamma` may be traced scalars.
    """
    mask = _key_mask(keys, n_keys)  # [batch or 1, n_keys]
    on = (jnp.arange(n_heads) == head)[None, :, None, None] & mask[:, None, None, :]
    return jnp.where(on, jnp.asarray(gamma, jnp.float32), 1.0)


def head_scale_intervention(layer: int, multiplier: jax.Array, redistribute: bool = False):
    """The intervention at `blocks.{layer}.attn.hook_pattern` for a multiplier (e.g. from
    `head_key_multiplier`): `ji.Scale` (plain) or `ji.Apply(redistribute_attention)` (ACT)."""
    site = PATTERN_SITE.format(layer)
    if redistribute:
        return Apply(site, redistribute_attention, multiplier)
    return Scale(site, multiplier)


def head_scale_sweep(
    model: nn.Module,
    variables: Any,
    inputs: Any,
    gammas: Sequence[float] | jax.Array,
    keys: Any = 0,
    *,
    metric: Callable[[Any], jax.Array] | None = None,
    redistribute: bool = False,
    layers: Sequence[int] | None = None,
    batch_size: int | None = None,
) -> jax.Array:
    """`metric(output)` with one head's attention to `keys` scaled by gamma, for every
    (gamma, layer, head), in one compiled call.

    Each grid point is one run with one intervention, `head_scale_intervention(layer,
    head_key_multiplier(..., head, gamma, keys))`. Inside the one jitted call, each layer's
    (gamma, head) points are vmapped (or `lax.map`ped in chunks of `batch_size`), so the
    layers before the scaled one are computed once for all of them, not once per point.

    Args:
      model, variables: a transformer whose layers have `blocks.{i}.attn.hook_pattern` sites
        (`model.config.n_layers`, `n_heads`).
      inputs: its tokens [batch, pos].
      gammas: [G] multipliers.
      keys: the scaled keys: a key position (default 0: the first token, a BOS sink), a bool
        mask [pos] or a per-sequence bool mask [batch, pos] (e.g. one random key each).
      metric: maps the model's output to what is kept (default the whole output).
      redistribute: False: plain `ji.Scale`; True: ACT's form (`redistribute_attention`).
      layers: the layers swept (default all).
      batch_size: (gamma, head) points per chunk (None: each layer's points in one vmap).

    Returns:
      `[G, len(layers), n_heads, ...]`: the stacked `metric(output)`.
    """
    gammas = jnp.asarray(gammas, jnp.float32)
    if gammas.ndim != 1:
        raise ValueError(f"gammas must be 1-D, got shape {gammas.shape}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_layers, n_heads = model.config.n_layers, model.config.n_heads
    layers = list(range(n_layers)) if layers is None else [int(i) for i in layers]
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has {n_layers} layers")
    n_keys = jnp.shape(inputs)[-1]
    mask = _key_mask(keys, n_keys)
    metric = metric or (lambda out: out)
    points = jnp.stack(jnp.meshgrid(jnp.arange(len(gammas)), jnp.arange(n_heads),
                                    indexing="ij"), -1).reshape(-1, 2)  # [G * H, 2]

    def sweep(variables, inputs, mask, gammas, points):
        per_layer = []
        for layer in layers:
            def one(point, layer=layer):
                mult = head_key_multiplier(n_heads, n_keys, point[1], gammas[point[0]], mask)
                iv = head_scale_intervention(layer, mult, redistribute)
                return metric(run(model, variables, inputs, interventions=[iv])[0])

            per_layer.append(jax.vmap(one)(points) if batch_size is None
                             else jax.lax.map(one, points, batch_size=batch_size))
        # [L, G * H, ...] -> [G, L, H, ...]
        return jax.tree.map(lambda *xs: jnp.stack(xs, 1).reshape(
            len(gammas), n_heads, len(layers), *xs[0].shape[1:]).swapaxes(1, 2), *per_layer)

    # Variables and inputs are arguments, not constants of the compiled call (XLA would try
    # to constant-fold the whole forward pass).
    return jax.jit(sweep)(variables, inputs, mask, gammas, points)


def _key_mask(keys: Any, n_keys: int) -> jax.Array:
    """[batch or 1, n_keys] bool from an int position, a [n_keys] or a [batch, n_keys] mask."""
    arr = jnp.asarray(keys)
    if arr.dtype == jnp.bool_:
        if arr.ndim not in (1, 2) or arr.shape[-1] != n_keys:
            raise ValueError(f"keys mask has shape {arr.shape}; expected ({n_keys},) or "
                             f"(batch, {n_keys})")
        return arr.reshape(-1, n_keys)
    if arr.ndim != 0 or not jnp.issubdtype(arr.dtype, jnp.integer):
        raise ValueError(f"keys must be an int key position or a bool mask, got {keys!r}")
    if not isinstance(arr, jax.core.Tracer) and not -n_keys <= int(arr) < n_keys:
        raise ValueError(f"key position {int(arr)} is outside a sequence of {n_keys} keys")
    return (jnp.arange(n_keys) == arr % n_keys)[None]
