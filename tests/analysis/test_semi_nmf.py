"""Semi-NMF (`jaxinterp.analysis.semi_nmf`) against a NumPy float64 implementation of the same
updates, its monotone objective, and recovery of planted factors."""

import math

import jax
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from jaxinterp.analysis import semi_nmf


def numpy_semi_nmf(x, g, num_iters, keep=None, reg=1e-6, eps=1e-12):
    """Ding, Li & Jordan's updates in float64, written out independently (module docstring)."""
    x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
    d, k = x.shape[0], g.shape[1]
    pos, neg = (lambda m: np.maximum(m, 0)), (lambda m: np.maximum(-m, 0))
    objective = []
    for _ in range(num_iters):
        f = x @ g @ np.linalg.inv(g.T @ g + reg * np.eye(k))
        if keep is not None:
            n = max(1, math.ceil(keep * d))
            thresh = -np.sort(-np.abs(f), axis=0)[n - 1]
            f = f * (np.abs(f) >= thresh)
        norm = np.linalg.norm(g, axis=0)
        g, f = g / norm, f * norm
        p, q = x.T @ f, f.T @ f
        g = g * np.sqrt((pos(p) + g @ neg(q)) / (neg(p) + g @ pos(q) + eps))
        objective.append(((x - f @ g.T) ** 2).sum())
    return f, g, np.array(objective)


def _data(seed, d=12, n=40):
    return np.random.default_rng(seed).normal(size=(d, n)).astype(np.float32)


@pytest.mark.parametrize("keep", [None, 0.25])
def test_matches_numpy_float64(keep):
    x, key = _data(0), jax.random.key(3)
    fit = semi_nmf.semi_nmf(x, 4, key, num_iters=15, keep=keep)
    g0 = semi_nmf.init_g(x, 4, key)
    f, g, obj = numpy_semi_nmf(x, g0, 15, keep=keep)
    np.testing.assert_allclose(fit.objective, obj, rtol=1e-4)
    np.testing.assert_allclose(fit.G, g, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(fit.F, f, rtol=1e-3, atol=1e-4)
    assert np.all(np.asarray(fit.G) >= 0)
    if keep is not None:  # 3 of 12 entries per feature survive the winner-take-all mask
        assert np.all((np.asarray(fit.F) != 0).sum(0) == 3)


@pytest.mark.parametrize("init", ["random", "kmeans"])
def test_objective_non_increasing_and_deterministic(init):
    x = _data(1, d=10, n=60)
    fit = semi_nmf.semi_nmf(x, 5, jax.random.key(0), num_iters=80, init=init)
    obj = np.asarray(fit.objective, np.float64)
    assert np.all(np.diff(obj) <= 1e-4 * obj[:-1]), np.diff(obj).max()
    assert obj[-1] < 0.9 * obj[0]
    again = semi_nmf.semi_nmf(x, 5, jax.random.key(0), num_iters=80, init=init)
    np.testing.assert_array_equal(fit.G, again.G)
    # never better than the unconstrained rank-5 optimum (Eckart-Young)
    s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    assert obj[-1] >= (s[5:] ** 2).sum() * (1 - 1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_planted_factors(seed):
    """X = F0 G0^T, G0 >= 0 sparse, F0's features disjoint groups of 6 of 24 neurons (the
    paper's picture). Plain semi-NMF is unique only up to G0 -> G0 M, F0 -> F0 M^-T for any
    invertible M >= 0 (a nonnegative mixing keeps G >= 0 and the fit exact), so recovery needs
    the winner-take-all sparsity of F (`keep` = the groups' 6 / 24)."""
    rng = np.random.default_rng(seed)
    d, n, k = 24, 300, 4
    f0 = rng.normal(size=(d, k)) * (rng.permutation(d)[:, None] // 6 == np.arange(k))
    g0 = rng.exponential(size=(n, k)) * (rng.random((n, k)) < 0.3)  # sparse, >= 0
    x = (f0 @ g0.T).astype(np.float32)
    fit = semi_nmf.semi_nmf(x, k, jax.random.key(seed), num_iters=200, init="kmeans",
                            keep=6 / d)
    assert fit.objective[-1] < 1e-6 * (x ** 2).sum()
    g = np.asarray(fit.G, np.float64)
    cos = (g / np.linalg.norm(g, axis=0)).T @ (g0 / np.linalg.norm(g0, axis=0))  # [k, k]
    rows, cols = linear_sum_assignment(-cos)  # the permutation
    assert cos[rows, cols].min() > 0.999, cos
    f, fp = np.asarray(fit.F, np.float64)[:, rows], f0[:, cols]
    fcos = np.sum(f * fp, 0) / np.linalg.norm(f, axis=0) / np.linalg.norm(fp, axis=0)
    assert fcos.min() > 0.999, fcos  # same sign: the scale is positive
    np.testing.assert_array_equal(f != 0, fp != 0)  # the neuron groups exactly


def test_coefficients_refit_g_for_fixed_features():
    rng = np.random.default_rng(2)
    f0 = rng.normal(size=(15, 3)).astype(np.float32)
    g0 = rng.exponential(size=(50, 3)).astype(np.float32)
    g = semi_nmf.coefficients(f0 @ g0.T, f0, num_iters=300)
    np.testing.assert_allclose(g, g0, rtol=2e-2, atol=2e-2)


def test_bad_arguments():
    x = _data(0)
    with pytest.raises(ValueError, match=r"keep=1\.5"):
        semi_nmf.semi_nmf(x, 3, jax.random.key(0), keep=1.5)
    with pytest.raises(ValueError, match="k=0"):
        semi_nmf.semi_nmf(x, 0, jax.random.key(0))
    with pytest.raises(ValueError, match="init='svd'"):
        semi_nmf.semi_nmf(x, 3, jax.random.key(0), init="svd")
    with pytest.raises(ValueError, match=r"\[d, n\]"):
        semi_nmf.semi_nmf(x[0], 3, jax.random.key(0))
