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


def test_grkan_bad_groups_is_an_error():
    with pytest.raises(ValueError, match="n_groups=4 must be positive and divide d_in=6"):
        kan.GroupRationalKAN(3, n_groups=4).init(jax.random.key(0), jnp.ones((2, 6)))
    with pytest.raises(ValueError, match="rational_init='tanh'"):
        kan.GroupRationalKAN(3, n_groups=2, rational_init="tanh").init(
            jax.random.key(0), jnp.ones((2, 6)))
