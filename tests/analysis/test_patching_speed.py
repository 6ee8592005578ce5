"""The patching_speed benchmark end to end at tiny settings (timings reported, never asserted)."""

import math

import pytest

from experiments.benchmarks import patching_speed as bench


@pytest.mark.slow
def test_patching_speed_runs_at_tiny_settings():
    res = bench.measure(n_layers=2, seq=4, batch=2, repeats=1, batch_size=3, d_model=32,
                        n_heads=2, d_head=16, d_mlp=64, d_vocab=64)
    for key in ("naive_ms", "act_patch_ms", "ratio", "first_naive_s", "first_act_patch_s"):
        assert math.isfinite(res[key]) and res[key] > 0, (key, res[key])
    assert res["shape"] == (2, 4)
    assert res["max_abs_diff"] < 1e-5  # act_patch computes what the naive loop does
    assert res["suffix_max_abs_diff"] < 1e-5  # and so does suffix-only patching
    assert res["result_range"][0] < res["result_range"][1]  # the patches do something
    assert res["naive_call_mb"] > 0 and res["act_patch_call_mb"] > 0
    text = bench.report(res)
    assert "naive / act_patch = " in text and "(target >= 5)" in text
    assert "8 patched forward passes" in text and "memory_analysis" in text


@pytest.mark.slow
def test_path_patching_row_runs_at_tiny_settings():
    res = bench.measure_path(n_layers=2, seq=4, batch=2, d_model=32, n_heads=2, d_head=16,
                             d_mlp=64, d_vocab=64)
    for key in ("path_full_ms", "path_suffix_ms", "path_ratio", "first_path_suffix_s"):
        assert math.isfinite(res[key]) and res[key] > 0, (key, res[key])
    assert res["shape"] == (2, 2) and res["receivers"] == [(1, 0, "q"), (1, 1, "q")]
    assert res["max_abs_diff"] < 1e-5  # suffix-only computes what the full runs do
    assert res["result_range"][0] < res["result_range"][1]  # the senders do something
    assert "path full / path suffix = " in bench.report_path(res)
