"""Attention-head detectors: how much each head attends where a known mechanism would.

Two kinds of score live here.

*Detection-pattern scores* follow TransformerLens's `head_detector` exactly: a detection pattern
`D [query_pos, key_pos]` marks where a head with the mechanism would attend, and the "mul" score
of a head is `sum(A * D) / sum(A)` over one sequence's pattern `A` (optionally with the BOS
column and the diagonal zeroed first), averaged over sequences. `detection_score` implements
it; `previous_token_pattern`, `duplicate_token_pattern` and `induction_pattern` build
TransformerLens's three detection patterns. Because `sum(A)` counts every query row, rows where
the mechanism has no target lower the score: a perfect previous-token head scores
`(pos - 1) / pos`.

*Mechanism scores* average the attention mass only over the query positions where the
mechanism is defined: `previous_token_score` and `induction_score` (for sequences with a known
repeat, as in the flagship experiment), `attention_mass` (from one query onto chosen keys),
`attention_sink_score`, `retrieval_score` (Wu et al. 2024), `successor_score` (Gould et al.
2023, from weights; `ov_logits`: the logits it reads) and `classify_heads` (active or dormant,
Guo et al. 2024). A perfect head scores 1.

Patterns are `[batch, head, query_pos, key_pos]` (one layer, as `ji.run` captures
`blocks.{i}.attn.hook_pattern`) and scores are `[head]`; stack layers for `[layer, head]`.

Register tokens (`n_register_tokens` = R): a captured pattern covers R + pos positions
(registers first) while `tokens` cover pos. Score the token positions with
`drop_registers(model, pattern, axis=(-2, -1))` (and `drop_registers(model, z, axis=1)` for
`classify_heads`), from `jaxinterp.models.transformer`: the attention a query pays to the
registers is then left out of every score, and key index k is token k again. The registers as
sinks: `attention_sink_score(pattern, position=r)` on the full pattern. Scores computed from
weights (`successor_score`) do not involve positions, so registers do not change them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp


def _check_pattern(pattern: jax.Array) -> None:
    if pattern.ndim != 4 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError("pattern must be [batch, head, query_pos, key_pos] with "
                         f"query_pos == key_pos, got shape {pattern.shape}")


def _check_tokens(tokens: jax.Array, pattern: jax.Array) -> None:
    if tokens.ndim != 2 or tokens.shape != (pattern.shape[0], pattern.shape[-1]):
        raise ValueError(f"tokens must be [batch, pos] = {(pattern.shape[0], pattern.shape[-1])} "
                         f"to match the pattern, got shape {tokens.shape}")


# -- TransformerLens detection patterns and "mul" scoring --------------------------------------


def previous_token_pattern(n_pos: int) -> jax.Array:
    """[query_pos, key_pos] with ones at (q, q - 1): TransformerLens's previous-token pattern."""
    return jnp.eye(n_pos, k=-1)


def duplicate_token_pattern(tokens: jax.Array) -> jax.Array:
    """[batch, query_pos, key_pos]: ones where key k < q holds the same token as query q."""
    same = tokens[:, :, None] == tokens[:, None, :]  # [batch, q, k]
    return jnp.tril(same, k=-1).astype(jnp.float32)


def induction_pattern(tokens: jax.Array) -> jax.Array:
    """[batch, query_pos, key_pos]: ones at key k + 1 for every earlier duplicate k of query q's
    token (the token after the previous occurrence), TransformerLens's induction pattern."""
    dup = duplicate_token_pattern(tokens)
    shifted = jnp.pad(dup[:, :, :-1], ((0, 0), (0, 0), (1, 0)))  # column k -> k + 1
    return jnp.tril(shifted)


def detection_score(
    pattern: jax.Array,
    detection: jax.Array,
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    error_measure: Literal["mul", "abs"] = "mul",
) -> jax.Array:
    """TransformerLens's head-detector score of each head, averaged over the batch.

    Args:
      pattern: [batch, head, query_pos, key_pos] attention pattern.
      detection: [query_pos, key_pos] or [batch, query_pos, key_pos] detection pattern (lower
        triangular, e.g. from `induction_pattern(tokens)`).
      exclude_bos: zero the attention to (and, for "abs", the error at) key position 0 first.
      exclude_current_token: zero the diagonal first.
      error_measure: "mul": `sum(A * D) / sum(A)`; "abs": `1 - mean(|A - D|) * pos`, rounded to
        3 decimals as TransformerLens does.

    Returns:
      [head] scores (for "mul", in [0, 1]).
    """
    _check_pattern(pattern)
    n = pattern.shape[-1]
    detection = jnp.asarray(detection, jnp.float32)
    if detection.ndim == 2:
        detection = jnp.broadcast_to(detection, (pattern.shape[0], n, n))
    if detection.shape != (pattern.shape[0], n, n):
        raise ValueError(f"detection pattern must be [query_pos, key_pos] or [batch, query_pos, "
                         f"key_pos] for a pattern of shape {pattern.shape}, got {detection.shape}")
    keep = jnp.ones((n, n))
    if exclude_bos:
        keep = keep.at[:, 0].set(0.0)
    if exclude_current_token:
        keep = keep * (1 - jnp.eye(n))
    a = pattern.astype(jnp.float32)
    d = detection[:, None]  # [batch, 1, q, k]
    if error_measure == "mul":
        a = a * keep
        per_seq = (a * d).sum(axis=(-2, -1)) / a.sum(axis=(-2, -1))  # [batch, head]
    elif error_measure == "abs":
        err = jnp.abs(a - d) * keep
        per_seq = 1 - jnp.round(err.mean(axis=(-2, -1)) * n, 3)
    else:
        raise ValueError(f"error_measure={error_measure!r}; choose 'mul' or 'abs'")
    return per_seq.mean(axis=0)


# -- mechanism scores --------------------------------------------------------------------------


def previous_token_score(pattern: jax.Array) -> jax.Array:
    """Mean attention from each position to the one before it (query positions 1..pos-1).

    Args:
      pattern: [batch, head, query_pos, key_pos] attention pattern (rows sum to 1).

    Returns:
      [head] scores in [0, 1].
    """
    _check_pattern(pattern)
    diag = jnp.diagonal(pattern, offset=-1, axis1=-2, axis2=-1)  # [batch, head, pos - 1]
    return diag.mean(axis=(0, 2))


def induction_score(pattern: jax.Array, period: int, start: int = 0) -> jax.Array:
    """Mean attention to the token after the previous occurrence of the current token, on
    sequences whose tokens repeat with `period` from position `start` (e.g. a BOS token, then
    a random sequence of `period` tokens, then the same sequence again: `start=1`).

    The induction target of query position q in the repeat is key position q - period + 1.

    Args:
      pattern: [batch, head, query_pos, key_pos].
      period: length of the repeated segment.
      start: position of the repeated segment's first token.

    Returns:
      [head] scores in [0, 1].
    """
    _check_pattern(pattern)
    n = pattern.shape[-1]
    if start + 2 * period > n + 1 or period < 2:
        raise ValueError(f"period={period}, start={start} do not fit {n} positions twice")
    q = jnp.arange(start + period, min(start + 2 * period, n))
    return pattern[:, :, q, q - period + 1].mean(axis=(0, 2))


def attention_mass(pattern: jax.Array, keys: jax.Array, query: int = -1) -> jax.Array:
    """Mean over the batch of the attention mass that query position `query` puts on the
    keys where `keys` holds (e.g. the label tokens after the context items that match the
    query, in in-context classification: an induction head's targets there).

    Args:
      pattern: [batch, head, query_pos, key_pos].
      keys: bool (or 0/1) [batch, key_pos] or [key_pos]: the target keys.
      query: the query position (negative counts from the end).

    Returns:
      [head] scores in [0, 1] (1: all of the query's attention is on the target keys).
    """
    _check_pattern(pattern)
    n = pattern.shape[-1]
    if not -n <= query < n:
        raise ValueError(f"query={query} is out of range for {n} positions")
    keys = jnp.asarray(keys)
    if keys.shape not in ((n,), (pattern.shape[0], n)):
        raise ValueError(f"keys must be [key_pos] or [batch, key_pos] = {(pattern.shape[0], n)},"
                         f" got shape {keys.shape}")
    row = pattern[:, :, query, :]  # [batch, head, key_pos]
    weights = jnp.broadcast_to(keys, (pattern.shape[0], n)).astype(row.dtype)
    return jnp.einsum("bhk,bk->bh", row, weights).mean(axis=0)  # contract key_pos


def attention_sink_score(
    pattern: jax.Array,
    *,
    position: int = 0,
    tokens: jax.Array | None = None,
    sink_token: int | None = None,
) -> jax.Array:
    """Mean attention mass on the sink: key `position` (default the first token), or every key
    holding `sink_token` (then `tokens` is required), over query positions after the first.

    Attention sinks (Xiao et al. 2023, "Efficient Streaming Language Models with Attention
    Sinks"; Gu et al. 2024, "When Attention Sink Emerges") put most of their mass there.

    Args:
      pattern: [batch, head, query_pos, key_pos].
      position: the sink's key position (used when `sink_token` is None).
      tokens: [batch, pos] token ids (only with `sink_token`).
      sink_token: a token id; the sink is every key position holding it.

    Returns:
      [head] scores in [0, 1].
    """
    _check_pattern(pattern)
    n = pattern.shape[-1]
    if sink_token is None:
        if not -n <= position < n:
            raise ValueError(f"position={position} is outside a sequence of {n} positions")
        mass = pattern[..., position]  # [batch, head, q]
    else:
        if tokens is None:
            raise ValueError("sink_token needs tokens [batch, pos]")
        _check_tokens(tokens, pattern)
        is_sink = (tokens == sink_token).astype(pattern.dtype)  # [batch, key]
        mass = jnp.einsum("bhqk,bk->bhq", pattern, is_sink)  # contract key_pos
    return mass[..., 1:].astype(jnp.float32).mean(axis=(0, 2))


def key_attention(pattern: jax.Array) -> jax.Array:
    """The mean attention each key receives from the queries after it: [batch, head, key_pos].

    alpha[b, h, k] = mean over q > k of pattern[b, h, q, k] (0 for the last key, which no later
    query sees). Gu et al. 2024 ("When Attention Sink Emerges in Language Models") score key k
    by this mean (over q >= k, counting the key's own row); a sink is a key whose alpha exceeds
    a threshold (0.3 in their metric). For key 0 its batch mean is `attention_sink_score`;
    a large alpha at k > 0 is a secondary sink.

    Args:
      pattern: [batch, head, query_pos, key_pos].

    Returns:
      [batch, head, key_pos] float32.
    """
    _check_pattern(pattern)
    n = pattern.shape[-1]
    later = jnp.tril(jnp.ones((n, n), jnp.float32), k=-1)  # [q, k]: q > k
    total = jnp.einsum("bhqk,qk->bhk", pattern.astype(jnp.float32), later)  # contract query_pos
    return total / jnp.maximum(later.sum(axis=0), 1.0)


def retrieval_score(pattern: jax.Array, tokens: jax.Array, needle: jax.Array,
                    answer: jax.Array) -> jax.Array:
    """Retrieval-head score (Wu et al. 2024, "Retrieval Head Mechanistically Explains
    Long-Context Factuality"), with teacher forcing.

    At each answer query position q the model emits token `tokens[q + 1]`. The head
    *copies and pastes* at q when its most-attended key j lies in the needle and holds that
    token: `argmax_k A[q, k] = j`, `needle[j]`, `tokens[j] == tokens[q + 1]`. The score is the
    number of such copies divided by the number of needle tokens, averaged over the batch.

    Args:
      pattern: [batch, head, query_pos, key_pos].
      tokens: [batch, pos] token ids.
      needle: [batch, pos] bool, the needle span in the context.
      answer: [batch, pos] bool, the query positions that emit the answer (q + 1 < pos).

    Returns:
      [head] scores in [0, 1] (1: every needle token was copied by this head).
    """
    _check_pattern(pattern)
    _check_tokens(tokens, pattern)
    for name, m in (("needle", needle), ("answer", answer)):
        if jnp.shape(m) != tokens.shape:
            raise ValueError(f"{name} must be a [batch, pos] mask like tokens {tokens.shape}, "
                             f"got {jnp.shape(m)}")
    needle, answer = jnp.asarray(needle, bool), jnp.asarray(answer, bool)
    n = tokens.shape[1]
    emitted = jnp.concatenate([tokens[:, 1:], jnp.full_like(tokens[:, :1], -1)], axis=1)
    top = jnp.argmax(pattern, axis=-1)  # [batch, head, q]
    top_token = jnp.take_along_axis(tokens[:, None, :], top, axis=-1)  # [batch, head, q]
    top_in_needle = jnp.take_along_axis(needle[:, None, :], top, axis=-1)
    valid_q = answer & (jnp.arange(n) < n - 1)
    copies = top_in_needle & (top_token == emitted[:, None, :]) & valid_q[:, None, :]
    return (copies.sum(-1) / jnp.maximum(needle.sum(-1), 1)[:, None]).mean(axis=0)


def classify_heads(
    pattern: jax.Array,
    z: jax.Array,
    *,
    sink_threshold: float = 0.5,
    norm_fraction: float = 0.1,
    position: int = 0,
) -> dict[str, jax.Array]:
    """Active or dormant heads (Guo et al. 2024, "Active-Dormant Attention Heads").

    A dormant head parks its attention on the sink and writes (almost) nothing: its mean
    attention mass on key `position` is at least `sink_threshold` AND the mean norm of its
    output `hook_z` over query positions after the first is below `norm_fraction` times the
    median of that norm over the heads given. Every other head is active.

    Args:
      pattern: [batch, head, query_pos, key_pos] (one layer) or [layer, batch, head, q, k].
      z: the same layer(s)' `hook_z`, [batch, pos, head, d_head] or [layer, batch, pos, head,
        d_head].

    Returns:
      `{"active": bool [..., head], "sink_mass": [..., head], "z_norm": [..., head]}` with a
      leading layer axis when one was given.
    """
    if pattern.ndim == 5:
        if z.ndim != 5 or z.shape[0] != pattern.shape[0]:
            raise ValueError(f"pattern {pattern.shape} has a layer axis; z must be [layer, "
                             f"batch, pos, head, d_head] with the same layers, got {z.shape}")
        sink = jnp.stack([attention_sink_score(p, position=position) for p in pattern])
        norms = jnp.linalg.norm(z[:, :, 1:].astype(jnp.float32), axis=-1).mean(axis=(1, 2))
    else:
        _check_pattern(pattern)
        b, h, n, _ = pattern.shape
        if z.ndim != 4 or z.shape[:3] != (b, n, h):
            raise ValueError(f"z must be [batch, pos, head, d_head] = ({b}, {n}, {h}, ...) for "
                             f"a pattern of shape {pattern.shape}, got {z.shape}")
        sink = attention_sink_score(pattern, position=position)
        norms = jnp.linalg.norm(z[:, 1:].astype(jnp.float32), axis=-1).mean(axis=(0, 1))
    dormant = (sink >= sink_threshold) & (norms < norm_fraction * jnp.median(norms))
    return {"active": ~dormant, "sink_mass": sink, "z_norm": norms}


def ov_logits(model, variables, tokens) -> jax.Array:
    """Each head's direct OV-circuit logits on each token's effective embedding, from weights.

    The token's *effective embedding* is its embedding plus the layer-0 MLP's output on it
    (Gould et al. 2023's MLP0 embedding; just the embedding for attention-only models). For
    head h of layer l the logits are `U(OV_h(norm1_l(x)))`: the head's value and output
    projections (biases included) applied to the normalised effective embedding, then the
    final norm and the unembedding (`U`), as if the head attended only to that token.
    `successor_score` is the argmax statistic of these logits.

    Args:
      model: a `jaxinterp.models.Transformer` (unrolled or scanned) with a dense MLP or none.
      variables: its variables.
      tokens: int [token] ids in `[0, d_vocab)`.

    Returns:
      [layer, token, head, d_vocab_out] logits.
    """
    from jaxinterp.layers.mlp import MLP
    from jaxinterp.layers.norms import make_norm
    from jaxinterp.models.transformer import (
        check_transformer,
        final_norm,
        unembed,
        unrolled_params,
    )

    c = check_transformer(model, "ov_logits")
    if c.mlp_type != "dense" and not c.attn_only:
        raise ValueError(f"ov_logits builds the MLP0 embedding from a dense MLP; this model "
                         f"has mlp_type={c.mlp_type!r}")
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 1 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be a 1-d array of token ids, got shape {tokens.shape} "
                         f"and dtype {tokens.dtype}")
    p = unrolled_params(variables)

    def norm(block: dict, name: str, x: jax.Array) -> jax.Array:
        layer = make_norm(c.normalization_type, c.eps, jnp.float32, jnp.float32, name)
        return x if layer is None else layer.apply({"params": block[name]}, x, ("t", "d_model"))

    x = p["embed"]["W_E"][tokens]  # [token, d_model]
    if not c.attn_only:  # the MLP0 effective embedding
        mlp = MLP(d_mlp=c.d_mlp, act_fn=c.act_fn, gated=c.gated_mlp, use_bias=c.use_bias)
        x = x + mlp.apply({"params": p["blocks_0"]["mlp"]}, norm(p["blocks_0"], "ln2", x)[None])[0]
    out = []
    for layer in range(c.n_layers):
        block = p[f"blocks_{layer}"]
        attn = block["attn"]
        group = c.n_heads // attn["W_V"].shape[0]  # grouped-query: one KV head per group
        w_v = jnp.repeat(attn["W_V"], group, axis=0)
        v = jnp.einsum("tm,nmd->tnd", norm(block, "ln1", x), w_v)  # contract d_model
        if c.use_bias:
            v = v + jnp.repeat(attn["b_V"], group, axis=0)
        z = jnp.einsum("tnd,ndm->tnm", v, attn["W_O"])  # contract d_head
        out.append(unembed(model, variables, final_norm(model, variables, z)))  # [t, head, v]
    return jnp.stack(out)


def successor_score(model, variables, sequences: Sequence[Sequence[int]]) -> jax.Array:
    """Successor-head score of every head (Gould et al. 2023, "Successor Heads"), from weights.

    For each token t_i of each ordinal sequence (e.g. the ids of "Monday", "Tuesday", ...), the
    head's OV circuit is applied to t_i's *effective embedding* (the token embedding plus the
    layer-0 MLP's output on it, the paper's MLP0 embedding; just the embedding for
    attention-only models): `logits = U(OV_h(norm1(x)))`, where U applies the final norm and
    the unembedding (`ov_logits`). The head *increments* t_i when, among the tokens of its
    sequence, the successor t_{i+1} gets the highest logit. The score is the fraction of
    (token, successor) pairs that the head increments.

    Args:
      model: a `jaxinterp.models.Transformer` (unrolled or scanned).
      variables: its variables.
      sequences: ordinal sequences of token ids, each of length >= 2.

    Returns:
      [layer, head] scores in [0, 1].
    """
    from jaxinterp.models.transformer import check_transformer

    c = check_transformer(model, "successor_score")
    if c.mlp_type != "dense" and not c.attn_only:
        raise ValueError(f"successor_score builds the MLP0 embedding from a dense MLP; this model "
                         f"has mlp_type={c.mlp_type!r}")
    seqs = [list(map(int, s)) for s in sequences]
    if not seqs or any(len(s) < 2 for s in seqs):
        raise ValueError("sequences must be a non-empty list of token-id lists of length >= 2")
    if any(t < 0 or t >= c.d_vocab for s in seqs for t in s):
        raise ValueError(f"sequence token ids must be in [0, d_vocab={c.d_vocab})")
    tokens = jnp.asarray(sorted({t for s in seqs for t in s}))
    all_logits = ov_logits(model, variables, tokens)  # [layer, t, head, v]
    scores = []
    for logits in all_logits:
        hits = []
        for s in seqs:
            idx = jnp.searchsorted(tokens, jnp.asarray(s))
            cand = logits[idx][:, :, jnp.asarray(s)]  # [len, head, len]
            best = jnp.argmax(cand[:-1], axis=-1)  # [len - 1, head]
            hits.append(best == jnp.arange(1, len(s))[:, None])
        scores.append(jnp.concatenate(hits).mean(axis=0))
    return jnp.stack(scores)
