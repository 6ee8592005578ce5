"""Decoder-only and encoder transformers (GPT-2 and LLaMA styles) with TransformerLens sites.

Input tokens [batch, pos] int -> logits [batch, pos, d_vocab_out].

Sites (TransformerLens hook names):
  hook_embed, hook_pos_embed (learned positions only)               [batch, pos, d_model]
  blocks.{i}.hook_resid_pre, hook_attn_out, hook_resid_mid, hook_mlp_out, hook_resid_post
                                                                    [batch, pos, d_model]
  blocks.{i}.ln1.hook_normalized, blocks.{i}.ln2.hook_normalized    [batch, pos, d_model]
  blocks.{i}.attn.hook_q|hook_k|hook_v|hook_z                       [batch, pos, head, d_head]
  blocks.{i}.attn.hook_attn_scores|hook_pattern           [batch, head, query_pos, key_pos]
  blocks.{i}.mlp.hook_pre|hook_post (and hook_pre_linear if gated)  [batch, pos, d_mlp]
  ln_final.hook_normalized                                          [batch, pos, d_model]
Attention-only models have no MLP and no hook_resid_mid (as in TransformerLens).
With `use_split_qkv_input=True` (edge-level analyses, `jaxinterp.analysis.eap`; TransformerLens's
`use_split_qkv_input`) every head reads its own copy of the block input, so that each receiver's
input can be changed alone; the same numbers and parameters, three more sites per block:
  blocks.{i}.hook_q_input|hook_k_input|hook_v_input [batch, pos, head, d_model] (head = KV head
    for k, v); ln1 normalises the three at once: blocks.{i}.ln1.hook_normalized is then
    [batch, pos, n_heads + 2 * n_kv_heads, d_model] (q, k, v inputs in that order)
  blocks.{i}.attn.hook_result [batch, pos, head, d_model] (head h's output z_h W_O[h], no b_O)
  blocks.{i}.hook_mlp_in [batch, pos, d_model] (the MLP's input, before ln2)
Attention variants add sites (`blocks.{i}.attn.hook_gate` [batch, pos, head] when gated,
`hook_q_features|hook_k_features` for linear attention; see `jaxinterp.layers.attention`).
Mixture-of-experts MLPs (`mlp_type="moe"`) have `blocks.{i}.mlp.hook_router_logits|
hook_router_weights` [batch, pos, expert], `hook_pre|hook_post` [batch, pos, expert, d_mlp]
and `hook_expert_out` [batch, pos, expert, d_model] (see `jaxinterp.layers.moe`).

Register tokens (`n_register_tokens` = R > 0; Darcet et al. 2024, "Vision Transformers Need
Registers"; the learned sink token of Xiao et al. 2024, "Efficient Streaming Language Models
with Attention Sinks"): R learned vectors `W_reg` [R, d_model] are prepended to the sequence
after the token and learned position embeddings (registers get no learned position; under rotary
they occupy rotary positions 0..R-1 and the tokens R..R+pos-1, which leaves relative positions
between tokens unchanged). hook_embed and hook_pos_embed are [batch, pos, d_model] over the
tokens only; every block site and ln_final.hook_normalized see the full sequence of R + pos
positions (registers first, so token t is at position R + t there, and causal attention lets
every token see every register). The logits drop the register positions: [batch, pos, vocab].

Parameter names follow TransformerLens (`embed.W_E`, `pos_embed.W_pos`, `blocks_{i}.attn.W_Q`,
`blocks_{i}.mlp.W_in`, `W_U`, `b_U`, ...). With `scan_layers=True` the blocks live under
`blocks` with a leading layer axis; `jaxinterp.models.stack_layers` / `unstack_layers` convert.

Read-out API (for analyses; see the section at the end): `embed`, `final_norm`,
`drop_registers`, `unembed` and `read_out` apply the forward pass's own steps to given variables
(`read_out` of the last `hook_resid_post` is the model's logits, bit for bit); `unembedding`
gives `(W_U, b_U)`, `check_transformer` is the one check that a model can be read out this way,
and `unrolled_params` gives unboxed, unrolled parameters.

KV cache (causal models; see `jaxinterp.layers.attention` for the attention side):

    cache = init_cache(model, batch, L)                   # zeros, L <= n_ctx positions
    logits, cache = model.apply(variables, prompt, cache=cache, offset=0)      # prefill
    logits, cache = model.apply(variables, next_tok, cache=cache, offset=P)    # decode step

`cache = {"k": [n_layers, batch, L, kv_head, d_k], "v": [n_layers, batch, L, kv_head, d_head]}`
holds every layer's keys and values of the L positions of the whole sequence (the layer axis
comes first in both parameter layouts). With `cache=`, `tokens` [batch, pos] is the chunk at
absolute positions offset .. offset + pos - 1 (any length at any offset: a prefill, one-token
decode steps, or a suffix [p, T)), its logits are [batch, pos, vocab] and equal the uncached
logits of the whole sequence at those positions, and the returned cache has the chunk's keys
and values written in. Sites see absolute positions (`jaxinterp.hooks.positions`): an
intervention with `positions=[t]` acts on position t whichever chunk holds it. Block sites have
their usual names; attention scores and patterns have L key positions. `forward_from` runs the
same cached blocks from any layer's residual stream (suffix-only patching), and `block_at` one
of them with a static layer index, so that its sites can be captured. Not available:
bidirectional models (`causal=False`) and register tokens (a ValueError).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import hooks
from jaxinterp.layers.attention import Attention, check_attention_options
from jaxinterp.layers.axes import RESID_AXES
from jaxinterp.layers.common import ACTIVATIONS, param
from jaxinterp.layers.config import StackConfig, check_dtypes, check_positive, dtypes
from jaxinterp.layers.embed import Embed, PosEmbed, check_ids
from jaxinterp.layers.mlp import KANMLP, MLP
from jaxinterp.layers.moe import MoE, check_moe_options
from jaxinterp.layers.norms import NORMS, make_norm
from jaxinterp.layers.stack import stack, stack_layers, unstack_layers

MLP_TYPES = ("dense", "moe", "kan")


@dataclasses.dataclass(frozen=True)
class TransformerSizes(StackConfig):
    """The fields every transformer config has (`TransformerConfig`, `BertConfig`), named as in
    TransformerLens's `HookedTransformerConfig`; scan_layers, remat: `layers.config.StackConfig`.
    Construct by keyword.

    Attributes:
      n_layers: number of blocks.
      d_model: width of the residual stream.
      n_heads: attention heads per block.
      d_head: width of each head.
      d_mlp: hidden width of the MLP (ignored when `TransformerConfig.attn_only`).
      d_vocab: number of input tokens.
      n_ctx: maximum sequence length (size of the learned position table; Hugging Face
        `max_position_embeddings`).
      init_range: standard deviation of the normal initialiser of weight matrices.
      dtype: compute dtype (e.g. "bfloat16"); norms and softmax run in float32.
      param_dtype: parameter dtype.
    """

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 16
    d_mlp: int = 256
    d_vocab: int = 128
    n_ctx: int = 128
    init_range: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        check_positive(self, "n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_ctx")
        check_dtypes(self)


@dataclasses.dataclass(frozen=True)
class TransformerConfig(TransformerSizes):
    """Hyperparameters of a transformer. Names follow TransformerLens's `HookedTransformerConfig`
    where the concept is the same (n_layers, d_model, n_heads, d_head, d_mlp, d_vocab, n_ctx,
    init_range, dtype, param_dtype, scan_layers, remat: `TransformerSizes`).

    Attributes:
      d_vocab_out: number of output classes; None means `d_vocab`.
      n_key_value_heads: KV heads for grouped-query attention; None means `n_heads`.
      act_fn: "gelu" (exact), "gelu_new" (tanh, GPT-2), "relu" or "silu".
      gated_mlp: GLU-family MLP (`act(x W_gate) * x W_in`): SwiGLU with act_fn "silu", GeGLU
        with "gelu"/"gelu_new", ReGLU with "relu". Applies to each expert when `mlp_type="moe"`.
      mlp_type: "dense" (the MLP above) or "moe" (top-k mixture of experts,
        `jaxinterp.layers.moe.MoE`; each expert is an MLP of width d_mlp) or "kan" (two KAN
        layers d_model -> d_mlp -> d_model, `jaxinterp.layers.mlp.KANMLP`; act_fn, gated_mlp
        and use_bias do not apply).
      kan_basis: KAN edge-function family (or tuple of families) for mlp_type "kan":
        "bspline", "rbf", "chebyshev" or "fourier" (see `jaxinterp.layers.kan`).
      n_experts: experts per MoE layer (mlp_type "moe").
      experts_per_token: experts each token is routed to (k in top-k; 1 <= k <= n_experts).
      attn_only: no MLPs (the induction-head models of Elhage et al. 2021).
      normalization_type: "LN" (LayerNorm), "RMS" (RMSNorm) or None; pre-norm.
      positional_embedding_type: "standard" (learned, added to the embedding), "rotary" or "none".
      rotary_dim: features per head that rotary rotates; None means all of `d_head`.
      rotary_base: rotary frequency base.
      causal: causal (decoder) or bidirectional (encoder) attention.
      qk_norm: RMSNorm on queries and keys per head.
      attention_type: "softmax", "sigmoid" (sigmoid(S - log n), Ramapuram et al. 2024),
        "softplus" (LSSA/LSSAR, Gao & Spratling 2025), "clipped_softmax" (Bondarenko et al.
        2023), "linear" (Hedgehog, Zhang et al. 2024) or "relu" (relu(S) / N_i, Guo et al.
        2024). Exact formulas and sites:
        `jaxinterp.layers.attention`.
      gated_attention: per-head sigmoid gate on each head's output computed from the block
        input (Bondarenko et al. 2023); adds `blocks.{i}.attn.hook_gate` [batch, pos, head].
      gate_type: the gate's form, one of `layers.attention.GATE_TYPES`: "all_heads_linear"
        (one linear map d_model -> n_heads), "linear" / "mlp" (per head, on the head's own
        d_model / n_heads input features), "unconditional" (a learned constant per head).
      clip_zeta, clip_gamma: clipped softmax `clip((zeta - gamma) softmax + gamma, 0, 1)`;
        need gamma <= 0 and zeta >= 1.
      softplus_power: re-weighting power p of softplus attention (0: plain LSSA).
      linear_feature_dim: Hedgehog feature map width per half (phi has twice as many
        features); None means d_head.
      n_register_tokens: learned register / sink tokens prepended to every sequence (see the
        module docstring); their positions are dropped from the logits.
      use_bias: biases in attention and MLP projections (GPT-2: True, LLaMA: False).
      tie_embeddings: unembed with `W_E.T` (GPT-2) instead of a separate `W_U`.
      unembed_bias: a `b_U` bias on the logits.
      eps: epsilon of the norms.
      use_split_qkv_input: per-head q/k/v input sites, per-head outputs and `hook_mlp_in` (see
        the module docstring); the same outputs and parameters. Not with gated attention.
    """

    d_vocab_out: int | None = None
    n_key_value_heads: int | None = None
    act_fn: str = "gelu_new"
    gated_mlp: bool = False
    mlp_type: Literal["dense", "moe", "kan"] = "dense"
    kan_basis: str | tuple[str, ...] = "bspline"
    n_experts: int = 8
    experts_per_token: int = 2
    attn_only: bool = False
    normalization_type: Literal["LN", "RMS"] | None = "LN"
    positional_embedding_type: Literal["standard", "rotary", "none"] = "standard"
    rotary_dim: int | None = None
    rotary_base: float = 10000.0
    causal: bool = True
    qk_norm: bool = False
    attention_type: str = "softmax"
    gated_attention: bool = False
    gate_type: str = "all_heads_linear"
    clip_zeta: float = 1.0
    clip_gamma: float = -0.03
    softplus_power: float = 15.0
    linear_feature_dim: int | None = None
    n_register_tokens: int = 0
    use_bias: bool = True
    tie_embeddings: bool = False
    unembed_bias: bool = True
    eps: float = 1e-5
    use_split_qkv_input: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.use_split_qkv_input and self.gated_attention:
            raise ValueError("use_split_qkv_input=True does not apply to gated_attention=True: the "
                             "gate reads the whole attention input, not a per-head one")
        if not self.attn_only and self.d_mlp <= 0:
            raise ValueError(f"TransformerConfig.d_mlp must be positive, got {self.d_mlp}")
        kv = self.n_key_value_heads
        if kv is not None and (kv <= 0 or self.n_heads % kv):
            raise ValueError(f"n_key_value_heads={kv} must be positive and divide "
                             f"n_heads={self.n_heads}")
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn={self.act_fn!r}; choose from {sorted(ACTIVATIONS)}")
        if self.normalization_type not in NORMS:
            raise ValueError(f"normalization_type={self.normalization_type!r}; "
                             f"choose from {NORMS}")
        if self.positional_embedding_type not in ("standard", "rotary", "none"):
            raise ValueError(f"positional_embedding_type={self.positional_embedding_type!r}; "
                             "choose from 'standard', 'rotary', 'none'")
        rd = self.rotary_dim
        if rd is not None and (rd <= 0 or rd % 2 or rd > self.d_head):
            raise ValueError(f"rotary_dim={rd} must be even and in (0, d_head={self.d_head}]")
        check_attention_options(self.attention_type, self.clip_zeta, self.clip_gamma,
                                self.softplus_power, self.linear_feature_dim, self.gate_type)
        if self.mlp_type not in MLP_TYPES:
            raise ValueError(f"mlp_type={self.mlp_type!r}; choose from {MLP_TYPES}")
        if self.mlp_type == "moe" and not self.attn_only:
            check_moe_options(self.n_experts, self.experts_per_token)
        if self.mlp_type == "kan" and not self.attn_only:
            from jaxinterp.layers.kan import families

            families(self.kan_basis)  # raises ValueError for an unknown family
        r = self.n_register_tokens
        if not isinstance(r, int) or isinstance(r, bool) or r < 0:
            raise ValueError(f"n_register_tokens={r!r} must be an int >= 0")


class Block(nn.Module):
    """One pre-norm block. x: [batch, pos, d_model] -> ([batch, pos, d_model], None).

    `layer` is the block's index (a Python int when unrolled, a traced int under `nn.scan`);
    `jaxinterp.layers.stack` passes it and names the block's sites `blocks.{layer}.…`.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: jax.Array, layer: int | jax.Array,
                 kv_cache: dict[str, jax.Array] | None = None, offset: int | jax.Array = 0
                 ) -> tuple[jax.Array, dict[str, jax.Array] | None]:
        """With `kv_cache` (this layer's {"k", "v"}, see `init_cache`), x is the chunk at
        absolute positions offset.. and the second output is the updated layer cache."""
        c = self.config
        dtype, pd = dtypes(c)
        resid_pre = hooks.site(self, "hook_resid_pre", x, RESID_AXES)
        ln1 = make_norm(c.normalization_type, c.eps, dtype, pd, "ln1")
        attn = Attention(
            n_heads=c.n_heads, d_head=c.d_head, n_kv_heads=c.n_key_value_heads,
            causal=c.causal, use_bias=c.use_bias, qk_norm=c.qk_norm,
            rotary_dim=(c.rotary_dim or c.d_head)
            if c.positional_embedding_type == "rotary" else None,
            rotary_base=c.rotary_base, init_range=c.init_range, eps=c.eps,
            attention_type=c.attention_type, gated=c.gated_attention, gate_type=c.gate_type,
            clip_zeta=c.clip_zeta,
            clip_gamma=c.clip_gamma, softplus_power=c.softplus_power,
            linear_feature_dim=c.linear_feature_dim,
            dtype=dtype, param_dtype=pd, name="attn")
        if c.use_split_qkv_input:
            h = self._split_qkv_input(resid_pre, ln1)
        else:
            h = resid_pre if ln1 is None else ln1(resid_pre, RESID_AXES)
        new_cache = None
        if kv_cache is None:
            a = attn(h)
        else:
            a, new_cache = attn(h, kv_cache=kv_cache, offset=offset)
        attn_out = hooks.site(self, "hook_attn_out", a, RESID_AXES)
        if c.attn_only:
            return (hooks.site(self, "hook_resid_post", resid_pre + attn_out, RESID_AXES),
                    new_cache)
        resid_mid = hooks.site(self, "hook_resid_mid", resid_pre + attn_out, RESID_AXES)
        ln2 = make_norm(c.normalization_type, c.eps, dtype, pd, "ln2")
        mlp = _make_mlp(c, dtype, pd)
        mlp_in = (hooks.site(self, "hook_mlp_in", resid_mid, RESID_AXES)
                  if c.use_split_qkv_input else resid_mid)
        h = mlp_in if ln2 is None else ln2(mlp_in, RESID_AXES)
        mlp_out = hooks.site(self, "hook_mlp_out", mlp(h), RESID_AXES)
        return hooks.site(self, "hook_resid_post", resid_mid + mlp_out, RESID_AXES), new_cache

    def _split_qkv_input(self, resid_pre: jax.Array, ln1: nn.Module | None
                         ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """resid_pre [batch, pos, d_model] -> normalised (q, k, v) inputs, one copy per head
        [batch, pos, head, d_model], each through its site (`hook_q_input`, ...)."""
        c = self.config
        n_kv = c.n_key_value_heads or c.n_heads
        b, p, m = resid_pre.shape
        axes = ("batch", "pos", "head", "d_model")
        xs = [hooks.site(self, f"hook_{w}_input",
                         jnp.broadcast_to(resid_pre[:, :, None], (b, p, n, m)), axes)
              for w, n in (("q", c.n_heads), ("k", n_kv), ("v", n_kv))]
        if ln1 is None:
            return tuple(xs)
        normed = ln1(jnp.concatenate(xs, axis=2), axes)  # one norm call: one ln1 site
        return tuple(jnp.split(normed, [c.n_heads, c.n_heads + n_kv], axis=2))


def _make_mlp(c: TransformerConfig, dtype, pd) -> nn.Module:
    if c.mlp_type == "kan":
        return KANMLP(d_mlp=c.d_mlp, basis=c.kan_basis, dtype=dtype, param_dtype=pd, name="mlp")
    if c.mlp_type == "moe":
        return MoE(d_mlp=c.d_mlp, n_experts=c.n_experts, experts_per_token=c.experts_per_token,
                   act_fn=c.act_fn, gated=c.gated_mlp, use_bias=c.use_bias,
                   init_range=c.init_range, dtype=dtype, param_dtype=pd, name="mlp")
    return MLP(d_mlp=c.d_mlp, act_fn=c.act_fn, gated=c.gated_mlp, use_bias=c.use_bias,
               init_range=c.init_range, dtype=dtype, param_dtype=pd, name="mlp")


class Transformer(nn.Module):
    """tokens [batch, pos] int -> logits [batch, pos, d_vocab_out] (float32)."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, cache: dict[str, jax.Array] | None = None,
                 offset: int | jax.Array = 0
                 ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """With `cache` (see the module docstring): tokens are the chunk at absolute positions
        offset.., and the result is `(logits, new_cache)`."""
        c = self.config
        dtype, pd = dtypes(c)
        _check_tokens(tokens, c)
        init = nn.initializers.normal(c.init_range)
        chunk = contextlib.ExitStack()  # absolute positions for the sites of a cached chunk
        if cache is not None:
            chunk.enter_context(hooks.positions(offset, check_cache(c, tokens, cache, offset)))

        embed = Embed(c.d_vocab, c.d_model, c.init_range, pd, name="embed")
        x = hooks.site(self, "hook_embed", embed(tokens).astype(dtype), RESID_AXES)
        if c.positional_embedding_type == "standard":
            pos = PosEmbed(c.n_ctx, c.d_model, c.init_range, pd, name="pos_embed")
            if cache is None:
                pe = pos(tokens.shape[-1], tokens.shape[0])
            else:
                pe = jax.lax.dynamic_slice_in_dim(pos(c.n_ctx, tokens.shape[0]), offset,
                                                  tokens.shape[-1], axis=1)
            x = x + hooks.site(self, "hook_pos_embed", pe.astype(dtype), RESID_AXES)
        n_reg = c.n_register_tokens
        if n_reg:
            w_reg = param(self, "W_reg", init, (n_reg, c.d_model), ("register", "embed"), pd)
            x = _prepend_registers(x, w_reg, dtype)

        if cache is None:
            x = stack(Block, x, n_layers=c.n_layers, scan=c.scan_layers, remat=c.remat,
                      args=(c,), axes=RESID_AXES)
        else:
            x, cache = _cached_blocks(c, x, cache, offset)

        # The read-out functions below (final_norm, drop_registers, unembed) apply these same
        # modules and helpers to given parameters, so that analyses read out exactly like this.
        ln_final = make_norm(c.normalization_type, c.eps, dtype, pd, "ln_final")
        if ln_final is not None:
            x = ln_final(x, RESID_AXES)
        x = _drop_registers(x, n_reg, axis=1)  # register positions are not predictions
        d_out = c.d_vocab_out or c.d_vocab
        if c.tie_embeddings and d_out != c.d_vocab:
            raise ValueError("tie_embeddings needs d_vocab_out == d_vocab")
        w_u = None if c.tie_embeddings else param(self, "W_U", init, (c.d_model, d_out),
                                                    ("embed", "vocab"), pd)
        b_u = (param(self, "b_U", nn.initializers.zeros, (d_out,), ("vocab",), pd)
               if c.unembed_bias else None)
        logits = _unembed(c, x, embed, w_u, b_u)
        chunk.close()
        return logits if cache is None else (logits, cache)


def _check_tokens(tokens: jax.Array, c: TransformerConfig) -> None:
    check_ids(tokens, "tokens", "token id", c.d_vocab, "d_vocab", c.n_ctx)


# -- KV cache ------------------------------------------------------------------------------------

def check_cacheable(c: TransformerConfig, caller: str = "a KV cache") -> None:
    """A ValueError unless a model with config `c` can compute chunks against a KV cache."""
    if not c.causal:
        raise ValueError(f"{caller} needs a causal model; this one has causal=False "
                         "(bidirectional attention lets every position see later ones)")
    if c.n_register_tokens:
        raise ValueError(f"{caller} does not support register tokens (n_register_tokens="
                         f"{c.n_register_tokens})")


def cache_shapes(model: nn.Module, batch: int, length: int
                 ) -> dict[str, tuple[tuple[int, ...], jnp.dtype]]:
    """{"k": (shape, dtype), "v": (shape, dtype)} of `init_cache(model, batch, length)`."""
    c = check_transformer(model, "init_cache")
    check_cacheable(c)
    kvh = c.n_key_value_heads or c.n_heads
    d_k = 2 * (c.linear_feature_dim or c.d_head) if c.attention_type == "linear" else c.d_head
    dtype = jnp.dtype(c.dtype)
    return {"k": ((c.n_layers, batch, length, kvh, d_k), dtype),
            "v": ((c.n_layers, batch, length, kvh, c.d_head), dtype)}


def init_cache(model: nn.Module, batch: int, length: int) -> dict[str, jax.Array]:
    """An empty KV cache for sequences of `length` positions (<= n_ctx):
    {"k": [n_layers, batch, length, kv_head, d_k], "v": [n_layers, batch, length, kv_head,
    d_head]} of zeros in the compute dtype (d_k = d_head; 2 * d_feature for linear attention).

    Raises:
      ValueError: not a causal `Transformer`, register tokens, or a length outside [1, n_ctx].
    """
    c = check_transformer(model, "init_cache")
    for name, value in (("batch", batch), ("length", length)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ValueError(f"init_cache: {name}={value!r} must be a positive int")
    if length > c.n_ctx:
        raise ValueError(f"init_cache: length={length} exceeds n_ctx={c.n_ctx}")
    return {k: jnp.zeros(shape, dtype)
            for k, (shape, dtype) in cache_shapes(model, int(batch), int(length)).items()}


def check_cache(c: TransformerConfig, x: jax.Array, cache: Any, offset: Any) -> int:
    """Checks a cache and a chunk x [batch, pos, ...] at `offset` against config `c`; returns
    the cache length L (the whole sequence's)."""
    check_cacheable(c)
    if not isinstance(cache, Mapping) or set(cache) != {"k", "v"}:
        raise ValueError(f"cache must be {{'k': ..., 'v': ...}} as init_cache makes it, got "
                         f"{sorted(cache) if isinstance(cache, Mapping) else type(cache)}")
    k = cache["k"]
    if k.ndim != 5 or k.shape[0] != c.n_layers or k.shape[1] != x.shape[0]:
        raise ValueError(f"cache['k'] has shape {tuple(k.shape)}; expected [n_layers="
                         f"{c.n_layers}, batch={x.shape[0]}, L, kv_head, d_k] (init_cache)")
    length = k.shape[2]
    if not isinstance(offset, jax.core.Tracer):
        off = int(offset)
        if off < 0 or off + x.shape[1] > length:
            raise ValueError(f"a chunk of {x.shape[1]} positions at offset={off} does not fit "
                             f"the cache's {length} positions (need 0 <= offset, offset + pos "
                             f"<= {length})")
    return length


def _cached_blocks(c: TransformerConfig, x: jax.Array, cache: dict[str, jax.Array],
                   offset: int | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The layer stack on a cached chunk, in the parameter layout of `stack` (called from
    `Transformer.__call__`): unrolled `blocks_{i}` or one scanned `blocks`."""
    if not c.scan_layers:
        new = []
        for i in range(c.n_layers):
            blk = Block(c, name=f"blocks_{i}")
            with hooks.layer(blk, "blocks", i, c.n_layers):
                x, layer_cache = blk(x, i, jax.tree.map(lambda a, i=i: a[i], cache), offset)
            new.append(layer_cache)
        return x, jax.tree.map(lambda *a: jnp.stack(a), *new)

    def body(mdl, h, layer, layer_cache, off):
        with hooks.layer(mdl, "blocks", layer, c.n_layers):
            return mdl(h, layer, layer_cache, off)

    scanned = nn.scan(body, variable_axes={True: 0}, split_rngs={"params": True, "dropout": True},
                      in_axes=(0, 0, nn.broadcast), length=c.n_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
    return scanned(Block(c, name="blocks"), x, jnp.arange(c.n_layers, dtype=jnp.int32), cache,
                   offset)


class _LayerAt(nn.Module):
    """One block with parameters {"block": ...}, its sites named `blocks.{layer}.…`."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x, layer, kv_cache, offset):
        blk = Block(self.config, name="block")
        with hooks.layer(blk, "blocks", layer, self.config.n_layers):
            return blk(x, layer, kv_cache, offset)


def stacked_blocks(variables: Any) -> dict:
    """The blocks' unboxed params stacked over layers (leading axis n_layers), whatever layout
    `variables` has: what `forward_from` takes (convert once, outside a sweep's loop)."""
    if not isinstance(variables, Mapping) or "params" not in variables:
        unrolled_params(variables)  # raises the error
    return stack_layers(nn.meta.unbox(variables["params"]))["blocks"]


def forward_from(model: nn.Module, blocks: dict, resid: jax.Array, cache: dict[str, jax.Array],
                 offset: int | jax.Array, start_layer: int | jax.Array,
                 stop_layer: int | jax.Array | None = None) -> jax.Array:
    """Runs blocks start_layer .. stop_layer - 1 on a chunk of the residual stream against a
    KV cache: the chunked forward pass of suffix-only patching.

    Args:
      model: a causal `Transformer`.
      blocks: `stacked_blocks(variables)`.
      resid: [batch, pos, d_model], `blocks.{start_layer}.hook_resid_pre` at the absolute
        positions offset .. offset + pos - 1.
      cache: a full KV cache of the sequence (`init_cache` layout); positions < offset are
        read from it at every layer run (the chunk's own keys and values are computed).
      offset: the chunk's first absolute position (int or traced).
      start_layer, stop_layer: the layers to run (ints or traced; stop None: n_layers); the
        loop is a `lax.fori_loop`, so traced bounds compile once.

    Returns:
      [batch, pos, d_model]: `blocks.{stop_layer - 1}.hook_resid_post` at those positions.
      Under an active `jaxinterp.run`-style session (`hooks.active`), every block that runs
      passes through its sites (named `blocks.{layer}.…` with a traced layer; positions
      absolute), so interventions apply there.
    """
    c = check_transformer(model, "forward_from")
    length = check_cache(c, resid, cache, offset)
    stop = c.n_layers if stop_layer is None else stop_layer
    layer_mod = _LayerAt(c)

    def body(i, x):
        p = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), blocks)
        kv = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), cache)
        out, _ = layer_mod.apply({"params": {"block": p}}, x, i, kv, offset)
        return out.astype(x.dtype)

    with hooks.positions(offset, length):
        return jax.lax.fori_loop(start_layer, stop, body, resid)



def block_at(model: nn.Module, blocks: dict, resid: jax.Array, cache: dict[str, jax.Array],
             offset: int | jax.Array, layer: int, session: hooks.Session | None = None
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One block of `forward_from` with a static layer index, so that its sites can be
    captured (path patching's run (ii) reads receivers out of the suffix this way).

    Nothing a site sows inside `forward_from`'s `lax.fori_loop` leaves the loop; here the
    block is applied once, outside any loop, its sites named `blocks.{layer}.…` with a
    Python int, under `session` (interventions apply, its `capture` patterns are captured).

    Args:
      model, blocks, cache, offset: as `forward_from`.
      resid: [batch, pos, d_model], `blocks.{layer}.hook_resid_pre` at the absolute positions
        offset .. offset + pos - 1.
      layer: a Python int in [0, n_layers).
      session: a `jaxinterp.hooks.Session` (None: no sites, a plain cached block).

    Returns:
      (`blocks.{layer}.hook_resid_post` [batch, pos, d_model], `{site name: value}` of the
      sites `session` captures (values at the chunk's positions)).
    """
    c = check_transformer(model, "block_at")
    if (not isinstance(layer, int | np.integer) or isinstance(layer, bool)
            or not 0 <= layer < c.n_layers):
        raise ValueError(f"block_at: layer={layer!r} must be a Python int in 0..{c.n_layers - 1}")
    length = check_cache(c, resid, cache, offset)
    p = jax.tree.map(lambda a: a[layer], blocks)
    kv = jax.tree.map(lambda a: a[layer], cache)
    with hooks.active(session), hooks.positions(offset, length):
        (out, _), state = _LayerAt(c).apply({"params": {"block": p}}, resid, int(layer), kv,
                                            offset, mutable=[hooks.COLLECTION])
    return out.astype(resid.dtype), ({} if session is None else session.collect(state))


# -- the forward pass's own steps, shared with the read-out API ---------------------------------

def _prepend_registers(x: jax.Array, w_reg: jax.Array, dtype) -> jax.Array:
    """x [batch, pos, d_model], w_reg [R, d_model] -> [batch, R + pos, d_model]."""
    regs = jnp.broadcast_to(w_reg.astype(dtype), (x.shape[0], *w_reg.shape))
    return jnp.concatenate([regs, x], axis=1)


def _drop_registers(x: jax.Array, n_reg: int, axis: int) -> jax.Array:
    """Drops the first `n_reg` entries of `axis` (the register positions)."""
    if not n_reg:
        return x
    return jax.lax.slice_in_dim(x, n_reg, x.shape[axis], axis=axis)


def _unembed(c: TransformerConfig, x: jax.Array, embed: Embed, w_u: jax.Array | None,
             b_u: jax.Array | None) -> jax.Array:
    """x [..., d_model] -> float32 logits [..., d_vocab_out]; `embed` is a bound `Embed` (used
    when tied), `w_u` [d_model, d_vocab_out] (untied), `b_u` [d_vocab_out] or None."""
    dtype = jnp.dtype(c.dtype)
    if c.tie_embeddings:
        logits = embed.attend(x.astype(dtype))
    else:
        logits = jnp.einsum("...m,mv->...v", x, w_u.astype(dtype))  # contract d_model
    if b_u is not None:
        logits = logits + b_u
    return logits.astype(jnp.float32)


# -- read-out API ----------------------------------------------------------------------------
#
# Pure functions of (model, variables, array) that run single steps of `Transformer.__call__`
# with the modules and helpers the forward pass itself uses, so an analysis that reads the
# residual stream (lenses, direct logit attribution, head scores, weight processing) computes
# exactly what the model computes. `variables` may be boxed or not, unrolled or scanned. They
# register no sites, even when called inside `jaxinterp.run`.
#
#   embed(model, variables, tokens)       tokens [batch, pos] -> [batch, R + pos, d_model]
#   final_norm(model, variables, x)       [..., d_model] -> [..., d_model]
#   drop_registers(model, x, axis=-2)     [..., R + pos, ...] -> [..., pos, ...]
#   unembed(model, variables, x)          [..., d_model] -> float32 [..., d_vocab_out]
#   read_out(model, variables, resid)     [..., R + pos, d_model] -> float32 [..., pos, d_vocab_out]
#
# R is `n_register_tokens` (0 for most models). For the last block's `hook_resid_post`,
# `read_out` (= unembed(drop_registers(final_norm(resid)))) is the model's output, bit for bit.


def check_transformer(model: nn.Module, caller: str = "this analysis") -> TransformerConfig:
    """The config of `model` if it is a `Transformer` whose residual stream can be read out
    with this API; a ValueError naming `caller` otherwise."""
    if not isinstance(model, Transformer):
        raise ValueError(f"{caller} needs a jaxinterp.models.Transformer, got "
                         f"{type(model).__name__}")
    return model.config


def unrolled_params(variables: Any) -> dict:
    """Unboxed `params` in the unrolled layout (`blocks_{i}`), whatever layout was given."""
    if not isinstance(variables, Mapping) or "params" not in variables:
        keys = sorted(variables) if isinstance(variables, Mapping) else type(variables).__name__
        raise ValueError(f"variables must contain 'params' (as model.init returns); got {keys}")
    return unstack_layers(nn.meta.unbox(variables["params"]))


def _top_params(variables: Any) -> dict:
    """Unboxed top-level params (embeddings, registers, ln_final, unembedding): the same in the
    scanned and unrolled layouts, so no blocks are unstacked."""
    if not isinstance(variables, Mapping) or "params" not in variables:
        return unrolled_params(variables)  # raises the error
    return {k: nn.meta.unbox(v) for k, v in variables["params"].items()
            if not (k == "blocks" or k.startswith("blocks_"))}


def _check_width(c: TransformerConfig, x: jax.Array, what: str) -> None:
    if x.ndim < 1 or x.shape[-1] != c.d_model:
        raise ValueError(f"{what} has shape {tuple(x.shape)}; its last axis must be the model's "
                         f"d_model={c.d_model}")


def _embed_module(c: TransformerConfig, p: dict) -> Embed:
    return Embed(c.d_vocab, c.d_model, c.init_range, jnp.dtype(c.param_dtype)).bind(
        {"params": p["embed"]})


def embed(model: nn.Module, variables: Any, tokens: jax.Array) -> jax.Array:
    """The residual stream entering the first block (`blocks.0.hook_resid_pre`).

    Args:
      model, variables: a `Transformer` and its variables.
      tokens: [batch, pos] int.

    Returns:
      [batch, R + pos, d_model] in the compute dtype: token embedding plus learned positions
      (for `positional_embedding_type="standard"`), with the R register vectors `W_reg` first.
    """
    c = check_transformer(model, "embed")
    _check_tokens(tokens, c)
    p = _top_params(variables)
    dtype, pd = dtypes(c)
    with hooks.active(None):
        x = _embed_module(c, p)(tokens).astype(dtype)
        if c.positional_embedding_type == "standard":
            pos = PosEmbed(c.n_ctx, c.d_model, c.init_range, pd).bind({"params": p["pos_embed"]})
            x = x + pos(tokens.shape[-1], tokens.shape[0]).astype(dtype)
    if c.n_register_tokens:
        x = _prepend_registers(x, p["W_reg"], dtype)
    return x


def final_norm(model: nn.Module, variables: Any, x: jax.Array) -> jax.Array:
    """The model's final norm (`ln_final`: LayerNorm, RMSNorm with the config's `eps`, or the
    identity for `normalization_type=None`), position by position.

    x: [..., d_model] -> [..., d_model] (the compute dtype, as `ln_final.hook_normalized`).
    """
    c = check_transformer(model, "final_norm")
    _check_width(c, x, "the residual stream")
    norm = make_norm(c.normalization_type, c.eps, jnp.dtype(c.dtype), jnp.dtype(c.param_dtype),
                     "ln_final")
    if norm is None:
        return x
    axes = tuple(f"axis_{i}" for i in range(x.ndim))  # only sites read them, and none is active
    with hooks.active(None):
        return norm.bind({"params": _top_params(variables)["ln_final"]})(x, axes)


def drop_registers(model: nn.Module, x: jax.Array, axis: int | tuple[int, ...] = -2
                   ) -> jax.Array:
    """Drops the R = `n_register_tokens` register positions, as the forward pass does before
    the unembedding: [..., R + pos, ...] -> [..., pos, ...] along `axis` (every axis of a
    tuple, e.g. `axis=(-2, -1)` for an attention pattern [batch, head, query_pos, key_pos]).

    Block sites and `ln_final.hook_normalized` hold R + pos positions (registers first); the
    logits, `hook_embed` and `hook_pos_embed` hold pos. A no-op for a model without registers.
    """
    c = check_transformer(model, "drop_registers")
    n_reg = c.n_register_tokens
    for ax in (axis,) if isinstance(axis, int) else tuple(axis):
        if not -x.ndim <= ax < x.ndim:
            raise ValueError(f"axis {ax} is out of range for an array of shape {x.shape}")
        if x.shape[ax] <= n_reg and n_reg:
            raise ValueError(f"axis {ax} of shape {tuple(x.shape)} has {x.shape[ax]} positions; "
                             f"with n_register_tokens={n_reg} a residual stream has R + pos > "
                             f"{n_reg}")
        x = _drop_registers(x, n_reg, ax % x.ndim)
    return x


def unembedding(model: nn.Module, variables: Any) -> tuple[jax.Array, jax.Array | None]:
    """(W_U [d_model, d_vocab_out], b_U [d_vocab_out] or None) as stored (param dtype): `W_E.T`
    for tied embeddings, `b_U` only with `unembed_bias`. For weight-space analyses; to compute
    logits use `unembed`, which casts exactly as the forward pass does."""
    c = check_transformer(model, "unembedding")
    p = _top_params(variables)
    w_u = p["embed"]["W_E"].T if c.tie_embeddings else p["W_U"]
    return w_u, (p["b_U"] if c.unembed_bias else None)


def unembed(model: nn.Module, variables: Any, x: jax.Array) -> jax.Array:
    """The model's unembedding (tied `W_E` or untied `W_U`, plus `b_U` with `unembed_bias`) of
    vectors that are already normalised (see `final_norm`); no positions are dropped.

    x: [..., d_model] -> float32 logits [..., d_vocab_out].
    """
    c = check_transformer(model, "unembed")
    _check_width(c, x, "the residual stream")
    p = _top_params(variables)
    w_u = None if c.tie_embeddings else p["W_U"]
    b_u = p["b_U"] if c.unembed_bias else None
    return _unembed(c, x, _embed_module(c, p), w_u, b_u)


def read_out(model: nn.Module, variables: Any, resid: jax.Array) -> jax.Array:
    """What the model's head makes of a residual stream: final norm, register positions dropped,
    unembedding. For the last block's `hook_resid_post` these are the model's logits.

    resid: [..., R + pos, d_model] (any block site of the residual stream; leading axes such as
    [layer, batch] are kept) -> float32 logits [..., pos, d_vocab_out].
    """
    c = check_transformer(model, "read_out")
    _check_width(c, resid, "the residual stream")
    if resid.ndim < 2:
        raise ValueError(f"read_out needs a residual stream [..., pos, d_model], got shape "
                         f"{tuple(resid.shape)}; use unembed(final_norm(x)) for single vectors")
    x = drop_registers(model, final_norm(model, variables, resid), axis=-2)
    return unembed(model, variables, x)
