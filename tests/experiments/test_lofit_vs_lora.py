"""LoFiT vs LoRA at tiny settings, every run through `jaxinterp.train.train` (`config.tuning`):
the base (trained on one skip-bigram permutation) does worse on the new permutation than on its
own; LoRA lowers the new task's loss; LoFiT's stage 1 records its L1 penalty in the trainer's
loss and ranks heads by ||A||_2; its stage 2 trains 2 heads x d_head = 16 parameters (64x fewer
than LoRA's rank 2) and does not beat LoRA here: the new task needs a new token-to-token map,
which input-independent head offsets cannot write (the default run's null result,
`configs/lofit_vs_lora.py`).

Three seeds (the trainer's seed and the two tasks' permutations), no full fine-tuning arm (its
forward is checked against NumPy in tests/tuning/test_lora.py, and it goes through the trainer
like LoRA). The four trainer runs of a seed compile the same programs as every other seed's
(the session's XLA cache), so seeds 1 and 2 cost less than seed 0.
"""

import json
import os

import pytest

from configs import lofit_vs_lora
from experiments.lofit_vs_lora import run_experiment

TINY = {
    "base_steps": 150, "num_steps": 40, "lrs": (1e-2,), "lofit_ks": (2,), "lora_ranks": (2,),
    "data.num_train": 512, "data.num_test": 64, "warmup_steps": 5, "full": False,
}


SEEDS = (0, 1, 2)


@pytest.fixture(scope="module", params=SEEDS)
def summary(request, tmp_path_factory):
    seed = request.param
    workdir = str(tmp_path_factory.mktemp(f"lofit_vs_lora_{seed}"))
    config = lofit_vs_lora.get_config()
    config.update_from_flattened_dict(TINY)
    config.update(dict(seed=seed, base_data_seed=2 * seed, new_data_seed=2 * seed + 1))
    out = run_experiment(config, workdir)
    for name in ("accuracy_vs_params.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == out
    return out


def test_the_new_task_is_new(summary):
    assert summary["base_on_new_task"]["loss"] > summary["base_on_own_task"]["loss"] + 0.3


def test_each_method_trains_through_the_trainer(summary):
    arms = summary["arms"]
    assert set(arms) == {"lofit_k2", "lora_r2"}
    run = arms["lora_r2"]["best"]
    assert run["loss"] < run["start_loss"] - 0.05, run
    lofit = arms["lofit_k2"]["best"]
    assert lofit["loss"] < lofit["start_loss"], lofit
    t = summary["table"]
    assert t["lofit_k2"]["params"] == 2 * 8  # k * d_head
    assert t["lora_r2"]["params"] == 2 * 2 * 4 * (32 + 32)  # layers * r * kernels * (in + out)
    assert t["lora_r2"]["loss"] < t["lofit_k2"]["loss"]
    assert len(summary["lofit_scale"]["head_norms"]["0"]) == 4
    assert summary["lofit_scale"]["penalty"] > 0  # the L1 term reached the trainer's loss


def test_lofit_does_not_match_lora_on_this_task(summary):
    # the paper's claim does not hold on this task (a null result, asserted as measured)
    assert summary["lofit_over_lora_accuracy"] <= 0.0
    assert summary["lora_over_lofit_params"] == 64
