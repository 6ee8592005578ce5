"""Activator (Abdullah & Aydin 2024, "Activator: GLU Activation Function as the Core Component of
a Vision Transformer"; reference: Abdullah-88/Activator `activator.py`, `train.py`).

images [batch, H, W, C] float -> logits [batch, num_classes] float32.

A ViT-shaped model whose attention is replaced by a GLU-style gating unit acting on each token
on its own (the reference has no token mixing at all; tokens meet only in the final mean):

    u = LN_g(gelu(x W_1 + b_1));  v = LN_g(x W_2 + b_2)     LN_g: one LayerNorm, used twice
    gate(x) = (u * v) W_3 + b_3
    block:  x = x + gate(LN(x));  x = x + W_out gelu(LN(x) W_in + b_in) + b_out
            (LN: one LayerNorm used twice, as in the reference `ActivatorBlock`)

Conv patch embedding (no class token, no positions), blocks, mean over tokens, linear head.
`ffn=False` drops the second sub-block (the paper's "GLU only" variant, reference
`activator_only_GEGLU.py`). GELU is exact (torch nn.GELU).

Sites: those of `jaxinterp.layers.gated_token` (hook_embed, blocks.{i}.hook_resid_pre, ...,
hook_pooled) and the gate's
  blocks.{i}.gate.hook_u, hook_v, hook_gated                       [batch, pos, d_mlp]
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

from jaxinterp import hooks
from jaxinterp.layers import gated_token as gt
from jaxinterp.layers.axes import NEURON_AXES
from jaxinterp.layers.common import activation
from jaxinterp.layers.dense import dense
from jaxinterp.layers.norms import LayerNormParams, SharedLayerNorm
from jaxinterp.models.preset import Preset

ActivatorConfig = gt.GatedTokenConfig
"""Activator's hyperparameters (defaults: the reference CIFAR-10 model)."""


class ActivatorGate(gt.GateUnit):
    """x [batch, pos, d_model] -> (LN(gelu(x W_1 + b_1)) * LN(x W_2 + b_2)) W_3 + b_3."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(kernel_init=nn.initializers.normal(self.init_range), promote=False,
                  dtype=self.dtype, param_dtype=self.param_dtype)

        def linear(i: str, h: jax.Array, features: int, axes) -> jax.Array:  # h W_i + b_i
            return dense(self, h, features, axes=axes, names=(f"W_{i}", f"b_{i}"), **kw)

        w_ln, b_ln = LayerNormParams(self.param_dtype, name="ln")(self.d_mlp)
        u = activation("gelu")(linear("1", x, self.d_mlp, ("embed", "mlp")))
        u = SharedLayerNorm(self.eps, self.dtype, name="ln_u")(u, w_ln, b_ln, NEURON_AXES)
        u = hooks.site(self, "hook_u", u, NEURON_AXES)
        v = linear("2", x, self.d_mlp, ("embed", "mlp"))
        v = SharedLayerNorm(self.eps, self.dtype, name="ln_v")(v, w_ln, b_ln, NEURON_AXES)
        v = hooks.site(self, "hook_v", v, NEURON_AXES)
        g = hooks.site(self, "hook_gated", u * v, NEURON_AXES)
        return linear("3", g, x.shape[-1], ("mlp", "embed"))  # contract d_mlp


class Activator(gt.GatedTokenNet):
    """images [batch, H, W, C] float -> logits [batch, num_classes] float32
    (`gt.GatedTokenNet` with the `ActivatorGate`)."""

    config: ActivatorConfig
    gate: Callable[..., nn.Module] = ActivatorGate


PRESETS: dict[str, Preset] = {
    "activator_c10": Preset(
        Activator, ActivatorConfig, dict(gt.CIFAR10, ffn=True),
        "Activator, the reference CIFAR-10 model (32x32, patch 4, 4 blocks, d_model 256, "
        "d_mlp 512; 2,650,890 parameters)."),
    "activator_glu_only_c10": Preset(
        Activator, ActivatorConfig, dict(gt.CIFAR10, ffn=False),
        "Activator without the second MLP (reference activator_only_GEGLU.py; 1,599,242 "
        "parameters)."),
}
