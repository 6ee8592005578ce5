"""Export a jaxinterp `Transformer` to a penzai model (penzai >= 0.2, `penzai.models.transformer`).

    pz_model = to_penzai(model, variables)
    logits = pz_model(pz.nx.wrap(tokens).tag("batch", "seq"))   # NamedArray: batch, seq, vocabulary

penzai (Johnson et al. 2024, github.com/google-deepmind/penzai) represents a model as a tree of
small named-axis layers that can be inspected with treescope and edited by selectors. The
exported model is a `penzai.models.transformer.model_parts.TransformerLM` laid out like penzai's
own LLaMA / GPT-NeoX builders (`variants.llamalike_common`, `variants.gpt_neox`): the same layer
types, axis names ("seq", "embedding", "heads" or "head_groups"/"query_heads", "projection",
"neurons", "vocabulary") and parameter labels (`transformer/block_{i}/attention/query.weights`,
...), so penzai's tooling (KV-caching conversion, selectors) applies. penzai 0.2 has no GPT-2
builder; learned absolute positions are added by `AddLearnedPositions`, defined here.

Supported: pre-norm causal `Transformer`s with LayerNorm, RMSNorm or no norm; learned, rotary
(full or partial `rotary_dim`, rotate-half as penzai's `ApplyRoPE`) or no positions; multi-head,
multi-query and grouped-query attention; dense or gated (GLU) MLPs with any jaxinterp activation;
attention-only models; biases; tied or untied unembedding and `b_U`; unrolled or scanned layers.
Anything else (`causal=False`, `qk_norm=True`, other attention variants, non-Transformer models)
is a ValueError naming the unsupported settings. Outputs match `model.apply` to float32 rounding.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from penzai import pz
from penzai.models.transformer import model_parts

from jaxinterp.layers.common import activation
from jaxinterp.layers.stack import unstack_layers
from jaxinterp.models.transformer import Transformer, TransformerConfig

_HANDLED = {
    "n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx", "d_vocab_out",
    "n_key_value_heads", "act_fn", "gated_mlp", "attn_only", "normalization_type",
    "positional_embedding_type", "rotary_dim", "rotary_base", "use_bias", "tie_embeddings",
    "unembed_bias", "eps", "init_range", "dtype", "param_dtype", "scan_layers", "remat",
}
"""Config fields the exporter reads; any other field must keep its default value."""

_MASKED_OUT = -2.3819763e38  # as penzai's builders (the exact value does not matter)


@pz.pytree_dataclass
class AddLearnedPositions(pz.nn.Layer):
    """Adds a learned absolute position table (GPT-2's `wpe`), indexed by token positions.

    Attributes:
      table: NamedArray with axes ("positions", "embedding").
      positions_input_name: side input with the integer positions (axes of the tokens).
    """

    table: pz.ParameterLike[pz.nx.NamedArray]
    positions_input_name: str = dataclasses.field(
        default="token_positions", metadata={"pytree_node": False})

    def __call__(self, x: pz.nx.NamedArray, /, **side_inputs: Any) -> pz.nx.NamedArray:
        positions = side_inputs[self.positions_input_name]
        return x + self.table.value[{"positions": positions}]


def unsupported(config: Any) -> list[str]:
    """The settings of `config` that `to_penzai` cannot export (empty if it can)."""
    if not isinstance(config, TransformerConfig):
        return [f"model family {type(config).__name__} (only TransformerConfig)"]
    problems = []
    defaults = TransformerConfig()
    for f in dataclasses.fields(config):
        if f.name not in _HANDLED and getattr(config, f.name) != getattr(defaults, f.name):
            problems.append(f"{f.name}={getattr(config, f.name)!r}")
    return problems


def to_penzai(model: nn.Module, variables: Any) -> model_parts.TransformerLM:
    """A penzai `TransformerLM` computing the same function as `model.apply(variables, ·)`.

    Args:
      model: a `jaxinterp.models.Transformer` (see the module docstring for what is supported).
      variables: its variables (boxed or not, unrolled or scanned layout).

    Returns:
      A penzai model: call it on `pz.nx.wrap(tokens).tag("batch", "seq")` (any batch axis
      names) to get logits with axes (batch..., "seq", "vocabulary"). Parameters are
      `pz.Parameter`s labelled `transformer/...`.

    Raises:
      ValueError: for a model or config that cannot be exported (the message lists why).
    """
    if not isinstance(model, Transformer):
        raise ValueError(f"to_penzai supports jaxinterp.models.Transformer only, got "
                         f"{type(model).__name__}")
    c: TransformerConfig = model.config
    problems = unsupported(c)
    if problems:
        raise ValueError(f"to_penzai cannot export this Transformer: unsupported settings "
                         f"{', '.join(problems)} (supported: every TransformerConfig field in "
                         f"{sorted(_HANDLED)}; other fields at their defaults)")
    params = unstack_layers(nn.meta.unbox(variables))
    params = params.get("params", params)
    return _Builder(c, params).build()


class _Builder:
    def __init__(self, c: TransformerConfig, params: dict[str, Any]):
        self.c = c
        self.params = params
        self.act_dtype = jnp.dtype(c.dtype)
        kvh = c.n_key_value_heads or c.n_heads
        g = c.n_heads // kvh
        # Head axes as penzai's llamalike builder names them.
        if g == 1:
            self.common, self.q_only = {"heads": kvh}, {}
        elif kvh == 1:
            self.common, self.q_only = {}, {"query_heads": g}
        else:
            self.common, self.q_only = {"head_groups": kvh}, {"query_heads": g}
        self.q_heads = {**self.common, **self.q_only}

    # -- parameters -----------------------------------------------------------------------------
    def _p(self, label: str, x: Any, *axes: str) -> pz.Parameter:
        return pz.Parameter(value=pz.nx.wrap(jnp.asarray(x)).tag(*axes),
                            label=f"transformer/{label}")

    def _linear(self, label: str, w: Any, in_axes: dict[str, int], out_axes: dict[str, int]):
        w = np.asarray(w).reshape(*in_axes.values(), *out_axes.values())
        return pz.nn.Linear(weights=self._p(f"{label}.weights", w, *in_axes, *out_axes),
                            in_axis_names=tuple(in_axes), out_axis_names=tuple(out_axes))

    def _affine(self, label: str, p: dict[str, Any], w: str, b: str, in_axes, out_axes):
        layers = [self._linear(label, p[w], in_axes, out_axes)]
        if self.c.use_bias:
            bias = np.asarray(p[b]).reshape(*out_axes.values())
            layers.append(pz.nn.AddBias(bias=self._p(f"{label}.bias", bias, *out_axes),
                                        new_axis_names=()))
        return layers

    def _norm(self, label: str, p: dict[str, Any] | None) -> list[pz.nn.Layer]:
        kind = self.c.normalization_type
        if kind is None:
            return []
        scale = pz.nn.Linear(weights=self._p(f"{label}/scale.weights", p["w"], "embedding"),
                             in_axis_names=(), out_axis_names=())
        if kind == "RMS":
            return [pz.nn.RMSLayerNorm([
                pz.nn.RMSStandardize(across=("embedding",), epsilon=jnp.asarray(self.c.eps)),
                scale])]
        shift = pz.nn.AddBias(bias=self._p(f"{label}/shift.bias", p["b"], "embedding"),
                              new_axis_names=())
        return [pz.nn.LayerNorm([
            pz.nn.Standardize(across=("embedding",), epsilon=self.c.eps), scale, shift])]

    # -- layers ---------------------------------------------------------------------------------
    def _rope(self) -> list[pz.nn.Layer]:
        c = self.c
        if c.positional_embedding_type != "rotary":
            return []
        rd = c.rotary_dim or c.d_head
        if rd == c.d_head:
            return [pz.nn.ApplyRoPE(positions_input_name="token_positions",
                                    embedding_axis="projection", max_wavelength=c.rotary_base)]
        return [pz.nn.ApplyRoPEToSubset(positions_input_name="token_positions",
                                        embedding_axis="projection",
                                        max_wavelength=c.rotary_base, rope_subset_size=rd)]

    def _attention(self, label: str, p: dict[str, Any]) -> pz.nn.Attention:
        c = self.c
        d, dh = {"embedding": c.d_model}, {"projection": c.d_head}
        # W_Q [n_heads, d_model, d_head] -> [d_model, (head_groups,) (query_heads,) d_head]:
        # query head j*g + r is query_heads r of head group j, as HF's and penzai's GQA.
        wq = np.moveaxis(np.asarray(p["W_Q"]), 1, 0)
        wk, wv = (np.moveaxis(np.asarray(p[k]), 1, 0) for k in ("W_K", "W_V"))
        p = {**p, "W_Q": wq, "W_K": wk, "W_V": wv}
        qkv = {"head_groups": "hg", "query_heads": "hq", "heads": "h"}  # einsum letters
        common = {a: qkv[a] for a in self.common}
        q_only = {a: qkv[a] for a in self.q_only}
        query = self._affine(f"{label}/query", p, "W_Q", "b_Q", d, {**self.q_heads, **dh})
        key = self._affine(f"{label}/key", p, "W_K", "b_K", d, {**self.common, **dh})
        value = self._affine(f"{label}/value", p, "W_V", "b_V", d, {**self.common, **dh})
        scale = pz.nn.ConstantRescale(by=jnp.array(c.d_head ** -0.5, self.act_dtype))
        output = self._affine(f"{label}/output", p, "W_O", "b_O", {**self.q_heads, **dh}, d)
        return pz.nn.Attention(
            input_to_query=pz.nn.Sequential([*query, *self._rope(), scale]),
            input_to_key=pz.nn.Sequential([*key, *self._rope()]),
            input_to_value=pz.nn.Sequential(value),
            query_key_to_attn=pz.nn.Sequential([
                pz.nn.NamedEinsum(
                    ({"seq": "tq", **common, **q_only, "projection": "p"},
                     {"seq": "tkv", **common, "projection": "p"}),
                    {"seq": "tq", **common, **q_only, "kv_seq": "tkv"}),  # contract projection
                pz.nn.ApplyCausalAttentionMask(
                    masked_out_value=jnp.array(_MASKED_OUT, self.act_dtype)),
                pz.nn.Softmax("kv_seq"),
            ]),
            attn_value_to_output=pz.nn.Sequential([
                pz.nn.NamedEinsum(
                    ({"seq": "tq", **common, **q_only, "kv_seq": "tkv"},
                     {"seq": "tkv", **common, "projection": "p"}),
                    {"seq": "tq", **common, **q_only, "projection": "p"}),  # contract kv_seq
                *output,
            ]),
        )

    def _mlp(self, label: str, p: dict[str, Any]) -> model_parts.TransformerFeedForward:
        c = self.c
        d, n = {"embedding": c.d_model}, {"neurons": c.d_mlp}
        act = pz.nn.Elementwise(activation(c.act_fn))
        value = self._affine(f"{label}/value_linear" if c.gated_mlp else f"{label}/in",
                             p, "W_in", "b_in", d, n)
        out_name = f"{label}/out_linear" if c.gated_mlp else f"{label}/out"
        out = self._affine(out_name, p, "W_out", "b_out", n, d)
        if not c.gated_mlp:
            return model_parts.TransformerFeedForward([*value, act, *out])
        gate = self._linear(f"{label}/gating_linear", p["W_gate"], d, n)  # W_gate has no bias
        return model_parts.TransformerFeedForward([
            pz.nn.BranchAndMultiplyTogether(branches=[
                pz.nn.NamedGroup("gate", [gate, act]),
                pz.nn.Sequential(value) if len(value) > 1 else value[0],
            ]),
            *out,
        ])

    def _block(self, i: int) -> model_parts.TransformerBlock:
        p = self.params[f"blocks_{i}"]
        name = f"block_{i}"
        attn = [*self._norm(f"{name}/pre_attention_norm", p.get("ln1")),
                self._attention(f"{name}/attention", p["attn"])]
        sublayers = [pz.nn.Residual(pz.nn.Sequential(attn))]
        if not self.c.attn_only:
            ffw = [*self._norm(f"{name}/pre_ffw_norm", p.get("ln2")),
                   self._mlp(f"{name}/mlp", p["mlp"])]
            sublayers.append(pz.nn.Residual(pz.nn.Sequential(ffw)))
        return model_parts.TransformerBlock(sublayers=sublayers)

    def build(self) -> model_parts.TransformerLM:
        c, p = self.c, self.params
        d_out = c.d_vocab_out or c.d_vocab
        table = pz.nn.EmbeddingTable(
            embeddings=self._p("embedder.embeddings", p["embed"]["W_E"], "vocabulary",
                               "embedding"),
            vocabulary_axis="vocabulary")
        layers: list[pz.nn.Layer] = [pz.nn.EmbeddingLookup(table)]
        if jnp.dtype(c.param_dtype) != self.act_dtype:
            layers.append(pz.nn.CastToDType(self.act_dtype))
        if c.positional_embedding_type == "standard":
            layers.append(AddLearnedPositions(table=self._p(
                "pos_embedder.embeddings", p["pos_embed"]["W_pos"], "positions", "embedding")))
        layers += [self._block(i) for i in range(c.n_layers)]
        layers += self._norm("final_norm", p.get("ln_final"))
        if c.tie_embeddings:
            layers.append(pz.nn.EmbeddingDecode(table))
        else:
            layers.append(self._linear("lm_head", p["W_U"], {"embedding": c.d_model},
                                       {"vocabulary": d_out}))
        if c.unembed_bias:
            layers.append(pz.nn.AddBias(bias=self._p("lm_head.bias", p["b_U"], "vocabulary"),
                                        new_axis_names=()))
        layers.append(pz.nn.CastToDType(jnp.float32))  # jaxinterp returns float32 logits
        return model_parts.TransformerLM(
            metadata=model_parts.TransformerMetadata(
                common_head_axes=self.common, query_only_head_axes=self.q_only,
                embedding_dim=c.d_model, projection_dim=c.d_head,
                mlp_hidden_dim=0 if c.attn_only else c.d_mlp, vocab_size=d_out,
                activation_dtype=self.act_dtype),
            body=pz.nn.Sequential(layers))
