"""LoFiT against hand-written interventions and NumPy: stage 1's `(1 + A) * z` is `ji.Scale` on
each layer's hook_z, stage 2's `z + v` is `ji.Add` of v placed at the chosen heads (zeros
elsewhere, built with NumPy); the L1 term reaches the train step's loss as
`l1 * sum |A|` (the authors' `l1_lambda * sum(|p|)`); the head selection ranks heads by
`||A||_2` on a planted example. Training through `jaxinterp.train.train` is in
tests/experiments/test_lofit_vs_lora.py."""

import flax.linen as nn
import jax
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp import tuning
from jaxinterp.models.transformer import Transformer, TransformerConfig
from jaxinterp.train import step as step_lib
from jaxinterp.tuning import lofit


@pytest.fixture(scope="module")
def base():
    model = Transformer(TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8,
                                          d_vocab=24, n_ctx=9, attn_only=True))
    tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, 24)
    variables = nn.meta.unbox(model.init(jax.random.key(0), tokens[:, :-1]))
    variables.pop("hooks", None)
    return model, variables, tokens


def _tuned(base, method):
    model, variables, tokens = base
    tuned = tuning.Tuned(model, method)
    v = nn.meta.unbox(tuned.init(jax.random.key(2), tokens[:, :-1]))
    return tuned, tuning.with_frozen(v, variables)


def test_scaling_is_scale_of_one_plus_a_on_hook_z(base):
    model, variables, tokens = base
    tuned, v = _tuned(base, tuning.LoFiTScaling(l1=1e-3))
    a = v["params"]["method"]
    assert sorted(a) == ["A_0", "A_1"] and a["A_0"].shape == (2, 8)
    assert 1e-4 < float(np.std(a["A_0"])) < 1e-2  # N(0, 1e-3)
    a = {k: 0.5 * jax.random.normal(jax.random.key(i), x.shape) for i, (k, x) in
         enumerate(a.items())}
    x = tokens[:, :-1]
    got = tuned.apply({**v, "params": {"method": a}}, x)
    by_hand = [ji.Scale(f"blocks.{layer}.attn.hook_z", 1.0 + np.asarray(a[f"A_{layer}"]))
               for layer in range(2)]
    want = ji.run(model, variables, x, interventions=by_hand)[0]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
    # and that is (1 + A) * z on the site: layer 0's hook_z against the clean run's
    _, clean = ji.run(model, variables, x, capture="blocks.0.attn.hook_z")
    _, scaled = ji.run(model, variables, x, capture="blocks.0.attn.hook_z",
                       interventions=by_hand[:1])
    np.testing.assert_allclose(np.asarray(scaled["blocks.0.attn.hook_z"]),
                               (1 + np.asarray(a["A_0"])) * np.asarray(
                                   clean["blocks.0.attn.hook_z"]), rtol=1e-6)


def test_bias_is_add_at_the_chosen_heads(base):
    model, variables, tokens = base
    heads = ((1, 1), (0, 0), (1, 0))
    tuned, v = _tuned(base, tuning.LoFiTBias(heads=heads))
    p = v["params"]["method"]
    assert {k: x.shape for k, x in p.items()} == {"v_0": (1, 8), "v_1": (2, 8)}
    p = {k: jax.random.normal(jax.random.key(7 + i), x.shape) for i, (k, x) in
         enumerate(sorted(p.items()))}
    x = tokens[:, :-1]
    got = tuned.apply({**v, "params": {"method": p}}, x)
    full = {layer: np.zeros((2, 8), np.float32) for layer in (0, 1)}
    full[0][0] = p["v_0"][0]
    full[1][1], full[1][0] = p["v_1"][0], p["v_1"][1]  # rows in the order given: heads 1, 0
    want = ji.run(model, variables, x, interventions=[
        ji.Add(f"blocks.{layer}.attn.hook_z", full[layer]) for layer in (0, 1)])[0]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)


def test_l1_penalty_is_added_to_the_train_steps_loss(base):
    _, _, tokens = base
    tuned, v = _tuned(base, tuning.LoFiTScaling(l1=0.01))
    a = {k: 0.3 * jax.random.normal(jax.random.key(i), x.shape) for i, (k, x) in
         enumerate(sorted(v["params"]["method"].items()))}
    params = {"method": a}
    state = {"frozen": v["frozen"]}
    loss, (metrics, new_state, _) = step_lib.loss_fn(params, {"tokens": tokens}, tuned,
                                                     model_state=state, train=True)
    l1 = 0.01 * sum(np.abs(np.asarray(x, np.float64)).sum() for x in a.values())
    np.testing.assert_allclose(float(metrics["penalty"]), l1, rtol=1e-5)
    np.testing.assert_allclose(float(loss), float(metrics["loss"]) + l1, rtol=1e-6)
    assert set(new_state) == {"frozen"}  # the penalty is not kept in the state
    assert lofit.LOSSES == step_lib.LOSSES
    tuned0 = tuning.Tuned(tuned.base, tuning.LoFiTScaling(l1=0.0))
    _, (metrics0, _, _) = step_lib.loss_fn(params, {"tokens": tokens}, tuned0,
                                           model_state=state)
    assert "penalty" not in metrics0  # nothing sown: the loss is the task's alone


def test_select_heads_on_planted_norms():
    a0 = np.zeros((3, 4))
    a1 = np.zeros((3, 4))
    a0[2] = [0, 3, 0, 4]  # norm 5
    a1[0] = [1, 0, 0, 0]  # norm 1
    a1[1] = [0, 0, -2, 0]  # norm 2
    a0[0] = [0, 0, 0, 2]  # norm 2: ties with (1, 1), lower layer first
    variables = {"params": {"method": {"A_0": a0, "A_1": a1}}, "frozen": {}}
    assert tuning.select_heads(variables, 1) == ((0, 2),)
    assert tuning.select_heads(variables["params"], 4) == ((0, 2), (0, 0), (1, 1), (1, 0))
    np.testing.assert_allclose(lofit.head_norms(variables)[1], [1, 2, 0])
    with pytest.raises(ValueError, match="k=7"):
        tuning.select_heads(variables, 7)
    with pytest.raises(ValueError, match="no LoFiT scalings"):
        tuning.select_heads({"params": {"v_0": a0}}, 1)


def test_config_round_trip_and_errors(base):
    m = tuning.make_method({"name": "lofit_bias", "heads": [[0, 1], [1, 0]]})  # as from JSON
    assert isinstance(m, tuning.LoFiTBias)
    _tuned(base, m)
    with pytest.raises(ValueError, match=r"layer 0 has heads 0\.\.1"):
        _tuned(base, tuning.LoFiTBias(heads=((0, 5),)))
    with pytest.raises(ValueError, match="listed twice"):
        _tuned(base, tuning.LoFiTBias(heads=((0, 1), (0, 1))))
    with pytest.raises(ValueError, match="needs `heads`"):
        _tuned(base, tuning.LoFiTBias())
    with pytest.raises(ValueError, match="out of range"):
        _tuned(base, tuning.LoFiTScaling(layers=(2,)))
