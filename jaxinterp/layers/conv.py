"""The one 2-D convolution of the image families: torch `Conv2d` semantics (cross-correlation,
symmetric zero padding, `groups`) on NHWC arrays, parameters in Flax layout (`kernel` HWIO
`[kh, kw, C_in / groups, features]`, optional `bias [features]`) with logical axis names.

    Conv(features, kernel_size, stride, padding, groups, use_bias)(x)
    depthwise(features, kernel_size, ...)   same-size depthwise conv (groups = channels)

Computed with `jax.lax.conv_general_dilated` in `dtype` (x, kernel and bias cast to it).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.layers.common import Initializer, param
from jaxinterp.layers.dense import lecun_normal


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class Conv(nn.Module):
    """x [b, H, W, C_in] -> [b, H', W', features], H' = (H + 2 ph - kh) // stride + 1.

    Attributes:
      features: output channels.
      kernel_size: (kh, kw), or one int for a square kernel.
      stride: the same along both spatial axes.
      padding: zero padding (ph, pw) on each side, or one int (torch `padding=`).
      groups: channel groups (`feature_group_count`; C_in and features divisible by it);
        groups = C_in is a depthwise conv.
      use_bias: add `bias [features]` (zero init).
      kernel_axes: logical names of the kernel's four dims (`bias` takes the last).
      kernel_init: initialiser of `kernel` (Flax default: lecun-normal).
    """

    features: int
    kernel_size: int | tuple[int, int]
    stride: int = 1
    padding: int | tuple[int, int] = 0
    groups: int = 1
    use_bias: bool = True
    kernel_axes: tuple[str | None, ...] = (None, None, None, "embed")
    kernel_init: Initializer = lecun_normal
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        (kh, kw), (ph, pw), c_in = _pair(self.kernel_size), _pair(self.padding), x.shape[-1]
        if c_in % self.groups or self.features % self.groups:
            raise ValueError(f"Conv groups={self.groups} must divide the input channels "
                             f"{c_in} and features={self.features}")
        w = param(self, "kernel", self.kernel_init, (kh, kw, c_in // self.groups, self.features),
                  self.kernel_axes, self.param_dtype)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), w.astype(self.dtype), (self.stride, self.stride),
            [(ph, ph), (pw, pw)], dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups)
        if self.use_bias:
            b = param(self, "bias", nn.initializers.zeros, (self.features,),
                      self.kernel_axes[-1:], self.param_dtype)
            y = y + b.astype(self.dtype)
        return y.astype(self.dtype)


def depthwise(features: int, kernel_size: int | tuple[int, int], **kwargs) -> Conv:
    """A same-size depthwise `Conv` (groups = features = C_in, padding kernel // 2): torch
    `Conv2d(C, C, (kh, kw), padding=(kh // 2, kw // 2), groups=C)`. `kwargs` go to `Conv`."""
    kh, kw = _pair(kernel_size)
    return Conv(features, (kh, kw), padding=(kh // 2, kw // 2), groups=features, **kwargs)
