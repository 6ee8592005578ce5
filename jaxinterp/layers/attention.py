"""Multi-head (and grouped-query) self-attention with TransformerLens parameters and sites.

Parameters (logical axes in brackets):
  W_Q [heads, embed, kv]  = [n_heads, d_model, d_head]      b_Q [n_heads, d_head]
  W_K, W_V                = [n_kv_heads, d_model, d_head]    b_K, b_V [n_kv_heads, d_head]
  W_O [heads, kv, embed]  = [n_heads, d_head, d_model]       b_O [d_model]

Sites (relative to the module, e.g. `blocks.0.attn.hook_q`):
  hook_q [batch, pos, head, d_head]; hook_k, hook_v [batch, pos, head, d_head] (head = KV head
  under grouped-query attention); hook_rot_q, hook_rot_k after rotary (rotary only);
  hook_attn_scores [batch, head, query_pos, key_pos] (scaled, masked with the dtype's most
  negative value); hook_pattern (softmax of the scores); hook_z [batch, pos, head, d_head].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp import sites
from jaxinterp.layers.common import param
from jaxinterp.layers.norms import RMSNorm
from jaxinterp.layers.rotary import apply_rotary

HEAD_AXES = ("batch", "pos", "head", "d_head")
PATTERN_AXES = ("batch", "head", "query_pos", "key_pos")


class Attention(nn.Module):
    """Self-attention. x: [batch, pos, d_model] -> [batch, pos, d_model]."""

    n_heads: int
    d_head: int
    n_kv_heads: int | None = None  # None: = n_heads (multi-head); fewer: grouped-query
    causal: bool = True
    use_bias: bool = True
    qk_norm: bool = False  # RMSNorm over d_head on queries and keys (before rotary)
    rotary_dim: int | None = None  # None: no rotary; else rotate this many features per head
    rotary_base: float = 10000.0
    init_range: float = 0.02
    eps: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _, n_pos, d_model = x.shape
        h, dh = self.n_heads, self.d_head
        kvh = self.n_kv_heads or h
        init = nn.initializers.normal(self.init_range)
        zeros = nn.initializers.zeros
        pd = self.param_dtype

        def proj(name: str, n: int) -> jax.Array:
            w = param(self, f"W_{name}", init, (n, d_model, dh), ("heads", "embed", "kv"), pd)
            out = jnp.einsum("bpm,nmd->bpnd", x, w.astype(self.dtype))  # contract d_model
            if self.use_bias:
                out = out + param(self, f"b_{name}", zeros, (n, dh), ("heads", "kv"), pd)
            return out.astype(self.dtype)

        q = sites.site(self, "hook_q", proj("Q", h), HEAD_AXES)
        k = sites.site(self, "hook_k", proj("K", kvh), HEAD_AXES)
        v = sites.site(self, "hook_v", proj("V", kvh), HEAD_AXES)
        if self.qk_norm:
            q = RMSNorm(self.eps, self.dtype, pd, name="q_norm")(q, HEAD_AXES)
            k = RMSNorm(self.eps, self.dtype, pd, name="k_norm")(k, HEAD_AXES)
        if self.rotary_dim is not None:
            positions = jnp.arange(n_pos)
            q = sites.site(
                self, "hook_rot_q", apply_rotary(q, positions, self.rotary_dim, self.rotary_base),
                HEAD_AXES)
            k = sites.site(
                self, "hook_rot_k", apply_rotary(k, positions, self.rotary_dim, self.rotary_base),
                HEAD_AXES)
        if kvh != h:  # grouped-query attention: each KV head serves h // kvh query heads
            k = jnp.repeat(k, h // kvh, axis=2)
            v = jnp.repeat(v, h // kvh, axis=2)

        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)  # contract d_head
        scores = scores / jnp.sqrt(jnp.float32(dh))
        if self.causal:
            mask = jnp.tril(jnp.ones((n_pos, n_pos), bool))
            scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        scores = sites.site(self, "hook_attn_scores", scores, PATTERN_AXES)
        pattern = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        pattern = sites.site(self, "hook_pattern", pattern, PATTERN_AXES)

        z = jnp.einsum("bhqk,bkhd->bqhd", pattern, v)  # contract key_pos
        z = sites.site(self, "hook_z", z, HEAD_AXES)
        w_o = param(self, "W_O", init, (h, dh, d_model), ("heads", "kv", "embed"), pd)
        out = jnp.einsum("bqhd,hdm->bqm", z, w_o.astype(self.dtype))  # contract head, d_head
        if self.use_bias:
            out = out + param(self, "b_O", zeros, (d_model,), ("embed",), pd)
        return out.astype(self.dtype)
