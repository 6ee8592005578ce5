"""Models for in-context linear regression on float tokens (the `icl_regression` data).

`LinearSelfAttention`: one layer of linear self-attention with merged key-query and
projection-value matrices, the model of Mahankali et al. 2023 ("One Step of Gradient Descent is
Provably the Optimal In-Context Learner with One Layer of Linear Self-Attention") and von
Oswald et al. 2023. Tokens `z_i = (x_i, y_i)` for the `n` context points and `z_q = (x_q, 0)`
for the query; the prediction is the last coordinate of the query's output

    yhat = e_{d+1}^T W_PV (1/n sum_{i<=n} z_i z_i^T) W_KQ z_q              (no softmax)

With `W_KQ = [[G, 0], [0, 0]]` and `e^T W_PV = (0, 1)` this is `x_q^T G (1/n) X^T y`: one step
of (preconditioned, by `G`) gradient descent from `w = 0` on the context's squared loss.

`RegressionTransformer`: a small causal softmax transformer on the interleaved sequence
`(x_1, 0), (0, y_1), (x_2, 0), (0, y_2), ...` predicting `y_i` at each x-token (Garg et al.
2022; Raventós et al. 2023), for the task-diversity sweep, where a single linear layer cannot
represent the memorising (dMMSE) predictor.

Neither is a registry preset: both take float `xs [batch, n, d]` and `ys [batch, n]`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class LinearSelfAttention(nn.Module):
    """(xs [batch, n + 1, d], ys [batch, n + 1]) -> yhat [batch] for the last (query) point;
    the query's y is ignored. Parameters `w_kq`, `w_pv` [d + 1, d + 1] (normal, `init_std`).

    `sparse=True`: the restricted form of Ahn et al. 2023 ("Transformers learn to implement
    preconditioned gradient descent"), values read only y and keys/queries only x:
    `yhat = v * (1/n X^T y)^T W x_q` with `w_kq` [d, d] and a scalar `v` (init 1).
    """

    init_std: float = 0.02
    sparse: bool = False

    @nn.compact
    def __call__(self, xs: jax.Array, ys: jax.Array) -> jax.Array:
        if xs.ndim != 3 or ys.shape != xs.shape[:2]:
            raise ValueError(f"LinearSelfAttention: want xs [batch, n+1, d] and ys [batch, n+1],"
                             f" got {xs.shape} and {ys.shape}")
        d1 = xs.shape[-1] + 1
        init = nn.initializers.normal(self.init_std)
        if self.sparse:
            w = self.param("w_kq", init, (d1 - 1, d1 - 1))
            v = self.param("v", nn.initializers.ones, ())
            h = jnp.einsum("bid,bi->bd", xs[:, :-1], ys[:, :-1]) / (xs.shape[1] - 1)
            return v * jnp.einsum("bd,de,be->b", h, w, xs[:, -1])  # contract d twice
        w_kq = self.param("w_kq", init, (d1, d1))
        w_pv = self.param("w_pv", init, (d1, d1))
        z = jnp.concatenate([xs, ys[..., None]], axis=-1)  # [batch, n+1, d+1]
        ctx, zq = z[:, :-1], z[:, -1].at[:, -1].set(0.0)
        gram = jnp.einsum("bie,bif->bef", ctx, ctx) / ctx.shape[1]  # contract context points
        return jnp.einsum("e,bef,fg,bg->b", w_pv[-1], gram, w_kq, zq)


def interleave(xs: jax.Array, ys: jax.Array) -> jax.Array:
    """xs [batch, n, d], ys [batch, n] -> tokens [batch, 2n, d + 1]: (x_i, 0) then (0, y_i)."""
    b, n, d = xs.shape
    xt = jnp.concatenate([xs, jnp.zeros((b, n, 1), xs.dtype)], axis=-1)
    yt = jnp.concatenate([jnp.zeros((b, n, d), xs.dtype), ys[..., None]], axis=-1)
    return jnp.stack([xt, yt], axis=2).reshape(b, 2 * n, d + 1)


class RegressionTransformer(nn.Module):
    """(xs [batch, n, d], ys [batch, n]) -> yhat [batch, n]: the prediction of `y_i` from
    `x_1..x_i, y_1..y_{i-1}` (causal, pre-LayerNorm, learned positions, GELU MLP)."""

    n_layers: int = 2
    d_model: int = 32
    n_heads: int = 2
    d_mlp: int = 64
    max_points: int = 64

    @nn.compact
    def __call__(self, xs: jax.Array, ys: jax.Array) -> jax.Array:
        if xs.shape[1] > self.max_points:
            raise ValueError(f"RegressionTransformer: {xs.shape[1]} points > max_points "
                             f"{self.max_points}")
        tokens = interleave(xs, ys)
        pos = self.param("pos_embed", nn.initializers.normal(0.02),
                         (2 * self.max_points, self.d_model))
        h = nn.Dense(self.d_model, name="embed")(tokens) + pos[: tokens.shape[1]]
        mask = nn.make_causal_mask(jnp.ones(tokens.shape[:2]))
        for i in range(self.n_layers):
            a = nn.LayerNorm(name=f"ln1_{i}")(h)
            h = h + nn.MultiHeadDotProductAttention(num_heads=self.n_heads,
                                                    name=f"attn_{i}")(a, a, mask=mask)
            m = nn.LayerNorm(name=f"ln2_{i}")(h)
            m = nn.Dense(self.d_model, name=f"mlp_out_{i}")(
                nn.gelu(nn.Dense(self.d_mlp, name=f"mlp_in_{i}")(m)))
            h = h + m
        h = nn.LayerNorm(name="ln_final")(h)
        return nn.Dense(1, name="readout")(h[:, 0::2])[..., 0]  # read at the x-tokens
