"""The closed-form in-context regression predictors against direct computations."""

import numpy as np

from jaxinterp.analysis import icl_predictors as ref


def _tasks(rng, b, n, d, noise=0.0, cov=None):
    w = rng.standard_normal((b, d))
    xs = rng.standard_normal((b, n, d))
    if cov is not None:
        xs = xs @ np.linalg.cholesky(cov).T
    return xs, np.einsum("bnd,bd->bn", xs, w) + noise * rng.standard_normal((b, n)), w


def test_gd_query_is_one_gradient_step_from_zero():
    rng = np.random.default_rng(0)
    xs, ys, _ = _tasks(rng, 5, 7, 3)
    g = np.array([-np.mean((0 - ys[i, :-1])[:, None] * xs[i, :-1], 0) for i in range(5)])
    np.testing.assert_allclose(ref.gd_query(xs, ys), np.einsum("bd,bd->b", g, xs[:, -1]))
    p = np.diag([1.0, 2.0, 3.0])
    np.testing.assert_allclose(ref.gd_query(xs, ys, p), np.einsum("bd,bd->b", g @ p, xs[:, -1]))


def test_optimal_preconditioner_is_the_least_squares_fit():
    # Isotropic: the scalar m / (m + d + 1); anisotropic: the best linear map G fitted on
    # Monte-Carlo samples of (h x_q^T, y_q) is close to the closed form.
    np.testing.assert_allclose(ref.optimal_preconditioner(np.eye(3), 10), 10 / 14 * np.eye(3))
    rng = np.random.default_rng(1)
    cov, m = np.diag([0.5, 2.0]), 4
    xs, ys, _ = _tasks(rng, 200_000, m + 1, 2, cov=cov)
    h = np.einsum("bid,bi->bd", xs[:, :-1], ys[:, :-1]) / m
    feats = np.einsum("bd,be->bde", h, xs[:, -1]).reshape(len(h), -1)  # y = sum G_de h_d x_e
    fit = np.linalg.lstsq(feats, ys[:, -1], rcond=None)[0].reshape(2, 2)
    np.testing.assert_allclose(fit, ref.optimal_preconditioner(cov, m), atol=0.03)


def test_fit_scale_and_r2():
    ref_pred = np.array([1.0, -2.0, 3.0])
    assert np.isclose(ref.fit_scale(2.5 * ref_pred, ref_pred), 2.5)
    assert np.isclose(ref.r2(ref_pred, ref_pred), 1.0)
    assert ref.r2(ref_pred, np.zeros(3)) < 0.5


def test_ridge_prefix_solves_the_regularised_least_squares():
    rng = np.random.default_rng(2)
    xs, ys, _ = _tasks(rng, 3, 6, 2, noise=0.3)
    out = ref.ridge_prefix(xs, ys, 0.25)
    assert np.all(out[:, 0] == 0)
    for b in range(3):
        for k in range(1, 6):
            x, y = xs[b, :k], ys[b, :k]
            w = np.linalg.solve(x.T @ x + 0.25 * np.eye(2), x.T @ y)
            np.testing.assert_allclose(out[b, k], xs[b, k] @ w)


def test_dmmse_prefix_picks_the_pool_task():
    rng = np.random.default_rng(3)
    pool = rng.standard_normal((5, 3))
    xs = rng.standard_normal((4, 8, 3))
    ys = np.einsum("bnd,d->bn", xs, pool[2])  # every sequence uses pool task 2
    out = ref.dmmse_prefix(xs, ys, pool, 0.01)
    np.testing.assert_allclose(out[:, 0], xs[:, 0] @ pool.mean(0))  # prior: the pool mean
    np.testing.assert_allclose(out[:, 4:], ys[:, 4:], atol=1e-6)  # identified after 3+ points
    one = ref.dmmse_prefix(xs, ys, pool[:1], 0.5)
    np.testing.assert_allclose(one, xs @ pool[0])
