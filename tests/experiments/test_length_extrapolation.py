"""Length extrapolation at tiny settings, seeds 0, 1, 2 of each arm trained together (one
vmapped call per arm): the copy streams, then softmax against LSSAR trained at 16 tokens and
evaluated at 16 and 256.

Measured (seeds 0 / 1 / 2): PLACEHOLDER.
"""

import json
import os

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from configs import length_extrapolation
from experiments.length_extrapolation import copy_streams, run_experiment

SEEDS = (0, 1, 2)
TINY = {
    "num_train_steps": 400, "batch_size": 16,
    "data.length": 16, "data.seg_min": 3, "data.seg_max": 6, "data.vocab": 256,
    "eval_multiples": (1, 16), "eval_examples": 16, "eval_chunk": 16,
    "model.d_model": 32, "model.n_heads": 2, "model.d_vocab": 256,
    "reweight_lssa_at_eval": False,
}


def tiny_config():
    config = length_extrapolation.get_config()
    config.update_from_flattened_dict(TINY)
    config.arms = ConfigDict({k: dict(config.arms[k]) for k in ("softmax", "lssar")})
    config.seeds = SEEDS
    return config


def test_copy_streams_repeat_one_segment_of_distinct_tokens():
    tokens, mask = copy_streams(jax.random.key(0), 64, 40, 4, 9, 64)
    tokens, mask = np.asarray(tokens), np.asarray(mask)
    assert tokens.shape == (64, 41) and mask.shape == (64, 40)
    assert (tokens[:, 0] == 0).all() and (tokens[:, 1:] > 0).all()
    for t, m in zip(tokens, mask, strict=True):
        stream = t[1:]
        values, counts = np.unique(stream, return_counts=True)
        n = int((counts == 2).sum())  # the segment's tokens occur twice, every other once
        assert 4 <= n <= 9 and set(counts) <= {1, 2} and m.sum() == n - 1
        twice = np.isin(stream, values[counts == 2])
        first, second = np.flatnonzero(twice)[:n], np.flatnonzero(twice)[n:]
        assert (np.diff(first) == 1).all() and (np.diff(second) == 1).all()
        np.testing.assert_array_equal(stream[first], stream[second])
        np.testing.assert_array_equal(np.flatnonzero(m), second[1:])  # predictable targets
    with pytest.raises(ValueError, match="vocab=32 too small"):
        copy_streams(jax.random.key(0), 2, 40, 4, 9, 32)


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("length_extrapolation"))
    out = run_experiment(tiny_config(), workdir)
    for name in ("loss_vs_length.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == out
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_direction(summary, seed):
    i = SEEDS.index(seed)
    soft, lssar = summary["arms"]["softmax"], summary["arms"]["lssar"]
    raise AssertionError((soft["loss_per_seed"][i], lssar["loss_per_seed"][i]))
