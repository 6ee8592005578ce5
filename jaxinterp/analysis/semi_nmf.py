"""Semi-nonnegative matrix factorisation (semi-NMF) of activations: `X ~= F G^T`, `G >= 0`.

Ding, Li & Jordan 2010 ("Convex and Semi-Nonnegative Matrix Factorizations", TPAMI 32(1)),
used by Shafran, Geiger & Geva 2025 ("Decomposing MLP Activations into Interpretable Features
via Semi-Nonnegative Matrix Factorization") on MLP hidden activations: `X = A [d_mlp, n]` holds
a layer's `hook_post` over n tokens; each column of `F [d_mlp, k]` (unconstrained: their `Z`) is
a feature, a linear combination of neurons (its residual-stream write is `W_out^T F[:, i]`);
`G [n, k] >= 0` (their `Y^T`) says how strongly each token expresses each feature.

Shapes: `x [d, n]` (features of the data as rows, tokens as columns, as in both papers: pass
`acts.T` for activations `acts [n, d]`), `F [d, k]`, `G [n, k]`. Objective
`J = ||X - F G^T||_F^2`. One iteration (Ding et al. Sec. 3; the order of the authors' code,
`factorization/seminmf.py`):

    F <- X G (G^T G + reg I)^-1                          (least squares given G)
    F <- F * mask,  mask[:, i] = top ceil(keep * d) of |F[:, i]|     (only with `keep`: the
                                                         authors' hard winner-take-all sparsity)
    G <- G / ||G[:, i]||,  F[:, i] <- F[:, i] ||G[:, i]||   (the authors' rescaling; F G^T and
                                                         the updates are unchanged by it)
    G <- G * sqrt( ((X^T F)^+ + G (F^T F)^-) / ((X^T F)^- + G (F^T F)^+ + eps) )

with `M^+ = (|M| + M) / 2`, `M^- = (|M| - M) / 2`. Without `keep`, J is non-increasing (Ding
et al. Theorems 1-2: the F step is the exact minimiser given G, the G step an auxiliary-function
descent step). The winner-take-all mask breaks that guarantee (the authors keep the best
iterate; `SemiNMF.objective` records J after every iteration). Initialisation (from a key):
"random" draws `G ~ U(0, 1)` (the authors' default; F is solved from G in the first step),
"kmeans" runs `kmeans_iters` Lloyd iterations on the columns of X (seeded by k-means++) and
sets `G = onehot(cluster) + 0.2` (Ding et al.'s recommendation).

    from jaxinterp.analysis import semi_nmf
    fit = semi_nmf.semi_nmf(acts.T, k=64, key=jax.random.key(0), num_iters=300, keep=0.1)
    fit.F          # [d_mlp, 64] features in neuron space;  fit.G: [n, 64] >= 0 coefficients
    semi_nmf.coefficients(new_acts.T, fit.F)   # G [n', 64] of other tokens, F fixed
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import struct

INITS = ("random", "kmeans")


@struct.dataclass
class SemiNMF:
    """F [d, k] (unconstrained features), G [n, k] (>= 0 coefficients), objective
    [num_iters] (`||X - F G^T||_F^2` after each iteration)."""

    F: jax.Array
    G: jax.Array
    objective: jax.Array


def _pos(m: jax.Array) -> jax.Array:
    return (jnp.abs(m) + m) * 0.5


def _neg(m: jax.Array) -> jax.Array:
    return (jnp.abs(m) - m) * 0.5


def _g_step(x: jax.Array, f: jax.Array, g: jax.Array, eps: float) -> jax.Array:
    """Ding et al.'s multiplicative update of G [n, k] given F [d, k], x [d, n]."""
    p = jnp.einsum("dn,dk->nk", x, f)  # X^T F, contract d
    q = jnp.einsum("dk,dj->kj", f, f)  # F^T F
    numer = _pos(p) + g @ _neg(q)
    denom = _neg(p) + g @ _pos(q) + eps
    return g * jnp.sqrt(numer / denom)


def _winner_take_all(f: jax.Array, n_keep: int) -> jax.Array:
    """Keeps the `n_keep` largest |entries| of each column of f [d, k] (ties at the
    threshold are kept, as in the authors' code), zeroes the rest."""
    thresh = jax.lax.top_k(jnp.abs(f).T, n_keep)[0][:, -1]  # [k]
    return f * (jnp.abs(f) >= thresh[None, :])


def _kmeans_init(x: jax.Array, k: int, key: jax.Array, iters: int) -> jax.Array:
    """G [n, k] = onehot(Lloyd k-means labels of the columns of x) + 0.2, the centres seeded by
    k-means++ (activations repeat exactly, e.g. every prompt's BOS token: uniformly drawn
    centres would coincide, leave clusters empty and G^T G singular)."""
    pts = x.T  # [n, d]
    sq = jnp.sum(pts ** 2, 1)

    def dist2(c):  # [n, k]: squared distances to the centres c [k, d]
        return jnp.maximum(sq[:, None] - 2 * pts @ c.T + jnp.sum(c ** 2, 1)[None], 0.0)

    keys = jax.random.split(key, k)
    first = pts[jax.random.randint(keys[0], (), 0, pts.shape[0])]

    def seed(i, state):  # k-means++: the next centre drawn with probability ~ D(x)^2
        centres, nearest = state
        j = jax.random.categorical(keys[i], jnp.log(nearest + 1e-30))
        centres = centres.at[i].set(pts[j])
        return centres, jnp.minimum(nearest, jnp.sum((pts - pts[j]) ** 2, 1))

    centres = jnp.zeros((k, pts.shape[1]), pts.dtype).at[0].set(first)
    centres, _ = jax.lax.fori_loop(1, k, seed, (centres, jnp.sum((pts - first) ** 2, 1)))

    def step(c, _):
        onehot = jax.nn.one_hot(jnp.argmin(dist2(c), 1), k, dtype=pts.dtype)  # [n, k]
        count = onehot.sum(0)
        new = (onehot.T @ pts) / jnp.maximum(count, 1)[:, None]
        return jnp.where(count[:, None] > 0, new, c), None  # an empty cluster keeps its centre

    centres, _ = jax.lax.scan(step, centres, None, length=iters)
    return jax.nn.one_hot(jnp.argmin(dist2(centres), 1), k, dtype=pts.dtype) + 0.2


def init_g(x: jax.Array, k: int, key: jax.Array, init: str = "random",
           kmeans_iters: int = 20) -> jax.Array:
    """The initial G [n, k] > 0 of `semi_nmf` (see the module docstring)."""
    if init == "random":
        return jnp.maximum(jax.random.uniform(key, (x.shape[1], k), x.dtype), 1e-6)
    if init == "kmeans":
        return _kmeans_init(x, k, key, kmeans_iters)
    raise ValueError(f"init={init!r}: choose from {INITS}")


def _check(x: jax.Array, k: int, keep: float | None, num_iters: int) -> None:
    if x.ndim != 2:
        raise ValueError(f"semi_nmf: x must be [d, n] (pass acts.T for acts [n, d]), got "
                         f"shape {x.shape}")
    if not isinstance(k, int) or not 1 <= k <= x.shape[1]:
        raise ValueError(f"semi_nmf: k={k!r} must be an int in [1, n={x.shape[1]}]")
    if keep is not None and not 0 < keep <= 1:
        raise ValueError(f"semi_nmf: keep={keep!r} must be in (0, 1] (fraction of the d="
                         f"{x.shape[0]} entries kept per feature) or None (no sparsity)")
    if not isinstance(num_iters, int) or num_iters < 1:
        raise ValueError(f"semi_nmf: num_iters={num_iters!r} must be a positive int")


def semi_nmf(x: jax.Array, k: int, key: jax.Array, *, num_iters: int = 200,
             keep: float | None = None, init: Literal["random", "kmeans"] = "random",
             reg: float = 1e-6, eps: float = 1e-12, kmeans_iters: int = 20) -> SemiNMF:
    """Semi-NMF `x [d, n] ~= F [d, k] @ G[n, k]^T`, G >= 0, by `num_iters` iterations of the
    module docstring's updates (one jitted `lax.scan`).

    Args:
      x: the data, [d, n] (d features of each of n samples; for activations `acts [n, d]`,
        pass `acts.T`).
      k: number of factors.
      key: PRNG key of the initialisation (deterministic given the key).
      num_iters: iterations (fixed: no early stopping, so the call compiles once).
      keep: the fraction of each feature's d entries kept by the winner-take-all mask
        (Shafran et al.: 0.01 of GPT-2's 3072 neurons); None: plain Ding et al. semi-NMF.
      init: "random" or "kmeans" (module docstring).
      reg: ridge added to G^T G in the F step (invertibility).
      eps: added to the G step's denominator.
      kmeans_iters: Lloyd iterations of the "kmeans" initialisation.

    Returns:
      `SemiNMF(F, G, objective)`.
    """
    x = jnp.asarray(x, jnp.float32)
    _check(x, k, keep, num_iters)
    if init not in INITS:
        raise ValueError(f"semi_nmf: init={init!r}: choose from {INITS}")
    n_keep = None if keep is None else max(1, math.ceil(keep * x.shape[0]))
    return _fit(x, key, k=k, num_iters=num_iters, n_keep=n_keep, init=init, reg=reg, eps=eps,
                kmeans_iters=kmeans_iters)


@functools.partial(jax.jit, static_argnames=("k", "num_iters", "n_keep", "init",
                                             "kmeans_iters"))
def _fit(x, key, *, k, num_iters, n_keep, init, reg, eps, kmeans_iters):
    g0 = init_g(x, k, key, init, kmeans_iters)
    eye = jnp.eye(k, dtype=x.dtype)

    def step(carry, _):
        _, g = carry
        f = jnp.linalg.solve(g.T @ g + reg * eye, (x @ g).T).T  # X G (G^T G + reg I)^-1
        if n_keep is not None:
            f = _winner_take_all(f, n_keep)
        norm = jnp.maximum(jnp.linalg.norm(g, axis=0), 1e-8)  # [k]
        g, f = g / norm, f * norm
        g = _g_step(x, f, g, eps)
        return (f, g), jnp.sum((x - f @ g.T) ** 2)

    f0 = jnp.zeros((x.shape[0], k), x.dtype)
    (f, g), objective = jax.lax.scan(step, (f0, g0), None, length=num_iters)
    return SemiNMF(F=f, G=g, objective=objective)


@functools.partial(jax.jit, static_argnames=("num_iters",))
def coefficients(x: jax.Array, f: jax.Array, num_iters: int = 200, eps: float = 1e-12,
                 g0: jax.Array | None = None) -> jax.Array:
    """G [n, k] >= 0 of new data x [d, n] for fixed features f [d, k]: `num_iters` of the G
    step alone (a nonnegative least-squares fit of `x ~= f G^T`, non-increasing in J), from
    `g0` (default all ones)."""
    x = jnp.asarray(x, jnp.float32)
    g = jnp.ones((x.shape[1], f.shape[1]), x.dtype) if g0 is None else g0
    return jax.lax.fori_loop(0, num_iters, lambda _, g: _g_step(x, f, g, eps), g)
