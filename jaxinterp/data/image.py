"""grain transformations for image classification: random crop, random flip, normalisation.

    from jaxinterp import data
    source = data.load_source("digits", "train", data_dir, image_size=32, channels=3)
    transforms = data.image.make_transforms(mean=(0.5,), std=(0.25,), crop_padding=4, flip=True)
    it = data.make_iterator(source, batch_size=128, seed=0, transform=transforms)
    batch = next(it)            # {"image": float32 [128, 32, 32, 3], "label": int64 [128]}
    eval_transforms = data.image.make_transforms(mean=(0.5,), std=(0.25,), train=False)

Each transform reads one feature of a dataset element (a dict; `"image"` by default, uint8
`[H, W, C]` as TFDS decodes images), replaces it, and leaves the other keys untouched. The
random ones are grain `RandomMap`s: `make_iterator` seeds them with its `seed`, and grain draws
each example's randomness from `(seed, position in the stream)`, so augmented batches are
deterministic given the seed, differ from epoch to epoch, and resume bit for bit after
`it.set_state(state)`. Crop and flip derive separate streams from that generator, so their
decisions are independent of each other.

In a config (`from_config`), the fields of `default_config()`:

    feature       "image"  the element key holding the image
    mean, std     (0.0,), (1.0,)  per-channel, applied after scaling uint8 to [0, 1]; length 1
                  (every channel) or C. E.g. MNIST (0.1307,), (0.3081,); CIFAR-10
                  (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616).
    crop_padding  0        pad by this many zero (black) pixels on each side, then crop back to
                  [H, W] at a uniformly random offset; 0 = no crop. Training only.
    flip          False    flip left-right with probability 1/2. Training only.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np


def _image(element: Any, feature: str, who: str) -> np.ndarray:
    """The `[H, W, C]` image at `element[feature]`, or a ValueError saying what is there."""
    if not isinstance(element, Mapping):
        raise ValueError(f"{who}: expected a dict element with an {feature!r} feature, got "
                         f"{type(element).__name__}")
    if feature not in element:
        raise ValueError(f"{who}: feature {feature!r} is not in the element; its keys are "
                         f"{sorted(element)} (set `feature=` to one of them)")
    x = np.asarray(element[feature])
    if x.ndim != 3:
        raise ValueError(f"{who}: feature {feature!r} must be one image [H, W, C], got shape "
                         f"{x.shape}")
    return x


def _stream(rng: np.random.Generator, stream: int) -> np.random.Generator:
    """A generator of its own for one transform.

    grain hands every `RandomMap` of a pipeline a generator in the same state for the same
    example (same seed, same index); mixing in a per-transform `stream` keeps their draws
    independent (e.g. the flip decision is not a function of the crop offset).
    """
    return np.random.default_rng([int(rng.integers(2**63)), stream])


def _floats(name: str, values: Any) -> tuple[float, ...]:
    values = (values,) if np.ndim(values) == 0 else tuple(values)
    if not values:
        raise ValueError(f"image.Normalize: {name} is empty; give one value per channel, or "
                         f"one for all")
    return tuple(float(v) for v in values)


@dataclasses.dataclass(frozen=True)
class Normalize(grain.transforms.Map):
    """uint8 `[H, W, C]` -> float32 `(x / 255 - mean) / std`, per channel.

    Attributes:
      feature: the element key of the image.
      mean, std: length 1 (broadcast to every channel) or C; std > 0.
    """

    feature: str = "image"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        mean, std = _floats("mean", self.mean), _floats("std", self.std)
        if min(std) <= 0:
            raise ValueError(f"image.Normalize: std must be > 0 in every channel, got {std}")
        if len(mean) > 1 and len(std) > 1 and len(mean) != len(std):
            raise ValueError(f"image.Normalize: mean has {len(mean)} channels but std has "
                             f"{len(std)}; give each 1 or C values")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def map(self, element):
        x = _image(element, self.feature, "image.Normalize")
        if x.dtype != np.uint8:
            raise ValueError(f"image.Normalize: feature {self.feature!r} must be uint8 0..255, "
                             f"got {x.dtype} (normalise once, after crop and flip)")
        channels = x.shape[-1]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise ValueError(f"image.Normalize: {name} has {len(values)} values but the "
                                 f"image {x.shape} has {channels} channels; give 1 or "
                                 f"{channels}")
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        out = (x.astype(np.float32) / np.float32(255.0) - mean) / std
        return {**element, self.feature: out}


@dataclasses.dataclass(frozen=True)
class RandomCrop(grain.transforms.RandomMap):
    """Zero-pad `[H, W, C]` by `padding` pixels on each side, crop `[H, W]` at a random offset.

    The content moves by at most `padding` pixels along each axis (uniform in
    `[-padding, padding]`); what moves in from outside is 0. Dtype and shape are kept.
    """

    feature: str = "image"
    padding: int = 0

    _STREAM = 1

    def __post_init__(self):
        _check_padding(self.padding)

    def random_map(self, element, rng: np.random.Generator):
        x = _image(element, self.feature, "image.RandomCrop")
        p = self.padding
        if p == 0:
            return element
        dy, dx = _stream(rng, self._STREAM).integers(0, 2 * p + 1, size=2)
        h, w = x.shape[:2]
        padded = np.pad(x, ((p, p), (p, p), (0, 0)))
        return {**element, self.feature: padded[dy:dy + h, dx:dx + w].copy()}


@dataclasses.dataclass(frozen=True)
class RandomHorizontalFlip(grain.transforms.RandomMap):
    """Flip `[H, W, C]` left-right (along W) with probability 1/2."""

    feature: str = "image"

    _STREAM = 2

    def random_map(self, element, rng: np.random.Generator):
        x = _image(element, self.feature, "image.RandomHorizontalFlip")
        if _stream(rng, self._STREAM).random() < 0.5:
            return {**element, self.feature: x[:, ::-1].copy()}
        return element


def _check_padding(padding: Any) -> None:
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"image: crop_padding must be an int >= 0 (pixels on each side), got "
                         f"{padding!r}")


def make_transforms(
    *,
    feature: str = "image",
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    crop_padding: int = 0,
    flip: bool = False,
    train: bool = True,
) -> list[grain.transforms.Map | grain.transforms.RandomMap]:
    """The transforms for `make_iterator(..., transform=...)`, in the order they apply.

    Args:
      feature: the element key of the image (uint8 `[H, W, C]`).
      mean, std: per-channel normalisation after scaling to [0, 1]; length 1 or C, std > 0.
      crop_padding: random crop after zero padding by this many pixels (0 = none).
      flip: random left-right flip with probability 1/2.
      train: False gives the normalisation only (no randomness), for evaluation.

    Returns:
      `[RandomCrop] + [RandomHorizontalFlip] + [Normalize]` (each random one only when asked
      for and `train`): augmentation on the uint8 image, so padding is black, then normalise
      to float32 `[H, W, C]`.
    """
    _check_padding(crop_padding)
    if not isinstance(flip, (bool, np.bool_)):
        raise ValueError(f"image: flip must be True or False, got {flip!r}")
    normalize = Normalize(feature=feature, mean=mean, std=std)
    if not train:
        return [normalize]
    augment: list[grain.transforms.RandomMap] = []
    if crop_padding:
        augment.append(RandomCrop(feature=feature, padding=int(crop_padding)))
    if flip:
        augment.append(RandomHorizontalFlip(feature=feature))
    return [*augment, normalize]


def default_config() -> ml_collections.ConfigDict:
    """The image-transform fields with their defaults (see the module docstring).

    feature="image", mean=(0.0,), std=(1.0,) (so images land in [0, 1]), crop_padding=0,
    flip=False: no augmentation. E.g. for CIFAR-10: `crop_padding=4, flip=True`.
    """
    return ml_collections.ConfigDict(
        dict(feature="image", mean=(0.0,), std=(1.0,), crop_padding=0, flip=False)
    )


def from_config(cfg: ml_collections.ConfigDict | Mapping[str, Any] | None,
                train: bool) -> list[grain.transforms.Map | grain.transforms.RandomMap]:
    """`make_transforms` from a config with (some of) `default_config()`'s fields.

    Missing fields take their defaults; None means all defaults (scale to [0, 1], nothing
    random). An unknown field is a ValueError that names the valid ones.
    """
    fields = dict(default_config())
    given = {} if cfg is None else dict(cfg)
    unknown = sorted(set(given) - set(fields))
    if unknown:
        hints = {k: difflib.get_close_matches(k, fields, n=1) for k in unknown}
        hint = "; ".join(f"{k!r}: did you mean {h[0]!r}?" for k, h in hints.items() if h)
        raise ValueError(f"image.from_config: unknown field(s) {unknown}; valid fields: "
                         f"{sorted(fields)}" + (f" ({hint})" if hint else ""))
    return make_transforms(**{**fields, **given}, train=train)
