"""Basis functions of KAN edges, and the B-spline grid maths (pure functions).

Every function maps x [..., d_in] to basis values [..., d_in, n_basis]; a KAN edge is a
linear combination of them, phi_ij(x) = sum_n c[i, j, n] B_n(x) (see `kan.KANLayer`).

  bspline    B-splines of order k on a per-input knot grid [d_in, G + 2k + 1] (G intervals
             extended by k knots on each side; n_basis = G + k), by the Cox-de Boor recursion
             (Liu et al. 2024, "KAN", arXiv:2404.19756; efficient-kan's layout).
  rbf        Gaussian radial basis functions exp(-((x - c_n) / h)^2) on centres c_n equally
             spaced over a range, h the spacing (FastKAN: Li 2024, arXiv:2405.06721).
  chebyshev  T_n(tanh x), n = 0..degree, by the recurrence T_{n+1} = 2 t T_n - T_{n-1}
             (ChebyKAN, SS et al. 2024, arXiv:2405.07200). The recurrence, unlike
             cos(n arccos t), has finite gradients where tanh saturates (t = +-1).
  fourier    cos(n x), sin(n x), n = 1..n_freq (FourierKAN / FourierKAN-GCF, Xu et al. 2024).

Grid maths (pykan's `update_grid_from_samples`, efficient-kan's `update_grid`):
`grid_from_samples` mixes an adaptive grid (sample percentiles) with a uniform one;
`fit_coefficients` refits edges by least squares; `refine_grid` makes a finer grid.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def uniform_grid(d_in: int, grid_size: int, order: int,
                 grid_range: tuple[float, float]) -> jax.Array:
    """Knots [d_in, G + 2k + 1]: G equal intervals over `grid_range`, k more on each side."""
    lo, hi = grid_range
    h = (hi - lo) / grid_size
    knots = lo + h * jnp.arange(-order, grid_size + order + 1, dtype=jnp.float32)
    return jnp.broadcast_to(knots, (d_in, knots.shape[0]))


def _safe_inv(den: jax.Array) -> jax.Array:
    """1 / den with 0 where den == 0 (the Cox-de Boor convention 0/0 := 0)."""
    zero = den == 0
    return jnp.where(zero, 0.0, 1.0 / jnp.where(zero, 1.0, den))


def _cox_de_boor(x: jax.Array, g: jax.Array, order: int) -> list[jax.Array]:
    """Bases of orders 0..order, basis index first: [m - 1 - p, ..., d_in] each.

    x [..., d_in]; g [m, d_in] (knots first). Laying the basis index out first keeps d_in as
    the minor (vectorised) axis; with it last (size G + k, ~8) CPU code runs ~2x slower.
    """
    g = g.reshape(g.shape[0], *([1] * (x.ndim - 1)), g.shape[1])  # [m, 1.., d_in]
    b = ((x >= g[:-1]) & (x < g[1:])).astype(x.dtype)  # [m - 1, ..., d_in]
    out = [b]
    for p in range(1, order + 1):
        inv_left = _safe_inv(g[p:-1] - g[: -(p + 1)])
        inv_right = _safe_inv(g[p + 1 :] - g[1:-p])
        b = (x - g[: -(p + 1)]) * inv_left * b[:-1] + (g[p + 1 :] - x) * inv_right * b[1:]
        out.append(b)
    return out


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _bspline(x: jax.Array, grid: jax.Array, order: int) -> jax.Array:
    return _cox_de_boor(x, grid.astype(x.dtype).T, order)[-1]


@_bspline.defjvp
def _bspline_jvp(order, primals, tangents):
    # d/dx B_{n,k} = k (B_{n,k-1} / (t_{n+k} - t_n) - B_{n+1,k-1} / (t_{n+k+1} - t_{n+1})):
    # one fused expression, where differentiating the recursion costs ~10x the forward pass.
    x, grid = primals
    x_dot = tangents[0]
    g = grid.astype(x.dtype).T
    bases = _cox_de_boor(x, g, order)
    if order == 0:
        return bases[-1], jnp.zeros_like(bases[-1])
    lower = bases[-2]  # [m - order, ..., d_in]
    k = order
    g = g.reshape(g.shape[0], *([1] * (x.ndim - 1)), g.shape[1])
    d = k * (lower[:-1] * _safe_inv(g[k:-1] - g[: -(k + 1)])
             - lower[1:] * _safe_inv(g[k + 1 :] - g[1:-k]))
    return bases[-1], d * x_dot


def bspline_basis_first(x: jax.Array, grid: jax.Array, order: int) -> jax.Array:
    """`bspline_basis` laid out basis index first: [n_basis, ..., d_in]."""
    return _bspline(x, jax.lax.stop_gradient(grid), order)


def bspline_basis(x: jax.Array, grid: jax.Array, order: int) -> jax.Array:
    """x [..., d_in], grid [d_in, m] -> B-spline bases [..., d_in, m - order - 1].

    Cox-de Boor: B_{n,0}(x) = 1[t_n <= x < t_{n+1}];
    B_{n,p}(x) = (x - t_n) / (t_{n+p} - t_n) B_{n,p-1}(x)
               + (t_{n+p+1} - x) / (t_{n+p+1} - t_{n+1}) B_{n+1,p-1}(x).
    Coincident knots (a zero denominator) contribute 0, so a degenerate grid gives no NaN.
    The derivative with respect to x is the closed form (a custom JVP); the grid is data,
    not a parameter, and gets no gradient (it is wrapped in `stop_gradient`).
    """
    return jnp.moveaxis(bspline_basis_first(x, grid, order), 0, -1)


def rbf_basis(x: jax.Array, n_centers: int, grid_range: tuple[float, float]) -> jax.Array:
    """x [..., d_in] -> exp(-((x - c_n) / h)^2) [..., d_in, n_centers]; c_n equally spaced over
    `grid_range` (ends included), h = the spacing (FastKAN's `denominator`)."""
    lo, hi = grid_range
    centers = jnp.linspace(lo, hi, n_centers, dtype=x.dtype)
    h = (hi - lo) / (n_centers - 1)
    return jnp.exp(-jnp.square((x[..., None] - centers) / h))


def chebyshev_basis(x: jax.Array, degree: int) -> jax.Array:
    """x [..., d_in] -> T_0..T_degree of tanh(x) [..., d_in, degree + 1] (recurrence)."""
    t = jnp.tanh(x)
    polys = [jnp.ones_like(t), t]
    for _ in range(2, degree + 1):
        polys.append(2.0 * t * polys[-1] - polys[-2])
    return jnp.stack(polys[: degree + 1], axis=-1)


def fourier_basis(x: jax.Array, n_freq: int) -> jax.Array:
    """x [..., d_in] -> [cos(x), ..., cos(K x), sin(x), ..., sin(K x)] [..., d_in, 2K]."""
    kx = x[..., None] * jnp.arange(1, n_freq + 1, dtype=x.dtype)
    return jnp.concatenate([jnp.cos(kx), jnp.sin(kx)], axis=-1)


# -- B-spline grids --------------------------------------------------------------------------


def _extend(interior: jax.Array, step: jax.Array, order: int) -> jax.Array:
    """interior [d_in, G + 1] knots -> [d_in, G + 2k + 1], k knots of spacing `step` [d_in]
    added on each side."""
    ramp = jnp.arange(1, order + 1, dtype=interior.dtype)
    left = interior[:, :1] - step[:, None] * ramp[::-1]
    right = interior[:, -1:] + step[:, None] * ramp
    return jnp.concatenate([left, interior, right], axis=1)


def grid_from_samples(x: jax.Array, grid_size: int, order: int, grid_eps: float = 0.02,
                      margin: float = 0.01, min_span: float = 1e-3) -> jax.Array:
    """Knots [d_in, G + 2k + 1] adapted to samples x [n, d_in] (pykan / efficient-kan).

    grid = grid_eps * uniform + (1 - grid_eps) * adaptive, where `adaptive` are G + 1 sample
    quantiles (sorted samples at indices linspace(0, n - 1, G + 1)) and `uniform` spans
    [min - margin, max + margin] in G equal steps; then k knots of the uniform step are added
    on each side. The uniform span is at least `min_span`, so a constant (e.g. dead, always
    zero) input still gets strictly increasing knots.
    """
    n = x.shape[0]
    xs = jnp.sort(x, axis=0)  # [n, d_in]
    idx = jnp.round(jnp.linspace(0, n - 1, grid_size + 1)).astype(jnp.int32)
    adaptive = xs[idx].T  # [d_in, G + 1]
    span = jnp.maximum(xs[-1] - xs[0] + 2 * margin, min_span)  # [d_in]
    step = span / grid_size
    start = (xs[0] + xs[-1]) / 2 - span / 2
    uniform = start[:, None] + step[:, None] * jnp.arange(grid_size + 1, dtype=x.dtype)
    interior = grid_eps * uniform + (1 - grid_eps) * adaptive
    return _extend(interior, step, order)


def refine_grid(grid: jax.Array, order: int, new_grid_size: int) -> jax.Array:
    """A grid of `new_grid_size` intervals over the same interior range [d_in, G' + 2k + 1].

    New interior knots interpolate the old ones linearly in knot-index space (as pykan's
    `get_grid`), so a uniform grid refines to a uniform grid (and when G' is a multiple of
    G every old knot is kept: the old spline space is contained in the new one).
    """
    interior = grid[:, order: grid.shape[1] - order]  # [d_in, G + 1]
    g_old = interior.shape[1] - 1
    pos = jnp.linspace(0.0, g_old, new_grid_size + 1)
    new = jax.vmap(lambda row: jnp.interp(pos, jnp.arange(g_old + 1.0), row))(interior)
    step = (new[:, -1] - new[:, 0]) / new_grid_size
    return _extend(new, step, order)


def fit_coefficients(basis: jax.Array, y: jax.Array) -> jax.Array:
    """Least-squares coefficients c [d_in, d_out, n] with sum_n c[i, j, n] basis[s, i, n]
    ~ y[s, i, j], for basis [s, d_in, n] and y [s, d_in, d_out].

    Solved per input by SVD (`jnp.linalg.lstsq`, minimum-norm solution, singular values below
    the default cut-off dropped): finite even for a rank-deficient basis, e.g. a constant input
    whose samples all fall in the same few basis functions, or basis functions no sample
    reaches (their coefficients come out 0).
    """
    solve = jax.vmap(lambda a, b: jnp.linalg.lstsq(a, b)[0], in_axes=(1, 1))
    c = solve(basis.astype(jnp.float32), y.astype(jnp.float32))  # [d_in, n, d_out]
    return jnp.swapaxes(c, 1, 2)
