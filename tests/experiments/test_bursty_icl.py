"""Bursty in-context classification at tiny settings, seeds 0, 1, 2 trained together (one
vmapped call per part): the in-context accuracy jumps together with the induction head's
formation, bursty training gives far more in-context accuracy than i.i.d. sequences, and
clamping any part of the induction circuit throughout training keeps in-context accuracy at the
level of copying a random context label.

Measured (seeds 0 / 1 / 2): ICL accuracy reaches 0.5 at steps 275 / 300 / 375 of 400, the
induction and previous-token scores at 300 / 325 / 375; final ICL accuracy 0.89 / 0.73 / 0.60
bursty vs 0.02-0.04 for i.i.d. sequences (whose IWL accuracy is 0.63-0.67 vs 0.12-0.16); every
clamped arm ends at ICL 0.18-0.26, clamped and released alike (the ~0.25 of copying a random
context label). About 37 s of CPU time for the file on the shared machine (load 13-20).
"""

import json
import os

import pytest

from configs import bursty_icl
from experiments.bursty_icl import run_experiment

SEEDS = (0, 1, 2)
EVERY = 25
# The default model, smaller data (d 16, 256 classes, 16 labels, 4096 training sequences, 128
# test sequences), batch 64 and a higher learning rate for 400 steps. The grid is one i.i.d.
# cell (burstiness 0) of the baseline's data: the baseline itself is the bursty cell.
TINY = {
    "num_train_steps": 400, "batch_size": 64, "eval_every_steps": EVERY,
    "data.d": 16, "data.n_classes": 256, "data.n_labels": 16, "data.num_train": 4096,
    "data.num_test": 128, "model.d_vocab": 16, "d_readout_mlp": 32,
    "optimizer.learning_rate": 3e-3,
    "grid.burstiness": (0,), "grid.n_classes": (256,), "grid.num_train": 4096,
    "grid.num_train_steps": 400, "grid.eval_every_steps": 0, "clamp.until": 1.0,
}


def tiny_config(**overrides):
    config = bursty_icl.get_config()
    config.update_from_flattened_dict({**TINY, **overrides})  # dotted keys, e.g. 'data.d'
    config.seeds = SEEDS
    return config


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("bursty_icl"))
    out = run_experiment(tiny_config(), workdir)
    for name in ("jump_alignment.png", "grid.png", "clamps.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == out
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_icl_jumps_with_the_induction_head(summary, seed):
    s = summary["baseline"]["per_seed"][SEEDS.index(seed)]
    assert s["icl_acc_final"] > s["icl_acc_init"] + 0.4, s
    assert s["induction_final"] > s["induction_init"] + 0.3, s
    assert s["prev_token_final"] > s["prev_token_init"] + 0.3, s
    # The ICL jump does not come before the induction score's (or the previous-token
    # score's) jump by more than two evals.
    assert s["icl_jump_step"] is not None and s["induction_jump_step"] is not None, s
    assert s["icl_jump_step"] >= s["induction_jump_step"] - 2 * EVERY, s
    assert s["icl_jump_step"] >= s["prev_token_jump_step"] - 2 * EVERY, s


@pytest.mark.parametrize("seed", SEEDS)
def test_bursty_training_gives_more_icl_than_iid(summary, seed):
    i = SEEDS.index(seed)
    (iid,) = summary["grid"]
    assert iid["burstiness"] == 0
    bursty = summary["baseline"]["per_seed"][i]["icl_acc_final"]
    assert bursty > iid["icl_acc_per_seed"][i] + 0.3, (bursty, iid)
    # ... and i.i.d. training learns more in weights.
    assert iid["iwl_acc_per_seed"][i] > summary["baseline"]["per_seed"][i]["iwl_acc_final"]


@pytest.mark.parametrize("seed", SEEDS)
def test_each_clamp_keeps_icl_low(summary, seed):
    i = SEEDS.index(seed)
    base = summary["baseline"]["per_seed"][i]["icl_acc_final"]
    assert set(summary["clamps"]) == {"prev_token_ov", "induction_qk", "induction_ov"}
    assert base > 0.55
    for arm, c in summary["clamps"].items():
        s = c["per_seed"][i]
        # At most the plateau of copying a random context label (1/4 of 4 classes).
        assert s["clamped_icl_acc_final"] < 0.35, (arm, s, base)
        assert s["released_icl_acc_final"] < 0.35, (arm, s, base)
        assert s["released_icl_jump_step"] is None, (arm, s)
