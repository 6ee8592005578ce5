"""Localisation vs editing at tiny settings, on three independently trained base models (seeds
0, 1, 2: `tiny_base`, shared with tests/experiments/test_relation_neurons.py and trained once
per test session by whichever of the two runs first on a worker).

What is asserted is what holds at this size (Hase et al.'s finding, layer >> tracing, does not:
see configs/localize_edit.py): the rank-one edit at the relation token works (mean rewrite
score at the best layer > 0.5), the fine-tuning edit works at every layer, and neither the
tracing effect nor the layer explains most of the variance of the ROME rewrite score
(R^2 < 0.5), with `both` at least as good as either (nested least squares).

Measured (bases 0 / 1 / 2): ROME mean rewrite score by layer 0.61 0.57 0.68 / 0.58 0.38 0.62
/ 0.84 0.83 0.89; fine-tuning 0.67-0.91 at every layer; MLP tracing effect by layer 0.24 0.15
0.06 / 0.09 0.06 0.10 / 0.06 0.27 0.29 (where the facts are traced differs from base to
base: the previous version of this test asserted "falls with depth", true of one shared base
only); R^2 tracing 0.074 / 0.038 / 0.016, layer 0.011 / 0.074 / 0.012, both 0.081 / 0.131 /
0.043.
"""

import json
import os

import pytest

from configs import localize_edit
from experiments.localize_edit import r_squared, run_experiment
from tests.helpers.tiny_factual_base import base_workdir, tiny_base

SEEDS = (0, 1, 2)


def test_r_squared_matches_numpy():
    import numpy as np
    rng = np.random.default_rng(0)
    x = np.stack([np.ones(30), rng.normal(size=30)], 1)
    y = 2 * x[:, 1] + rng.normal(size=30)
    r = np.corrcoef(x[:, 1], y)[0, 1]
    assert abs(r_squared(y, x) - r ** 2) < 1e-9  # one predictor + intercept: R^2 = r^2


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    config = localize_edit.get_config()
    config.base = tiny_base()
    config.update(dict(seeds=SEEDS, share_base=False, n_facts=12, trace_samples=3,
                       base_workdir=base_workdir(tmp_path_factory)))
    config.rome.steps = config.finetune.steps = 10
    workdir = str(tmp_path_factory.mktemp("localize_edit"))
    out = run_experiment(config, workdir)
    for name in ("scatter.png", "r2.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == out
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_edits_and_their_predictors(summary, seed):
    s = summary["per_seed"][SEEDS.index(seed)]
    rome, ft = s["rome"], s["finetune"]
    assert max(rome["mean_score_by_layer"]) > 0.5, rome["mean_score_by_layer"]
    assert min(ft["mean_score_by_layer"]) > 0.5, ft["mean_score_by_layer"]
    r2 = rome["r2"]
    assert r2["tracing"] < 0.5 and r2["layer"] < 0.5, r2
    assert r2["both"] >= max(r2["tracing"], r2["layer"]) - 1e-6, r2
