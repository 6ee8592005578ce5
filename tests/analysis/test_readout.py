"""The transformer read-out API (`jaxinterp.models.transformer`: embed, final_norm,
drop_registers, unembed, read_out) reproduces the model's own head bit for bit, and the analyses
built on it (logit and tuned lens, direct logit attribution, head scores, weight processing) give
the right shapes and values with register tokens, against NumPy float64 references."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

import jaxinterp as ji
from jaxinterp.analysis import dla, heads, lenses
from jaxinterp.analysis.weights import process_weights
from jaxinterp.models.transformer import (
    check_transformer,
    drop_registers,
    embed,
    final_norm,
    read_out,
    unembed,
    unembedding,
    unrolled_params,
)
from tests.helpers import numpy_transformer
from tests.helpers.tiny_models import assert_close, tiny

R = 2  # register tokens in the register-aware tests

PRESET = {"LN": "gpt2_small", "RMS": "llama_small"}  # llama: RMS, rotary, GQA, SwiGLU, no biases


@functools.cache
def _model(norm, tied, n_reg, **kw):
    """(model, variables, tokens) of a tiny model; `unembed_bias` follows `tied` so that both
    the bias and the no-bias read-out are exercised across the cases."""
    return tiny(PRESET[norm], tie_embeddings=tied, unembed_bias=tied, n_register_tokens=n_reg,
                **kw)


def _scanned(model, variables):
    """The same weights stacked for nn.scan (initialising a scanned model eagerly is slow)."""
    c = dataclasses.replace(model.config, scan_layers=True)
    return ji.models.Transformer(c), ji.models.stack_layers(variables)


def _check_head(model, variables, tokens):
    c = model.config
    last = f"blocks.{c.n_layers - 1}.hook_resid_post"
    names = [last, "blocks.0.hook_resid_pre"] + (["ln_final.hook_normalized"]
                                                 if c.normalization_type else [])
    logits, cache = ji.run(model, variables, tokens, capture=names)
    np.testing.assert_array_equal(logits, model.apply(variables, tokens))
    resid = cache[last]
    assert resid.shape == (*tokens.shape[:1], c.n_register_tokens + tokens.shape[1], c.d_model)
    normed = final_norm(model, variables, resid)
    if c.normalization_type:
        np.testing.assert_array_equal(normed, cache["ln_final.hook_normalized"])
    np.testing.assert_array_equal(unembed(model, variables, drop_registers(model, normed)),
                                  logits)
    np.testing.assert_array_equal(read_out(model, variables, resid), logits)
    np.testing.assert_array_equal(embed(model, variables, tokens),
                                  cache["blocks.0.hook_resid_pre"])

    @jax.jit
    def compiled(v, t):  # the read-out of a residual captured in the same compiled run
        logits, cache = ji.run(model, v, t, capture=[last])
        return logits, read_out(model, v, cache[last])

    jit_logits, jit_read = compiled(variables, tokens)
    np.testing.assert_allclose(jit_read, jit_logits, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
@pytest.mark.parametrize("n_reg", [0, R], ids=["no_registers", "registers"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("norm", ["LN", "RMS"])
def test_read_out_of_the_last_residual_is_the_models_logits(norm, tied, n_reg, scan):
    model, variables, tokens = _model(norm, tied, n_reg)
    if scan:
        model, variables = _scanned(model, variables)
    _check_head(model, variables, tokens)


@pytest.mark.parametrize("kw", [dict(normalization_type=None), dict(dtype="bfloat16")],
                         ids=["no_norm", "bfloat16"])
def test_read_out_without_norm_and_in_bfloat16(kw):
    model, variables, tokens = tiny(n_register_tokens=R, unembed_bias=True, **kw)
    _check_head(model, variables, tokens)


def test_read_out_shapes_and_errors():
    model, variables, _ = _model("LN", True, R)
    c = model.config
    x = jnp.ones((5, 3, R + 4, c.d_model))  # [layer, batch, R + pos, d_model]
    assert read_out(model, variables, x).shape == (5, 3, 4, c.d_vocab)
    assert unembed(model, variables, x[0, 0]).shape == (R + 4, c.d_vocab)  # no positions dropped
    assert final_norm(model, variables, x[0, 0, 0]).shape == (c.d_model,)
    pattern = jnp.ones((2, 3, R + 4, R + 4))  # [batch, head, query_pos, key_pos]
    assert drop_registers(model, pattern, axis=(-2, -1)).shape == (2, 3, 4, 4)
    w_u, b_u = unembedding(model, variables)
    np.testing.assert_array_equal(w_u, unrolled_params(variables)["embed"]["W_E"].T)
    assert b_u.shape == (c.d_vocab,)
    assert check_transformer(model) is c
    with pytest.raises(ValueError, match=r"read_out needs a jaxinterp\.models\.Transformer"):
        read_out(nn.Dense(3), variables, x)
    with pytest.raises(ValueError, match="d_model=32"):
        read_out(model, variables, jnp.ones((1, 4, 5)))
    with pytest.raises(ValueError, match="n_register_tokens=2"):
        read_out(model, variables, jnp.ones((1, R, c.d_model)))
    with pytest.raises(ValueError, match="'params'"):
        unembed(model, {}, x)


# -- lenses with register tokens -------------------------------------------------------------

@pytest.mark.parametrize("norm", ["LN", "RMS"])
def test_logit_lens_with_registers_matches_numpy(norm):
    model, variables, tokens = _model(norm, norm == "LN", R)
    c = model.config
    b, n = tokens.shape
    logits, acts = numpy_transformer.forward(c, variables, tokens)
    assert_close(model.apply(variables, tokens), logits, rtol=1e-5)  # the reference has registers
    streams = [acts["blocks.0.hook_resid_pre"]] + [acts[f"blocks.{i}.hook_resid_post"]
                                                   for i in range(c.n_layers)]
    # [L+1, b, n, v]
    want = np.stack([numpy_transformer.read_out(c, variables, h) for h in streams])

    got = lenses.logit_lens(model, variables, tokens)
    assert got.shape == (c.n_layers + 1, b, n, c.d_vocab)
    assert_close(got, want, rtol=1e-5)
    # the last lens is the model's own logits, up to float32 rounding: the two are different
    # XLA programs (jax 0.12: 2e-6 apart with RMSNorm, bit-equal with LayerNorm)
    np.testing.assert_allclose(got[-1], model.apply(variables, tokens), rtol=1e-5, atol=1e-5)

    targets = jnp.roll(tokens, -1, axis=1)
    got = lenses.logit_lens(model, variables, tokens, targets=targets)
    assert got.shape == (c.n_layers + 1, b, n)
    want_lp = np.take_along_axis(log_softmax(want, -1), np.asarray(targets)[None, ..., None],
                                 -1)[..., 0]
    assert_close(got, want_lp, rtol=1e-5)

    vals, ids = lenses.logit_lens(model, variables, tokens, top_k=3, layers=[0, -1])
    assert vals.shape == ids.shape == (2, b, n, 3)
    np.testing.assert_array_equal(ids, np.argsort(-want[[0, -1]], axis=-1)[..., :3])


def test_tuned_lens_and_kl_with_registers():
    model, variables, tokens = _model("LN", True, R)
    c = model.config
    k1, k2 = jax.random.split(jax.random.key(3))
    lens = lenses.TunedLens(weight=0.1 * jax.random.normal(k1, (c.n_layers, c.d_model, c.d_model)),
                            bias=0.3 * jax.random.normal(k2, (c.n_layers, c.d_model)))
    _, acts = numpy_transformer.forward(c, variables, tokens)
    h = acts["blocks.0.hook_resid_post"]  # stream 1, [b, R + n, d_model]
    w, bias = np.asarray(lens.weight[1], np.float64), np.asarray(lens.bias[1], np.float64)
    got = lenses.tuned_lens(model, variables, lens, tokens, layers=1)[0]
    assert got.shape == (*tokens.shape, c.d_vocab)
    assert_close(got, numpy_transformer.read_out(c, variables, h + h @ w + bias), rtol=1e-5)
    targets = jnp.roll(tokens, -1, axis=1)
    assert lenses.tuned_lens(model, variables, lens, tokens, targets=targets).shape == (
        c.n_layers + 1, *tokens.shape)
    kl = lenses.lens_kl(model, variables, tokens, lens)
    assert kl.shape == (c.n_layers + 1,) and kl[-1] < 1e-5 and (kl[:-1] > 0).all()
    loss = lenses.tuned_lens_loss(lens, model, variables, tokens)
    np.testing.assert_allclose(loss, kl[:-1].mean(), rtol=1e-5)


# -- direct logit attribution with register tokens ---------------------------------------------

def _numpy_dla(cfg, variables, tokens, target, baseline, pos):
    """(heads [layer, ..., head], neurons [layer, ..., d_mlp], logit difference [...]) in float64
    from the reference forward pass; `pos` counts tokens (None: every token position)."""
    logits, acts = numpy_transformer.forward(cfg, variables, tokens)
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), unrolled_params(variables))
    r = cfg.n_register_tokens

    def at(x):  # a block site [batch, R + pos, ...] -> the attributed token position(s)
        x = x[:, r:]
        return x if pos is None else x[:, pos]

    w_u = p["embed"]["W_E"].T if cfg.tie_embeddings else p["W_U"]
    u = w_u.T[target] - w_u.T[baseline]  # [..., d_model]
    lg = logits if pos is None else logits[:, pos]
    metric = (np.take_along_axis(lg, target[..., None], -1)
              - np.take_along_axis(lg, baseline[..., None], -1))[..., 0]
    resid = at(acts[f"blocks.{cfg.n_layers - 1}.hook_resid_post"])
    if cfg.normalization_type == "LN":
        centred = resid - resid.mean(-1, keepdims=True)
        scale = np.sqrt((centred**2).mean(-1) + cfg.eps)
    else:
        scale = np.sqrt((resid**2).mean(-1) + cfg.eps)
    direction = u * p["ln_final"]["w"] / scale[..., None]
    heads_, neurons = [], []
    for layer in range(cfg.n_layers):
        blk = p[f"blocks_{layer}"]
        z = at(acts[f"blocks.{layer}.attn.hook_z"])  # [..., head, d_head]
        post = at(acts[f"blocks.{layer}.mlp.hook_post"])  # [..., d_mlp]
        head_out = np.einsum("...hd,hdm->...hm", z, blk["attn"]["W_O"])
        neuron_out = post[..., None] * blk["mlp"]["W_out"]  # [..., d_mlp, d_model]
        for out, acc in ((head_out, heads_), (neuron_out, neurons)):
            if cfg.normalization_type == "LN":
                out = out - out.mean(-1, keepdims=True)
            acc.append(np.einsum("...cm,...m->...c", out, direction))
    return np.stack(heads_), np.stack(neurons), metric


@pytest.mark.parametrize("pos", [4, -1, None], ids=["pos4", "last", "every"])
@pytest.mark.parametrize("norm", ["LN", "RMS"])
def test_dla_with_registers_matches_numpy(norm, pos):
    model, variables, tokens = _model(norm, norm == "LN", R)
    c = model.config
    b, n = tokens.shape
    lead = (b,) if pos is not None else (b, n)
    target = (tokens + 3) % c.d_vocab
    baseline = (tokens + 5) % c.d_vocab
    if pos is not None:
        target, baseline = target[:, pos], baseline[:, pos]
    attr = dla.direct_logit_attribution(model, variables, tokens, target, baseline, pos=pos)
    heads_, neurons, metric = _numpy_dla(c, variables, tokens, np.asarray(target),
                                         np.asarray(baseline), pos)
    assert attr.heads.shape == (c.n_layers, *lead, c.n_heads)
    assert attr.neurons.shape == (c.n_layers, *lead, c.d_mlp)
    assert attr.embed.shape == attr.logit.shape == lead
    assert_close(attr.logit, metric, rtol=1e-5)
    assert_close(attr.total(), metric, rtol=1e-5)
    assert_close(attr.heads, heads_, rtol=1e-5)
    assert_close(attr.neurons, neurons, rtol=1e-5)


# -- head scores with register tokens ----------------------------------------------------------

def _numpy_successor(cfg, variables, seqs):
    """Successor score [layer, head] in float64 (LayerNorm, tied, dense MLP)."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), unrolled_params(variables))
    act = numpy_transformer.ACT[cfg.act_fn]

    def ln(x, q):
        x = x - x.mean(-1, keepdims=True)
        return x / np.sqrt((x**2).mean(-1, keepdims=True) + cfg.eps) * q["w"] + q["b"]

    want = np.zeros((cfg.n_layers, cfg.n_heads))
    m = p["blocks_0"]["mlp"]
    for layer in range(cfg.n_layers):
        a = p[f"blocks_{layer}"]["attn"]
        for h in range(cfg.n_heads):
            hits = []
            for s in seqs:
                for i in range(len(s) - 1):
                    x = p["embed"]["W_E"][s[i]]
                    x = x + act(ln(x, p["blocks_0"]["ln2"]) @ m["W_in"] + m["b_in"]) @ m[
                        "W_out"] + m["b_out"]
                    v = ln(x, p[f"blocks_{layer}"]["ln1"]) @ a["W_V"][h] + a["b_V"][h]
                    logits = numpy_transformer.read_out(cfg, variables,
                                                        (v @ a["W_O"][h])[None, None])
                    hits.append(np.argmax(logits[0, -1][s]) == i + 1)
            want[layer, h] = np.mean(hits)
    return want


def test_successor_score_with_registers_matches_numpy():
    model, variables, _ = _model("LN", True, R)
    seqs = [[3, 7, 11, 15, 19], [20, 21, 22]]
    got = np.asarray(heads.successor_score(model, variables, seqs))
    c0 = dataclasses.replace(model.config, n_register_tokens=0)
    assert got.shape == (model.config.n_layers, model.config.n_heads)
    # (numpy_transformer.read_out drops R positions, so it gets a model config without registers)
    np.testing.assert_allclose(got, _numpy_successor(c0, variables, seqs))
    # weights only: the register vectors change nothing
    p0 = {k: v for k, v in nn.meta.unbox(variables)["params"].items() if k != "W_reg"}
    np.testing.assert_array_equal(
        got, heads.successor_score(ji.models.Transformer(c0), {"params": p0}, seqs))


def test_pattern_scores_with_registers_match_numpy():
    model, variables, _ = _model("LN", True, R)
    c = model.config
    period = 4  # BOS, a segment of 4, the segment again, one more token
    seg = jax.random.randint(jax.random.key(5), (3, period), 1, c.d_vocab)
    tokens = jnp.concatenate([jnp.zeros((3, 1), seg.dtype), seg, seg, seg[:, :1]], axis=1)
    _, acts = numpy_transformer.forward(c, variables, tokens)
    _, cache = ji.run(model, variables, tokens,
                      capture=["blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z"])
    full = cache["blocks.1.attn.hook_pattern"]
    n = tokens.shape[1]
    assert full.shape == (3, c.n_heads, R + n, R + n)
    pattern = drop_registers(model, full, axis=(-2, -1))
    z = drop_registers(model, cache["blocks.1.attn.hook_z"], axis=1)
    assert pattern.shape == (3, c.n_heads, n, n) and z.shape == (3, n, c.n_heads, c.d_head)
    a = acts["blocks.1.attn.hook_pattern"][:, :, R:, R:]  # token -> token attention, float64

    prev = np.mean([a[:, :, q, q - 1] for q in range(1, n)], axis=(0, 1))  # [q, b, h]
    assert_close(heads.previous_token_score(pattern), prev, rtol=1e-5)
    queries = range(1 + period, 1 + 2 * period)  # the repeat; its induction target q - period + 1
    ind = np.mean([a[:, :, q, q - period + 1] for q in queries], axis=(0, 1))
    assert_close(heads.induction_score(pattern, period, start=1), ind, rtol=1e-5)
    detect = np.asarray(heads.induction_pattern(tokens))  # [batch, q, k]
    want = ((a * detect[:, None]).sum((-2, -1)) / a.sum((-2, -1))).mean(0)
    assert_close(heads.detection_score(pattern, detect), want, rtol=1e-5)
    # the registers as sinks: mass on register 0 of the full pattern, queries after the first
    sink = acts["blocks.1.attn.hook_pattern"][:, :, 1:, 0].mean((0, 2))
    assert_close(heads.attention_sink_score(full, position=0), sink, rtol=1e-5)
    out = heads.classify_heads(pattern, z)
    z_ref = acts["blocks.1.attn.hook_z"][:, R:]
    assert_close(out["z_norm"], np.linalg.norm(z_ref[:, 1:], axis=-1).mean((0, 1)), rtol=1e-5)
    # the full pattern against token-length detections is an error, not a silent misalignment
    with pytest.raises(ValueError, match="detection pattern must be"):
        heads.detection_score(full, detect)


# -- weight processing with register tokens ----------------------------------------------------

def test_process_weights_with_registers_keeps_log_probs_and_centres_registers():
    model, variables, tokens = _model("LN", True, R)
    new_model, new_vars = process_weights(model, variables)
    want = log_softmax(numpy_transformer.forward(model.config, variables, tokens)[0], -1)
    got = log_softmax(numpy_transformer.forward(new_model.config, new_vars, tokens)[0], -1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    w_reg = nn.meta.unbox(new_vars)["params"]["W_reg"]
    np.testing.assert_allclose(np.asarray(w_reg).mean(-1), 0.0, atol=1e-6)
    assert_close(jax.nn.log_softmax(new_model.apply(new_vars, tokens)),
                 jax.nn.log_softmax(model.apply(variables, tokens)), rtol=1e-5)
