"""The block and network that Activator and NiNformer share (they differ only in the gating
unit): conv patch embedding, `GatedTokenBlock`s, mean over tokens, linear head.

Sites (both models; the gate's own sites are under `blocks.{i}.gate.`, see each model):
  hook_embed                                                       [batch, pos, d_model]
  blocks.{i}.hook_resid_pre, hook_gate_out, hook_resid_mid, hook_mlp_out, hook_resid_post
  blocks.{i}.ln1.hook_normalized, blocks.{i}.ln2.hook_normalized   [batch, pos, d_model]
  blocks.{i}.mlp.hook_pre|hook_post                                [batch, pos, d_mlp]
  hook_pooled                                                      [batch, d_model]
(`ffn=False`: no hook_resid_mid, ln2, mlp or hook_mlp_out.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp import hooks
from jaxinterp.layers.axes import POOLED_AXES, TOKEN_AXES
from jaxinterp.layers.config import dtypes
from jaxinterp.layers.mlp import MLP
from jaxinterp.layers.norms import LayerNormParams, SharedLayerNorm
from jaxinterp.layers.stack import stack
from jaxinterp.layers.vision import (
    ClassifierHead,
    ImageClassifier,
    PatchClassifierConfig,
    PatchEmbed,
    check_positive,
    n_patches,
    pool,
)


@dataclasses.dataclass(frozen=True)
class GatedTokenConfig(PatchClassifierConfig):
    """Hyperparameters of a `GatedTokenNet` (Activator, NiNformer); the defaults are both
    references' CIFAR-10 model (image_size 32, patch_size 4, num_classes 10; the input and
    dtype fields: `layers.vision.PatchClassifierConfig`).

    Attributes:
      n_layers: blocks; d_model: token width; d_mlp: hidden width of the gate's MLPs and of
        the FFN.
      ffn: keep the second (GELU MLP) sub-block (both references do; Activator's "GLU only"
        variant drops it).
      eps: LayerNorm epsilon (torch default 1e-5).
      init_range: standard deviation of the normal initialiser of weights.
    """

    image_size: int = 32
    num_classes: int = 10
    patch_size: int = 4
    n_layers: int = 4
    d_model: int = 256
    d_mlp: int = 512
    ffn: bool = True
    eps: float = 1e-5
    init_range: float = 0.02

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "n_layers", "d_model", "d_mlp")
        n_patches(self.image_size, self.patch_size)


CIFAR10 = dict(image_size=32, patch_size=4, in_channels=3, num_classes=10, n_layers=4,
               d_model=256, d_mlp=512)
"""Both references' CIFAR-10 model (the presets' fields)."""


class GateUnit(nn.Module):
    """Base class of the gating units (`ActivatorGate`, NiNformer's `MixerGatingUnit`): the
    hyperparameters `GatedTokenBlock` gives them. Subclasses define `__call__`,
    x [batch, pos, d_model] -> [batch, pos, d_model]."""

    d_mlp: int
    eps: float = 1e-5
    init_range: float = 0.02
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32


class GatedTokenBlock(nn.Module):
    """The block Activator and NiNformer share; they differ only in the gating unit.

        x = x + gate(LN(x));  x = x + MLP(LN(x))     (the MLP sub-block only if `config.ffn`)

    One LayerNorm's parameters are used for both norms, as in both references. `gate` is a
    `GateUnit` class, called as `gate(d_mlp, eps, init_range, dtype, param_dtype, name="gate")`.
    x [batch, pos, d_model] -> ([batch, pos, d_model], None).
    """

    config: GatedTokenConfig
    gate: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x: jax.Array, layer: int) -> tuple[jax.Array, None]:
        c = self.config
        dtype, pd = dtypes(c)
        w_ln, b_ln = LayerNormParams(pd, name="ln")(c.d_model)
        x = hooks.site(self, "hook_resid_pre", x, TOKEN_AXES)
        h = SharedLayerNorm(c.eps, dtype, name="ln1")(x, w_ln, b_ln, TOKEN_AXES)
        gate = self.gate(c.d_mlp, c.eps, c.init_range, dtype, pd, name="gate")(h)
        x = x + hooks.site(self, "hook_gate_out", gate, TOKEN_AXES)
        if not c.ffn:
            return hooks.site(self, "hook_resid_post", x, TOKEN_AXES), None
        x = hooks.site(self, "hook_resid_mid", x, TOKEN_AXES)
        h = SharedLayerNorm(c.eps, dtype, name="ln2")(x, w_ln, b_ln, TOKEN_AXES)
        mlp = MLP(d_mlp=c.d_mlp, act_fn="gelu", init_range=c.init_range, dtype=dtype,
                  param_dtype=pd, name="mlp")
        x = x + hooks.site(self, "hook_mlp_out", mlp(h), TOKEN_AXES)
        return hooks.site(self, "hook_resid_post", x, TOKEN_AXES), None


class GatedTokenNet(ImageClassifier):
    """Conv patch embedding (no class token, no positions), `GatedTokenBlock`s, mean over
    tokens, linear head: images [batch, H, W, C] float -> logits [batch, num_classes] float32
    (`ImageClassifier` checks the images). Subclasses set `gate`."""

    config: GatedTokenConfig
    gate: Callable[..., nn.Module]

    def forward(self, images: jax.Array, dtype: jnp.dtype, pd: jnp.dtype) -> jax.Array:
        c = self.config
        x = PatchEmbed(c.patch_size, c.d_model, init_range=c.init_range, dtype=dtype,
                       param_dtype=pd, name="patch_embed")(images)
        x = hooks.site(self, "hook_embed", x, TOKEN_AXES)
        x = stack(GatedTokenBlock, x, n_layers=c.n_layers, args=(c, self.gate), axes=TOKEN_AXES)
        pooled = hooks.site(self, "hook_pooled", pool(x, "mean"), POOLED_AXES)
        return ClassifierHead(c.num_classes, init_range=c.init_range, dtype=dtype,
                              param_dtype=pd, name="head")(pooled)
