"""Attention-head detectors: how much each head attends where a known mechanism would.

Scores follow TransformerLens's head detector with "mul" scoring: the attention mass a head puts
on the positions a detection pattern marks, averaged over the query positions where the pattern
is defined and over the batch. A perfect head scores 1, a uniform causal head about 1/pos.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def previous_token_score(pattern: jax.Array) -> jax.Array:
    """Mean attention from each position to the one before it.

    Args:
      pattern: [batch, head, query_pos, key_pos] attention pattern (rows sum to 1).

    Returns:
      [head] scores in [0, 1].
    """
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
    n = pattern.shape[-1]
    if start + 2 * period > n + 1 or period < 2:
        raise ValueError(f"period={period}, start={start} do not fit {n} positions twice")
    q = jnp.arange(start + period, min(start + 2 * period, n))
    return pattern[:, :, q, q - period + 1].mean(axis=(0, 2))
