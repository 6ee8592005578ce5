"""Naming datasets: jaxinterp's synthetic builders and any registered TFDS dataset.

    source = load_source("induction", "train", data_dir, half_len=16, num_train=1000)
    source = load_source("modular_arithmetic", "test", data_dir, p=97, op="/")
    source = load_source("mnist", "train", data_dir)      # any TFDS name (needs internet once)

A source is a random-access sequence of decoded NumPy examples (`len(source)`,
`source[i] -> {feature: np.ndarray | scalar}`), e.g. TFDS's `ArrayRecordDataSource`; feed it to
`jaxinterp.data.make_iterator`.
"""

from __future__ import annotations

from typing import Any

import tensorflow_datasets as tfds

from jaxinterp.data.bigram_backcopy import BigramBackcopy
from jaxinterp.data.bursty_icl import BurstyIcl
from jaxinterp.data.digits import Digits
from jaxinterp.data.factual_recall import FactualRecall
from jaxinterp.data.icl_regression import IclRegression
from jaxinterp.data.induction import Induction
from jaxinterp.data.key_value import KeyValue
from jaxinterp.data.modular_arithmetic import ModularArithmetic
from jaxinterp.data.ordinal import Ordinal
from jaxinterp.data.planted_sum import PlantedSum
from jaxinterp.data.relation_switch import RelationSwitch
from jaxinterp.data.synthetic import ARRAY_RECORD

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "induction": Induction,
    "modular_arithmetic": ModularArithmetic,
    "icl_regression": IclRegression,
    "bursty_icl": BurstyIcl,
    "digits": Digits,
    "bigram_backcopy": BigramBackcopy,
    "ordinal": Ordinal,
    "key_value": KeyValue,
    "factual_recall": FactualRecall,
    "planted_sum": PlantedSum,
    "relation_switch": RelationSwitch,
}


def get_builder(
    name: str, data_dir: str | None = None, **builder_kwargs: Any
) -> tfds.core.DatasetBuilder:
    """A TFDS builder by name, not yet prepared.

    `name` is one of `BUILDERS` (optionally `"name/config"`, e.g. `"induction/default"`), whose
    keyword arguments are config fields (e.g. `vocab_size=16`), or any name `tfds.builder`
    accepts (`"mnist"`, `"glue/cola:2.0.0"`), whose keyword arguments go to `tfds.builder`.
    """
    base, _, config = name.partition("/")
    if base in BUILDERS:
        return BUILDERS[base](data_dir=data_dir, config=config or None, **builder_kwargs)
    return tfds.builder(name, data_dir=data_dir, **builder_kwargs)


def load_source(name: str, split: str, data_dir: str | None = None, **builder_kwargs: Any) -> Any:
    """A random-access data source of decoded NumPy examples for one split.

    Args:
      name: a jaxinterp builder (`"induction"`, `"modular_arithmetic"`, `"icl_regression"`,
        `"bursty_icl"`, `"digits"`, `"bigram_backcopy"`, `"ordinal"`, `"key_value"`, optionally
        `"name/config"`) or any registered TFDS name.
      split: a TFDS split, slicing included (`"train"`, `"test[:50%]"`).
      data_dir: where datasets are (or get) prepared; None means TFDS's default
        (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
      **builder_kwargs: config fields of a jaxinterp builder, or `tfds.builder` kwargs.

    Returns:
      A `tfds.core.data_sources.ArrayRecordDataSource` (`len(src)`, `src[i]` -> dict of NumPy
      arrays / Python scalars). jaxinterp datasets are generated on first use (seconds for the
      default sizes); other TFDS datasets are downloaded and prepared in array_record format on
      first use, which needs internet access and, for TFDS's image datasets (mnist, cifar10,
      ...), TensorFlow: without it this raises a ModuleNotFoundError that says how to install
      it. Reading an already prepared array_record copy needs no TensorFlow. With several
      processes, prepare once (e.g. on process 0, then a barrier) before the others read.
    """
    base = name.partition("/")[0]
    if base in BUILDERS:
        builder = get_builder(name, data_dir, **builder_kwargs)
        builder.download_and_prepare(file_format=ARRAY_RECORD)
        return builder.as_data_source(split)
    # tfds.data_source picks array_record only when given neither data_dir nor builder_kwargs;
    # otherwise it would prepare TFRecords, which need TensorFlow and have no random access.
    builder_kwargs = {"file_format": ARRAY_RECORD, **builder_kwargs}
    try:
        return tfds.data_source(
            name, split=split, data_dir=data_dir, builder_kwargs=builder_kwargs
        )
    except ImportError as e:
        if not _missing_tensorflow(e):
            raise
        raise ModuleNotFoundError(_NEEDS_TENSORFLOW.format(name=name), name="tensorflow") from e


def _missing_tensorflow(e: BaseException | None) -> bool:
    """Whether `e` or an exception it was raised from is "No module named 'tensorflow'".

    TFDS re-raises import errors with its own message (and without `name`), keeping the
    original as `__cause__`.
    """
    while e is not None:
        if isinstance(e, ModuleNotFoundError) and (e.name or "").partition(".")[0] == "tensorflow":
            return True
        e = e.__cause__ or e.__context__
    return False


_NEEDS_TENSORFLOW = (
    "preparing the TFDS dataset {name!r} needs TensorFlow, which is not installed: TFDS's "
    "builders for image datasets (mnist, cifar10, ...) read their downloads with tf.io.gfile "
    "and PNG-encode NumPy images with TensorFlow. Reading a prepared array_record copy does not "
    "need it (images are decoded with Pillow). Either install it: pip install "
    "'jaxinterp[tfds-images]' (tensorflow-cpu), or prepare the dataset once where TensorFlow "
    "is installed (tfds build {name} --file_format=array_record --data_dir=DIR) and pass that "
    "data_dir."
)
