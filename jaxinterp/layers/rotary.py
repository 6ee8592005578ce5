"""Rotary position embeddings (GPT-NeoX / LLaMA "rotate half" convention)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def apply_rotary(x: jax.Array, positions: jax.Array, rotary_dim: int, base: float) -> jax.Array:
    """Rotates the first `rotary_dim` features of each head.

    Args:
      x: [batch, pos, head, d_head].
      positions: [pos] integer positions.
      rotary_dim: even number of features to rotate (<= d_head); the rest pass through.
      base: the frequency base (10000 in GPT-NeoX and LLaMA).

    Returns:
      [batch, pos, head, d_head], same dtype as `x`.
    """
    half = rotary_dim // 2
    inv_freq = 1.0 / (base ** (jnp.arange(half, dtype=jnp.float32) / half))  # [half]
    angles = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]  # [pos, half]
    cos = jnp.cos(angles)[None, :, None, :]  # [1, pos, 1, half]
    sin = jnp.sin(angles)[None, :, None, :]
    rot, rest = x[..., :rotary_dim].astype(jnp.float32), x[..., rotary_dim:]
    x1, x2 = rot[..., :half], rot[..., half:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return jnp.concatenate([rotated.astype(x.dtype), rest], axis=-1)
