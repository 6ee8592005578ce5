"""Reading vectors (RepE), probe-chosen sites, per-site strength sweeps and latent-subspace
steering against NumPy and against loops of single `ji.run` calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.analysis import steering
from tests.helpers.tiny_models import assert_close, tiny


def _repe_numpy(pos, neg, k):
    """RepE's reading vectors in NumPy: SVD of the differences, each component signed by the
    majority vote of the pairs (the positive member projects higher)."""
    diffs = pos - neg
    _, _, vt = np.linalg.svd(diffs, full_matrices=False)
    out = []
    for v in vt[:k]:
        higher = sum(float(p @ v) > float(n @ v) for p, n in zip(pos, neg, strict=True))
        lower = sum(float(p @ v) < float(n @ v) for p, n in zip(pos, neg, strict=True))
        out.append(v if higher >= lower else -v)
    return np.stack(out)


def test_reading_vectors_match_numpy_pca_with_repe_signs():
    rng = np.random.default_rng(0)
    d, n = 12, 30
    planted = np.linalg.qr(rng.normal(size=(d, 2)))[0].T  # two orthonormal concept directions
    neg = rng.normal(size=(n, d))
    pos = neg + 3.0 * planted[0] + rng.normal(size=(n, 1)) * 1.5 * planted[1] \
        + 0.05 * rng.normal(size=(n, d))
    got = np.asarray(steering.principal_directions(pos, neg, k=3))
    want = _repe_numpy(pos, neg, 3)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(got @ got.T, np.eye(3), atol=1e-5)
    assert got[0] @ planted[0] > 0.99  # the consistent shift comes first, positive side up
    assert (pos @ got[0] > neg @ got[0]).all()
    np.testing.assert_allclose(steering.principal_direction(pos, neg), got[0], atol=1e-6)
    with pytest.raises(ValueError, match="k=13"):
        steering.principal_directions(pos, neg, k=13)


def test_probe_picks_the_site_that_separates_the_classes():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 6)), rng.normal(size=(40, 6))
    a[:, 2] += 4.0
    acts = {"noise": (rng.normal(size=(40, 6)), rng.normal(size=(40, 6))), "signal": (a, b)}
    scores = steering.probe_sites(acts, steps=30)
    assert steering.best_site(scores) == "signal"
    assert scores["signal"] > 0.9 > scores["noise"]


@pytest.fixture(scope="module")
def model_vars():
    return tiny()


def test_contrastive_activations_and_reading_vectors_from_a_model(model_vars):
    model, variables, tokens = model_vars
    other = jax.random.randint(jax.random.key(5), tokens.shape, 0, model.config.d_vocab)
    acts = steering.contrastive_activations(model, variables, tokens, other,
                                            "blocks.*.hook_resid_post", position=-1)
    vecs = steering.steering_vectors(model, variables, tokens, other,
                                     "blocks.*.hook_resid_post", method="pca")
    for name, (a, b) in acts.items():
        want_a = ji.run(model, variables, tokens, capture=name)[1][name][:, -1]
        np.testing.assert_allclose(a, want_a, rtol=1e-6)
        np.testing.assert_allclose(vecs[name], _repe_numpy(np.asarray(a, np.float64),
                                                           np.asarray(b, np.float64), 1)[0],
                                   atol=1e-4)
    per_example = steering.contrastive_activations(model, variables, tokens, other,
                                                   "blocks.0.hook_resid_post", position=[2, 0, 9])
    a, b = per_example["blocks.0.hook_resid_post"]
    full_a = ji.run(model, variables, tokens, capture="blocks.0.hook_resid_post")[1]
    full_b = ji.run(model, variables, other, capture="blocks.0.hook_resid_post")[1]
    for i, p in enumerate([2, 0, 9]):
        np.testing.assert_allclose(a[i], full_a["blocks.0.hook_resid_post"][i, p], rtol=1e-6)
        np.testing.assert_allclose(b[i], full_b["blocks.0.hook_resid_post"][i, p], rtol=1e-6)
    with pytest.raises(ValueError, match="per-example positions"):
        steering.contrastive_activations(model, variables, tokens, other,
                                         "blocks.0.hook_resid_post", position=[1, 2])


def test_each_site_sweep_is_one_call_equal_to_the_loop(model_vars):
    model, variables, tokens = model_vars
    d = model.config.d_model
    v0, v1 = jax.random.normal(jax.random.key(2), (2, d))
    vecs = {"blocks.0.hook_resid_post": v0, "blocks.1.hook_resid_pre": v1}
    strengths = jnp.asarray([-2.0, 0.5, 3.0])
    last = lambda out: out[:, -1]
    sweep = steering.strength_sweep(model, variables, tokens, vecs, strengths, each_site=True,
                                    weights={"blocks.0.hook_resid_post": 2.0,
                                             "blocks.1.hook_resid_pre": 1.0},
                                    positions=[3, 9], metric=last)
    chunked = steering.strength_sweep(model, variables, tokens, vecs, strengths,
                                      each_site=True, weights={"blocks.0.hook_resid_post": 2.0,
                                                               "blocks.1.hook_resid_pre": 1.0},
                                      positions=[3, 9], metric=last, batch_size=4)
    assert sweep.shape == (2, 3, 3, model.config.d_vocab)
    for i, (site, v) in enumerate(vecs.items()):
        w = 2.0 if i == 0 else 1.0
        for j, s in enumerate(strengths):
            want = ji.run(model, variables, tokens, interventions=[
                ji.Add(site, v, scale=s * w, positions=[3, 9])])[0][:, -1]
            assert_close(sweep[i, j], want)
            assert_close(chunked[i, j], want)


def test_subspace_steering_matches_numpy_and_sweeps(model_vars):
    model, variables, tokens = model_vars
    d, site = model.config.d_model, "blocks.1.hook_resid_pre"
    basis = np.linalg.qr(np.random.default_rng(3).normal(size=(d, 2)))[0].T  # [2, d]
    target, shift = np.array([1.5, -2.0]), np.array([0.3, 0.7])
    h = np.asarray(ji.run(model, variables, tokens, capture=site)[1][site], np.float64)
    coords = h @ basis.T
    want_h = h + 0.5 * ((target - coords) + shift) @ basis  # strength 0.5, both moves
    iv = steering.subspace_steer(site, basis, set_to=target, shift=shift, strength=0.5)
    got_out, cache = ji.run(model, variables, tokens, interventions=[iv], capture=site)
    np.testing.assert_allclose(cache[site], want_h, rtol=1e-5, atol=1e-5)
    want_out = ji.run(model, variables, tokens,
                      interventions=[ji.Patch(site, jnp.asarray(want_h, jnp.float32))])[0]
    assert_close(got_out, want_out, rtol=1e-4)
    full = steering.subspace_steer(site, basis, set_to=target)  # strength 1: coords = target
    h1 = ji.run(model, variables, tokens, interventions=[full], capture=site)[1][site]
    np.testing.assert_allclose(np.asarray(h1) @ basis.T, np.broadcast_to(target, coords.shape),
                               atol=1e-4)
    strengths = jnp.asarray([0.0, 0.5, 1.0])
    sweep = steering.strength_sweep(
        model, variables, tokens,
        lambda s: [steering.subspace_steer(site, basis, set_to=target, strength=s)], strengths,
        metric=lambda out: out[:, -1])
    for j, s in enumerate(strengths):
        want = ji.run(model, variables, tokens, interventions=[
            steering.subspace_steer(site, basis, set_to=target, strength=s)])[0][:, -1]
        assert_close(sweep[j], want)
    with pytest.raises(ValueError, match="set_to and/or shift"):
        steering.subspace_steer(site, basis)
    with pytest.raises(ValueError, match="k = 2"):
        steering.subspace_steer(site, basis, shift=np.ones(3))
