"""The `key_value` builder: layout, queried values match their context pairs, masks, errors."""

import numpy as np
import pytest

from jaxinterp import data
from jaxinterp.data.key_value import BOS, QUERY

KW = dict(n_keys=12, n_values=10, n_pairs=5, n_queries=2, n_filler=3, n_filler_tokens=4,
          num_train=64, num_test=8, skip_prob=0.5)


def stacked(source):
    rows = [source[i] for i in range(len(source))]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    builder = data.KeyValue(data_dir=str(tmp_path_factory.mktemp("key_value")), **KW)
    builder.download_and_prepare()
    return builder


def test_queries_copy_their_context_values(prepared):
    cfg = prepared.builder_config
    assert cfg.seq_len == 2 * 5 + 3 + 2 + 2 * 2 == 19 and cfg.vocab_size == 2 + 4 + 12 + 10
    ex = stacked(prepared.as_data_source("train"))
    tokens, needle, answer = ex["tokens"], ex["needle"], ex["answer"]
    assert tokens.shape == (64, 19) and tokens.dtype == np.int32
    assert (tokens[:, 0] == BOS).all() and (tokens[:, -5] == QUERY).all()
    np.testing.assert_array_equal(np.flatnonzero(answer[0]), [15, 17])
    assert (answer == answer[0]).all() and (needle.sum(1) == 2).all()
    keys, values = set(cfg.key_tokens.tolist()), set(cfg.value_tokens.tolist())
    for t, nd in zip(tokens, needle, strict=True):
        ctx = t[1:-5]
        is_key = np.isin(ctx, list(keys))
        assert is_key.sum() == 5 and len(set(ctx[is_key])) == 5  # distinct keys
        assert np.isin(ctx[np.flatnonzero(is_key) + 1], list(values)).all()  # k then v
        pairs = {int(ctx[i]): int(ctx[i + 1]) for i in np.flatnonzero(is_key)}
        queried = t[-4::2]
        assert len(set(queried.tolist())) == 2
        for k, v in zip(queried, t[-3::2], strict=True):
            assert pairs[int(k)] == v
        # The needles are the queried values' context positions.
        want = {int(np.flatnonzero(t[:-5] == k)[0]) + 1 for k in queried}
        assert set(np.flatnonzero(nd).tolist()) == want


def test_skip_bigram_keys_follow_the_permutation(tmp_path):
    cfg_kw = {**KW, "n_filler": 0, "num_train": 200, "skip_prob": 1.0}
    b = data.KeyValue(data_dir=str(tmp_path), **cfg_kw)
    b.download_and_prepare()
    tokens = stacked(b.as_data_source("train"))["tokens"]
    cfg = b.builder_config
    k0 = cfg.key_tokens[0]
    ctx = tokens[:, 1:11:2] - k0  # the context's key indices (no filler: pairs back to back)
    hits = cfg.skip_permutation[ctx[:, :-1]] == ctx[:, 1:]
    assert hits.mean() > 0.5  # not 1: a wanted key already in the context is not moved
    b0 = data.KeyValue(data_dir=str(tmp_path), **{**cfg_kw, "skip_prob": 0.0})
    b0.download_and_prepare()
    t0 = stacked(b0.as_data_source("train"))["tokens"][:, 1:11:2] - k0
    assert (cfg.skip_permutation[t0[:, :-1]] == t0[:, 1:]).mean() < 0.2


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="n_pairs"):
        data.KeyValue(data_dir=str(tmp_path), n_keys=4, n_pairs=5)
    with pytest.raises(ValueError, match="n_queries"):
        data.KeyValue(data_dir=str(tmp_path), n_pairs=2, n_queries=3)
