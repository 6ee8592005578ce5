"""Sparse TopK kernels: a TopK SAE touches only k of its d_sae latents per row, so the
training step reads and writes only those k rows of `W_dec` (and columns of `W_enc`).

    pre          = (x - b_dec) W_enc + b_enc                     [rows, d_sae]  (one matmul)
    vals, idx    = top_k(pre, k)                                 [rows, k]
    acts         = ReLU(encode_at(x - b_dec, W_enc, b_enc, idx, pre))    [rows, k]
    recon        = decode(acts, idx, W_dec) + b_dec              [rows, d_out]

`decode` gathers the k active decoder rows of each input and sums them weighted (Gao et al.
2024, "Scaling and evaluating sparse autoencoders", whose TopK kernels do the same); its
backward reuses the gathered rows (kept from the forward pass: [rows, k, d_out] floats of
memory) for the activations' gradient and scatter-adds
`acts[r, j] * g[r]` into row `idx[r, j]` of `W_dec`'s gradient. `encode_at` returns the
pre-activations at the k indices (taken from the dense `pre`, so the values are the dense
ones, bit for bit); its backward sends the gradient only to the k active latents: columns of
`W_enc` (scatter-add of `g[r, j] * x[r]`), entries of `b_enc`, and the input (a gather of the
k active encoder columns). The dense step instead scatters the k gradients into a
[rows, d_sae] array and pays two more [rows, d_sae] x [d_sae, d] matmuls for the encoder's
backward and three for the decoder's forward and backward; the sparse step pays one matmul
(the encoder's forward, needed to find the top k) and O(rows k d) gathers and scatters.

Used by `jaxinterp.sae.model.loss` when `SAEConfig(architecture="topk", sparse_decode=True)`;
`tests/sae/test_sparse_topk.py` checks the step against the dense one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _int_zero(idx: jax.Array) -> np.ndarray:
    """The (float0) cotangent of an integer input."""
    return np.zeros(idx.shape, dtype=jax.dtypes.float0)


def _scatter_rows(n: int, idx: jax.Array, weights: jax.Array, rows: jax.Array) -> jax.Array:
    """out [n, d] with out[s] = Σ_{r, j: idx[r, j] = s} weights[r, j] rows[r].

    idx, weights [batch, k]; rows [batch, d]. A scatter-add of batch * k weighted rows."""
    d = rows.shape[-1]
    updates = (weights[..., None] * rows[:, None, :]).reshape(-1, d)  # [batch * k, d]
    return jnp.zeros((n, d), rows.dtype).at[idx.reshape(-1)].add(updates)


@jax.custom_vjp
def encode_at(x_in: jax.Array, w_enc: jax.Array, b_enc: jax.Array, idx: jax.Array,
              pre: jax.Array) -> jax.Array:
    """`pre[r, idx[r, j]]` [rows, k], where pre = x_in W_enc + b_enc [rows, d_sae] was
    computed by the caller (without gradient); the gradient reaches x_in [rows, d_in],
    W_enc [d_in, d_sae] and b_enc [d_sae] only through the k indices of each row."""
    del x_in, w_enc, b_enc
    return jnp.take_along_axis(pre, idx, axis=-1)


def _encode_at_fwd(x_in, w_enc, b_enc, idx, pre):
    return encode_at(x_in, w_enc, b_enc, idx, pre), (x_in, w_enc, idx, pre.shape)


def _encode_at_bwd(res, g):
    x_in, w_enc, idx, pre_shape = res  # g [rows, k]
    d_sae = w_enc.shape[1]
    cols = jnp.take(w_enc.T, idx, axis=0)  # [rows, k, d_in]: the active encoder columns
    d_x = jnp.einsum("rk,rkd->rd", g, cols)  # contract the k active latents
    d_w_enc = _scatter_rows(d_sae, idx, g, x_in).T  # [d_in, d_sae]
    d_b_enc = jnp.zeros((d_sae,), g.dtype).at[idx.reshape(-1)].add(g.reshape(-1))
    return d_x, d_w_enc, d_b_enc, _int_zero(idx), jnp.zeros(pre_shape, g.dtype)


encode_at.defvjp(_encode_at_fwd, _encode_at_bwd)


@jax.custom_vjp
def decode(acts: jax.Array, idx: jax.Array, w_dec: jax.Array) -> jax.Array:
    """Σ_j acts[r, j] W_dec[idx[r, j]]: acts, idx [rows, k]; W_dec [d_sae, d_out] ->
    [rows, d_out] (no bias). Equals `dense_acts @ W_dec` for the dense activations that are
    `acts` at `idx` and 0 elsewhere."""
    rows = jnp.take(w_dec, idx, axis=0)  # [rows, k, d_out]: the active decoder rows
    return jnp.einsum("rk,rko->ro", acts, rows)  # contract the k active latents


def _decode_fwd(acts, idx, w_dec):
    rows = jnp.take(w_dec, idx, axis=0)  # [rows, k, d_out], kept for the backward pass
    return jnp.einsum("rk,rko->ro", acts, rows), (acts, idx, rows, w_dec.shape[0])


def _decode_bwd(res, g):
    acts, idx, rows, d_sae = res  # g [rows, d_out]
    d_acts = jnp.einsum("ro,rko->rk", g, rows)  # contract d_out
    d_w_dec = _scatter_rows(d_sae, idx, acts, g)  # [d_sae, d_out]
    return d_acts, _int_zero(idx), d_w_dec


decode.defvjp(_decode_fwd, _decode_bwd)


def fired(idx: jax.Array, acts: jax.Array, d_sae: int) -> jax.Array:
    """[d_sae] bool: latents non-zero on some row (idx, acts [rows, k])."""
    hits = jnp.zeros((d_sae,), jnp.int32).at[idx.reshape(-1)].max(
        (acts != 0).reshape(-1).astype(jnp.int32))
    return hits > 0
