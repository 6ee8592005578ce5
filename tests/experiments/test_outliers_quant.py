"""Outliers and W8A8 quantisation at tiny settings: 3 arms x seeds 0, 1, 2 trained in one
vmapped call (1 layer of width 32, 200 steps at lr 1e-2, batch 16). Each arm as trained (the
gated model plus the arm's interventions) equals the arm's own architecture (random weights).

What holds here, measured once before the assertions were written (seeds 0 / 1 / 2): the
maximum infinity norm is largest for vanilla softmax, 7.99 / 7.13 / 6.20, against clipped
softmax 5.56 / 5.02 / 4.26 and gated attention 4.87 / 5.29 / 5.28; W8A8 accuracy is within
0.01 of float for every arm. This is early training (masked-token accuracy 0.05-0.11, near
chance): the default config's signature, a residual outlier at BOS in one fixed feature in
the vanilla arm only, has not formed yet, and kurtosis does not order the arms, so neither is
asserted. Nor is the order robust to training longer at this learning rate: after 800 steps
one seed's gated run has a larger norm than its vanilla run (11.1 vs 10.2). The file takes
37 s of CPU time pinned to one core (`taskset -c 0`; shared machine, load ~20), over the
15 s budget: almost all compilation (the training call costs ~14 s at 10 steps as at 200; the
evaluation ~6 s; the equivalence test ~4-8 s).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from configs import outliers_quant
from experiments.outliers_quant import (
    ARMS,
    arm_args,
    arm_interventions,
    model_config,
    run_experiment,
)
from jaxinterp.models.transformer import Transformer

SEEDS = (0, 1, 2)
TINY = {
    "num_train_steps": 200, "batch_size": 16, "model.n_layers": 1, "model.d_mlp": 64,
    "model.d_model": 32, "model.d_head": 8, "model.n_ctx": 17, "data.half_len": 8,
    "data.min_half_len": 4, "data.num_train": 2000, "data.num_test": 64,
    "optimizer.learning_rate": 1e-2, "optimizer.warmup_steps": 20, "quant.calib_batches": 2,
    "massive_top_k": 0, "quant.low_act_bits": (),
}


def tiny_config(**overrides):
    config = outliers_quant.get_config()
    config.update_from_flattened_dict({**TINY, **overrides})  # dotted keys, e.g. 'data.d'
    config.seeds = SEEDS
    return config


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("outliers_quant"))
    out = run_experiment(tiny_config(), workdir)
    for name in ("outliers.png", "quantization.png", "training.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == out
    return out


def test_arms_as_trained_equal_their_own_architectures():
    config = tiny_config()
    tokens = jax.random.randint(jax.random.key(0), (2, 9), 0, 65)
    gated = Transformer(model_config(config))
    params = gated.init(jax.random.key(1), tokens)["params"]
    params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(2), x.shape),
                          params)  # biases and gates away from 0
    args = arm_args(config, list(ARMS))
    for i, arm in enumerate(ARMS):
        a = jax.tree.map(lambda x, i=i: x[i], args)
        as_trained, _ = ji.run(gated, {"params": params}, tokens,
                               interventions=arm_interventions(a))
        own = Transformer(model_config(config, arm)).apply({"params": params}, tokens)
        np.testing.assert_allclose(as_trained, own, rtol=1e-5, atol=1e-5, err_msg=arm)
    assert not np.allclose(own, Transformer(model_config(config, "vanilla")).apply(
        {"params": params}, tokens), atol=1e-3)  # the arms do differ
    assert jnp.asarray(args["gate_free"]).tolist() == [False, False, True]


@pytest.mark.parametrize("seed", SEEDS)
def test_vanilla_has_the_largest_inf_norm(summary, seed):
    i = SEEDS.index(seed)
    arms = {a: s["per_seed"][i] for a, s in summary["arms"].items()}
    print({a: round(s["max_inf_norm"], 2) for a, s in arms.items()})
    assert arms["vanilla"]["max_inf_norm"] > arms["clipped"]["max_inf_norm"], arms
    assert arms["vanilla"]["max_inf_norm"] > arms["gated"]["max_inf_norm"], arms


@pytest.mark.parametrize("seed", SEEDS)
def test_w8a8_stays_close_to_float(summary, seed):
    i = SEEDS.index(seed)
    for arm, s in summary["arms"].items():
        p = s["per_seed"][i]
        assert abs(p["fp_acc"] - p["w8a8_acc"]) < 0.05, (arm, p)
