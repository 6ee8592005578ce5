"""`digits`: scikit-learn's bundled 8x8 handwritten digits (offline; 1797 images).

`sklearn.datasets.load_digits()` ships with scikit-learn, so nothing is downloaded. Pixel
values 0..16 are scaled to 0..255. The split is fixed: a permutation with seed 0 puts 360
images (about 20%) in `test` and the other 1437 in `train`. Features (MNIST-compatible):

    image  uint8 [S, S, C]   (S = image_size, C = channels; default [8, 8, 1])
    label  ClassLabel(10)    (int64 [] when decoded)

Config fields (builder keyword arguments, e.g. `load_source("digits", "train", data_dir,
image_size=32, channels=3)`; each setting is prepared in its own directory, named after the
changed fields, e.g. `digits/default-image_size32-channels3/1.0.0`):

    image_size  side S of the stored images (>= 8); larger sizes are bilinear upsamplings of the
                8x8 originals (half-pixel centres, edges clamped, as `jax.image.resize`),
                rounded back to uint8 0..255. 8 stores the originals unchanged.
    channels    1 (gray) or 3 (the gray image repeated, for models that expect RGB).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from jaxinterp.data.synthetic import SyntheticBuilder, check

NUM_EXAMPLES = 1797
NUM_TEST = 360
SOURCE_SIZE = 8
_SPLIT_SEED = 0


def split_indices() -> dict[str, np.ndarray]:
    """Indices into `load_digits()` of the fixed `train` and `test` splits (sorted)."""
    perm = np.random.default_rng(_SPLIT_SEED).permutation(NUM_EXAMPLES)
    return {"train": np.sort(perm[NUM_TEST:]), "test": np.sort(perm[:NUM_TEST])}


@dataclasses.dataclass(eq=False)
class DigitsConfig(tfds.core.BuilderConfig):
    """Parameters of the `digits` dataset.

    Attributes:
      image_size: side of the stored square images, >= 8 (8 = the originals).
      channels: 1 (gray) or 3 (gray repeated).
    """

    image_size: int = SOURCE_SIZE
    channels: int = 1

    def validate(self) -> None:
        check(
            isinstance(self.image_size, (int, np.integer)) and self.image_size >= SOURCE_SIZE,
            f"digits: image_size must be an int >= {SOURCE_SIZE} (the originals are "
            f"{SOURCE_SIZE}x{SOURCE_SIZE}; only upsampling is supported), got {self.image_size!r}",
        )
        check(
            self.channels in (1, 3),
            f"digits: channels must be 1 (gray) or 3 (gray repeated), got {self.channels!r}",
        )


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """float64 [n_out, n_in]: bilinear interpolation weights along one axis.

    Half-pixel centres (output pixel `o` samples input coordinate `(o + 0.5) * n_in / n_out -
    0.5`), clamped at the edges; for upsampling this is `jax.image.resize(..., "bilinear")`.
    """
    x = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = np.floor(x).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = x - i0
    w = np.zeros((n_out, n_in))
    np.add.at(w, (np.arange(n_out), i0), 1 - t)
    np.add.at(w, (np.arange(n_out), i1), t)
    return w


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, H, W] -> uint8 [N, size, size], bilinear (see `_bilinear_matrix`), rounded.

    NumPy in float64, so the stored bytes do not depend on the JAX backend.
    """
    h, w = images.shape[1:]
    if (h, w) == (size, size):
        return images
    wy, wx = _bilinear_matrix(h, size), _bilinear_matrix(w, size)
    out = np.einsum("yi,nij,xj->nyx", wy, images.astype(np.float64), wx)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


class Digits(SyntheticBuilder, skip_registration=True):
    """scikit-learn 8x8 digits. Features: image uint8 [S, S, C], label ClassLabel(10)."""

    CONFIG_CLASS = DigitsConfig

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=(__doc__ or "").strip(),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(
                        shape=(cfg.image_size, cfg.image_size, cfg.channels), dtype=np.uint8
                    ),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:  # pragma: no cover
            raise ImportError(
                "the digits dataset needs scikit-learn: pip install scikit-learn"
            ) from e
        cfg = self.builder_config
        data = load_digits()
        images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)  # [N, 8, 8]
        images = resize_images(images, cfg.image_size)[..., None]  # [N, S, S, 1]
        images = np.repeat(images, cfg.channels, axis=-1)  # [N, S, S, C]
        labels = data.target.astype(np.int64)
        return {
            split: self._generate_examples(images, labels, idx)
            for split, idx in split_indices().items()
        }

    def _generate_examples(self, images, labels, indices):
        for i in indices:
            yield int(i), {"image": images[i], "label": int(labels[i])}
