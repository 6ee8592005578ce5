"""Deep linear networks: the output is the input times the product of the weights, the
initialisation has the documented scale, tied pathways start equal, and the two deficits
(blanked input, frozen pathway) do what the docstring says to the gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.models.deep_linear import DeepLinear, MultiPathwayLinear, end_to_end


def _x(batch=5, d_in=6, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((batch, d_in)), jnp.float32)


@pytest.mark.parametrize("depth", [1, 3])
def test_deep_linear_is_the_product_of_its_weights(depth):
    x = _x()
    model = DeepLinear(depth=depth, width=7, d_out=4, init_scale=0.5)
    params = model.init(jax.random.key(0), x)["params"]
    shapes = {k: v.shape for k, v in params.items()}
    want = {"W_0": (6, 4)} if depth == 1 else {"W_0": (6, 7), "W_1": (7, 7), "W_2": (7, 4)}
    assert shapes == want
    w = end_to_end(params)
    assert w.shape == (6, 4)
    np.testing.assert_allclose(model.apply({"params": params}, x), x @ w, rtol=1e-5, atol=1e-6)
    assert sorted(ji.sites(model, x)) == [f"hook_hidden_{i}" for i in range(depth - 1)]
    if depth == 3:
        _, cache = ji.run(model, {"params": params}, x, capture="hook_hidden_*")
        np.testing.assert_allclose(cache["hook_hidden_1"],
                                   x @ params["W_0"] @ params["W_1"], rtol=1e-5, atol=1e-6)


def test_initial_end_to_end_norm_is_init_scale_sqrt_d_out():
    model = DeepLinear(depth=3, width=64, d_out=32, init_scale=1e-2)
    x = jnp.eye(32)
    norms = [float(jnp.linalg.norm(end_to_end(model.init(jax.random.key(s), x)["params"])))
             for s in range(20)]
    # E |W|_F^2 = init_scale^2 * d_out.
    np.testing.assert_allclose(np.mean(np.square(norms)), 1e-4 * 32, rtol=0.15)


def test_multi_pathway_sum_gates_and_tied_init():
    x = _x(d_in=8)
    model = MultiPathwayLinear(depth=2, width=5, d_out=3, n_pathways=2, init_scale=0.3)
    params = model.init(jax.random.key(1), x)["params"]
    assert {k: v.shape for k, v in params.items()} == {"W_0": (2, 8, 5), "W_1": (2, 5, 3)}
    for w in params.values():  # tied: both pathways start from the same weights
        np.testing.assert_array_equal(w[0], w[1])
    untied = MultiPathwayLinear(depth=2, width=5, d_out=3, init_scale=0.3, tied_init=False)
    p2 = untied.init(jax.random.key(1), x)["params"]
    assert not np.allclose(p2["W_0"][0], p2["W_0"][1])
    w = end_to_end(p2)  # [pathway, d_in, d_out]
    assert w.shape == (2, 8, 3)
    gates = jnp.array([0.0, 1.0])
    np.testing.assert_allclose(untied.apply({"params": p2}, x), x @ w[0] + x @ w[1],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(untied.apply({"params": p2}, x, gates), x @ w[1],
                               rtol=1e-5, atol=1e-6)
    _, cache = ji.run(untied, {"params": p2}, x, capture="hook_pathway_out")
    np.testing.assert_allclose(cache["hook_pathway_out"], jnp.stack([x @ w[0], x @ w[1]]),
                               rtol=1e-5, atol=1e-6)


def test_blanked_and_frozen_pathways_do_not_learn():
    x = _x(d_in=8)
    y = _x(d_in=3, seed=1)
    model = MultiPathwayLinear(depth=3, width=4, d_out=3, init_scale=0.5, tied_init=False)
    params = model.init(jax.random.key(2), x)["params"]

    def grads(**kw):
        return jax.grad(lambda p: jnp.sum((model.apply({"params": p}, x, **kw) - y) ** 2))(
            params)

    blank = grads(gates=jnp.array([1.0, 0.0]))
    frozen = grads(frozen=jnp.array([0.0, 1.0]))
    full = grads()
    for g in (blank, frozen):
        for k in params:
            np.testing.assert_array_equal(g[k][1], 0.0)  # pathway B gets no gradient
            assert np.abs(g[k][0]).max() > 0
    # Frozen: B still contributes (same output, so A's gradient is the undeficient one).
    np.testing.assert_allclose(model.apply({"params": params}, x, frozen=jnp.array([0.0, 1.0])),
                               model.apply({"params": params}, x), rtol=1e-6)
    for k in params:
        np.testing.assert_allclose(frozen[k][0], full[k][0], rtol=1e-5, atol=1e-6)


def test_bad_values_raise():
    x = _x()
    with pytest.raises(ValueError, match="depth=0"):
        DeepLinear(depth=0, width=4, d_out=2).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="init_scale"):
        DeepLinear(depth=2, width=4, d_out=2, init_scale=0.0).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="gates"):
        MultiPathwayLinear(depth=2, width=4, d_out=2).init(jax.random.key(0), x, jnp.ones(3))
    with pytest.raises(ValueError, match="W_0"):
        end_to_end({"W_1": jnp.ones((2, 2))})
