"""Pieces every image family uses: input checks, patch embedding, pooling, classifier head.

Images are NHWC floats, `[batch, height, width, channels]`. A patch model cuts them into
non-overlapping `patch x patch` squares, read in row-major order (patch `(i, j)` is token
`i * (width // patch) + j`), and maps each square linearly to `d_model` features: the
"conv patch embedding" of ViT (Dosovitskiy et al. 2021) and MLP-Mixer (Tolstikhin et al.
2021), a convolution with kernel = stride = patch. The parameter layout is the Flax/big_vision
one, `W_patch [patch, patch, channels, d_model]` (timm's `proj.weight` transposed), and the
counts match timm's `patch_embed.proj` (weight plus bias).

Public API (site axis names such as TOKEN_AXES live in `jaxinterp.layers.axes`):
  check_images(images, image_size, channels, who)   clear ValueError on bad input
  n_patches(image_size, patch_size) -> int
  PatchEmbed(patch_size, d_model, ...)(images) -> [batch, n_patches, d_model] (or the map)
  pool(x, kind) -> [batch, d_model]         "token" (position 0) or "mean" (over positions)
  ClassifierHead(num_classes, ...)(x) -> logits [batch, num_classes] float32
  count_params(tree) -> int
  ImageClassifier: the base of the image classifiers (checks the images, calls `forward`)
  ImageClassifierConfig, PatchClassifierConfig: the config fields every image classifier has
  (check_positive, check_stages, check_dtypes: re-exported from `jaxinterp.layers.config`)
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.layers.common import Initializer, param
from jaxinterp.layers.config import check_dtypes, check_positive, check_stages, dtypes
from jaxinterp.layers.dense import dense

__all__ = ["POOLS", "ClassifierHead", "ImageClassifier", "ImageClassifierConfig",
           "PatchClassifierConfig", "PatchEmbed", "check_dtypes", "check_images",
           "check_positive", "check_stages", "count_params", "n_patches", "pool"]

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
    """images [batch, H, W, C] -> tokens [batch, (H/p)*(W/p), d_model] (row-major patches), or
    the map [batch, H/p, W/p, d_model] with `tokens=False`: Flax `nn.Conv(d_model, (p, p),
    strides=(p, p))` on an image that the patches tile, computed as one contraction per patch.

    Parameters `names` = (kernel, bias): `W_patch [patch, patch, channels, d_model]`, `b_patch
    [d_model]` (default), or Flax's `kernel`, `bias` (Mixer's `stem`). `kernel_init` (default
    normal(init_range)); `promote`: as `jaxinterp.layers.dense.dense` (True: Flax's casts;
    False: the bias is added as stored).
    """

    patch_size: int
    d_model: int
    use_bias: bool = True
    init_range: float = 0.02
    kernel_init: Initializer | None = None
    names: tuple[str, str] = ("W_patch", "b_patch")
    promote: bool = False
    tokens: bool = True
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        b, h, w, c = images.shape
        p = self.patch_size
        n_patches((h, w), p)
        init = (nn.initializers.normal(self.init_range) if self.kernel_init is None
                else self.kernel_init)
        kernel = param(self, self.names[0], init, (p, p, c, self.d_model),
                       (None, None, None, "embed"), self.param_dtype)
        # [b, gh, p, gw, p, c]: patch (g, h) holds pixels (y, x) of channels c
        patches = images.reshape(b, h // p, p, w // p, p, c).astype(self.dtype)
        # contract each patch's rows y, columns x and channels c
        out = jnp.einsum("bgyhxc,yxcd->bghd", patches, kernel.astype(self.dtype))
        if self.use_bias:
            bias = param(self, self.names[1], nn.initializers.zeros, (self.d_model,),
                         ("embed",), self.param_dtype)
            out = out + (bias.astype(self.dtype) if self.promote else bias)
        out = out.astype(self.dtype)
        return out.reshape(b, -1, self.d_model) if self.tokens else out


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
        return dense(self, x.astype(self.dtype), self.num_classes, axes=("embed", "vocab"),
                     kernel_init=init, use_bias=self.use_bias, names=("W_head", "b_head"),
                     promote=False, dtype=self.dtype, param_dtype=self.param_dtype,
                     out_dtype=jnp.float32)


def count_params(tree) -> int:
    """Total number of array elements in a (possibly boxed or abstract) parameter tree."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(tree))))


@dataclasses.dataclass(frozen=True)
class ImageClassifierConfig:
    """The fields every image classifier's config has; the family configs inherit them (and
    may change a default) and document only their own fields. Construct by keyword.

    Attributes:
      image_size: height = width of the input images [batch, image_size, image_size,
        in_channels] (NHWC).
      in_channels: image channels (3 for RGB).
      num_classes: outputs of the classifier head.
      dtype, param_dtype: compute and parameter dtypes (names, e.g. "bfloat16"); norm
        statistics run in float32.
    """

    image_size: int = 224
    in_channels: int = 3
    num_classes: int = 1000
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        check_positive(self, "image_size", "in_channels", "num_classes")
        check_dtypes(self)


@dataclasses.dataclass(frozen=True)
class PatchClassifierConfig(ImageClassifierConfig):
    """An `ImageClassifierConfig` whose model starts with a patch embedding.

    Attributes:
      patch_size: side of the square patches of the first embedding (kernel = stride); it
        must divide image_size (each family checks its own tiling, e.g. with `n_patches`).
    """

    patch_size: int = 16

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "patch_size")


class ImageClassifier(nn.Module):
    """The base of the image classifiers: images [batch, H, W, C] float -> logits [batch,
    num_classes] float32.

    `__call__` checks the images against `config` (an `ImageClassifierConfig`; the error names
    the subclass) and returns `self.forward(images, dtype, param_dtype)`, the config's dtypes
    as `jnp.dtype`s. Subclasses define `forward`; it runs inside this compact `__call__`, so it
    creates submodules and parameters as a compact method does.
    """

    config: ImageClassifierConfig

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        c = self.config
        check_images(images, c.image_size, c.in_channels, type(self).__name__)
        return self.forward(images, *dtypes(c))

    def forward(self, images: jax.Array, dtype: jnp.dtype, pd: jnp.dtype) -> jax.Array:
        raise NotImplementedError(f"{type(self).__name__} must define forward")
