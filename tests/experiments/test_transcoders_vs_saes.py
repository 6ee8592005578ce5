"""Transcoders vs SAEs at tiny settings (a 2-layer d_model 32 LM trained 100 steps; TopK k 4,
128 latents, 100 steps; seeds 0, 1, 2 of the dictionaries, vmapped in one group per layer and
kind, on the one LM).

What is asserted: the weights-based circuit analysis's direction -- the input-invariant
connections of the chosen layer-1 feature rank its mean input-dependent attributions (Spearman
> 0.5 over the sources active on its tokens; measured 0.84 / 0.86 / 0.86), far better than the
sources' mean activations alone do (measured 0.02 / 0.04 / -0.02); the top-5 overlap is not
asserted (measured 0.2 / 0.0 / 0.2, chance 0.04); and the frontier's bookkeeping:
both kinds are scored against the same clean and zero-ablated CE (hook_mlp_out zeroed), and the
transcoder's spliced CE is its own (the MLP replaced), not the SAE's.

What is NOT asserted, because it does not hold at this size: the paper's claim (transcoders on
par with SAEs). A 100-step LM barely uses its MLPs (zero-ablating hook_mlp_out moves CE by
< 0.002 nats), so loss recovered is a ratio of noise (measured -5 to 36), and a transcoder must
predict a nearly constant MLP output from its input (explained variance -70 to -490, the SAEs'
0.75); the default config measures the claim (configs/transcoders_vs_saes.py).

CPU: ~50 s user + 5 s sys for this file (measured together with tests/circuits/test_weights.py,
which takes ~3 s) on the shared 2-core machine: over the 20 s budget (one LM training and four
compiled sweep groups, each with its train step, resampling and evaluation programs).
"""

import json
import os

import numpy as np
import pytest

from configs import transcoders_vs_saes
from experiments.transcoders_vs_saes import check_config, run_experiment

SEEDS = (0, 1, 2)


def tiny_config():
    c = transcoders_vs_saes.get_config()
    lm = c.lm
    lm.num_train_steps = 100
    lm.checkpoint_every_steps = lm.eval_every_steps = 100
    lm.eval_batches = 1
    lm.log_every_steps = 100
    lm.data.builder_kwargs.num_train = 2048
    lm.data.builder_kwargs.num_test = 64
    lm.model.d_model, lm.model.d_mlp, lm.model.n_heads = 32, 64, 2
    c.widths, c.ks, c.seeds = (128,), (4,), SEEDS
    c.train.num_steps, c.train.batch_size, c.train.log_every = 100, 256, 50
    c.train.resample_every, c.train.resample_until, c.train.dead_after_steps = 50, 75, 25
    c.train.checkpoint_every = 0
    c.model_batch_size, c.eval_batch_size = 8, 64
    c.circuit.d_sae, c.circuit.k, c.circuit.top_k = 128, 4, 5
    c.verbose = False
    return c


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("transcoders_vs_saes"))
    out = run_experiment(tiny_config(), workdir)
    for name in ("frontier.png", "connections.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == out
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_both_kinds_share_the_baselines_and_the_transcoder_replaces_the_mlp(summary, seed):
    rows = {(r["kind"], r["layer"]): r for r in summary["frontier"] if r["seed"] == seed}
    assert len(rows) == 4, rows
    for layer in (0, 1):
        sae, tc = rows[("sae", layer)], rows[("transcoder", layer)]
        assert sae["ce_clean"] == tc["ce_clean"]
        assert sae["ce_zero_ablation"] == tc["ce_zero_ablation"]
        assert sae["ce_spliced"] != tc["ce_spliced"]
        for r in (sae, tc):
            assert r["l0"] <= 4 + 1e-6, r
            np.testing.assert_allclose(
                r["loss_recovered"], (r["ce_zero_ablation"] - r["ce_spliced"])
                / (r["ce_zero_ablation"] - r["ce_clean"]), rtol=1e-2)


@pytest.mark.parametrize("seed", SEEDS)
def test_input_invariant_connections_predict_the_attributions(summary, seed):
    circuit = next(c for c in summary["circuits"] if c["seed"] == seed)
    a = circuit["agreement"]
    assert a["spearman"] > 0.5, a
    assert a["pearson"] > 0, a
    # the connection, not how often a source fires, orders the attributions
    assert a["spearman"] > circuit["activation_only_agreement"]["spearman"] + 0.3, circuit
    assert np.isfinite(circuit["direct_path_share"])


def test_bad_config_values_are_errors_naming_them():
    c = tiny_config()
    c.circuit.k = 16
    with pytest.raises(ValueError, match=r"circuit.k=16 in ks \[4\]"):
        check_config(c)
    c = tiny_config()
    c.layers = (0, 2)
    with pytest.raises(ValueError, match=r"config.layers has \[2\]"):
        check_config(c)
