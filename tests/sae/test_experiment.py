"""End to end at tiny settings: `experiments.train_sae` trains a model, an SAE on it, reports
and saves (the same code path as the binary, with the command line's overrides)."""

import json
import os

import numpy as np
import pytest

from configs.train_sae import get_config
from experiments.train_sae import run_experiment
from jaxinterp.sae import io


@pytest.mark.slow
def test_train_sae_end_to_end(tmp_path):
    c = get_config()
    c.lm.num_train_steps = 10
    c.lm.checkpoint_every_steps = 10
    c.lm.eval_every_steps = 10
    c.lm.eval_batches = 1
    c.lm.log_every_steps = 10
    c.lm.data.builder_kwargs.num_train = 256
    c.lm.data.builder_kwargs.num_test = 64
    c.lm.model.d_model = 32
    c.lm.model.d_mlp = 64
    c.sae.d_in, c.sae.d_sae = 32, 128
    c.train.num_steps, c.train.batch_size, c.train.log_every = 60, 256, 20
    c.train.resample_every, c.train.dead_after_steps = 30, 10
    c.model_batch_size, c.eval_batch_size = 16, 32
    summary = run_experiment(c, str(tmp_path))
    assert json.load(open(tmp_path / "summary.json")) == summary
    assert 0.4 < summary["explained_variance"] <= 1.0, summary  # measured 0.65
    assert summary["l0"] <= c.sae.k
    # A 10-step model is nearly uniform (CE ~ ln 64), so only the identity is checked here;
    # tests/sae/test_metrics.py checks the numbers against a hand computation.
    np.testing.assert_allclose(
        summary["loss_recovered"],
        (summary["ce_zero_ablation"] - summary["ce_spliced"])
        / (summary["ce_zero_ablation"] - summary["ce_clean"]), rtol=2e-3)  # float32 rounding
    assert all(np.isfinite(v) for v in summary.values()), summary
    params, config = io.load(os.path.join(tmp_path, "sae"))
    assert config.site == "blocks.1.hook_resid_mid" and config.model_preset == "gpt2_small"
    assert params["W_enc"].shape == (32, 128)
