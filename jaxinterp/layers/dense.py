"""The one linear layer every family uses: Flax `nn.Dense`'s parameters (`kernel [in, out]`,
optional `bias [out]`, lecun-normal / zero init) carrying logical axis names.

A released Flax checkpoint (Mixer, MAXIM, ...) maps onto it leaf for leaf; the only difference
is the logical-axis box (`nn.LogicallyPartitioned`; `nn.meta.unbox` removes it).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.layers.common import param

lecun_normal = nn.initializers.lecun_normal()


class Dense(nn.Module):
    """x: [..., in] -> [..., out] = x kernel (+ bias), computed in `dtype`.

    Attributes:
      features: output width `out`.
      axes: logical names of `kernel`'s two dims (`bias` takes the second).
      kernel_init: initialiser of `kernel` (Flax default: lecun-normal).
      use_bias: add `bias [out]` (zero init); without it the tree holds `kernel` only.
    """

    features: int
    axes: tuple[str | None, str | None] = ("embed", "mlp")
    kernel_init: nn.initializers.Initializer = lecun_normal
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = param(self, "kernel", self.kernel_init, (x.shape[-1], self.features), self.axes,
                  self.param_dtype)
        y = jnp.einsum("...i,io->...o", x.astype(self.dtype), k.astype(self.dtype))  # contract in
        if not self.use_bias:
            return y
        b = param(self, "bias", nn.initializers.zeros, (self.features,), (self.axes[1],),
                  self.param_dtype)
        return (y + b.astype(self.dtype)).astype(self.dtype)
