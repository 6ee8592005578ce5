"""ViT and KAT against a NumPy forward pass written from the equations (timm's ViT / Adamdad's
KAT), sites, head ablation, scan == unrolled, jit/vmap and input errors."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

import jaxinterp as ji
from jaxinterp.models.vit import ViT, ViTConfig
from tests.helpers.tiny_models import assert_close, randomize

TINY = dict(image_size=8, patch_size=4, in_channels=2, num_classes=5, n_layers=2, d_model=16,
            n_heads=2, d_head=8, d_mlp=24, init_range=0.3, head_init_range=0.3)


def tiny(**overrides):
    model = ViT(ViTConfig(**{**TINY, **overrides}))
    images = jax.random.normal(jax.random.key(1), (3, 8, 8, 2))
    variables = randomize(model.init(jax.random.key(0), images))
    return model, variables, images


# ---------------------------------------------------------------- NumPy reference
def _ln(x, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["w"] + p["b"]


def _softmax(s):
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


def _rational(x, num, den):
    """KAT paper: P(x) / (1 + |b_1 x + ... + b_4 x^4|), channel c in group c // (d / groups),
    one numerator row (num [1, 6]) shared by all groups, a denominator row per group."""
    assert num.shape == (1, 6), num.shape
    groups = den.shape[0]
    g = np.arange(x.shape[-1]) // (x.shape[-1] // groups)
    b = den[g]  # [d, 4]
    p = sum(num[0, k] * x**k for k in range(6))
    q = 1 + np.abs(sum(b[:, k - 1] * x**k for k in range(1, 5)))
    return p / q


def numpy_vit(params, images, c: ViTConfig, hooks=None):
    """Logits [batch, classes]; `hooks` maps site names to functions applied to the activation."""
    hooks = hooks or {}
    P = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = np.asarray(images, np.float64)
    b, h, w, _ = x.shape
    p = c.patch_size
    w_patch = P["patch_embed"]["W_patch"].reshape(-1, c.d_model)  # [(y, x, c), d]
    tokens = [x[:, i * p:(i + 1) * p, j * p:(j + 1) * p, :].reshape(b, -1) @ w_patch
              for i in range(h // p) for j in range(w // p)]  # row-major patches
    x = np.stack(tokens, 1) + P["patch_embed"]["b_patch"]
    if c.class_token:
        x = np.concatenate([np.broadcast_to(P["cls_token"], (b, 1, c.d_model)), x], 1)
    x = x + P["pos_embed"]
    for i in range(c.n_layers):
        B = P[f"blocks_{i}"]
        a = B["attn"]
        hn = _ln(x, B["ln1"], c.eps)
        q, k, v = (np.einsum("bpm,hmd->bphd", hn, a[f"W_{n}"]) + a[f"b_{n}"] for n in "QKV")
        pattern = _softmax(np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(c.d_head))
        z = np.einsum("bhqk,bkhd->bqhd", pattern, v)
        z = hooks.get(f"blocks.{i}.attn.hook_z", lambda t: t)(z)
        x = x + np.einsum("bqhd,hdm->bqm", z, a["W_O"]) + a["b_O"]
        m = B["mlp"]
        hn = _ln(x, B["ln2"], c.eps)
        if c.mlp_type == "grkan":  # act1 -> fc1 -> act2 -> fc2 (Adamdad/kat `KAN`)
            f1, f2 = m["fc1"], m["fc2"]
            pre = _rational(hn, f1["numerator"], f1["denominator"]) @ f1["kernel"] + f1["bias"]
            post = _rational(pre, f2["numerator"], f2["denominator"])
            post = hooks.get(f"blocks.{i}.mlp.fc2.hook_basis", lambda t: t)(post)
            x = x + post @ f2["kernel"] + f2["bias"]
        else:
            pre = hn @ m["W_in"] + m["b_in"]
            post = pre * 0.5 * (1 + erf(pre / np.sqrt(2)))  # exact GELU
            post = hooks.get(f"blocks.{i}.mlp.hook_post", lambda t: t)(post)
            x = x + post @ m["W_out"] + m["b_out"]
    x = _ln(x, P["ln_final"], c.eps)
    pooled = x[:, 0] if c.pool == "token" else x.mean(1)
    return pooled @ P["head"]["W_head"] + P["head"]["b_head"]


def params_of(variables):
    return jax.tree.map(np.asarray, ji.models.unstack_layers(variables)["params"])


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("overrides", [
    dict(),
    dict(pool="mean"),
    dict(pool="mean", class_token=False),
    dict(mlp_type="grkan", grkan_groups=4),
], ids=["token", "mean", "no_cls", "kat"])
def test_forward_matches_numpy(overrides):
    model, variables, images = tiny(**overrides)
    got = jax.jit(model.apply)(variables, images)
    want = numpy_vit(params_of(variables), images, model.config)
    assert got.shape == (3, 5) and got.dtype == jnp.float32
    assert_close(got, want, rtol=2e-4)


def test_sites_are_listed_with_shapes():
    model, _, images = tiny()
    s = ji.sites(model, images)
    n_pos = 1 + (8 // 4) ** 2
    assert s["hook_embed"].shape == (3, n_pos, 16)
    assert s["blocks.1.attn.hook_pattern"].shape == (3, 2, n_pos, n_pos)
    assert s["blocks.0.attn.hook_z"].shape == (3, n_pos, 2, 8)
    assert s["blocks.1.mlp.hook_post"].shape == (3, n_pos, 24)
    assert s["hook_pooled"].shape == (3, 16)
    assert list(s)[:3] == ["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre"]
    assert list(s)[-2:] == ["ln_final.hook_normalized", "hook_pooled"]
    kat = ji.sites(tiny(mlp_type="grkan", grkan_groups=4)[0], images)
    assert kat["blocks.0.mlp.fc1.hook_basis"].shape == (3, n_pos, 16)
    assert kat["blocks.0.mlp.fc1.hook_post"].shape == (3, n_pos, 24)
    assert kat["blocks.1.mlp.fc2.hook_basis"].shape == (3, n_pos, 24)
    assert kat["blocks.1.mlp.fc2.hook_post"].shape == (3, n_pos, 16)
    assert not any("hook_edge" in k for k in kat)  # [b, pos, d_model, d_mlp] edges: not declared


@pytest.mark.parametrize("scan", [False, True])
def test_head_ablation_matches_numpy(scan):
    """Zero-ablating head 1's hook_z in block 0 equals the NumPy forward with that head zeroed,
    and differs from the clean output (so the site is live)."""
    model, variables, images = tiny()
    if scan:
        model = ViT(dataclasses.replace(model.config, scan_layers=True))
        variables = ji.models.stack_layers(variables)
    ablate = ji.Ablate("blocks.0.attn.hook_z", heads=[1])
    got, cache = ji.run(model, variables, images, capture=["blocks.0.attn.hook_z"],
                        interventions=[ablate])

    def zero_head(z):
        z = z.copy()
        z[:, :, 1] = 0
        return z

    params = params_of(variables)
    want = numpy_vit(params, images, model.config, {"blocks.0.attn.hook_z": zero_head})
    assert_close(got, want, rtol=2e-4)
    assert np.all(np.asarray(cache["blocks.0.attn.hook_z"])[:, :, 1] == 0)
    clean = numpy_vit(params, images, model.config)
    assert np.abs(want - clean).max() > 1e-2


def test_kat_neuron_clamp_matches_numpy():
    model, variables, images = tiny(mlp_type="grkan", grkan_groups=4)
    mask = np.arange(24) % 5 == 0
    got, _ = ji.run(model, variables, images,
                    interventions=[ji.Clamp("blocks.1.mlp.fc2.hook_basis", 2.0, mask=mask)])

    def clamp(post):
        post = post.copy()
        post[..., mask] = 2.0
        return post

    params = params_of(variables)
    hooks = {"blocks.1.mlp.fc2.hook_basis": clamp}
    want = numpy_vit(params, images, model.config, hooks)
    assert_close(got, want, rtol=2e-4)
    assert np.abs(want - numpy_vit(params, images, model.config)).max() > 1e-2


def test_scan_equals_unrolled_and_vmap():
    model, variables, images = tiny()
    scanned = ViT(dataclasses.replace(model.config, scan_layers=True))
    out = model.apply(variables, images)
    assert_close(scanned.apply(ji.models.stack_layers(variables), images), out, rtol=1e-5)
    per_example = jax.vmap(lambda im: model.apply(variables, im[None])[0])(images)
    assert_close(per_example, out, rtol=1e-5)


def test_kat_uses_shared_numerator_group_rationals_at_reference_inits():
    """Fresh KAT: numerator [1, 6] shared, denominator [groups, 4]; fc1's rational is the
    identity and fc2's is swish (Adamdad/kat presets) within 1e-3 on [-3, 3]."""
    model = ViT(ViTConfig(**TINY, mlp_type="grkan", grkan_groups=4))
    images = jnp.zeros((1, 8, 8, 2))
    mlp = model.init(jax.random.key(0), images)["params"]["blocks_0"]["mlp"]
    mlp = jax.tree.map(lambda a: np.asarray(a, np.float64), nn.meta.unbox(mlp))
    x = np.linspace(-3, 3, 601)[:, None].repeat(16, 1)
    for name, d, target in (("fc1", 16, x), ("fc2", 24, None)):
        num, den = mlp[name]["numerator"], mlp[name]["denominator"]
        assert num.shape == (1, 6) and den.shape == (4, 4)
        xs = x[:, :1].repeat(d, 1)
        want = xs if target is not None else xs / (1 + np.exp(-xs))
        np.testing.assert_allclose(_rational(xs, num, den), want, atol=1e-3)


def test_bad_inputs_are_clear_errors():
    model, variables, _ = tiny()
    with pytest.raises(ValueError, match=r"configured for images of shape \[batch, 8, 8, 2\]"):
        model.apply(variables, jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="NHWC"):
        model.apply(variables, jnp.zeros((8, 8, 2)))
    with pytest.raises(ValueError, match="float images"):
        model.apply(variables, jnp.zeros((1, 8, 8, 2), jnp.uint8))
    with pytest.raises(ValueError, match=r"patch_size=3 must .* divide"):
        ViTConfig(image_size=8, patch_size=3)
    with pytest.raises(ValueError, match="needs class_token"):
        ViTConfig(class_token=False)
    with pytest.raises(ValueError, match="grkan_groups=5 must divide"):
        ViTConfig(mlp_type="grkan", grkan_groups=5)
    with pytest.raises(ValueError, match="grkan_init='tanh'"):
        ViTConfig(mlp_type="grkan", grkan_init="tanh")
    with pytest.raises(ValueError, match="mlp_type"):
        ViTConfig(mlp_type="moe")
    with pytest.raises(ValueError, match="n_layers must be a positive int"):
        ViTConfig(n_layers=0)
