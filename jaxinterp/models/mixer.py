"""MLP-Mixer (Tolstikhin et al. 2021, "MLP-Mixer: An all-MLP Architecture for Vision").

images [batch, H, W, C] float -> logits [batch, num_classes] float32.

The image is cut into `patch x patch` squares (a conv "stem" with kernel = stride = patch), giving
tokens [batch, pos, d_model]. Each block mixes information across tokens, then across channels:

    x = x + (MLP_tokens(LN(x)ᵀ))ᵀ       token mixing: one MLP shared by all channels, over positions
    x = x + MLP_channels(LN(x))         channel mixing: one MLP shared by all positions
    MLP(u) = Dense_1(gelu(Dense_0(u)))  (gelu: tanh approximation, Flax's `nn.gelu` default)

then LayerNorm, mean over tokens, and a linear head (initialised to zero).

Parameter tree: the original Flax one (google-research/vision_transformer
`vit_jax/models_mixer.py`), so a released checkpoint's `params` maps on leaf for leaf:

    stem/{kernel [p, p, C, d_model], bias}
    MixerBlock_{i}/LayerNorm_0/{scale, bias}
    MixerBlock_{i}/token_mixing/Dense_0/{kernel [pos, d_mlp_tokens], bias}, Dense_1/...
    MixerBlock_{i}/LayerNorm_1/{scale, bias}
    MixerBlock_{i}/channel_mixing/Dense_0/{kernel [d_model, d_mlp], bias}, Dense_1/...
    pre_head_layer_norm/{scale, bias}    head/{kernel [d_model, num_classes], bias}

The only differences are the logical-axis boxes (`nn.LogicallyPartitioned`; `nn.meta.unbox`
removes them) and, with `scan_layers=True`, one `MixerBlock` subtree stacked over blocks.

Sites:
  hook_embed                                      [batch, pos, d_model]  (after the stem)
  blocks.{i}.hook_resid_pre                       [batch, pos, d_model]
  blocks.{i}.token_mixing.hook_pre|hook_post      [batch, d_model, d_mlp] (d_mlp = d_mlp_tokens;
                                                   before / after gelu; one row per channel)
  blocks.{i}.hook_token_out                       [batch, pos, d_model]
  blocks.{i}.hook_resid_mid                       [batch, pos, d_model]
  blocks.{i}.channel_mixing.hook_pre|hook_post    [batch, pos, d_mlp]
  blocks.{i}.hook_channel_out                     [batch, pos, d_model]
  blocks.{i}.hook_resid_post                      [batch, pos, d_model]
  hook_pooled                                     [batch, d_model] (after the final norm and mean)
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.hooks import site
from jaxinterp.layers.axes import IMAGE_AXES, POOLED_AXES, TOKEN_AXES
from jaxinterp.layers.common import activation
from jaxinterp.layers.config import StackConfig, dtype_kwargs
from jaxinterp.layers.dense import Dense, lecun_normal
from jaxinterp.layers.mlp import MLP
from jaxinterp.layers.norms import FlaxLayerNorm
from jaxinterp.layers.stack import stack
from jaxinterp.layers.vision import (
    ImageClassifier,
    PatchClassifierConfig,
    PatchEmbed,
    check_positive,
    n_patches,
)
from jaxinterp.models.preset import Preset


@dataclasses.dataclass(frozen=True)
class MixerConfig(PatchClassifierConfig, StackConfig):
    """Hyperparameters of an MLP-Mixer (the original `MlpMixer`'s num_blocks,
    hidden_dim, tokens_mlp_dim, channels_mlp_dim are n_layers, d_model, d_mlp_tokens, d_mlp;
    image_size, in_channels, num_classes, patch_size, dtype, param_dtype:
    `layers.vision.PatchClassifierConfig`, LayerNorm statistics in float32; scan_layers
    (parameters under `MixerBlock`, stacked), remat: `layers.config.StackConfig`).

    Attributes:
      n_layers: number of Mixer blocks.
      d_model: channels per token.
      d_mlp_tokens: hidden width of the token-mixing MLP.
      d_mlp: hidden width of the channel-mixing MLP.
      eps: LayerNorm epsilon (Flax default 1e-6).
      act_fn: activation (`jaxinterp.layers.common.ACTIVATIONS`); the original is "gelu_new"
        (Flax `nn.gelu`, tanh approximation).
    """

    n_layers: int = 8
    d_model: int = 512
    d_mlp_tokens: int = 256
    d_mlp: int = 2048
    eps: float = 1e-6
    act_fn: str = "gelu_new"

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "n_layers", "d_model", "d_mlp_tokens", "d_mlp")
        n_patches(self.image_size, self.patch_size)  # raises if the patches do not tile
        activation(self.act_fn)  # raises on an unknown name

    @property
    def n_tokens(self) -> int:
        return n_patches(self.image_size, self.patch_size)


def _mlp(d_mlp: int, rows: tuple[str, str], kernel_axes: tuple[str, str], act_fn: str,
         name: str, kw: dict) -> MLP:
    """`Dense_1(act(Dense_0(x)))` on x [b, rows, d] (Flax layout), hidden sites on
    `(*rows, "d_mlp")`; `kernel_axes`: logical names of `Dense_0`'s kernel."""
    return MLP(d_mlp, act_fn, kernel_init=lecun_normal, axes=kernel_axes,
               site_axes=(*rows, "d_mlp"), names=("Dense_0", "Dense_1"), name=name, **kw)


class MixerBlock(nn.Module):
    """One Mixer block. x: [batch, pos, d_model] -> ([batch, pos, d_model], None).

    `layer` is the block index: a Python int when unrolled, a traced int under `nn.scan`.
    """

    config: MixerConfig

    @nn.compact
    def __call__(self, x: jax.Array, layer: int | jax.Array) -> tuple[jax.Array, None]:
        c = self.config
        kw = dtype_kwargs(c)
        x = site(self, "hook_resid_pre", x, TOKEN_AXES)
        y = FlaxLayerNorm(c.eps, name="LayerNorm_0", **kw)(x)
        y = jnp.swapaxes(y, 1, 2)  # [batch, d_model, pos]: the token MLP acts on positions
        y = _mlp(c.d_mlp_tokens, ("batch", "d_model"), ("pos", "mlp"), c.act_fn,
                 "token_mixing", kw)(y)
        y = site(self, "hook_token_out", jnp.swapaxes(y, 1, 2), TOKEN_AXES)
        x = site(self, "hook_resid_mid", x + y, TOKEN_AXES)
        y = FlaxLayerNorm(c.eps, name="LayerNorm_1", **kw)(x)
        y = _mlp(c.d_mlp, ("batch", "pos"), ("embed", "mlp"), c.act_fn,
                 "channel_mixing", kw)(y)
        y = site(self, "hook_channel_out", y, TOKEN_AXES)
        return site(self, "hook_resid_post", x + y, TOKEN_AXES), None


class Mixer(ImageClassifier):
    """MLP-Mixer: images [batch, H, W, C] float -> logits [batch, num_classes] float32
    (see the module docstring; `layers.vision.ImageClassifier` checks the images)."""

    config: MixerConfig

    def forward(self, images: jax.Array, dtype: jnp.dtype, pd: jnp.dtype) -> jax.Array:
        c = self.config
        images = site(self, "hook_image", images.astype(dtype), IMAGE_AXES)
        x = PatchEmbed(c.patch_size, c.d_model, kernel_init=lecun_normal,
                       names=("kernel", "bias"), promote=True, dtype=dtype, param_dtype=pd,
                       name="stem")(images)
        x = site(self, "hook_embed", x, TOKEN_AXES)
        x = stack(MixerBlock, x, n_layers=c.n_layers, scan=c.scan_layers, remat=c.remat,
                  args=(c,), name="MixerBlock", axes=TOKEN_AXES)
        x = FlaxLayerNorm(c.eps, name="pre_head_layer_norm", dtype=dtype, param_dtype=pd)(x)
        x = site(self, "hook_pooled", x.mean(axis=1), POOLED_AXES)
        head = Dense(c.num_classes, ("embed", "vocab"), nn.initializers.zeros, dtype=dtype,
                     param_dtype=pd, name="head")
        return head(x).astype(jnp.float32)


def _preset(blocks: int, hidden: int, tokens_mlp: int, channels_mlp: int, patch: int,
            doc: str) -> Preset:
    return Preset(Mixer, MixerConfig,
                  dict(n_layers=blocks, d_model=hidden, d_mlp_tokens=tokens_mlp,
                       d_mlp=channels_mlp, patch_size=patch, image_size=224,
                       num_classes=1000), doc)


PRESETS: dict[str, Preset] = {
    "mixer_s32": _preset(8, 512, 256, 2048, 32, "Mixer-S/32 (19.1M parameters; paper: 19M)."),
    "mixer_s16": _preset(8, 512, 256, 2048, 16, "Mixer-S/16 (18.5M parameters; paper: 18M)."),
    "mixer_b32": _preset(12, 768, 384, 3072, 32, "Mixer-B/32 (60.3M parameters; paper: 60M)."),
    "mixer_b16": _preset(12, 768, 384, 3072, 16, "Mixer-B/16 (59.9M parameters; paper: 59M)."),
    "mixer_l16": _preset(24, 1024, 512, 4096, 16,
                         "Mixer-L/16 (208.2M parameters; paper: 207M)."),
}
"""The paper's Table 1 configurations at 224x224 with 1000 classes (counts: see
tests/models/test_param_counts_mixer.py)."""
