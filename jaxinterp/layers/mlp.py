"""Feed-forward blocks with TransformerLens parameters and sites.

Dense:  hook_pre = x W_in + b_in;  hook_post = act(hook_pre);  out = hook_post W_out + b_out.
Gated (GLU family: SwiGLU = silu, GeGLU = gelu), as TransformerLens's GatedMLP:
        hook_pre = x W_gate;  hook_pre_linear = x W_in;
        hook_post = act(hook_pre) * hook_pre_linear.

W_in, W_gate [embed, mlp] = [d_model, d_mlp]; W_out [mlp, embed] = [d_mlp, d_model].
Sites are [batch, pos, d_mlp] (or the `site_axes` given).

The same two-layer MLP in Flax layout (`names=("Dense_0", "Dense_1")`: two `Dense` submodules
with `kernel`, `bias`, Flax dtype promotion) serves the vision MLPs whose released checkpoints
use that layout (Mixer, MAXIM) or whose references name the two layers (RaftMLP `fc1`/`fc2`,
MS-MLP `pwconv1`/`pwconv2`); the sites are the same.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp import hooks
from jaxinterp.layers.axes import NEURON_AXES
from jaxinterp.layers.common import Initializer, activation
from jaxinterp.layers.dense import Dense, dense


class MLP(nn.Module):
    """x: [..., d_model] -> [..., d_model] (a transformer's [batch, pos, d_model]; a deep MLP's
    [batch, d_model]; a mixer's token MLP acts on [batch, d_model, pos]).

    Attributes:
      d_mlp: hidden width.
      act_fn: activation (`jaxinterp.layers.common.ACTIVATIONS`).
      gated: GLU form (adds `W_gate`; see the module docstring; TransformerLens layout only).
      use_bias: `b_in`, `b_out` (Flax layout: each `Dense`'s `bias`).
      init_range: standard deviation of the normal initialiser of the weights.
      kernel_init: initialiser of the weights instead (e.g. Flax's lecun-normal).
      axes: logical names of `W_in`'s (and `W_gate`'s) dims `[d_model, d_mlp]`; `W_out` takes
        them reversed.
      site_axes: names of the hidden sites' axes (x's leading axes, then the hidden one).
      names: None: TransformerLens layout (`W_in`, `b_in`, `W_out`, `b_out` in this module);
        a pair: Flax layout, two `Dense` submodules with these names.
    """

    d_mlp: int
    act_fn: str = "gelu_new"
    gated: bool = False
    use_bias: bool = True
    init_range: float = 0.02
    kernel_init: Initializer | None = None
    axes: tuple[str | None, str | None] = ("embed", "mlp")
    site_axes: tuple[str, ...] = NEURON_AXES
    names: tuple[str, str] | None = None
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.gated and self.names is not None:
            raise ValueError(f"MLP(gated=True) has the TransformerLens layout only; got "
                             f"names={self.names!r} (use names=None)")
        act = activation(self.act_fn)
        init = (nn.initializers.normal(self.init_range) if self.kernel_init is None
                else self.kernel_init)
        kw = dict(kernel_init=init, dtype=self.dtype, param_dtype=self.param_dtype)

        def linear(which: str, i: int, u: jax.Array, features: int, axes, bias: bool):
            if self.names is None:  # W_{which}, b_{which} in this module's scope
                return dense(self, u, features, axes=axes, use_bias=bias,
                             names=(f"W_{which}", f"b_{which}"), promote=False, **kw)
            return Dense(features, axes, use_bias=bias, name=self.names[i], **kw)(u)

        sites = self.site_axes
        pre_in = linear("in", 0, x, self.d_mlp, self.axes, self.use_bias)
        if self.gated:
            gate = linear("gate", 0, x, self.d_mlp, self.axes, False)
            gate = hooks.site(self, "hook_pre", gate, sites)
            linear_in = hooks.site(self, "hook_pre_linear", pre_in, sites)
            post = act(gate) * linear_in
        else:
            post = act(hooks.site(self, "hook_pre", pre_in, sites))
        post = hooks.site(self, "hook_post", post.astype(self.dtype), sites)
        return linear("out", 1, post, x.shape[-1], self.axes[::-1], self.use_bias)


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
