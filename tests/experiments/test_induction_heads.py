"""The flagship experiment end to end at small settings: the baseline forms an induction head
(its best layer-1 induction score rises far above its value at initialisation) and clamping the
layer-0 previous-token head to its mean leaves the clamped arm clearly lower."""

import json
import os

import numpy as np
import pytest

import jaxinterp as ji
from configs import induction_heads
from experiments.induction_heads import probe_sequences, run_experiment
from jaxinterp.analysis import heads
from jaxinterp.train import load_params
from jaxinterp.train.config import build_model
from tests.analysis.test_eap import check_induction_circuit

# The flagship config with fewer steps, a higher learning rate and less data; the model and the
# data's structure are the flagship's. The circuit forms by step 300-400 of 600.
SMALL = {
    "num_train_steps": 600, "eval_every_steps": 100, "log_every_steps": 50,
    "checkpoint_every_steps": 600, "eval_batches": 1, "score_examples": 32,
    "optimizer.learning_rate": 3e-3, "optimizer.warmup_steps": 50,
    "data.builder_kwargs.num_train": 8192, "data.builder_kwargs.num_test": 128,
}


def small_config(**overrides):
    config = induction_heads.get_config()
    config.update_from_flattened_dict({**SMALL, **overrides})  # dotted keys, e.g. 'data.d'
    return config


@pytest.mark.slow
def test_clamping_the_previous_token_head_stops_the_induction_head(tmp_path):
    # ~50 s on 2 CPU cores. Seeds 0, 1, 2 all give: baseline 0.04 -> ~0.88 (formed by step
    # 300-400, previous-token score ~0.6), clamped ~0.22-0.26, never above 0.5.
    workdir = str(tmp_path / "exp")
    summary = run_experiment(small_config(), workdir)

    base, clamped = summary["baseline"], summary["clamped"]
    init = base["best_induction_score_init"]
    assert init < 0.1
    assert base["best_induction_score_final"] > max(init + 0.4, 5 * init), summary
    assert base["best_layer0_prev_token_score_final"] > 0.3, summary
    assert base["formation_step"] is not None
    assert summary["clamped_layer0_heads"] == [0]
    assert clamped["best_induction_score_final"] < base["best_induction_score_final"] - 0.3, (
        summary)
    assert clamped["formation_step"] is None

    # The head detectors (TransformerLens patterns, "mul" scoring) find the circuit in the
    # trained baseline: the induction head in layer 1, the previous-token head in layer 0.
    config = small_config()
    model = build_model(config)
    params = load_params(os.path.join(workdir, "baseline"))
    probe, _, _ = probe_sequences(config)
    _, cache = ji.run(model, {"params": params}, probe, capture="blocks.*.attn.hook_pattern")
    patterns = [cache[f"blocks.{i}.attn.hook_pattern"] for i in range(2)]
    ind = np.stack([heads.detection_score(p, heads.induction_pattern(probe)) for p in patterns])
    prev = np.stack([heads.detection_score(p, heads.previous_token_pattern(probe.shape[1]))
                     for p in patterns])
    assert np.unravel_index(ind.argmax(), ind.shape)[0] == 1 and ind.max() > 0.3, ind
    assert np.unravel_index(prev.argmax(), prev.shape)[0] == 0 and prev.max() > 0.3, prev
    check_induction_circuit(model, {"params": params}, config)  # EAP-IG finds the key edge
    assert clamped["final_repeat_loss"] > base["final_repeat_loss"] + 0.5, summary

    for name in ("loss_curves.png", "head_scores.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == summary
