"""The one linear layer every family uses: `x kernel (+ bias)` over the last axis, parameters
carrying logical axis names.

Two parameter layouts share the arithmetic (`dense`):
  Flax (default): `kernel [in, out]`, `bias [out]` (Flax `nn.Dense`'s names, lecun-normal /
    zero init), with Flax's dtype promotion: x, kernel and bias are cast to `dtype`. A released
    Flax checkpoint (Mixer, MAXIM, ...) maps onto it leaf for leaf; the only difference is the
    logical-axis box (`nn.LogicallyPartitioned`; `nn.meta.unbox` removes it).
  TransformerLens-style (`names=("W_in", "b_in")`, `promote=False`): only the kernel is cast to
    `dtype`; the bias is added as stored and the sum is cast to `dtype` (the arithmetic of every
    `W_*`/`b_*` layer in this package).

`Dense` is the module; `dense(module, x, ...)` declares the same parameters directly in
`module`'s scope (for layers whose parameters sit beside others, e.g. `MLP`'s `W_in`, `W_out`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.layers.common import Initializer, param

lecun_normal = nn.initializers.lecun_normal()


def dense(
    module: nn.Module,
    x: jax.Array,
    features: int,
    *,
    axes: tuple[str | None, str | None] = ("embed", "mlp"),
    kernel_init: Initializer = lecun_normal,
    use_bias: bool = True,
    names: tuple[str, str] = ("kernel", "bias"),
    promote: bool = True,
    dtype: jnp.dtype = jnp.float32,
    param_dtype: jnp.dtype = jnp.float32,
    out_dtype: jnp.dtype | None = None,
) -> jax.Array:
    """x [..., in] -> [..., features] = x kernel (+ bias), parameters declared on `module`.

    `names`: the kernel's and the bias's parameter names; `axes`: logical names of the
    kernel's dims (the bias takes the second). `promote=True` casts x, kernel and bias to
    `dtype` (Flax `nn.Dense`); False casts only the kernel and adds the bias as stored. The
    result is cast to `out_dtype` (default `dtype`).
    """
    kernel_name, bias_name = names
    k = param(module, kernel_name, kernel_init, (x.shape[-1], features), axes, param_dtype)
    if promote:
        x = x.astype(dtype)
    y = jnp.einsum("...i,io->...o", x, k.astype(dtype))  # contract in
    if use_bias:
        b = param(module, bias_name, nn.initializers.zeros, (features,), (axes[1],),
                  param_dtype)
        y = y + (b.astype(dtype) if promote else b)
    return y.astype(dtype if out_dtype is None else out_dtype)


class Dense(nn.Module):
    """x: [..., in] -> [..., out] = x kernel (+ bias), computed in `dtype` (see `dense`).

    Attributes:
      features: output width `out`.
      axes: logical names of `kernel`'s two dims (`bias` takes the second).
      kernel_init: initialiser of `kernel` (Flax default: lecun-normal).
      use_bias: add `bias [out]` (zero init); without it the tree holds `kernel` only.
      names: parameter names of the kernel and the bias (Flax: `kernel`, `bias`).
      promote: Flax dtype promotion (True) or the TransformerLens-style arithmetic (False).
    """

    features: int
    axes: tuple[str | None, str | None] = ("embed", "mlp")
    kernel_init: Initializer = lecun_normal
    use_bias: bool = True
    names: tuple[str, str] = ("kernel", "bias")
    promote: bool = True
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return dense(self, x, self.features, axes=self.axes, kernel_init=self.kernel_init,
                     use_bias=self.use_bias, names=self.names, promote=self.promote,
                     dtype=self.dtype, param_dtype=self.param_dtype)
