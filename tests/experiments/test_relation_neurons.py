"""Relation-specific neurons at tiny settings, on three independently trained base models
(seeds 0, 1, 2: `tiny_base`, shared with tests/experiments/test_localize_edit.py): clamping one
relation's top-AP neurons (96 of 192) to zero drops that relation's accuracy on held-out
subjects' facts by more than 10 points, by more than as many random neurons do, and by more
than the other relations move.

Tiny settings: a 16-subject, 4-relation world (every subject two pieces out of 8, closed-book
only; see tests/helpers/tiny_factual_base.py for why), a 3-layer transformer (d_model 32, one
head, d_mlp 64: 192 neurons) trained by `jaxinterp.train.train` for 500 steps per seed (clean
accuracy 1.0). 8 test subjects: one fact is 12.5 points of a relation's accuracy.

Measured (bases 0 / 1 / 2; mean over the 4 relations; the tests' XLA flags): k = 96:
own-relation drop 0.19 / 0.16 / 0.19, the other relations' mean |change| 0.12 / 0.04 / 0.04,
96 random neurons 0.05 / 0.02 / 0.03; k = 64: own 0.19 / 0.13 / 0.09, others 0.02 / 0.01 /
0.01. The margins are small and the trained bases depend on float rounding: with 300 steps,
base 1 gave 0.22 at XLA's default backend level and 0.09 at the tests' O0. The issue's
"every other relation within 5 points" is not asserted here (0.12 on base 0): it holds on the
default config (48 subjects, 512 neurons; configs/relation_neurons.py), 3 / 3 seeds.

Tried before this base (one-piece and two-piece subjects mixed, 12 pieces, 300 steps): on
independent bases, k = 32 / 64 / 96 / 128, own drop 0.16-0.22 (base 0), 0-0.03 (base 1:
the facts were not in the MLPs), 0.03-0.22 (base 2). Shared attribute values across relations
(`typed_attributes=False`, 8 values): the facts are in the MLPs on every base (own drop
0.25-0.38 at k = 64) but the neurons are shared (others move 0.14-0.21).
"""

import json
import os

import pytest

from configs import relation_neurons
from experiments.relation_neurons import run_experiment
from tests.helpers.tiny_factual_base import base_workdir, tiny_base

SEEDS = (0, 1, 2)
K = 96  # neurons clamped per relation, of 192


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    config = relation_neurons.get_config()
    config.base = tiny_base()
    config.update(dict(seeds=SEEDS, share_base=False, ks=(K,), n_random=4,
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
    r = s["by_k"][str(K)]
    own = r["own_drop"]
    assert r["mean_own_drop"] > 0.1, own
    assert r["mean_own_drop"] > r["random_mean_drop"] + 0.05, (own, r["random_mean_drop"])
    assert r["mean_own_drop"] > r["mean_abs_other_change"] + 0.05, r["delta_accuracy"]
