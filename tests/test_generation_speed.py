"""The generation_speed benchmark end to end at tiny settings (timings reported, never
asserted)."""

import math

import pytest

from experiments.benchmarks import generation_speed as bench


@pytest.mark.slow
def test_generation_speed_runs_at_tiny_settings():
    res = bench.measure(n_layers=2, batch=2, prompt=3, new=4, repeats=1, d_model=32,
                        n_heads=2, d_head=16, d_mlp=64, d_vocab=64)
    for key in ("clean_ms", "steered_ms", "loop_ms", "clean_tok_s", "loop_ratio"):
        assert math.isfinite(res[key]) and res[key] > 0, (key, res[key])
    assert res["loop_equals_clean"]  # the Python loop decodes the same tokens
    text = bench.report(res)
    assert "steered / clean - 1 = " in text and "loop / generate = " in text
