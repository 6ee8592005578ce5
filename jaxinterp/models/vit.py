"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words") and the
Kolmogorov-Arnold Transformer (KAT; Yang & Wang 2024), a ViT whose MLP is a GR-KAN.

images [batch, H, W, C] float -> logits [batch, num_classes] float32.

Layout as in google-research/vision_transformer and timm's `vit_*_patch16_224`: a conv patch
embedding, a class token prepended at position 0, learned positions (one per token, class token
included), pre-LN blocks (LayerNorm eps 1e-6, exact GELU MLP), a final LayerNorm, then the class
token's features (or the mean over tokens, `pool="mean"`) through a linear head. Attention and
MLP are `jaxinterp.layers.Attention` (non-causal) and `jaxinterp.layers.MLP`, so sites are named
as in the transformer:

  hook_embed       [batch, pos, d_model]  class token (pos 0) then the patch embeddings
  hook_pos_embed   [batch, pos, d_model]  learned positions
  blocks.{i}.hook_resid_pre, hook_attn_out, hook_resid_mid, hook_mlp_out, hook_resid_post
  blocks.{i}.ln1.hook_normalized, blocks.{i}.ln2.hook_normalized
  blocks.{i}.attn.hook_q|hook_k|hook_v|hook_z          [batch, pos, head, d_head]
  blocks.{i}.attn.hook_attn_scores|hook_pattern        [batch, head, query_pos, key_pos]
  blocks.{i}.mlp.hook_pre|hook_post                    [batch, pos, d_mlp]
  ln_final.hook_normalized  [batch, pos, d_model];  hook_pooled [batch, d_model]
where pos = 1 + (H / patch) * (W / patch) with a class token (patches row-major).

KAT (`mlp_type="grkan"`, reference Adamdad/kat `KAN`): the MLP becomes
`x -> act1 -> fc1 -> act2 -> fc2`, i.e. two GR-KAN layers, each a group-rational activation
followed by a linear map: `jaxinterp.layers.kan_rational.GroupRationalKAN` with
`shared_numerator=True` (rational_kat_cu `KAT_Group`: one numerator P of degree 5 shared by
the `grkan_groups` contiguous channel groups, a denominator per group), and the KAT paper's
denominator Q(x) = 1 + |b_1 x + ... + b_4 x^4| >= 1. fc1's rational starts as the identity,
fc2's as swish (`grkan_init`; Adamdad/kat `kat_{tiny,small,base}_patch16_224` use
act_init="swish", its `*_gelu_*` variants "gelu"). KAT MLP sites are the GR-KAN layers':
  blocks.{i}.mlp.fc1.hook_basis  [batch, pos, d_model]  act1(x), what fc1 reads
  blocks.{i}.mlp.fc1.hook_post   [batch, pos, d_mlp]    fc1's output (ViT's mlp.hook_pre)
  blocks.{i}.mlp.fc2.hook_basis  [batch, pos, d_mlp]    act2 of it, what fc2 reads (the
                                                        neurons; ViT's mlp.hook_post)
  blocks.{i}.mlp.fc2.hook_post   [batch, pos, d_model]  the MLP's output (= hook_mlp_out)
(no per-edge `hook_edge`: [batch, pos, d_model, d_mlp] per block is too large to be useful).

Parameter counts equal timm's: vit_tiny_patch16_224 5,717,416; vit_small 22,050,664;
vit_base 86,567,656 (tests/models/test_param_counts_vision.py derives them independently).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp import hooks
from jaxinterp.layers import vision as vc
from jaxinterp.layers.attention import Attention
from jaxinterp.layers.axes import POOLED_AXES, RESID_AXES
from jaxinterp.layers.common import ACTIVATIONS, param
from jaxinterp.layers.config import StackConfig, dtypes
from jaxinterp.layers.kan_rational import RATIONAL_INITS, GroupRationalKAN
from jaxinterp.layers.mlp import MLP
from jaxinterp.layers.norms import LayerNorm
from jaxinterp.layers.stack import stack
from jaxinterp.models.preset import Preset

MLP_TYPES = ("dense", "grkan")


@dataclasses.dataclass(frozen=True)
class ViTConfig(vc.PatchClassifierConfig, StackConfig):
    """Hyperparameters of a ViT (and of KAT, `mlp_type="grkan"`); image_size, in_channels,
    num_classes, patch_size, dtype, param_dtype: `layers.vision.PatchClassifierConfig`;
    scan_layers, remat: `layers.config.StackConfig`.

    Attributes:
      n_layers, d_model, n_heads, d_head, d_mlp: transformer sizes (timm: depth, embed_dim,
        num_heads, embed_dim // num_heads, mlp_ratio * embed_dim).
      act_fn: MLP activation ("gelu" = exact, as timm's nn.GELU); unused by "grkan".
      mlp_type: "dense" (ViT's MLP) or "grkan" (KAT's group-rational KAN feed-forward).
      grkan_groups: GR-KAN groups (KAT: 8); must divide d_model and d_mlp (the same setting
        as `KANConfig.grkan_groups`).
      grkan_init: initial shape of KAT's second rational (act2; the first starts as the
        identity): "swish" (Adamdad/kat presets), "gelu" or "identity"
        (`kan_rational.RATIONAL_INITS`; `KANConfig.grkan_init` is the same setting).
      class_token: prepend a learned class token (then pos = 1 + n_patches).
      pool: "token" (class token's features) or "mean" (mean over all tokens), after ln_final.
      eps: LayerNorm epsilon (1e-6 in ViT/timm).
      init_range: standard deviation of the normal initialiser of weights.
      head_init_range: the head's; 0 means zeros (big_vision).
    """

    n_layers: int = 12
    d_model: int = 192
    n_heads: int = 3
    d_head: int = 64
    d_mlp: int = 768
    act_fn: str = "gelu"
    mlp_type: Literal["dense", "grkan"] = "dense"
    grkan_groups: int = 8
    grkan_init: str = "swish"
    class_token: bool = True
    pool: Literal["token", "mean"] = "token"
    eps: float = 1e-6
    init_range: float = 0.02
    head_init_range: float = 0.02

    def __post_init__(self):
        super().__post_init__()
        vc.check_positive(self, "n_layers", "d_model", "n_heads", "d_head", "d_mlp",
                          "grkan_groups")
        vc.n_patches(self.image_size, self.patch_size)
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn={self.act_fn!r}; choose from {sorted(ACTIVATIONS)}")
        if self.mlp_type not in MLP_TYPES:
            hint = " ('mlp' is now called 'dense')" if self.mlp_type == "mlp" else ""
            raise ValueError(f"mlp_type={self.mlp_type!r}; choose from {MLP_TYPES}{hint}")
        if self.mlp_type == "grkan":
            for f in ("d_model", "d_mlp"):
                if getattr(self, f) % self.grkan_groups:
                    raise ValueError(f"grkan_groups={self.grkan_groups} must divide {f}="
                                     f"{getattr(self, f)}")
            if self.grkan_init not in RATIONAL_INITS:
                raise ValueError(f"grkan_init={self.grkan_init!r}; choose from "
                                 f"{sorted(RATIONAL_INITS)}")
        if self.pool not in vc.POOLS:
            raise ValueError(f"pool={self.pool!r}; choose from {vc.POOLS}")
        if self.pool == "token" and not self.class_token:
            raise ValueError("pool='token' needs class_token=True (or use pool='mean')")

    @property
    def n_tokens(self) -> int:
        """Sequence length: patches plus the class token."""
        return vc.n_patches(self.image_size, self.patch_size) + int(self.class_token)


class GRKANFeedForward(nn.Module):
    """KAT's feed-forward (Adamdad/kat `KAN`): GR-KAN `fc1` (act1 = identity at init, then
    d_model -> d_mlp) and GR-KAN `fc2` (act2 = `act_init`, then d_mlp -> d_model).
    x: [batch, pos, d_model] -> [batch, pos, d_model].

    Parameters per layer: `numerator [1, 6]` (shared), `denominator [groups, 4]`, `kernel`,
    `bias`.
    """

    d_mlp: int
    groups: int = 8
    act_init: str = "swish"
    init_range: float = 0.02
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        layer = functools.partial(GroupRationalKAN, n_groups=self.groups, shared_numerator=True,
                                  kernel_init=nn.initializers.normal(self.init_range),
                                  edge_sites=False, dtype=self.dtype,
                                  param_dtype=self.param_dtype)
        h = layer(self.d_mlp, rational_init="identity", kernel_axes=("embed", "mlp"),
                  name="fc1")(x)
        return layer(x.shape[-1], rational_init=self.act_init, kernel_axes=("mlp", "embed"),
                     name="fc2")(h)


class ViTBlock(nn.Module):
    """Pre-LN encoder block. x: [batch, pos, d_model] -> ([batch, pos, d_model], None).
    `layer` is the block index (`jaxinterp.layers.stack` names the sites `blocks.{layer}.…`)."""

    config: ViTConfig

    @nn.compact
    def __call__(self, x: jax.Array, layer: int | jax.Array) -> tuple[jax.Array, None]:
        c = self.config
        dtype, pd = dtypes(c)
        resid_pre = hooks.site(self, "hook_resid_pre", x, RESID_AXES)
        h = LayerNorm(c.eps, dtype, pd, name="ln1")(resid_pre, RESID_AXES)
        attn = Attention(n_heads=c.n_heads, d_head=c.d_head, causal=False,
                         init_range=c.init_range, dtype=dtype, param_dtype=pd, name="attn")
        attn_out = hooks.site(self, "hook_attn_out", attn(h), RESID_AXES)
        resid_mid = hooks.site(self, "hook_resid_mid", resid_pre + attn_out, RESID_AXES)
        h = LayerNorm(c.eps, dtype, pd, name="ln2")(resid_mid, RESID_AXES)
        if c.mlp_type == "grkan":
            mlp = GRKANFeedForward(d_mlp=c.d_mlp, groups=c.grkan_groups,
                                   act_init=c.grkan_init, init_range=c.init_range,
                                   dtype=dtype, param_dtype=pd, name="mlp")
        else:
            mlp = MLP(d_mlp=c.d_mlp, act_fn=c.act_fn, init_range=c.init_range, dtype=dtype,
                      param_dtype=pd, name="mlp")
        mlp_out = hooks.site(self, "hook_mlp_out", mlp(h), RESID_AXES)
        return hooks.site(self, "hook_resid_post", resid_mid + mlp_out, RESID_AXES), None


class ViT(vc.ImageClassifier):
    """ViT or KAT: images [batch, H, W, C] float -> logits [batch, num_classes] float32
    (see the module docstring; `layers.vision.ImageClassifier` checks the images)."""

    config: ViTConfig

    def forward(self, images: jax.Array, dtype: jnp.dtype, pd: jnp.dtype) -> jax.Array:
        c = self.config
        batch = images.shape[0]
        x = vc.PatchEmbed(c.patch_size, c.d_model, init_range=c.init_range, dtype=dtype,
                          param_dtype=pd, name="patch_embed")(images)
        if c.class_token:
            cls = param(self, "cls_token", nn.initializers.zeros, (c.d_model,), ("embed",), pd)
            cls = jnp.broadcast_to(cls.astype(dtype), (batch, 1, c.d_model))
            x = jnp.concatenate([cls, x], axis=1)
        x = hooks.site(self, "hook_embed", x, RESID_AXES)
        w_pos = param(self, "pos_embed", nn.initializers.normal(c.init_range),
                      (c.n_tokens, c.d_model), ("pos", "embed"), pd)
        pos = jnp.broadcast_to(w_pos.astype(dtype), (batch, c.n_tokens, c.d_model))
        x = x + hooks.site(self, "hook_pos_embed", pos, RESID_AXES)

        x = stack(ViTBlock, x, n_layers=c.n_layers, scan=c.scan_layers, remat=c.remat,
                  args=(c,), axes=RESID_AXES)

        x = LayerNorm(c.eps, dtype, pd, name="ln_final")(x, RESID_AXES)
        pooled = hooks.site(self, "hook_pooled", vc.pool(x, c.pool), POOLED_AXES)
        return vc.ClassifierHead(c.num_classes, init_range=c.head_init_range, dtype=dtype,
                                 param_dtype=pd, name="head")(pooled)


def _vit(d_model: int, n_heads: int, **kw) -> dict:
    return dict(image_size=224, patch_size=16, in_channels=3, num_classes=1000, n_layers=12,
                d_model=d_model, n_heads=n_heads, d_head=d_model // n_heads, d_mlp=4 * d_model,
                **kw)


PRESETS: dict[str, Preset] = {
    "vit_ti16": Preset(ViT, ViTConfig, _vit(192, 3),
                       "ViT-Ti/16 at 224x224, 1000 classes (timm vit_tiny_patch16_224, "
                       "5,717,416 parameters)."),
    "vit_s16": Preset(ViT, ViTConfig, _vit(384, 6),
                      "ViT-S/16 at 224x224, 1000 classes (timm vit_small_patch16_224, "
                      "22,050,664 parameters)."),
    "vit_b16": Preset(ViT, ViTConfig, _vit(768, 12),
                      "ViT-B/16 at 224x224, 1000 classes (timm vit_base_patch16_224, "
                      "86,567,656 parameters)."),
    "kat_t": Preset(ViT, ViTConfig, _vit(192, 3, mlp_type="grkan", grkan_groups=8),
                    "KAT-T (Adamdad/kat kat_tiny_patch16_224): ViT-Ti/16 with GR-KAN MLPs, "
                    "5,718,328 parameters (ViT-Ti + 2 x 38 rational coefficients per block)."),
    "kat_s": Preset(ViT, ViTConfig, _vit(384, 6, mlp_type="grkan", grkan_groups=8),
                    "KAT-S (Adamdad/kat kat_small_patch16_224): ViT-S/16 with GR-KAN MLPs, "
                    "22,051,576 parameters."),
    "kat_b": Preset(ViT, ViTConfig, _vit(768, 12, mlp_type="grkan", grkan_groups=8),
                    "KAT-B (Adamdad/kat kat_base_patch16_224): ViT-B/16 with GR-KAN MLPs, "
                    "86,568,568 parameters."),
}
