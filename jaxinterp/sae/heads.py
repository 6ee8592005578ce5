"""Attention-output SAEs: which heads a feature belongs to, and which source positions drive it.

Kissane, Krzyzanowski, Bloom, Conmy & Nanda 2024 ("Interpreting Attention Layer Outputs with
Sparse Autoencoders", arXiv:2406.17759) train SAEs on an attention layer's `hook_z`
concatenated over heads, `x = concat_h z_h` [n_heads * d_head], so that every decoder row
splits into one d_head block per head:

    W_dec[f] = (W_dec[f, h=0], ..., W_dec[f, h=H-1])            each block [d_head]

*Weight-based head attribution* (their Sec. 3 / App. "head attribution"): feature f's share of
head h is the norm of h's block over the sum of the blocks' norms,

    attr[f, h] = ||W_dec[f, h]||_2 / sum_h' ||W_dec[f, h']||_2     (rows sum to 1)

`head_attribution` computes it for every feature at once.

*Direct feature attribution by source position* (their DFA, applied to the query's feature
pre-activation): a head's z at query q is an attention-weighted sum of the values,
`z[q, h] = sum_k A[h, q, k] v[k, h]`, and the SAE's pre-activation is linear in z,
`pre[q, f] = (z[q] - b_dec) . W_enc[:, f] + b_enc[f]`, so it splits exactly into one term per
(source position k, head h) plus a constant:

    pre[q, f] = sum_{k, h} A[h, q, k] (v[k, h] . W_enc[h, :, f]) + (b_enc[f] - b_dec . W_enc[:, f])

`source_attribution` returns the per-(query, key) terms summed over heads, [batch, q, k, d_sae]
(or summed over a caller's key categories, e.g. "previous token", "BOS", "induction source").
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def _split(w: jax.Array, n_heads: int, what: str) -> jax.Array:
    """[..., n_heads * d_head] -> [..., n_heads, d_head]."""
    if w.shape[-1] % n_heads:
        raise ValueError(f"{what} has shape {tuple(w.shape)}: its last axis is not n_heads="
                         f"{n_heads} blocks of d_head (hook_z flattened over [head, d_head])")
    return w.reshape(*w.shape[:-1], n_heads, w.shape[-1] // n_heads)


def head_attribution(w_dec: jax.Array, n_heads: int) -> jax.Array:
    """Weight-based head attribution of every feature of a `hook_z` SAE (module docstring).

    Args:
      w_dec: the decoder [d_sae, n_heads * d_head] (rows in `hook_z`'s flattened
        [head, d_head] order, as `jaxinterp.sae` trains on `blocks.{l}.attn.hook_z`).
      n_heads: heads of the layer.

    Returns:
      float32 [d_sae, n_heads]: each feature's share of decoder norm in each head (rows sum
      to 1; an all-zero row gives uniform shares).
    """
    chex.assert_rank(w_dec, 2)
    norms = jnp.linalg.norm(_split(w_dec.astype(jnp.float32), n_heads, "W_dec"), axis=-1)
    total = norms.sum(-1, keepdims=True)
    return jnp.where(total > 0, norms / jnp.where(total > 0, total, 1.0), 1.0 / n_heads)


def source_attribution(pattern: jax.Array, v: jax.Array, w_enc: jax.Array,
                       key_categories: jax.Array | None = None) -> jax.Array:
    """Each source position's (or key category's) direct term in every feature's pre-activation.

    Args:
      pattern: attention pattern [batch, head, q, k] (`blocks.{l}.attn.hook_pattern`).
      v: values [batch, k, head, d_head] (`blocks.{l}.attn.hook_v`, biases included; with
        grouped-query attention, repeated to one per query head).
      w_enc: the SAE encoder [n_heads * d_head, d_sae].
      key_categories: optional one-hot (or weights) [batch, q, k, n_cat]: sums the key terms
        by category instead of returning them per key.

    Returns:
      float32 [batch, q, k, d_sae], or [batch, q, n_cat, d_sae] with `key_categories`: the
      terms `sum_h A[h, q, k] (v[k, h] . W_enc[h, :, f])`. Summed over k they are the
      pre-activation minus its constant `b_enc - b_dec . W_enc` (module docstring).
    """
    chex.assert_rank([pattern, v, w_enc], [4, 4, 2])
    b, n_heads, nq, nk = pattern.shape
    if v.shape[:3] != (b, nk, n_heads):
        raise ValueError(f"v has shape {tuple(v.shape)}; expected [batch={b}, k={nk}, "
                         f"head={n_heads}, d_head] to match the pattern {tuple(pattern.shape)}")
    w = _split(w_enc.astype(jnp.float32).T, n_heads, "W_enc.T")  # [d_sae, head, d_head]
    if w.shape[-1] != v.shape[-1]:
        raise ValueError(f"W_enc has {w_enc.shape[0]} rows; expected n_heads * d_head = "
                         f"{n_heads} * {v.shape[-1]}")
    u = jnp.einsum("bkhd,fhd->bkhf", v.astype(jnp.float32), w)  # contract d_head
    a = pattern.astype(jnp.float32)
    if key_categories is None:
        return jnp.einsum("bhqk,bkhf->bqkf", a, u)  # contract head
    chex.assert_shape(key_categories, (b, nq, nk, None))
    # weights per (head, q, category, k) first: never a [batch, head, q, k, d_sae] array
    ac = jnp.einsum("bhqk,bqkc->bhqck", a, key_categories.astype(jnp.float32))
    return jnp.einsum("bhqck,bkhf->bqcf", ac, u)  # contract head, k
