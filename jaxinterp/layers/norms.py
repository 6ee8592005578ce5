"""LayerNorm and RMSNorm. One copy of the LayerNorm arithmetic (`layer_norm`) behind three
parameter layouts: `LayerNorm` (TransformerLens names `w`, `b`, with a `hook_normalized` site:
the output, after the affine weights, and TransformerLens's `hook_scale`: 1 / sqrt(var + eps)
[..., 1]), `FlaxLayerNorm` (Flax names `scale`, `bias`, no site), and `LayerNormParams` +
`SharedLayerNorm` (one set of weights applied at several sites); one copy of RMSNorm's
(`rms_norm`) behind `RMSNorm` (`w`, `hook_normalized`, `hook_scale`)."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp import hooks
from jaxinterp.layers.common import param


def _same(scale: jax.Array) -> jax.Array:
    return scale


def layer_norm(x: jax.Array, w: jax.Array, b: jax.Array, eps: float, dtype,
               scale_site: Callable[[jax.Array], jax.Array] = _same) -> jax.Array:
    """(x - mean) / sqrt(var + eps) * w + b over the last axis, in float32, returned as `dtype`.

    x: [..., d]; w, b: [d]. The one copy of the LayerNorm arithmetic (every LayerNorm calls it).
    `scale_site` sees the scale 1 / sqrt(var + eps) [..., 1] (a `hook_scale` site).
    """
    xf = x.astype(jnp.float32)
    xf = xf - xf.mean(-1, keepdims=True)
    xf = xf * scale_site(jax.lax.rsqrt((xf * xf).mean(-1, keepdims=True) + eps))
    return (xf * w.astype(jnp.float32) + b.astype(jnp.float32)).astype(dtype)


def rms_norm(x: jax.Array, w: jax.Array, eps: float, dtype,
             scale_site: Callable[[jax.Array], jax.Array] = _same) -> jax.Array:
    """x / sqrt(mean(x²) + eps) * w over the last axis, in float32, returned as `dtype`.

    x: [..., d]; w: [d] (LLaMA's RMSNorm: no centring, no bias). `scale_site` sees the scale
    1 / sqrt(mean(x²) + eps) [..., 1].
    """
    xf = x.astype(jnp.float32)
    xf = xf * scale_site(jax.lax.rsqrt((xf * xf).mean(-1, keepdims=True) + eps))
    return (xf * w.astype(jnp.float32)).astype(dtype)


class _SiteNorm(nn.Module):
    """A norm over the last axis with TransformerLens parameter names (`w`, and `b` where it
    has a bias) and a `hook_normalized` site: the output, after the affine weights. Computed
    in float32. x: [..., d] -> [..., d]. Subclasses define `normalize`."""

    eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
        w = self._weight("w", nn.initializers.ones, x.shape[-1])
        return hooks.site(self, "hook_normalized", self.normalize(x, w, axes), axes)

    def _weight(self, name: str, init, d: int) -> jax.Array:
        return param(self, name, init, (d,), ("embed",), self.param_dtype)

    def _scale_site(self, axes: tuple[str, ...]) -> Callable[[jax.Array], jax.Array]:
        """The `hook_scale` site (TransformerLens's): 1 / sqrt(var + eps) [..., 1]. Freezing
        it (`stop_gradient`) makes the norm linear for attribution graphs."""
        return lambda scale: hooks.site(self, "hook_scale", scale, (*axes[:-1], "one"))

    def normalize(self, x: jax.Array, w: jax.Array, axes: tuple[str, ...]) -> jax.Array:
        raise NotImplementedError


class LayerNorm(_SiteNorm):
    """LayerNorm over the last axis (`layer_norm`, weights `w`, `b`), computed in float32.
    x: [..., d] -> [..., d]."""

    def normalize(self, x: jax.Array, w: jax.Array, axes: tuple[str, ...]) -> jax.Array:
        b = self._weight("b", nn.initializers.zeros, x.shape[-1])
        return layer_norm(x, w, b, self.eps, self.dtype, self._scale_site(axes))


class RMSNorm(_SiteNorm):
    """RMSNorm over the last axis (LLaMA; `rms_norm`, weight `w`), computed in float32.
    x: [..., d] -> [..., d]."""

    eps: float = 1e-6

    def normalize(self, x: jax.Array, w: jax.Array, axes: tuple[str, ...]) -> jax.Array:
        return rms_norm(x, w, self.eps, self.dtype, self._scale_site(axes))


class FlaxLayerNorm(nn.Module):
    """LayerNorm with Flax `nn.LayerNorm`'s parameters (`scale`, `bias` [d], named by
    `axis_name`) and no site, so released Flax checkpoints (Mixer, MAXIM, ...) map leaf for
    leaf. Statistics in float32. x: [..., d] -> [..., d]."""

    eps: float = 1e-6
    axis_name: str = "embed"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        scale = param(self, "scale", nn.initializers.ones, (d,), (self.axis_name,),
                      self.param_dtype)
        bias = param(self, "bias", nn.initializers.zeros, (d,), (self.axis_name,),
                     self.param_dtype)
        return layer_norm(x, scale, bias, self.eps, self.dtype)


class LayerNormParams(nn.Module):
    """The weights `w`, `b` [d] of one LayerNorm applied at several places (NiNformer and
    Activator blocks apply one torch `nn.LayerNorm` twice). Each use is a `SharedLayerNorm`
    with its own name, so each has its own site:

        w, b = LayerNormParams(param_dtype, name="ln")(d_model)
        h = SharedLayerNorm(eps, dtype, name="ln1")(x, w, b, axes)  # <block>.ln1.hook_normalized
    """

    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, d: int) -> tuple[jax.Array, jax.Array]:
        w = param(self, "w", nn.initializers.ones, (d,), ("embed",), self.param_dtype)
        b = param(self, "b", nn.initializers.zeros, (d,), ("embed",), self.param_dtype)
        return w, b


class SharedLayerNorm(nn.Module):
    """One use of a LayerNorm whose weights come from a `LayerNormParams`, with a
    `hook_normalized` site. x: [..., d], w, b: [d] -> [..., d]."""

    eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, w, b, axes: tuple[str, ...]) -> jax.Array:
        return hooks.site(self, "hook_normalized", layer_norm(x, w, b, self.eps, self.dtype),
                          axes)


NORMS = ("LN", "RMS", None)


def make_norm(kind: str | None, eps: float, dtype, param_dtype, name: str) -> nn.Module | None:
    """`"LN"` -> LayerNorm, `"RMS"` -> RMSNorm, `None` -> no norm (returns None)."""
    if kind == "LN":
        return LayerNorm(eps=eps, dtype=dtype, param_dtype=param_dtype, name=name)
    if kind == "RMS":
        return RMSNorm(eps=eps, dtype=dtype, param_dtype=param_dtype, name=name)
    if kind is None:
        return None
    raise ValueError(f"unknown normalization {kind!r}; choose from {NORMS}")
