"""The in-context regression models: the LSA with hand-set weights is one step of
(preconditioned) GD; the transformer is causal over the interleaved (x, y) tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.analysis import icl_predictors as ref
from jaxinterp.models.icl_regression import LinearSelfAttention, RegressionTransformer, interleave


def _data(seed=0, b=6, n=9, d=3):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((b, n, d)).astype(np.float32)
    ys = np.einsum("bnd,bd->bn", xs, rng.standard_normal((b, d))).astype(np.float32)
    return xs, ys


def test_lsa_with_gd_weights_is_preconditioned_gd():
    xs, ys = _data()
    d = xs.shape[-1]
    g = np.diag([0.5, 1.0, 2.0]).astype(np.float32)
    w_kq = np.zeros((d + 1, d + 1), np.float32)
    w_kq[:d, :d] = g
    w_pv = np.zeros((d + 1, d + 1), np.float32)
    w_pv[-1, -1] = 1.0
    model = LinearSelfAttention()
    params = model.init(jax.random.PRNGKey(0), xs, ys)["params"]
    assert jax.tree.map(jnp.shape, params) == {"w_kq": (4, 4), "w_pv": (4, 4)}
    out = model.apply({"params": {"w_kq": w_kq, "w_pv": w_pv}}, xs, ys)
    np.testing.assert_allclose(out, ref.gd_query(xs, ys, g), rtol=1e-5, atol=1e-5)
    sparse = LinearSelfAttention(sparse=True)
    out = sparse.apply({"params": {"w_kq": g, "v": jnp.float32(1.0)}}, xs, ys)
    np.testing.assert_allclose(out, ref.gd_query(xs, ys, g), rtol=1e-5, atol=1e-5)
    # The query's own y is never read.
    ys2 = ys.copy()
    ys2[:, -1] += 100.0
    np.testing.assert_allclose(model.apply({"params": params}, xs, ys2),
                               model.apply({"params": params}, xs, ys), rtol=1e-6)
    with pytest.raises(ValueError, match="xs \\[batch"):
        model.init(jax.random.PRNGKey(0), xs, ys[:, :-1])


def test_transformer_predicts_y_k_without_seeing_it():
    xs, ys = _data(n=5)
    assert interleave(jnp.asarray(xs), jnp.asarray(ys)).shape == (6, 10, 4)
    model = RegressionTransformer(n_layers=1, d_model=8, n_heads=2, d_mlp=16, max_points=5)
    params = model.init(jax.random.PRNGKey(0), xs, ys)
    out = model.apply(params, xs, ys)
    assert out.shape == ys.shape
    ys2 = ys.copy()
    ys2[:, 2] += 10.0  # only predictions of points after 2 may change
    out2 = model.apply(params, xs, ys2)
    np.testing.assert_allclose(out2[:, :3], out[:, :3], rtol=1e-5, atol=1e-6)
    assert np.abs(out2[:, 3:] - out[:, 3:]).max() > 1e-4
