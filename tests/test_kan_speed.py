"""The KAN speed benchmark runs end to end at tiny settings (timings reported, never asserted)."""

import math

import pytest

from experiments.benchmarks import kan_speed


def test_matched_mlp_hidden_width():
    # 64-h-10 with biases: 64 h + h + 10 h + 10 parameters; 42,624 (the KAN) -> h = 568
    assert kan_speed.matched_mlp_hidden(42_624, 64, 10) == 568
    assert 75 * 568 + 10 == 42_610


@pytest.mark.slow
def test_kan_speed_runs_at_tiny_settings():
    r = kan_speed.measure(batch=32, ff_batch=2, ff_pos=4, d_model=16, d_hidden=32, steps=1,
                          repeats=1)
    assert r["bspline"]["kan_params"] == 42_624  # 64*64*(8 + 1) + 64*10*(8 + 1)
    assert r["rbf"]["kan_params"] == 42_624
    assert abs(r["bspline"]["mlp_params"] - 42_624) < 75  # parameter-matched
    # KAT block 16-32-16: two linears + two KAT_Group rationals (6 shared + 8 x 4 each)
    assert r["grkan"]["kan_params"] == (16 * 32 + 32) + (32 * 16 + 16) + 2 * (6 + 8 * 4)
    assert r["grkan"]["mlp_params"] == (16 * 32 + 32) + (32 * 16 + 16)
    for key in ("bspline", "rbf", "grkan"):
        for field in ("kan_ms", "mlp_ms", "ratio"):
            assert math.isfinite(r[key][field]) and r[key][field] > 0, (key, field)
    text = kan_speed.report(r)
    assert "B-spline KAN / MLP" in text and "(target <= 3.0)" in text
    assert "RBF KAN / MLP" in text and "(target <= 1.5)" in text
    assert "GR-KAN FF / GELU FF" in text and "(target <= 1.3)" in text
