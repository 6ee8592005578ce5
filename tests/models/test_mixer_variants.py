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
from tests.helpers.tiny_models import Recorder, assert_close, assert_site_shapes, randomize


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

RAFT_TINY = dict(num_classes=3, image_size=8, in_channels=2, d_model=(4, 8), n_layers=(1, 2),
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
    for lvl, (dim, depth, s, r, ks) in enumerate(zip(c.d_model, c.n_layers, c.patch_sizes,
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
    # block 0 (level 0): r=2, h=w=4 -> hidden 2 * r * h = 16, rows (co=2, w=4)
    assert_site_shapes(ji.sites(RAFT, IMAGES), {
        "levels_0.hook_embed": (2, 4, 4, 4), "levels_1.hook_embed": (2, 2, 2, 8),
        "blocks.0.vertical_mixing.mlp.hook_post": (2, 2, 4, 16),
        "blocks.2.horizontal_mixing.mlp.hook_pre": (2, 4, 2, 8),
        "blocks.2.channel_mixing.hook_post": (2, 2, 2, 32), "hook_pooled": (2, 8)}, n_blocks=3)


def test_raftmlp_hidden_units_have_the_reference_layout():
    seen = Recorder()
    raft_reference(RAFT_P, IMAGES, {"0.vertical.hook_post": seen.hook("h")})
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
    (dict(n_layers=(1,)), "n_layers has 1 entries but d_model has 2"),
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


# -- MS-MLP -----------------------------------------------------------------------------------
from jaxinterp.models.ms_mlp import MSMLP, MSMLPConfig, chunk_sizes  # noqa: E402

MS_TINY = dict(num_classes=3, image_size=8, in_channels=2, patch_size=2, d_model=10,
               n_layers=(1, 2), shift_size=3, shift_dist=(-1, 0, 1),
               mix_size=((1, 3, 3), (1, 1, 3)), layer_scale_init=0.5)
MS_CFG = MSMLPConfig(**MS_TINY)
MS = MSMLP(MS_CFG)
MS_VARS = randomize(MS.init(jax.random.key(0), IMAGES))
MS_P = nn.meta.unbox(MS_VARS)["params"]


def _conv_patch(x, p, k):
    """torch Conv2d(kernel=stride=k) on NCHW x with our HWIO kernel."""
    b, c, h, w = x.shape
    patches = x.reshape(b, c, h // k, k, w // k, k).transpose(0, 2, 4, 3, 5, 1)  # b i j y x c
    out = np.einsum("bijyxc,yxco->boij", patches, np.asarray(p["kernel"], np.float64))
    return out + np.asarray(p["bias"])[None, :, None, None]


def _depthwise(x, p, k):
    """torch Conv2d(C, C, k, padding=k//2, groups=C) on NCHW x (cross-correlation)."""
    w = np.asarray(p["kernel"], np.float64)[:, :, 0, :]  # [k, k, C]
    pad = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    h, wd = x.shape[2:]
    out = sum(xp[:, :, dy:dy + h, dx:dx + wd] * w[dy, dx][None, :, None, None]
              for dy in range(k) for dx in range(k))
    return out + np.asarray(p["bias"])[None, :, None, None]


def _ln_cf(x, p, eps):  # LayerNorm over channels of NCHW x
    return _ln(x.transpose(0, 2, 3, 1), p, eps).transpose(0, 3, 1, 2)


def ms_reference(params, images, hooks=None):
    """MS-MLP forward following JegZheng/MS-MLP `ms_mlp.py` in NCHW; hooks "{i}.mlp_out" edit a
    block's gamma-scaled MLP output, "{i}.mix_lr" its left-right branch (both NCHW)."""
    hooks = hooks or {}
    c = MS_CFG
    eps = c.eps
    x = np.asarray(images, np.float64).transpose(0, 3, 1, 2)
    x = _ln_cf(_conv_patch(x, params["patch_embed"]["proj"], c.patch_size),
               params["patch_embed"]["norm"], eps)
    block = 0
    for s, depth in enumerate(c.n_layers):
        sp = params[f"layers_{s}"]
        for j in range(depth):
            bp = sp[f"blocks_{j}"]
            sizes = chunk_sizes(x.shape[1], c.shift_size)
            xs = np.split(x, np.cumsum(sizes)[:-1], axis=1)
            lr = [_depthwise(np.roll(xg, sh, 3), bp[f"dwconv_lr_{g}"], k)
                  for g, (xg, sh, k) in enumerate(zip(xs, c.shift_dist, c.mix_size[s],
                                                      strict=True))]
            td = [_depthwise(np.roll(xg, sh, 2), bp[f"dwconv_td_{g}"], k)
                  for g, (xg, sh, k) in enumerate(zip(xs, c.shift_dist, c.mix_size[s],
                                                      strict=True))]
            lr = hooks.get(f"{block}.mix_lr", lambda v: v)(np.concatenate(lr, 1))
            y = (lr + np.concatenate(td, 1)).transpose(0, 2, 3, 1)
            y = _ln(y, bp["norm"], eps)
            y = _dense(_gelu(_dense(y, bp["mlp"]["pwconv1"])), bp["mlp"]["pwconv2"])
            y = (np.asarray(bp["gamma"]) * y).transpose(0, 3, 1, 2)
            x = x + hooks.get(f"{block}.mlp_out", lambda v: v)(y)
            block += 1
        if s < len(c.n_layers) - 1:
            x = _ln_cf(_conv_patch(x, sp["downsample"]["proj"], 2), sp["downsample"]["norm"],
                       eps)
    pooled = _ln(x.mean((2, 3)), params["norm"], eps)
    return _dense(pooled, params["head"])


def test_chunk_sizes_match_torch_chunk():
    """torch.chunk(torch.zeros(d), n) sizes, written out: ceil(d/n) each, the rest last."""
    assert chunk_sizes(96, 5) == (20, 20, 20, 20, 16)
    assert chunk_sizes(192, 5) == (39, 39, 39, 39, 36)
    assert chunk_sizes(10, 3) == (4, 4, 2)
    assert chunk_sizes(20, 3) == (7, 7, 6)


def test_msmlp_matches_reference():
    assert_close(MS.apply(MS_VARS, IMAGES), ms_reference(MS_P, IMAGES), rtol=1e-5)


def test_msmlp_sites():
    assert_site_shapes(ji.sites(MS, IMAGES), {
        "hook_embed": (2, 4, 4, 10), "blocks.0.mlp.hook_post": (2, 4, 4, 40),
        "blocks.2.hook_mix_lr": (2, 2, 2, 20), "hook_pooled": (2, 20)}, n_blocks=3)


def test_msmlp_ablations():
    """Zero-ablate block 1's MLP output; Patch block 0's left-right branch with zeros on the
    first 4 channels (the shift-left group)."""
    def zero_group0(v):
        v = v.copy()
        v[:, :4] = 0.0
        return v

    mask = np.arange(10) < 4
    _, cache = ji.run(MS, MS_VARS, IMAGES, capture="blocks.0.hook_mix_lr")
    patched = np.where(mask, 0.0, np.asarray(cache["blocks.0.hook_mix_lr"]))
    ivs = [ji.Ablate("blocks.1.hook_mlp_out"), ji.Patch("blocks.0.hook_mix_lr", patched)]
    got, _ = ji.run(MS, MS_VARS, IMAGES, interventions=ivs)
    want = ms_reference(MS_P, IMAGES, {"1.mlp_out": np.zeros_like, "0.mix_lr": zero_group0})
    assert_close(got, want, rtol=1e-5)
    assert np.abs(np.asarray(got) - ms_reference(MS_P, IMAGES)).max() > 1e-3


def test_msmlp_jit_vmap():
    got = jax.jit(jax.vmap(MS.apply, in_axes=(None, 0)))(MS_VARS, np.stack([IMAGES, -IMAGES]))
    assert_close(got[1], ms_reference(MS_P, -IMAGES), rtol=1e-5)


@pytest.mark.parametrize("bad, match", [
    (dict(mix_size=((1, 3, 3),)), "mix_size has 1 stages"),
    (dict(mix_size=((1, 2, 3), (1, 1, 3))), "odd kernel sizes"),
    (dict(shift_dist=(0, 1)), "needs shift_size=3"),
    (dict(image_size=6), "must be divisible"),
])
def test_msmlp_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        MSMLPConfig(**{**MS_TINY, **bad})
