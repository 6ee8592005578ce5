"""Hedgehog feature maps for linear attention (Zhang et al. 2024, "The Hedgehog & the Porcupine:
Expressive Linear Attentions with Softmax Mimicry", arXiv:2402.04347).

Linear attention replaces `exp(q·k)` by a kernel `phi(q)·phi(k)` with a feature map `phi`, so that

    y_i = sum_{j<=i} (phi(q_i)·phi(k_j)) v_j / sum_{j<=i} phi(q_i)·phi(k_j)

Hedgehog learns `phi` per head with a trainable linear map followed by a "spiky" non-negative
activation. We use the softmax form of the Hedgehog/LoLCATs reference code:

    phi(x) = [softmax(x W + b), softmax(-(x W + b))]      (softmaxes over the feature axis)

with `W` [d_head, d_feature] initialised to the identity (as in the Hedgehog code) and `b` to 0,
so `phi(x)` has `2 * d_feature` non-negative features. Queries and keys have separate maps.

Causality. `Attention` evaluates the masked quadratic form above (the kernel matrix
`phi(Q) phi(K)ᵀ` times the causal mask, normalised by its row sums). That costs O(pos²) like
softmax attention but exposes the exact implied pattern as `hook_pattern` at every length.
`causal_linear_attention` computes the same outputs with cumulative sums in O(pos) memory per
step (the recurrent form); it is provided for long sequences and checked against the quadratic
form in the tests.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.layers.common import param


def _eye_init(key, shape, dtype=jnp.float32):
    """[heads, d_in, d_out] identity (rectangular: ones on the leading diagonal) per head."""
    del key
    return jnp.broadcast_to(jnp.eye(shape[-2], shape[-1], dtype=dtype), shape)


class HedgehogFeatureMap(nn.Module):
    """phi: [batch, pos, head, d_head] -> [batch, pos, head, 2 * d_feature] (non-negative).

    Parameters: `W` [heads, kv, feature] = [n_heads, d_head, d_feature] (identity init),
    `b` [heads, feature] (zeros).
    """

    d_feature: int
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _, _, h, dh = x.shape
        w = param(self, "W", _eye_init, (h, dh, self.d_feature), ("heads", "kv", "feature"),
                  self.param_dtype)
        b = param(self, "b", nn.initializers.zeros, (h, self.d_feature), ("heads", "feature"),
                  self.param_dtype)
        proj = jnp.einsum("bphd,hdf->bphf", x.astype(jnp.float32),
                          w.astype(jnp.float32))  # contract d_head
        proj = proj + b.astype(jnp.float32)
        return jnp.concatenate([jax.nn.softmax(proj, axis=-1), jax.nn.softmax(-proj, axis=-1)],
                               axis=-1)


def causal_linear_attention(phi_q: jax.Array, phi_k: jax.Array, v: jax.Array,
                            eps: float = 0.0) -> jax.Array:
    """Causal linear attention by cumulative sums (the recurrent form).

    Args:
      phi_q, phi_k: [batch, pos, head, feature] non-negative features.
      v: [batch, pos, head, d_head].
      eps: added to the normaliser.

    Returns:
      z [batch, pos, head, d_head] with
      `z_i = phi(q_i)ᵀ (sum_{j<=i} phi(k_j) v_jᵀ) / (phi(q_i)ᵀ sum_{j<=i} phi(k_j) + eps)`.
    """
    kv = jnp.cumsum(jnp.einsum("bkhf,bkhd->bkhfd", phi_k, v), axis=1)  # outer products, summed
    k_sum = jnp.cumsum(phi_k, axis=1)  # [batch, pos, head, feature]
    num = jnp.einsum("bqhf,bqhfd->bqhd", phi_q, kv)  # contract feature
    den = jnp.einsum("bqhf,bqhf->bqh", phi_q, k_sum)  # contract feature
    return num / (den[..., None] + eps)
