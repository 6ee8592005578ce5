"""Strip-MLP (Cao et al. 2023, "Strip-MLP: Efficient Token Interaction for Vision MLP", ICCV;
arXiv:2307.11458; reference code Med-Process/Strip_MLP `models/strip_mlp.py`, `StripMLPNet`).

images [batch, H, W, C] float -> logits [batch, num_classes] float32. Everything is NHWC.

A four-stage pyramid: a p x p patch conv (no bias) to `d_model` channels, then stages of
C = d_model * 2^s channels on (H/p / 2^s)^2 positions, joined by 2 x 2 "merging" convs that
double the channels. Two cross-scale skips (grouped 2 x 2 convs, one input channel per group)
carry stage-2 features to stages 3 and 4 and stage-3 features to stage 4:

    x2 = merging1(stage1(embed));   s1_14 = conv_s1_28(x2);   s1_7 = conv_s1_14(s1_14)
    x3 = merging2(stage2(x2));      s2_7 = conv_s2_14(x3)
    x4 = merging3(stage3(x3 + s1_14))
    pooled = mean_hw(BatchNorm(stage4(x4 + s1_7 + s2_7)));   logits = head(pooled)

Each block, on x [b, h, w, C] (h = w):

    x = x + token_mixing(x)            x = x + channel_mixing(x)
    token_mixing(x):
      u = dwconv3x3(gelu(BN(x)))                       (reference `dwsc`)
      u = gelu(BN(conv1x1(u)))                         (reference `smlp_block.mlp`)
      u1, u2 = the first and second half of the channels (C/2 each)
      u1 = CGSMM(u1)  (strip mixing)    u2 = LSMM(u2)  (local strip mixing)
      return fuse(concat(u1, u2))                      (1x1 conv, no bias)
    channel_mixing(x) = fc2(GRN(gelu(fc1(LN(dwconv7x7(x))))))     (fc1: C -> alpha C)

Strip MLP layer and CGSMM (Cascade Group Strip Mixing Module) on u [b, h, w, D] (D = C/2):
the D channels are split as (g, c) = (C1 groups, C2 channels), channel = g * C2 + c, with
C1 = `strip_groups` (the reference: 2 if C % 80 == 0 else 4) and C2 = D / C1. Each of the C2
channel slots c has its own strip weights, shared by the C1 groups ("cascade group"):

    a   = u + P_h                        P_h[i, j] = table_h[j - i + h]  (relative positions)
    row[b, i, o, g, c] = bias_h[c, o] + sum_{t, j} K_h[t, c, j, o] a[b, i + t - 1, j, g, c]
                  (a whole row strip j -> o, cross-strip: rows i-1, i, i+1; zero padding)
    r   = gelu(BN(fuse_h(concat(row, u)))) + P_w
    col[b, o, j, g, c] = bias_w[c, o] + sum_{t, i} K_w[t, c, i, o] r[b, i, j + t - 1, g, c]
    CGSMM(u) = fuse_w(concat(u, col))                  (fuse_h, fuse_w: 1x1 convs D -> ... no bias)

`K_h` is the reference's grouped conv `proj_h` (in H*C2, out C2*H, kernel (1, 3), groups C2)
written as a [3, C2, w_in, w_out] array; likewise `K_w` (`proj_w`).

LSMM (Local Strip Mixing Module) on v [b, h, w, D]:

    vh = depthwise7x3(v)  (`fc_w`),  vw = depthwise3x7(v)  (`fc_h`)  (no bias)
    a  = softmax over the 3 branches of reweight(mean_hw(vh + vw + v)) -> [b, D, 3]
         (reweight: conv1x1 D -> D/2, gelu, conv1x1 D/2 -> 3D; output channel d * 3 + k)
    LSMM(v) = vh * a[..., 0] + vw * a[..., 1] + v * a[..., 2]

GRN (global response normalization, ConvNeXt-V2): x + gamma * x * N + beta with
N = ||x||_hw / (mean_channels ||x||_hw + 1e-6).

BatchNorm. The reference uses `nn.BatchNorm2d` (eps 1e-5, momentum 0.1); here Flax
`nn.BatchNorm` (epsilon 1e-5, momentum 0.9 = 1 - 0.1). `model.init` returns `params` and
`batch_stats` (running `mean`, `var`). By default (`train=False`) the running statistics are
used and nothing is mutated: this is the mode `jaxinterp.run` and `jaxinterp.sites` work in.
For training call `model.apply(variables, images, train=True, mutable=["batch_stats"],
rngs={"dropout": key})` (batch statistics, updated running averages; the rng drives
stochastic depth, `drop_path_rate`, which the reference fixes at 0.1 in every block). One
difference from torch: Flax updates the running variance with the biased batch variance (torch
the unbiased one). Dropout (reference default off) is not implemented. `train` is a Python
bool: under `jax.jit` make it static (`jax.jit(functools.partial(model.apply, train=True,
mutable=["batch_stats"]))`). Parameter counts (`params` only) equal the reference's torch
counts, which likewise exclude the running statistics (torch buffers).

Parameters (Flax layout: 1x1 convs with bias are `Dense` `kernel [in, out]`, `bias`; other
convs, bias-free, HWIO `kernel [kh, kw, in / groups, out]`); torch name -> ours:
  patch_embed -> patch_embed;  merging{1,2,3}, conv_s1_28, conv_s1_14, conv_s2_14 -> same;
  norm -> norm (BatchNorm);  head -> head
  blocks{s}.{j}.token_mixing.dwsc.conv_merge.{BN, Conv} -> blocks{s}_{j}/{dw_norm, dwconv}
  ....smlp_block.mlp.{0, 1}                              -> blocks{s}_{j}/{proj, proj_norm}
  ....smlp_block.{relate_pos_h, relate_pos_w}.embeddings_table
        -> blocks{s}_{j}/strip_mixing/{relate_pos_h, relate_pos_w} [2h + 1, D]
  ....smlp_block.{proj_h, proj_w}.weight [C2 * n, n, 1, 3]
        -> blocks{s}_{j}/strip_mixing/{proj_h, proj_w}/kernel [3, C2, n, n]
           (torch weight.reshape(C2, n_out, n_in, 3).transpose(3, 0, 2, 1)), bias [C2, n]
  ....smlp_block.{fuse_h, fuse_w, BN} -> blocks{s}_{j}/strip_mixing/{fuse_h, fuse_w, norm}
  ....smlp_block.{fc_h, fc_w, reweight.fc1, reweight.fc2}
        -> blocks{s}_{j}/local_mixing/{fc_h, fc_w, reweight_fc1, reweight_fc2}
  ....smlp_block.fuse -> blocks{s}_{j}/fuse
  ....channel_mixing.{conv_77, layer_norm, fc1, fc2, grn} -> blocks{s}_{j}/channel_mixing/same

Sites (blocks numbered across stages, 0 .. sum(n_layers)-1; D = d_model / 2):
  hook_embed                                       [batch, height, width, d_model]
  hook_stage{2,3,4}_in                             [batch, height, width, d_model] (after skips)
  blocks.{i}.hook_resid_pre                        [batch, height, width, d_model]
  blocks.{i}.hook_dwconv                           [batch, height, width, d_model]
  blocks.{i}.hook_proj                             [batch, height, width, d_model]
  blocks.{i}.strip_mixing.hook_row                 [batch, height, width, D] (proj_h output)
  blocks.{i}.strip_mixing.hook_row_fused           [batch, height, width, D] (r above)
  blocks.{i}.strip_mixing.hook_col                 [batch, height, width, D] (proj_w output)
  blocks.{i}.strip_mixing.hook_out                 [batch, height, width, D] (CGSMM output)
  blocks.{i}.local_mixing.hook_h|hook_w            [batch, height, width, D] (vh, vw)
  blocks.{i}.local_mixing.hook_weights             [batch, D, branch=3] (softmax weights)
  blocks.{i}.local_mixing.hook_out                 [batch, height, width, D] (LSMM output)
  blocks.{i}.hook_token_out                        [batch, height, width, d_model]
  blocks.{i}.hook_resid_mid                        [batch, height, width, d_model]
  blocks.{i}.channel_mixing.hook_pre|hook_post     [batch, height, width, d_mlp] (fc1, gelu)
  blocks.{i}.channel_mixing.hook_grn               [batch, height, width, d_mlp]
  blocks.{i}.hook_channel_out                      [batch, height, width, d_model]
  blocks.{i}.hook_resid_post                       [batch, height, width, d_model]
  hook_pooled                                      [batch, d_model] (final BatchNorm, mean)
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.hooks import layer as site_layer
from jaxinterp.hooks import site
from jaxinterp.layers.axes import MAP_AXES, POOLED_AXES
from jaxinterp.layers.common import activation, param
from jaxinterp.layers.config import dtype_kwargs, dtypes
from jaxinterp.layers.conv import Conv, depthwise
from jaxinterp.layers.dense import Dense
from jaxinterp.layers.norms import FlaxLayerNorm
from jaxinterp.layers.vision import (
    PatchClassifierConfig,
    check_images,
    check_positive,
)
from jaxinterp.models.preset import Preset

N_STAGES = 4
_conv = functools.partial(Conv, use_bias=False)  # the reference's convs are bias-free


def reference_strip_groups(channels: int) -> int:
    """The reference's channel-group count C1 of a block with `channels` channels:
    `patch = 2 if channels % 80 == 0 else 4` in `StripMLP_Block.__init__`."""
    return 2 if channels % 80 == 0 else 4


@dataclasses.dataclass(frozen=True)
class StripMLPConfig(PatchClassifierConfig):
    """Hyperparameters of a Strip-MLP (names follow the reference's `StripMLPNet`
    except n_layers, d_model; image_size, in_channels, num_classes, patch_size (the first,
    bias-free patch convolution's), dtype, param_dtype: `layers.vision.PatchClassifierConfig`).

    Attributes:
      d_model: channels of stage 1, doubled at each later stage (the reference's `embed_dim`).
      n_layers: blocks in each of the 4 stages, a tuple (the reference's `layers`).
      alpha: channel-MLP expansion (hidden width alpha * d_model).
      strip_groups: C1, the channel groups sharing one set of strip weights; None = the
        reference's rule per stage (`reference_strip_groups`: 2 if channels % 80 == 0 else 4).
      bn_eps, bn_momentum: BatchNorm epsilon and Flax momentum (torch momentum 0.1 -> 0.9).
      ln_eps: LayerNorm epsilon of the channel mixing (torch default 1e-5).
      drop_path_rate: stochastic depth of both residual branches, only with `train=True`
        (the reference hard-codes 0.1).
      act_fn: activation ("gelu" = exact, torch `nn.GELU`).
    """

    patch_size: int = 4
    d_model: int = 80
    n_layers: tuple[int, ...] = (2, 2, 12, 2)
    alpha: int = 3
    strip_groups: int | None = None
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9
    ln_eps: float = 1e-5
    drop_path_rate: float = 0.1
    act_fn: str = "gelu"

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "d_model", "alpha")
        if (not isinstance(self.n_layers, tuple) or len(self.n_layers) != N_STAGES
                or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0
                       for d in self.n_layers)):
            raise ValueError(f"StripMLPConfig.n_layers must be {N_STAGES} positive ints in a "
                             f"tuple (one per stage, the reference's four), got {self.n_layers!r}")
        if self.strip_groups is not None:
            if isinstance(self.strip_groups, bool) or not isinstance(self.strip_groups, int) \
                    or self.strip_groups <= 0:
                raise ValueError("StripMLPConfig.strip_groups must be None (the reference's "
                                 f"rule) or a positive int, got {self.strip_groups!r}")
        side = self.image_size // self.patch_size
        if self.image_size % self.patch_size or side % 2 ** (N_STAGES - 1):
            raise ValueError(f"image_size {self.image_size} must be divisible by patch_size "
                             f"{self.patch_size} * 2^{N_STAGES - 1} (three 2x2 mergings)")
        for s in range(N_STAGES):
            d = self.channels(s)
            groups = self.groups(s)
            if d % 2 or (d // 2) % groups or d // 2 < 2:
                raise ValueError(f"stage {s + 1}: {d} channels must be even and half of them "
                                 f"({d / 2:g}) divisible by strip_groups={groups} and >= 2")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        activation(self.act_fn)

    def channels(self, stage: int) -> int:
        """d_model of stage `stage` (0-based)."""
        return self.d_model * 2 ** stage

    def side(self, stage: int) -> int:
        """Height = width of the feature map of stage `stage` (0-based)."""
        return self.image_size // self.patch_size // 2 ** stage

    def groups(self, stage: int) -> int:
        """C1 of stage `stage`: `strip_groups` or the reference's rule."""
        if self.strip_groups is not None:
            return self.strip_groups
        return reference_strip_groups(self.channels(stage))


_depthwise = functools.partial(depthwise, use_bias=False)


def _site(module: nn.Module, name: str, x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
    """`jaxinterp.hooks.site` of `x` [batch, ...] constrained to be split over its batch axis
    only (logical "batch"; the rest replicated) when traced under logical axis rules and a
    mesh (the trainer's steps are: `jaxinterp.train.step.compile_steps`); elsewhere `x`.

    Without these constraints XLA's SPMD partitioner, free to split Strip-MLP's activations
    over their channels (after a Dense whose kernel is on fsdp x tensor), computes some of
    them wrongly on a data x fsdp x tensor mesh (LocalMixing's reweighting: 20% off;
    tests/train/test_families_sharded.py)."""
    x = nn.with_logical_constraint(x, ("batch",) + (None,) * (x.ndim - 1))
    return site(module, name, x, axes)


def _batch_norm(config: StripMLPConfig, train: bool, name: str) -> nn.BatchNorm:
    """Flax BatchNorm over the channels (last axis) with logically named scale/bias."""
    return nn.BatchNorm(
        use_running_average=not train, momentum=config.bn_momentum, epsilon=config.bn_eps,
        dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype),
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name=name)


def relative_positions(table: jax.Array, h: int, w: int) -> jax.Array:
    """The reference's `RelativePosition(h, w)`: table [2n + 1, D] -> [h, w, D] with entry
    [i, j] = table[clip(j - i, -n, n) + n] (n = (len(table) - 1) / 2)."""
    n = (table.shape[0] - 1) // 2
    idx = jnp.clip(jnp.arange(w)[None, :] - jnp.arange(h)[:, None], -n, n) + n
    return jnp.take(table, idx, axis=0)


class _StripProj(nn.Module):
    """One strip MLP (`proj_h` with `axis=1` mixes along each row; `proj_w` with `axis=2` along
    each column). x [b, h, w, C1, C2] -> same shape: out[..., o, ...] = bias[c, o] +
    sum_{t, j} kernel[t, c, j, o] x[..., strip position j, neighbour strip + t - 1, ...]."""

    axis: int  # 1: rows (the mixed positions are the width), 2: columns (the height)
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _, h, w, _, c = x.shape
        n = w if self.axis == 1 else h
        k = param(self, "kernel", nn.initializers.normal(1.0 / (3 * n) ** 0.5), (3, c, n, n),
                  (None, None, None, None), self.param_dtype).astype(self.dtype)
        bias = param(self, "bias", nn.initializers.zeros, (c, n), (None, None),
                     self.param_dtype).astype(self.dtype)
        pad = [(0, 0)] * 5
        pad[self.axis] = (1, 1)
        xp = jnp.pad(x, pad)
        if self.axis == 1:  # neighbouring rows t = i-1, i, i+1 : [3, b, h, w, g, c]
            xs = jnp.stack([xp[:, t:t + h] for t in range(3)])
            # contract the neighbour t and the position j along the row
            out = jnp.einsum("tbijgc,tcjo->biogc", xs, k) + bias.T[:, None, :]
        else:  # neighbouring columns
            xs = jnp.stack([xp[:, :, t:t + w] for t in range(3)])
            # contract the neighbour t and the position i along the column
            out = jnp.einsum("tbijgc,tcio->bojgc", xs, k) + bias.T[:, None, None, :]
        return out.astype(self.dtype)


class StripMixing(nn.Module):
    """CGSMM: x [b, h, w, D] -> [b, h, w, D] (see the module docstring)."""

    config: StripMLPConfig
    groups: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = self.config
        kw = dtype_kwargs(c)
        b, h, w, d = x.shape
        g, cc = self.groups, d // self.groups
        act = activation(c.act_fn)
        init = nn.initializers.truncated_normal(0.02)
        table_h = param(self, "relate_pos_h", init, (2 * h + 1, d), (None, "embed"),
                        kw["param_dtype"])
        table_w = param(self, "relate_pos_w", init, (2 * w + 1, d), (None, "embed"),
                        kw["param_dtype"])
        pos_h = relative_positions(table_h, h, w).astype(x.dtype)
        pos_w = relative_positions(table_w, h, w).astype(x.dtype)
        row = _StripProj(1, name="proj_h", **kw)((x + pos_h).reshape(b, h, w, g, cc))
        row = _site(self, "hook_row", row.reshape(b, h, w, d), MAP_AXES)
        r = _conv(d, (1, 1), name="fuse_h", **kw)(jnp.concatenate([row, x], -1))
        r = act(_batch_norm(c, train, "norm")(r)) + pos_w
        r = _site(self, "hook_row_fused", r.astype(x.dtype), MAP_AXES)
        col = _StripProj(2, name="proj_w", **kw)(r.reshape(b, h, w, g, cc))
        col = _site(self, "hook_col", col.reshape(b, h, w, d), MAP_AXES)
        out = _conv(d, (1, 1), name="fuse_w", **kw)(jnp.concatenate([x, col], -1))
        return _site(self, "hook_out", out, MAP_AXES)


class LocalMixing(nn.Module):
    """LSMM: x [b, h, w, D] -> [b, h, w, D] (see the module docstring)."""

    config: StripMLPConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        kw = dtype_kwargs(c)
        d = x.shape[-1]
        xw = _site(self, "hook_w", _depthwise(d, (3, 7), name="fc_h", **kw)(x), MAP_AXES)
        xh = _site(self, "hook_h", _depthwise(d, (7, 3), name="fc_w", **kw)(x), MAP_AXES)
        a = (xh + xw + x).mean(axis=(1, 2))  # [b, D]
        a = activation(c.act_fn)(Dense(d // 2, name="reweight_fc1", **kw)(a))
        a = Dense(3 * d, ("mlp", "embed"), name="reweight_fc2", **kw)(a)
        # reference: reshape(N, D, 3) then softmax over the 3 branches
        a = jax.nn.softmax(a.reshape(a.shape[0], d, 3).astype(jnp.float32), axis=-1)
        a = _site(self, "hook_weights", a.astype(x.dtype), ("batch", "d_model", "branch"))
        out = (xh * a[:, None, None, :, 0] + xw * a[:, None, None, :, 1]
               + x * a[:, None, None, :, 2])
        return _site(self, "hook_out", out, MAP_AXES)


class ChannelMixing(nn.Module):
    """fc2(GRN(gelu(fc1(LN(dwconv7x7(x)))))). x [b, h, w, C] -> [b, h, w, C]."""

    config: StripMLPConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        kw = dtype_kwargs(c)
        d = x.shape[-1]
        hidden = c.alpha * d
        axes = ("batch", "height", "width", "d_mlp")
        y = _depthwise(d, (7, 7), name="conv_77", **kw)(x)
        y = FlaxLayerNorm(c.ln_eps, name="layer_norm", **kw)(y)
        y = _site(self, "hook_pre", Dense(hidden, name="fc1", **kw)(y), axes)
        y = _site(self, "hook_post", activation(c.act_fn)(y).astype(y.dtype), axes)
        y = _site(self, "hook_grn", _GRN(kw["param_dtype"], name="grn")(y), axes)
        return Dense(d, ("mlp", "embed"), name="fc2", **kw)(y)


class _GRN(nn.Module):
    """ConvNeXt-V2 GRN: x + gamma * x * N + beta, N = ||x||_hw / (mean_c ||x||_hw + 1e-6).
    x [b, h, w, d] -> same; statistics in float32."""

    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        gamma = param(self, "gamma", nn.initializers.zeros, (d,), ("mlp",), self.param_dtype)
        beta = param(self, "beta", nn.initializers.zeros, (d,), ("mlp",), self.param_dtype)
        xf = x.astype(jnp.float32)
        gx = jnp.sqrt((xf * xf).sum(axis=(1, 2), keepdims=True))  # [b, 1, 1, d]
        nx = gx / (gx.mean(-1, keepdims=True) + 1e-6)
        return (gamma * (xf * nx) + beta + xf).astype(x.dtype)


def _drop_path(module: nn.Module, y: jax.Array, rate: float, train: bool) -> jax.Array:
    """timm `DropPath`: zero a sample's branch with probability `rate`, scale by 1/(1-rate)."""
    if not train or rate == 0.0:
        return y
    if not module.has_rng("dropout"):
        raise ValueError("StripMLP(train=True) with drop_path_rate > 0 needs a dropout rng: "
                         "model.apply(..., train=True, mutable=['batch_stats'], "
                         "rngs={'dropout': key}), or set drop_path_rate=0")
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate,
                                (y.shape[0],) + (1,) * (y.ndim - 1))
    return jnp.where(keep, y / (1.0 - rate), 0).astype(y.dtype)


class StripBlock(nn.Module):
    """The reference's `BasicBlock`. x [b, h, w, C] -> [b, h, w, C]."""

    config: StripMLPConfig
    stage: int
    index: int  # block number across stages (site names)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = self.config
        kw = dtype_kwargs(c)
        d = x.shape[-1]
        act = activation(c.act_fn)
        with site_layer(self, "blocks", self.index, sum(c.n_layers)):
            x = _site(self, "hook_resid_pre", x, MAP_AXES)
            u = act(_batch_norm(c, train, "dw_norm")(x))
            u = _site(self, "hook_dwconv", _depthwise(d, (3, 3), name="dwconv", **kw)(u), MAP_AXES)
            u = act(_batch_norm(c, train, "proj_norm")(Dense(d, name="proj", **kw)(u)))
            u = _site(self, "hook_proj", u.astype(x.dtype), MAP_AXES)
            u1 = StripMixing(c, c.groups(self.stage), name="strip_mixing")(u[..., :d // 2],
                                                                           train)
            u2 = LocalMixing(c, name="local_mixing")(u[..., d // 2:])
            y = _conv(d, (1, 1), name="fuse", **kw)(jnp.concatenate([u1, u2], -1))
            y = _site(self, "hook_token_out", y, MAP_AXES)
            x = _site(self, "hook_resid_mid", x + _drop_path(self, y, c.drop_path_rate, train),
                      MAP_AXES)
            y = _site(self, "hook_channel_out", ChannelMixing(c, name="channel_mixing")(x),
                      MAP_AXES)
            return _site(self, "hook_resid_post",
                         x + _drop_path(self, y, c.drop_path_rate, train), MAP_AXES)


class StripMLP(nn.Module):
    """images [batch, H, W, C] float -> logits [batch, num_classes] float32.

    `train=True` uses batch statistics in every BatchNorm (pass `mutable=["batch_stats"]`) and
    stochastic depth (pass `rngs={"dropout": key}`); the default is inference mode.
    """

    config: StripMLPConfig

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        c = self.config
        check_images(images, c.image_size, c.in_channels, "StripMLP")
        if train and not self.is_mutable_collection("batch_stats"):
            raise ValueError("StripMLP(train=True) updates the BatchNorm running statistics: "
                             "call model.apply(variables, images, train=True, "
                             "mutable=['batch_stats']) (jaxinterp.run is for inference mode, "
                             "train=False)")
        dtype, pd = dtypes(c)
        kw = dict(dtype=dtype, param_dtype=pd)
        e, p = c.d_model, c.patch_size
        x = _conv(e, (p, p), p, name="patch_embed", **kw)(images.astype(dtype))
        x = _site(self, "hook_embed", x, MAP_AXES)
        index = 0

        def stage(s: int, x: jax.Array) -> jax.Array:
            nonlocal index
            for j in range(c.n_layers[s]):
                x = StripBlock(c, s, index, name=f"blocks{s + 1}_{j}")(x, train)
                index += 1
            return x

        def merge(k: int, x: jax.Array) -> jax.Array:
            return _conv(2 * x.shape[-1], (2, 2), 2, name=f"merging{k}", **kw)(x)

        def skip(name: str, x: jax.Array) -> jax.Array:  # one input channel per group
            return _conv(2 * x.shape[-1], (2, 2), 2, groups=x.shape[-1], name=name, **kw)(x)

        x = merge(1, stage(0, x))
        s1_14 = skip("conv_s1_28", x)
        s1_7 = skip("conv_s1_14", s1_14)
        x = _site(self, "hook_stage2_in", x, MAP_AXES)
        x = merge(2, stage(1, x))
        s2_7 = skip("conv_s2_14", x)
        x = _site(self, "hook_stage3_in", x + s1_14, MAP_AXES)
        x = merge(3, stage(2, x))
        x = _site(self, "hook_stage4_in", x + s1_7 + s2_7, MAP_AXES)
        x = _batch_norm(c, train, "norm")(stage(3, x))
        x = _site(self, "hook_pooled", x.mean(axis=(1, 2)).astype(dtype), POOLED_AXES)
        head = Dense(c.num_classes, ("embed", "vocab"), name="head", **kw)
        return head(x).astype(jnp.float32)


def _preset(d_model: int, n_layers: tuple[int, ...], doc: str) -> Preset:
    return Preset(StripMLP, StripMLPConfig,
                  dict(d_model=d_model, n_layers=n_layers, patch_size=4, alpha=3,
                       image_size=224, num_classes=1000), doc)


PRESETS: dict[str, Preset] = {
    "strip_mlp_t_light": _preset(80, (2, 2, 6, 2),
                                 "Strip-MLP-T* (Med-Process/Strip_MLP smlp_tiny_light_alpha3_"
                                 "patch4_224; 18,243,920 parameters; README: 18M)."),
    "strip_mlp_t": _preset(80, (2, 2, 12, 2),
                           "Strip-MLP-T (Med-Process/Strip_MLP smlp_tiny_alpha3_patch4_224; "
                           "24,903,920 parameters; README: 25M)."),
    "strip_mlp_s": _preset(96, (2, 2, 18, 2),
                           "Strip-MLP-S (Med-Process/Strip_MLP smlp_small_alpha3_patch4_224; "
                           "42,568,600 parameters; README: 43M)."),
    "strip_mlp_b": _preset(112, (2, 2, 18, 2),
                           "Strip-MLP-B (Med-Process/Strip_MLP smlp_base_alpha3_patch4_224; "
                           "57,216,480 parameters; README: 57M)."),
}
"""The reference's ImageNet-1k configs at 224x224 (counts: tests/models/test_strip_mlp.py)."""
