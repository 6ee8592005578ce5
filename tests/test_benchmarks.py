"""Benchmarks run end to end at tiny settings (their timings are reported, never asserted)."""

import math

import numpy as np
import pytest

from experiments.benchmarks import intervention_overhead as bench


@pytest.mark.slow
def test_intervention_overhead_runs_at_tiny_settings():
    res = bench.measure(n_layers=2, batch=2, seq=16, n_strengths=4, repeats_a=1, repeats_b=1)
    for key in ("apply_ms", "run_ms", "loop_ms", "vmap_ms", "ratio_a", "ratio_b"):
        assert math.isfinite(res[key]) and res[key] > 0, (key, res[key])
    assert res["sites"]["steer"] == "blocks.1.hook_resid_post"
    assert res["a_logits_max_change"] > 0  # the interventions changed the output
    assert res["a_captured"] == {"blocks.1.hook_resid_post": (2, 16, 768)}
    assert res["b_output_shape"] == (4, 2, 16, 50257)
    assert res["b_max_abs_diff_vmap_vs_loop"] < 1e-3  # the sweep computes what the loop does
    text = bench.report(res)
    assert "(a) run/apply = " in text and "(target <= 1.05)" in text
    assert "(b) loop/vmap = " in text


def test_sites_keep_their_relative_depth():
    assert bench.sites_for(12) == {
        "add": "blocks.6.hook_resid_post",
        "scale": "blocks.3.attn.hook_z",
        "ablate": "blocks.8.mlp.hook_post",
        "clamp": "blocks.10.hook_resid_mid",
        "capture": "blocks.11.hook_resid_post",
        "steer": "blocks.6.hook_resid_post",
    }
    assert all(name.startswith(("blocks.0.", "blocks.1.")) for name in bench.sites_for(2).values())


@pytest.mark.slow
def test_train_throughput_benchmark_runs_at_tiny_settings():
    from experiments.benchmarks import train_throughput

    r = train_throughput.measure(n_layers=1, d_model=64, d_vocab=128, seq=16, batch=4,
                                 steps=2, repeats=1)
    assert all(np.isfinite(r[k]) and r[k] > 0 for k in
               ("library_tokens_per_s", "plain_tokens_per_s", "step_flops", "peak_flops"))
    text = train_throughput.report(r)
    assert "overhead" in text and "MFU" in text
