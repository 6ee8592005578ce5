"""Steering vectors against NumPy, and sweeps against a loop of `ji.run` calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.analysis import steering
from tests.helpers.tiny_models import assert_close, tiny


def test_mean_difference_and_principal_direction_match_numpy():
    rng = np.random.default_rng(0)
    d = 16
    planted = rng.normal(size=d)
    planted /= np.linalg.norm(planted)
    base = rng.normal(size=(40, d))
    pos = base + 3.0 * planted + 0.1 * rng.normal(size=(40, d))
    neg = base
    np.testing.assert_allclose(steering.mean_difference(pos, neg), pos.mean(0) - neg.mean(0),
                               rtol=1e-5, atol=1e-6)
    got = np.asarray(steering.principal_direction(pos, neg))
    _, _, vt = np.linalg.svd(pos - neg)
    np.testing.assert_allclose(abs(got @ vt[0]), 1.0, rtol=1e-5)
    assert got @ planted > 0.99  # recovers the planted shift, with the right sign
    centred = np.asarray(steering.principal_direction(pos, neg, center=True))
    diffs = pos - neg
    _, _, vt_c = np.linalg.svd(diffs - diffs.mean(0))
    np.testing.assert_allclose(abs(centred @ vt_c[0]), 1.0, rtol=1e-4)
    with pytest.raises(ValueError, match="paired"):
        steering.principal_direction(pos, neg[:5])
    with pytest.raises(ValueError, match="widths differ"):
        steering.mean_difference(pos, neg[:, :3])


def test_steering_vectors_from_a_model_equal_manual_capture():
    model, variables, tokens = tiny()
    other = jax.random.randint(jax.random.key(5), tokens.shape, 0, model.config.d_vocab)
    vecs = steering.steering_vectors(model, variables, tokens, other, "blocks.*.hook_resid_post",
                                     position=-2)
    assert sorted(vecs) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    for name, v in vecs.items():
        a = ji.run(model, variables, tokens, capture=name)[1][name][:, -2]
        b = ji.run(model, variables, other, capture=name)[1][name][:, -2]
        np.testing.assert_allclose(v, np.mean(a, 0) - np.mean(b, 0), rtol=1e-5, atol=1e-6)
    z = steering.steering_vectors(model, variables, tokens, other, "blocks.0.attn.hook_z",
                                  method="pca")
    assert z["blocks.0.attn.hook_z"].shape == (4, 8)  # [head, d_head]
    with pytest.raises(ValueError, match="no position"):
        steering.steering_vectors(model, variables, tokens, other, "blocks.0.hook_resid_post",
                                  position=99)


def test_weighted_steering_equals_adding_by_hand():
    model, variables, tokens = tiny()
    d = model.config.d_model
    v0, v1 = jax.random.normal(jax.random.key(1), (2, d))
    vecs = {"blocks.0.hook_resid_post": v0, "blocks.1.hook_resid_mid": v1}
    ivs = steering.steer(vecs, {"blocks.0.hook_resid_post": 0.5, "blocks.1.hook_resid_mid": 2.0},
                         scale=3.0, positions=[1, 2])
    got, _ = ji.run(model, variables, tokens, interventions=ivs)
    want, _ = ji.run(model, variables, tokens, interventions=[
        ji.Add("blocks.0.hook_resid_post", v0 * 1.5, positions=[1, 2]),
        ji.Add("blocks.1.hook_resid_mid", v1 * 6.0, positions=[1, 2])])
    assert_close(got, want)
    with pytest.raises(ValueError, match="missing"):
        steering.steer(vecs, {"blocks.0.hook_resid_post": 1.0})


def test_strength_sweep_is_one_call_equal_to_the_loop():
    model, variables, tokens = tiny()
    v = jax.random.normal(jax.random.key(3), (model.config.d_model,))
    vecs = {"blocks.1.hook_resid_pre": v}
    strengths = jnp.linspace(-4, 4, 5)
    last = lambda out: out[:, -1]
    sweep = steering.strength_sweep(model, variables, tokens, vecs, strengths, metric=last)
    chunked = steering.strength_sweep(model, variables, tokens, vecs, strengths, metric=last,
                                      batch_size=2)
    assert sweep.shape == (5, 3, model.config.d_vocab)
    for i, s in enumerate(strengths):
        want = ji.run(model, variables, tokens,
                      interventions=[ji.Add("blocks.1.hook_resid_pre", v, scale=s)])[0][:, -1]
        assert_close(sweep[i], want)
        assert_close(chunked[i], want)
    assert float(jnp.abs(sweep[0] - sweep[-1]).max()) > 1e-2  # the strength matters
    with pytest.raises(ValueError, match="1-D"):
        steering.strength_sweep(model, variables, tokens, vecs, jnp.ones((2, 2)))
