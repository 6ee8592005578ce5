"""Fake quantisation (jaxinterp.quantize) against NumPy: grids from np.round (half to even),
the intervention at a site, weight quantisation per tensor and per channel, outlier stats."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp import quantize as q
from tests.helpers.tiny_models import tiny


def np_fake_quant(x, lo, hi, bits, symmetric):
    x = np.asarray(x, np.float64)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        s = max(-lo, hi) / (2 ** (bits - 1) - 1)
        z, qmin, qmax = 0.0, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        s = (hi - lo) / (2 ** bits - 1)
        z, qmin, qmax = np.round(-lo / s), 0, 2 ** bits - 1
    return (np.clip(np.round(x / s) + z, qmin, qmax) - z) * s


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [4, 8])
def test_fake_quant_matches_numpy(bits, symmetric):
    x = np.random.default_rng(0).normal(size=(500,)).astype(np.float32) * 3 + 0.5
    lo, hi = float(x[:400].min()), float(x[:400].max())  # the tail falls outside: clipped
    scale, zero = q.quant_params(lo, hi, bits, symmetric)
    got = np.asarray(q.fake_quant(jnp.asarray(x), scale, zero, bits, symmetric))
    want = np_fake_quant(x, lo, hi, bits, symmetric)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(scale))
    assert len(np.unique(got)) <= 2 ** bits
    # Exact halves round to even, as np.round: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2 (scale 1, z 0).
    halves = jnp.asarray([0.5, 1.5, 2.5, -0.5, -1.5])
    np.testing.assert_array_equal(q.fake_quant(halves, 1.0, 0.0, bits, True), np.round(halves))
    with pytest.raises(ValueError, match="bits=1"):
        q.fake_quant(halves, 1.0, 0.0, 1)


def test_fake_quant_intervention_and_ranges():
    model, variables, tokens = tiny(n_layers=1)
    site = "blocks.0.hook_mlp_out"
    (lo, hi), = q.activation_ranges(model, variables, tokens, sites=site).values()
    _, cache = ji.run(model, variables, tokens, capture=site)
    x = np.asarray(cache[site])
    assert (float(lo), float(hi)) == (x.min(), x.max())
    ivs = q.act_quant_interventions({site: (lo, hi)}, bits=8)
    _, quant = ji.run(model, variables, tokens, capture=site, interventions=ivs)
    np.testing.assert_allclose(quant[site], np_fake_quant(x, x.min(), x.max(), 8, False),
                               rtol=1e-5, atol=1e-6)
    # Ranges of two batches merge to the union; vmapped over two runs' variables.
    merged = q.merge_ranges({"a": (1.0, 2.0)}, {"a": (-1.0, 1.5)})
    assert [float(v) for v in merged["a"]] == [-1.0, 2.0]
    stacked = jax.tree.map(lambda v: jnp.stack([v, 2 * v]), variables)
    rng = jax.vmap(lambda v: q.activation_ranges(model, v, tokens, sites=site))(stacked)
    assert rng[site][1].shape == (2,) and float(rng[site][1][0]) == x.max()


@pytest.mark.parametrize("per_channel", [False, True])
def test_quantize_weights(per_channel):
    _, variables, _ = tiny(n_layers=1)
    params = nn.meta.unbox(variables)["params"]
    out = q.quantize_weights(variables["params"], bits=8, per_channel=per_channel)
    w, wq = np.asarray(params["blocks_0"]["attn"]["W_O"]), out["blocks_0"]["attn"]["W_O"]
    axes = (0, 1) if per_channel else (0, 1, 2)  # W_O [heads, d_head, d_model]
    absmax = np.abs(w).max(axis=axes, keepdims=True)
    s = absmax / 127
    np.testing.assert_allclose(wq, np.clip(np.round(w / s), -128, 127) * s, rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_array_equal(out["blocks_0"]["attn"]["b_O"], params["blocks_0"]["attn"]["b_O"])
    assert np.abs(wq - w).max() <= s.max() / 2 + 1e-7


def test_outlier_stats():
    x = np.random.default_rng(1).normal(size=(4, 20, 50))
    x[1, 3, 7] = 40.0
    inf, kurt = q.outlier_stats(jnp.asarray(x, jnp.float32))
    rows = x.reshape(4, -1)
    want = ((rows - rows.mean(1, keepdims=True)) ** 4).mean(1) / (rows.std(1, ddof=1) ** 4 + 1e-6)
    np.testing.assert_allclose(inf, np.abs(rows).max(1), rtol=1e-6)
    np.testing.assert_allclose(kurt, want, rtol=1e-4)
    assert abs(kurt[0] - 3) < 0.5 and kurt[1] > 30  # Gaussian ~3; one outlier: large
