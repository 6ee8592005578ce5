"""The one 2-D convolution of the image families: torch `Conv2d` semantics (cross-correlation,
symmetric zero padding, `groups`) on NHWC arrays, parameters in Flax layout (`kernel` HWIO
`[kh, kw, C_in / groups, features]`, optional `bias [features]`) with logical axis names.

    Conv(features, kernel_size, stride, padding, groups, use_bias)(x)
    depthwise(features, kernel_size, ...)   same-size depthwise conv (groups = channels)

Computed in `dtype` (x, kernel and bias cast to it) with `jax.lax.conv_general_dilated`, except
a conv with one input channel per group (groups = C_in: depthwise, or a channel multiplier),
which is `channelwise_conv` (XLA's SPMD partitioner gets the grouped conv's gradient wrong on
a mesh with tensor > 1).
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
        x, w = x.astype(self.dtype), w.astype(self.dtype)
        if self.groups == c_in > 1:
            y = channelwise_conv(x, w, self.stride, (ph, pw))
        else:
            y = jax.lax.conv_general_dilated(
                x, w, (self.stride, self.stride), [(ph, ph), (pw, pw)],
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.groups)
        if self.use_bias:
            b = param(self, "bias", nn.initializers.zeros, (self.features,),
                      self.kernel_axes[-1:], self.param_dtype)
            y = y + b.astype(self.dtype)
        return y.astype(self.dtype)


def channelwise_conv(x: jax.Array, w: jax.Array, stride: int,
                     pad: tuple[int, int]) -> jax.Array:
    """A grouped conv with one input channel per group (depthwise when out = in, no padding
    beyond `pad`), written as patch extraction (`conv_general_dilated_patches`: a convolution
    with a constant one-hot kernel, so no kernel gradient) and an einsum with the per-channel
    weights, instead of `conv_general_dilated(..., feature_group_count=C)`, whose kernel
    gradient XLA's SPMD partitioner multiplies by the tensor-axis size on a data x fsdp x
    tensor mesh (tests/train/test_families_sharded.py). Same value up to float rounding. (A
    sum of kh * kw shifted slices computes the same but compiles slowly: Strip-MLP's tiny train
    step took 53 s of CPU to compile that way on 8 devices, 34 s this way.)

    x [b, H, W, C], w HWIO [kh, kw, 1, C * m] (output channel c * m + k reads input channel c)
    -> [b, H', W', C * m], H' = (H + 2 ph - kh) // stride + 1 (likewise W')."""
    kh, kw, _, out = w.shape
    c = x.shape[-1]
    if out != c:  # m > 1: x's channel c copied to outputs c * m .. c * m + m - 1 (exact)
        expand = (jnp.arange(out)[None, :] // (out // c) == jnp.arange(c)[:, None])
        x = jnp.einsum("bhwc,co->bhwo", x, expand.astype(x.dtype),  # contract c (one-hot)
                       precision=jax.lax.Precision.HIGHEST)
    ph, pw = pad
    # [b, H', W', out * kh * kw], feature index o * kh * kw + p * kw + q: the taps of each
    # channel, gathered by a convolution with a constant one-hot kernel (no kernel gradient)
    taps = jax.lax.conv_general_dilated_patches(
        x, (kh, kw), (stride, stride), [(ph, ph), (pw, pw)],
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
    taps = taps.reshape(*taps.shape[:3], out, kh * kw)
    # contract the taps t = p * kw + q of each channel with its weights
    return jnp.einsum("bhwot,to->bhwo", taps, w.reshape(kh * kw, out))


def depthwise(features: int, kernel_size: int | tuple[int, int], **kwargs) -> Conv:
    """A same-size depthwise `Conv` (groups = features = C_in, padding kernel // 2): torch
    `Conv2d(C, C, (kh, kw), padding=(kh // 2, kw // 2), groups=C)`. `kwargs` go to `Conv`."""
    kh, kw = _pair(kernel_size)
    return Conv(features, (kh, kw), padding=(kh // 2, kw // 2), groups=features, **kwargs)
