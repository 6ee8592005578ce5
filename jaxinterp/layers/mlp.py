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
from jaxinterp.layers.common import activation, param

NEURON_AXES = ("batch", "pos", "d_mlp")


class MLP(nn.Module):
    """x: [batch, pos, d_model] -> [batch, pos, d_model]."""

    d_mlp: int
    act_fn: str = "gelu_new"
    gated: bool = False
    use_bias: bool = True
    init_range: float = 0.02
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

        w_in, b_in = dense("in", (d_model, self.d_mlp), ("embed", "mlp"), self.use_bias)
        pre_in = jnp.einsum("bpm,mn->bpn", x, w_in)  # contract d_model
        if b_in is not None:
            pre_in = pre_in + b_in
        pre_in = pre_in.astype(self.dtype)
        if self.gated:
            w_gate, _ = dense("gate", (d_model, self.d_mlp), ("embed", "mlp"), False)
            gate = jnp.einsum("bpm,mn->bpn", x, w_gate).astype(self.dtype)
            gate = hooks.site(self, "hook_pre", gate, NEURON_AXES)
            linear = hooks.site(self, "hook_pre_linear", pre_in, NEURON_AXES)
            post = act(gate) * linear
        else:
            post = act(hooks.site(self, "hook_pre", pre_in, NEURON_AXES))
        post = hooks.site(self, "hook_post", post.astype(self.dtype), NEURON_AXES)
        w_out, b_out = dense("out", (self.d_mlp, d_model), ("mlp", "embed"), self.use_bias)
        out = jnp.einsum("bpn,nm->bpm", post, w_out)  # contract d_mlp
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
