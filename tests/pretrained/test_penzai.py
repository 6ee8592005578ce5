"""`to_penzai`: the exported penzai model computes jaxinterp's logits (and, from a Hugging Face
checkpoint, transformers' logits)."""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import pytest
from penzai import pz

from jaxinterp.models.bert import Bert, BertConfig
from jaxinterp.pretrained import load_hf, to_penzai
from tests.helpers.tiny_models import assert_close, tiny

DATA = pathlib.Path(__file__).parent / "data"
TOL = dict(rtol=1e-4, atol=1e-4)

VARIANTS = {
    "gpt2": ("gpt2_small", {}),
    "llama_gqa": ("llama_small", dict(n_key_value_heads=2, rotary_base=500.0)),
    "llama_mqa": ("llama_small", dict(n_key_value_heads=1)),
    "llama_mha_tied_bias_partial_rotary_scanned": (
        "llama_small", dict(n_key_value_heads=4, tie_embeddings=True, use_bias=True,
                            unembed_bias=True, rotary_dim=4, scan_layers=True)),
    "attn_only_rms_nopos_relu": (
        "gpt2_small", dict(attn_only=True, normalization_type="RMS",
                           positional_embedding_type="none", tie_embeddings=False)),
    "no_norm_dense_silu": ("gpt2_small", dict(normalization_type=None, act_fn="silu")),
}


def _pz_logits(pz_model, tokens) -> np.ndarray:
    """Runs the penzai model under jit (parameters unbound and passed as arguments)."""
    unbound, params = pz.unbind_params(pz_model, freeze=True)

    @jax.jit
    def forward(params, tokens):
        out = pz.bind_variables(unbound, params)(pz.nx.wrap(tokens).tag("batch", "seq"))
        return out.unwrap("batch", "seq", "vocabulary")

    return np.asarray(forward(params, np.asarray(tokens)))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_penzai_matches_jaxinterp(variant):
    preset, overrides = VARIANTS[variant]
    model, variables, tokens = tiny(preset, **overrides)
    want = np.asarray(model.apply(variables, tokens))
    got = _pz_logits(to_penzai(model, variables), tokens)
    assert got.shape == want.shape
    # atol 1e-5 x max|logit| (models without norms have logits ~1e3; float32 rounding)
    assert_close(got, want, rtol=1e-4, atol_rel=1e-5)


def test_penzai_parameters_follow_penzai_llama_layout():
    model, variables, _ = tiny("llama_small", n_key_value_heads=2)
    pz_model = to_penzai(model, variables)
    _, params = pz.unbind_params(pz_model)
    shapes = {p.label: dict(p.value.named_shape) for p in params}
    assert shapes["transformer/block_0/attention/query.weights"] == {
        "embedding": 32, "head_groups": 2, "query_heads": 2, "projection": 8}
    assert shapes["transformer/block_1/attention/key.weights"] == {
        "embedding": 32, "head_groups": 2, "projection": 8}
    assert shapes["transformer/block_0/mlp/gating_linear.weights"] == {
        "embedding": 32, "neurons": 48}
    assert shapes["transformer/lm_head.weights"] == {"embedding": 32, "vocabulary": 40}
    # W_Q of query head j*g + r (g = 2 query heads per KV head) is head group j, query head r.
    w_q = np.asarray(variables["params"]["blocks_0"]["attn"]["W_Q"].value)
    got = shapes and next(p for p in params
                          if p.label == "transformer/block_0/attention/query.weights")
    np.testing.assert_array_equal(
        got.value.unwrap("head_groups", "query_heads", "embedding", "projection")[1, 0], w_q[2])


def test_penzai_model_runs_eagerly():
    model, variables, tokens = tiny("gpt2_small", n_layers=1)
    out = to_penzai(model, variables)(pz.nx.wrap(np.asarray(tokens)).tag("batch", "seq"))
    np.testing.assert_allclose(out.unwrap("batch", "seq", "vocabulary"),
                               model.apply(variables, tokens), **TOL)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_penzai_from_hf_checkpoint_matches_transformers(name):
    ref = np.load(DATA / f"{name}.npz")
    pz_model = to_penzai(*load_hf(DATA / name))
    np.testing.assert_allclose(_pz_logits(pz_model, ref["input_ids"]), ref["logits"], **TOL)


def test_unsupported_models_and_settings():
    model, variables, _ = tiny("gpt2_small", qk_norm=True, causal=False)
    with pytest.raises(ValueError, match=r"unsupported settings .*causal=False.*qk_norm=True"):
        to_penzai(model, variables)
    bert = Bert(BertConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=8, d_vocab=10,
                           n_ctx=4))
    with pytest.raises(ValueError, match=r"supports jaxinterp\.models\.Transformer only, got Bert"):
        to_penzai(bert, {})
