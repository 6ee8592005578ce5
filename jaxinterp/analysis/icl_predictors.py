"""Closed-form in-context regression predictors (NumPy, float64): the references a trained
model's predictions are compared with.

Shapes: `xs [batch, n, d]`, `ys [batch, n]`. The `*_query` functions use points `0..n-2` as
context and predict the last; the `*_prefix` functions predict every `y_k` from the points
before it (`k = 0` has no context: the prior mean 0).

  gd_query            x_q^T G (1/m) X^T y: one step of gradient descent from w = 0 on the
                      context loss (1/2m)|Xw - y|^2 with step size 1 (G = I) or
                      preconditioner G (Mahankali et al. 2023).
  optimal_preconditioner  argmin_G E (x_q^T G h - y_q)^2 for x ~ N(0, cov), w ~ N(0, I),
                      noiseless: ((1 + 1/m) cov + tr(cov)/m I)^{-1} (their Theorem for
                      non-isotropic inputs; for cov = I a scalar m / (m + d + 1)).
  fit_scale, r2       least-squares scale of a reference onto predictions, and R^2.
  ridge_prefix        posterior mean under w ~ N(0, I), noise variance s2: Bayes-optimal for
                      the Gaussian task prior (Raventós et al. 2023).
  dmmse_prefix        posterior mean when w is uniform over a finite `pool` [M, d]: Bayes-optimal
                      for the pretraining distribution with M tasks (discrete MMSE).
"""

from __future__ import annotations

import numpy as np


def gd_query(xs: np.ndarray, ys: np.ndarray, precond: np.ndarray | None = None) -> np.ndarray:
    """One-step GD predictions for the last point, [batch] (step size 1; scale it after)."""
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    ctx_x, ctx_y, xq = xs[:, :-1], ys[:, :-1], xs[:, -1]
    h = np.einsum("bid,bi->bd", ctx_x, ctx_y) / ctx_x.shape[1]  # contract context points
    if precond is not None:
        h = np.einsum("de,be->bd", np.asarray(precond, np.float64), h)
    return np.einsum("bd,bd->b", xq, h)


def optimal_preconditioner(cov: np.ndarray, m: int) -> np.ndarray:
    """[d, d] best one-step preconditioner for `m` context points with x ~ N(0, cov)."""
    cov = np.asarray(cov, np.float64)
    return np.linalg.inv((1 + 1 / m) * cov + np.trace(cov) / m * np.eye(len(cov)))


def fit_scale(pred: np.ndarray, ref: np.ndarray) -> float:
    """The c minimising |pred - c * ref|^2 (closed form <pred, ref> / <ref, ref>)."""
    pred, ref = np.ravel(pred).astype(np.float64), np.ravel(ref).astype(np.float64)
    return float(pred @ ref / (ref @ ref))


def r2(pred: np.ndarray, ref: np.ndarray) -> float:
    """Coefficient of determination of `ref` as a predictor of `pred`."""
    pred, ref = np.ravel(pred).astype(np.float64), np.ravel(ref).astype(np.float64)
    return float(1 - np.sum((pred - ref) ** 2) / np.sum((pred - pred.mean()) ** 2))


def ridge_prefix(xs: np.ndarray, ys: np.ndarray, noise_var: float) -> np.ndarray:
    """[batch, n]: E[y_k | x_<=k, y_<k] with w ~ N(0, I_d), y = w.x + N(0, noise_var)."""
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    b, n, d = xs.shape
    out = np.zeros((b, n))
    for k in range(1, n):
        x, y = xs[:, :k], ys[:, :k]
        a = np.einsum("bki,bkj->bij", x, x) + noise_var * np.eye(d)
        w = np.linalg.solve(a, np.einsum("bki,bk->bi", x, y)[..., None])[..., 0]
        out[:, k] = np.einsum("bd,bd->b", xs[:, k], w)
    return out


def dmmse_prefix(xs: np.ndarray, ys: np.ndarray, pool: np.ndarray,
                 noise_var: float) -> np.ndarray:
    """[batch, n]: E[y_k | x_<=k, y_<k] with w uniform over `pool` [M, d]."""
    if noise_var <= 0:
        raise ValueError(f"dmmse_prefix: noise_var must be > 0, got {noise_var}")
    xs, ys, pool = (np.asarray(a, np.float64) for a in (xs, ys, pool))
    fits = np.einsum("bnd,md->bnm", xs, pool)  # every pool task's prediction at every point
    sq = np.cumsum((fits - ys[..., None]) ** 2, axis=1)  # [b, n, M] loss over points <= k
    sq = np.concatenate([np.zeros_like(sq[:, :1]), sq[:, :-1]], axis=1)  # points < k
    logp = -sq / (2 * noise_var)
    p = np.exp(logp - logp.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bnm,bnm->bn", p, fits)
