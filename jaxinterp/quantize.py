"""Simulated (fake) integer quantisation of weights and activations, and the outlier statistics
that predict how much it costs.

Uniform quantisation with `bits` b, scale s and zero point z maps x to the grid

    fake_quant(x) = (clip(round(x / s) + z, q_min, q_max) - z) * s

with round-half-to-even (`jnp.round`, as NumPy and PyTorch). Two grids, as in the quantisers of
Bondarenko et al. 2023 ("Quantizable Transformers", arXiv:2306.12929; their code
`quantization/quantizers/uniform_quantizers.py`, min-max ranges):
  asymmetric (activations): q in [0, 2^b - 1], s = (max - min) / (2^b - 1), z = round(-min / s),
    with the range widened to contain 0 (so 0 is exactly representable);
  symmetric (weights): q in [-2^(b-1), 2^(b-1) - 1], s = max|x| / (2^(b-1) - 1), z = 0.

  FakeQuant(site, scale, zero_point, bits, symmetric)   an intervention (`jaxinterp.run`) that
      quantises the activation at a site; scale and zero point are array leaves (per tensor:
      scalars; per channel: broadcastable), so runs with different ranges vmap.
  quant_params(lo, hi, bits, symmetric) -> (scale, zero_point)   min-max ranges -> grid.
  activation_ranges(model, variables, *inputs, sites) -> {site: (min, max)}   one batch's ranges
      at every site (combine batches with `merge_ranges`); vmappable over runs.
  act_quant_interventions(ranges, bits) -> [FakeQuant]          one per site (asymmetric).
  quantize_weights(params, bits, per_channel) -> params         every weight matrix and
      embedding (leaves with >= 2 axes whose name does not start with "b") fake-quantised
      symmetrically; biases (b_Q [heads, d_head], ...) and norm scales stay in float (as in
      the authors' code, which keeps biases in 32 bits).
  outlier_stats(x) -> (inf_norm, kurtosis)                      per example, over all its
      entries (their `validate_mlm.py`: `x.view(batch, -1)`; kurtosis `mu_4 / (std^4 + 1e-6)`
      with the unbiased std, ~3 for a Gaussian, large when a few entries are outliers).

Per-channel weights (`per_channel=True`) get one scale per output feature: the maximum runs over
the axes the weight contracts with its input, known by the TransformerLens parameter names
(`INPUT_AXES`); the parameters must be unscanned (`jaxinterp.models.unstack_layers`), since a
scanned leaf holds every layer. These are inference-time tools: `round` has zero gradient
(no straight-through estimator).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from jaxinterp.hooks import SiteView
from jaxinterp.interventions import ArrayLike, Intervention

# Axes each weight contracts with its input (TransformerLens layouts): per-channel ranges are
# taken over these, one scale per remaining (output) index.
INPUT_AXES: dict[str, tuple[int, ...]] = {
    "W_Q": (1,), "W_K": (1,), "W_V": (1,),  # [heads, d_model, d_head]
    "W_O": (0, 1),  # [heads, d_head, d_model]
    "W_in": (0,), "W_out": (0,), "W_gate": (0,),  # [d_in, d_out]
    "W_U": (0,),  # [d_model, d_vocab]
    "W_E": (1,), "W_pos": (1,),  # embeddings: one scale per row (token / position)
    "W_G": (0,),  # gate, all_heads_linear [d_model, heads]
}
_SCALE_EPS = 1e-12  # a range of width 0 (a constant site) keeps a positive scale


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """(q_min, q_max) of the integer grid."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 16:
        raise ValueError(f"bits={bits!r} must be an int in [2, 16]")
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def quant_params(lo: ArrayLike, hi: ArrayLike, bits: int = 8, symmetric: bool = False
                 ) -> tuple[jax.Array, jax.Array]:
    """Scale and zero point of a min-max range [lo, hi] (arrays of any broadcastable shape)."""
    lo, hi = jnp.minimum(jnp.asarray(lo, jnp.float32), 0.0), jnp.maximum(
        jnp.asarray(hi, jnp.float32), 0.0)
    q_min, q_max = qrange(bits, symmetric)
    if symmetric:
        scale = jnp.maximum(jnp.maximum(-lo, hi) / q_max, _SCALE_EPS)
        return scale, jnp.zeros_like(scale)
    scale = jnp.maximum((hi - lo) / (q_max - q_min), _SCALE_EPS)
    return scale, jnp.round(-lo / scale)


def fake_quant(x: jax.Array, scale: ArrayLike, zero_point: ArrayLike, bits: int = 8,
               symmetric: bool = False) -> jax.Array:
    """x rounded to the grid of (scale, zero_point) and mapped back (module docstring)."""
    q_min, q_max = qrange(bits, symmetric)
    scale = jnp.asarray(scale, jnp.float32)
    q = jnp.clip(jnp.round(x.astype(jnp.float32) / scale) + zero_point, q_min, q_max)
    return ((q - zero_point) * scale).astype(x.dtype)


@struct.dataclass
class FakeQuant(Intervention):
    """Quantises the activation at `site`: `fake_quant(x, scale, zero_point, bits, symmetric)`.

    `scale` and `zero_point` broadcast against the site (scalars: per tensor). `bits` and
    `symmetric` are static. Selectors (`positions`, `heads`) work as for every intervention.
    """

    site: str = struct.field(pytree_node=False)
    scale: ArrayLike
    zero_point: ArrayLike = 0.0
    bits: int = struct.field(pytree_node=False, default=8)
    symmetric: bool = struct.field(pytree_node=False, default=False)
    positions: ArrayLike | None = None
    heads: ArrayLike | None = None

    def _new_value(self, x: jax.Array, view: SiteView) -> jax.Array:
        return fake_quant(x, self._operand("scale", view, jnp.float32),
                          self._operand("zero_point", view, jnp.float32), self.bits,
                          self.symmetric)


def activation_ranges(model: nn.Module, variables: Any, *inputs: Any,
                      sites: str | Sequence[str], interventions: Sequence[Intervention] = ()
                      ) -> dict[str, tuple[jax.Array, jax.Array]]:
    """{site: (min, max)} of one batch at every site matching `sites` (names or globs), with
    `interventions` applied (e.g. an experiment's own); jit- and vmap-able."""
    from jaxinterp.run import run

    _, cache = run(model, variables, *inputs, capture=sites, interventions=list(interventions))
    return {name: (x.min(), x.max()) for name, x in cache.items()}


def merge_ranges(a: Mapping[str, tuple[Any, Any]], b: Mapping[str, tuple[Any, Any]]
                 ) -> dict[str, tuple[Any, Any]]:
    """The union of two batches' ranges, site by site (min of mins, max of maxes)."""
    if set(a) != set(b):
        raise ValueError(f"merge_ranges: different sites {sorted(set(a) ^ set(b))}")
    return {k: (jnp.minimum(a[k][0], b[k][0]), jnp.maximum(a[k][1], b[k][1])) for k in a}


def act_quant_interventions(ranges: Mapping[str, tuple[ArrayLike, ArrayLike]], bits: int = 8,
                            symmetric: bool = False) -> list[FakeQuant]:
    """One `FakeQuant` per site of `ranges` (per-tensor, min-max)."""
    out = []
    for site, (lo, hi) in ranges.items():
        scale, zero = quant_params(lo, hi, bits, symmetric)
        out.append(FakeQuant(site, scale, zero, bits=bits, symmetric=symmetric))
    return out


def quantize_weights(params: Any, bits: int = 8, per_channel: bool = False) -> Any:
    """Every leaf with >= 2 axes (not a bias: name not starting with "b") fake-quantised on a
    symmetric grid (per tensor, or per output
    channel by `INPUT_AXES`); other leaves unchanged. Returns the unboxed tree (logical-axis
    boxes removed), which `model.apply` takes as it is."""
    qrange(bits, True)

    def one(path, w):
        name = getattr(path[-1], "key", str(path[-1]))
        if jnp.ndim(w) < 2 or name.startswith("b"):  # biases (b_Q [heads, d_head], b, bias)
            return w
        if per_channel:
            if name not in INPUT_AXES or max(INPUT_AXES[name]) >= w.ndim:
                raise ValueError(f"quantize_weights(per_channel=True): no input axes known for "
                                 f"parameter {jax.tree_util.keystr(path)} of shape {w.shape}; "
                                 f"known names: {sorted(INPUT_AXES)} (unscanned layouts)")
            axes = INPUT_AXES[name]
        else:
            axes = tuple(range(w.ndim))
        absmax = jnp.abs(w).max(axis=axes, keepdims=True)
        scale, zero = quant_params(-absmax, absmax, bits, symmetric=True)
        return fake_quant(w, scale, zero, bits, symmetric=True)

    return jax.tree_util.tree_map_with_path(one, nn.meta.unbox(params))


def outlier_stats(x: jax.Array, eps: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """x [batch, ...] -> (inf_norm [batch], kurtosis [batch]) over each example's entries."""
    rows = x.reshape(x.shape[0], -1).astype(jnp.float32)
    mu = rows.mean(axis=1, keepdims=True)
    std = rows.std(axis=1, ddof=1)
    kurt = ((rows - mu) ** 4).mean(axis=1) / (std ** 4 + eps)
    return jnp.abs(rows).max(axis=1), kurt
