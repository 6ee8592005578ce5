"""Probes: logistic accuracy against scikit-learn, planted linear direction, streamed = in-memory,
activations streamed from a model, errors."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

import jaxinterp as ji
from jaxinterp.analysis import probes
from tests.helpers.tiny_models import assert_close, tiny

RNG = np.random.default_rng(0)
N, D, K = 600, 16, 3
CENTRES = RNG.normal(size=(K, D))
Y = RNG.integers(0, K, N)
X = CENTRES[Y] * 0.6 + RNG.normal(size=(N, D))  # overlapping classes: accuracy well below 1


def test_logistic_probe_matches_sklearn():
    fit = probes.fit_logistic_probe(X, Y, l2=1.0 / 480)  # sklearn C=1 on 480 train examples
    tr, te = probes.train_test_split(N, 0.2, seed=0)
    assert (fit.n_train, fit.n_test) == (480, 120)
    sk = LogisticRegression(C=1.0, max_iter=5000).fit(X[tr], Y[tr])
    assert 0.6 < fit.test_score < 0.99
    assert abs(fit.test_score - sk.score(X[te], Y[te])) <= 0.01
    assert abs(fit.train_score - sk.score(X[tr], Y[tr])) <= 0.01
    np.testing.assert_allclose(np.asarray(fit.probe.weight).T, sk.coef_, atol=0.02)


def test_streamed_logistic_probe_is_close_to_sklearn():
    batches = [(X[i:i + 50], Y[i:i + 50]) for i in range(0, N, 50)]
    fit = probes.fit_logistic_probe_stream(batches, n_classes=K, l2=1.0 / 480, epochs=20,
                                           learning_rate=0.05)
    assert fit.n_train + fit.n_test == N and 60 < fit.n_test < 180
    sk_all = LogisticRegression(C=1.0, max_iter=5000).fit(X, Y).score(X, Y)
    assert abs(fit.train_score - sk_all) < 0.05


def test_linear_probe_recovers_planted_direction():
    w = RNG.normal(size=D)
    y = X @ w + 0.5 + 0.01 * RNG.normal(size=N)
    fit = probes.fit_linear_probe(X, y)
    np.testing.assert_allclose(fit.probe.weight, w, atol=0.005)
    np.testing.assert_allclose(fit.probe.bias, 0.5, atol=0.005)
    assert fit.test_score > 0.999
    # noise only: held-out R^2 near 0 or below
    assert probes.fit_linear_probe(X, RNG.normal(size=N)).test_score < 0.05


def test_ridge_matches_sklearn_and_stream_matches_in_memory():
    w = RNG.normal(size=(D, 2))
    y = X @ w + RNG.normal(size=(N, 2))
    fit = probes.fit_linear_probe(X, y, l2=30.0)
    tr, te = probes.train_test_split(N, 0.2, seed=0)
    sk = Ridge(alpha=30.0).fit(X[tr], y[tr])
    np.testing.assert_allclose(np.asarray(fit.probe.weight).T, sk.coef_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fit.test_score, sk.score(X[te], y[te]), rtol=1e-5)
    # streamed: one pass of sufficient statistics == solving on the same split in memory
    streamed = probes.fit_linear_probe_stream(
        [(X[i:i + 64], y[i:i + 64]) for i in range(0, N, 64)], l2=30.0, seed=3)
    rng = np.random.default_rng(3)  # the stream's split: the same draws, batch by batch
    held = np.concatenate([rng.random(len(X[i:i + 64])) < 0.2 for i in range(0, N, 64)])
    sk = Ridge(alpha=30.0).fit(X[~held], y[~held])
    np.testing.assert_allclose(np.asarray(streamed.probe.weight).T, sk.coef_, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(streamed.test_score, sk.score(X[held], y[held]), rtol=1e-5)


def test_site_batches_streams_model_activations():
    model, variables, tokens = tiny()
    labels = np.asarray(tokens) % 2
    out = list(probes.site_batches(model, variables, [(tokens, labels)],
                                   "blocks.1.hook_resid_post"))
    acts = ji.run(model, variables, tokens, capture=["blocks.1.hook_resid_post"])[1][
        "blocks.1.hook_resid_post"]
    assert_close(out[0][0], np.asarray(acts).reshape(-1, 32), rtol=1e-5)  # jit vs eager
    np.testing.assert_array_equal(out[0][1], labels.reshape(-1))
    last = next(probes.site_batches(model, variables, [(tokens, labels[:, 0])],
                                    "blocks.1.hook_resid_post", pos=-1))
    assert_close(last[0], np.asarray(acts)[:, -1], rtol=1e-5)
    with pytest.raises(ValueError, match="labels have shape"):
        next(probes.site_batches(model, variables, [(tokens, labels[:2])],
                                 "blocks.1.hook_resid_post"))
    with pytest.raises(ValueError, match="matches no site"):
        next(probes.site_batches(model, variables, [(tokens, labels)], "blocks.7.hook_x"))


def test_errors():
    with pytest.raises(ValueError, match="labels have length 599 but there are 600"):
        probes.fit_logistic_probe(X, Y[:-1])
    with pytest.raises(ValueError, match="labels have length 10"):
        probes.fit_linear_probe(X, Y[:10].astype(float))
    with pytest.raises(ValueError, match="must be \\[n\\] integers"):
        probes.fit_logistic_probe(X, Y.astype(float))
    with pytest.raises(ValueError, match="n_classes=2"):
        probes.fit_logistic_probe(X, Y, n_classes=2)
    with pytest.raises(ValueError, match="test_fraction"):
        probes.fit_linear_probe(X, Y.astype(float), test_fraction=1.0)
    with pytest.raises(ValueError, match=r"activations must be \[n, d\]"):
        probes.fit_linear_probe(X[:, 0], Y.astype(float))
    with pytest.raises(ValueError, match="one-shot iterator"):
        probes.fit_logistic_probe_stream(iter([(X, Y)]), n_classes=K)
    with pytest.raises(ValueError, match="batch 1: label 3 >= n_classes=3"):
        probes.fit_logistic_probe_stream([(X, Y), (X[:2], np.array([0, 3]))], n_classes=K)
    with pytest.raises(ValueError, match="no batches"):
        probes.fit_linear_probe_stream([])
