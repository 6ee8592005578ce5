"""`digits`: scikit-learn's bundled 8x8 handwritten digits (offline; 1797 images).

`sklearn.datasets.load_digits()` ships with scikit-learn, so nothing is downloaded. Pixel
values 0..16 are scaled to 0..255. The split is fixed: a permutation with seed 0 puts 360
images (about 20%) in `test` and the other 1437 in `train`. Features (MNIST-compatible):

    image  uint8 [8, 8, 1]
    label  ClassLabel(10)   (int64 [] when decoded)
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from jaxinterp.data._base import ARRAY_RECORD

NUM_EXAMPLES = 1797
NUM_TEST = 360
_SPLIT_SEED = 0


def split_indices() -> dict[str, np.ndarray]:
    """Indices into `load_digits()` of the fixed `train` and `test` splits (sorted)."""
    perm = np.random.default_rng(_SPLIT_SEED).permutation(NUM_EXAMPLES)
    return {"train": np.sort(perm[NUM_TEST:]), "test": np.sort(perm[:NUM_TEST])}


class Digits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """scikit-learn 8x8 digits. Features: image uint8 [8, 8, 1], label ClassLabel(10)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 (TFDS class attribute)

    def __init__(self, *, data_dir=None, config=None, version=None, file_format=ARRAY_RECORD):
        super().__init__(data_dir=data_dir, config=config, version=version, file_format=file_format)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(__doc__ or "").strip(),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
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
        data = load_digits()
        images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        labels = data.target.astype(np.int64)
        return {
            split: self._generate_examples(images, labels, idx)
            for split, idx in split_indices().items()
        }

    def _generate_examples(self, images, labels, indices):
        for i in indices:
            yield int(i), {"image": images[i], "label": int(labels[i])}
