"""Feed-forward blocks with TransformerLens parameters and sites.

Dense:  hook_pre = x W_in + b_in;  hook_post = act(hook_pre);  out = hook_post W_out + b_out.
Gated (GLU family: SwiGLU = silu, GeGLU = gelu), as TransformerLens's GatedMLP:
        hook_pre = x W_gate;  hook_pre_linear = x W_in;
        hook_post = act(hook_pre) * hook_pre_linear.

W_in, W_gate [embed, mlp] = [d_model, d_mlp]; W_out [mlp, embed] = [d_mlp, d_model].
Sites are [batch, pos, d_mlp].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp import hooks
from jaxinterp.layers.axes import NEURON_AXES
from jaxinterp.layers.common import activation, param


class MLP(nn.Module):
    """x: [..., d_model] -> [..., d_model] (a transformer's [batch, pos, d_model]; a deep MLP's
    [batch, d_model]; a mixer's token MLP acts on [batch, d_model, pos]).

    Attributes:
      d_mlp: hidden width.
      act_fn: activation (`jaxinterp.layers.common.ACTIVATIONS`).
      gated: GLU form (adds `W_gate`; see the module docstring).
      use_bias: `b_in`, `b_out`.
      init_range: standard deviation of the normal initialiser of the weights.
      axes: logical names of `W_in`'s (and `W_gate`'s) dims `[d_model, d_mlp]`; `W_out` takes
        them reversed.
      site_axes: names of the hidden sites' axes (x's leading axes, then the hidden one).
    """

    d_mlp: int
    act_fn: str = "gelu_new"
    gated: bool = False
    use_bias: bool = True
    init_range: float = 0.02
    axes: tuple[str | None, str | None] = ("embed", "mlp")
    site_axes: tuple[str, ...] = NEURON_AXES
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d_model = x.shape[-1]
        act = activation(self.act_fn)
        init = nn.initializers.normal(self.init_range)
        zeros = nn.initializers.zeros
        pd = self.param_dtype

        def dense(name: str, w_shape, w_axes, bias: bool) -> jax.Array:
            w = param(self, f"W_{name}", init, w_shape, w_axes, pd)
            return w.astype(self.dtype), (
                param(self, f"b_{name}", zeros, (w_shape[-1],), (w_axes[-1],), pd)
                if bias else None)

        sites = self.site_axes
        w_in, b_in = dense("in", (d_model, self.d_mlp), self.axes, self.use_bias)
        pre_in = jnp.einsum("...m,mn->...n", x, w_in)  # contract d_model
        if b_in is not None:
            pre_in = pre_in + b_in
        pre_in = pre_in.astype(self.dtype)
        if self.gated:
            w_gate, _ = dense("gate", (d_model, self.d_mlp), self.axes, False)
            gate = jnp.einsum("...m,mn->...n", x, w_gate).astype(self.dtype)
            gate = hooks.site(self, "hook_pre", gate, sites)
            linear = hooks.site(self, "hook_pre_linear", pre_in, sites)
            post = act(gate) * linear
        else:
            post = act(hooks.site(self, "hook_pre", pre_in, sites))
        post = hooks.site(self, "hook_post", post.astype(self.dtype), sites)
        w_out, b_out = dense("out", (self.d_mlp, d_model), self.axes[::-1], self.use_bias)
        out = jnp.einsum("...n,nm->...m", post, w_out)  # contract d_mlp
        if b_out is not None:
            out = out + b_out
        return out.astype(self.dtype)


class KANMLP(nn.Module):
    """KAN feed-forward block: two KAN layers d_model -> d_mlp -> d_model (the MLP of a
    transformer with every linear map + activation replaced by learnable edge functions, as in
    Liu et al. 2024, "KAN: Kolmogorov-Arnold Networks"; see `jaxinterp.layers.kan.KANLayer`).

    x: [batch, pos, d_model] -> [batch, pos, d_model]. Sites (relative to the module):
      kan_in.hook_basis [batch, pos, d_model, n_basis], kan_in.hook_edge [batch, pos, d_model,
      d_mlp], kan_in.hook_post [batch, pos, d_mlp] (the hidden "neurons"), and the same under
      kan_out with d_mlp -> d_model. B-spline grids live in the "kan_grid" collection.
    """

    d_mlp: int
    basis: str | tuple[str, ...] = "bspline"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        from jaxinterp.layers.kan import KANLayer  # KAN layers are optional for this module

        h = KANLayer(self.d_mlp, basis=self.basis, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="kan_in")(x)
        out = KANLayer(x.shape[-1], basis=self.basis, dtype=self.dtype,
                       param_dtype=self.param_dtype, name="kan_out")(h)
        return out.astype(self.dtype)
