"""KAN layers and the KAN network, against NumPy computations written from the equations."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.layers import kan

# --------------------------------------------------------------------------------------------
# NumPy references (from the definitions, independent of the library code)


def np_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def np_swish(x):
    return x / (1.0 + np.exp(-x))


def np_rational(x, a, b):
    """P(x) / (1 + |sum_k b_k x^k|), powers written out."""
    p = sum(a[k] * x**k for k in range(len(a)))
    q = 1.0 + np.abs(sum(b[k - 1] * x**k for k in range(1, len(b) + 1)))
    return p / q


def params_np(variables):
    """The variables' `params`, unboxed, as float64 NumPy arrays."""
    return jax.tree.map(lambda v: np.asarray(v, np.float64), nn.meta.unbox(variables))["params"]


# --------------------------------------------------------------------------------------------
# GR-KAN


def test_grkan_denominator_at_least_one_for_random_coefficients():
    rng = np.random.default_rng(0)
    den = jnp.asarray(rng.normal(0, 3, (64, 4)), jnp.float32)
    x = jnp.asarray(np.concatenate([np.linspace(-1e3, 1e3, 2001), rng.normal(0, 10, 999)]),
                    jnp.float32)
    q = np.asarray(kan.rational_denominator(x[:, None], den[None]))
    assert q.shape == (3000, 64)
    assert np.all(q >= 1.0) and np.all(np.isfinite(q))
    # and it is the formula 1 + |b1 x + ... + b4 x^4| (checked where float32 is accurate)
    xs = np.asarray(x, np.float64)[:, None]
    b = np.asarray(den, np.float64)
    want = 1 + np.abs(sum(b[:, k] * xs ** (k + 1) for k in range(4)))
    np.testing.assert_allclose(q, want, rtol=1e-4)


def test_grkan_no_pole_and_matches_numpy_for_random_coefficients():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 6), rng.normal(0, 2, 4)
    x = np.linspace(-5, 5, 1001)
    got = np.asarray(kan.rational(jnp.asarray(x, jnp.float32), jnp.asarray(a, jnp.float32),
                                  jnp.asarray(b, jnp.float32)))
    want = np_rational(x, a, b)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("name,target", [("identity", lambda x: x), ("gelu", np_gelu),
                                         ("swish", np_swish)])
def test_grkan_fitted_inits_within_1e_2_on_minus3_3(name, target):
    a, b = kan.RATIONAL_INITS[name]
    x = np.linspace(-3, 3, 6001)
    err = np.abs(np_rational(x, np.asarray(a), np.asarray(b)) - target(x)).max()
    assert err < 1e-2, (name, err)
    # the layer uses them: a fresh layer's rational equals the target on [-3, 3]
    layer = kan.GroupRationalKAN(3, n_groups=2, rational_init=name)
    xj = jnp.asarray(x[:6000].reshape(1000, 6), jnp.float32)
    variables = layer.init(jax.random.key(0), xj)
    _, cache = ji.run(layer, variables, xj, capture=["hook_basis"])
    np.testing.assert_allclose(cache["hook_basis"], target(x[:6000].reshape(1000, 6)),
                               atol=1e-2)


def test_grkan_layer_matches_numpy_with_groups_and_pos_axis():
    layer = kan.GroupRationalKAN(5, n_groups=3, rational_init="swish")
    x = jax.random.normal(jax.random.key(0), (2, 4, 6)) * 2
    variables = layer.init(jax.random.key(1), x)
    rng = np.random.default_rng(2)
    variables = jax.tree.map(lambda v: v + 0.1 * rng.normal(size=v.shape).astype(np.float32),
                             variables)
    p = params_np(variables)
    xn = np.asarray(x, np.float64)
    basis = np.empty_like(xn)
    for i in range(6):
        g = i // 2  # 6 channels, 3 groups of 2
        basis[..., i] = np_rational(xn[..., i], p["numerator"][g], p["denominator"][g])
    want = basis @ p["kernel"] + p["bias"]
    np.testing.assert_allclose(layer.apply(variables, x), want, rtol=1e-5, atol=1e-5)
    out, cache = ji.run(layer, variables, x, capture=["hook_edge", "hook_basis"])
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cache["hook_edge"], basis[..., :, None] * p["kernel"],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shared", [False, True], ids=["per_group", "shared_numerator"])
def test_grkan_gradients_match_numpy_derivatives(shared):
    """The hand-written backward pass against central differences of the NumPy formula; with
    a shared numerator [1, 6] (KAT_Group) its gradient sums over the groups."""
    rng = np.random.default_rng(5)
    x = rng.normal(0, 2, (3, 4, 6))
    a, b = rng.normal(0, 1, (1 if shared else 2, 6)), rng.normal(0, 1, (2, 4))
    w = rng.normal(0, 1, x.shape)  # loss = sum(w * F(x))

    def np_loss(x, a, b):
        xs = x.reshape(-1, 2, 3)
        return sum(np.sum(w.reshape(-1, 2, 3)[:, g] * np_rational(xs[:, g], a[0 if shared else g],
                                                                  b[g]))
                   for g in range(2))

    def jax_loss(x, a, b):
        return jnp.sum(jnp.asarray(w, jnp.float32) * kan.group_rational(x, a, b))

    got = jax.grad(jax_loss, argnums=(0, 1, 2))(*(jnp.asarray(v, jnp.float32) for v in (x, a, b)))
    eps = 1e-6
    for arg, g in enumerate(got):
        args = [x, a, b]
        assert g.shape == args[arg].shape
        num = np.zeros_like(args[arg])
        for idx in np.ndindex(num.shape):
            plus = [v.copy() for v in args]
            minus = [v.copy() for v in args]
            plus[arg][idx] += eps
            minus[arg][idx] -= eps
            num[idx] = (np_loss(*plus) - np_loss(*minus)) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=2e-3, atol=2e-3 * np.abs(num).max())


def test_grkan_shared_numerator_layer_matches_numpy_and_autodiff():
    """`shared_numerator=True`: numerator [1, 6] used by every group; forward against NumPy,
    the custom backward against jax.grad of a plain (autodiff) formula, under jit and vmap."""
    layer = kan.GroupRationalKAN(5, n_groups=3, rational_init="swish", shared_numerator=True)
    x = jax.random.normal(jax.random.key(0), (2, 4, 6)) * 2
    variables = layer.init(jax.random.key(1), x)
    p0 = params_np(variables)
    assert p0["numerator"].shape == (1, 6) and p0["denominator"].shape == (3, 4)
    rng = np.random.default_rng(3)
    variables = jax.tree.map(lambda v: v + 0.1 * rng.normal(size=v.shape).astype(np.float32),
                             variables)
    p = params_np(variables)
    xn = np.asarray(x, np.float64)
    basis = np.stack([np_rational(xn[..., i], p["numerator"][0], p["denominator"][i // 2])
                      for i in range(6)], -1)
    want = basis @ p["kernel"] + p["bias"]
    np.testing.assert_allclose(jax.jit(layer.apply)(variables, x), want, rtol=1e-5, atol=1e-5)
    per_example = jax.vmap(lambda xi: layer.apply(variables, xi[None])[0])(x)
    np.testing.assert_allclose(per_example, want, rtol=1e-5, atol=1e-5)

    def plain(params, x):  # autodiff through the written-out formula
        a, b = params["numerator"][0], params["denominator"]
        xg = x.reshape(2, 4, 3, 2)
        pp = sum(a[k] * xg**k for k in range(6))
        q = 1 + jnp.abs(sum(b[:, None, k - 1] * xg**k for k in range(1, 5)))
        return (pp / q).reshape(x.shape) @ params["kernel"] + params["bias"]

    params = nn.meta.unbox(variables)["params"]
    loss_layer = jax.jit(jax.grad(
        lambda q, x: jnp.sum(jnp.sin(layer.apply({"params": q}, x))), argnums=(0, 1)))
    loss_plain = jax.grad(lambda q, x: jnp.sum(jnp.sin(plain(q, x))), argnums=(0, 1))
    got, want_g = loss_layer(params, x), loss_plain(params, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want_g), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.abs(w).max()))


def test_bspline_derivative_matches_numpy_finite_differences():
    grid = np.sort(np.linspace(-1.6, 1.6, 12) + np.random.default_rng(0).uniform(0, .05, 12))
    grid_j = jnp.asarray(np.stack([grid, grid]), jnp.float32)
    x = np.array([[-1.3, 0.05], [0.33, 0.71], [0.9, -0.45]])
    got = jax.vmap(jax.jacfwd(lambda v: kan.kan_basis.bspline_basis(v, grid_j, 3)))(
        jnp.asarray(x, jnp.float32))  # [s, d_in, n, d_in]
    eps = 1e-6
    for s, i in np.ndindex(x.shape):
        fd = (np_bspline(x[s, i] + eps, grid, 3) - np_bspline(x[s, i] - eps, grid, 3)) / (2 * eps)
        np.testing.assert_allclose(got[s, i, :, i], fd, atol=1e-3)
    # reverse mode (what training uses) agrees with forward mode
    rev = jax.grad(lambda v: jnp.sum(jnp.sin(kan.kan_basis.bspline_basis(v, grid_j, 3))))(
        jnp.asarray(x, jnp.float32))
    fwd = jnp.einsum("sinj,sin->sj", got, jnp.cos(kan.kan_basis.bspline_basis(
        jnp.asarray(x, jnp.float32), grid_j, 3)))
    np.testing.assert_allclose(rev, fwd, rtol=1e-5, atol=1e-6)


def test_grkan_bad_groups_is_an_error():
    with pytest.raises(ValueError, match="n_groups=4 must be positive and divide d_in=6"):
        kan.GroupRationalKAN(3, n_groups=4).init(jax.random.key(0), jnp.ones((2, 6)))
    with pytest.raises(ValueError, match="rational_init='tanh'"):
        kan.GroupRationalKAN(3, n_groups=2, rational_init="tanh").init(
            jax.random.key(0), jnp.ones((2, 6)))
    with pytest.raises(ValueError, match=r"numerator \(3, 6\) must be \[n_groups or 1"):
        kan.group_rational(jnp.ones((2, 6)), jnp.ones((3, 6)), jnp.ones((2, 4)))


# --------------------------------------------------------------------------------------------
# B-spline, RBF, Chebyshev, Fourier layers


def np_bspline(x, knots, k):
    """B_{n,k}(x) for one scalar x and one knot vector, by the Cox-de Boor definition."""
    def b(n, p):
        if p == 0:
            return 1.0 if knots[n] <= x < knots[n + 1] else 0.0
        out = 0.0
        if knots[n + p] != knots[n]:
            out += (x - knots[n]) / (knots[n + p] - knots[n]) * b(n, p - 1)
        if knots[n + p + 1] != knots[n + 1]:
            out += (knots[n + p + 1] - x) / (knots[n + p + 1] - knots[n + 1]) * b(n + 1, p - 1)
        return out
    return np.array([b(n, k) for n in range(len(knots) - k - 1)])


def np_silu(x):
    return x / (1.0 + np.exp(-x))


def np_bspline_layer(x, p, grid, k, edge_fix=None):
    """(basis [b, i, n], edges [b, i, j], out [b, j]) of a B-spline KAN layer, in float64."""
    basis = np.array([[np_bspline(x[s, i], grid[i], k) for i in range(x.shape[1])]
                      for s in range(x.shape[0])])
    edges = np.einsum("bin,ijn->bij", basis, p["coef_bspline"])
    edges = edges + np_silu(x)[:, :, None] * p["w_base"]
    if edge_fix is not None:
        edges = edge_fix(edges)
    return basis, edges, edges.sum(1)


def tiny_kan(layer_type="bspline", widths=(3, 4, 2), seed=0, **kw):
    model = ji.models.build("kan_pykan_tiny", widths=widths, layer_type=layer_type, **kw)
    x = jax.random.uniform(jax.random.key(seed), (7, widths[0]), minval=-1.3, maxval=1.3)
    variables = model.init(jax.random.key(seed + 1), x)
    rng = np.random.default_rng(seed)
    variables = {**variables, "params": jax.tree.map(
        lambda v: v + 0.3 * rng.normal(size=v.shape).astype(np.float32), variables["params"])}
    return model, variables, x


def test_bspline_layer_matches_numpy_cox_de_boor():
    model, variables, x = tiny_kan()
    # a non-uniform grid, so the recursion's denominators differ per knot
    rng = np.random.default_rng(3)
    grids = {k: np.sort(np.asarray(g) + rng.uniform(-0.05, 0.05, g.shape), axis=1)
             for k, g in {"layers_0": variables["kan_grid"]["layers_0"]["grid"],
                          "layers_1": variables["kan_grid"]["layers_1"]["grid"]}.items()}
    variables = {**variables, "kan_grid": {k: {"grid": jnp.asarray(g, jnp.float32)}
                                           for k, g in grids.items()}}
    out, cache = ji.run(model, variables, x, capture=["*"])
    p = params_np(variables)
    xn = np.asarray(x, np.float64)
    basis0, edges0, h = np_bspline_layer(xn, p["layers_0"], grids["layers_0"], 3)
    basis1, _edges1, want = np_bspline_layer(h, p["layers_1"], grids["layers_1"], 3)
    np.testing.assert_allclose(cache["layers.0.hook_basis"], basis0, atol=1e-5)
    np.testing.assert_allclose(cache["layers.0.hook_edge"], edges0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cache["layers.1.hook_basis"], basis1, atol=1e-5)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.apply(variables, x), want, rtol=1e-5, atol=1e-5)
    inside = np.abs(xn) < 0.9  # inside the grid's interior the bases partition unity
    np.testing.assert_allclose(basis0.sum(-1)[inside], 1.0, atol=1e-9)
    assert inside.sum() > 5 and (~inside).sum() > 2  # and x reaches the extended knots


def test_kan_sites_are_listed():
    model, _, x = tiny_kan()
    shapes = {k: v.shape for k, v in ji.sites(model, x).items()}
    assert shapes == {
        "layers.0.hook_basis": (7, 3, 8), "layers.0.hook_edge": (7, 3, 4),
        "layers.0.hook_post": (7, 4), "layers.1.hook_basis": (7, 4, 8),
        "layers.1.hook_edge": (7, 4, 2), "layers.1.hook_post": (7, 2)}


@pytest.mark.parametrize("value", [0.0, 0.7])
def test_clamping_one_edge_changes_the_output_as_the_sum_says(value):
    model, variables, x = tiny_kan()
    i, j = 1, 2
    mask = np.zeros((3, 4), bool)
    mask[i, j] = True  # edge (input 1 -> node 2) of layer 0 only; 0.0 zero-ablates it
    iv = ji.Clamp("layers.0.hook_edge", value, mask=mask)
    out, _ = ji.run(model, variables, x, interventions=[iv])
    p = params_np(variables)
    grid = {k: np.asarray(v["grid"], np.float64) for k, v in variables["kan_grid"].items()}

    def fix(e):
        e = e.copy()
        e[:, i, j] = value
        return e

    xn = np.asarray(x, np.float64)
    _, _, h = np_bspline_layer(xn, p["layers_0"], grid["layers_0"], 3, edge_fix=fix)
    _, _, want = np_bspline_layer(h, p["layers_1"], grid["layers_1"], 3)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    clean = model.apply(variables, x)
    assert np.abs(np.asarray(out) - np.asarray(clean)).max() > 1e-3  # it did change


def test_zero_ablating_the_edge_site_zeroes_the_bias_free_output():
    model, variables, x = tiny_kan()
    _out, cache = ji.run(model, variables, x, capture=["layers.0.hook_post"],
                        interventions=[ji.Ablate("layers.0.hook_edge")])
    np.testing.assert_allclose(cache["layers.0.hook_post"], 0.0)


def np_grid_from_samples(x, g, k, eps=0.02, margin=0.01):
    """efficient-kan's update_grid formula, per input column (float64)."""
    xs = np.sort(x, axis=0)
    adaptive = xs[np.round(np.linspace(0, len(x) - 1, g + 1)).astype(int)]
    span = np.maximum(xs[-1] - xs[0] + 2 * margin, 1e-3)
    step = span / g
    uniform = (xs[0] + xs[-1]) / 2 - span / 2 + step * np.arange(g + 1)[:, None]
    grid = eps * uniform + (1 - eps) * adaptive
    grid = np.concatenate([grid[:1] - step * np.arange(k, 0, -1)[:, None], grid,
                           grid[-1:] + step * np.arange(1, k + 1)[:, None]])
    return grid.T


def test_grid_update_reaches_a_previously_jitted_function():
    model, variables, _ = tiny_kan(widths=(3, 2))
    x = jax.random.normal(jax.random.key(5), (100, 3)) * jnp.asarray([2.0, 0.5, 3.0])
    apply = jax.jit(model.apply)
    before = apply(variables, x)
    new = jax.jit(kan.update_grid, static_argnums=0)(model, variables, x)
    grid = np.asarray(new["kan_grid"]["layers_0"]["grid"], np.float64)
    np.testing.assert_allclose(grid, np_grid_from_samples(np.asarray(x, np.float64), 5, 3),
                               rtol=1e-5, atol=1e-5)
    after = apply(new, x)  # the same compiled function, new variables
    p = params_np(new)
    _, _, want = np_bspline_layer(np.asarray(x, np.float64), p["layers_0"], grid, 3)
    np.testing.assert_allclose(after, want, rtol=1e-4, atol=1e-4)
    assert np.abs(np.asarray(after) - np.asarray(before)).max() > 1e-2  # the grid did change
    # the coefficients are the least-squares refit of the old spline parts at these samples
    p_old = params_np(variables)["layers_0"]
    old_grid = np.asarray(variables["kan_grid"]["layers_0"]["grid"], np.float64)
    b_old, _, _ = np_bspline_layer(np.asarray(x, np.float64), p_old, old_grid, 3)
    b_new, _, _ = np_bspline_layer(np.asarray(x, np.float64), p["layers_0"], grid, 3)
    y_old = np.einsum("bin,ijn->bij", b_old, p_old["coef_bspline"])
    for i in range(3):
        sol = np.linalg.lstsq(b_new[:, i], y_old[:, i], rcond=None)[0]
        np.testing.assert_allclose(b_new[:, i] @ p["layers_0"]["coef_bspline"][i].T,
                                   b_new[:, i] @ sol, atol=2e-3)


def test_dead_input_gives_finite_parameters_after_grid_update():
    model, variables, _ = tiny_kan()
    x = jax.random.normal(jax.random.key(6), (64, 3)).at[:, 1].set(0.0)  # input 1 is dead
    update = jax.jit(kan.update_grid, static_argnums=0)
    new = update(model, variables, x)
    for leaf in jax.tree.leaves(nn.meta.unbox(new)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    grid = np.asarray(new["kan_grid"]["layers_0"]["grid"])
    assert np.all(np.diff(grid, axis=1) > 0)  # strictly increasing, also for the dead input
    assert np.all(np.isfinite(np.asarray(model.apply(new, x))))
    # the same for a constant (non-zero) input and for a single sample
    new = update(model, variables, jnp.full((64, 3), 0.3))
    assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(nn.meta.unbox(new)))


@pytest.mark.parametrize("new_size,tol", [(10, 1e-4), (7, 5e-2)])
def test_grid_extension_keeps_the_function(new_size, tol):
    model, variables, _ = tiny_kan()
    finer = kan.extend_grid(variables, new_size, order=3)
    model2 = ji.models.build("kan_pykan_tiny", widths=(3, 4, 2), grid_size=new_size)
    assert finer["kan_grid"]["layers_0"]["grid"].shape == (3, new_size + 7)
    x = jax.random.uniform(jax.random.key(9), (50, 3), minval=-0.99, maxval=0.99)
    # layer 0 on its grid range: exact for a refinement (10 = 2 x 5), close otherwise
    _, c0 = ji.run(model, variables, x, capture=["layers.0.hook_post"])
    _, c1 = ji.run(model2, finer, x, capture=["layers.0.hook_post"])
    np.testing.assert_allclose(c1["layers.0.hook_post"], c0["layers.0.hook_post"], atol=tol)


def test_chebyshev_gradients_finite_when_saturated():
    model, variables, _ = tiny_kan("chebyshev")
    x = jnp.asarray([[1e3, -1e3, 0.5], [-1e3, 2e3, 1e3]], jnp.float32)

    def loss(v, x):
        return jnp.sum(model.apply(v, x) ** 2)

    gv, gx = jax.grad(loss, argnums=(0, 1))(variables, x)
    for leaf in [*jax.tree.leaves(nn.meta.unbox(gv)), gx]:
        assert np.all(np.isfinite(np.asarray(leaf)))
    # the basis is T_n(tanh x) = cos(n arccos tanh x) where that is well defined
    xm = np.linspace(-2, 2, 9)
    got = np.asarray(kan.kan_basis.chebyshev_basis(jnp.asarray(xm[:, None], jnp.float32), 4))
    want = np.cos(np.arange(5) * np.arccos(np.tanh(xm))[:, None])
    np.testing.assert_allclose(got[:, 0, :], want, atol=1e-5)


def np_family_basis(family, x):
    if family == "rbf":
        c = np.linspace(-2, 2, 8)
        return np.exp(-(((x[..., None] - c) / (4 / 7)) ** 2))
    if family == "chebyshev":
        return np.cos(np.arange(5) * np.arccos(np.clip(np.tanh(x), -1, 1))[..., None])
    if family == "fourier":
        k = np.arange(1, 6)
        return np.concatenate([np.cos(k * x[..., None]), np.sin(k * x[..., None])], -1)
    return np.stack([np.stack([np_bspline(v, np.linspace(-1 - 3 * 0.4, 1 + 3 * 0.4, 12), 3)
                               for v in row]) for row in x])


@pytest.mark.parametrize("basis,mix", [
    ("rbf", "softmax"), ("chebyshev", "softmax"), ("fourier", "softmax"),  # one family: no mix
    (("bspline", "rbf", "chebyshev", "fourier"), "softmax"),
    (("bspline", "rbf", "chebyshev", "fourier"), "linear"),
    (("rbf", "fourier"), "softmax"), (("rbf", "fourier"), "linear")])
def test_other_families_and_mix_match_numpy(basis, mix):
    layer = kan.KANLayer(3, basis=basis, mix=mix, use_bias=True)
    x = jax.random.uniform(jax.random.key(2), (6, 4), minval=-1.5, maxval=1.5)
    variables = layer.init(jax.random.key(0), x)
    rng = np.random.default_rng(4)
    variables = {**variables, "params": jax.tree.map(
        lambda v: v + 0.3 * rng.normal(size=v.shape).astype(np.float32), variables["params"])}
    p = params_np(variables)
    fams = (basis,) if isinstance(basis, str) else basis
    xn = np.asarray(x, np.float64)
    if len(fams) == 1:
        m = np.ones((4, 3, 1))
    elif mix == "softmax":
        m = np.exp(p["mix"]) / np.exp(p["mix"]).sum(-1, keepdims=True)
    else:
        m = p["mix"]
    edges = sum(m[None, :, :, k] * np.einsum("bin,ijn->bij", np_family_basis(f, xn),
                                              p[f"coef_{f}"])
                for k, f in enumerate(fams))
    if "w_base" in p:
        assert any(f in ("bspline", "rbf") for f in fams)
        edges = edges + np_silu(xn)[:, :, None] * p["w_base"]
    want = edges.sum(1) + p["bias"]
    np.testing.assert_allclose(layer.apply(variables, x), want, rtol=1e-5, atol=1e-5)
    out, cache = ji.run(layer, variables, x, capture=["hook_edge", "hook_basis"])
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cache["hook_edge"], edges, rtol=1e-5, atol=1e-5)
    assert cache["hook_basis"].shape[-1] == sum(np_family_basis(f, xn).shape[-1] for f in fams)


def test_layers_work_under_vmap_and_with_a_pos_axis():
    layer = kan.KANLayer(3, basis=("bspline", "chebyshev"))
    x = jax.random.normal(jax.random.key(0), (2, 5, 4))
    variables = layer.init(jax.random.key(1), x)
    y = layer.apply(variables, x)
    y_flat = layer.apply(variables, x.reshape(10, 4)).reshape(2, 5, 3)
    np.testing.assert_allclose(y, y_flat, rtol=1e-6, atol=1e-6)
    y_vmap = jax.vmap(lambda xi: layer.apply(variables, xi))(x)
    np.testing.assert_allclose(y_vmap, y, rtol=1e-6, atol=1e-6)
    assert ji.sites(layer, x)["hook_basis"].shape == (2, 5, 4, 13)


def test_kan_errors():
    with pytest.raises(ValueError, match="give one or more distinct families"):
        kan.KANLayer(3, basis="spline").init(jax.random.key(0), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="layer_type='mlp'"):
        ji.models.build("kan_64_64_10", layer_type="mlp")
    with pytest.raises(ValueError, match="widths"):
        ji.models.build("kan_64_64_10", widths=(64,))
    model, variables, x = tiny_kan()
    with pytest.raises(ValueError, match="no 'kan_grid' variables"):
        model.apply({"params": variables["params"]}, x)
    with pytest.raises(ValueError, match=r"KAN expects \[batch, 3\]"):
        model.apply(variables, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="grid of shape"):
        ji.models.build("kan_pykan_tiny", widths=(3, 4, 2), grid_size=6).apply(variables, x)
    rbf, rv, rx = tiny_kan("rbf")
    with pytest.raises(ValueError, match="has no B-spline grid"):
        kan.update_grid(rbf, rv, rx)
    with pytest.raises(ValueError, match="grkan_groups=8 must divide"):
        ji.models.build("grkan_64_64_10", widths=(12, 4))

