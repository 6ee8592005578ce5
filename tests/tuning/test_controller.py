"""The weighted steering controller against a hand-written JAX version of its equation, and
trained through `jaxinterp.train.train` on a frozen base model."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp import tuning
from jaxinterp.train.loss import cross_entropy
from jaxinterp.train.metrics import read_jsonl
from tests.helpers.tiny_models import assert_close, tiny
from tests.helpers.tiny_train_config import tiny_config

SITES = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")


def _by_hand(model, variables, tokens, params, vectors, c, input_site, positions):
    """Guiding Giants' equation written out: a = h_in[-1]; [s, z] = W2 relu(W1 a + b1) + b2;
    each example run alone with h_l += c * s * sigmoid(z_l) * v_l at every steered site."""
    a = ji.run(model, variables, tokens, capture=input_site)[1][input_site][:, -1]
    p1, p2 = params["fc1"], params["fc2"]
    out = jnp.maximum(a @ p1["kernel"] + p1["bias"], 0.0) @ p2["kernel"] + p2["bias"]
    s, z = out[:, 0], out[:, 1:]
    rows = []
    for b in range(tokens.shape[0]):
        adds = [ji.Add(site, vectors[i], scale=c * s[b] * jax.nn.sigmoid(z[b, i]),
                       positions=positions) for i, site in enumerate(SITES)]
        rows.append(ji.run(model, variables, tokens[b:b + 1], interventions=adds)[0][0])
    return jnp.stack(rows)


@pytest.mark.parametrize("shared", [False, True])
def test_controller_matches_the_equation_by_hand(tmp_path, shared):
    model, variables, tokens = tiny()
    variables = nn.meta.unbox(variables)
    d = model.config.d_model
    vectors = np.random.default_rng(0).normal(size=(2, d)).astype(np.float32)
    if shared:  # one vector for every layer (the paper's single refusal direction)
        vectors = vectors[:1]
    path = str(tmp_path / "vectors.npy")
    np.save(path, vectors[0] if shared else vectors)
    cfg = {"name": "steering_controller", "vectors": path, "hidden": 8, "patch_scale": 1.5,
           "input_site": "blocks.0.hook_resid_mid", "positions": (3, -1) if shared else ()}
    tuned = tuning.Tuned(model, tuning.make_method(cfg))
    tv = tuning.with_frozen(tuned.init(jax.random.key(0), tokens), variables)
    params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(1), x.shape),
                          tv["params"])  # fc2 starts at zero: move it off
    got = tuned.apply({**tv, "params": params}, tokens)
    want = _by_hand(model, variables, tokens, params["method"],
                    np.broadcast_to(vectors, (2, d)), 1.5, "blocks.0.hook_resid_mid",
                    [3, -1] if shared else None)
    assert_close(got, want, rtol=1e-4)
    plain = ji.run(model, variables, tokens)[0]
    assert_close(tuned.apply(tv, tokens), plain)  # zero-initialised fc2: s = 0, no steering
    assert float(jnp.abs(got - plain).max()) > 1e-2


def test_controller_errors(tmp_path):
    model, _, tokens = tiny()
    path = str(tmp_path / "three.npy")
    np.save(path, np.zeros((3, model.config.d_model), np.float32))
    tuned = tuning.Tuned(model, tuning.make_method({"name": "steering_controller",
                                                    "vectors": path}))
    with pytest.raises(ValueError, match="3 vectors for the 2 sites"):
        tuned.init(jax.random.key(0), tokens)
    missing = tuning.Tuned(model, tuning.make_method({"name": "steering_controller",
                                                      "vectors": str(tmp_path / "no.npy")}))
    with pytest.raises(ValueError, match=r"not an \.npy file"):
        missing.init(jax.random.key(0), tokens)


def test_controller_trains_through_the_trainer_on_a_frozen_model(tmp_path):
    data_dir = str(tmp_path / "data")
    base_dir = str(tmp_path / "base")
    ji.train.train(tiny_config(data__data_dir=data_dir, num_train_steps=10,
                               checkpoint_every_steps=10), base_dir)
    base_model, base_vars = ji.train.load(base_dir)
    # Tuning data the base model was not trained on: tokens < 8 only (the base spreads its
    # predictions over 16), so steering towards those tokens lowers the loss (by <= ln 2).
    tune_kwargs = {"data__builder_kwargs__vocab_size": 8}
    src = ji.data.load_source("induction", "train", data_dir, **dict(
        tiny_config(**tune_kwargs).data.builder_kwargs))
    batch = jnp.asarray(np.stack([src[i]["tokens"] for i in range(64)]))

    def loss(vectors):  # next-token loss with vectors[l] added at layer l
        adds = [ji.Add(site, vectors[i]) for i, site in enumerate(SITES)]
        logits = ji.run(base_model, base_vars, batch[:, :-1], interventions=adds)[0]
        return cross_entropy(logits, batch[:, 1:])[0]

    grad = jax.grad(loss)(jnp.zeros((2, base_model.config.d_model)))
    path = str(tmp_path / "vectors.npy")  # the steepest-descent direction at each layer
    np.save(path, np.asarray(-grad / jnp.linalg.norm(grad, axis=-1, keepdims=True)))
    config = tiny_config(data__data_dir=data_dir, num_train_steps=12, checkpoint_every_steps=12,
                         eval_every_steps=12, optimizer__learning_rate=3e-2, **tune_kwargs)
    config.tuning.base = base_dir
    config.tuning.method = {"name": "steering_controller", "vectors": path, "hidden": 8}
    workdir = str(tmp_path / "controller")
    result = ji.train.train(config, workdir)
    tuned, variables = ji.train.load(workdir)
    assert isinstance(tuned.method, tuning.SteeringController)
    assert sorted(variables["params"]["method"]) == ["fc1", "fc2"]
    frozen = variables[tuning.FROZEN]["variables"]
    jax.tree.map(np.testing.assert_array_equal, frozen["params"], base_vars["params"])
    fc2 = variables["params"]["method"]["fc2"]["kernel"]
    assert float(jnp.abs(fc2).max()) > 0  # the controller moved off "no steering"
    losses = [r["eval/loss"] for r in read_jsonl(workdir) if "eval/loss" in r]
    assert len(losses) == 2 and losses[-1] < losses[0], losses  # steps 0 and 12
    assert result.state.step == 12
