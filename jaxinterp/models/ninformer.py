"""NiNformer (Abdullah & Aydin 2024, "NiNformer: A Network in Network Transformer with Token
Mixing Generated Gating Function"; reference: Abdullah-88/NiNformer `ninformer.py`, `train.py`).

images [batch, H, W, C] float -> logits [batch, num_classes] float32.

Attention is replaced by a gating unit whose gate is computed by a whole MLP-Mixer block (the
"network in network"), so the token mixing is dynamic:

    gate(x)  = (x W_p + b_p) * Mixer(x)
    Mixer(x) = y + MLP_c(LN_c(y)),  y = x + MLP_t(LN_t(x)ᵀ)ᵀ    (token MLP over positions)
    block:     x = x + gate(LN(x));  x = x + MLP(LN(x))          (LN: one LayerNorm used twice,
                                                                as in the reference `NiNBlock`)
    MLP(u) = W_2 gelu(W_1 u + b_1) + b_2 (exact GELU, torch nn.GELU)

Conv patch embedding (no class token, no positions), blocks, mean over tokens, linear head.
The reference uses d_ffn (our d_mlp) for the hidden widths of all three MLPs (token, channel, FFN).

Sites: those of `jaxinterp.layers.gated_token` (hook_embed, blocks.{i}.hook_resid_pre, ...,
hook_pooled) and the gate's
  blocks.{i}.gate.hook_linear (x W_p + b_p), gate.hook_mixer (Mixer(x))   [batch, pos, d_model]
  blocks.{i}.gate.mixer.token_mixing.hook_pre|hook_post           [batch, d_model, d_mlp]
  blocks.{i}.gate.mixer.hook_token_out, hook_resid_mid, hook_channel_out  [batch, pos, d_model]
  blocks.{i}.gate.mixer.channel_mixing.hook_pre|hook_post         [batch, pos, d_mlp]
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp import hooks
from jaxinterp.layers import gated_token as gt
from jaxinterp.layers.axes import RESID_AXES
from jaxinterp.layers.dense import dense
from jaxinterp.layers.mlp import MLP
from jaxinterp.layers.norms import LayerNorm
from jaxinterp.models.preset import Preset

NiNformerConfig = gt.GatedTokenConfig
"""NiNformer's hyperparameters (defaults: the reference CIFAR-10 model)."""


class MixerGateBlock(gt.GateUnit):
    """The MLP-Mixer block that computes the gate. x: [batch, pos, d_model] -> same."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # GELU MLPs on the last axis, whose kernels carry no logical name for the mixed axis
        kw = dict(act_fn="gelu", init_range=self.init_range, axes=(None, "mlp"),
                  dtype=self.dtype, param_dtype=self.param_dtype)
        h = LayerNorm(self.eps, self.dtype, self.param_dtype, name="ln_token")(x, RESID_AXES)
        h = MLP(self.d_mlp, site_axes=("batch", "d_model", "d_mlp"), name="token_mixing", **kw)(
            jnp.swapaxes(h, 1, 2))  # [batch, d_model, pos]: mix over positions
        y = x + hooks.site(self, "hook_token_out", jnp.swapaxes(h, 1, 2), RESID_AXES)
        y = hooks.site(self, "hook_resid_mid", y, RESID_AXES)
        h = LayerNorm(self.eps, self.dtype, self.param_dtype, name="ln_channel")(y, RESID_AXES)
        h = MLP(self.d_mlp, site_axes=("batch", "pos", "d_mlp"), name="channel_mixing", **kw)(h)
        return y + hooks.site(self, "hook_channel_out", h, RESID_AXES)


class MixerGatingUnit(gt.GateUnit):
    """x [batch, pos, d_model] -> (x W_p + b_p) * MixerGateBlock(x)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        u = dense(self, x, x.shape[-1], axes=("embed", None),
                  kernel_init=nn.initializers.normal(self.init_range),
                  names=("W_proj", "b_proj"), promote=False, dtype=self.dtype,
                  param_dtype=self.param_dtype)  # x W_proj + b_proj
        u = hooks.site(self, "hook_linear", u, RESID_AXES)
        v = MixerGateBlock(self.d_mlp, self.eps, self.init_range, self.dtype, self.param_dtype,
                           name="mixer")(x)
        v = hooks.site(self, "hook_mixer", v, RESID_AXES)
        return u * v


class NiNformer(gt.GatedTokenNet):
    """images [batch, H, W, C] float -> logits [batch, num_classes] float32
    (`gt.GatedTokenNet` with the `MixerGatingUnit`)."""

    config: NiNformerConfig
    gate: Callable[..., nn.Module] = MixerGatingUnit


PRESETS: dict[str, Preset] = {
    "ninformer_c10": Preset(
        NiNformer, NiNformerConfig,
        dict(gt.CIFAR10),
        "NiNformer, the reference CIFAR-10 model (32x32, patch 4 -> 64 tokens, 4 blocks, "
        "d_model 256, d_mlp 512; 2,652,170 parameters)."),
}
