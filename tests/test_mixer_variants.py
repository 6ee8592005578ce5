"""Mixer variants against NumPy re-implementations written from the reference code's own
operations (its einops rearrange patterns, torch Unfold / roll / depthwise conv semantics),
on tiny configurations with randomised parameters."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest
from einops import rearrange
from scipy.special import erf

import jaxinterp as ji
from tests.tiny import assert_close, randomize


def _ln(x, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _gelu(x):  # torch nn.GELU(): exact
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def _dense(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def _mlp(x, p, hooks, name):
    h = _dense(x, p["fc1"])
    h = hooks.get(name + ".hook_pre", lambda v: v)(h)
    h = hooks.get(name + ".hook_post", lambda v: v)(_gelu(h))
    return _dense(h, p["fc2"])


# -- RaftMLP ----------------------------------------------------------------------------------
from jaxinterp.models.raftmlp import PRESETS as RAFT_PRESETS  # noqa: E402
from jaxinterp.models.raftmlp import RaftMLP, RaftMLPConfig  # noqa: E402

RAFT_TINY = dict(num_classes=3, image_size=8, in_channels=2, dims=(4, 8), depths=(1, 2),
                 patch_sizes=(2, 2), raft_sizes=(2, 2), embedding_kernels=((2, 4), (2,)))
RAFT_CFG = RaftMLPConfig(**RAFT_TINY)
RAFT = RaftMLP(RAFT_CFG)
IMAGES = jax.random.normal(jax.random.key(1), (2, 8, 8, 2))
RAFT_VARS = randomize(RAFT.init(jax.random.key(0), IMAGES))
RAFT_P = nn.meta.unbox(RAFT_VARS)["params"]


def _unfold(x, k, s, pad):
    """torch nn.Unfold on NCHW x, then "b c hw -> b hw c": [b, L, C*k*k]."""
    b, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    cols = [xp[:, :, i * s:i * s + k, j * s:j * s + k].reshape(b, c * k * k)
            for i in range(oh) for j in range(ow)]
    return np.stack(cols, 1)


def raft_reference(params, images, hooks=None):
    """RaftMLP forward following okojoalg/raft-mlp `SerialPermutedLevel` step by step.

    hooks: "{i}.vertical_out" / "{i}.horizontal_out" / "{i}.channel_out" edit a block's branch
    output (before its residual add), "{i}.vertical.hook_post" the vertical hidden units in the
    reference's layout [b, (co w), hidden]."""
    hooks = hooks or {}
    c = RAFT_CFG
    x = np.asarray(images, np.float64).transpose(0, 3, 1, 2)  # NCHW
    block = 0
    for lvl, (dim, depth, s, r, ks) in enumerate(zip(c.dims, c.depths, c.patch_sizes,
                                                     c.raft_sizes, c.embedding_kernels,
                                                     strict=True)):
        lp = params[f"levels_{lvl}"]
        t = np.concatenate([_unfold(x, k, s, (k - s) // 2) for k in ks], axis=2)
        t = _dense(t, lp["embedding"]["fc"])  # [b, (h w), C]
        h = w = x.shape[2] // s
        co = dim // r
        for j in range(depth):
            bp = lp[f"blocks_{j}"]

            def permuted(t, p, o2, name, block=block, co=co, r=r):
                y = rearrange(t, "b (c1 o1) (c2 o2) -> b (o1 o2) (c1 c2)", c1=co, c2=r, o2=o2)
                y = _ln(y, p["norm"], c.eps)
                y = rearrange(y, "b (o1 o2) (c1 c2) -> b (c1 o1) (c2 o2)", c1=co, c2=r, o2=o2)
                y = _mlp(y, p["mlp"], {k[len(f"{block}."):]: v for k, v in hooks.items()
                                        if k.startswith(f"{block}.")}, name)
                return t + hooks.get(f"{block}.{name}_out", lambda v: v)(y)

            t = rearrange(t, "b (h w) (chw co) -> b (co w) (chw h)", h=h, w=w, chw=r)
            t = permuted(t, bp["vertical_mixing"], h, "vertical")
            t = rearrange(t, "b (co w) (chw h) -> b (co h) (chw w)", h=h, w=w, chw=r)
            t = permuted(t, bp["horizontal_mixing"], w, "horizontal")
            t = rearrange(t, "b (co h) (chw w) -> b (h w) (chw co)", h=h, w=w, chw=r)
            y = _mlp(_ln(t, bp["channel_norm"], c.eps), bp["channel_mixing"], {}, "channel")
            t = t + hooks.get(f"{block}.channel_out", lambda v: v)(y)
            block += 1
        x = rearrange(t, "b (h w) c -> b c h w", h=h, w=w)
    pooled = _ln(x.transpose(0, 2, 3, 1), params["norm"], c.eps).mean((1, 2))
    return _dense(pooled, params["classifier"])


def test_raftmlp_matches_reference():
    assert_close(RAFT.apply(RAFT_VARS, IMAGES), raft_reference(RAFT_P, IMAGES), rtol=1e-5)


def test_raftmlp_sites():
    names = ji.sites(RAFT, IMAGES)
    assert names["levels_0.hook_embed"].shape == (2, 4, 4, 4)
    assert names["levels_1.hook_embed"].shape == (2, 2, 2, 8)
    # block 0 (level 0): r=2, h=w=4 -> hidden 2 * r * h = 16, rows (co=2, w=4)
    assert names["blocks.0.vertical_mixing.mlp.hook_post"].shape == (2, 2, 4, 16)
    assert names["blocks.2.horizontal_mixing.mlp.hook_pre"].shape == (2, 4, 2, 8)
    assert names["blocks.2.channel_mixing.hook_post"].shape == (2, 2, 2, 32)
    assert [n for n in names if n.endswith("hook_resid_post")] == [
        f"blocks.{i}.hook_resid_post" for i in range(3)]
    assert names["hook_pooled"].shape == (2, 8)


def test_raftmlp_hidden_units_have_the_reference_layout():
    seen = {}

    def keep(v):
        seen["h"] = v
        return v

    raft_reference(RAFT_P, IMAGES, {"0.vertical.hook_post": keep})
    _, cache = ji.run(RAFT, RAFT_VARS, IMAGES, capture="blocks.0.vertical_mixing.mlp.hook_post")
    got = cache["blocks.0.vertical_mixing.mlp.hook_post"]  # [b, co, w, hidden]
    assert_close(got.reshape(2, -1, got.shape[-1]), seen["h"], rtol=1e-5)


def test_raftmlp_ablations():
    """Zero-ablate block 1's vertical mixing output; clamp hidden unit 3 of block 0's vertical
    MLP to 0 (in the reference layout, column 3 of every row)."""
    def zero_col3(v):
        v = v.copy()
        v[..., 3] = 0.0
        return v

    ivs = [ji.Ablate("blocks.1.hook_vertical_out"),
           ji.Clamp("blocks.0.vertical_mixing.mlp.hook_post", 0.0, mask=np.arange(16) == 3)]
    got, _ = ji.run(RAFT, RAFT_VARS, IMAGES, interventions=ivs)
    want = raft_reference(RAFT_P, IMAGES, {"1.vertical_out": np.zeros_like,
                                           "0.vertical.hook_post": zero_col3})
    assert_close(got, want, rtol=1e-5)
    assert np.abs(np.asarray(got) - raft_reference(RAFT_P, IMAGES)).max() > 1e-3


def test_raftmlp_jit_vmap():
    f = jax.jit(jax.vmap(RAFT.apply, in_axes=(None, 0)))
    got = f(RAFT_VARS, np.stack([IMAGES, 2 * IMAGES]))
    assert_close(got[1], raft_reference(RAFT_P, 2 * IMAGES), rtol=1e-5)


@pytest.mark.parametrize("bad, match", [
    (dict(depths=(1,)), "depths has 1 entries but dims has 2"),
    (dict(raft_sizes=(3, 2)), "raft_size 3 must divide dim 4"),
    (dict(patch_sizes=(3, 2), embedding_kernels=((3,), (2,))), "must divide the level's input"),
    (dict(embedding_kernels=((2, 5), (2,))), "embedding_kernels"),
])
def test_raftmlp_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        RaftMLPConfig(**{**RAFT_TINY, **bad})


def test_raftmlp_presets():
    assert set(RAFT_PRESETS) == {"raftmlp_s", "raftmlp_m", "raftmlp_l"}
    with pytest.raises(ValueError, match="configured for images"):
        RAFT.apply(RAFT_VARS, np.zeros((1, 16, 16, 2), np.float32))
