"""Weights-based transcoder connections against float64 NumPy: the connection matrix against a
loop over feature pairs; attributions with the LayerNorm scale are exactly each source's share
of a later feature's pre-activation with sigma frozen (an independent LayerNorm); agreement's
rank correlation and top-k overlap against hand-computed values; errors."""

import numpy as np
import pytest

from jaxinterp.circuits import weights as W

N_SRC, D, N_DST, T = 12, 8, 5, 7
EPS = 1e-5


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(N_SRC, D)), rng.normal(size=(D, N_DST)),
            1.0 + 0.5 * rng.normal(size=D), rng.normal(size=D))


def test_connections_match_a_loop_over_feature_pairs():
    w_dec, w_enc, ln_w, _ = _arrays()
    want = np.zeros((N_SRC, N_DST))
    for i in range(N_SRC):
        for j in range(N_DST):
            col = ln_w * w_enc[:, j]
            want[i, j] = sum(w_dec[i, d] * (col[d] - col.mean()) for d in range(D))
    np.testing.assert_allclose(W.connections(w_dec, w_enc, ln_w), want, rtol=1e-5, atol=1e-5)
    plain = w_dec @ w_enc  # no norm weight, no centring (RMSNorm-free residual read)
    np.testing.assert_allclose(W.connections(w_dec, w_enc, center=False), plain, rtol=1e-5,
                               atol=1e-5)


def test_attributions_with_the_scale_are_the_direct_path_share_of_the_preactivation():
    w_dec, w_enc, ln_w, ln_b = _arrays(1)
    rng = np.random.default_rng(2)
    acts = np.maximum(rng.normal(size=(T, N_SRC)), 0)  # earlier features' activations
    rest = rng.normal(size=(T, D)) * 3                  # everything else in the stream
    x = acts @ w_dec + rest

    def sigma(v):
        return np.sqrt(v.var(-1, keepdims=True) + EPS)

    def ln_frozen(v, s):  # LayerNorm with the scale s [T, 1] given
        return (v - v.mean(-1, keepdims=True)) / s * ln_w + ln_b

    s = sigma(x)
    pre = ln_frozen(x, s) @ w_enc                       # [T, N_DST], the real pre-activations
    other = ln_frozen(rest, s) @ w_enc                  # the rest's share (with b), sigma frozen
    c = np.asarray(W.connections(w_dec, w_enc, ln_w))
    got = np.asarray(W.attributions(acts, c, scale=1 / s[:, 0]))  # [T, N_SRC, N_DST]
    np.testing.assert_allclose(got.sum(1) + other, pre, rtol=1e-4, atol=1e-4)
    for j in range(N_DST):  # one target's column, without the scale: a_i C[i, j]
        np.testing.assert_allclose(W.attributions(acts, c[:, j]), acts * c[:, j], rtol=1e-5,
                                   atol=1e-6)


def test_agreement_and_top_sources():
    inv = np.array([5.0, -4.0, 3.0, 0.5, 0.1, -0.2])
    np.testing.assert_array_equal(W.top_sources(inv, 3), [0, 1, 2])
    dep = np.array([0.1, -9.0, 2.0, 7.0, 0.0, 0.3])   # top-3 by |.|: 1, 3, 2
    got = W.agreement(inv, dep, k=3)
    assert got["top_k_overlap"] == pytest.approx(2 / 3)
    rank = lambda v: np.argsort(np.argsort(v)).astype(float)  # no ties here
    want = np.corrcoef(rank(inv), rank(dep))[0, 1]
    assert got["spearman"] == pytest.approx(want)
    assert got["pearson"] == pytest.approx(np.corrcoef(inv, dep)[0, 1])
    masked = W.agreement(inv, dep, k=2, mask=np.array([1, 1, 1, 0, 0, 1], bool))
    assert masked["n_sources"] == 4
    assert masked["spearman"] == pytest.approx(
        np.corrcoef(rank(inv[[0, 1, 2, 5]]), rank(dep[[0, 1, 2, 5]]))[0, 1])
    assert W.agreement(inv, 3 * inv, k=3)["spearman"] == pytest.approx(1.0)


def test_errors():
    w_dec, w_enc, ln_w, _ = _arrays()
    with pytest.raises(ValueError, match="norm weight has shape"):
        W.connections(w_dec, w_enc, ln_w[:3])
    with pytest.raises(ValueError, match=r"W_dec \(12, 3\) must be"):
        W.connections(w_dec[:, :3], w_enc)
    with pytest.raises(ValueError, match="need a connection"):
        W.attributions(np.ones((T, 3)), np.ones(N_SRC))
    with pytest.raises(ValueError, match="scale has shape"):
        W.attributions(np.ones((T, N_SRC)), np.ones(N_SRC), scale=np.ones(T + 1))
    with pytest.raises(ValueError, match=r"k=0 must be in \[1, 6\]"):
        W.top_sources(np.ones(6), 0)
