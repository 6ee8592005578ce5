"""Mechanisms of factual recall at tiny settings, seeds 0, 1, 2 trained together (one
`train_vmapped` call): the direction of each measured effect on every seed.

Tiny settings: a world of 16 subjects (12 pieces; 8 of two pieces), 2 relations, 8 attributes
(4 per relation), counterfactuals in half the prompts followed 3 times in 4; 2048 training
prompts; a 2-layer transformer d_model 32 (2 heads of 16, MLP 64), 400 steps at lr 1e-2; 2
noise samples; scales (0, 1, 3).
"""

import json
import os

import numpy as np
import pytest

from configs import factual_recall
from experiments.factual_recall import run_experiment

SEEDS = (0, 1, 2)
TINY = {
    "trainer": "vmapped", "num_noise_samples": 2, "trace_sites": ("attn_out", "mlp_out"),
    "scales": (0.0, 1.0, 3.0),
    "base.num_train_steps": 400, "base.optimizer.learning_rate": 1e-2,
    "base.optimizer.warmup_steps": 20,
    "base.model.d_model": 32, "base.model.n_heads": 2, "base.model.d_head": 16,
    "base.model.d_mlp": 64,
}
WORLD = dict(n_subjects=16, n_subject_tokens=12, n_relations=2, n_attributes=8,
             num_train=2048, num_test=64, context_trust=0.75)


def tiny_config():
    config = factual_recall.get_config()
    config.base = factual_recall.base_model_config(**WORLD)
    config.update_from_flattened_dict(TINY)
    config.seeds = SEEDS
    return config


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("factual_recall"))
    out = run_experiment(tiny_config(), workdir)
    for name in ("trace.png", "scaling.png", "dla.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == out
    return out


def test_the_model_recalls_and_reads_the_context(summary):
    for p in summary["per_seed"]:
        assert p["closed_book_accuracy"] > 0.9, p["seed"]
        cf = p["counterfactual"]
        assert cf["p_in_context"] > cf["p_memorised"], p["seed"]


def test_causal_trace_peaks_at_the_last_position(summary):
    """Restoring the last position's attention or MLP output at layer 0 recovers more of
    the answer than restoring them at either subject token."""
    for p in summary["per_seed"]:
        eff = p["trace"]["effect"]
        assert p["trace"]["p_clean"] > p["trace"]["p_corrupted"], p["seed"]
        for site in ("attn_out", "mlp_out"):
            row = np.asarray(eff[site])[0]  # layer 0: BOS s1 s2 r
            assert row[3] > max(row[1], row[2]), (p["seed"], site, row)


def test_scaling_the_in_context_head_moves_the_answer(summary):
    """The head with the largest attribution to in-context - memorised, scaled from 0 to 3,
    raises P(in-context) and lowers P(memorised) on held-out counterfactual prompts."""
    for p in summary["per_seed"]:
        sc = p["scaling"]["in_context_head"]
        g = p["scaling"]["gammas"]
        lo, hi = g.index(0.0), g.index(3.0)
        assert sc["p_in_context"][hi] > sc["p_in_context"][lo], p["seed"]
        assert sc["p_memorised"][lo] > sc["p_memorised"][hi], p["seed"]
        assert sc["rate_memorised"][lo] > sc["rate_memorised"][hi], p["seed"]


def test_the_context_lowers_the_memorised_margin(summary):
    """The DLA margin of the memorised answer over the other attributes is lower when the
    context disagrees, and the sum of the components' changes is negative."""
    for p in summary["per_seed"]:
        s = p["suppression"]
        assert s["counterfactual"]["margin"] < s["closed_book"]["margin"], p["seed"]
        assert s["final_layer_delta"] + s["earlier_layers_delta"] < 0, p["seed"]
