"""Data for training: synthetic TFDS builders (array_record, no TensorFlow) and grain pipelines.

Builders (each deterministic given its config; see their modules for features and shapes):
`Induction` ("induction"), `ModularArithmetic` ("modular_arithmetic"), `IclRegression`
("icl_regression"), `BurstyIcl` ("bursty_icl"), `Digits` ("digits"; `image_size`, `channels`),
`BigramBackcopy` ("bigram_backcopy"), `Ordinal` ("ordinal"), `KeyValue` ("key_value"),
`FactualRecall` ("factual_recall"), `RelationSwitch` ("relation_switch"), `PlantedSum`
("planted_sum").
Image classification: `data.image.make_transforms` / `from_config` give grain transforms
(normalisation, random crop, random flip) for `make_iterator(..., transform=...)`.

    from jaxinterp import data
    source = data.load_source("induction", "train", data_dir, half_len=16)
    it = data.make_iterator(source, batch_size=64, seed=0, transform=data.language_model_batch)
    batch = data.to_global(next(it), mesh)

    source = data.load_source("digits", "train", data_dir, image_size=32, channels=3)
    it = data.make_iterator(source, batch_size=64, seed=0,
                            transform=data.image.make_transforms(crop_padding=4, flip=True))
"""

from jaxinterp.data import image
from jaxinterp.data.bigram_backcopy import BigramBackcopy, BigramBackcopyConfig
from jaxinterp.data.bursty_icl import BurstyIcl, BurstyIclConfig
from jaxinterp.data.digits import Digits, DigitsConfig
from jaxinterp.data.factual_recall import FactualRecall, FactualRecallConfig
from jaxinterp.data.icl_regression import IclRegression, IclRegressionConfig
from jaxinterp.data.induction import Induction, InductionConfig
from jaxinterp.data.key_value import KeyValue, KeyValueConfig
from jaxinterp.data.modular_arithmetic import ModularArithmetic, ModularArithmeticConfig
from jaxinterp.data.ordinal import Ordinal, OrdinalConfig
from jaxinterp.data.pipeline import language_model_batch, make_iterator, to_global
from jaxinterp.data.planted_sum import PlantedSum, PlantedSumConfig
from jaxinterp.data.relation_switch import RelationSwitch, RelationSwitchConfig
from jaxinterp.data.sources import BUILDERS, get_builder, load_source

__all__ = [
    "BUILDERS",
    "BigramBackcopy",
    "BigramBackcopyConfig",
    "BurstyIcl",
    "BurstyIclConfig",
    "Digits",
    "DigitsConfig",
    "FactualRecall",
    "FactualRecallConfig",
    "IclRegression",
    "IclRegressionConfig",
    "Induction",
    "InductionConfig",
    "KeyValue",
    "KeyValueConfig",
    "ModularArithmetic",
    "ModularArithmeticConfig",
    "Ordinal",
    "OrdinalConfig",
    "PlantedSum",
    "PlantedSumConfig",
    "RelationSwitch",
    "RelationSwitchConfig",
    "get_builder",
    "image",
    "language_model_batch",
    "load_source",
    "make_iterator",
    "to_global",
]
