"""A transformer over (exemplar, label) items: in-context classification (the `bursty_icl` data).

`IclTransformer` is the model of Reddy 2023 ("The mechanistic basis of data dependence and
abrupt learning in an in-context classification task") in this family's own parts. The input
is the interleaved sequence

    x_1, l_1, x_2, l_2, ..., x_n, l_n, x_q          (2n + 1 tokens)

of float exemplars `x_i` [d] (context and query) and int labels `l_i`. Exemplar tokens are
embedded by a linear map `W_X` [d, d_model] (`exemplar_embed`), label tokens by the token
embedding `W_E` [n_labels, d_model] (`embed`, as in `Transformer`), learned positions are added,
and the blocks of `jaxinterp.models.transformer` (the same `Block`: the same sites and parameter
names) and the final norm follow. The query's (last) position is read out: optionally a
residual ReLU MLP of width `d_readout_mlp` (Reddy's classifier after the attention layers),
then `W_U` [d_model, n_labels] + `b_U`: logits over the labels.

Sites: `hook_embed` (the interleaved token embeddings), `hook_pos_embed` [batch, 2n + 1,
d_model], every block site of `Transformer` (`blocks.{i}.attn.hook_pattern` [batch, head,
query_pos, key_pos], `blocks.{i}.attn.hook_z`, ...), `ln_final.hook_normalized`, and with a
readout MLP `readout.hook_pre|hook_post` [batch, d_readout_mlp]. Exemplar `i` (0-based) is at
position `2 i`, its label at `2 i + 1`, the query at `2 n`.

Not a registry preset: it takes three inputs, `exemplars [batch, n, d]`, `labels [batch, n]`
and `query [batch, d]` (the `bursty_icl` features of the same names).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp import hooks
from jaxinterp.layers.axes import RESID_AXES
from jaxinterp.layers.common import param
from jaxinterp.layers.config import dtypes
from jaxinterp.layers.embed import Embed, PosEmbed, check_ids
from jaxinterp.layers.mlp import MLP
from jaxinterp.layers.norms import make_norm
from jaxinterp.layers.stack import stack
from jaxinterp.models.transformer import Block, TransformerConfig


def item_positions(n_ctx: int) -> dict[str, jax.Array]:
    """Positions in the interleaved sequence of `n_ctx` items: `{"exemplar": [n_ctx] (2 i),
    "label": [n_ctx] (2 i + 1), "query": 2 n_ctx}`."""
    i = jnp.arange(n_ctx)
    return {"exemplar": 2 * i, "label": 2 * i + 1, "query": jnp.asarray(2 * n_ctx)}


def interleave(exemplar_tokens: jax.Array, label_tokens: jax.Array,
               query_token: jax.Array) -> jax.Array:
    """[batch, n, m], [batch, n, m], [batch, m] -> [batch, 2n + 1, m]: x_1, l_1, ..., x_n, l_n,
    x_q."""
    b, n, m = exemplar_tokens.shape
    pairs = jnp.stack([exemplar_tokens, label_tokens], axis=2).reshape(b, 2 * n, m)
    return jnp.concatenate([pairs, query_token[:, None]], axis=1)


class IclTransformer(nn.Module):
    """(exemplars [batch, n, d], labels [batch, n] int, query [batch, d]) -> logits
    [batch, n_labels] (float32) for the query's label.

    Attributes:
      config: the transformer's config: `d_vocab` is the number of labels (the label
        embedding's and the output's size), `n_ctx` >= 2n + 1 the position table's size;
        every other field as for `Transformer` (attn_only, normalization_type, n_heads, ...).
        Registers, rotary, tied embeddings and `d_vocab_out` are not used here.
      d_input: exemplar dimension d.
      d_readout_mlp: hidden width of the residual ReLU MLP applied to the query's final
        residual before the unembedding (0: none).
    """

    config: TransformerConfig
    d_input: int
    d_readout_mlp: int = 0

    @nn.compact
    def __call__(self, exemplars: jax.Array, labels: jax.Array, query: jax.Array) -> jax.Array:
        c = self.config
        dtype, pd = dtypes(c)
        self._check(exemplars, labels, query)
        init = nn.initializers.normal(c.init_range)

        w_x = param(self, "W_X", init, (self.d_input, c.d_model), (None, "embed"), pd)

        def embed_x(x: jax.Array) -> jax.Array:
            return jnp.einsum("...d,dm->...m", x.astype(dtype), w_x.astype(dtype))  # contract d

        label_tokens = Embed(c.d_vocab, c.d_model, c.init_range, pd, name="embed")(labels)
        tokens = interleave(embed_x(exemplars), label_tokens.astype(dtype), embed_x(query))
        x = hooks.site(self, "hook_embed", tokens, RESID_AXES)
        if c.positional_embedding_type == "standard":
            pos = PosEmbed(c.n_ctx, c.d_model, c.init_range, pd, name="pos_embed")
            x = x + hooks.site(self, "hook_pos_embed",
                               pos(x.shape[1], x.shape[0]).astype(dtype), RESID_AXES)

        x = stack(Block, x, n_layers=c.n_layers, scan=c.scan_layers, remat=c.remat, args=(c,),
                  axes=RESID_AXES)
        ln_final = make_norm(c.normalization_type, c.eps, dtype, pd, "ln_final")
        if ln_final is not None:
            x = ln_final(x, RESID_AXES)
        h = x[:, -1]  # the query's position: [batch, d_model]
        if self.d_readout_mlp:
            h = h + MLP(self.d_readout_mlp, act_fn="relu", init_range=c.init_range,
                        site_axes=("batch", "d_mlp"), dtype=dtype, param_dtype=pd,
                        name="readout")(h)
        w_u = param(self, "W_U", init, (c.d_model, c.d_vocab), ("embed", "vocab"), pd)
        logits = jnp.einsum("bm,mv->bv", h, w_u.astype(dtype))  # contract d_model
        if c.unembed_bias:
            logits = logits + param(self, "b_U", nn.initializers.zeros, (c.d_vocab,),
                                    ("vocab",), pd)
        return logits.astype(jnp.float32)

    def _check(self, exemplars: jax.Array, labels: jax.Array, query: jax.Array) -> None:
        c = self.config
        if c.n_register_tokens or c.positional_embedding_type == "rotary":
            raise ValueError("IclTransformer: n_register_tokens and rotary positions are not "
                             "supported (use positional_embedding_type 'standard' or 'none')")
        if (exemplars.ndim != 3 or exemplars.shape[-1] != self.d_input
                or query.shape != (exemplars.shape[0], self.d_input)):
            raise ValueError(f"IclTransformer: want exemplars [batch, n, d={self.d_input}] and "
                             f"query [batch, d], got {exemplars.shape} and {query.shape}")
        if labels.shape != exemplars.shape[:2]:
            raise ValueError(f"IclTransformer: labels {labels.shape} must be [batch, n] = "
                             f"{exemplars.shape[:2]}")
        check_ids(labels, "labels", "label", c.d_vocab, "d_vocab", c.n_ctx)
        if 2 * labels.shape[1] + 1 > c.n_ctx:
            raise ValueError(f"IclTransformer: {labels.shape[1]} items make 2n + 1 = "
                             f"{2 * labels.shape[1] + 1} tokens > n_ctx={c.n_ctx}")
