"""Transcoders vs SAEs at tiny settings: PLACEHOLDER (measured numbers below)."""

import json
import os

import numpy as np
import pytest

from configs import transcoders_vs_saes
from experiments.transcoders_vs_saes import check_config, run_experiment

SEEDS = (0, 1, 2)


def tiny_config():
    c = transcoders_vs_saes.get_config()
    lm = c.lm
    lm.num_train_steps = 200
    lm.checkpoint_every_steps = lm.eval_every_steps = 200
    lm.eval_batches = 1
    lm.log_every_steps = 200
    lm.data.builder_kwargs.num_train = 2048
    lm.data.builder_kwargs.num_test = 64
    lm.model.d_model, lm.model.d_mlp, lm.model.n_heads = 32, 64, 2
    c.widths, c.ks, c.seeds = (128,), (4,), SEEDS
    c.train.num_steps, c.train.batch_size, c.train.log_every = 150, 256, 50
    c.train.resample_every, c.train.resample_until, c.train.dead_after_steps = 50, 100, 25
    c.train.checkpoint_every = 0
    c.model_batch_size, c.eval_batch_size = 8, 64
    c.circuit.d_sae, c.circuit.k, c.circuit.top_k = 128, 4, 5
    c.verbose = False
    return c


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("transcoders_vs_saes"))
    out = run_experiment(tiny_config(), workdir)
    for name in ("frontier.png", "connections.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == out
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_transcoders_are_on_par_with_saes(summary, seed):
    diffs = [d for d in summary["tc_minus_sae"] if d["seed"] == seed]
    assert len(diffs) == 2, diffs  # layers 0 and 1
    for d in diffs:
        assert d["loss_recovered_tc_minus_sae"] > -0.1, d


@pytest.mark.parametrize("seed", SEEDS)
def test_input_invariant_connections_predict_the_attributions(summary, seed):
    circuit = next(c for c in summary["circuits"] if c["seed"] == seed)
    a = circuit["agreement"]
    assert a["spearman"] > 0.3, a
    assert a["top_k_overlap"] > circuit["chance_top_k_overlap"], a
    assert np.isfinite(circuit["direct_path_share"])


def test_bad_config_values_are_errors_naming_them():
    c = tiny_config()
    c.circuit.k = 16
    with pytest.raises(ValueError, match=r"circuit.k=16 in ks \[4\]"):
        check_config(c)
    c = tiny_config()
    c.layers = (0, 2)
    with pytest.raises(ValueError, match=r"config.layers has \[2\]"):
        check_config(c)
