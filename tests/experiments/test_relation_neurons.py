"""Relation-specific neurons at tiny settings: clamping one relation's top-AP neurons (64 of
192) to zero drops that relation's accuracy on held-out subjects' facts, by more than as many
random neurons do and by more than the other relations move (which move by at most 5 points
on average; one held-out fact is 12.5 points here, so the issue's "every other relation within
5 points" is checked on the default config, not at this size).

Tiny settings (`tiny_base`, shared with tests/experiments/test_localize_edit.py: the first of
the two to run trains it): a 16-subject, 4-relation world (closed-book only), a 3-layer
transformer (d_model 32, one head, d_mlp 64: 192 neurons) trained by `jaxinterp.train.train`
for 300 steps (it memorises the table). ONE base model: the CPU budget of the suite allows one
training run, so the three seeds (0, 1, 2) here are seeds of the analysis (which subjects
identify the neurons and which test them, the random-control draws) on the base model of seed
0 (`share_base`); the default config trains one model per seed.

Measured (seeds 0 / 1 / 2, k = 64): mean own-relation drop 19 / 12.5 / 25 points, mean |change|
of the other relations 1.0 / 0.0 / 1.0 points (one fact of 8 at most), 64 random neurons 0 /
0.8 / 0 points. The three test files of this change (with tests/analysis/test_editing.py and
tests/experiments/test_localize_edit.py) took 85 s user + 7 s sys together (one training run
of ~25 s CPU on the 8 test devices), over the 20 s budget.

NOT robust across base models at this size (measured 2026-12-02, `share_base=False`, one
tiny base per seed, k = 32 / 64 / 96 / 128 of 192 neurons, mean own-relation drop): base seed
0: 0.16 / 0.19 / 0.19 / 0.22 (random 0-0.06); base seed 1: 0 / 0 / 0.03 / 0.03 (clamping even
two thirds of the neurons changes no fact: the facts are not held by a few MLP neurons); base
seed 2: 0.03 / 0.09 / 0.19 / 0.22 (random 0.02-0.11). The default config (2 layers, d_mlp 256,
its own base per seed) reproduces on 3/3 seeds; a tiny base that does so on three
independently trained models is owed.
"""

import json
import os

import pytest

from configs import relation_neurons
from experiments.relation_neurons import run_experiment
from tests.helpers.tiny_factual_base import base_workdir, tiny_base

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    config = relation_neurons.get_config()
    config.base = tiny_base()
    config.update(dict(seeds=SEEDS, share_base=True, ks=(64,), n_random=4,
                       base_workdir=base_workdir(tmp_path_factory)))
    workdir = str(tmp_path_factory.mktemp("relation_neurons"))
    out = run_experiment(config, workdir)
    for name in ("accuracy_matrix.png", "layers.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == out
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_clamping_a_relations_neurons_drops_it_only(summary, seed):
    s = summary["per_seed"][SEEDS.index(seed)]
    assert min(s["clean_accuracy"]) >= 0.9, s["clean_accuracy"]  # the table is memorised
    r = s["by_k"]["64"]
    own = r["own_drop"]
    assert r["mean_own_drop"] > 0.1, own
    assert r["mean_own_drop"] > r["random_mean_drop"] + 0.05, (own, r["random_mean_drop"])
    assert r["mean_abs_other_change"] <= 0.05, r["delta_accuracy"]
    assert r["mean_own_drop"] > r["mean_abs_other_change"] + 0.05, r["delta_accuracy"]
