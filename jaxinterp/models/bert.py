"""BERT-family encoder (Devlin et al. 2019, arXiv:1810.04805) with TransformerLens sites.

Inputs: tokens [batch, pos] int, optional token_type_ids [batch, pos] int (default all 0),
optional attention_mask [batch, pos] (1 / True for real tokens, 0 / False for padding, as Hugging
Face's `BertModel(attention_mask=...)`; None: every position is real).
Output: final hidden states [batch, pos, d_model], or, with `mlm_head=True`, masked-LM logits
[batch, pos, d_vocab] (float32). Attention is bidirectional; with an attention_mask, padded keys
are hidden from every query in every layer (their scores are float32's most negative value, which
is what Hugging Face's additive `finfo(float32).min` mask gives, and what `hook_attn_scores`
shows), so a real position's output does not depend on the padding: neither on the token ids at
padded positions nor on how much padding follows. Outputs AT padded positions are computed (they
attend to the real tokens) but mean nothing; mask them out of any loss or statistic.

Unlike the pre-norm `Transformer`, BERT blocks are post-norm:
    resid_mid  = resid_pre + Attn(resid_pre);          x1  = ln1(resid_mid)
    resid_post = x1 + MLP(x1);                         out = ln2(resid_post)
and the embedding is LayerNorm(word + position + token type).

Sites (names as TransformerLens's `HookedEncoder`):
  hook_embed, hook_pos_embed, hook_token_type_embed, embed_ln.hook_normalized  [batch, pos, d_model]
  blocks.{i}.hook_resid_pre, hook_attn_out, hook_resid_mid, ln1.hook_normalized, hook_mlp_out,
    hook_resid_post, ln2.hook_normalized, hook_normalized_resid_post          [batch, pos, d_model]
  blocks.{i}.attn.hook_q|hook_k|hook_v|hook_z                       [batch, pos, head, d_head]
  blocks.{i}.attn.hook_attn_scores|hook_pattern           [batch, head, query_pos, key_pos]
  blocks.{i}.mlp.hook_pre|hook_post                                 [batch, pos, d_mlp]
  mlm_head.hook_pre|hook_post, mlm_head.ln.hook_normalized           (with `mlm_head`)
`blocks.{i}.hook_normalized_resid_post` is block i's output: Hugging Face's
`hidden_states[i + 1]` (and `hidden_states[0]` is `blocks.0.hook_resid_pre`).

Parameter names: `embed.W_E`, `pos_embed.W_pos`, `token_type_embed.W_E`, `embed_ln.{w,b}`,
`blocks_{i}.attn.W_Q...`, `blocks_{i}.mlp.W_in...`, `blocks_{i}.ln1|ln2.{w,b}`,
`mlm_head.W`, `mlm_head.b`, `mlm_head.ln.{w,b}`, `b_U` (the decoder is tied to `W_E`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.hooks import site
from jaxinterp.layers.attention import Attention
from jaxinterp.layers.axes import RESID_AXES
from jaxinterp.layers.common import ACTIVATIONS, activation, param
from jaxinterp.layers.config import check_positive, dtypes
from jaxinterp.layers.embed import Embed, PosEmbed, check_ids
from jaxinterp.layers.mlp import MLP
from jaxinterp.layers.norms import LayerNorm
from jaxinterp.layers.stack import stack
from jaxinterp.models.preset import Preset
from jaxinterp.models.transformer import TransformerSizes


@dataclasses.dataclass(frozen=True)
class BertConfig(TransformerSizes):
    """Hyperparameters of a BERT-family encoder (TransformerLens names where they exist;
    n_layers, d_model, n_heads, d_head, d_mlp, d_vocab, n_ctx, init_range, dtype, param_dtype,
    scan_layers, remat: `jaxinterp.models.transformer.TransformerSizes`).

    Attributes:
      n_token_types: size of the token-type (segment) table (`type_vocab_size`).
      act_fn: MLP activation, "gelu" (exact, BERT) or any of `layers.common.ACTIVATIONS`.
      eps: LayerNorm epsilon (BERT: 1e-12).
      mlm_head: add the masked-LM head (dense + act + LayerNorm + tied decoder + bias) and
        return its logits instead of the final hidden states.
    """

    n_token_types: int = 2
    act_fn: str = "gelu"
    eps: float = 1e-12
    mlm_head: bool = True

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "d_mlp", "n_token_types")
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn={self.act_fn!r}; choose from {sorted(ACTIVATIONS)}")


class BertBlock(nn.Module):
    """One post-norm encoder block. x: [batch, pos, d_model] -> ([batch, pos, d_model], None).
    `layer` is the block index (`jaxinterp.layers.stack` names the sites `blocks.{layer}.…`)."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array, layer: int | jax.Array,
                 key_mask: jax.Array | None = None) -> tuple[jax.Array, None]:
        """key_mask: [batch, pos] bool, True for real tokens (None: all real)."""
        c = self.config
        dtype, pd = dtypes(c)
        resid_pre = site(self, "hook_resid_pre", x, RESID_AXES)
        attn = Attention(n_heads=c.n_heads, d_head=c.d_head, causal=False, use_bias=True,
                         init_range=c.init_range, dtype=dtype, param_dtype=pd, name="attn")
        attn_out = site(self, "hook_attn_out", attn(resid_pre, key_mask), RESID_AXES)
        resid_mid = site(self, "hook_resid_mid", resid_pre + attn_out, RESID_AXES)
        h = LayerNorm(c.eps, dtype, pd, name="ln1")(resid_mid, RESID_AXES)
        mlp = MLP(d_mlp=c.d_mlp, act_fn=c.act_fn, use_bias=True, init_range=c.init_range,
                  dtype=dtype, param_dtype=pd, name="mlp")
        mlp_out = site(self, "hook_mlp_out", mlp(h), RESID_AXES)
        resid_post = site(self, "hook_resid_post", h + mlp_out, RESID_AXES)
        out = LayerNorm(c.eps, dtype, pd, name="ln2")(resid_post, RESID_AXES)
        return site(self, "hook_normalized_resid_post", out, RESID_AXES), None


class MLMHead(nn.Module):
    """BERT's prediction-head transform: x [batch, pos, d_model] -> LN(act(x W + b))."""

    config: BertConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        dtype, pd = dtypes(c)
        w = param(self, "W", nn.initializers.normal(c.init_range), (c.d_model, c.d_model),
                  ("embed", "mlp"), pd)
        b = param(self, "b", nn.initializers.zeros, (c.d_model,), ("embed",), pd)
        pre = jnp.einsum("bpm,mn->bpn", x, w.astype(dtype)) + b  # contract d_model
        pre = site(self, "hook_pre", pre.astype(dtype), RESID_AXES)
        post = site(self, "hook_post", activation(c.act_fn)(pre), RESID_AXES)
        return LayerNorm(c.eps, dtype, pd, name="ln")(post, RESID_AXES)


class Bert(nn.Module):
    """tokens [batch, pos] int (+ token_type_ids, attention_mask) -> hidden [batch, pos, d_model]
    or logits [batch, pos, d_vocab]; see the module docstring."""

    config: BertConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, token_type_ids: jax.Array | None = None,
                 attention_mask: jax.Array | None = None) -> jax.Array:
        c = self.config
        dtype, pd = dtypes(c)
        check_ids(tokens, "tokens", "token id", c.d_vocab, "d_vocab", c.n_ctx)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(tokens)
        elif token_type_ids.shape != tokens.shape:
            raise ValueError(f"token_type_ids shape {token_type_ids.shape} != tokens shape "
                             f"{tokens.shape}")
        check_ids(token_type_ids, "token_type_ids", "token type id", c.n_token_types,
                  "n_token_types", c.n_ctx)
        key_mask = None if attention_mask is None else _check_mask(attention_mask, tokens.shape)
        batch, n_pos = tokens.shape

        embed = Embed(c.d_vocab, c.d_model, c.init_range, pd, name="embed")
        x = site(self, "hook_embed", embed(tokens).astype(dtype), RESID_AXES)
        pos = PosEmbed(c.n_ctx, c.d_model, c.init_range, pd, name="pos_embed")(n_pos, batch)
        x = x + site(self, "hook_pos_embed", pos.astype(dtype), RESID_AXES)
        types = Embed(c.n_token_types, c.d_model, c.init_range, pd, name="token_type_embed")
        x = x + site(self, "hook_token_type_embed", types(token_type_ids).astype(dtype),
                           RESID_AXES)
        x = LayerNorm(c.eps, dtype, pd, name="embed_ln")(x, RESID_AXES)

        # every layer sees the same mask
        x = stack(BertBlock, x, key_mask, n_layers=c.n_layers, scan=c.scan_layers,
                  remat=c.remat, args=(c,), axes=RESID_AXES)
        if not c.mlm_head:
            return x
        h = MLMHead(c, name="mlm_head")(x)
        logits = embed.attend(h)  # tied decoder: contract d_model with W_E
        logits = logits + param(self, "b_U", nn.initializers.zeros, (c.d_vocab,), ("vocab",), pd)
        return logits.astype(jnp.float32)


def _check_mask(mask: jax.Array, tokens_shape: tuple[int, ...]) -> jax.Array:
    """attention_mask [batch, pos] (bool, or 0/1 numbers) -> bool, True for real tokens."""
    mask = jnp.asarray(mask)
    if mask.shape != tokens_shape:
        raise ValueError(f"attention_mask shape {mask.shape} != tokens shape {tokens_shape} "
                         "(one entry per token: 1 for real tokens, 0 for padding)")
    if not (mask.dtype == jnp.bool_ or jnp.issubdtype(mask.dtype, jnp.number)):
        raise ValueError(f"attention_mask must be bool or 0/1 numbers, got dtype {mask.dtype}")
    if not isinstance(mask, jax.core.Tracer):
        m = np.asarray(mask)
        if not np.isin(m, (0, 1)).all():
            bad = m[~np.isin(m, (0, 1))]
            raise ValueError(f"attention_mask must be 1 (real token) or 0 (padding), got "
                             f"{bad.flat[0].item()!r}")
    return mask != 0


PRESETS: dict[str, Preset] = {
    "bert_base": Preset(
        Bert, BertConfig,
        dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=30522,
             n_ctx=512, n_token_types=2, act_fn="gelu", eps=1e-12, mlm_head=True),
        "BERT base (Hugging Face `bert-base-uncased` shape) with its masked-LM head."),
}
