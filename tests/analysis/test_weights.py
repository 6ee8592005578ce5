"""Weight processing leaves log-probabilities unchanged (checked in float64 with the NumPy
reference) and leaves the documented weights centred."""

import dataclasses

import chex
import flax.linen as nn
import jax
import numpy as np
import pytest
from scipy.special import log_softmax

import jaxinterp as ji
from jaxinterp.analysis.weights import process_weights
from tests.helpers import numpy_transformer
from tests.helpers.tiny_models import assert_close, tiny

ALL = dict(fold_ln=True, center_writing_weights=True, center_unembed=True,
           fold_value_biases=True)
NONE = dict.fromkeys(ALL, False)


def _logprobs(model, variables, tokens):
    """float64 log-probabilities of the NumPy reference (unrolled weights)."""
    v = ji.models.unstack_layers(variables)
    return log_softmax(numpy_transformer.forward(model.config, v, tokens)[0], axis=-1)


def _check_unchanged(model, variables, tokens, options):
    new_model, new_vars = process_weights(model, variables, **{**NONE, **options})
    np.testing.assert_allclose(_logprobs(new_model, new_vars, tokens),
                               _logprobs(model, variables, tokens), rtol=0, atol=1e-5)
    got = jax.nn.log_softmax(new_model.apply(new_vars, tokens))
    assert_close(got, jax.nn.log_softmax(model.apply(variables, tokens)), rtol=1e-5)
    return new_model, nn.meta.unbox(new_vars)["params"]


GPT2_OPTIONS = [{k: True} for k in ALL] + [ALL]


@pytest.mark.parametrize("options", GPT2_OPTIONS, ids=lambda o: "+".join(o))
def test_gpt2_style_log_probs_unchanged(options):
    model, variables, tokens = tiny()  # LayerNorm, biases, tied embeddings, no b_U
    new_model, p = _check_unchanged(model, variables, tokens, options)
    if options.get("fold_ln"):
        for ln in [p["ln_final"], *(p[f"blocks_{i}"][n] for i in range(2) for n in ("ln1", "ln2"))]:
            np.testing.assert_array_equal(ln["w"], 1.0)
            np.testing.assert_array_equal(ln["b"], 0.0)
        np.testing.assert_allclose(p["blocks_1"]["attn"]["W_Q"].mean(1), 0.0, atol=1e-6)
        np.testing.assert_allclose(p["blocks_0"]["mlp"]["W_in"].mean(0), 0.0, atol=1e-6)
        assert new_model.config.unembed_bias and not new_model.config.tie_embeddings
    if options.get("center_writing_weights"):
        for w in (p["embed"]["W_E"], p["pos_embed"]["W_pos"], p["blocks_0"]["attn"]["W_O"],
                  p["blocks_1"]["mlp"]["W_out"], p["blocks_1"]["attn"]["b_O"],
                  p["blocks_0"]["mlp"]["b_out"]):
            np.testing.assert_allclose(np.asarray(w).mean(-1), 0.0, atol=1e-6)
    if options.get("center_unembed"):
        np.testing.assert_allclose(p["W_U"].mean(-1), 0.0, atol=1e-6)
    if options.get("fold_value_biases"):
        np.testing.assert_array_equal(p["blocks_0"]["attn"]["b_V"], 0.0)


def test_fold_value_biases_formula():
    model, variables, tokens = tiny()
    _, p = _check_unchanged(model, variables, tokens, dict(fold_value_biases=True))
    old = nn.meta.unbox(variables)["params"]["blocks_1"]["attn"]
    want = np.asarray(old["b_O"], np.float64) + sum(
        np.asarray(old["b_V"][h], np.float64) @ np.asarray(old["W_O"][h], np.float64)
        for h in range(4))
    np.testing.assert_allclose(p["blocks_1"]["attn"]["b_O"], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("options", [dict(fold_ln=True), dict(center_unembed=True),
                                     dict(fold_ln=True, center_unembed=True)],
                         ids=lambda o: "+".join(o))
def test_llama_style_log_probs_unchanged(options):
    model, variables, tokens = tiny("llama_small")  # RMSNorm, GQA, SwiGLU, rotary, no biases
    _, p = _check_unchanged(model, variables, tokens, options)
    if options.get("fold_ln"):
        np.testing.assert_array_equal(p["blocks_0"]["ln2"]["w"], 1.0)


@pytest.mark.parametrize("kw", [dict(use_bias=False), dict(attn_only=True, n_key_value_heads=2)],
                         ids=["ln_without_biases", "attn_only_gqa"])
def test_other_variants_log_probs_unchanged(kw):
    model, variables, tokens = tiny(**kw)
    new_model, _ = _check_unchanged(model, variables, tokens, ALL)
    assert new_model.config.use_bias


def test_scanned_and_boxed_structure_preserved():
    model, variables, tokens = tiny()
    scanned = ji.models.build("gpt2_small", **{**dataclasses.asdict(model.config),
                                               "scan_layers": True})
    boxed = scanned.init(jax.random.key(0), tokens)  # LogicallyPartitioned, stacked blocks
    stacked = ji.models.stack_layers(variables)
    boxed = jax.tree.map(lambda box, v: box.replace_boxed(v), boxed, stacked,
                         is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    _check_unchanged(scanned, boxed, tokens, ALL)
    new_model, new_vars = process_weights(scanned, boxed, **ALL)
    assert new_model.config.scan_layers
    assert isinstance(new_vars["params"]["blocks"]["attn"]["W_O"], nn.LogicallyPartitioned)
    assert new_vars["params"]["blocks"]["attn"]["W_O"].names[0] == "layers"
    # same numbers as processing the unrolled model
    _, unrolled = process_weights(model, variables, **ALL)
    chex.assert_trees_all_equal(ji.models.unstack_layers(new_vars)["params"],
                                nn.meta.unbox(unrolled)["params"])


def test_errors():
    llama, variables, _ = tiny("llama_small")
    with pytest.raises(ValueError, match="center_writing_weights needs LayerNorm"):
        process_weights(llama, variables, **{**NONE, "center_writing_weights": True})
    with pytest.raises(ValueError, match="no value biases"):
        process_weights(llama, variables, **{**NONE, "fold_value_biases": True})
    model, variables, _ = tiny(normalization_type=None)
    with pytest.raises(ValueError, match="no norms"):
        process_weights(model, variables, **{**NONE, "fold_ln": True})
    model, variables, _ = tiny(gated_mlp=True)
    with pytest.raises(ValueError, match="gated MLP"):
        process_weights(model, variables, **{**NONE, "fold_ln": True})
    with pytest.raises(ValueError, match="'params'"):
        process_weights(model, {}, **NONE)
