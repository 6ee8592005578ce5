"""Shared machinery for the synthetic TFDS builders.

Every synthetic builder is a `tfds.core.GeneratorBasedBuilder` whose parameters live in a
`tfds.core.BuilderConfig` dataclass. Parameters can be given as a named config or as keyword
overrides to the constructor; overrides produce a config whose name spells out the changed
fields (e.g. `default-vocab_size16-half_len8`), so datasets with different parameters never share
a directory under `data_dir/<builder>/<config>/<version>`.

Data is written in the array_record format by default (no TensorFlow needed) and read with
`builder.as_data_source(split)`. Generation is deterministic: examples are drawn from NumPy
generators seeded by `(config.seed, split stream, chunk index)`.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

ARRAY_RECORD = "array_record"
_CHUNK = 1024
_BASE_FIELDS = frozenset(f.name for f in dataclasses.fields(tfds.core.BuilderConfig))


def chunk_rngs(seed: int, stream: int, n: int) -> Iterator[tuple[int, int, np.random.Generator]]:
    """Yields `(start, count, rng)` covering `range(n)` in chunks of 1024 examples.

    Each chunk has its own generator seeded by `[seed, stream, chunk index]`, so data is
    deterministic given `(seed, stream)` and independent of how it is consumed.
    """
    for start in range(0, n, _CHUNK):
        yield start, min(_CHUNK, n - start), np.random.default_rng([seed, stream, start // _CHUNK])


_NAME_SUBSTITUTES = {"/": "div", "*": "mul"}


def _name_part(value: Any) -> str:
    """`value` as text allowed in a TFDS config name (`/` becomes `div`)."""
    text = "".join(_NAME_SUBSTITUTES.get(c, c) for c in str(value))
    return re.sub(r"[^\w+\-.]", lambda m: f"x{ord(m.group()):02x}", text)


def config_fields(config_cls: type) -> list[str]:
    """The task parameters of a config class (its fields minus `tfds.core.BuilderConfig`'s)."""
    return [f.name for f in dataclasses.fields(config_cls) if f.name not in _BASE_FIELDS]


class SyntheticBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class: a builder configured by a named config and/or keyword overrides.

    Subclasses set `CONFIG_CLASS` (a `tfds.core.BuilderConfig` dataclass with a `validate()`
    method; `BUILDER_CONFIGS` defaults to its one config named `"default"`) and `_features`
    (the feature dict of a config; `_info` builds the `DatasetInfo` from it, with the class
    docstring as description and `SUPERVISED_KEYS`). A config with `num_train` / `num_test`
    fields is checked to have at least one example in each (the default `_split_generators`).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    CONFIG_CLASS: ClassVar[type]
    SUPERVISED_KEYS: ClassVar[tuple[str, str] | None] = None

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if hasattr(cls, "CONFIG_CLASS") and "BUILDER_CONFIGS" not in vars(cls):
            cls.BUILDER_CONFIGS = (cls.CONFIG_CLASS(name="default"),)

    def __init__(
        self,
        *,
        data_dir: str | None = None,
        config: str | tfds.core.BuilderConfig | None = None,
        version: str | None = None,
        file_format: str | None = ARRAY_RECORD,
        **overrides: Any,
    ):
        config = self._resolve_config(config, overrides)
        config.validate()
        sizes = {k: getattr(config, k) for k in ("num_train", "num_test") if hasattr(config, k)}
        check(all(n >= 1 for n in sizes.values()),
              f"{self.name}: num_train and num_test must be >= 1, got {sizes}")
        super().__init__(data_dir=data_dir, config=config, version=version, file_format=file_format)

    @classmethod
    def _resolve_config(
        cls, config: str | tfds.core.BuilderConfig | None, overrides: dict[str, Any]
    ) -> tfds.core.BuilderConfig:
        fields = config_fields(cls.CONFIG_CLASS)
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            hints = {k: difflib.get_close_matches(k, fields, n=1) for k in unknown}
            hint = "; ".join(f"{k!r} (did you mean {h[0]!r}?)" for k, h in hints.items() if h)
            raise TypeError(
                f"{cls.__name__}: unknown parameter(s) {unknown}. "
                f"Valid parameters: {fields}." + (f" {hint}" if hint else "")
            )
        if config is None or isinstance(config, str):
            name = config or "default"
            by_name = {c.name: c for c in cls.BUILDER_CONFIGS}
            if name not in by_name:
                raise ValueError(
                    f"{cls.__name__}: unknown config {name!r}; available: {sorted(by_name)}"
                )
            config = by_name[name]
        # In field order, so that the name does not depend on the order of the keywords.
        changed = {k: overrides[k] for k in fields if k in overrides}
        changed = {k: v for k, v in changed.items() if getattr(config, k) != v}
        if not changed:
            return config
        name = "-".join([config.name, *(f"{k}{_name_part(v)}" for k, v in changed.items())])
        return dataclasses.replace(config, name=name, **changed)

    def _split_generators(self, dl_manager):
        """`train` and `test` splits of `num_train` / `num_test` examples, generated from
        independent random streams 0 and 1 of the config's seed. Builders with other splits
        override this."""
        del dl_manager
        cfg = self.builder_config
        return {
            "train": self._generate_examples(cfg.num_train, stream=0),
            "test": self._generate_examples(cfg.num_test, stream=1),
        }

    def _features(self, cfg: Any) -> dict[str, tfds.features.FeatureConnector]:
        """The features of one example under config `cfg` (e.g. `{"tokens": tensor(...)}`)."""
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(self.__doc__ or "").strip(),
            features=tfds.features.FeaturesDict(self._features(self.builder_config)),
            supervised_keys=self.SUPERVISED_KEYS,
        )


def tensor(shape: tuple[int, ...], dtype: Any) -> tfds.features.Tensor:
    """A fixed-shape tensor feature, e.g. `tensor((n_ctx, d), np.float32)`."""
    return tfds.features.Tensor(shape=shape, dtype=dtype)


def check(condition: bool, message: str) -> None:
    """Raises `ValueError(message)` unless `condition` holds (config validation)."""
    if not condition:
        raise ValueError(message)
