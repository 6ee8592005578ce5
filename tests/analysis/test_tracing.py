"""causal_trace against a Python loop of single `ji.run` calls (one Patch at one (layer, pos))."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.analysis.tracing import TRACE_SITES, causal_trace, restore_masks, subject_noise
from tests.helpers.tiny_models import tiny

MODEL, VARIABLES, TOKENS = tiny()  # tokens [3, 10]
B, T = TOKENS.shape
SUBJECT = np.zeros((B, T), bool)
SUBJECT[0, 2] = SUBJECT[1, 3:5] = SUBJECT[2, 1:4] = True
ANSWER = jnp.array([5, 7, 11])
PREDICT = jnp.array([9, 8, 6])
S, NOISE, KEY = 3, 0.7, jax.random.key(3)
SITES = ("resid_pre", "resid_post", "mlp_out", "attn_out")


@functools.partial(jax.jit, static_argnames=("names",))
def _prob(eps, sources, positions, *, names):
    """P(answer) of one corrupted run with a Patch of `sources` at each of `names`, at integer
    positions `positions` (one index per name)."""
    patches = [ji.Patch(n, src, positions=p) for n, src, p in
               zip(names, sources, positions, strict=True)]
    logits, _ = ji.run(MODEL, VARIABLES, TOKENS, interventions=[ji.Add("hook_embed", eps),
                                                                 *patches])
    rows = np.arange(B)
    return jax.nn.softmax(logits[rows, PREDICT], -1)[rows, ANSWER]


def loop_reference(window=1):
    """IE per site [B, layer, pos] by the loop of single runs, and P, P*."""
    c = MODEL.config
    eps = NOISE * jax.random.normal(KEY, (S, B, T, c.d_model)) * SUBJECT[None, :, :, None]
    names = [TRACE_SITES[s].format(k) for s in SITES for k in range(c.n_layers)]
    logits, clean = ji.run(MODEL, VARIABLES, TOKENS, capture=names)
    rows = np.arange(B)
    p_clean = np.asarray(jax.nn.softmax(logits[rows, PREDICT], -1)[rows, ANSWER])
    p_star = np.mean([_prob(eps[s], (), (), names=()) for s in range(S)], 0)
    out = {}
    for site in SITES:
        ie = np.zeros((B, c.n_layers, T))
        for layer in range(c.n_layers):
            lo, hi = max(0, layer - window // 2), min(c.n_layers, layer - (-window // 2))
            ns = tuple(TRACE_SITES[site].format(k) for k in range(lo, hi))
            for pos in range(T):
                p = np.mean([_prob(eps[s], tuple(clean[n] for n in ns),
                                   tuple(jnp.array([pos]) for _ in ns), names=ns)
                             for s in range(S)], 0)
                ie[:, layer, pos] = p - p_star
        out[site] = ie
    return out, p_clean, p_star


@pytest.fixture(scope="module")
def traced():
    return causal_trace(MODEL, VARIABLES, TOKENS, SUBJECT, ANSWER, noise=NOISE, key=KEY,
                        sites=SITES, num_samples=S, predict_pos=PREDICT)


def test_sweep_equals_loop_of_single_runs(traced):
    want, p_clean, p_star = loop_reference()
    np.testing.assert_allclose(traced.p_clean, p_clean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(traced.p_corrupted, p_star, rtol=1e-5, atol=1e-7)
    for site in SITES:
        assert traced.effect[site].shape == (B, 2, T)
        np.testing.assert_allclose(traced.effect[site], want[site], rtol=1e-4, atol=1e-6,
                                   err_msg=site)
    np.testing.assert_allclose(traced.mean()["mlp_out"], want["mlp_out"].mean(0), atol=1e-6)
    np.testing.assert_allclose(traced.total_effect, p_clean - p_star, atol=1e-6)
    assert np.abs(traced.total_effect).max() > 1e-3  # the noise does something


def test_full_restorations_recover_the_clean_run(traced):
    """Restoring the embedding of a one-token subject (resid_pre of layer 0) or the last
    layer's output at the predicting position undoes the corruption exactly."""
    te = np.asarray(traced.total_effect)
    ie = np.asarray(traced.effect["resid_pre"])
    np.testing.assert_allclose(ie[0, 0, 2], te[0], atol=1e-6)
    post = np.asarray(traced.effect["resid_post"])
    np.testing.assert_allclose(post[np.arange(B), 1, PREDICT], te, atol=1e-6)
    # Positions before the subject carry nothing of it.
    np.testing.assert_allclose(ie[1, :, :3], 0, atol=1e-7)


def test_window_and_errors():
    m = restore_masks(4, 3, window=3)
    np.testing.assert_array_equal(m[0 * 3 + 1].any(1), [True, True, False, False])
    np.testing.assert_array_equal(m[2 * 3 + 0].any(1), [False, True, True, True])
    assert m[2 * 3 + 0, :, 0].all() == np.False_ and m[2 * 3 + 0, 1:, 0].all()
    got = causal_trace(MODEL, VARIABLES, TOKENS, SUBJECT, ANSWER, noise=NOISE, key=KEY,
                       sites=("mlp_out",), num_samples=S, window=2, predict_pos=PREDICT)
    want, _, _ = loop_reference_window2()
    np.testing.assert_allclose(got.effect["mlp_out"], want, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="sites"):
        causal_trace(MODEL, VARIABLES, TOKENS, SUBJECT, ANSWER, noise=1.0, key=KEY,
                     sites=("resid_mid",))
    with pytest.raises(ValueError, match="subject_mask"):
        causal_trace(MODEL, VARIABLES, TOKENS, SUBJECT[:, :3], ANSWER, noise=1.0, key=KEY)
    sigma = subject_noise(MODEL, VARIABLES, TOKENS, SUBJECT)
    _, cache = ji.run(MODEL, VARIABLES, TOKENS, capture="hook_embed")
    np.testing.assert_allclose(sigma, 3 * np.asarray(cache["hook_embed"])[SUBJECT].std(),
                               rtol=1e-5)


def loop_reference_window2():
    global SITES
    saved, SITES = SITES, ("mlp_out",)
    try:
        out, p, ps = loop_reference(window=2)
    finally:
        SITES = saved
    return out["mlp_out"], p, ps
