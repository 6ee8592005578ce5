"""LayerNorm and RMSNorm with TransformerLens parameter names (`w`, `b`) and a
`hook_normalized` site (the output, after the affine weights)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp import hooks
from jaxinterp.layers.common import param


class LayerNorm(nn.Module):
    """LayerNorm over the last axis, computed in float32. x: [..., d] -> [..., d]."""

    eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
        d = x.shape[-1]
        w = param(self, "w", nn.initializers.ones, (d,), ("embed",), self.param_dtype)
        b = param(self, "b", nn.initializers.zeros, (d,), ("embed",), self.param_dtype)
        xf = x.astype(jnp.float32)
        xf = xf - xf.mean(-1, keepdims=True)
        xf = xf * jax.lax.rsqrt((xf * xf).mean(-1, keepdims=True) + self.eps)
        y = (xf * w.astype(jnp.float32) + b.astype(jnp.float32)).astype(self.dtype)
        return hooks.site(self, "hook_normalized", y, axes)


class RMSNorm(nn.Module):
    """RMSNorm over the last axis (LLaMA), computed in float32. x: [..., d] -> [..., d]."""

    eps: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
        d = x.shape[-1]
        w = param(self, "w", nn.initializers.ones, (d,), ("embed",), self.param_dtype)
        xf = x.astype(jnp.float32)
        xf = xf * jax.lax.rsqrt((xf * xf).mean(-1, keepdims=True) + self.eps)
        y = (xf * w.astype(jnp.float32)).astype(self.dtype)
        return hooks.site(self, "hook_normalized", y, axes)


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
