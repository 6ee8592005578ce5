"""`load_hf` against Hugging Face `transformers`: logits and every layer's hidden state of tiny
randomly initialised checkpoints (written by make_hf_fixtures.py with PyTorch; no torch here)."""

from __future__ import annotations

import json
import pathlib
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import jaxinterp as ji
from jaxinterp.models.bert import Bert
from jaxinterp.pretrained.hf import load_hf

DATA = pathlib.Path(__file__).parent / "data"
TOL = dict(rtol=1e-4, atol=1e-4)
DECODERS = ("gpt2", "llama", "llama_tied")
ENCODERS = ("bert", "bert_mlm")


def _reference(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(DATA / f"{name}.npz"))


def _inputs(ref):
    return [ref["input_ids"]] + ([ref["token_type_ids"]] if "token_type_ids" in ref else [])


def _copy(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
    dst = tmp_path / name
    shutil.copytree(DATA / name, dst)
    return dst


def _edit_config(path: pathlib.Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def _edit_tensors(path: pathlib.Path, fn) -> None:
    file = path / "model.safetensors"
    save_file(fn(load_file(str(file))), str(file))


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_logits_and_hidden_states_match_transformers(name):
    ref = _reference(name)
    model, variables = load_hf(DATA / name)
    n = model.config.n_layers
    logits, cache = ji.run(model, variables, ref["input_ids"],
                           capture=["blocks.*.hook_resid_pre", "ln_final.hook_normalized"])
    np.testing.assert_allclose(logits, ref["logits"], **TOL)
    hidden = ref["hidden_states"]
    assert hidden.shape[0] == n + 1
    # HF hidden_states[i] is the input of layer i; the last one is after the final norm.
    for i in range(n):
        np.testing.assert_allclose(cache[f"blocks.{i}.hook_resid_pre"], hidden[i], **TOL,
                                   err_msg=f"{name} layer {i}")
    np.testing.assert_allclose(cache["ln_final.hook_normalized"], hidden[n], **TOL)


@pytest.mark.parametrize("name", ENCODERS)
def test_bert_outputs_and_hidden_states_match_transformers(name):
    ref = _reference(name)
    model, variables = load_hf(DATA / name)
    assert isinstance(model, Bert) and model.config.mlm_head == (name == "bert_mlm")
    n = model.config.n_layers
    out, cache = ji.run(model, variables, *_inputs(ref),
                        capture=["blocks.0.hook_resid_pre", "blocks.*.hook_normalized_resid_post"])
    np.testing.assert_allclose(out, ref["logits" if name == "bert_mlm" else "last_hidden_state"],
                               **TOL)
    hidden = ref["hidden_states"]
    np.testing.assert_allclose(cache["blocks.0.hook_resid_pre"], hidden[0], **TOL)
    for i in range(n):
        np.testing.assert_allclose(cache[f"blocks.{i}.hook_normalized_resid_post"],
                                   hidden[i + 1], **TOL, err_msg=f"{name} layer {i}")


def test_bert_token_types_matter():
    """The fixture's token types are not all 0, so dropping them must change the output."""
    ref = _reference("bert")
    model, variables = load_hf(DATA / "bert")
    assert ref["token_type_ids"].any()
    out = model.apply(variables, ref["input_ids"])
    assert np.abs(out - ref["last_hidden_state"]).max() > 1e-2


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert_mlm"])
def test_variables_have_the_boxed_form_of_init(name):
    model, variables = load_hf(DATA / name)
    ref = _reference(name)
    init = model.init(jax.random.key(0), *_inputs(ref))
    is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
    assert jax.tree.structure(variables, is_leaf=is_box) == jax.tree.structure(init,
                                                                               is_leaf=is_box)
    got = jax.tree.leaves(variables, is_leaf=is_box)
    want = jax.tree.leaves(init, is_leaf=is_box)
    for g, w in zip(got, want, strict=True):
        assert isinstance(g, nn.LogicallyPartitioned) and g.names == w.names
        assert g.value.shape == w.value.shape and g.value.dtype == w.value.dtype


@pytest.mark.parametrize("name", ["llama", "bert_mlm"])
def test_scan_layers_override_gives_the_same_outputs_under_jit(name):
    ref = _reference(name)
    model, variables = load_hf(DATA / name, scan_layers=True)
    assert model.config.scan_layers
    out, cache = jax.jit(lambda v, *x: ji.run(model, v, *x, capture="blocks.1.hook_resid_pre"))(
        variables, *_inputs(ref))
    np.testing.assert_allclose(out, ref["logits"], **TOL)
    np.testing.assert_allclose(cache["blocks.1.hook_resid_pre"], ref["hidden_states"][1], **TOL)


def test_llama_reads_rope_theta(tmp_path):
    """The fixture uses rope_theta=500; reading the default 10000 instead would not match."""
    path = _copy("llama", tmp_path)
    model, _ = load_hf(path)
    assert model.config.rotary_base == 500.0 and model.config.n_key_value_heads == 2
    _edit_config(path, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    model, variables = load_hf(path)
    ref = _reference("llama")
    assert np.abs(model.apply(variables, ref["input_ids"]) - ref["logits"]).max() > 1e-3


def test_llama_tied_with_attention_biases():
    model, _ = load_hf(DATA / "llama_tied")
    c = model.config
    assert c.tie_embeddings and c.use_bias and c.n_key_value_heads == 1  # MLP biases are zeros


def test_gpt2_checkpoint_without_prefix_and_with_mask_buffers(tmp_path):
    """Older GPT-2 files (as on the Hub) have no `transformer.` prefix and store attn.bias."""
    path = _copy("gpt2", tmp_path)

    def legacy(t):
        t = {k.removeprefix("transformer."): v for k, v in t.items()}
        t["h.0.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.float32))
        return t

    _edit_tensors(path, legacy)
    ref = _reference("gpt2")
    model, variables = load_hf(path)
    np.testing.assert_allclose(model.apply(variables, ref["input_ids"]), ref["logits"], **TOL)


# -- errors -------------------------------------------------------------------------------------

def test_missing_directory_and_files(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        load_hf(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"no config\.json"):
        load_hf(tmp_path)
    path = _copy("gpt2", tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"no model\.safetensors"):
        load_hf(path)


def test_missing_shard(tmp_path):
    path = _copy("llama", tmp_path)
    (path / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(ValueError, match=r"shard files .* missing.*model-00002-of-00003"):
        load_hf(path)


def test_unknown_model_type_and_architecture(tmp_path):
    path = _copy("gpt2", tmp_path)
    _edit_config(path, model_type="t5")
    with pytest.raises(ValueError, match="model_type 't5' is not supported; supported: gpt2"):
        load_hf(path)
    _edit_config(path, model_type="gpt2", architectures=["GPT2ForSequenceClassification"])
    with pytest.raises(ValueError, match=r"GPT2ForSequenceClassification.*GPT2LMHeadModel"):
        load_hf(path)


def test_missing_and_unexpected_tensors_are_listed(tmp_path):
    path = _copy("gpt2", tmp_path)

    def damage(t):
        del t["transformer.h.1.mlp.c_fc.bias"], t["transformer.ln_f.weight"]
        t["transformer.h.0.extra.weight"] = np.zeros(3, np.float32)
        return t

    _edit_tensors(path, damage)
    with pytest.raises(ValueError) as err:
        load_hf(path)
    msg = str(err.value)
    assert "missing tensors: " in msg and "h.1.mlp.c_fc.bias (64,)" in msg
    assert "ln_f.weight (32,)" in msg and "unexpected tensors: h.0.extra.weight" in msg


def test_shape_mismatch(tmp_path):
    path = _copy("bert_mlm", tmp_path)
    _edit_config(path, intermediate_size=48)
    with pytest.raises(ValueError, match=r"shape mismatches.*intermediate.dense.weight: "
                                         r"expected \(48, 32\), got \(64, 32\)"):
        load_hf(path)


def test_unsupported_options(tmp_path):
    path = _copy("llama", tmp_path)
    _edit_config(path, rope_parameters={"rope_type": "llama3", "rope_theta": 500.0})
    with pytest.raises(ValueError, match="RoPE type 'llama3' is not supported"):
        load_hf(path)
    path = _copy("gpt2", tmp_path)
    _edit_config(path, scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx=True"):
        load_hf(path)
    with pytest.raises(ValueError, match=r"cannot override \['n_layers'\]"):
        load_hf(DATA / "gpt2", n_layers=3)
