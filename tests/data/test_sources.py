"""load_source: our builders by name, any TFDS dataset by name (mocked: no download)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxinterp import data


def test_our_builders_by_name(data_dir):
    source = data.load_source(
        "induction", "test", data_dir, vocab_size=8, half_len=2, num_train=4, num_test=3
    )
    assert len(source) == 3 and source[0]["tokens"].shape == (5,)
    again = data.load_source(
        "induction/default", "test[:2]", data_dir, vocab_size=8, half_len=2, num_train=4, num_test=3
    )
    assert len(again) == 2
    assert set(data.BUILDERS) == {
        "induction",
        "modular_arithmetic",
        "icl_regression",
        "bursty_icl",
        "digits",
        "bigram_backcopy",
        "ordinal",
        "key_value",
        "factual_recall",
        "relation_switch",
        "planted_sum",
    }


def test_tfds_dataset_by_name_mocked(tmp_path):
    with tfds.testing.mock_data(num_examples=16):
        source = data.load_source("mnist", "train", str(tmp_path))
        assert len(source) == 16
        ex = source[0]
        assert ex["image"].shape == (28, 28, 1) and ex["image"].dtype == np.uint8
        batch = next(data.make_iterator(source, batch_size=8, seed=0))
    assert batch["image"].shape == (8, 28, 28, 1)
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int64


def test_unknown_config_is_an_error(data_dir):
    with pytest.raises(ValueError, match="unknown config 'tiny'"):
        data.load_source("induction/tiny", "train", data_dir)
