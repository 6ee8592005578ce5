"""MLP-Mixer against independent computations: a NumPy forward pass written from the paper's
equations, and a Flax re-statement of the original `vit_jax/models_mixer.py` (stock `nn.Conv`,
`nn.Dense`, `nn.LayerNorm`, `nn.gelu`), whose parameters must load into ours unchanged."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.models.mixer import PRESETS, Mixer, MixerConfig
from tests.helpers.tiny_models import Recorder, assert_close, randomize

TINY = dict(num_classes=5, image_size=8, in_channels=2, patch_size=2, n_layers=2,
            d_model=12, d_mlp_tokens=10, d_mlp=20)
CFG = MixerConfig(**TINY)
MODEL = Mixer(CFG)
IMAGES = jax.random.normal(jax.random.key(1), (3, 8, 8, 2))
VARIABLES = randomize(MODEL.init(jax.random.key(0), IMAGES))  # head is zero-initialised
P = nn.meta.unbox(VARIABLES)["params"]


# -- independent computations ----------------------------------------------------------------
def _ln(x, p, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _dense(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def reference(params, images, hooks=None):
    """NumPy float64 Mixer forward; `hooks[site name](array) -> array` edits a site."""
    hooks = hooks or {}

    def site(name, x):
        return hooks[name](x) if name in hooks else x

    x = np.asarray(images, np.float64)
    b, h, w, c = x.shape
    p = CFG.patch_size
    # patch (i, j) -> token i * (w/p) + j, pixels flattened in (y, x, channel) order
    patches = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b, -1, p * p * c)
    kernel = np.asarray(params["stem"]["kernel"], np.float64).reshape(p * p * c, -1)
    x = site("hook_embed", patches @ kernel + np.asarray(params["stem"]["bias"]))
    for i in range(CFG.n_layers):
        blk = params[f"MixerBlock_{i}"]
        x = site(f"blocks.{i}.hook_resid_pre", x)
        y = _ln(x, blk["LayerNorm_0"]).transpose(0, 2, 1)  # [b, d_model, pos]
        tm = blk["token_mixing"]
        pre = site(f"blocks.{i}.token_mixing.hook_pre", _dense(y, tm["Dense_0"]))
        post = site(f"blocks.{i}.token_mixing.hook_post", _gelu_tanh(pre))
        y = site(f"blocks.{i}.hook_token_out", _dense(post, tm["Dense_1"]).transpose(0, 2, 1))
        x = site(f"blocks.{i}.hook_resid_mid", x + y)
        cm = blk["channel_mixing"]
        pre = site(f"blocks.{i}.channel_mixing.hook_pre", _dense(_ln(x, blk["LayerNorm_1"]),
                                                                 cm["Dense_0"]))
        post = site(f"blocks.{i}.channel_mixing.hook_post", _gelu_tanh(pre))
        y = site(f"blocks.{i}.hook_channel_out", _dense(post, cm["Dense_1"]))
        x = site(f"blocks.{i}.hook_resid_post", x + y)
    pooled = site("hook_pooled", _ln(x, params["pre_head_layer_norm"]).mean(1))
    return _dense(pooled, params["head"])


class MlpBlock(nn.Module):
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        y = nn.gelu(nn.Dense(self.mlp_dim)(x))  # Dense_0 (created first, so named first)
        return nn.Dense(x.shape[-1])(y)  # Dense_1


class MixerBlock(nn.Module):  # named as the original (Flax autonames submodules by class)
    tokens_mlp_dim: int
    channels_mlp_dim: int

    @nn.compact
    def __call__(self, x):
        y = jnp.swapaxes(nn.LayerNorm()(x), 1, 2)
        x = x + jnp.swapaxes(MlpBlock(self.tokens_mlp_dim, name="token_mixing")(y), 1, 2)
        return x + MlpBlock(self.channels_mlp_dim, name="channel_mixing")(nn.LayerNorm()(x))


class _OrigMixer(nn.Module):
    """The structure of google-research/vision_transformer's `MlpMixer`, from stock Flax layers."""

    patch: int
    num_classes: int
    num_blocks: int
    hidden_dim: int
    tokens_mlp_dim: int
    channels_mlp_dim: int

    @nn.compact
    def __call__(self, x):
        p = (self.patch, self.patch)
        x = nn.Conv(self.hidden_dim, p, strides=p, name="stem")(x)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        for _ in range(self.num_blocks):
            x = MixerBlock(self.tokens_mlp_dim, self.channels_mlp_dim)(x)
        x = nn.LayerNorm(name="pre_head_layer_norm")(x).mean(axis=1)
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(x)


# -- tests -----------------------------------------------------------------------------------
def test_forward_matches_numpy_reference():
    got = MODEL.apply(VARIABLES, IMAGES)
    assert got.shape == (3, 5) and got.dtype == jnp.float32
    assert_close(got, reference(P, IMAGES), rtol=1e-5)


def test_original_flax_checkpoint_maps_on_leaf_for_leaf():
    orig = _OrigMixer(CFG.patch_size, CFG.num_classes, CFG.n_layers, CFG.d_model,
                      CFG.d_mlp_tokens, CFG.d_mlp)
    orig_vars = randomize(orig.init(jax.random.key(3), IMAGES), seed=4)
    shapes = jax.tree.map(lambda x: x.shape, orig_vars["params"])
    assert shapes == jax.tree.map(lambda x: x.shape, P)  # same names, same shapes
    want = orig.apply(orig_vars, IMAGES)
    got = MODEL.apply(orig_vars, IMAGES)  # the original's parameters, unchanged
    assert_close(got, want, rtol=2e-5)


def test_sites_names_shapes_and_order():
    names = ji.sites(MODEL, IMAGES)
    b, n, d = 3, CFG.n_tokens, CFG.d_model
    block = {
        "hook_resid_pre": (b, n, d),
        "token_mixing.hook_pre": (b, d, CFG.d_mlp_tokens),
        "token_mixing.hook_post": (b, d, CFG.d_mlp_tokens),
        "hook_token_out": (b, n, d),
        "hook_resid_mid": (b, n, d),
        "channel_mixing.hook_pre": (b, n, CFG.d_mlp),
        "channel_mixing.hook_post": (b, n, CFG.d_mlp),
        "hook_channel_out": (b, n, d),
        "hook_resid_post": (b, n, d),
    }
    want = {"hook_image": (3, 8, 8, 2), "hook_embed": (b, n, d)}
    for i in range(CFG.n_layers):
        want.update({f"blocks.{i}.{k}": v for k, v in block.items()})
    want["hook_pooled"] = (b, d)
    assert list(names) == list(want)
    assert {k: v.shape for k, v in names.items()} == want


def test_capture_matches_reference_activations():
    seen = Recorder()
    wanted = ["blocks.1.token_mixing.hook_post", "blocks.0.hook_resid_mid", "hook_pooled"]
    reference(P, IMAGES, {k: seen.hook(k) for k in wanted})
    _, cache = ji.run(MODEL, VARIABLES, IMAGES, capture=wanted)
    for k in wanted:
        assert_close(cache[k], seen[k], rtol=1e-5, err_msg=k)


def test_zero_ablate_token_mixing_output_of_block_0():
    """Zero-ablating block 0's token-mixing output equals the reference with that term removed,
    and differs from the clean output."""
    iv = ji.Ablate("blocks.0.hook_token_out")
    got, _ = ji.run(MODEL, VARIABLES, IMAGES, interventions=[iv])
    want = reference(P, IMAGES, {"blocks.0.hook_token_out": np.zeros_like})
    assert_close(got, want, rtol=1e-5)
    assert np.abs(np.asarray(got) - reference(P, IMAGES)).max() > 1e-3


def test_scale_channel_neurons_and_ablate_token_neurons():
    mask = np.arange(CFG.d_mlp) % 3 == 0

    def scale(x):
        x = x.copy()
        x[..., mask] *= 0.25
        return x

    def drop(x):
        x = x.copy()
        x[..., 4] = 0.0
        return x

    ivs = [ji.Scale("blocks.1.channel_mixing.hook_post", np.where(mask, 0.25, 1.0)),
           ji.Clamp("blocks.0.token_mixing.hook_post", 0.0,
                    mask=np.arange(CFG.d_mlp_tokens) == 4)]
    got, _ = ji.run(MODEL, VARIABLES, IMAGES, interventions=ivs)
    want = reference(P, IMAGES, {"blocks.1.channel_mixing.hook_post": scale,
                                 "blocks.0.token_mixing.hook_post": drop})
    assert_close(got, want, rtol=1e-5)


def _scanned():
    model = Mixer(MixerConfig(**TINY, scan_layers=True))
    blocks = [P[f"MixerBlock_{i}"] for i in range(CFG.n_layers)]
    params = {k: v for k, v in P.items() if not k.startswith("MixerBlock_")}
    params["MixerBlock"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
    return model, {"params": params}


def test_scan_layers_same_numbers_sites_and_interventions():
    model, variables = _scanned()
    init_shapes = jax.eval_shape(model.init, jax.random.key(0), IMAGES)
    assert (jax.tree.map(lambda x: x.shape, nn.meta.unbox(init_shapes)["params"])
            == jax.tree.map(lambda x: x.shape, variables["params"]))
    assert list(ji.sites(model, IMAGES)) == list(ji.sites(MODEL, IMAGES))
    ivs = [ji.Ablate("blocks.1.hook_token_out")]
    capture = ["blocks.*.channel_mixing.hook_pre", "blocks.0.hook_resid_post"]
    out_u, cache_u = ji.run(MODEL, VARIABLES, IMAGES, capture=capture, interventions=ivs)
    out_s, cache_s = ji.run(model, variables, IMAGES, capture=capture, interventions=ivs)
    assert_close(out_s, out_u, rtol=1e-5)
    assert list(cache_s) == list(cache_u)
    for k in cache_u:
        assert_close(cache_s[k], cache_u[k], rtol=1e-5, err_msg=k)


def test_jit_and_vmap():
    @jax.jit
    def ablated(variables, images, scale):
        iv = ji.Scale("blocks.0.hook_token_out", scale)
        return ji.run(MODEL, variables, images, interventions=[iv])[0]

    scales = jnp.array([0.0, 1.0])
    got = jax.vmap(ablated, in_axes=(None, None, 0))(VARIABLES, IMAGES, scales)
    assert_close(got[0], reference(P, IMAGES, {"blocks.0.hook_token_out": np.zeros_like}))
    assert_close(got[1], MODEL.apply(VARIABLES, IMAGES))
    stacked = jnp.stack([IMAGES, -IMAGES])
    got = jax.vmap(MODEL.apply, in_axes=(None, 0))(VARIABLES, stacked)
    assert_close(got[1], reference(P, -IMAGES), rtol=1e-5)


def test_presets_are_registered_and_buildable():
    for name in ("mixer_s32", "mixer_s16", "mixer_b32", "mixer_b16", "mixer_l16"):
        assert name in PRESETS
        model = PRESETS[name].module(PRESETS[name].config(**PRESETS[name].fields))
        assert isinstance(model, Mixer)
    small = PRESETS["mixer_s16"].config(**{**PRESETS["mixer_s16"].fields, "n_layers": 1})
    out = jax.eval_shape(Mixer(small).init_with_output, jax.random.key(0),
                         jnp.zeros((2, 224, 224, 3)))[0]
    assert out.shape == (2, 1000)


@pytest.mark.parametrize("bad, match", [
    (dict(patch_size=3), "patch_size=3 must be positive and divide"),
    (dict(n_layers=0), "n_layers must be a positive int"),
    (dict(act_fn="swish"), "unknown activation"),
    (dict(dtype="float99"), "is not a dtype"),
])
def test_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        MixerConfig(**{**TINY, **bad})


@pytest.mark.parametrize("images, match", [
    (jnp.zeros((3, 8, 8)), "NHWC"),
    (jnp.zeros((3, 8, 8, 2), jnp.int32), "float images"),
    (jnp.zeros((3, 16, 16, 2)), "configured for images of shape"),
    (jnp.zeros((3, 8, 8, 3)), "configured for images of shape"),
])
def test_input_errors(images, match):
    with pytest.raises(ValueError, match=match):
        MODEL.apply(VARIABLES, images)

