"""Multi-head (and grouped-query) self-attention with TransformerLens parameters and sites,
and the attention variants used in interpretability and quantisation research.

Parameters (logical axes in brackets):
  W_Q [heads, embed, kv]  = [n_heads, d_model, d_head]      b_Q [n_heads, d_head]
  W_K, W_V                = [n_kv_heads, d_model, d_head]    b_K, b_V [n_kv_heads, d_head]
  W_O [heads, kv, embed]  = [n_heads, d_head, d_model]       b_O [d_model]
  gated only:  W_G [embed, heads] = [d_model, n_heads]       b_G [n_heads]
               (the default gate_type; the other gates' parameters: see `gated=True` below)
  linear only: q_fmap.W [n_heads, d_head, d_feature], q_fmap.b; k_fmap.W [n_kv_heads, ...], k_fmap.b

Masks: `causal=True` hides later keys; `key_mask` [batch, key_pos] (True / 1 for real tokens,
False / 0 for padding, as Hugging Face's `attention_mask`) hides padded keys from every query.
Both combine (a key is visible when both allow it). The masks are applied before
`hook_attn_scores`, so that site shows the masked scores, as in TransformerLens (which writes
-inf for padding; here every masked entry of a softmax score is float32's most negative
value, which is also what Hugging Face's additive `finfo.min` mask gives in float32). Queries
at padded positions still attend to the real keys; their outputs are computed but meaningless.

Sites (relative to the module, e.g. `blocks.0.attn.hook_q`):
  hook_q [batch, pos, head, d_head]; hook_k, hook_v [batch, pos, head, d_head] (head = KV head
  under grouped-query attention); hook_rot_q, hook_rot_k after rotary (rotary only);
  hook_attn_scores, hook_pattern [batch, head, query_pos, key_pos]; hook_z [batch, pos, head,
  d_head] (what W_O multiplies: head h's contribution to the output is z[..., h, :] W_O[h]);
  linear only: hook_q_features, hook_k_features [batch, pos, head, 2 * d_feature];
  gated only: hook_gate [batch, pos, head].

Split inputs (edge-level analyses; `TransformerConfig.use_split_qkv_input`, as TransformerLens's
`use_split_qkv_input`): called with `x = (x_q, x_k, x_v)`, per-head inputs [batch, pos, head,
d_model] (head = KV head for x_k, x_v), query head h projects x_q[..., h, :] and so on, and the
output passes through hook_result [batch, pos, head, d_model] (head h's `z_h W_O[h]`, without
b_O), summed over heads. Not defined for gated attention (its gate reads the whole input).

`attention_type` (S = q·k / sqrt(d_head), masked entries are excluded everywhere; n = pos):
  "softmax"  hook_attn_scores = S (masked with the dtype's most negative value);
             hook_pattern = softmax(S) over keys.
  "sigmoid"  Ramapuram et al. 2024, "Theory, Analysis, and Best Practices for Sigmoid
             Self-Attention" (arXiv:2409.04431): hook_attn_scores = S + b with b = -log(n)
             (n = number of positions, including register tokens; with a `key_mask`, the
             number of unpadded positions of that sequence); hook_pattern = sigmoid of it
             (masked entries are exactly 0). Rows need not sum to 1.
  "softplus" LSSA with re-weighting (LSSAR), Gao & Spratling 2025, "Softplus Attention with
             Re-weighting Boosts Length Extrapolation in Large Language Models"
             (arXiv:2501.13428). With N_i the number of keys query i sees (i + 1 causal, n
             bidirectional, padded keys not counted) and q̂, k̂ the L2-normalised query and key:
               hook_attn_scores  S'_ij = log(d_head) * log(N_i) * q̂_i·k̂_j
               A_ij = softplus(S'_ij) / sum_{j' visible} softplus(S'_ij')        (LSSA)
             and, when `softplus_power` p > 0, the re-weighting
               R_ij = relu(N_i A_ij - o_i) ** p,  o_i = 0 if N_i <= 3 else 1,
               hook_pattern = R_ij / (sum_j' R_ij' + 1e-8)                        (LSSAR)
             (p = 0: hook_pattern = A, plain LSSA). N_i A_ij > 1 exactly where a weight beats
             the uniform 1/N_i, so re-weighting keeps and sharpens the above-uniform weights.
             Checked (issue 13) against the paper's matrix form A = Softplus((log d log N) ⊙
             Q̂K̂^T) ⊙ M', l1 rows, then ReLU^p(A ⊙ N - O), l1 rows (N_ij = i, the row's
             visible keys; O all ones but its first 3 rows; q, k normalised per head after
             rotary, which preserves norms) and the paper's p = 15: the formula is unchanged.
             Only its evaluation changed: R is computed as (x / max_j x)^p with the eps
             rescaled by (max_j x)^-p (the same weights), since x^15 overflows float32 once
             x = N_i A_ij - 1 > 368, i.e. when one of >~ 370 keys takes most of the weight.
  "clipped_softmax"  Bondarenko et al. 2023, "Quantizable Transformers: Removing Outliers by
             Helping Attention Heads Do Nothing" (arXiv:2306.12929): hook_attn_scores = S;
             hook_pattern = clip((zeta - gamma) softmax(S) + gamma, 0, 1), with gamma <= 0 so
             that small weights become exactly 0 (and zeta >= 1 so large ones can reach 1).
  "relu"     Guo et al. 2024, "Active-Dormant Attention Heads: Mechanistically Demystifying
             Extreme-Token Phenomena in LLMs" (arXiv:2410.13835), as in the authors' code
             (BBM/model.py: `F.relu(scores) / indices`, indices = 1..n over query positions):
             hook_attn_scores = S (masked with float32's most negative value);
             hook_pattern_ij = relu(S_ij) / N_i, N_i the number of keys query i sees (i + 1
             causal, n bidirectional, padded keys not counted). Rows need not sum to 1, so a
             head can output nothing without a sink. Cacheable: N_i depends on i only.
  "linear"   Hedgehog linear attention (see `jaxinterp.layers.linear_attention`):
             hook_attn_scores = phi_q(q_i)·phi_k(k_j) (0 where masked; no 1/sqrt(d_head));
             hook_pattern = scores / row sums. Computed in the masked quadratic form, so the
             exact implied pattern is available at every length.

KV cache (`kv_cache=`, causal attention only): the chunk x holds absolute positions
offset .. offset + pos - 1 of a sequence of L positions, `kv_cache = {"k": [batch, L, kv_head,
d_k], "v": [batch, L, kv_head, d_head]}` holds the keys and values of the earlier positions
(keys after qk-norm, rotary and, for "linear", the feature map: d_k = d_head, or 2 * d_feature),
and the call returns `(out, new_cache)` with the chunk's keys and values written in at
`offset`. The chunk's queries attend to cached positions <= their own, so a prefill (offset 0)
and decode steps (pos 1) or any chunk [p, T) give the logits of the uncached pass over the
whole sequence. Sites keep their names; their query axis is the chunk, their key_pos axis the L
cache positions (masked beyond each query). The one variant whose output at a position depends
on later ones is "sigmoid" (b = -log n, n the sequence length): under the cache n = L (with a
`key_mask` [batch, L], its unpadded count), as in the uncached pass over all L positions.
Bidirectional attention has no cache (a ValueError).

`gated=True` (Bondarenko et al. 2023, gated attention): hook_gate = sigmoid(G(x)) [batch, pos,
head] from the attention input x, and hook_z = hook_gate[..., None] * (pattern v), so a head can
output (nearly) nothing. `gate_type` picks G among the variants of the authors' code
(Qualcomm-AI-research/outlier-free-transformers, `BertSelfAttentionWithExtras`); with
x_h = x[..., h s:(h + 1) s] head h's slice of the input features (s = d_model / n_heads, which
must be an integer, as their code's `transpose_for_scores(hidden_states)`):
  "all_heads_linear" (default)  G(x)_h = x W_G[:, h] + b_G[h]; W_G [d_model, heads]
                                (their `attn_gate_linear_all_features`: one linear map shared
                                by all heads, reading all features).
  "linear"   G(x)_h = x_h · W_G[h] + b_G[h]; W_G [heads, s] (their default
             `conditional_per_token`: a Linear(s -> 1) per head on its own features).
  "mlp"      G(x)_h = relu(x_h W_G1[h] + b_G1[h]) · W_G2[h] + b_G2[h]; W_G1 [heads, s, s // 4],
             W_G2 [heads, s // 4] (their `attn_gate_mlp`, the gate of their BERT script).
  "unconditional"  G_h = b_G[h], no input (their `unconditional_per_head`).
Biases start at 0 (gate 0.5, their default), weights as every other weight.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp import hooks
from jaxinterp.layers.axes import FEATURE_AXES, GATE_AXES, HEAD_AXES, PATTERN_AXES
from jaxinterp.layers.common import param
from jaxinterp.layers.linear_attention import HedgehogFeatureMap
from jaxinterp.layers.norms import RMSNorm
from jaxinterp.layers.rotary import apply_rotary

ATTENTION_TYPES = ("softmax", "sigmoid", "softplus", "clipped_softmax", "linear", "relu")
GATE_TYPES = ("all_heads_linear", "linear", "mlp", "unconditional")  # see the module docstring
_REWEIGHT_EPS = 1e-8


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
    attention_type: str = "softmax"  # one of ATTENTION_TYPES (see the module docstring)
    gated: bool = False  # per-head sigmoid output gate (hook_gate)
    gate_type: str = "all_heads_linear"  # one of GATE_TYPES (see the module docstring)
    clip_zeta: float = 1.0  # clipped_softmax stretch: zeta >= 1
    clip_gamma: float = -0.03  # clipped_softmax stretch: gamma <= 0
    softplus_power: float = 15.0  # softplus re-weighting power p (0: no re-weighting)
    linear_feature_dim: int | None = None  # Hedgehog d_feature; None: = d_head
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array | tuple[jax.Array, jax.Array, jax.Array],
                 key_mask: jax.Array | None = None,
                 kv_cache: dict[str, jax.Array] | None = None, offset: int | jax.Array = 0
                 ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """x: [batch, pos, d_model], or split inputs (x_q, x_k, x_v) [batch, pos, head, d_model]
        (module docstring); key_mask: [batch, key_pos] bool (or 0/1), True for keys that may
        be attended to (real tokens), None for all (key_pos = pos, or L with a cache).
        Returns [batch, pos, d_model]; with `kv_cache` (see the module docstring; `offset`: the
        absolute position of x's first entry) `(out, new_cache)`."""
        check_attention_options(self.attention_type, self.clip_zeta, self.clip_gamma,
                                self.softplus_power, self.linear_feature_dim, self.gate_type)
        split = dict(zip("QKV", x, strict=True)) if isinstance(x, tuple) else None
        if split is not None:
            if self.gated:
                raise ValueError("gated attention reads its gate from the whole attention input; "
                                 "split q/k/v inputs (use_split_qkv_input) do not define it")
            x = split["Q"][:, :, 0]  # [batch, pos, d_model]: shapes only
        batch, n_pos, d_model = x.shape
        n_keys = n_pos if kv_cache is None else kv_cache["k"].shape[1]
        if kv_cache is not None and not self.causal:
            raise ValueError("a KV cache needs causal attention (causal=True): bidirectional "
                             "attention lets earlier positions see later ones")
        if key_mask is not None and key_mask.shape != (batch, n_keys):
            raise ValueError(f"key_mask shape {key_mask.shape} != [batch, key_pos] = "
                             f"{(batch, n_keys)} of the attention input (shape {x.shape})")
        h, dh = self.n_heads, self.d_head
        kvh = self.n_kv_heads or h
        init = nn.initializers.normal(self.init_range)
        zeros = nn.initializers.zeros
        pd = self.param_dtype

        def proj(name: str, n: int) -> jax.Array:
            w = param(self, f"W_{name}", init, (n, d_model, dh), ("heads", "embed", "kv"), pd)
            if split is None:
                out = jnp.einsum("bpm,nmd->bpnd", x, w.astype(self.dtype))  # contract d_model
            else:  # head n reads its own input
                out = jnp.einsum("bpnm,nmd->bpnd", split[name], w.astype(self.dtype))
            if self.use_bias:
                out = out + param(self, f"b_{name}", zeros, (n, dh), ("heads", "kv"), pd)
            return out.astype(self.dtype)

        q = hooks.site(self, "hook_q", proj("Q", h), HEAD_AXES)
        k = hooks.site(self, "hook_k", proj("K", kvh), HEAD_AXES)
        v = hooks.site(self, "hook_v", proj("V", kvh), HEAD_AXES)
        if self.qk_norm:
            q = RMSNorm(self.eps, self.dtype, pd, name="q_norm")(q, HEAD_AXES)
            k = RMSNorm(self.eps, self.dtype, pd, name="k_norm")(k, HEAD_AXES)
        if self.rotary_dim is not None:
            positions = jnp.arange(n_pos) if kv_cache is None else offset + jnp.arange(n_pos)
            q = hooks.site(
                self, "hook_rot_q", apply_rotary(q, positions, self.rotary_dim, self.rotary_base),
                HEAD_AXES)
            k = hooks.site(
                self, "hook_rot_k", apply_rotary(k, positions, self.rotary_dim, self.rotary_base),
                HEAD_AXES)
        if self.attention_type == "linear":
            df = self.linear_feature_dim or dh
            q = hooks.site(self, "hook_q_features",
                           HedgehogFeatureMap(df, pd, name="q_fmap")(q), FEATURE_AXES)
            k = hooks.site(self, "hook_k_features",
                           HedgehogFeatureMap(df, pd, name="k_fmap")(k), FEATURE_AXES)
        new_cache = None
        if kv_cache is not None:  # write the chunk at `offset`, attend over all L positions
            new_cache = {
                name: jax.lax.dynamic_update_slice_in_dim(
                    kv_cache[name], val.astype(kv_cache[name].dtype), offset, axis=1)
                for name, val in (("k", k), ("v", v))}
            k, v = new_cache["k"].astype(k.dtype), new_cache["v"].astype(v.dtype)
        if kvh != h:  # grouped-query attention: each KV head serves h // kvh query heads
            k = jnp.repeat(k, h // kvh, axis=2)
            v = jnp.repeat(v, h // kvh, axis=2)

        # mask: None (all visible), [query_pos, key_pos] (causal) or [batch, 1, query_pos, key_pos]
        if kv_cache is None:
            mask = jnp.tril(jnp.ones((n_pos, n_pos), bool)) if self.causal else None
        else:  # key j is visible from absolute query position offset + i when j <= offset + i
            mask = jnp.arange(n_keys)[None, :] <= (offset + jnp.arange(n_pos))[:, None]
        if key_mask is not None:
            keys = (key_mask != 0)[:, None, None, :]  # [batch, 1, 1, key_pos]
            mask = keys if mask is None else mask & keys
            mask = jnp.broadcast_to(mask, (batch, 1, n_pos, n_keys))
        if self.attention_type == "softmax":
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)  # contract d_head
            scores = scores / jnp.sqrt(jnp.float32(dh))
            if mask is not None:
                scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
            scores = hooks.site(self, "hook_attn_scores", scores, PATTERN_AXES)
            pattern = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        else:
            n_real = None if key_mask is None else (key_mask != 0).sum(-1)  # [batch]
            scores, pattern = self._variant_pattern(q, k, mask, n_keys, n_real)
        pattern = hooks.site(self, "hook_pattern", pattern, PATTERN_AXES)

        z = jnp.einsum("bhqk,bkhd->bqhd", pattern, v)  # contract key_pos
        if self.gated:
            logits = self._gate_logits(x, init)
            gate = jax.nn.sigmoid(logits.astype(jnp.float32)).astype(self.dtype)
            gate = hooks.site(self, "hook_gate", gate, GATE_AXES)
            z = (gate[..., None] * z).astype(self.dtype)
        z = hooks.site(self, "hook_z", z, HEAD_AXES)
        w_o = param(self, "W_O", init, (h, dh, d_model), ("heads", "kv", "embed"), pd)
        if split is None:
            out = jnp.einsum("bqhd,hdm->bqm", z, w_o.astype(self.dtype))  # contract head, d_head
        else:  # per-head outputs, then their sum
            result = jnp.einsum("bqhd,hdm->bqhm", z, w_o.astype(self.dtype))  # contract d_head
            out = hooks.site(self, "hook_result", result,
                             ("batch", "pos", "head", "d_model")).sum(axis=2)
        if self.use_bias:
            out = out + param(self, "b_O", zeros, (d_model,), ("embed",), pd)
        if new_cache is not None:
            return out.astype(self.dtype), new_cache
        return out.astype(self.dtype)

    def _gate_logits(self, x: jax.Array, init: nn.initializers.Initializer) -> jax.Array:
        """G(x) [batch, pos, head] of `gate_type` (module docstring); x: [batch, pos, d_model]."""
        h, pd, dt = self.n_heads, self.param_dtype, self.dtype
        zeros = nn.initializers.zeros
        if self.gate_type == "all_heads_linear":
            w_g = param(self, "W_G", init, (x.shape[-1], h), ("embed", "heads"), pd)
            logits = jnp.einsum("bpm,mh->bph", x, w_g.astype(dt))  # contract d_model
            return logits + param(self, "b_G", zeros, (h,), ("heads",), pd)
        if self.gate_type == "unconditional":
            b_g = param(self, "b_G", zeros, (h,), ("heads",), pd)
            return jnp.broadcast_to(b_g.astype(dt), (*x.shape[:2], h))
        if x.shape[-1] % h:
            raise ValueError(f"gate_type={self.gate_type!r} gives each head a slice of "
                             f"d_model={x.shape[-1]} features, which n_heads={h} must divide")
        xh = x.reshape((*x.shape[:2], h, x.shape[-1] // h))  # [batch, pos, head, s]
        s = xh.shape[-1]
        if self.gate_type == "linear":
            w_g = param(self, "W_G", init, (h, s), ("heads", None), pd)
            logits = jnp.einsum("bphs,hs->bph", xh, w_g.astype(dt))  # contract s
            return logits + param(self, "b_G", zeros, (h,), ("heads",), pd)
        n_hid = max(s // 4, 1)  # "mlp"
        w1 = param(self, "W_G1", init, (h, s, n_hid), ("heads", None, None), pd)
        hid = jnp.einsum("bphs,hsn->bphn", xh, w1.astype(dt))  # contract s
        hid = jax.nn.relu(hid + param(self, "b_G1", zeros, (h, n_hid), ("heads", None), pd))
        w2 = param(self, "W_G2", init, (h, n_hid), ("heads", None), pd)
        logits = jnp.einsum("bphn,hn->bph", hid, w2.astype(dt))  # contract n_hid
        return logits + param(self, "b_G2", zeros, (h,), ("heads",), pd)

    def _variant_pattern(self, q: jax.Array, k: jax.Array, mask: jax.Array | None,
                         n_pos: int, n_real: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """(hook_attn_scores, pattern) [batch, head, query_pos, key_pos] for the non-softmax
        attention types; q, k: [batch, pos, head, d] (features for "linear"); mask as in
        `__call__`; n_pos: the number of key positions (the sequence length); n_real: [batch]
        number of unpadded positions (None: no key mask)."""
        neg = jnp.finfo(jnp.float32).min
        keep = jnp.ones((q.shape[1], n_pos), bool) if mask is None else mask
        qf, kf = q.astype(jnp.float32), k.astype(jnp.float32)
        kind = self.attention_type
        if kind == "linear":
            scores = jnp.einsum("bqhf,bkhf->bhqk", qf, kf)  # contract features
            scores = hooks.site(self, "hook_attn_scores", jnp.where(keep, scores, 0.0),
                                PATTERN_AXES)
            pattern = scores / scores.sum(-1, keepdims=True)
            return scores, pattern.astype(self.dtype)
        if kind == "softplus":
            qn = qf / jnp.maximum(jnp.linalg.norm(qf, axis=-1, keepdims=True), 1e-12)
            kn = kf / jnp.maximum(jnp.linalg.norm(kf, axis=-1, keepdims=True), 1e-12)
            n_keys = keep.sum(-1, keepdims=True).astype(jnp.float32)  # [(batch, 1,) q, 1]: N_i
            scale = jnp.log(jnp.float32(self.d_head)) * jnp.log(n_keys)
            scores = scale * jnp.einsum("bqhd,bkhd->bhqk", qn, kn)  # contract d_head
            scores = hooks.site(self, "hook_attn_scores", jnp.where(keep, scores, neg),
                                PATTERN_AXES)
            a = jnp.where(keep, jax.nn.softplus(scores), 0.0)
            a = a / a.sum(-1, keepdims=True)
            if self.softplus_power:
                p = self.softplus_power
                offset = jnp.where(n_keys <= 3, 0.0, 1.0)
                x = jnp.where(keep, jax.nn.relu(n_keys * a - offset), 0.0)
                # R / (sum R + eps), R = x ** p, as t / (sum t + eps / m ** p) with t = (x / m)
                # ** p, m = max_j x: the same weights, but x ** p overflows float32 (x > 368 at
                # p = 15) where attention concentrates on one of >~ 370 keys. m cancels for
                # any constant m, so it is a constant to autodiff: the original gradients.
                m = jax.lax.stop_gradient(x.max(-1, keepdims=True))
                m = jnp.where(m > 0, m, 1.0)
                t = (x / m) ** p
                a = t / (t.sum(-1, keepdims=True) + _REWEIGHT_EPS / m ** p)
            return scores, a.astype(self.dtype)
        scores = jnp.einsum("bqhd,bkhd->bhqk", qf, kf) / jnp.sqrt(jnp.float32(self.d_head))
        if kind == "relu":  # relu(S_ij) / N_i
            scores = hooks.site(self, "hook_attn_scores", jnp.where(keep, scores, neg),
                                PATTERN_AXES)
            n_keys = jnp.maximum(keep.sum(-1, keepdims=True), 1).astype(jnp.float32)
            pattern = jnp.where(keep, jax.nn.relu(scores), 0.0) / n_keys
            return scores, pattern.astype(self.dtype)
        if kind == "sigmoid":  # b = -log(n)
            n = (jnp.float32(n_pos) if n_real is None
                 else n_real.astype(jnp.float32)[:, None, None, None])
            scores = scores - jnp.log(n)
        scores = hooks.site(self, "hook_attn_scores", jnp.where(keep, scores, neg), PATTERN_AXES)
        if kind == "sigmoid":
            pattern = jnp.where(keep, jax.nn.sigmoid(scores), 0.0)
        else:  # clipped_softmax
            p = jax.nn.softmax(scores, axis=-1)
            pattern = jnp.clip((self.clip_zeta - self.clip_gamma) * p + self.clip_gamma, 0.0, 1.0)
            pattern = jnp.where(keep, pattern, 0.0)
        return scores, pattern.astype(self.dtype)


def check_attention_options(attention_type: str, clip_zeta: float, clip_gamma: float,
                            softplus_power: float, linear_feature_dim: int | None,
                            gate_type: str) -> None:
    """Raises ValueError for an unknown attention or gate type or out-of-range variant
    settings."""
    if attention_type not in ATTENTION_TYPES:
        raise ValueError(f"attention_type={attention_type!r}; choose from {ATTENTION_TYPES}")
    if gate_type not in GATE_TYPES:
        raise ValueError(f"gate_type={gate_type!r}; choose from {GATE_TYPES}")
    if not (clip_gamma <= 0.0 and clip_zeta >= 1.0):
        raise ValueError(f"clipped softmax needs clip_gamma <= 0 <= 1 <= clip_zeta (it stretches "
                         f"softmax to [gamma, zeta] and clips to [0, 1]); got "
                         f"clip_gamma={clip_gamma}, clip_zeta={clip_zeta}")
    if not softplus_power >= 0:
        raise ValueError(f"softplus_power={softplus_power} must be >= 0 (0: no re-weighting)")
    if linear_feature_dim is not None and (not isinstance(linear_feature_dim, int)
                                           or linear_feature_dim <= 0):
        raise ValueError(f"linear_feature_dim={linear_feature_dim!r} must be a positive int "
                         "(or None for d_head)")
