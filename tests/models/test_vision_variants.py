"""Deep MLP, Activator and NiNformer against NumPy forwards written from the reference code
(scaling_mlps BottleneckMLP, Abdullah-88/Activator, Abdullah-88/NiNformer), each with one site
ablated through `jaxinterp.run`, plus sites, scan == unrolled and input errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

import jaxinterp as ji
from jaxinterp.models.activator import Activator, ActivatorConfig
from jaxinterp.models.deep_mlp import DeepMLP, DeepMLPConfig
from jaxinterp.models.ninformer import NiNformer, NiNformerConfig
from tests.helpers.tiny_models import assert_close, randomize

IMAGES = jax.random.normal(jax.random.key(1), (3, 8, 8, 2))


def build(model):
    return model, randomize(model.init(jax.random.key(0), IMAGES))


def params_of(variables):
    unstacked = ji.models.unstack_layers(variables)["params"]
    return jax.tree.map(lambda a: np.asarray(a, np.float64), unstacked)


def gelu(x):
    return x * 0.5 * (1 + erf(x / np.sqrt(2)))


def ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def patches(P, images, p):
    x = np.asarray(images, np.float64)
    b, h, w, _ = x.shape
    wp = P["patch_embed"]["W_patch"].reshape(-1, P["patch_embed"]["W_patch"].shape[-1])
    toks = [x[:, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(b, -1) @ wp
            for i in range(h // p) for j in range(w // p)]
    return np.stack(toks, 1) + P["patch_embed"]["b_patch"]


def mlp(m, x, hook=lambda t: t):
    return hook(gelu(x @ m["W_in"] + m["b_in"])) @ m["W_out"] + m["b_out"]


def ident(t):
    return t


# ------------------------------------------------------------------ deep MLP
def numpy_deep_mlp(P, images, c, hooks):
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    x = x @ P["linear_in"]["W"] + P["linear_in"]["b"]
    for i in range(c.n_layers):
        B = P[f"blocks_{i}"]
        h = ln(x, B["ln"]["w"], B["ln"]["b"], c.eps)
        x = x + mlp(B["mlp"], h, hooks.get(f"blocks.{i}.mlp.hook_post", ident))
    return x @ P["linear_out"]["W"] + P["linear_out"]["b"]


# ------------------------------------------------------------------ Activator
def numpy_activator(P, images, c, hooks):
    x = patches(P, images, c.patch_size)
    for i in range(c.n_layers):
        B = P[f"blocks_{i}"]
        g = B["gate"]
        h = ln(x, B["ln"]["w"], B["ln"]["b"], c.eps)
        u = ln(gelu(h @ g["W_1"] + g["b_1"]), g["ln"]["w"], g["ln"]["b"], c.eps)
        v = ln(h @ g["W_2"] + g["b_2"], g["ln"]["w"], g["ln"]["b"], c.eps)
        gated = hooks.get(f"blocks.{i}.gate.hook_gated", ident)(u * v)
        x = x + gated @ g["W_3"] + g["b_3"]
        if c.ffn:
            x = x + mlp(B["mlp"], ln(x, B["ln"]["w"], B["ln"]["b"], c.eps))
    return x.mean(1) @ P["head"]["W_head"] + P["head"]["b_head"]


# ------------------------------------------------------------------ NiNformer
def numpy_ninformer(P, images, c, hooks):
    x = patches(P, images, c.patch_size)
    for i in range(c.n_layers):
        B = P[f"blocks_{i}"]
        g, mx = B["gate"], B["gate"]["mixer"]
        h = ln(x, B["ln"]["w"], B["ln"]["b"], c.eps)
        u = h @ g["W_proj"] + g["b_proj"]
        t = ln(h, mx["ln_token"]["w"], mx["ln_token"]["b"], c.eps).transpose(0, 2, 1)
        hook = hooks.get(f"blocks.{i}.gate.mixer.token_mixing.hook_post", ident)
        y = h + mlp(mx["token_mixing"], t, hook).transpose(0, 2, 1)
        v = y + mlp(mx["channel_mixing"], ln(y, mx["ln_channel"]["w"], mx["ln_channel"]["b"],
                                             c.eps))
        x = x + u * v
        x = x + mlp(B["mlp"], ln(x, B["ln"]["w"], B["ln"]["b"], c.eps))
    return x.mean(1) @ P["head"]["W_head"] + P["head"]["b_head"]


def zero_every_third(t):
    t = t.copy()
    t[..., ::3] = 0
    return t


CASES = {
    "deep_mlp": (lambda **o: DeepMLP(DeepMLPConfig(
        image_size=8, in_channels=2, num_classes=5, n_layers=2, d_model=12, expansion=3,
        init_range=0.3, **o)), numpy_deep_mlp, "blocks.1.mlp.hook_post"),
    "activator": (lambda **o: Activator(ActivatorConfig(
        image_size=8, patch_size=2, in_channels=2, num_classes=5, n_layers=2, d_model=12,
        d_mlp=20, init_range=0.3, **o)), numpy_activator, "blocks.0.gate.hook_gated"),
    "activator_glu_only": (lambda **o: Activator(ActivatorConfig(
        image_size=8, patch_size=2, in_channels=2, num_classes=5, n_layers=2, d_model=12,
        d_mlp=20, init_range=0.3, ffn=False, **o)), numpy_activator, "blocks.1.gate.hook_gated"),
    "ninformer": (lambda **o: NiNformer(NiNformerConfig(
        image_size=8, patch_size=2, in_channels=2, num_classes=5, n_layers=2, d_model=12,
        d_mlp=20, init_range=0.3, **o)), numpy_ninformer,
        "blocks.1.gate.mixer.token_mixing.hook_post"),
}


@pytest.mark.parametrize("family", list(CASES))
def test_forward_and_ablation_match_numpy(family):
    make, reference, site = CASES[family]
    model, variables = build(make())
    P = params_of(variables)
    c = model.config
    clean = jax.jit(model.apply)(variables, IMAGES)
    assert clean.shape == (3, 5) and clean.dtype == jnp.float32
    assert_close(clean, reference(P, IMAGES, c, {}), rtol=2e-4)

    mask = np.arange(ji.sites(model, IMAGES)[site].shape[-1]) % 3 == 0
    got, cache = ji.run(model, variables, IMAGES, capture=[site],
                        interventions=[ji.Clamp(site, 0.0, mask=mask)])
    want = reference(P, IMAGES, c, {site: zero_every_third})
    assert_close(got, want, rtol=2e-4)
    assert np.all(np.asarray(cache[site])[..., mask] == 0)
    assert np.abs(want - np.asarray(clean)).max() > 1e-3  # the site is live


def test_sites():
    s = ji.sites(CASES["deep_mlp"][0](), IMAGES)
    assert s["hook_embed"].shape == (3, 12) and s["blocks.1.mlp.hook_pre"].shape == (3, 36)
    s = ji.sites(CASES["activator"][0](), IMAGES)
    assert s["blocks.1.gate.hook_u"].shape == (3, 16, 20)
    assert {"blocks.0.ln1.hook_normalized", "blocks.0.ln2.hook_normalized"} <= set(s)
    s = ji.sites(CASES["ninformer"][0](), IMAGES)
    assert s["blocks.0.gate.mixer.token_mixing.hook_pre"].shape == (3, 12, 20)
    assert s["blocks.0.gate.hook_mixer"].shape == (3, 16, 12)
    assert list(s)[-1] == "hook_pooled"


def test_deep_mlp_scan_equals_unrolled():
    model, variables = build(CASES["deep_mlp"][0]())
    scanned = DeepMLP(dataclasses.replace(model.config, scan_layers=True))
    stacked = ji.models.stack_layers(variables)
    assert_close(scanned.apply(stacked, IMAGES), model.apply(variables, IMAGES), rtol=1e-5)
    site = "blocks.1.mlp.hook_post"
    a = ji.run(model, variables, IMAGES, interventions=[ji.Scale(site, 0.5)])[0]
    b = ji.run(scanned, stacked, IMAGES, interventions=[ji.Scale(site, 0.5)])[0]
    assert_close(b, a, rtol=1e-5)


def test_bad_inputs_are_clear_errors():
    for family in CASES:
        model, variables = build(CASES[family][0]())
        with pytest.raises(ValueError, match="configured for images of shape"):
            model.apply(variables, jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="patch_size=3"):
        ActivatorConfig(image_size=8, patch_size=3)
    with pytest.raises(ValueError, match="d_mlp must be a positive int"):
        NiNformerConfig(d_mlp=0)
    with pytest.raises(ValueError, match="act_fn"):
        DeepMLPConfig(act_fn="tanh")
