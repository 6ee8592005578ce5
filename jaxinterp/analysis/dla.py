"""Direct logit attribution: how much each component's output, read straight through the final
norm and unembedding, adds to a logit (or a logit difference).

The residual stream before the final norm is a sum of component outputs (Elhage et al. 2021,
"A Mathematical Framework for Transformer Circuits"):

    r = embed + pos_embed + sum_l [ sum_h z_lh W_O[l, h] + b_O[l]
                                    + sum_n post_ln W_out[l, n] + b_out[l] ]

The final LayerNorm is not linear, so, as TransformerLens's `apply_ln_to_stack` does, we freeze
its scale at the clean run's value `s = sqrt(var(r) + eps)` (RMSNorm: `sqrt(mean(r^2) + eps)`).
With the scale frozen, the norm is affine and each component c contributes

    DLA(c) = (c - mean(c)) / s . (w_ln * u)        (RMSNorm: no centring; no norm: s = 1)

to the metric `logit[target] - logit[baseline]`, where `u = W_U[:, target] - W_U[:, baseline]`.
The norm's bias and the unembedding bias add a constant `final_bias = b_ln . u + b_U . (e_t -
e_b)`. These terms sum to the model's metric exactly (up to float error), which the tests check.

Components: token embedding, learned positions, every attention head (from `hook_z` and `W_O`),
each layer's attention output bias, every MLP neuron (from `hook_post` and `W_out`), each
layer's MLP output bias, and the final biases.

Register tokens (`n_register_tokens` = R): positions are token positions, as in the logits.
The register vectors sit at their own positions, so they are no term of a token's residual
stream (they reach it only through attention, i.e. through the heads); the block sites' R
register positions are dropped (`jaxinterp.models.transformer.drop_registers`) before reading.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.models.transformer import (
    check_transformer,
    drop_registers,
    unembedding,
    unrolled_params,
)
from jaxinterp.run import run


@flax.struct.dataclass
class LogitAttribution:
    """Per-component contributions to a logit (difference). `...` is [batch] when one position
    was attributed, [batch, pos] when all were.

    Attributes:
      embed: [...] token embeddings.
      pos_embed: [...] learned positions (zeros for rotary / no positions).
      heads: [layer, ..., head] each attention head.
      attn_bias: [layer, ...] each layer's `b_O` (zeros without biases).
      neurons: [layer, ..., d_mlp] each MLP neuron; None for attention-only models.
      mlp_bias: [layer, ...] each layer's `b_out`; None for attention-only models.
      final_bias: [...] final norm bias and unembedding bias.
      logit: [...] the model's actual logit (difference), for comparison with `total()`.
    """

    embed: jax.Array
    pos_embed: jax.Array
    heads: jax.Array
    attn_bias: jax.Array
    neurons: jax.Array | None
    mlp_bias: jax.Array | None
    final_bias: jax.Array

    logit: jax.Array

    def total(self) -> jax.Array:
        """Sum of every contribution [...]; equals `logit` up to float error."""
        out = self.embed + self.pos_embed + self.heads.sum((0, -1)) + self.attn_bias.sum(0)
        out = out + self.final_bias
        if self.neurons is not None:
            out = out + self.neurons.sum((0, -1)) + self.mlp_bias.sum(0)
        return out


def direct_logit_attribution(
    model: nn.Module,
    variables: Any,
    tokens: jax.Array,
    target: int | jax.Array,
    baseline: int | jax.Array | None = None,
    *,
    pos: int | None = -1,
) -> LogitAttribution:
    """Decomposes `logit[target] - logit[baseline]` (just `logit[target]` if no baseline).

    Args:
      model, variables: a `jaxinterp.models.Transformer` (any layout) and its variables.
      tokens: [batch, pos] int.
      target: token id(s) whose logit is attributed: an int, or [batch] when `pos` is an int,
        or [batch, pos] when `pos` is None.
      baseline: token id(s) subtracted (a logit difference), same shapes as `target`.
      pos: the token position attributed (default the last); None attributes every position.
        Positions count tokens only, as the logits do (register positions are not counted).

    Returns:
      A `LogitAttribution` (a pytree: works under `jax.jit`).
    """
    c = check_transformer(model, "direct_logit_attribution")
    if c.mlp_type != "dense" and not c.attn_only:
        raise ValueError(f"direct_logit_attribution decomposes dense MLPs into neurons; this model "
                         f"has mlp_type={c.mlp_type!r}")
    b, n = tokens.shape
    if pos is not None and not -n <= pos < n:
        raise ValueError(f"pos={pos} is outside a sequence of {n} positions")
    lead = (b,) if pos is not None else (b, n)
    d_out = c.d_vocab_out or c.d_vocab

    def ids(x, what):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"{what} must be integer token ids, got dtype {x.dtype}")
        if x.ndim and tuple(x.shape) != lead:
            raise ValueError(f"{what} has shape {tuple(x.shape)}; with pos={pos} it must be an "
                             f"int or of shape {lead}")
        return jnp.broadcast_to(x, lead)

    target = ids(target, "target")
    baseline = None if baseline is None else ids(baseline, "baseline")

    names = ["hook_embed", f"blocks.{c.n_layers - 1}.hook_resid_post", "blocks.*.attn.hook_z"]
    if c.positional_embedding_type == "standard":
        names.append("hook_pos_embed")
    if not c.attn_only:
        names.append("blocks.*.mlp.hook_post")
    logits, cache = run(model, variables, tokens, capture=names)

    def at(x):  # select the attributed token position: [batch, pos, ...] -> [...]
        return x if pos is None else x[:, pos]

    def at_block(x):  # a block site [batch, R + pos, ...] -> [...]
        return at(drop_registers(model, x, axis=1))

    p = unrolled_params(variables)
    w_u, b_u = unembedding(model, variables)  # [d_model, vocab], [vocab] or None
    w_u = w_u.astype(jnp.float32)
    u = w_u.T[target]  # [..., d_model]
    metric = jnp.take_along_axis(at(logits), target[..., None], -1)[..., 0]
    b_u = jnp.zeros((d_out,), jnp.float32) if b_u is None else b_u.astype(jnp.float32)
    const = b_u[target]
    if baseline is not None:
        u = u - w_u.T[baseline]
        metric = metric - jnp.take_along_axis(at(logits), baseline[..., None], -1)[..., 0]
        const = const - b_u[baseline]

    resid = at_block(cache[f"blocks.{c.n_layers - 1}.hook_resid_post"]).astype(jnp.float32)
    if c.normalization_type == "LN":
        ln = p["ln_final"]
        centred = resid - resid.mean(-1, keepdims=True)
        scale = jnp.sqrt((centred * centred).mean(-1) + c.eps)  # [...]
        const = const + u @ ln["b"].astype(jnp.float32)
        u = u * ln["w"].astype(jnp.float32)
        u = u - u.mean(-1, keepdims=True)  # (x - mean x) . u == x . (u - mean u)
    elif c.normalization_type == "RMS":
        scale = jnp.sqrt((resid * resid).mean(-1) + c.eps)
        u = u * p["ln_final"]["w"].astype(jnp.float32)
    else:
        scale = jnp.ones(resid.shape[:-1], jnp.float32)
    u = u / scale[..., None]  # [..., d_model]: the frozen-scale readout direction

    def read(x):  # [..., d_model] -> [...]
        return jnp.einsum("...m,...m->...", x.astype(jnp.float32), u)  # contract d_model

    zeros = jnp.zeros(lead, jnp.float32)
    embed = read(at(cache["hook_embed"]))
    pos_embed = read(at(cache["hook_pos_embed"])) if "hook_pos_embed" in cache else zeros
    heads, attn_bias, neurons, mlp_bias = [], [], [], []
    for i in range(c.n_layers):
        blk = p[f"blocks_{i}"]
        w_o = blk["attn"]["W_O"].astype(jnp.float32)  # [head, d_head, d_model]
        head_dir = jnp.einsum("hdm,...m->...hd", w_o, u)  # contract d_model
        z = at_block(cache[f"blocks.{i}.attn.hook_z"]).astype(jnp.float32)  # [..., head, d_head]
        heads.append(jnp.einsum("...hd,...hd->...h", z, head_dir))  # contract d_head
        attn_bias.append(read(jnp.broadcast_to(blk["attn"]["b_O"], u.shape))
                         if c.use_bias else zeros)
        if not c.attn_only:
            w_out = blk["mlp"]["W_out"].astype(jnp.float32)  # [d_mlp, d_model]
            post = at_block(cache[f"blocks.{i}.mlp.hook_post"]).astype(jnp.float32)  # [..., d_mlp]
            neurons.append(post * jnp.einsum("nm,...m->...n", w_out, u))  # contract d_model
            mlp_bias.append(read(jnp.broadcast_to(blk["mlp"]["b_out"], u.shape))
                            if c.use_bias else zeros)
    return LogitAttribution(
        embed=embed, pos_embed=pos_embed, heads=jnp.stack(heads), attn_bias=jnp.stack(attn_bias),
        neurons=None if c.attn_only else jnp.stack(neurons),
        mlp_bias=None if c.attn_only else jnp.stack(mlp_bias),
        final_bias=const, logit=metric)


__all__ = ["LogitAttribution", "direct_logit_attribution"]
