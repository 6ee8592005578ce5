"""DAS and Boundless DAS against NumPy transcriptions of pyvene's interventions, on a tiny
transformer; the `interchange` task; interchange accuracy."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp import tuning
from jaxinterp.data.planted_sum import PlantedSumConfig, planted_sum_labels
from jaxinterp.train.tasks import Interchange, make_task
from jaxinterp.tuning.das import STEP_COLLECTION, boundary_mask, boundary_size
from tests.helpers.numpy_linalg import gram_schmidt

SITE = "blocks.0.hook_resid_mid"


@pytest.fixture(scope="module")
def base():
    model = ji.models.build("gpt2_small", n_layers=1, d_model=16, n_heads=2, d_head=8,
                            d_mlp=32, d_vocab=11, n_ctx=4)
    rng = np.random.default_rng(0)
    base_tokens = rng.integers(0, 11, (3, 4)).astype(np.int32)
    source_tokens = rng.integers(0, 11, (3, 4)).astype(np.int32)
    variables = model.init(jax.random.key(1), base_tokens)
    variables = {"params": nn.meta.unbox(variables["params"])}
    return model, variables, base_tokens, source_tokens



def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def numpy_interchange(model, variables, base_tokens, source_tokens, rotation, mask, positions):
    """pyvene's forward in NumPy: rotate base and source (x @ W, W = R^T), mix the rotated
    coordinates `(1 - mask) * base + mask * source`, rotate back (@ W^T) and add what the
    rotation does not span (for a full rotation: nothing); then the rest of the model."""
    _, cb = ji.run(model, variables, base_tokens, capture=SITE)
    _, cs = ji.run(model, variables, source_tokens, capture=SITE)
    hb, hs = np.asarray(cb[SITE], np.float64), np.asarray(cs[SITE], np.float64)
    w = rotation.T  # [d, k]
    new = hb.copy()
    for t in positions:
        rb, rs = hb[:, t] @ w, hs[:, t] @ w
        mixed = (1 - mask) * rb + mask * rs
        new[:, t] = hb[:, t] - rb @ w.T + mixed @ w.T
    out, _ = ji.run(model, variables, base_tokens,
                    interventions=[ji.Patch(SITE, jnp.asarray(new, jnp.float32))])
    return np.asarray(out)


def random_params(v, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), v["params"])


def test_das_matches_numpy(base):
    model, variables, b, s = base
    tuned = tuning.Tuned(model, tuning.DAS(site=SITE, subspace_dim=3, positions=(1, -1)))
    v = tuning.with_frozen(tuned.init(jax.random.key(2), b, s), variables)
    params = random_params(v, 3)
    out = np.asarray(tuned.apply({**v, "params": params}, b, s))
    r = gram_schmidt(params["method"]["rotation"])
    want = numpy_interchange(model, variables, b, s, r, np.ones(3), (1, 3))
    np.testing.assert_allclose(out, want, atol=2e-4, rtol=2e-4)
    # The full subspace at every position is the source run; an empty change is the base.
    full = tuning.Tuned(model, tuning.DAS(site=SITE, subspace_dim=16))
    fv = tuning.with_frozen(full.init(jax.random.key(4), b, s), variables)
    np.testing.assert_allclose(np.asarray(full.apply(fv, b, s)),
                               np.asarray(model.apply(variables, s)), atol=2e-4)
    np.testing.assert_allclose(np.asarray(full.apply(fv, b, b)),
                               np.asarray(model.apply(variables, b)), atol=2e-4)


def test_boundless_das_matches_numpy(base):
    model, variables, b, s = base
    method = tuning.BoundlessDAS(site=SITE, positions=(2,), temperature_start=4.0,
                                 temperature_end=0.5, anneal_steps=4)
    tuned = tuning.Tuned(model, method)
    v = tuning.with_frozen(tuned.init(jax.random.key(2), b, s), variables)
    assert v[STEP_COLLECTION]["method"]["step"] == 0
    params = random_params(v, 5)
    params["method"]["boundary"] = jnp.asarray([0.4])
    r = gram_schmidt(params["method"]["rotation"])
    v = {**v, "params": params}
    for step, temp in ((0, 4.0), (2, 2.25), (9, 0.5)):  # linear over 4 steps, then flat
        state = {**v, STEP_COLLECTION: {"method": {"step": jnp.asarray(step, jnp.int32)}}}
        out, new = tuned.apply(state, b, s, mutable=[STEP_COLLECTION])
        assert int(new[STEP_COLLECTION]["method"]["step"]) == step + 1  # trained: counted
        i = np.arange(16)
        mask = sigmoid((i - 0.0) / temp) * sigmoid((0.4 * 16 - i) / temp)  # pyvene
        np.testing.assert_allclose(np.asarray(boundary_mask(jnp.asarray([0.4]), 16, temp)),
                                   mask, atol=1e-6)
        want = numpy_interchange(model, variables, b, s, r, mask, (2,))
        np.testing.assert_allclose(np.asarray(out), want, atol=2e-4, rtol=2e-4)
    assert tuned.apply(v, b, s).shape == out.shape  # eval: not mutable, no count
    assert boundary_size(np.asarray([0.4]), 16) == pytest.approx(6.4)
    assert boundary_size(np.asarray([1.7]), 16) == 16.0  # clipped to [1e-3, 1]


def test_interchange_task_and_accuracy(base):
    model, variables, b, s = base
    task = make_task({"name": "interchange", "base_feature": "x", "source_feature": "y",
                      "label_feature": "z", "position": -1})
    assert isinstance(task, Interchange) and task.features == ("x", "y", "z")
    labels = np.array([1, 2, 3], np.int32)
    element = {"x": b, "y": s, "z": labels}
    task.check(element, "d")
    with pytest.raises(ValueError, match="must be equal"):
        task.check({**element, "y": s[:, :3]}, "d")
    with pytest.raises(ValueError, match="one int per example"):
        task.check({**element, "z": labels[:, None]}, "d")
    split = task.split({k: jnp.asarray(x) for k, x in element.items()}, jax.random.key(0))
    assert len(split.inputs) == 2
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 11)), jnp.float32)
    loss, metrics = task.loss(logits, split)
    assert float(metrics["weight"]) == 3
    lse = jax.nn.logsumexp(logits[:, -1], -1)
    want = np.mean(np.asarray(lse - logits[jnp.arange(3), -1, labels]))
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    with pytest.raises(ValueError, match="position=5"):
        Interchange(position=5).check_output(jax.ShapeDtypeStruct((3, 4, 11), jnp.float32),
                                             split, None)

    tuned = tuning.Tuned(model, tuning.make_method(
        {"name": "das", "site": SITE, "subspace_dim": 2, "positions": [-1]}))
    v = tuning.with_frozen(tuned.init(jax.random.key(0), b, s), variables)
    pred = np.asarray(tuned.apply(v, b, s))[:, -1].argmax(-1)
    labels = pred.copy()
    labels[0] = (labels[0] + 1) % 11
    assert tuning.interchange_accuracy(tuned, v, b, s, labels) == pytest.approx(2 / 3)
    assert tuning.interchange_accuracy(tuned, v, b, s, labels, batch_size=2) == \
        pytest.approx(2 / 3)


def test_planted_sum_labels():
    base = np.array([[1, 2, 3], [0, 4, 1]])
    source = np.array([[3, 3, 2], [1, 0, 4]])
    labels = planted_sum_labels(base, source)
    np.testing.assert_array_equal(labels["target"], [9, 4])  # (a + b) * c
    np.testing.assert_array_equal(labels["source_target"], [12, 4])
    np.testing.assert_array_equal(labels["counterfactual"], [18, 1])  # (a' + b') * c
    assert PlantedSumConfig(name="x", num_values=5).vocab_size == 8 * 4 + 1
