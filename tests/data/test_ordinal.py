"""The `ordinal` builder: token layout, runs of successors after each SEP, masks, errors."""

import numpy as np
import pytest

from jaxinterp import data
from jaxinterp.data.ordinal import BOS, SEP

KW = dict(n_numbers=20, n_filler=8, seq_len=32, runs_per_seq=2, min_run=2, max_run=4,
          num_train=64, num_test=8)


def stacked(source):
    rows = [source[i] for i in range(len(source))]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    builder = data.Ordinal(data_dir=str(tmp_path_factory.mktemp("ordinal")), **KW)
    builder.download_and_prepare()
    return builder


def test_token_layout(prepared):
    cfg = prepared.builder_config
    fam = cfg.family_tokens
    assert list(fam) == ["numbers", "days", "months", "letters"]
    np.testing.assert_array_equal(fam["numbers"], np.arange(10, 30))  # 2 + 8 fillers first
    np.testing.assert_array_equal(fam["days"], np.arange(30, 37))
    np.testing.assert_array_equal(fam["letters"], np.arange(49, 75))
    assert cfg.vocab_size == 75


def test_every_sep_is_followed_by_the_successor(prepared):
    cfg = prepared.builder_config
    ex = stacked(prepared.as_data_source("train"))
    tokens, inc, family = ex["tokens"], ex["increment"], ex["family"]
    assert tokens.shape == (64, 32) and tokens.dtype == np.int32
    assert (tokens[:, 0] == BOS).all() and (tokens[:, 1:] != BOS).all()
    np.testing.assert_array_equal(inc, tokens == SEP)
    fams = list(cfg.family_tokens.values())
    n_runs = 0
    for b, q in zip(*np.nonzero(inc), strict=True):
        prev, nxt = tokens[b, q - 1], tokens[b, q + 1]
        f = fams[family[b, q]]
        (i,) = np.nonzero(f == prev)[0]
        assert nxt == f[i + 1]  # the successor, in the same family
        n_runs += q < 2 or tokens[b, q - 2] != SEP  # a run's first SEP
    assert n_runs == 64 * 2  # every run has at least one SEP
    assert (family[~inc] == -1).all()
    # Run lengths: 1 to 3 SEPs per run; all families occur.
    assert set(family[inc].tolist()) == {0, 1, 2, 3}
    fillers = tokens[(tokens >= 2) & (tokens < 10)]
    assert len(fillers) >= 64 * (32 - 1 - 2 * 7)


def test_splits_differ_and_config_errors(prepared, tmp_path):
    train = stacked(prepared.as_data_source("train"))["tokens"]
    test = stacked(prepared.as_data_source("test"))["tokens"]
    assert not any((t == train).all(1).any() for t in test)
    with pytest.raises(ValueError, match="max_run"):
        data.Ordinal(data_dir=str(tmp_path), max_run=8)  # days have 7 elements
    with pytest.raises(ValueError, match="families"):
        data.Ordinal(data_dir=str(tmp_path), families=("numbers", "weeks"))
    with pytest.raises(ValueError, match="seq_len"):
        data.Ordinal(data_dir=str(tmp_path), seq_len=8)
    one = data.Ordinal(data_dir=str(tmp_path), families=("days",), n_filler=4)
    np.testing.assert_array_equal(one.builder_config.family_tokens["days"], np.arange(6, 13))
