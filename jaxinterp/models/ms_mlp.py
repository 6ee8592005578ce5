"""MS-MLP (Zheng et al. 2022, "Mixing and Shifting: Exploiting Global and Local Dependencies in
Vision MLPs", arXiv:2202.06510; reference code JegZheng/MS-MLP `models/ms_mlp.py`).

images [batch, H, W, C] float -> logits [batch, num_classes] float32.

A four-stage pyramid (patch embedding p x p conv + LayerNorm; between stages a 2 x 2 conv that
doubles the channels, + LayerNorm). Each mix-shift block, on x [batch, h, w, C]:

    split the channels into `shift_size` groups (torch.chunk sizes); group g is rolled by
    shift_dist[g] positions along the width (left-right branch) and, separately, along the
    height (top-down branch), then mixed by a depthwise k_g x k_g conv (k_g = mix_size[g],
    larger for more distant shifts; one conv per group and branch)
    x += gamma * pwconv2(gelu(pwconv1(LN(lr + td))))      (layer scale gamma, init 1e-6)

then mean over positions, LayerNorm, and a linear head.

Parameters carry the reference's module names (`patch_embed/{proj, norm}`,
`layers_{s}/blocks_{j}/{dwconv_lr_{g}, dwconv_td_{g}, norm, pwconv1, pwconv2, gamma}`,
`layers_{s}/downsample/{proj, norm}`, `norm`, `head`) in Flax layout (`kernel` [in, out] or
HWIO, `bias`, `scale`). No dropout or stochastic depth.

Sites (blocks numbered across stages, 0 .. sum(n_layers)-1):
  hook_embed                                   [batch, height, width, d_model]
  blocks.{i}.hook_resid_pre                    [batch, height, width, d_model]
  blocks.{i}.hook_mix_lr, hook_mix_td          [batch, height, width, d_model] (each branch)
  blocks.{i}.hook_mixed                        [batch, height, width, d_model] (lr + td)
  blocks.{i}.mlp.hook_pre|hook_post            [batch, height, width, d_mlp]
  blocks.{i}.hook_mlp_out                      [batch, height, width, d_model] (after gamma)
  blocks.{i}.hook_resid_post                   [batch, height, width, d_model]
  hook_pooled                                  [batch, d_model] (after the final norm)
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.hooks import layer as site_layer
from jaxinterp.hooks import site
from jaxinterp.layers.axes import MAP_AXES, POOLED_AXES
from jaxinterp.layers.common import activation, param
from jaxinterp.layers.config import dtype_kwargs
from jaxinterp.layers.conv import Conv, depthwise
from jaxinterp.layers.dense import Dense, lecun_normal
from jaxinterp.layers.mlp import MLP
from jaxinterp.layers.norms import FlaxLayerNorm
from jaxinterp.layers.vision import (
    ImageClassifier,
    PatchClassifierConfig,
    check_positive,
    check_stages,
)
from jaxinterp.models.preset import Preset


def chunk_sizes(dim: int, n: int) -> tuple[int, ...]:
    """Sizes of `torch.chunk(range(dim), n)`: ceil(dim / n) each, the last one smaller."""
    size = math.ceil(dim / n)
    return tuple(min(size, dim - i) for i in range(0, dim, size))


@dataclasses.dataclass(frozen=True)
class MSMLPConfig(PatchClassifierConfig):
    """Hyperparameters of an MS-MLP (names follow the reference's `MS_MLP` except
    n_layers, d_model; image_size, in_channels, num_classes, patch_size (the first patch
    embedding's), dtype, param_dtype: `layers.vision.PatchClassifierConfig`).

    Attributes:
      d_model: channels of stage 0, doubled at each later stage (the reference's `embed_dim`).
      n_layers: blocks per stage (the reference's `depths`).
      shift_size: channel groups per block.
      shift_dist: roll of each group (positions).
      mix_size: per stage, the depthwise kernel size of each group (odd sizes).
      mlp_ratio: hidden width of the channel MLP / d_model.
      layer_scale_init: initial value of `gamma`.
      eps: LayerNorm epsilon (the reference's LayerNorm: 1e-6).
      act_fn: activation ("gelu" = exact, torch `nn.GELU`).
    """

    patch_size: int = 4
    d_model: int = 96
    n_layers: tuple[int, ...] = (3, 3, 9, 3)
    shift_size: int = 5
    shift_dist: tuple[int, ...] = (-2, -1, 0, 1, 2)
    mix_size: tuple[tuple[int, ...], ...] = ((1, 1, 3, 5, 7), (1, 3, 3, 5, 7), (1, 5, 5, 5, 7),
                                             (1, 7, 7, 7, 7))
    mlp_ratio: int = 4
    layer_scale_init: float = 1e-6
    eps: float = 1e-6
    act_fn: str = "gelu"

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "d_model", "shift_size", "mlp_ratio")
        check_stages(self, "n_layers")
        n = len(self.n_layers)
        if len(self.mix_size) != n:
            raise ValueError(f"mix_size has {len(self.mix_size)} stages, n_layers has {n}")
        if len(self.shift_dist) != self.shift_size:
            raise ValueError(f"shift_dist {self.shift_dist} needs shift_size={self.shift_size} "
                             "entries")
        for s, ks in enumerate(self.mix_size):
            if len(ks) != self.shift_size or any(k <= 0 or k % 2 == 0 for k in ks):
                raise ValueError(f"mix_size[{s}]={ks}: need {self.shift_size} odd kernel sizes")
            d = self.d_model * 2 ** s
            if len(chunk_sizes(d, self.shift_size)) != self.shift_size:
                raise ValueError(f"stage {s}: {d} channels do not split into {self.shift_size} "
                                 "torch.chunk groups")
        side = self.image_size // self.patch_size
        if self.image_size % self.patch_size or side % 2 ** (n - 1):
            raise ValueError(f"image_size {self.image_size} must be divisible by patch_size "
                             f"{self.patch_size} * 2^{n - 1}")
        activation(self.act_fn)


class ConvEmbed(nn.Module):
    """The reference's `PatchEmbed`: `proj` conv (kernel = stride = patch, bias) then LayerNorm
    `norm`. [b, H, W, C] -> [b, H/p, W/p, features]."""

    patch: int
    features: int
    eps: float
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = Conv(self.features, self.patch, self.patch, name="proj", **kw)(x)
        return FlaxLayerNorm(self.eps, name="norm", **kw)(x)


class MixShiftBlock(nn.Module):
    """x [b, h, w, C] -> [b, h, w, C] (see the module docstring)."""

    config: MSMLPConfig
    stage: int
    index: int  # block number across stages (site names)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        kw = dtype_kwargs(c)
        d = x.shape[-1]
        with site_layer(self, "blocks", self.index, sum(c.n_layers)):
            x = site(self, "hook_resid_pre", x, MAP_AXES)
            sizes = chunk_sizes(d, c.shift_size)
            groups = jnp.split(x, list(itertools.accumulate(sizes))[:-1], axis=-1)
            lr, td = [], []
            for g, (xg, shift, k) in enumerate(zip(groups, c.shift_dist,
                                                   c.mix_size[self.stage], strict=True)):
                # torch.roll(x, shift, dim): out[i] = x[i - shift]; same as jnp.roll
                lr.append(depthwise(sizes[g], k, name=f"dwconv_lr_{g}", **kw)(
                    jnp.roll(xg, shift, axis=2)))
                td.append(depthwise(sizes[g], k, name=f"dwconv_td_{g}", **kw)(
                    jnp.roll(xg, shift, axis=1)))
            lr = site(self, "hook_mix_lr", jnp.concatenate(lr, -1), MAP_AXES)
            td = site(self, "hook_mix_td", jnp.concatenate(td, -1), MAP_AXES)
            y = site(self, "hook_mixed", lr + td, MAP_AXES)
            y = FlaxLayerNorm(c.eps, name="norm", **kw)(y)
            y = MLP(c.mlp_ratio * d, c.act_fn, kernel_init=lecun_normal,
                    site_axes=("batch", "height", "width", "d_mlp"),
                    names=("pwconv1", "pwconv2"), name="mlp", **kw)(y)
            gamma = param(self, "gamma", nn.initializers.constant(c.layer_scale_init), (d,),
                          ("embed",), kw["param_dtype"])
            y = site(self, "hook_mlp_out", y * gamma.astype(y.dtype), MAP_AXES)
            return site(self, "hook_resid_post", x + y, MAP_AXES)


class MSMLP(ImageClassifier):
    """MS-MLP: images [batch, H, W, C] float -> logits [batch, num_classes] float32
    (see the module docstring; `layers.vision.ImageClassifier` checks the images)."""

    config: MSMLPConfig

    def forward(self, images: jax.Array, dtype: jnp.dtype, pd: jnp.dtype) -> jax.Array:
        c = self.config
        kw = dict(dtype=dtype, param_dtype=pd)
        x = ConvEmbed(c.patch_size, c.d_model, c.eps, name="patch_embed", **kw)(
            images.astype(dtype))
        x = site(self, "hook_embed", x, MAP_AXES)
        index = 0
        for s, depth in enumerate(c.n_layers):
            x = _Stage(c, s, index, name=f"layers_{s}")(x)
            index += depth
        x = FlaxLayerNorm(c.eps, name="norm", **kw)(x.mean(axis=(1, 2)))
        x = site(self, "hook_pooled", x, POOLED_AXES)
        return Dense(c.num_classes, ("embed", "vocab"), name="head", **kw)(x).astype(jnp.float32)


class _Stage(nn.Module):
    """The reference's `BasicLayer`: blocks, then (except the last stage) `downsample`."""

    config: MSMLPConfig
    stage: int
    first: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        for j in range(c.n_layers[self.stage]):
            x = MixShiftBlock(c, self.stage, self.first + j, name=f"blocks_{j}")(x)
        if self.stage < len(c.n_layers) - 1:
            x = ConvEmbed(2, 2 * x.shape[-1], c.eps, jnp.dtype(c.dtype),
                           jnp.dtype(c.param_dtype), name="downsample")(x)
        return x


PRESETS: dict[str, Preset] = {
    "msmlp_t": Preset(MSMLP, MSMLPConfig, dict(d_model=96, n_layers=(3, 3, 9, 3)),
                      "MS-MLP-Tiny (JegZheng/MS-MLP msmlp_tiny_patch4_shift5_224; README: 28M)."),
    "msmlp_s": Preset(MSMLP, MSMLPConfig, dict(d_model=96, n_layers=(3, 3, 27, 3)),
                      "MS-MLP-Small (JegZheng/MS-MLP msmlp_small_patch4_shift5_224; README: 50M)."),
}
