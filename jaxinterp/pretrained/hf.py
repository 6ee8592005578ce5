"""Load Hugging Face checkpoints (config.json + safetensors) into jaxinterp models, without PyTorch.

    model, variables = load_hf("path/to/checkpoint_dir")
    logits, cache = ji.run(model, variables, tokens, capture="blocks.*.hook_resid_post")

Supported (`model_type` in config.json: architectures):
  gpt2:  GPT2LMHeadModel, GPT2Model -> `Transformer` (LayerNorm, learned positions, GELU-tanh MLP,
         tied unembedding; a GPT2Model's logits use the tied embedding, as GPT2LMHeadModel's do).
  llama: LlamaForCausalLM -> `Transformer` (RMSNorm, rotary "rotate half" with the config's
         `rope_theta`, grouped-query attention, SwiGLU, tied or untied unembedding, optional
         attention / MLP biases). RoPE scaling variants (llama3, linear, dynamic, yarn) are not
         supported.
  bert:  BertModel, BertForMaskedLM -> `Bert` (`jaxinterp.models.bert`). The model returns the
         final hidden states [batch, pos, d_model] for BertModel and the masked-LM logits
         [batch, pos, d_vocab] for BertForMaskedLM (hidden states are then at the site
         `blocks.{n_layers-1}.hook_normalized_resid_post`). BertModel's pooler is not loaded.
         Absolute position embeddings only; no padding mask.

Weight layouts. HF GPT-2 stores `Conv1D` weights as [in, out] and fuses Q, K, V in `c_attn`
[d_model, 3 * d_model]; `torch.nn.Linear` (BERT, LLaMA) stores [out, in]. Both are reshaped to
TransformerLens layouts: W_Q/W_K/W_V [head, d_model, d_head], W_O [head, d_head, d_model],
W_in/W_gate [d_model, d_mlp], W_out [d_mlp, d_model], W_U [d_model, d_vocab]. HF's grouped-query
`repeat_kv` gives KV head j to query heads j*g ... (j+1)*g-1, which is what `Attention`'s
`jnp.repeat` does. HF LLaMA's `rotate_half` with inv_freq = theta^(-2i/d_head) is exactly
`jaxinterp.layers.rotary.apply_rotary` (first half / second half pairing), checked numerically by
the parity tests in tests/pretrained/test_hf.py.

Returned variables have the form `model.init` returns (`{"params": ...}` with
`flax.linen.LogicallyPartitioned` boxes), so they drop into `jaxinterp.run`, training and
sharding unchanged. Known buffers that are not weights (GPT-2 `attn.bias` / `attn.masked_bias`
causal masks, BERT `embeddings.position_ids`, LLaMA `rotary_emb.inv_freq`, BERT `pooler.*`)
are skipped; every other unknown tensor is an error.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxinterp.layers.stack import stack_layers
from jaxinterp.models.bert import Bert, BertConfig
from jaxinterp.models.transformer import Transformer, TransformerConfig

SUPPORTED: dict[str, tuple[str, ...]] = {
    "gpt2": ("GPT2LMHeadModel", "GPT2Model"),
    "llama": ("LlamaForCausalLM",),
    "bert": ("BertModel", "BertForMaskedLM"),
}
"""`model_type` -> the architectures `load_hf` reads."""

OVERRIDABLE = ("dtype", "param_dtype", "scan_layers", "remat")
"""Config fields `load_hf` lets a caller set (they do not change the parameter shapes)."""

_ACTIVATIONS = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "gelu": "gelu",
                "relu": "relu", "silu": "silu", "swish": "silu"}


def load_hf(path: str | pathlib.Path, **overrides: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Reads a local Hugging Face checkpoint directory into a jaxinterp model.

    Args:
      path: a directory with `config.json` and `model.safetensors`, or a sharded checkpoint
        (`model.safetensors.index.json` plus the shard files it names).
      **overrides: config fields in `OVERRIDABLE`, e.g. `scan_layers=True` (the layers are
        stacked for you) or `dtype="bfloat16"`.

    Returns:
      `(model, variables)`: a `Transformer` (gpt2, llama) or `Bert` (bert) and its variables in
      the boxed form `model.init` returns, parameters cast to the config's `param_dtype`.

    Raises:
      ValueError: missing directory or files; unknown `model_type` or architecture; config
        options the model cannot represent; missing, unexpected or wrongly shaped tensors (each
        listed).
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise ValueError(f"load_hf: {str(path)!r} is not a directory (expected a Hugging Face "
                         "checkpoint directory with config.json and model.safetensors)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"load_hf: no config.json in {str(path)!r}")
    hf = json.loads(config_file.read_text())
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED:
        raise ValueError(f"load_hf: model_type {model_type!r} is not supported; supported: "
                         f"{', '.join(f'{k} ({", ".join(v)})' for k, v in SUPPORTED.items())}")
    archs = hf.get("architectures") or [SUPPORTED[model_type][0]]
    arch = archs[0]
    if arch not in SUPPORTED[model_type]:
        raise ValueError(f"load_hf: architecture {arch!r} of model_type {model_type!r} is not "
                         f"supported; supported: {', '.join(SUPPORTED[model_type])}")
    bad = sorted(set(overrides) - set(OVERRIDABLE))
    if bad:
        raise ValueError(f"load_hf: cannot override {bad}; overridable fields: {OVERRIDABLE} "
                         "(the others are read from config.json)")
    tensors = _Tensors(_read_safetensors(path), where=str(path))
    convert = {"gpt2": _gpt2, "llama": _llama, "bert": _bert}[model_type]
    model, params = convert(hf, arch, tensors, overrides)
    tensors.check()
    return model, _box_like_init(model, params)


# -- reading ------------------------------------------------------------------------------------

def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"load_hf: {index} has no 'weight_map'")
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise ValueError(f"load_hf: shard files named in {index.name} are missing from "
                             f"{str(path)!r}: {missing}")
    elif (path / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        found = sorted(p.name for p in path.iterdir())
        raise ValueError(f"load_hf: no model.safetensors or model.safetensors.index.json in "
                         f"{str(path)!r} (found: {found}); convert PyTorch .bin checkpoints "
                         "with save_pretrained(safe_serialization=True)")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(load_file(str(path / f)))
    return tensors


class _Tensors:
    """The checkpoint's tensors; records which were used, missing or wrongly shaped."""

    def __init__(self, tensors: dict[str, np.ndarray], where: str):
        self.tensors = tensors
        self.where = where
        self.used: set[str] = set()
        self.ignored: set[str] = set()
        self.missing: list[str] = []
        self.bad_shapes: list[str] = []

    def strip_prefix(self, prefix: str) -> None:
        """`transformer.h.0...` -> `h.0...` (checkpoints are saved with or without it)."""
        self.tensors = {k[len(prefix):] if k.startswith(prefix) else k: v
                        for k, v in self.tensors.items()}

    def rename(self, fn: Callable[[str], str]) -> None:
        self.tensors = {fn(k): v for k, v in self.tensors.items()}

    def ignore(self, pattern: str) -> None:
        """Tensors matching `pattern` are known non-weights (buffers) and are skipped."""
        self.ignored |= {k for k in self.tensors if re.fullmatch(pattern, k)}

    def has(self, name: str) -> bool:
        return name in self.tensors

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The tensor `name` (float32), which must have `shape`; zeros (recorded) if absent."""
        if name not in self.tensors:
            self.missing.append(f"{name} {shape}")
            return np.zeros(shape, np.float32)
        self.used.add(name)
        x = self.tensors[name]
        if tuple(x.shape) != tuple(shape):
            self.bad_shapes.append(f"{name}: expected {tuple(shape)}, got {tuple(x.shape)}")
            return np.zeros(shape, np.float32)
        return np.asarray(x, np.float32)

    def check(self) -> None:
        problems = []
        if self.missing:
            problems.append(f"missing tensors: {', '.join(self.missing)}")
        if self.bad_shapes:
            problems.append(f"shape mismatches (config.json vs safetensors): "
                            f"{'; '.join(self.bad_shapes)}")
        unexpected = sorted(set(self.tensors) - self.used - self.ignored)
        if unexpected:
            problems.append(f"unexpected tensors: {', '.join(unexpected)}")
        if problems:
            raise ValueError(f"load_hf: checkpoint in {self.where!r} does not match its "
                             f"config.json: " + " | ".join(problems))


def _box_like_init(model: nn.Module, params: dict[str, Any]) -> dict[str, Any]:
    """Puts `params` (unrolled `blocks_{i}` layout) into the boxes `model.init` returns."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    abstract = jax.eval_shape(model.init, jax.random.key(0), tokens)
    if model.config.scan_layers:
        params = stack_layers(params)
    want = traverse_util.flatten_dict(abstract["params"])
    got = traverse_util.flatten_dict(params)
    if set(want) != set(got):  # a bug in a converter, not in the checkpoint
        raise ValueError(f"load_hf: converted parameters do not match the model: missing "
                         f"{sorted(set(want) - set(got))}, extra {sorted(set(got) - set(want))}")
    boxed = {}
    for key, box in want.items():
        value = box.unbox() if isinstance(box, nn.LogicallyPartitioned) else box
        x = np.asarray(got[key])
        if x.shape != value.shape:
            raise ValueError(f"load_hf: parameter {'.'.join(key)} has shape {x.shape}, model "
                             f"expects {value.shape}")
        x = jnp.asarray(x, value.dtype)
        boxed[key] = box.replace_boxed(x) if isinstance(box, nn.LogicallyPartitioned) else x
    return {"params": traverse_util.unflatten_dict(boxed)}


def _config(cls: type, fields: dict[str, Any], overrides: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ValueError(f"load_hf: {cls.__name__} has no field(s) {bad}")
    return cls(**{**fields, **overrides})


def _activation(name: str | None, key: str) -> str:
    if name not in _ACTIVATIONS:
        raise ValueError(f"load_hf: {key}={name!r} is not supported; supported: "
                         f"{sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _require(hf: dict[str, Any], key: str, ok: Callable[[Any], bool], default: Any,
             what: str) -> None:
    value = hf.get(key, default)
    if not ok(value):
        raise ValueError(f"load_hf: config.json {key}={value!r} is not supported ({what})")


# -- GPT-2 --------------------------------------------------------------------------------------

def _gpt2(hf, arch, t: _Tensors, overrides):
    _require(hf, "scale_attn_weights", lambda v: v is True, True, "needs True")
    _require(hf, "scale_attn_by_inverse_layer_idx", lambda v: v is False, False, "needs False")
    _require(hf, "add_cross_attention", lambda v: v is False, False, "needs False")
    d, n_layers, h = hf["n_embd"], hf["n_layer"], hf["n_head"]
    if d % h:
        raise ValueError(f"load_hf: n_embd={d} is not divisible by n_head={h}")
    dh, d_mlp, vocab = d // h, hf.get("n_inner") or 4 * d, hf["vocab_size"]
    t.strip_prefix("transformer.")
    t.ignore(r"h\.\d+\.attn\.(bias|masked_bias)")  # causal-mask buffers of older checkpoints
    tied = not t.has("lm_head.weight")
    if tied and not hf.get("tie_word_embeddings", True):
        t.missing.append(f"lm_head.weight {(vocab, d)} (tie_word_embeddings is false)")
    config = _config(TransformerConfig, dict(
        n_layers=n_layers, d_model=d, n_heads=h, d_head=dh, d_mlp=d_mlp, d_vocab=vocab,
        n_ctx=hf["n_positions"], act_fn=_activation(hf.get("activation_function", "gelu_new"),
                                                    "activation_function"),
        normalization_type="LN", positional_embedding_type="standard", use_bias=True,
        tie_embeddings=tied, unembed_bias=False, eps=hf.get("layer_norm_epsilon", 1e-5)),
        overrides)

    def ln(name):
        return {"w": t.take(f"{name}.weight", (d,)), "b": t.take(f"{name}.bias", (d,))}

    params: dict[str, Any] = {
        "embed": {"W_E": t.take("wte.weight", (vocab, d))},
        "pos_embed": {"W_pos": t.take("wpe.weight", (hf["n_positions"], d))},
        "ln_final": ln("ln_f"),
    }
    if not tied:
        params["W_U"] = t.take("lm_head.weight", (vocab, d)).T
    for i in range(n_layers):
        p = f"h.{i}"
        # Conv1D [in, out]; c_attn's out axis is (q | k | v) x (head, d_head).
        w_qkv = t.take(f"{p}.attn.c_attn.weight", (d, 3 * d)).reshape(d, 3, h, dh)
        b_qkv = t.take(f"{p}.attn.c_attn.bias", (3 * d,)).reshape(3, h, dh)
        attn = {f"W_{n}": w_qkv[:, j].transpose(1, 0, 2) for j, n in enumerate("QKV")}
        attn |= {f"b_{n}": b_qkv[j] for j, n in enumerate("QKV")}
        attn["W_O"] = t.take(f"{p}.attn.c_proj.weight", (d, d)).reshape(h, dh, d)
        attn["b_O"] = t.take(f"{p}.attn.c_proj.bias", (d,))
        params[f"blocks_{i}"] = {
            "ln1": ln(f"{p}.ln_1"), "ln2": ln(f"{p}.ln_2"), "attn": attn,
            "mlp": {"W_in": t.take(f"{p}.mlp.c_fc.weight", (d, d_mlp)),
                    "b_in": t.take(f"{p}.mlp.c_fc.bias", (d_mlp,)),
                    "W_out": t.take(f"{p}.mlp.c_proj.weight", (d_mlp, d)),
                    "b_out": t.take(f"{p}.mlp.c_proj.bias", (d,))},
        }
    return Transformer(config), params


# -- LLaMA --------------------------------------------------------------------------------------

def _rope_theta(hf: dict[str, Any]) -> float:
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ValueError(f"load_hf: RoPE type {kind!r} is not supported (only 'default', "
                         "unscaled rotary)")
    return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _llama(hf, arch, t: _Tensors, overrides):
    _require(hf, "hidden_act", lambda v: v in _ACTIVATIONS, "silu", "choose from "
             f"{sorted(_ACTIVATIONS)}")
    d, n_layers, h = hf["hidden_size"], hf["num_hidden_layers"], hf["num_attention_heads"]
    kvh = hf.get("num_key_value_heads") or h
    dh = hf.get("head_dim") or d // h
    d_mlp, vocab = hf["intermediate_size"], hf["vocab_size"]
    attn_bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    t.ignore(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")
    tied = not t.has("lm_head.weight")
    if tied and not hf.get("tie_word_embeddings", False):
        t.missing.append(f"lm_head.weight {(vocab, d)} (tie_word_embeddings is false)")
    config = _config(TransformerConfig, dict(
        n_layers=n_layers, d_model=d, n_heads=h, d_head=dh, d_mlp=d_mlp, d_vocab=vocab,
        n_ctx=hf.get("max_position_embeddings", 2048), n_key_value_heads=kvh,
        act_fn=_activation(hf.get("hidden_act", "silu"), "hidden_act"), gated_mlp=True,
        normalization_type="RMS", positional_embedding_type="rotary",
        rotary_base=_rope_theta(hf), use_bias=attn_bias or mlp_bias, tie_embeddings=tied,
        unembed_bias=False, eps=hf.get("rms_norm_eps", 1e-6)), overrides)

    def linear(name, n_out, n_in, bias):  # torch Linear [out, in] -> [in, out]
        w = t.take(f"{name}.weight", (n_out, n_in)).T
        b = t.take(f"{name}.bias", (n_out,)) if bias else np.zeros((n_out,), np.float32)
        return w, b

    params: dict[str, Any] = {
        "embed": {"W_E": t.take("model.embed_tokens.weight", (vocab, d))},
        "ln_final": {"w": t.take("model.norm.weight", (d,))},
    }
    if not tied:
        params["W_U"] = t.take("lm_head.weight", (vocab, d)).T
    for i in range(n_layers):
        p = f"model.layers.{i}"
        attn = {}
        for n, heads in (("q", h), ("k", kvh), ("v", kvh)):
            w, b = linear(f"{p}.self_attn.{n}_proj", heads * dh, d, attn_bias)
            attn[f"W_{n.upper()}"] = w.reshape(d, heads, dh).transpose(1, 0, 2)
            attn[f"b_{n.upper()}"] = b.reshape(heads, dh)
        w_o, b_o = linear(f"{p}.self_attn.o_proj", d, h * dh, attn_bias)
        attn["W_O"], attn["b_O"] = w_o.reshape(h, dh, d), b_o
        w_gate, _ = linear(f"{p}.mlp.gate_proj", d_mlp, d, False)
        w_in, b_in = linear(f"{p}.mlp.up_proj", d_mlp, d, mlp_bias)
        w_out, b_out = linear(f"{p}.mlp.down_proj", d, d_mlp, mlp_bias)
        if mlp_bias and t.has(f"{p}.mlp.gate_proj.bias"):
            raise ValueError("load_hf: a bias on gate_proj (mlp_bias with a gated MLP) is not "
                             "supported by the jaxinterp MLP (it has no b_gate)")
        mlp = {"W_gate": w_gate, "W_in": w_in, "W_out": w_out}
        if config.use_bias:  # zeros where the checkpoint has none (e.g. attention_bias only)
            mlp |= {"b_in": b_in, "b_out": b_out}
        else:
            attn = {k: v for k, v in attn.items() if not k.startswith("b_")}
        params[f"blocks_{i}"] = {
            "ln1": {"w": t.take(f"{p}.input_layernorm.weight", (d,))},
            "ln2": {"w": t.take(f"{p}.post_attention_layernorm.weight", (d,))},
            "attn": attn, "mlp": mlp,
        }
    return Transformer(config), params


# -- BERT ---------------------------------------------------------------------------------------

def _bert_legacy_name(name: str) -> str:
    """Original TF-converted checkpoints call LayerNorm parameters gamma / beta."""
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight",
                  re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name))


def _bert(hf, arch, t: _Tensors, overrides):
    _require(hf, "position_embedding_type", lambda v: v == "absolute", "absolute",
             "only 'absolute' position embeddings")
    _require(hf, "is_decoder", lambda v: v is False, False, "encoder only")
    _require(hf, "add_cross_attention", lambda v: v is False, False, "needs False")
    d, n_layers, h = hf["hidden_size"], hf["num_hidden_layers"], hf["num_attention_heads"]
    if d % h:
        raise ValueError(f"load_hf: hidden_size={d} is not divisible by num_attention_heads={h}")
    dh, d_mlp, vocab = d // h, hf["intermediate_size"], hf["vocab_size"]
    n_ctx, n_types = hf.get("max_position_embeddings", 512), hf.get("type_vocab_size", 2)
    mlm = arch == "BertForMaskedLM"
    t.strip_prefix("bert.")
    t.rename(_bert_legacy_name)
    t.ignore(r"embeddings\.position_ids")
    t.ignore(r"pooler\.dense\.(weight|bias)")
    config = _config(BertConfig, dict(
        n_layers=n_layers, d_model=d, n_heads=h, d_head=dh, d_mlp=d_mlp, d_vocab=vocab,
        n_ctx=n_ctx, n_token_types=n_types,
        act_fn=_activation(hf.get("hidden_act", "gelu"), "hidden_act"),
        eps=hf.get("layer_norm_eps", 1e-12), mlm_head=mlm), overrides)

    def ln(name):
        return {"w": t.take(f"{name}.weight", (d,)), "b": t.take(f"{name}.bias", (d,))}

    def linear(name, n_out, n_in):  # torch Linear [out, in] -> [in, out]
        return t.take(f"{name}.weight", (n_out, n_in)).T, t.take(f"{name}.bias", (n_out,))

    w_e = t.take("embeddings.word_embeddings.weight", (vocab, d))
    params: dict[str, Any] = {
        "embed": {"W_E": w_e},
        "pos_embed": {"W_pos": t.take("embeddings.position_embeddings.weight", (n_ctx, d))},
        "token_type_embed": {"W_E": t.take("embeddings.token_type_embeddings.weight",
                                           (n_types, d))},
        "embed_ln": ln("embeddings.LayerNorm"),
    }
    for i in range(n_layers):
        p = f"encoder.layer.{i}"
        attn = {}
        for n in ("query", "key", "value"):
            w, b = linear(f"{p}.attention.self.{n}", d, d)
            attn[f"W_{n[0].upper()}"] = w.reshape(d, h, dh).transpose(1, 0, 2)
            attn[f"b_{n[0].upper()}"] = b.reshape(h, dh)
        w_o, b_o = linear(f"{p}.attention.output.dense", d, d)
        attn["W_O"], attn["b_O"] = w_o.reshape(h, dh, d), b_o
        w_in, b_in = linear(f"{p}.intermediate.dense", d_mlp, d)
        w_out, b_out = linear(f"{p}.output.dense", d, d_mlp)
        params[f"blocks_{i}"] = {
            "attn": attn, "ln1": ln(f"{p}.attention.output.LayerNorm"),
            "mlp": {"W_in": w_in, "b_in": b_in, "W_out": w_out, "b_out": b_out},
            "ln2": ln(f"{p}.output.LayerNorm"),
        }
    if mlm:
        w, b = linear("cls.predictions.transform.dense", d, d)
        params["mlm_head"] = {"W": w, "b": b, "ln": ln("cls.predictions.transform.LayerNorm")}
        bias = "cls.predictions.bias"
        if not t.has(bias):
            bias = "cls.predictions.decoder.bias"
        params["b_U"] = t.take(bias, (vocab,))
        if t.has("cls.predictions.decoder.bias"):
            t.used.add("cls.predictions.decoder.bias")  # a copy of cls.predictions.bias
        if t.has("cls.predictions.decoder.weight"):  # saved copy of the tied decoder
            if not np.array_equal(t.take("cls.predictions.decoder.weight", (vocab, d)), w_e):
                raise ValueError("load_hf: cls.predictions.decoder.weight differs from the word "
                                 "embeddings; untied BERT decoders are not supported")
    return Bert(config), params
