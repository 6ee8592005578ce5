"""Benchmarks run end to end at tiny settings (their timings are reported, never asserted)."""

import math
import pathlib
import subprocess
import sys

import numpy as np
import optax
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


TINY_LM = dict(n_layers=1, d_model=64, d_vocab=128, seq=16, batch=4, steps=2, repeats=2)
TINY_IMAGE = dict(image_size=8, patch_size=4, n_layers=1, d_model=32, n_heads=2, num_classes=5,
                  batch=4, steps=2, repeats=2)


@pytest.mark.slow
def test_train_throughput_benchmark_runs_at_tiny_settings():
    from experiments.benchmarks import train_throughput

    rows = [train_throughput.measure_lm(**TINY_LM), train_throughput.measure_image(**TINY_IMAGE)]
    for r in rows:
        assert all(np.isfinite(r[k]) and r[k] > 0 for k in
                   ("library_ms", "plain_ms", "step_flops", "peak_flops")), r
        assert all(np.isfinite(r[k]) for k in ("overhead", "overhead_fastest", "overhead_cpu"))
        # The agreement check compared 4 losses that training changed (lr 0 at step 0 only).
        assert len(r["lib_losses"]) == 4 and r["lib_losses"][-1] != r["lib_losses"][0]
        np.testing.assert_allclose(r["lib_losses"], r["plain_losses"], rtol=1e-5)
        # Same program up to the metrics (a pass over the logits for the accuracy may cost a
        # few percent of the bytes): no second forward pass, no extra copy of the parameters.
        assert r["lib_cost"]["flops"] == pytest.approx(r["plain_cost"]["flops"], rel=1e-2)
        assert r["lib_cost"]["bytes"] == pytest.approx(r["plain_cost"]["bytes"], rel=5e-2)
    text = train_throughput.report(rows)
    lines = text.splitlines()
    assert lines[2].split()[0] == "lm" and lines[3].split()[0] == "image"
    assert all("%" in line and "agree (max rel diff" in line for line in lines[2:4])


@pytest.mark.slow
def test_train_throughput_stops_when_the_steps_disagree():
    from experiments.benchmarks import train_throughput
    from jaxinterp.train.tasks import NextToken

    model = train_throughput.ji.models.build("gpt2_small", n_layers=1, d_model=32, n_heads=1,
                                             d_head=32, d_mlp=64, d_vocab=64, n_ctx=8)
    tokens = np.random.default_rng(0).integers(0, 64, (2, 9)).astype(np.int32)

    def wrong_loss(params, b):  # a baseline that does not compute the task's loss
        logits = model.apply({"params": params}, b["tokens"][:, :-1])
        return 1.001 * optax.softmax_cross_entropy_with_integer_labels(
            logits, b["tokens"][:, 1:]).mean()

    with pytest.raises(AssertionError, match="different losses"):
        train_throughput.compare(model, NextToken(), {"tokens": tokens}, wrong_loss, steps=1,
                                 repeats=1, check_steps=2)


@pytest.mark.slow
def test_train_throughput_command_line_runs_one_case():
    out = subprocess.run(
        [sys.executable, "-m", "experiments.benchmarks.train_throughput", "--case=image",
         "--image_size=8", "--patch_size=4", "--image_layers=1", "--image_d_model=32",
         "--image_heads=2", "--image_batch=4", "--steps=1", "--repeats=1"],
        capture_output=True, text=True, timeout=300, check=True,
        cwd=pathlib.Path(__file__).parents[1]).stdout
    rows = [line.split()[0] for line in out.splitlines()[2:] if "agree" in line]
    assert rows == ["image"], out


@pytest.mark.slow
def test_sae_topk_speed_runs_at_tiny_settings():
    from experiments.benchmarks import sae_topk_speed as b

    r = b.measure_jax(d_in=8, d_sae=32, k=2, rows=16, steps=1, repeats=1)
    assert r["dense_ms"] > 0 and r["sparse_ms"] > 0 and "dense/sparse" in b.report(r)


@pytest.mark.slow
def test_sae_sweep_speed_runs_at_tiny_settings():
    from experiments.benchmarks import sae_sweep_speed as sweep_bench

    r = sweep_bench.measure(d_in=32, d_sae=32, batch=2, seq=8, n_layers=1, d_vocab=64,
                            steps=1, repeats=1)
    assert r["groups"] == [[0, 1, 2, 3], [4, 5, 6, 7]] and r["max_rel_diff"] < 1e-3
    assert np.isfinite(r["ratio"]) and "ratio (8 fits / sweep)" in sweep_bench.report(r)
