"""RaftMLP (Tatsunami & Taki 2022, "RaftMLP: How Much Can Be Done Without Attention and with
Less Spatial Locality?", arXiv:2108.04384; reference code okojoalg/raft-mlp).

images [batch, H, W, C] float -> logits [batch, num_classes] float32.

A hierarchy of levels (stages). Each level embeds its input with a cross-scale MLP embedding
(patches of several sizes around the same centre, stride = the smallest, concatenated and
mapped by one Dense), then runs `depth` raft blocks on the feature map x [batch, h, w, C]:

    channels are cut into r "rafts": C = r * c_o, channel index = raft * c_o + o
    vertical mixing:   x += MLP_v(LN(x)) where, for each (o, column w), one MLP mixes the
                       r*h values {x[y, w, raft*c_o + o] : raft, y}  (rafts x rows)
    horizontal mixing: x += MLP_h(LN(x)), the same along each row (rafts x columns)
    channel mixing:    x += MLP_c(LN(x)) per position, C -> 4C -> C
    MLP(u) = fc2(gelu(fc1(u))), token MLPs widen by `token_expansion` (2), exact-erf gelu

then LayerNorm, mean over positions, and a linear classifier (the reference's `shortcut=False`).

The reference's token-mixing LayerNorms see each token's channels in the order (o, raft) (its
`PermutedBlock` rearranges `(c1 c2)` with c1 = o, c2 = raft); ours do too, so the LayerNorm
vectors of a reference checkpoint map on unchanged. Parameters are named after the reference
modules: `levels_{l}/embedding/fc`, `levels_{l}/blocks_{j}/vertical_mixing/{norm, mlp/{fc1,
fc2}}`, `.../horizontal_mixing/...`, `.../channel_norm`, `.../channel_mixing/{fc1, fc2}`, `norm`,
`classifier`; as Flax `kernel [in, out]` (torch's `weight` transposed), `bias`, `scale`.

Differences from the reference: inputs must have the configured size (the reference resizes
other sizes bicubically); no dropout or stochastic depth (inference and plain training only).

Sites (blocks are numbered across levels, 0 .. sum(n_layers)-1; r = raft size, c_o = C / r):
  levels_{l}.hook_embed                         [batch, height, width, d_model]
  blocks.{i}.hook_resid_pre                     [batch, height, width, d_model]
  blocks.{i}.vertical_mixing.mlp.hook_pre|hook_post   [batch, raft_channel, width, d_mlp]
                                                (d_mlp = token_expansion * r * h)
  blocks.{i}.hook_vertical_out, hook_resid_vertical         [batch, height, width, d_model]
  blocks.{i}.horizontal_mixing.mlp.hook_pre|hook_post [batch, raft_channel, height, d_mlp]
  blocks.{i}.hook_horizontal_out, hook_resid_mid             [batch, height, width, d_model]
  blocks.{i}.channel_mixing.hook_pre|hook_post  [batch, height, width, d_mlp]
  blocks.{i}.hook_channel_out, hook_resid_post               [batch, height, width, d_model]
  hook_pooled                                   [batch, d_model]
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.hooks import layer as site_layer
from jaxinterp.hooks import site
from jaxinterp.layers.axes import MAP_AXES, POOLED_AXES
from jaxinterp.layers.common import activation
from jaxinterp.layers.config import dtype_kwargs
from jaxinterp.layers.dense import Dense, lecun_normal
from jaxinterp.layers.mlp import MLP
from jaxinterp.layers.norms import FlaxLayerNorm
from jaxinterp.layers.vision import (
    ImageClassifier,
    ImageClassifierConfig,
    check_positive,
    check_stages,
)
from jaxinterp.models.preset import Preset


@dataclasses.dataclass(frozen=True)
class RaftMLPConfig(ImageClassifierConfig):
    """Hyperparameters of a RaftMLP (one entry per level in the tuples; image_size (every
    level's patch size must divide its input), in_channels, num_classes, dtype, param_dtype:
    `layers.vision.ImageClassifierConfig`).

    Attributes:
      d_model: channels C of each level (the reference's `dims`).
      n_layers: raft blocks per level (the reference's `depths`).
      patch_sizes: embedding stride of each level (the smallest embedding kernel).
      raft_sizes: rafts r per level (must divide the level's C).
      embedding_kernels: patch sizes of each level's cross-scale embedding; the first is the
        level's patch size, each is a multiple of it and differs from it by an even number.
      token_expansion: hidden width factor of the vertical / horizontal MLPs.
      channel_expansion: hidden width factor of the channel MLP.
      eps: LayerNorm epsilon (torch default 1e-5).
      act_fn: activation ("gelu" = exact erf gelu, torch `nn.GELU`).
    """

    d_model: tuple[int, ...] = (64, 128, 256, 512)
    n_layers: tuple[int, ...] = (2, 2, 6, 2)
    patch_sizes: tuple[int, ...] = (4, 2, 2, 2)
    raft_sizes: tuple[int, ...] = (2, 2, 2, 2)
    embedding_kernels: tuple[tuple[int, ...], ...] = ((4, 8), (2, 4), (2, 4), (2,))
    token_expansion: int = 2
    channel_expansion: int = 4
    eps: float = 1e-5
    act_fn: str = "gelu"

    def __post_init__(self):
        super().__post_init__()
        check_stages(self, "d_model", "n_layers")
        n = len(self.d_model)
        for f in ("n_layers", "patch_sizes", "raft_sizes", "embedding_kernels"):
            if len(getattr(self, f)) != n:
                raise ValueError(f"RaftMLPConfig.{f} has {len(getattr(self, f))} entries but "
                                 f"d_model has {n}: give one per level")
        check_positive(self, "token_expansion", "channel_expansion")
        size = self.image_size
        for lvl, (d, depth, p, r, ks) in enumerate(zip(
                self.d_model, self.n_layers, self.patch_sizes, self.raft_sizes,
                self.embedding_kernels, strict=True)):
            if min(d, depth, p, r) <= 0:
                raise ValueError(f"level {lvl}: d_model, n_layers, patch_sizes and raft_sizes "
                                 f"must be positive, got {d}, {depth}, {p}, {r}")
            if d % r:
                raise ValueError(f"level {lvl}: raft_size {r} must divide dim {d}")
            if size % p:
                raise ValueError(f"level {lvl}: patch_size {p} must divide the level's input "
                                 f"size {size} (image_size={self.image_size})")
            if not ks or ks[0] != p or any(k % p or (k - p) % 2 for k in ks):
                raise ValueError(f"level {lvl}: embedding_kernels {ks} must start with the "
                                 f"patch size {p} and be multiples of it differing from it by "
                                 "an even number")
            size //= p
        activation(self.act_fn)

    def resolutions(self) -> tuple[int, ...]:
        """Side of each level's feature map (224 -> (56, 28, 14, 7) for the presets)."""
        out, size = [], self.image_size
        for p in self.patch_sizes:
            size //= p
            out.append(size)
        return tuple(out)


class CrossScaleEmbedding(nn.Module):
    """x [b, H, W, C_in] -> [b, H/s, W/s, d_model], s = min(kernels).

    For each kernel k: the k x k patch centred on each stride-s cell (zero padding (k - s)/2),
    features in (channel, row, column) order (torch `nn.Unfold`); all kernels concatenated,
    then one Dense `fc`.
    """

    kernels: tuple[int, ...]
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = self.kernels[0]
        parts = []
        for k in self.kernels:
            pad = (k - s) // 2
            # [b, H/s, W/s, C_in * k * k], feature index = c * k * k + row * k + column
            parts.append(jax.lax.conv_general_dilated_patches(
                x, (k, k), (s, s), [(pad, pad), (pad, pad)],
                dimension_numbers=("NHWC", "HWIO", "NHWC")))
        return Dense(self.features, ("embed", "embed_out"), dtype=self.dtype,
                     param_dtype=self.param_dtype, name="fc")(jnp.concatenate(parts, -1))


def _mlp(hidden: int, site_axes: tuple[str, ...], act_fn: str, name: str, kw: dict) -> MLP:
    """`fc2(act(fc1(u)))` on the last axis with hidden sites. u: [..., d] -> [..., d]."""
    return MLP(hidden, act_fn, kernel_init=lecun_normal, site_axes=site_axes,
               names=("fc1", "fc2"), name=name, **kw)


class RaftTokenMixing(nn.Module):
    """Vertical (`axis="height"`) or horizontal (`"width"`) raft mixing, without the residual.

    x [b, h, w, C] -> [b, h, w, C]: LayerNorm per position (channels read in (o, raft) order),
    then for each raft channel o and each column (vertical) / row (horizontal) one MLP over
    the r x h (or r x w) values of that channel group along the column (row).
    """

    raft_size: int
    expansion: int
    axis: str
    eps: float
    act_fn: str
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        r, co = self.raft_size, c // self.raft_size
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        # channel index raft * co + o -> LayerNorm over channels ordered (o, raft)
        x_or = x.reshape(b, h, w, r, co).swapaxes(3, 4).reshape(b, h, w, c)
        y = FlaxLayerNorm(self.eps, name="norm", **kw)(x_or).reshape(b, h, w, co, r)
        if self.axis == "height":  # rows of the MLP: (o, column); features: (raft, y)
            u = y.transpose(0, 3, 2, 4, 1).reshape(b, co, w, r * h)
            back = (0, 4, 2, 3, 1)  # [b, co, w, r, h] -> [b, h, w, r, co]
            n = h
        else:  # rows: (o, row); features: (raft, x)
            u = y.transpose(0, 3, 1, 4, 2).reshape(b, co, h, r * w)
            back = (0, 2, 4, 3, 1)  # [b, co, h, r, w] -> [b, h, w, r, co]
            n = w
        out = _mlp(self.expansion * r * n, ("batch", "raft_channel", self.axis_other, "d_mlp"),
                   self.act_fn, "mlp", kw)(u)
        return out.reshape(b, co, out.shape[2], r, n).transpose(back).reshape(b, h, w, c)

    @property
    def axis_other(self) -> str:
        return "width" if self.axis == "height" else "height"


class RaftBlock(nn.Module):
    """Vertical, horizontal and channel mixing with residuals. x: [b, h, w, C] -> same."""

    config: RaftMLPConfig
    level: int
    index: int  # block number across all levels (site names)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        kw = dtype_kwargs(c)
        r = c.raft_sizes[self.level]
        with site_layer(self, "blocks", self.index, sum(c.n_layers)):
            x = site(self, "hook_resid_pre", x, MAP_AXES)
            for axis, name, resid in (("height", "vertical", "hook_resid_vertical"),
                                      ("width", "horizontal", "hook_resid_mid")):
                mix = RaftTokenMixing(r, c.token_expansion, axis, c.eps, c.act_fn,
                                      name=f"{name}_mixing", **kw)
                y = site(self, f"hook_{name}_out", mix(x), MAP_AXES)
                x = site(self, resid, x + y, MAP_AXES)
            y = FlaxLayerNorm(c.eps, name="channel_norm", **kw)(x)
            y = _mlp(c.channel_expansion * x.shape[-1], ("batch", "height", "width", "d_mlp"),
                     c.act_fn, "channel_mixing", kw)(y)
            y = site(self, "hook_channel_out", y, MAP_AXES)
            return site(self, "hook_resid_post", x + y, MAP_AXES)


class RaftLevel(nn.Module):
    """Cross-scale embedding then the level's raft blocks. [b, H, W, C_in] -> [b, h, w, C]."""

    config: RaftMLPConfig
    level: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        kw = dtype_kwargs(c)
        x = CrossScaleEmbedding(c.embedding_kernels[self.level], c.d_model[self.level],
                                name="embedding", **kw)(x)
        x = site(self, "hook_embed", x, MAP_AXES)
        first = sum(c.n_layers[:self.level])
        for j in range(c.n_layers[self.level]):
            x = RaftBlock(c, self.level, first + j, name=f"blocks_{j}")(x)
        return x


class RaftMLP(ImageClassifier):
    """RaftMLP: images [batch, H, W, C] float -> logits [batch, num_classes] float32
    (see the module docstring; `layers.vision.ImageClassifier` checks the images)."""

    config: RaftMLPConfig

    def forward(self, images: jax.Array, dtype: jnp.dtype, pd: jnp.dtype) -> jax.Array:
        c = self.config
        x = images.astype(dtype)
        for lvl in range(len(c.d_model)):
            x = RaftLevel(c, lvl, name=f"levels_{lvl}")(x)
        x = FlaxLayerNorm(c.eps, name="norm", dtype=dtype, param_dtype=pd)(x)
        x = site(self, "hook_pooled", x.mean(axis=(1, 2)), POOLED_AXES)
        head = Dense(c.num_classes, ("embed", "vocab"), dtype=dtype, param_dtype=pd,
                     name="classifier")
        return head(x).astype(jnp.float32)


def _preset(d_model: tuple[int, ...], doc: str) -> Preset:
    return Preset(RaftMLP, RaftMLPConfig,
                  dict(d_model=d_model, n_layers=(2, 2, 6, 2), patch_sizes=(4, 2, 2, 2),
                       raft_sizes=(2, 2, 2, 2), embedding_kernels=((4, 8), (2, 4), (2, 4), (2,)),
                       token_expansion=2, channel_expansion=4, image_size=224, num_classes=1000),
                  doc)


PRESETS: dict[str, Preset] = {
    "raftmlp_s": _preset((64, 128, 256, 512),
                         "RaftMLP-S (okojoalg/raft-mlp imagenet-raft-mlp-cross-mlp-emb-s)."),
    "raftmlp_m": _preset((96, 192, 384, 768),
                         "RaftMLP-M (okojoalg/raft-mlp imagenet-raft-mlp-cross-mlp-emb-m)."),
    "raftmlp_l": _preset((128, 192, 512, 1024),
                         "RaftMLP-L (okojoalg/raft-mlp imagenet-raft-mlp-cross-mlp-emb-l)."),
}
