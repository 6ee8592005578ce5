"""KAN and KAT end to end at tiny settings, one run with seeds 0, 1, 2 vmapped (each assertion
per seed): KAT's initialisation (identity / swish rationals) beats random rationals on digits;
every basis (and the mix and both MLPs) is reported for every function, with a status, and lowers
its train RMSE; B-spline grid extension ends below the coarse grid alone; a B-spline KAN step
is slower than the parameter-matched MLP's."""

import json
import os

import numpy as np
import pytest

from configs import kan_kat
from experiments.kan_kat import FIT_MODELS, run_experiment

SEEDS = (0, 1, 2)
FUNCS = ("exp(sin(pi x)+y^2)", "xy")
TINY = {
    "seeds": SEEDS,
    "kat.model.n_layers": 1, "kat.steps": 100, "kat.eval_every": 50,
    "fit.functions": FUNCS, "fit.n_train": 256, "fit.n_test": 256, "fit.steps": 300,
    "fit.eval_every": 100, "fit.grid_update_every": 0,
    "grid.grids": (3, 6), "grid.steps_per_grid": 150, "grid.eval_every": 50,
    "grid.n_train": 256, "grid.n_test": 256, "grid.grid_update_until": 100,
    "speed.models": ("kan_bspline", "mlp"), "speed.batch_size": 128, "speed.repeats": 3,
    "speed.steps_per_repeat": 3,
}


def tiny_config():
    config = kan_kat.get_config()
    for key, value in TINY.items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import tensorflow_datasets as tfds

    tfds.display_progress_bar(False)
    workdir = str(tmp_path_factory.mktemp("kan_kat"))
    return workdir, run_experiment(tiny_config(), workdir)


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_kat_init_beats_random_rationals(run, seed):
    kat = run[1]["kat"]
    paper, rand = kat["kat"]["test_acc_final"][seed], kat["kat_random_init"]["test_acc_final"][seed]
    assert paper > rand + 0.1, kat
    assert kat["vit"]["test_acc_final"][seed] > 0.5  # both models learn; no order asserted
    assert paper > 0.5
    # "the same size": within 1% of the ViT's parameters
    assert abs(kat["kat"]["params"] / kat["vit"]["params"] - 1) < 0.01


def test_every_model_reported_for_every_function(run):
    fit = run[1]["fit"]
    assert list(fit["test_rmse"]) == list(FUNCS)
    for name in FUNCS:
        assert list(fit["test_rmse"][name]) == list(FIT_MODELS)
        for r in fit["test_rmse"][name].values():
            assert r["status"] in ("ok", "nan", "diverged")
            assert len(r["test_rmse"]) == len(r["status_per_seed"]) == len(SEEDS)
    counts = fit["params_by_input_width"]["2"]
    single = np.mean([counts[b] for b in ("bspline", "rbf", "chebyshev", "fourier")])
    assert abs(counts["mlp"] / single - 1) < 0.1
    assert abs(counts["mlp_large"] / counts["mix"] - 1) < 0.1


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_every_model_fits(run, seed):
    # At these settings no model ends non-finite or above its initial train RMSE.
    for name in FUNCS:
        for model, r in run[1]["fit"]["test_rmse"][name].items():
            assert r["status_per_seed"][seed] == "ok", (name, model, r)


def test_mix_weights_are_a_distribution_per_edge(run):
    for name in FUNCS:
        edges = run[1]["fit"]["mix_weights"][name]["per_edge_seed0"]
        assert [np.shape(w) for w in edges] == [(2, 5, 4), (5, 1, 4)]
        for w in edges:
            np.testing.assert_allclose(np.sum(w, -1), 1.0, atol=1e-3)


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_grid_extension_lowers_the_loss(run, seed):
    grid = run[1]["grid"]
    first, last = grid["stages"][0], grid["stages"][-1]
    assert last["train_rmse"][seed] < first["train_rmse"][seed], grid
    assert last["train_rmse"][seed] < grid["fixed_coarse_grid"]["train_rmse"][seed], grid


def test_bspline_kan_step_is_slower_than_the_matched_mlp(run):
    speed = run[1]["speed"]
    m = speed["models"]
    assert abs(m["mlp"]["params"] / m["kan_bspline"]["params"] - 1) < 0.01
    assert speed["ratios"]["kan_bspline/mlp"] > 1.0, speed


def test_outputs_written(run):
    workdir, summary = run
    for name in ("kat.png", "fit_rmse.png", "mix_weights.png", "grid_extension.png",
                 "speed.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == summary
