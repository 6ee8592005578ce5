"""A MAXIM multi-axis gated-MLP block stack with a classifier head (Tu et al. 2022, "MAXIM:
Multi-Axis MLP for Image Processing"; reference: google-research/maxim `maxim/models/maxim.py`).

This is a MAXIM *block stack + classifier*, not the full MAXIM image-restoration U-Net (no
encoder/decoder stages, cross-gating blocks, channel attention or multi-scale outputs):

    images [batch, H, W, C] -> conv patch embedding -> tokens x [batch, h, w, d_model]
    (h = H / patch_size) -> n_layers blocks -> LayerNorm -> mean over (h, w) -> linear head.

Each block is the reference's `ResidualSplitHeadMultiAxisGmlpLayer` followed by the channel MLP
of its `RDCAB` without the squeeze-excitation channel attention (`CALayer`):

    z = gelu(in_project(LN_in(x)))            [b, h, w, d_model * input_proj_factor]
    u, v = split(z, 2, channels)               each [b, h, w, d_branch]
    x = x + out_project(concat(Global(u), Local(v)))
    x = x + Dense_1(gelu(Dense_0(LN(x))))      (channel MLP, hidden width d_mlp)

The two branches are gMLP layers on a partition of the feature map into windows,
`partition(x, fh, fw)`: [b, h, w, c] -> [b, (h/fh)(w/fw), fh*fw, c], window
`n = (i // fh) * (w / fw) + j // fw`, position in the window `p = (i % fh) * fw + j % fw`
(the reference's einops `"n (gh fh) (gw fw) c -> n (gh gw) (fh fw) c"`):

    Branch(x) = unpartition(x_p + out_project(g_u * (gate + 1))),  x_p = partition(x, fh, fw)
    g_u, g_v = split(gelu(in_project(LN(x_p))), 2, channels)
    local  (BlockGmlpLayer, fh = fw = block_size):  gate[b, n, q, c] =
        sum_p LN(g_v)[b, n, p, c] K[p, q] + k[q]      mixing WITHIN each block_size² window
    global (GridGmlpLayer, fh = h / grid_size):     gate[b, m, p, c] =
        sum_n LN(g_v)[b, n, p, c] K[n, m] + k[m]      mixing ACROSS the grid_size² windows at
                                                      the same offset p (a dilated, global mix)

gelu is the tanh approximation (Flax `nn.gelu`), LayerNorm eps 1e-6 (Flax default), Dense
kernels normal(init_range = 0.02) as in the reference.

Parameters (Flax `nn.Dense` / `nn.LayerNorm` names; reference paths after the arrows, where
S = SplitHeadMultiAxisGmlpLayer_{i}):

    patch_embed/{W_patch [p, p, C, d_model], b_patch}     (layers.vision.PatchEmbed)
    blocks_{i}/{LayerNorm_in, in_project, out_project}    <- S/...
    blocks_{i}/global/{LayerNorm, in_project, out_project}  <- S/GridGmlpLayer/...
    blocks_{i}/global/{intermediate_layernorm, Dense_0}     <- S/GridGmlpLayer/GridGatingUnit/...
    blocks_{i}/local/...                                    <- S/BlockGmlpLayer/..., likewise
    blocks_{i}/channel_mlp/{LayerNorm, Dense_0, Dense_1}    <- RDCAB LayerNorm, channel_mixing/...
    final_norm/{scale, bias}    head/{W_head, b_head}

The gating unit is inlined in its branch (so its site is `local.hook_gate`); a reference
checkpoint maps on by dropping the `{Grid,Block}GatingUnit` level. All parameters carry logical
axis names (`nn.meta.unbox` removes the boxes). With `scan_layers=True` the blocks are one
`blocks` subtree stacked over layers (`jaxinterp.models.stack_layers` converts).

Sites (h, w: the token grid; nw, wp: windows and positions per window of the branch):
  hook_embed                                       [batch, height, width, d_model]
  blocks.{i}.hook_resid_pre                        [batch, height, width, d_model]
  blocks.{i}.hook_in_proj                          [batch, height, width, 2 * d_branch] (gelu'd)
  blocks.{i}.{global,local}.hook_gate              [batch, window, window_pos, d_gate] (the
                                                    spatially mixed gate; out = g_u * (gate + 1))
  blocks.{i}.{global,local}.hook_gated             [batch, window, window_pos, d_gate]
  blocks.{i}.{global,local}.hook_out               [batch, height, width, d_branch] (the branch's
                                                    output, its half of the concatenation)
  blocks.{i}.hook_mix_out                          [batch, height, width, d_model]
  blocks.{i}.hook_resid_mid                        [batch, height, width, d_model]
  blocks.{i}.channel_mlp.hook_pre|hook_post        [batch, height, width, d_mlp]
  blocks.{i}.hook_mlp_out, blocks.{i}.hook_resid_post   [batch, height, width, d_model]
  hook_pooled                                      [batch, d_model] (after final norm and mean)
with d_branch = d_model * input_proj_factor / 2, d_gate = d_branch * {grid,block}_gmlp_factor / 2.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.hooks import site
from jaxinterp.layers import vision as vc
from jaxinterp.layers.axes import MAP_AXES, POOLED_AXES, WINDOW_AXES
from jaxinterp.layers.common import activation, param
from jaxinterp.layers.config import StackConfig, dtype_kwargs, dtypes
from jaxinterp.layers.dense import Dense
from jaxinterp.layers.mlp import MLP
from jaxinterp.layers.norms import FlaxLayerNorm
from jaxinterp.layers.stack import stack
from jaxinterp.models.preset import Preset

BRANCHES = ("local", "global")


def partition(x: jax.Array, fh: int, fw: int) -> jax.Array:
    """[b, h, w, c] -> [b, (h/fh)(w/fw), fh*fw, c]: non-overlapping fh x fw windows, both the
    windows and the pixels inside each window in row-major order."""
    b, h, w, c = x.shape
    if h % fh or w % fw:
        raise ValueError(f"a {h}x{w} feature map cannot be cut into {fh}x{fw} windows")
    x = x.reshape(b, h // fh, fh, w // fw, fw, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // fh) * (w // fw), fh * fw, c)


def unpartition(x: jax.Array, h: int, w: int, fh: int, fw: int) -> jax.Array:
    """The inverse of `partition`: [b, (h/fh)(w/fw), fh*fw, c] -> [b, h, w, c]."""
    b, _, _, c = x.shape
    x = x.reshape(b, h // fh, w // fw, fh, fw, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


@dataclasses.dataclass(frozen=True)
class MaximConfig(vc.PatchClassifierConfig, StackConfig):
    """Hyperparameters of a MAXIM block-stack classifier (image_size, in_channels, num_classes,
    patch_size, dtype, param_dtype: `layers.vision.PatchClassifierConfig`, LayerNorm
    statistics in float32; scan_layers, remat: `layers.config.StackConfig`).

    Attributes:
      patch_size: side of the conv patch embedding (kernel = stride); the token grid is
        (image_size / patch_size)² and must be divisible by block_size and grid_size.
      n_layers: multi-axis gMLP blocks.
      d_model: channels of the token grid.
      d_mlp: hidden width of the channel MLP (the reference RDCAB uses d_mlp = d_model).
      block_size: side of the local windows (local branch mixes within each window).
      grid_size: side of the global grid (global branch mixes across grid_size² windows).
      input_proj_factor, block_gmlp_factor, grid_gmlp_factor: channel expansions of the
        block's and the branches' `in_project` (reference defaults 2, 2, 2).
      use_bias: biases in every Dense (reference default True).
      eps: LayerNorm epsilon (Flax default 1e-6).
      init_range: standard deviation of the normal initialiser of weights (reference 2e-2).
    """

    patch_size: int = 8
    n_layers: int = 8
    d_model: int = 256
    d_mlp: int = 256
    block_size: int = 7
    grid_size: int = 7
    input_proj_factor: int = 2
    block_gmlp_factor: int = 2
    grid_gmlp_factor: int = 2
    use_bias: bool = True
    eps: float = 1e-6
    init_range: float = 0.02

    def __post_init__(self):
        super().__post_init__()
        vc.check_positive(self, "n_layers", "d_model", "d_mlp", "block_size", "grid_size",
                          "input_proj_factor", "block_gmlp_factor", "grid_gmlp_factor")
        vc.n_patches(self.image_size, self.patch_size)  # raises unless the patches tile
        for f in ("block_size", "grid_size"):
            if self.side % getattr(self, f):
                raise ValueError(
                    f"MaximConfig.{f}={getattr(self, f)} must divide the token grid side "
                    f"{self.side} (= image_size {self.image_size} / patch_size "
                    f"{self.patch_size})")
        if (self.d_model * self.input_proj_factor) % 2:
            raise ValueError(f"d_model * input_proj_factor = {self.d_model} * "
                             f"{self.input_proj_factor} must be even (split into two branches)")
        for f in ("block_gmlp_factor", "grid_gmlp_factor"):
            if (self.d_branch * getattr(self, f)) % 2:
                raise ValueError(f"d_branch * {f} = {self.d_branch} * {getattr(self, f)} must "
                                 "be even (split into gate and value halves)")

    @property
    def side(self) -> int:
        """Side of the token grid, image_size / patch_size."""
        return self.image_size // self.patch_size

    @property
    def d_branch(self) -> int:
        """Channels of each branch's input: d_model * input_proj_factor / 2."""
        return self.d_model * self.input_proj_factor // 2


class GmlpBranch(nn.Module):
    """One branch of the multi-axis block: a gMLP layer on a window partition.

    kind "local" (the reference `BlockGmlpLayer`): windows of `size x size` pixels, the gate
    mixes positions within each window. kind "global" (`GridGmlpLayer`): a `size x size` grid of
    windows of (h/size) x (w/size) pixels, the gate mixes windows at the same offset.
    x: [batch, h, w, c] -> [batch, h, w, c] (includes the branch's own residual).
    """

    kind: str
    size: int
    factor: int = 2
    use_bias: bool = True
    eps: float = 1e-6
    init_range: float = 0.02
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind not in BRANCHES:
            raise ValueError(f"unknown branch kind {self.kind!r}; choose from {BRANCHES}")
        _, h, w, c = x.shape
        if h % self.size or w % self.size:
            what = "block_size" if self.kind == "local" else "grid_size"
            raise ValueError(f"{what}={self.size} must divide the feature map size {h}x{w}")
        fh, fw = ((self.size, self.size) if self.kind == "local"
                  else (h // self.size, w // self.size))
        init = nn.initializers.normal(self.init_range)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        xp = partition(x, fh, fw)  # [b, n_windows, window_pos, c]
        y = FlaxLayerNorm(self.eps, name="LayerNorm", **kw)(xp)
        y = Dense(c * self.factor, ("embed", "mlp"), init, self.use_bias, name="in_project",
                  **kw)(y)
        y = activation("gelu_new")(y).astype(self.dtype)
        gu, gv = jnp.split(y, 2, axis=-1)  # [b, n, p, c * factor / 2] each
        gv = FlaxLayerNorm(self.eps, axis_name="mlp", name="intermediate_layernorm", **kw)(gv)
        n_mix = xp.shape[1] if self.kind == "global" else xp.shape[2]
        kernel, bias = _Weights(n_mix, init, self.use_bias, self.param_dtype, name="Dense_0")()
        if self.kind == "global":
            gate = jnp.einsum("bnpc,nm->bmpc", gv, kernel.astype(self.dtype))  # contract windows n
            if bias is not None:
                gate = gate + bias.astype(self.dtype)[None, :, None, None]
        else:
            gate = jnp.einsum("bnpc,pq->bnqc", gv, kernel.astype(self.dtype))  # contract pos p
            if bias is not None:
                gate = gate + bias.astype(self.dtype)[None, None, :, None]
        gate = site(self, "hook_gate", gate.astype(self.dtype), WINDOW_AXES)
        gated = site(self, "hook_gated", gu * (gate + 1.0), WINDOW_AXES)
        y = Dense(c, ("mlp", "embed"), init, self.use_bias, name="out_project", **kw)(gated)
        out = unpartition(xp + y, h, w, fh, fw)
        return site(self, "hook_out", out, MAP_AXES)


class _Weights(nn.Module):
    """`kernel [n, n]` and (optionally) `bias [n]` of the gating unit's spatial Dense (the
    reference's `Dense_0`), returned rather than applied because the contracted axis is a window
    axis, not the last one."""

    n: int
    kernel_init: nn.initializers.Initializer
    use_bias: bool
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array | None]:
        k = param(self, "kernel", self.kernel_init, (self.n, self.n), (None, None),
                  self.param_dtype)
        b = (param(self, "bias", nn.initializers.zeros, (self.n,), (None,), self.param_dtype)
             if self.use_bias else None)
        return k, b


class ChannelMlp(nn.Module):
    """RDCAB without channel attention: Dense_1(gelu(Dense_0(LayerNorm(x)))), with sites on the
    hidden units (width `config.d_mlp`). x: [batch, h, w, d_model] -> [batch, h, w, d_model]."""

    config: MaximConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        kw = dtype_kwargs(c)
        y = FlaxLayerNorm(c.eps, name="LayerNorm", **kw)(x)
        mlp = MLP(c.d_mlp, "gelu_new", use_bias=c.use_bias, init_range=c.init_range,
                  site_axes=("batch", "height", "width", "d_mlp"), names=("Dense_0", "Dense_1"),
                  **kw)
        nn.share_scope(self, mlp)  # LayerNorm, Dense_0, Dense_1 side by side, as in the reference
        return mlp(y)


class MaximBlock(nn.Module):
    """Multi-axis gMLP layer + channel MLP. x: [batch, h, w, d_model] ->
    ([batch, h, w, d_model], None). `layer` is the block index (traced under `nn.scan`)."""

    config: MaximConfig

    @nn.compact
    def __call__(self, x: jax.Array, layer: int | jax.Array) -> tuple[jax.Array, None]:
        c = self.config
        dtype, pd = dtypes(c)
        kw = dict(dtype=dtype, param_dtype=pd)
        init = nn.initializers.normal(c.init_range)
        branch = dict(use_bias=c.use_bias, eps=c.eps, init_range=c.init_range, **kw)
        x = site(self, "hook_resid_pre", x, MAP_AXES)
        z = FlaxLayerNorm(c.eps, name="LayerNorm_in", **kw)(x)
        z = Dense(2 * c.d_branch, ("embed", "mlp"), init, c.use_bias, name="in_project",
                  **kw)(z)
        z = site(self, "hook_in_proj", activation("gelu_new")(z).astype(dtype),
                 ("batch", "height", "width", "d_mlp"))
        u, v = jnp.split(z, 2, axis=-1)  # [b, h, w, d_branch] each
        u = GmlpBranch("global", c.grid_size, c.grid_gmlp_factor, name="global",
                       **branch)(u)
        v = GmlpBranch("local", c.block_size, c.block_gmlp_factor, name="local",
                       **branch)(v)
        m = Dense(c.d_model, ("mlp", "embed"), init, c.use_bias, name="out_project", **kw)(
            jnp.concatenate([u, v], axis=-1))
        x = x + site(self, "hook_mix_out", m, MAP_AXES)
        x = site(self, "hook_resid_mid", x, MAP_AXES)
        y = ChannelMlp(c, name="channel_mlp")(x)
        x = x + site(self, "hook_mlp_out", y, MAP_AXES)
        return site(self, "hook_resid_post", x, MAP_AXES), None


class Maxim(vc.ImageClassifier):
    """MAXIM blocks: images [batch, H, W, C] float -> logits [batch, num_classes] float32
    (see the module docstring; `layers.vision.ImageClassifier` checks the images)."""

    config: MaximConfig

    def forward(self, images: jax.Array, dtype: jnp.dtype, pd: jnp.dtype) -> jax.Array:
        c = self.config
        x = vc.PatchEmbed(c.patch_size, c.d_model, use_bias=c.use_bias,
                          init_range=c.init_range, tokens=False, dtype=dtype, param_dtype=pd,
                          name="patch_embed")(images)
        x = site(self, "hook_embed", x, MAP_AXES)
        x = stack(MaximBlock, x, n_layers=c.n_layers, scan=c.scan_layers, remat=c.remat,
                  args=(c,), axes=MAP_AXES)
        x = FlaxLayerNorm(c.eps, name="final_norm", dtype=dtype, param_dtype=pd)(x)
        pooled = site(self, "hook_pooled", x.mean(axis=(1, 2)), POOLED_AXES)
        return vc.ClassifierHead(c.num_classes, use_bias=c.use_bias, init_range=c.init_range,
                                 dtype=dtype, param_dtype=pd, name="head")(pooled)


PRESETS: dict[str, Preset] = {
    "maxim_block_s": Preset(
        Maxim, MaximConfig,
        dict(image_size=224, in_channels=3, num_classes=1000, patch_size=8, n_layers=8,
             d_model=256, d_mlp=256, block_size=7, grid_size=7),
        "A MAXIM multi-axis gMLP block stack + classifier (not the MAXIM restoration U-Net): "
        "224x224, patch 8 -> 28x28 tokens, 8 blocks, d_model 256, 7x7 local blocks and a 7x7 "
        "global grid, channel MLP 256; 6,684,680 parameters."),
}
