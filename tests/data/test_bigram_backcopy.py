"""`bigram_backcopy` (Guo et al. 2024): BOS first, the token after a trigger copies the one
before it, every other token follows the transition matrix (empirical bigram frequencies
against P), the triggers are the most probable tokens, and the builder is deterministic."""

import re

import numpy as np
import pytest

from jaxinterp.data.bigram_backcopy import (
    BOS,
    BigramBackcopy,
    BigramBackcopyConfig,
    is_trigger,
    sample,
)
from jaxinterp.data.synthetic import chunk_rngs


def _config(**kw):
    return BigramBackcopyConfig(name="t", **{"vocab_size": 12, "n_triggers": 2, "seq_len": 40,
                                             **kw})


def test_sequences_follow_the_bigram_backcopy_rule():
    cfg = _config()
    tokens = sample(cfg, np.random.default_rng(0), 3000)
    assert tokens.shape == (3000, 40) and tokens.dtype == np.int32
    assert (tokens[:, 0] == BOS).all() and (tokens[:, 1:] != BOS).all()
    trig = is_trigger(tokens, cfg.triggers)
    assert not trig[:, 1].any()  # the first token is drawn without the triggers
    # After a trigger at j, position j + 1 copies position j - 1.
    b, j = np.nonzero(trig[:, 1:-1])
    j = j + 1
    np.testing.assert_array_equal(tokens[b, j + 1], tokens[b, j - 1])
    assert 0.05 < trig[:, 1:].mean() < 0.5
    # Elsewhere, the bigram frequencies match P (3000 x 38 transitions).
    cur, nxt = tokens[:, 1:-1][~trig[:, 1:-1]], tokens[:, 2:][~trig[:, 1:-1]]
    counts = np.zeros((12, 12))
    np.add.at(counts, (cur, nxt), 1)
    freq = counts / counts.sum(1, keepdims=True).clip(1)
    rows = counts.sum(1) > 2000
    assert rows.sum() >= 8
    np.testing.assert_allclose(freq[rows], cfg.transitions[rows], atol=0.03)


def test_chain_triggers_and_marginal():
    cfg = _config()
    p = cfg.transitions
    assert (p[0] == 0).all() and (p[:, 0] == 0).all()
    np.testing.assert_allclose(p[1:].sum(1), 1.0)
    pi = cfg.marginal
    np.testing.assert_allclose(pi @ p, pi, atol=1e-12)  # stationary
    assert pi[BOS] == 0 and pi.sum() == pytest.approx(1.0)
    top = np.sort(np.argsort(-pi)[:2])
    np.testing.assert_array_equal(cfg.triggers, top)
    assert _config(seed=1).transitions[1, 1] != p[1, 1]


def test_builder_is_deterministic_and_matches_sample(tmp_path):
    builder = BigramBackcopy(data_dir=str(tmp_path), vocab_size=12, n_triggers=2, seq_len=9,
                             num_train=5, num_test=3)
    builder.download_and_prepare()
    test = builder.as_data_source("test")
    got = np.stack([test[i]["tokens"] for i in range(len(test))])
    (_, _, rng), = chunk_rngs(0, 1, 3)
    want = sample(builder.builder_config, rng, 3)

    def rows(x):  # TFDS stores the examples in its own (keyed, shuffled) order
        return sorted(map(tuple, x.tolist()))

    assert rows(got) == rows(want)


@pytest.mark.parametrize("overrides, message", [
    (dict(vocab_size=2), "vocab_size must be >= 3"),
    (dict(n_triggers=11), "n_triggers must be in [1, vocab_size - 2 = 10]"),
    (dict(seq_len=1), "seq_len must be >= 2"),
    (dict(alpha=0.0), "alpha must be > 0"),
])
def test_bad_config_is_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _config(**overrides).validate()
