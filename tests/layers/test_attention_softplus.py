"""`attention_type="softplus"` (LSSA / LSSAR) against a NumPy transcription of Gao & Spratling
2025's equations in their matrix form, and the re-weighting's float32 range at long lengths.

The paper (arXiv:2501.13428, "Softplus Attention with Re-weighting Boosts Length Extrapolation
in Large Language Models"), for causal attention over L positions with a head width d:
  Q_i <- Q_i / ||Q_i||_2, K_j <- K_j / ||K_j||_2              (rows; after rotary here)
  A = Softplus((log d * log N) ⊙ Q K^T) ⊙ M'                 N [L, L]: N_ij = i (1-based row:
                                                              the keys row i sees); M' the
                                                              0/1 lower-triangular mask
  A_i <- A_i / ||A_i||_1                                      (LSSA)
  A <- ReLU(A ⊙ N - O) ** p,  A_i <- A_i / ||A_i||_1          (LSSAR; O all ones except its
                                                              first 3 rows, which are 0)
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.layers.attention import Attention
from tests.helpers.tiny_models import tiny


def paper_lssar(q: np.ndarray, k: np.ndarray, p: float, eps: float = 1e-8) -> np.ndarray:
    """Attention weights [b, h, L, L] from rotated q, k [b, L, h, d] (float64), the paper's
    equations written with its matrices N, O and M'."""
    length, d = q.shape[1], q.shape[-1]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    n_mat = np.broadcast_to(np.arange(1, length + 1, dtype=np.float64)[:, None], (length, length))
    m_mat = np.tril(np.ones((length, length)))
    o_mat = np.ones((length, length))
    o_mat[:3] = 0.0
    qk = np.einsum("bqhd,bkhd->bhqk", q, k)
    a = np.logaddexp(0.0, math.log(d) * np.log(n_mat) * qk) * m_mat
    a = a / np.abs(a).sum(-1, keepdims=True)
    if p:
        a = np.maximum(a * n_mat - o_mat, 0.0) ** p * m_mat
        a = a / (np.abs(a).sum(-1, keepdims=True) + eps)
    return a


@pytest.mark.parametrize("power", [0.0, 3.0, 15.0])
def test_pattern_is_the_papers_equation(power):
    model, variables, _ = tiny(n_layers=1, attention_type="softplus", softplus_power=power,
                               positional_embedding_type="rotary", n_ctx=24)
    tokens = jax.random.randint(jax.random.key(3), (2, 24), 0, model.config.d_vocab)
    _, cache = ji.run(model, variables, tokens, capture="blocks.0.attn.hook_*")
    q = np.asarray(cache["blocks.0.attn.hook_rot_q"], np.float64)
    k = np.asarray(cache["blocks.0.attn.hook_rot_k"], np.float64)
    want = paper_lssar(q, k, power)
    got = np.asarray(cache["blocks.0.attn.hook_pattern"], np.float64)
    # p = 15 raises float32 rounding of N A (~1e-7 relative) by 15.
    np.testing.assert_allclose(got, want, rtol=3e-4 if power else 2e-5, atol=1e-6)
    if power:  # the test exercises the re-weighting: weights below uniform are cut to zero
        visible = np.broadcast_to(np.tril(np.ones((24, 24), bool)), got.shape)
        assert (got[..., 3:, :][visible[..., 3:, :]] == 0).mean() > 0.3


def test_reweighting_stays_finite_when_attention_concentrates_on_many_keys():
    """One key of 512 matches the last query and the rest are anti-aligned: N A - 1 ~ 511 and
    511 ** 15 ~ 4e40 overflows float32; the weights must still be the paper's (one-hot)."""
    length, d = 512, 4
    eye = np.eye(d, dtype=np.float32)
    x = np.zeros((1, length, d), np.float32)
    x[0, 0, 0] = 1.0  # key 0: +e1
    x[0, 1:-1, 1] = 1.0  # keys 1 .. L-2: -e1
    x[0, -1, 2] = 1.0  # the last query: +e1, its own key: -e1
    w_q = eye[:, [2, 1, 0, 3]]  # e3 -> e1
    w_k = np.stack([eye[0], -eye[0], -eye[0], eye[3]])  # e1 -> e1, e2, e3 -> -e1
    params = {"W_Q": w_q[None], "W_K": w_k[None], "W_V": eye[None], "W_O": eye[None]}
    attn = Attention(n_heads=1, d_head=d, use_bias=False, attention_type="softplus")
    variables = {"params": jax.tree.map(jnp.asarray, params)}
    out, cache = ji.run(attn, variables, jnp.asarray(x), capture="hook_*")
    pattern = np.asarray(cache["hook_pattern"], np.float64)
    assert np.isfinite(np.asarray(out)).all() and np.isfinite(pattern).all()
    q = x @ w_q.astype(np.float64)
    k = x @ w_k.astype(np.float64)
    want = paper_lssar(q[:, :, None], k[:, :, None], 15.0)
    np.testing.assert_allclose(pattern, want, rtol=3e-4, atol=1e-6)
    assert pattern[0, 0, -1, 0] > 0.999


def test_reweighting_gradients_are_the_direct_formulas():
    """The rescaled evaluation of R / (sum R + eps) has the gradients of the direct one
    (written here in jnp from q, k, v; short rows, where the direct one stays finite)."""
    length, d = 12, 8
    keys = jax.random.split(jax.random.key(5), 5)
    w = {f"W_{n}": 0.5 * jax.random.normal(k, (1, d, d))
         for n, k in zip("QKVO", keys[:4], strict=True)}
    x = jax.random.normal(keys[4], (2, length, d))
    attn = Attention(n_heads=1, d_head=d, use_bias=False, attention_type="softplus")
    probe = jax.random.normal(jax.random.key(6), (2, length, d))

    def direct(x):
        q = jnp.einsum("bpm,nmd->bpnd", x, w["W_Q"])
        k = jnp.einsum("bpm,nmd->bpnd", x, w["W_K"])
        v = jnp.einsum("bpm,nmd->bpnd", x, w["W_V"])
        q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
        k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
        keep = jnp.tril(jnp.ones((length, length), bool))
        n = jnp.arange(1, length + 1, dtype=jnp.float32)[:, None]
        a = jnp.where(keep, jax.nn.softplus(
            math.log(d) * jnp.log(n) * jnp.einsum("bqhd,bkhd->bhqk", q, k)), 0.0)
        a = a / a.sum(-1, keepdims=True)
        r = jnp.where(keep, jax.nn.relu(n * a - jnp.where(n <= 3, 0.0, 1.0)) ** 15, 0.0)
        a = r / (r.sum(-1, keepdims=True) + 1e-8)
        z = jnp.einsum("bhqk,bkhd->bqhd", a, v)
        return (jnp.einsum("bqhd,hdm->bqm", z, w["W_O"]) * probe).sum()

    def module(x):
        return (attn.apply({"params": w}, x) * probe).sum()

    np.testing.assert_allclose(module(x), direct(x), rtol=1e-4)
    np.testing.assert_allclose(jax.grad(module)(x), jax.grad(direct)(x), rtol=2e-3, atol=1e-5)
