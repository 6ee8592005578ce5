"""KV cache and `ji.generate` against the uncached model: chunked logits, steered generation
against recomputing the whole sequence at every step, vmap over steering strengths, sampling
against NumPy, EOS, errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.generate import choose_tokens
from jaxinterp.models.transformer import Transformer, TransformerConfig, init_cache

VOCAB, CTX = 40, 16
VARIANTS = {
    "softmax": {},
    "rotary_gqa": dict(positional_embedding_type="rotary", n_key_value_heads=2,
                       normalization_type="RMS", qk_norm=True, use_bias=False),
    "sigmoid": dict(attention_type="sigmoid"),
    "softplus_scanned": dict(attention_type="softplus", scan_layers=True),
    "linear_gated": dict(attention_type="linear", gated_attention=True),
    "clipped_softmax_moe": dict(attention_type="clipped_softmax", mlp_type="moe", n_experts=2,
                                experts_per_token=1),
    "relu": dict(attention_type="relu"),
}


@functools.cache
def _model(name: str):
    c = TransformerConfig(n_layers=2, d_model=16, n_heads=4, d_head=4, d_mlp=32, d_vocab=VOCAB,
                          n_ctx=CTX, init_range=0.4, **VARIANTS[name])
    model = Transformer(c)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    return model, variables


def _tokens(shape, seed=1):
    return jax.random.randint(jax.random.key(seed), shape, 0, VOCAB, jnp.int32)


@pytest.mark.parametrize("name", ["softplus_scanned", "linear_gated", "clipped_softmax_moe",
                                  "relu"])
def test_chunked_cached_logits_equal_uncached(name):
    """A prefill of 4, a chunk of 3 at offset 4, then one-token steps: the uncached logits.
    (softmax, rotary + GQA and sigmoid: the steered-generation tests below, and chunks at every
    offset in tests/analysis/test_patching*.py, where act_patch's suffix path uses the cache.)"""
    model, variables = _model(name)
    chunked, full = _chunked_and_full(variables, _tokens((2, 10)), model=model)
    np.testing.assert_allclose(chunked, full, atol=1e-5, rtol=1e-5)


@functools.partial(jax.jit, static_argnames="model")
def _chunked_and_full(variables, tokens, *, model):
    cache = init_cache(model, 2, 10)
    outs = []
    for start, stop in ((0, 4), (4, 7), (7, 8), (8, 9), (9, 10)):
        logits, cache = model.apply(variables, tokens[:, start:stop], cache=cache, offset=start)
        outs.append(logits)
    return jnp.concatenate(outs, 1), model.apply(variables, tokens)


def _steer(model, p):
    vec = jax.random.normal(jax.random.key(5), (16,))
    return [ji.Add("blocks.0.hook_resid_post", vec, scale=2.0),
            ji.Scale("blocks.1.attn.hook_z", 0.3, heads=[1]),
            ji.Add("blocks.1.hook_resid_pre", -vec, scale=3.0, positions=[p + 2]),
            ji.Scale("blocks.0.attn.hook_pattern", 0.5, positions=[p + 1, p + 3])]


@functools.partial(jax.jit, static_argnames="model")
def _logits_at(variables, buf, ivs, t, *, model):
    out, _ = ji.run(model, variables, buf, interventions=ivs)
    return jax.lax.dynamic_index_in_dim(out, t, axis=1, keepdims=False)


def _recompute(model, variables, prompt, n_new, interventions):
    """Greedy generation recomputing the whole L-position sequence (future tokens 0) without a
    cache at every step: (tokens [batch, L], logits [batch, n_new, vocab])."""
    batch, p = prompt.shape
    length = p + n_new
    buf = jnp.zeros((batch, length), jnp.int32).at[:, :p].set(prompt)
    logits = []
    for t in range(p - 1, length - 1):
        lg = _logits_at(variables, buf, interventions, t, model=model)
        logits.append(lg)
        buf = buf.at[:, t + 1].set(jnp.argmax(lg, -1))
    return buf, jnp.stack(logits, 1)


@pytest.mark.parametrize("name", ["softmax", "rotary_gqa", "sigmoid"])
def test_steered_generation_with_cache_equals_full_recompute(name):
    model, variables = _model(name)
    prompt = _tokens((2, 5))
    ivs = _steer(model, 5)
    out = ji.generate(model, variables, prompt, 8, interventions=ivs, return_logits=True)
    ref_tokens, ref_logits = _recompute(model, variables, prompt, 8, ivs)
    np.testing.assert_array_equal(out.tokens, ref_tokens)
    np.testing.assert_allclose(out.logits, ref_logits, atol=1e-5, rtol=1e-5)
    clean = ji.generate(model, variables, prompt, 8, return_logits=True)
    assert float(jnp.abs(clean.logits - out.logits).max()) > 1e-2  # the steering does act


def test_vmap_over_32_steering_strengths():
    model, variables = _model("softmax")
    prompt = _tokens((2, 4))
    vec = jax.random.normal(jax.random.key(5), (16,))
    scales = jnp.linspace(-4.0, 4.0, 32)

    def steered(s):
        out = ji.generate(model, variables, prompt, 6, return_logits=True,
                          interventions=[ji.Add("blocks.1.hook_resid_pre", vec, scale=s)])
        return out.tokens, out.logits

    tokens, logits = jax.vmap(steered)(scales)
    assert tokens.shape == (32, 2, 10)
    assert len({tuple(np.asarray(t).ravel()) for t in tokens}) > 1  # strengths differ
    for i in (0, 13, 31):
        ivs = [ji.Add("blocks.1.hook_resid_pre", vec, scale=scales[i])]
        ref_tokens, ref_logits = _recompute(model, variables, prompt, 6, ivs)
        np.testing.assert_array_equal(tokens[i], ref_tokens)
        np.testing.assert_allclose(logits[i], ref_logits, atol=1e-5, rtol=1e-5)


def test_sampling_is_reproducible_from_its_key_and_top_k1_is_greedy():
    model, variables = _model("softmax")
    prompt = _tokens((3, 4))
    kw = dict(temperature=1.5, key=jax.random.key(3))
    a = ji.generate(model, variables, prompt, 8, **kw).tokens
    b = ji.generate(model, variables, prompt, 8, **kw).tokens
    np.testing.assert_array_equal(a, b)
    c = ji.generate(model, variables, prompt, 8, temperature=1.5, key=jax.random.key(4)).tokens
    assert not np.array_equal(a, c)
    greedy = ji.generate(model, variables, prompt, 8).tokens
    np.testing.assert_array_equal(
        ji.generate(model, variables, prompt, 8, top_k=1, **kw).tokens, greedy)


def test_choose_tokens_draws_from_the_filtered_softmax():
    """Empirical frequencies of 20000 draws against the NumPy distribution after temperature,
    top-k and top-p."""
    logits = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -1.0, 3.0, 0.2], np.float32)
    temp, k, p = 0.8, 5, 0.8
    x = logits / temp
    x = np.where(x < np.sort(x)[-k], -np.inf, x)
    order = np.argsort(-x)
    probs = np.exp(x[order] - x[order][0])
    probs /= probs.sum()
    keep = (np.cumsum(probs) - probs) < p
    want = np.zeros_like(logits)
    want[order[keep]] = probs[keep] / probs[keep].sum()
    draws = choose_tokens(jnp.tile(logits, (20000, 1)), jax.random.key(0), temp, k, p)
    freq = np.bincount(np.asarray(draws), minlength=len(logits)) / 20000
    np.testing.assert_allclose(freq, want, atol=0.015)
    assert freq[want == 0].sum() == 0


def test_eos_pads_finished_rows_and_counts_lengths():
    model, variables = _model("softmax")
    prompt = _tokens((3, 4), seed=2)
    free = ji.generate(model, variables, prompt, 8)
    eos = int(free.tokens[0, 4 + 2])
    out = ji.generate(model, variables, prompt, 8, eos_token_id=eos, pad_token_id=39)
    for row_free, row, n in zip(np.asarray(free.tokens), np.asarray(out.tokens),
                                np.asarray(out.lengths), strict=True):
        new = list(row_free[4:])
        stop = new.index(eos) + 1 if eos in new else len(new)
        assert n == stop
        np.testing.assert_array_equal(row[:4 + stop], row_free[:4 + stop])
        assert (row[4 + stop:] == 39).all()


def test_generate_bad_inputs_raise_before_compiling():
    model, variables = _model("softmax")
    prompt = _tokens((1, 4))
    with pytest.raises(ValueError, match="more than the model's n_ctx=16"):
        ji.generate(model, variables, _tokens((1, 17)), 1)
    with pytest.raises(ValueError, match="runs past n_ctx=16"):
        ji.generate(model, variables, prompt, 13)
    with pytest.raises(ValueError, match=r"temperature=-0\.5 must be >= 0"):
        ji.generate(model, variables, prompt, 3, temperature=-0.5)
    with pytest.raises(ValueError, match="pass key="):
        ji.generate(model, variables, prompt, 3, temperature=1.0)
    with pytest.raises(ValueError, match="position 9 is beyond the generated sequence of 7"):
        ji.generate(model, variables, prompt, 3,
                    interventions=[ji.Scale("blocks.0.hook_resid_pre", 2.0, positions=[9])])
    with pytest.raises(ValueError, match="top_p="):
        ji.generate(model, variables, prompt, 3, top_p=1.5)
    with pytest.raises(ValueError, match="matches no site"):
        ji.generate(model, variables, prompt, 3, interventions=[ji.Scale("blocks.9.x", 2.0)])
    enc = Transformer(TransformerConfig(n_layers=1, d_model=16, n_heads=4, d_head=4, d_mlp=32,
                                        d_vocab=VOCAB, n_ctx=CTX, causal=False))
    with pytest.raises(ValueError, match="needs a causal model"):
        ji.generate(enc, variables, prompt, 3)
    with pytest.raises(ValueError, match="does not fit the cache"):
        model.apply(variables, prompt, cache=init_cache(model, 1, 6), offset=3)
