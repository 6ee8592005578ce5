"""Attention variants, register tokens, norm-free and GLU models: numbers against NumPy written
from each paper's formula, applied to the q, k, v the model itself captured."""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.layers.linear_attention import causal_linear_attention
from tests.helpers import numpy_transformer
from tests.helpers.tiny_models import assert_close, assert_scan_matches, tiny


def _np(x):
    return np.asarray(x, np.float64)


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _softplus(x):
    return np.logaddexp(0.0, x)


def _mask(n, causal):
    return np.tril(np.ones((n, n), bool)) if causal else np.ones((n, n), bool)


def numpy_pattern(cfg, attn_params, q, k):
    """(scores, pattern) [b, h, q, k] from captured q, k [b, pos, h, d] (float64), written from
    the formulas in each paper (see jaxinterp.layers.attention)."""
    _, n, h, dh = q.shape
    keep = _mask(n, cfg.causal)
    kind = cfg.attention_type
    if kind == "linear":
        def phi(x, p):
            proj = np.einsum("bphd,hdf->bphf", x, _np(p["W"])) + _np(p["b"])
            return np.concatenate([_softmax(proj), _softmax(-proj)], -1)
        fq, fk = phi(q, attn_params["q_fmap"]), phi(k, attn_params["k_fmap"])
        kvh = fk.shape[2]
        fk = np.repeat(fk, h // kvh, axis=2)
        scores = np.where(keep, np.einsum("bqhf,bkhf->bhqk", fq, fk), 0.0)
        return scores, scores / scores.sum(-1, keepdims=True)
    k = np.repeat(k, h // k.shape[2], axis=2)
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
    if kind == "sigmoid":
        s = s - math.log(n)
        return s, np.where(keep, 1 / (1 + np.exp(-s)), 0.0)
    if kind == "clipped_softmax":
        p = _softmax(np.where(keep, s, -np.inf))
        zeta, gamma = cfg.clip_zeta, cfg.clip_gamma
        return s, np.clip((zeta - gamma) * p + gamma, 0, 1)
    if kind == "relu":  # Guo et al. 2024: relu(S_ij) / N_i, N_i = keys query i sees
        n_i = keep.sum(-1)[:, None].astype(np.float64)
        return s, np.where(keep, np.maximum(s, 0.0), 0.0) / n_i
    if kind == "softplus":
        qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
        kn = k / np.linalg.norm(k, axis=-1, keepdims=True)
        n_i = keep.sum(-1)[:, None].astype(np.float64)  # keys each query sees
        s = math.log(dh) * np.log(n_i) * np.einsum("bqhd,bkhd->bhqk", qn, kn)
        a = np.where(keep, _softplus(s), 0.0)
        a = a / a.sum(-1, keepdims=True)
        p = cfg.softplus_power
        if p:
            o = np.where(n_i <= 3, 0.0, 1.0)
            r = np.where(keep, np.maximum(n_i * a - o, 0.0) ** p, 0.0)
            a = r / (r.sum(-1, keepdims=True) + 1e-8)
        return s, a
    raise AssertionError(kind)


VARIANTS = {
    "sigmoid": dict(attention_type="sigmoid"),
    "sigmoid_bidirectional": dict(attention_type="sigmoid", causal=False),
    "softplus_lssar": dict(attention_type="softplus"),
    "softplus_lssa_bidirectional": dict(attention_type="softplus", softplus_power=0.0,
                                        causal=False),
    "clipped_softmax": dict(attention_type="clipped_softmax", clip_gamma=-0.1, clip_zeta=1.1),
    "linear_hedgehog": dict(attention_type="linear"),
    "relu": dict(attention_type="relu"),
    "relu_bidirectional_gqa": dict(attention_type="relu", causal=False, n_key_value_heads=2),
    "linear_hedgehog_gqa_wide": dict(attention_type="linear", n_key_value_heads=2,
                                     linear_feature_dim=12),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_matches_numpy_formula(variant):
    model, variables, tokens = tiny(n_layers=1, **VARIANTS[variant])
    cfg = model.config
    _, cache = ji.run(model, variables, tokens, capture="blocks.0.*")
    a = nn.meta.unbox(variables)["params"]["blocks_0"]["attn"]
    q, k, v = (_np(cache[f"blocks.0.attn.hook_{n}"]) for n in "qkv")
    scores, pattern = numpy_pattern(cfg, a, q, k)
    keep = np.broadcast_to(_mask(q.shape[1], cfg.causal), scores.shape)
    got_scores = _np(cache["blocks.0.attn.hook_attn_scores"])
    assert_close(got_scores[keep], scores[keep], rtol=2e-4, atol_rel=2e-5)
    assert_close(cache["blocks.0.attn.hook_pattern"], pattern, rtol=2e-4, atol_rel=2e-5)
    v = np.repeat(v, cfg.n_heads // v.shape[2], axis=2)
    z = np.einsum("bhqk,bkhd->bqhd", pattern, v)
    assert_close(cache["blocks.0.attn.hook_z"], z, rtol=2e-4, atol_rel=2e-5)
    out = np.einsum("bqhd,hdm->bqm", z, _np(a["W_O"])) + _np(a["b_O"])
    assert_close(cache["blocks.0.hook_attn_out"], out, rtol=2e-4, atol_rel=2e-5)


def test_sigmoid_bias_is_minus_log_n():
    model, variables, tokens = tiny(n_layers=1, attention_type="sigmoid")
    _, cache = ji.run(model, variables, tokens, capture="blocks.0.attn.*")
    q, k = _np(cache["blocks.0.attn.hook_q"]), _np(cache["blocks.0.attn.hook_k"])
    raw = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    bias = _np(cache["blocks.0.attn.hook_attn_scores"]) - raw
    keep = np.broadcast_to(_mask(q.shape[1], True), bias.shape)
    np.testing.assert_allclose(bias[keep], -math.log(tokens.shape[1]), atol=1e-5)
    pattern = np.asarray(cache["blocks.0.attn.hook_pattern"])
    assert (pattern[~keep] == 0).all()


def test_clipped_softmax_gives_exact_zeros():
    model, variables, tokens = tiny(n_layers=1, attention_type="clipped_softmax",
                                    clip_gamma=-0.1, clip_zeta=1.0)
    _, cache = ji.run(model, variables, tokens, capture="blocks.0.attn.hook_*")
    s = _np(cache["blocks.0.attn.hook_attn_scores"])
    keep = np.broadcast_to(_mask(s.shape[-1], True), s.shape)
    p = _softmax(np.where(keep, s, -np.inf))
    want_zero = keep & (1.1 * p - 0.1 <= -1e-4)  # clearly below 0 before clipping
    assert want_zero.sum() > 10  # the test exercises clipping
    pattern = np.asarray(cache["blocks.0.attn.hook_pattern"])
    assert (pattern[want_zero] == 0.0).all()
    assert (pattern[~keep] == 0.0).all()
    # Plain softmax is never exactly zero on visible keys here.
    assert (p[keep] > 0).all()


def test_linear_attention_recurrent_form_equals_quadratic_form():
    model, variables, tokens = tiny(n_layers=1, attention_type="linear")
    _, cache = ji.run(model, variables, tokens, capture="blocks.0.attn.*")
    z = causal_linear_attention(cache["blocks.0.attn.hook_q_features"],
                                cache["blocks.0.attn.hook_k_features"],
                                cache["blocks.0.attn.hook_v"])
    assert_close(z, _np(cache["blocks.0.attn.hook_z"]), rtol=1e-5)
    # Hedgehog features are two softmaxes: non-negative, each half sums to 1.
    f = np.asarray(cache["blocks.0.attn.hook_q_features"])
    half = f.shape[-1] // 2
    np.testing.assert_allclose(f[..., :half].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(f[..., half:].sum(-1), 1.0, rtol=1e-5)


def test_gated_attention_gate_and_head_removal():
    model, variables, tokens = tiny(n_layers=1, gated_attention=True)
    a = nn.meta.unbox(variables)["params"]["blocks_0"]["attn"]
    run = jax.jit(ji.run, static_argnums=0, static_argnames="capture")
    _, cache = run(model, variables, tokens, capture=("blocks.0.*",))
    x = _np(cache["blocks.0.ln1.hook_normalized"])
    gate = 1 / (1 + np.exp(-(x @ _np(a["W_G"]) + _np(a["b_G"]))))
    assert cache["blocks.0.attn.hook_gate"].shape == (3, 10, 4)
    assert_close(cache["blocks.0.attn.hook_gate"], gate, rtol=2e-4, atol_rel=2e-5)
    q, k, v = (_np(cache[f"blocks.0.attn.hook_{n}"]) for n in "qkv")
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    pattern = _softmax(np.where(_mask(q.shape[1], True), s, -np.inf))
    z = gate[..., None] * np.einsum("bhqk,bkhd->bqhd", pattern, v)
    assert_close(cache["blocks.0.attn.hook_z"], z, rtol=2e-4, atol_rel=2e-5)

    # Gate of head 1 forced to 0: that head's z is exactly 0, the output lacks its term.
    iv = ji.Clamp("blocks.0.attn.hook_gate", 0.0, heads=[1])
    _, cut = run(model, variables, tokens, capture=("blocks.0.*",), interventions=[iv])
    assert (np.asarray(cut["blocks.0.attn.hook_z"])[:, :, 1] == 0).all()
    z[:, :, 1] = 0
    out = np.einsum("bqhd,hdm->bqm", z, _np(a["W_O"])) + _np(a["b_O"])
    assert_close(cut["blocks.0.hook_attn_out"], out, rtol=2e-4, atol_rel=2e-5)


def test_registers_shapes_and_logits():
    r = 2
    model, variables, tokens = tiny(n_register_tokens=r, positional_embedding_type="rotary")
    b, n = tokens.shape
    logits, cache = ji.run(model, variables, tokens, capture="*")
    p = nn.meta.unbox(variables)["params"]
    assert logits.shape == (b, n, model.config.d_vocab)
    assert cache["hook_embed"].shape == (b, n, 32)
    assert cache["blocks.0.hook_resid_pre"].shape == (b, n + r, 32)
    assert cache["blocks.1.attn.hook_pattern"].shape == (b, 4, n + r, n + r)
    assert cache["ln_final.hook_normalized"].shape == (b, n + r, 32)
    resid = np.asarray(cache["blocks.0.hook_resid_pre"])
    np.testing.assert_array_equal(resid[:, :r], np.broadcast_to(p["W_reg"], (b, r, 32)))
    np.testing.assert_array_equal(resid[:, r:], cache["hook_embed"])  # rotary: no pos embed
    final = _np(cache["ln_final.hook_normalized"])[:, r:]
    assert_close(logits, final @ _np(p["embed"]["W_E"]).T, rtol=1e-5)  # gpt2: tied, no b_U
    # Tokens attend to the registers (the sink positions) at every query position.
    assert (np.asarray(cache["blocks.0.attn.hook_pattern"])[:, :, r:, :r].sum(-1) > 0).all()
    # The registers matter: different register vectors change the token logits.
    other = jax.tree.map(lambda x: x, nn.meta.unbox(variables))
    other["params"]["W_reg"] = other["params"]["W_reg"] + jax.random.normal(
        jax.random.key(3), (r, 32))  # (a constant shift would vanish in LayerNorm)
    assert not np.allclose(model.apply(other, tokens), logits, atol=1e-3)


def test_no_normalization_model_has_no_norms_and_matches_reference():
    model, variables, tokens = tiny(n_layers=1, normalization_type=None)
    names = ji.sites(model, tokens)
    assert not [n for n in names if "ln" in n]
    params = nn.meta.unbox(variables)["params"]
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    assert not [path for path, _ in flat if "ln" in jax.tree_util.keystr(path)]
    ref_logits, _ = numpy_transformer.forward(model.config, variables, tokens)
    assert_close(model.apply(variables, tokens), ref_logits, rtol=2e-4, atol_rel=2e-5)


@pytest.mark.parametrize("act_fn, name", [("silu", "SwiGLU"), ("gelu", "GeGLU"),
                                          ("relu", "ReGLU")])
def test_glu_family_matches_reference(act_fn, name):
    model, variables, tokens = tiny(n_layers=1, act_fn=act_fn, gated_mlp=True)
    ref_logits, _ = numpy_transformer.forward(model.config, variables, tokens)
    assert_close(model.apply(variables, tokens), ref_logits, rtol=2e-4, atol_rel=2e-5,
                 err_msg=name)


def test_sites_lists_variant_sites():
    tokens = jnp.zeros((2, 6), jnp.int32)
    gated = ji.models.build("gpt2_small", n_layers=1, d_model=32, n_heads=4, d_head=8, d_mlp=16,
                            d_vocab=20, n_ctx=8, gated_attention=True, n_register_tokens=3)
    s = ji.sites(gated, tokens)
    assert s["blocks.0.attn.hook_gate"].shape == (2, 9, 4)
    assert s["blocks.0.attn.hook_pattern"].shape == (2, 4, 9, 9)
    assert s["hook_embed"].shape == (2, 6, 32)
    linear = ji.models.build("gpt2_small", n_layers=1, d_model=32, n_heads=4, d_head=8,
                             d_mlp=16, d_vocab=20, n_ctx=8, attention_type="linear",
                             linear_feature_dim=5)
    s = ji.sites(linear, tokens)
    assert s["blocks.0.attn.hook_q_features"].shape == (2, 6, 4, 10)
    assert s["blocks.0.attn.hook_k_features"].shape == (2, 6, 4, 10)
    assert "blocks.0.attn.hook_gate" not in s


@pytest.mark.parametrize("overrides, message", [
    (dict(attention_type="foo"), "attention_type='foo'; choose from"),
    (dict(attention_type="clipped_softmax", clip_gamma=0.1), "clip_gamma=0.1"),
    (dict(clip_zeta=0.9), "clip_zeta=0.9"),
    (dict(softplus_power=-1.0), "softplus_power=-1.0 must be >= 0"),
    (dict(linear_feature_dim=0), "linear_feature_dim=0 must be a positive int"),
    (dict(n_register_tokens=-1), "n_register_tokens=-1 must be an int >= 0"),
])
def test_bad_config_is_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ji.models.config("gpt2_small", **overrides)


SCAN_VARIANTS = {
    "sigmoid": dict(attention_type="sigmoid"),
    "softplus": dict(attention_type="softplus"),
    "clipped_softmax": dict(attention_type="clipped_softmax"),
    "linear_gqa": dict(attention_type="linear", n_key_value_heads=2),
    "gated_registers": dict(gated_attention=True, n_register_tokens=2),
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(SCAN_VARIANTS))
def test_scanned_equals_unrolled(variant):
    model, variables, tokens = tiny(**SCAN_VARIANTS[variant])
    # Softplus re-weighting raises weights to the 15th power, which multiplies float32
    # rounding differences between the two compiled programs by ~15.
    tol = 2e-4 if variant == "softplus" else 1e-5
    assert_scan_matches(model, variables, tokens,
                        ("blocks.*.attn.hook_pattern", "blocks.*.hook_resid_post"), tol=tol)
