"""Critical periods at tiny settings, on seeds 0, 1, 2 (one vmapped run, asserted per seed).

Pathways: an early deficit to pathway B leaves B with a lasting deficit (its loss alone rises
above the no-deficit value, more for a longer deficit, more for the deeper network) although
the task loss recovers; the same deficit after learning leaves nothing. Matrix completion:
corrupting the observed entries for the first T steps raises the final test loss of a depth-2
network, more for a longer T; a depth-1 network (one matrix) is unaffected, as it must be:
gradient descent on one matrix only moves the observed entries.
"""

import json
import os

import numpy as np
import pytest

from configs import critical_periods
from experiments.critical_periods import run_experiment

SEEDS = (0, 1, 2)


def tiny_config():
    c = critical_periods.get_config()
    c.seeds = SEEDS
    # Width 16 (not 32) and a larger init and rate than the default so that depth 4 learns
    # all features within 800 steps; deficits of 10 and 40 steps.
    c.pathways.update(dict(depths=(1, 4), width=16, init_scale=0.05, lr=0.05,
                           deficit_lengths=(0, 10, 40), late_start=800, recovery_steps=1200,
                           record_every=100))
    c.completion.update(dict(depths=(1, 2), n=16, rank=2, deficit_rank=4, n_observed=128,
                             lr=2.0, deficit_lengths=(0, 100, 200), recovery_steps=800,
                             record_every=100))
    return c


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("critical_periods"))
    return workdir, run_experiment(tiny_config(), workdir)


def _seed(stats, i):
    return np.asarray(stats["per_seed"])[:, i]  # [deficit length]


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_pathways_early_deficit_lasts_and_grows_with_length_and_depth(result, seed):
    _, summary = result
    pw = summary["pathways"]
    gaps = {}
    for depth in pw["depths"]:
        s = pw[f"depth_{depth}"]
        assert _seed(s["final_loss"], seed).max() < 1e-2, s["final_loss"]  # the task recovers
        assert _seed(s["late_final_loss"], seed).max() < 1e-2
        assert abs(_seed(s["deprived_share"], seed)[0] - 0.5) < 0.01  # tied init: even split
        gap = _seed(s["deprived_loss_gap"], seed)  # deficit lengths 0, 10, 40
        assert gap[1] > 0.5 and gap[2] > gap[1] + 0.5, gap
        # A late deficit of the same length leaves no trace.
        np.testing.assert_array_less(np.abs(_seed(s["late_deprived_loss_gap"], seed)), 0.05)
        gaps[depth] = gap
    # Seeds 0-2: depth 1 gaps 3.83-3.88 (T=10) and 9.93-10.08 (T=40), depth 4 9.51-10.09 and
    # 11.29-11.66 (at most 12: B learned nothing); late gaps < 1e-5.
    assert np.all(gaps[4][1:] > gaps[1][1:] + 0.5), gaps


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_completion_corrupted_start_hurts_depth_2_not_depth_1(result, seed):
    _, summary = result
    mc = summary["completion"]
    for depth in mc["depths"]:
        assert mc[f"depth_{depth}"]["max_final_train_loss"] < 1e-3  # every run fits its entries
    np.testing.assert_array_less(np.abs(_seed(mc["depth_1"]["test_loss_gap"], seed)), 1e-3)
    gap = _seed(mc["depth_2"]["test_loss_gap"], seed)  # deficit lengths 0, 100, 200
    # Seeds 0-2: gaps 0.013-0.19 at T=100, 0.079-0.29 at T=200 (no-deficit test loss
    # 0.010-0.101); depth 1 gaps < 1e-5 (test loss 0.38-0.54: the unobserved entries keep their
    # initial values). Seeds 3-5 (not part of the test): T=200 exceeds T=100 by only
    # 0.007-0.043 at this size, so the test asks for an increase, not a margin.
    assert gap[1] > 0.005 and gap[2] > gap[1], gap


def test_outputs_written(result):
    workdir, summary = result
    for name in ("critical_periods.png", "learning_curves.png", "curves.npz", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == summary
