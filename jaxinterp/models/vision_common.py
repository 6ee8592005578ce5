"""Pieces shared by the image models: input checks, patch embedding, pooling, classifier head.

Images are NHWC floats, `[batch, height, width, channels]`. A patch model cuts them into
non-overlapping `patch x patch` squares, read in row-major order (patch `(i, j)` is token
`i * (width // patch) + j`), and maps each square linearly to `d_model` features: the
"conv patch embedding" of ViT (Dosovitskiy et al. 2021) and MLP-Mixer (Tolstikhin et al.
2021), a convolution with kernel = stride = patch. The parameter layout is the Flax/big_vision
one, `W_patch [patch, patch, channels, d_model]` (timm's `proj.weight` transposed), and the
counts match timm's `patch_embed.proj` (weight plus bias).

Public API (kept stable for the other vision families):
  IMAGE_AXES, TOKEN_AXES, POOLED_AXES       site axis names
  check_images(images, image_size, channels, who)   clear ValueError on bad input
  n_patches(image_size, patch_size) -> int
  PatchEmbed(patch_size, d_model, ...)(images) -> [batch, n_patches, d_model]
  pool(x, kind) -> [batch, d_model]         "token" (position 0) or "mean" (over positions)
  ClassifierHead(num_classes, ...)(x) -> logits [batch, num_classes] float32
  count_params(tree) -> int; check_positive(config, *fields); check_dtypes(config)
  LayerNormParams(...)(d) -> (w, b); AppliedNorm(eps, ...)(x, w, b, axes): a shared LayerNorm
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import hooks
from jaxinterp.layers.common import param
from jaxinterp.layers.mlp import MLP

IMAGE_AXES = ("batch", "height", "width", "channels")
TOKEN_AXES = ("batch", "pos", "d_model")
POOLED_AXES = ("batch", "d_model")
POOLS = ("token", "mean")


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


def check_images(images: jax.Array, image_size: int | tuple[int, int], channels: int,
                 who: str) -> None:
    """Raises ValueError unless `images` is a float `[batch, image_size, image_size, channels]`.

    `who` names the model in the message (e.g. "ViT").
    """
    h, w = _pair(image_size)
    if images.ndim != 4:
        raise ValueError(f"{who} expects NHWC images [batch, height, width, channels], got an "
                         f"array of shape {images.shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"{who} expects float images, got dtype {images.dtype} (convert and "
                         "normalise, e.g. images / 255.0)")
    if tuple(images.shape[1:]) != (h, w, channels):
        raise ValueError(f"{who} was configured for images of shape [batch, {h}, {w}, "
                         f"{channels}] (image_size={image_size}, in_channels={channels}), got "
                         f"{tuple(images.shape)}")


def n_patches(image_size: int | tuple[int, int], patch_size: int) -> int:
    """Number of `patch_size` squares in an image; ValueError if they do not tile it."""
    h, w = _pair(image_size)
    if patch_size <= 0 or h % patch_size or w % patch_size:
        raise ValueError(f"patch_size={patch_size} must be positive and divide the image size "
                         f"{h}x{w}")
    return (h // patch_size) * (w // patch_size)


class PatchEmbed(nn.Module):
    """images [batch, H, W, C] -> tokens [batch, (H/p)*(W/p), d_model] (row-major patches).

    Parameters: `W_patch [patch, patch, channels, d_model]`, `b_patch [d_model]`.
    """

    patch_size: int
    d_model: int
    use_bias: bool = True
    init_range: float = 0.02
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        b, h, w, c = images.shape
        p = self.patch_size
        n_patches((h, w), p)
        gh, gw = h // p, w // p
        # [b, gh, p, gw, p, c] -> [b, gh, gw, p, p, c]: one row per patch, pixels in (y, x, c) order
        patches = images.reshape(b, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(b, gh * gw, p, p, c).astype(self.dtype)
        kernel = param(self, "W_patch", nn.initializers.normal(self.init_range),
                       (p, p, c, self.d_model), (None, None, None, "embed"), self.param_dtype)
        # contract the patch's pixels (y, x) and channels c
        out = jnp.einsum("bnyxc,yxcd->bnd", patches, kernel.astype(self.dtype))
        if self.use_bias:
            out = out + param(self, "b_patch", nn.initializers.zeros, (self.d_model,),
                              ("embed",), self.param_dtype)
        return out.astype(self.dtype)


def pool(x: jax.Array, kind: str) -> jax.Array:
    """x [batch, pos, d] -> [batch, d]: the class token (`"token"`, position 0) or the mean."""
    if kind == "token":
        return x[:, 0]
    if kind == "mean":
        return x.mean(axis=1)
    raise ValueError(f"unknown pool {kind!r}; choose from {POOLS}")


class ClassifierHead(nn.Module):
    """x [batch, d] -> logits [batch, num_classes] (float32) = x W_head + b_head.

    `init_range=0` initialises `W_head` to zeros (big_vision's choice); otherwise normal.
    """

    num_classes: int
    use_bias: bool = True
    init_range: float = 0.02
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = (nn.initializers.normal(self.init_range) if self.init_range
                else nn.initializers.zeros)
        w = param(self, "W_head", init, (x.shape[-1], self.num_classes), ("embed", "vocab"),
                  self.param_dtype)
        logits = jnp.einsum("bd,dk->bk", x.astype(self.dtype), w.astype(self.dtype))  # contract d
        if self.use_bias:
            logits = logits + param(self, "b_head", nn.initializers.zeros, (self.num_classes,),
                                    ("vocab",), self.param_dtype)
        return logits.astype(jnp.float32)


def count_params(tree) -> int:
    """Total number of array elements in a (possibly boxed or abstract) parameter tree."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(tree))))


def check_positive(config, *fields: str) -> None:
    """Raises ValueError unless each named field of `config` is a positive int."""
    for f in fields:
        v = getattr(config, f)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{type(config).__name__}.{f} must be a positive int, got {v!r}")


def check_dtypes(config) -> None:
    """Raises ValueError unless `config.dtype` and `config.param_dtype` name dtypes."""
    for f in ("dtype", "param_dtype"):
        try:
            jnp.dtype(getattr(config, f))
        except TypeError:
            raise ValueError(f"{type(config).__name__}.{f}={getattr(config, f)!r} is not a "
                             "dtype") from None


class LayerNormParams(nn.Module):
    """The weights `w`, `b` [d] of a LayerNorm used at several places (NiNformer and Activator
    blocks apply one `nn.LayerNorm` twice). Each use is an `AppliedNorm` with its own name, so
    each has its own site:

        w, b = LayerNormParams(param_dtype, name="ln")(d_model)
        h = AppliedNorm(eps, dtype, name="ln1")(x, w, b, axes)   # site <block>.ln1.hook_normalized
    """

    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, d: int) -> tuple[jax.Array, jax.Array]:
        w = param(self, "w", nn.initializers.ones, (d,), ("embed",), self.param_dtype)
        b = param(self, "b", nn.initializers.zeros, (d,), ("embed",), self.param_dtype)
        return w, b


class AppliedNorm(nn.Module):
    """One use of a shared LayerNorm: (x - mean) / sqrt(var + eps) * w + b, in float32, with a
    `hook_normalized` site."""

    eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, w, b, axes: tuple[str, ...]) -> jax.Array:
        xf = x.astype(jnp.float32)
        xf = xf - xf.mean(-1, keepdims=True)
        xf = xf * jax.lax.rsqrt((xf * xf).mean(-1, keepdims=True) + self.eps)
        y = (xf * w.astype(jnp.float32) + b.astype(jnp.float32)).astype(self.dtype)
        return hooks.site(self, "hook_normalized", y, axes)


@dataclasses.dataclass(frozen=True)
class GatedTokenConfig:
    """Hyperparameters of a `GatedTokenNet` (Activator, NiNformer); the defaults are both
    references' CIFAR-10 model.

    Attributes:
      image_size, patch_size, in_channels, num_classes: input and output shapes.
      n_layers: blocks; d_model: token width; d_ffn: hidden width of the gate's MLPs and of
        the FFN.
      ffn: keep the second (GELU MLP) sub-block (both references do; Activator's "GLU only"
        variant drops it).
      eps: LayerNorm epsilon (torch default 1e-5).
      init_range: standard deviation of the normal initialiser of weights.
      dtype, param_dtype: compute and parameter dtypes.
    """

    image_size: int = 32
    patch_size: int = 4
    in_channels: int = 3
    num_classes: int = 10
    n_layers: int = 4
    d_model: int = 256
    d_ffn: int = 512
    ffn: bool = True
    eps: float = 1e-5
    init_range: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        check_positive(self, "image_size", "patch_size", "in_channels", "num_classes",
                       "n_layers", "d_model", "d_ffn")
        n_patches(self.image_size, self.patch_size)
        check_dtypes(self)



class GatedTokenBlock(nn.Module):
    """The block Activator and NiNformer share; they differ only in the gating unit.

        x = x + gate(LN(x));  x = x + MLP(LN(x))     (the MLP sub-block only if `config.ffn`)

    One LayerNorm's parameters are used for both norms, as in both references. `gate` is a
    module class called as `gate(d_ffn, eps, init_range, dtype, param_dtype, name="gate")`.
    x [batch, pos, d_model] -> ([batch, pos, d_model], None).
    """

    config: GatedTokenConfig
    gate: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x: jax.Array, layer: int) -> tuple[jax.Array, None]:
        c = self.config
        dtype, pd = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        with hooks.layer(self, "blocks", layer, c.n_layers):
            w_ln, b_ln = LayerNormParams(pd, name="ln")(c.d_model)
            x = hooks.site(self, "hook_resid_pre", x, TOKEN_AXES)
            h = AppliedNorm(c.eps, dtype, name="ln1")(x, w_ln, b_ln, TOKEN_AXES)
            gate = self.gate(c.d_ffn, c.eps, c.init_range, dtype, pd, name="gate")(h)
            x = x + hooks.site(self, "hook_gate_out", gate, TOKEN_AXES)
            if not c.ffn:
                return hooks.site(self, "hook_resid_post", x, TOKEN_AXES), None
            x = hooks.site(self, "hook_resid_mid", x, TOKEN_AXES)
            h = AppliedNorm(c.eps, dtype, name="ln2")(x, w_ln, b_ln, TOKEN_AXES)
            mlp = MLP(d_mlp=c.d_ffn, act_fn="gelu", init_range=c.init_range, dtype=dtype,
                      param_dtype=pd, name="mlp")
            x = x + hooks.site(self, "hook_mlp_out", mlp(h), TOKEN_AXES)
            return hooks.site(self, "hook_resid_post", x, TOKEN_AXES), None


class GatedTokenNet(nn.Module):
    """Conv patch embedding (no class token, no positions), `GatedTokenBlock`s, mean over
    tokens, linear head: images [batch, H, W, C] float -> logits [batch, num_classes] float32.
    Subclasses set `gate`."""

    config: GatedTokenConfig
    gate: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        c = self.config
        dtype, pd = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        check_images(images, c.image_size, c.in_channels, type(self).__name__)
        x = PatchEmbed(c.patch_size, c.d_model, init_range=c.init_range, dtype=dtype,
                       param_dtype=pd, name="patch_embed")(images)
        x = hooks.site(self, "hook_embed", x, TOKEN_AXES)
        for i in range(c.n_layers):
            x, _ = GatedTokenBlock(c, self.gate, name=f"blocks_{i}")(x, i)
        pooled = hooks.site(self, "hook_pooled", pool(x, "mean"), POOLED_AXES)
        return ClassifierHead(c.num_classes, init_range=c.init_range, dtype=dtype,
                              param_dtype=pd, name="head")(pooled)
