"""Strip-MLP against a NumPy float64 re-implementation written from the reference code
(Med-Process/Strip_MLP `models/strip_mlp.py`) in its own NCHW layout, with its own view /
permute sequence and torch Conv2d semantics (grouped cross-correlation, zero padding), on a
tiny configuration with randomised parameters and BatchNorm statistics; and the parameter
counts of the presets.

Parameter counts. Formula below, written from the reference's layer list (`StripMLPNet`,
`BasicBlock`, `TokenMixing`, `DepthWise_Conv` / `BN_Activ_Conv`, `StripMLP_Block`,
`RelativePosition`, `Mlp`, `ChannelMixing`, `GRN`) with the configs
`configs/smlp_{tiny_light,tiny,small,base}_alpha3_patch4_224_imagenet1k.yaml`. It counts
BatchNorm weight and bias but not the running mean / variance: torch keeps those as buffers,
not parameters, so `sum(p.numel() for p in model.parameters())` and ptflops (which the
reference uses to report its size) leave them out; ours are in `batch_stats`, not `params`.
Published: the reference README table "#Params": T* 18M, T 25M, S 43M, B 57M (checked as
rounded millions).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

import jaxinterp as ji
from jaxinterp.layers.vision import count_params
from jaxinterp.models.registry import build
from jaxinterp.models.strip_mlp import (
    PRESETS,
    StripMLP,
    StripMLPConfig,
    reference_strip_groups,
)
from tests.helpers.tiny_models import Recorder, assert_close, assert_site_shapes

TINY = dict(num_classes=3, image_size=32, in_channels=2, patch_size=2, d_model=8,
            n_layers=(1, 1, 2, 1), strip_groups=2, drop_path_rate=0.0)
CFG = StripMLPConfig(**TINY)
MODEL = StripMLP(CFG)
IMAGES = jax.random.normal(jax.random.key(1), (2, 32, 32, 2))


def _variables():
    """Random parameters and running statistics, drawn in NumPy on the shapes of
    `MODEL.init` (under eval_shape: compiling the initialisers would dominate the test time).
    Everything is away from its init value (norm scales ~1 +- 0.2, running variances in
    [0.5, 1.5]) so that every term of the reference is exercised."""
    shapes = jax.eval_shape(MODEL.init, jax.random.key(0), IMAGES)
    rng = np.random.default_rng(0)

    def fill(path, a):
        keys = [k.key for k in path if hasattr(k, "key")]  # dict keys (boxes add .value)
        if "var" in keys:
            return jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype)
        if "batch_stats" in keys:
            return jnp.asarray(0.2 * rng.normal(size=a.shape), a.dtype)
        fan_in = int(np.prod(a.shape[:-1])) if len(a.shape) > 1 else 1
        std = 1.0 / np.sqrt(fan_in) if len(a.shape) > 1 else 0.2
        base = 1.0 if keys[-1] == "scale" else 0.0
        return jnp.asarray(base + std * rng.normal(size=a.shape), a.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


VARS = _variables()
P = jax.tree.map(lambda a: np.asarray(a, np.float64), nn.meta.unbox(VARS["params"]))
S = jax.tree.map(lambda a: np.asarray(a, np.float64), VARS["batch_stats"])


# -- NumPy reference (NCHW, torch semantics) ---------------------------------------------------
def _gelu(x):  # torch nn.GELU(): exact
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def conv2d(x, w, stride=1, pad=(0, 0), groups=1, bias=None):
    """torch F.conv2d: x [N, Cin, H, W], w [Cout, Cin / groups, kh, kw] (cross-correlation)."""
    n, _, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - kh) // stride + 1
    ow = (wd + 2 * pad[1] - kw) // stride + 1
    xg = xp.reshape(n, groups, cg, *xp.shape[2:])
    wg = w.reshape(groups, cout // groups, cg, kh, kw)
    out = np.zeros((n, groups, cout // groups, oh, ow))
    for dy in range(kh):
        for dx in range(kw):
            patch = xg[:, :, :, dy:dy + stride * (oh - 1) + 1:stride,
                       dx:dx + stride * (ow - 1) + 1:stride]
            out += np.einsum("ngchw,goc->ngohw", patch, wg[:, :, :, dy, dx])
    out = out.reshape(n, cout, oh, ow)
    return out if bias is None else out + bias[None, :, None, None]


def _oihw(p):  # our HWIO kernel -> torch weight
    return p["kernel"].transpose(3, 2, 0, 1)


def _conv1x1(x, p):  # our Dense (kernel [in, out], bias) as torch Conv2d(1x1) on NCHW
    return np.einsum("nchw,co->nohw", x, p["kernel"]) + p["bias"][None, :, None, None]


def _bn(x, p, s, eps, train=False, record=None):
    """BatchNorm2d on NCHW: running statistics, or (train) biased batch statistics."""
    if train:
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
        if record is not None:
            record.append((mean, var))
    else:
        mean, var = s["mean"], s["var"]
    r = lambda a: a[None, :, None, None]
    return (x - r(mean)) / np.sqrt(r(var) + eps) * r(p["scale"]) + r(p["bias"])


def _strip_proj_weight(p):
    """Our [3, C2, n_in, n_out] strip kernel -> torch proj_h/proj_w weight [C2 n, n, 1, 3]."""
    k = p["kernel"]
    c2, n = k.shape[1], k.shape[2]
    return k.transpose(1, 3, 2, 0).reshape(c2 * n, n, 1, 3), p["bias"].reshape(c2 * n)


def _rel_pos(table, h, w):  # RelativePosition.forward(h, w) -> [1, D, h, w]
    n = (table.shape[0] - 1) // 2
    dist = np.clip(np.arange(w)[None, :] - np.arange(h)[:, None], -n, n) + n
    return table[dist][None].transpose(0, 3, 1, 2)


def strip_mlp_ref(x, p, s, groups, hook, train, rec):
    """`StripMLP_Block.strip_mlp` step by step (x [N, D, H, W])."""
    n, c, h, w = x.shape
    c2 = c // groups  # self.C
    c1 = c // c2
    pos_h = _rel_pos(p["relate_pos_h"], h, w)
    pos_w = _rel_pos(p["relate_pos_w"], h, w)
    wh, bh = _strip_proj_weight(p["proj_h"])
    ww, bw = _strip_proj_weight(p["proj_w"])
    x_h = (x + pos_h).reshape(n, c1, c2, h, w)
    x_h = x_h.transpose(0, 1, 3, 2, 4).reshape(n, c1, h, c2 * w)
    x_h = conv2d(x_h.transpose(0, 3, 1, 2), wh, pad=(0, 1), groups=c2, bias=bh)
    x_h = x_h.transpose(0, 2, 3, 1)
    x_h = x_h.reshape(n, c1, h, c2, w).transpose(0, 1, 3, 2, 4).reshape(n, c, h, w)
    x_h = hook("row", x_h)
    x_h = conv2d(np.concatenate([x_h, x], 1), _oihw(p["fuse_h"]))
    x_h = _gelu(_bn(x_h, p["norm"], s["norm"], CFG.bn_eps, train, rec)) + pos_w
    x_w = conv2d(x_h.reshape(n, c1, h * c2, w).transpose(0, 2, 1, 3), ww, pad=(0, 1),
                 groups=c2, bias=bw).transpose(0, 2, 1, 3)
    x_w = x_w.reshape(n, c1, c2, h, w).reshape(n, c, h, w)
    x_w = hook("col", x_w)
    return conv2d(np.concatenate([x, x_w], 1), _oihw(p["fuse_w"]))


def block_ref(x, p, s, groups, hook, train, rec):
    """`BasicBlock.forward` (drop path off)."""
    n, c = x.shape[:2]
    eps = CFG.bn_eps
    # TokenMixing: dwsc, then smlp_block
    y = conv2d(_gelu(_bn(x, p["dw_norm"], s["dw_norm"], eps, train, rec)), _oihw(p["dwconv"]),
               pad=(1, 1), groups=c)
    y = _gelu(_bn(_conv1x1(y, p["proj"]), p["proj_norm"], s["proj_norm"], eps, train, rec))
    x_1, x_2 = y[:, :c // 2], y[:, c // 2:]
    x_1 = strip_mlp_ref(x_1, p["strip_mixing"], s["strip_mixing"], groups, hook, train, rec)
    lp = p["local_mixing"]
    d = c // 2
    x_w = conv2d(x_2, _oihw(lp["fc_h"]), pad=(1, 3), groups=d)
    x_h = hook("local_h", conv2d(x_2, _oihw(lp["fc_w"]), pad=(3, 1), groups=d))
    att = (x_h + x_w + x_2).mean((2, 3), keepdims=True)
    att = _conv1x1(_gelu(_conv1x1(att, lp["reweight_fc1"])), lp["reweight_fc2"])
    att = att.reshape(n, d, 3).transpose(2, 0, 1)
    att = np.exp(att - att.max(0)) / np.exp(att - att.max(0)).sum(0)
    att = hook("weights", att)[..., None, None]
    x_2 = x_h * att[0] + x_w * att[1] + x_2 * att[2]
    y = conv2d(np.concatenate([x_1, x_2], 1), _oihw(p["fuse"]))
    x = x + hook("token_out", y)
    # ChannelMixing (NHWC inside, as in the reference)
    cp = p["channel_mixing"]
    y = conv2d(x, _oihw(cp["conv_77"]), pad=(3, 3), groups=c).transpose(0, 2, 3, 1)
    mu = y.mean(-1, keepdims=True)
    y = (y - mu) / np.sqrt(((y - mu) ** 2).mean(-1, keepdims=True) + CFG.ln_eps)
    y = y * cp["layer_norm"]["scale"] + cp["layer_norm"]["bias"]
    y = _gelu(y @ cp["fc1"]["kernel"] + cp["fc1"]["bias"])
    y = hook("mlp_post", y)
    gx = np.sqrt((y * y).sum((1, 2), keepdims=True))
    nx = gx / (gx.mean(-1, keepdims=True) + 1e-6)
    y = cp["grn"]["gamma"] * (y * nx) + cp["grn"]["beta"] + y
    y = (y @ cp["fc2"]["kernel"] + cp["fc2"]["bias"]).transpose(0, 3, 1, 2)
    return x + y


def reference(images, hooks=None, train=False, rec=None):
    """`StripMLPNet.forward`; hooks {"{block}.{name}": fn} edit intermediate values (NCHW)."""
    hooks = hooks or {}
    p, s = P, S
    x = np.asarray(images, np.float64).transpose(0, 3, 1, 2)
    x = conv2d(x, _oihw(p["patch_embed"]), stride=CFG.patch_size)
    index = 0

    def blocks(stage, x):
        nonlocal index
        for j in range(CFG.n_layers[stage]):
            name = f"blocks{stage + 1}_{j}"
            i = index

            def hook(key, v, i=i):
                return hooks.get(f"{i}.{key}", lambda a: a)(v)

            x = block_ref(x, p[name], s.get(name, {}), CFG.groups(stage), hook, train, rec)
            index += 1
        return x

    def grouped(name, x):
        return conv2d(x, _oihw(p[name]), stride=2, groups=x.shape[1])

    x = blocks(0, x)
    x = conv2d(x, _oihw(p["merging1"]), stride=2)
    x_s1_14 = grouped("conv_s1_28", x)
    x_s1_7 = grouped("conv_s1_14", x_s1_14)
    x = blocks(1, x)
    x = conv2d(x, _oihw(p["merging2"]), stride=2)
    x_s2_7 = grouped("conv_s2_14", x)
    x = blocks(2, x + x_s1_14)
    x = conv2d(x, _oihw(p["merging3"]), stride=2)
    x = blocks(3, x + x_s1_7 + x_s2_7)
    x = _bn(x, p["norm"], s["norm"], CFG.bn_eps, train, rec).mean((2, 3))
    return x @ p["head"]["kernel"] + p["head"]["bias"]


# -- forward, sites, interventions -------------------------------------------------------------
def test_matches_reference():
    want = reference(IMAGES)
    assert np.abs(want).max() > 0.1
    assert_close(MODEL.apply(VARS, IMAGES), want, rtol=1e-4)


def test_sites():
    assert_site_shapes(ji.sites(MODEL, IMAGES), {
        "hook_embed": (2, 16, 16, 8), "blocks.0.strip_mixing.hook_row": (2, 16, 16, 4),
        "blocks.1.strip_mixing.hook_col": (2, 8, 8, 8),
        "blocks.2.local_mixing.hook_weights": (2, 16, 3),
        "blocks.4.channel_mixing.hook_post": (2, 2, 2, 192),
        "blocks.3.hook_token_out": (2, 4, 4, 32), "hook_stage4_in": (2, 2, 2, 64),
        "hook_pooled": (2, 64)}, n_blocks=5)


def test_captured_strips_have_the_reference_layout():
    """The row / column strip outputs and the branch weights equal the reference's tensors
    (NCHW -> NHWC; att [3, N, D] -> [N, D, 3]) in block 1 (C2 = 4 channel slots, C1 = 2)."""
    seen = Recorder()
    reference(IMAGES, {"1.row": seen.hook("row"), "1.col": seen.hook("col"),
                       "1.weights": seen.hook("weights")})
    _, cache = ji.run(MODEL, VARS, IMAGES, capture=["blocks.1.strip_mixing.hook_*",
                                                    "blocks.1.local_mixing.hook_weights"])
    assert_close(cache["blocks.1.strip_mixing.hook_row"], seen["row"].transpose(0, 2, 3, 1),
                 rtol=1e-4)
    assert_close(cache["blocks.1.strip_mixing.hook_col"], seen["col"].transpose(0, 2, 3, 1),
                 rtol=1e-4)
    assert_close(cache["blocks.1.local_mixing.hook_weights"], seen["weights"].transpose(1, 2, 0),
                 rtol=1e-4)


def test_ablations_match_reference_with_the_term_removed():
    """Zero block 1's column strip MLP, block 2's 7x3 local branch and block 3's whole token
    mixing; clamp hidden unit 5 of block 0's channel MLP to 0."""
    def zero_unit5(v):
        v = v.copy()
        v[..., 5] = 0.0
        return v

    ivs = [ji.Ablate("blocks.1.strip_mixing.hook_col"),
           ji.Ablate("blocks.2.local_mixing.hook_h"),
           ji.Ablate("blocks.3.hook_token_out"),
           ji.Clamp("blocks.0.channel_mixing.hook_post", 0.0, mask=np.arange(24) == 5)]
    got, _ = ji.run(MODEL, VARS, IMAGES, interventions=ivs)
    want = reference(IMAGES, {"1.col": np.zeros_like, "2.local_h": np.zeros_like,
                              "3.token_out": np.zeros_like, "0.mlp_post": zero_unit5})
    assert_close(got, want, rtol=1e-4)
    assert np.abs(np.asarray(got) - reference(IMAGES)).max() > 1e-2
    # one ablation alone also matches (the column strip of block 1)
    got1, _ = ji.run(MODEL, VARS, IMAGES, interventions=ivs[0])
    assert_close(got1, reference(IMAGES, {"1.col": np.zeros_like}), rtol=1e-4)


def test_train_mode_uses_batch_statistics():
    """train=True: every BatchNorm normalises with the batch's (biased) statistics, and the
    running averages move by momentum 0.9 (torch momentum 0.1)."""
    rec = []
    want = reference(IMAGES, train=True, rec=rec)
    got, state = MODEL.apply(VARS, IMAGES, train=True, mutable=["batch_stats"])
    assert_close(got, want, rtol=1e-4)
    mean, var = rec[-1]  # the final norm is the last BatchNorm applied
    new = state["batch_stats"]["norm"]
    assert_close(new["mean"], 0.9 * S["norm"]["mean"] + 0.1 * mean, rtol=1e-4)
    assert_close(new["var"], 0.9 * S["norm"]["var"] + 0.1 * var, rtol=1e-4)
    with pytest.raises(ValueError, match="mutable=\\['batch_stats'\\]"):
        MODEL.apply(VARS, IMAGES, train=True)


def test_drop_path_in_training_only():
    model = StripMLP(StripMLPConfig(**{**TINY, "drop_path_rate": 0.5}))
    assert_close(model.apply(VARS, IMAGES), MODEL.apply(VARS, IMAGES), rtol=1e-6)
    with pytest.raises(ValueError, match="dropout rng"):
        model.apply(VARS, IMAGES, train=True, mutable=["batch_stats"])
    a, _ = model.apply(VARS, IMAGES, train=True, mutable=["batch_stats"],
                       rngs={"dropout": jax.random.key(0)})
    b, _ = model.apply(VARS, IMAGES, train=True, mutable=["batch_stats"],
                       rngs={"dropout": jax.random.key(1)})
    ref, _ = MODEL.apply(VARS, IMAGES, train=True, mutable=["batch_stats"])
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
    assert np.abs(np.asarray(a) - np.asarray(ref)).max() > 1e-3


def test_jit_vmap():
    f = jax.jit(jax.vmap(MODEL.apply, in_axes=(None, 0)))
    got = f(VARS, jnp.stack([IMAGES, 2 * IMAGES]))
    assert_close(got[1], reference(2 * IMAGES), rtol=1e-4)


@pytest.mark.parametrize("bad, match", [
    (dict(n_layers=(1, 1, 2)), "4 positive ints"),
    (dict(n_layers=(1, 0, 2, 1)), "4 positive ints"),
    (dict(image_size=24), "divisible by patch_size"),
    (dict(strip_groups=3), "divisible by strip_groups=3"),
    (dict(d_model=6, strip_groups=None), "divisible by strip_groups=4"),
    (dict(drop_path_rate=1.0), "drop_path_rate"),
    (dict(alpha=0), "alpha"),
    (dict(act_fn="swish"), "unknown activation"),
])
def test_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        StripMLPConfig(**{**TINY, **bad})


def test_input_errors():
    with pytest.raises(ValueError, match="configured for images"):
        MODEL.apply(VARS, np.zeros((1, 16, 16, 2), np.float32))
    with pytest.raises(ValueError, match="float images"):
        MODEL.apply(VARS, np.zeros((1, 32, 32, 2), np.int32))


# -- presets and parameter counts --------------------------------------------------------------
def test_reference_strip_groups():
    """`patch = 2 if channels % 80 == 0 else 4` (StripMLP_Block)."""
    assert [reference_strip_groups(c) for c in (80, 160, 320, 640)] == [2, 2, 2, 2]
    assert [reference_strip_groups(c) for c in (96, 192, 384, 768, 112, 896)] == [4] * 6


def _bn_params(c):
    return 2 * c  # weight, bias (running stats are buffers)


def block_count(c: int, n: int, alpha: int = 3) -> int:
    """Parameters of one `BasicBlock(c, n, n, alpha)` from the reference's layer list."""
    d = c // 2
    c2 = int(c * 0.5 / (2 if c % 80 == 0 else 4))  # self.C
    dwsc = _bn_params(c) + 9 * c  # BN, Conv2d(c, c, 3, groups=c, bias=False)
    smlp = (
        2 * (3 * n * c2 * n + c2 * n)  # proj_h, proj_w: Conv2d(n c2, c2 n, (1, 3), groups=c2)
        + 2 * c * d  # fuse_h, fuse_w: Conv2d(c, c/2, 1, bias=False)
        + _bn_params(d)  # BN
        + c * c + c + _bn_params(c)  # mlp: Conv2d(c, c, 1), BatchNorm2d(c)
        + 2 * 21 * d  # fc_h (3x7), fc_w (7x3) depthwise, no bias
        + d * (d // 2) + d // 2 + (d // 2) * 3 * d + 3 * d  # reweight Mlp(d, d/2, 3d)
        + c * c  # fuse
        + 2 * (2 * n + 1) * d  # relate_pos_h, relate_pos_w tables
    )
    channel = (49 * c + 2 * c + c * alpha * c + alpha * c + alpha * c * c + c
               + 2 * 3 * c)  # conv_77, layer_norm, fc1, fc2, GRN(3c) gamma and beta
    return dwsc + smlp + channel


def strip_mlp_count(e: int, depths: tuple[int, ...], classes: int = 1000) -> int:
    total = 3 * 4 * 4 * e  # patch_embed: Conv2d(3, e, 4, 4, bias=False)
    for s, depth in enumerate(depths):
        total += depth * block_count(e * 2 ** s, 56 // 2 ** s)
    total += 4 * (e * 2 * e + 2 * e * 4 * e + 4 * e * 8 * e)  # merging1..3 (2x2, no bias)
    total += 4 * (4 * e + 8 * e + 8 * e)  # conv_s1_28, conv_s1_14, conv_s2_14 (1 in / group)
    return total + _bn_params(8 * e) + 8 * e * classes + classes  # norm, head


REFERENCE = {  # name: (embed_dim, layers, README "#Params" in millions)
    "strip_mlp_t_light": (80, (2, 2, 6, 2), 18),
    "strip_mlp_t": (80, (2, 2, 12, 2), 25),
    "strip_mlp_s": (96, (2, 2, 18, 2), 43),
    "strip_mlp_b": (112, (2, 2, 18, 2), 57),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_preset_param_counts(name):
    assert set(PRESETS) == set(REFERENCE)
    model = build(name)
    shapes = jax.eval_shape(model.init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
    got = count_params(shapes["params"])
    e, depths, published_m = REFERENCE[name]
    assert got == strip_mlp_count(e, depths)
    assert round(got / 1e6) == published_m
