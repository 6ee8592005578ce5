"""KAN and KAT end to end at tiny settings, one run with seeds 0, 1, 2 vmapped (each assertion
per seed): KAT's initialisation (identity / swish rationals) beats random rationals on digits;
every basis (and the mix and both MLPs) is reported for every function, with a status, and
lowers its train RMSE; on pykan's exp(sin(pi x) + y^2) the B-spline KAN and the mix beat their
parameter-matched MLPs; B-spline grid extension ends below the coarse grid alone; a B-spline KAN
step is slower than the parameter-matched MLP's."""

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
    "kat.vit": False, "kat.model.n_layers": 1, "kat.steps": 60, "kat.eval_every": 60,
    "fit.functions": FUNCS, "fit.n_train": 128, "fit.n_test": 128, "fit.steps": 200,
    "fit.eval_every": 200, "fit.grid_update_every": 0,
    "grid.grids": (3, 10), "grid.steps_per_grid": 300, "grid.eval_every": 300,
    "grid.n_train": 128, "grid.n_test": 128, "grid.grid_update_every": 0,
    # the default batch (256): at batch 64 both steps are dispatch-bound (~1.3 ms; KAN / MLP
    # measured 0.91 once)
    "speed.models": ("kan_bspline", "mlp"), "speed.repeats": 5, "speed.steps_per_repeat": 5,
}


def tiny_config():
    config = kan_kat.get_config()
    config.update_from_flattened_dict(TINY)  # dotted keys, e.g. 'data.d'
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
    assert paper > 0.5
    assert "vit" not in kat  # left out here (time); the ViT / KAT order is not asserted


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


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_kans_beat_the_matched_mlp_on_pykans_formula(run, seed):
    # exp(sin(pi x) + y^2), the formula of pykan's hellokan: the B-spline KAN ends with a lower
    # test RMSE than the MLP of the same parameter count, and the mix than its MLP.
    r = run[1]["fit"]["test_rmse"]["exp(sin(pi x)+y^2)"]
    # Holds for every basis at the default config; at these settings Chebyshev (seed 0: 1.10
    # against the MLP's 0.86) and Fourier are not converged, so only B-spline and the mix.
    assert r["bspline"]["test_rmse"][seed] < r["mlp"]["test_rmse"][seed], r
    assert r["mix"]["test_rmse"][seed] < r["mlp_large"]["test_rmse"][seed], r


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
