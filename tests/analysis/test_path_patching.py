"""Path patching against hand computations (NumPy, from cached head outputs) and against the
three runs done with the independent NumPy reference transformer."""

import dataclasses
import math

import flax.linen as nn
import jax
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.analysis.path_patching import path_patch
from tests.helpers import numpy_transformer
from tests.helpers.tiny_models import assert_close, tiny, tokens_like

# Attention-only, no norms: every step from cached head outputs is a few lines of NumPy.
MODEL, VARIABLES, CLEAN = tiny(attn_only=True, normalization_type=None)
CFG = MODEL.config
CORRUPT = tokens_like(CLEAN, seed=11, d_vocab=CFG.d_vocab)
H, DH = CFG.n_heads, CFG.d_head


def metric(logits):
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


def np_metric(logits):
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


def params(variables=VARIABLES):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), nn.meta.unbox(variables)["params"])


def caches():
    names = [f"blocks.{i}.{s}" for i in range(2) for s in
             ("hook_resid_pre", "attn.hook_k", "attn.hook_v", "attn.hook_z", "hook_resid_post")]
    f64 = lambda c: {k: np.asarray(v, np.float64) for k, v in c.items()}
    return (f64(ji.run(MODEL, VARIABLES, CLEAN, capture=names)[1]),
            f64(ji.run(MODEL, VARIABLES, CORRUPT, capture=names)[1]))


def unembed(p, resid):
    w_u = p["embed"]["W_E"].T if CFG.tie_embeddings else p["W_U"]
    return resid @ w_u + (p["b_U"] if CFG.unembed_bias else 0)


def test_receiver_query_by_hand():
    """Sender (0, 1) -> receiver head (1, 2)'s query."""
    p, (clean, corr) = params(), caches()
    a0, a1 = p["blocks_0"]["attn"], p["blocks_1"]["attn"]
    s_head, r_head = 1, 2
    # (ii) all layer-0 heads frozen clean but the sender, which is corrupted: the layer-1
    # residual moves by the sender's change of output; the receiver's query reads it.
    dz = corr["blocks.0.attn.hook_z"][:, :, s_head] - clean["blocks.0.attn.hook_z"][:, :, s_head]
    resid1 = clean["blocks.1.hook_resid_pre"] + dz @ a0["W_O"][s_head]
    q = resid1 @ a1["W_Q"][r_head] + a1["b_Q"][r_head]  # [batch, pos, d_head]
    # (iii) clean run, head (1, 2) attends with that query over its clean keys and values.
    k = clean["blocks.1.attn.hook_k"][:, :, r_head]
    v = clean["blocks.1.attn.hook_v"][:, :, r_head]
    scores = np.einsum("bqd,bkd->bqk", q, k) / math.sqrt(DH)  # contract d_head
    n = scores.shape[-1]
    scores = np.where(np.tril(np.ones((n, n), bool)), scores, -np.inf)
    pattern = np.exp(scores - scores.max(-1, keepdims=True))
    pattern /= pattern.sum(-1, keepdims=True)
    z1 = clean["blocks.1.attn.hook_z"].copy()
    z1[:, :, r_head] = pattern @ v
    attn_out = np.einsum("bphd,hdm->bpm", z1, a1["W_O"]) + a1["b_O"]  # contract head, d_head
    want = np_metric(unembed(p, clean["blocks.1.hook_resid_pre"] + attn_out))
    got = path_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, [(0, s_head)],
                     [(1, r_head, "q")])
    assert got.shape == ()
    assert_close(got, want, rtol=1e-5)
    clean_metric = np_metric(np.asarray(MODEL.apply(VARIABLES, CLEAN), np.float64))
    assert abs(want - clean_metric) > 1e-3  # the path matters, so the test can fail


def test_direct_effect_of_every_head_by_hand():
    """Receiver = the last residual stream (no final norm): each head's direct effect is its
    change of output times the unembedding, added to the clean logits."""
    p, (clean, corr) = params(), caches()
    want = np.zeros((2, H))
    for layer in range(2):
        w_o = p[f"blocks_{layer}"]["attn"]["W_O"]
        for h in range(H):
            name = f"blocks.{layer}.attn.hook_z"
            dz = corr[name][:, :, h] - clean[name][:, :, h]
            want[layer, h] = np_metric(unembed(p, clean["blocks.1.hook_resid_post"]
                                               + dz @ w_o[h]))
    got = path_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, "each", "blocks.1.hook_resid_post")
    assert got.shape == (2, H)
    assert_close(got, want, rtol=1e-5)
    chunks = path_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, "each",
                        "blocks.1.hook_resid_post", batch_size=3)
    np.testing.assert_allclose(chunks, got, rtol=1e-6, atol=1e-6)


def _reference_path_patch(model, variables, senders, receivers, freeze_mlps, positions=None):
    """The three runs on the NumPy reference transformer (tests/helpers/numpy_transformer.py)."""
    cfg = model.config
    _, clean = numpy_transformer.forward(cfg, variables, CLEAN)
    _, corr = numpy_transformer.forward(cfg, variables, CORRUPT)
    pos = slice(None) if positions is None else positions

    def frozen(layer):
        def hook(z):
            z = clean[f"blocks.{layer}.attn.hook_z"].copy()
            for sl, sh in senders:
                if sl == layer:
                    z[:, pos, sh] = corr[f"blocks.{layer}.attn.hook_z"][:, pos, sh]
            return z
        return hook

    hooks = {f"blocks.{i}.attn.hook_z": frozen(i) for i in range(cfg.n_layers)}
    if freeze_mlps:
        hooks |= {f"blocks.{i}.hook_mlp_out": (lambda x, i=i: clean[f"blocks.{i}.hook_mlp_out"])
                  for i in range(cfg.n_layers)}
    _, mid = numpy_transformer.forward(cfg, variables, CLEAN, hooks=hooks)

    def put(name, heads):
        def hook(x):
            x = x.copy()
            x[:, :, heads] = mid[name][:, :, heads]
            return x
        return hook

    by_site = {}
    for layer, head, which in receivers:
        by_site.setdefault(f"blocks.{layer}.attn.hook_{which}", []).append(head)
    logits, _ = numpy_transformer.forward(cfg, variables, CLEAN,
                                  hooks={n: put(n, hs) for n, hs in by_site.items()})
    return np_metric(logits)


@pytest.mark.parametrize("freeze_mlps", [False, True])
def test_three_runs_match_the_reference_model(freeze_mlps):
    """A full GPT-2-style model (LayerNorm, MLPs): two senders, k and v receivers."""
    model, variables, _ = tiny()
    senders, receivers = [(0, 1), (0, 3)], [(1, 2, "k"), (1, 0, "v"), (1, 3, "v")]
    got = path_patch(model, variables, CLEAN, CORRUPT, metric, senders, receivers,
                     freeze_mlps=freeze_mlps, sender_positions=[2, 5, 6])
    want = _reference_path_patch(model, variables, senders, receivers, freeze_mlps, [2, 5, 6])
    assert_close(got, want, rtol=1e-5)


def test_scanned_model_gives_the_same_numbers():
    cfg = {**dataclasses.asdict(CFG), "scan_layers": True}
    model, variables = ji.models.build("gpt2_small", **cfg), ji.models.stack_layers(VARIABLES)
    receivers = [(1, 0, "q"), (1, 2, "v")]
    np.testing.assert_allclose(
        path_patch(model, variables, CLEAN, CORRUPT, metric, "each", receivers),
        path_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, "each", receivers),
        rtol=1e-5, atol=1e-5)


def test_senders_after_the_receivers_change_nothing():
    clean_metric = metric(MODEL.apply(VARIABLES, CLEAN))
    got = path_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, "each", [(1, 0, "q")])
    np.testing.assert_allclose(got[1], np.full(H, clean_metric), rtol=1e-5)
    assert np.ptp(np.asarray(got[0])) > 1e-4  # layer-0 senders do something


@pytest.mark.parametrize("kwargs,match", [
    (dict(senders=[(2, 0)]), "sender \\(2, 0\\) out of range"),
    (dict(senders=[0]), "give \\(layer, head\\) tuples"),
    (dict(senders="all"), "'each'"),
    (dict(receivers=[(1, 4, "q")]), "head 4 out of range"),
    (dict(receivers=[(1, 0, "z")]), "'q'\\|'k'\\|'v'"),
    (dict(receivers="blocks.1.hook_resid_mid"), "not a site of this model"),
    (dict(freeze_mlps=True), "no MLPs"),
    (dict(sender_positions=[10]), "sender_positions"),
    (dict(metric=lambda out: out[:, -1, 0]), "metric must return a scalar"),
])
def test_bad_input_is_a_clear_error(kwargs, match):
    args = dict(metric=metric, senders=[(0, 0)], receivers=[(1, 0, "q")])
    with pytest.raises(ValueError, match=match):
        path_patch(MODEL, VARIABLES, CLEAN, CORRUPT, **{**args, **kwargs})
