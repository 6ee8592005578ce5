"""`jaxinterp.sae.heads` against float64 NumPy: weight-based head attribution, and the
source-position split of a hook_z SAE's pre-activations on a real model's activations."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.sae import SAE, SAEConfig
from jaxinterp.sae.heads import head_attribution, source_attribution

N_HEADS, D_HEAD, D_SAE = 4, 8, 48


def test_head_attribution_matches_numpy():
    w = np.random.default_rng(0).normal(size=(D_SAE, N_HEADS * D_HEAD))
    w[3, D_HEAD:] = 0.0  # a feature that lives in head 0 only
    w[5] = 0.0  # a dead row: uniform shares
    norms = np.linalg.norm(w.reshape(D_SAE, N_HEADS, D_HEAD), axis=-1)
    want = norms / np.maximum(norms.sum(-1, keepdims=True), 1e-300)
    want[5] = 1.0 / N_HEADS
    got = np.asarray(head_attribution(jnp.asarray(w, jnp.float32), N_HEADS))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[3], [1, 0, 0, 0], atol=1e-6)
    with pytest.raises(ValueError, match="n_heads=5"):
        head_attribution(jnp.asarray(w), 5)


def test_source_terms_sum_to_the_pre_activation():
    model = ji.models.build("attn_only_2l", d_model=32, n_heads=N_HEADS, d_head=D_HEAD,
                            d_vocab=16, n_ctx=9)
    tokens = jax.random.randint(jax.random.key(1), (3, 9), 0, 16)
    variables = model.init(jax.random.key(0), tokens)
    sites = [f"blocks.1.attn.{s}" for s in ("hook_z", "hook_pattern", "hook_v")]
    _, cache = ji.run(model, variables, tokens, capture=sites)
    z, pattern, v = (np.asarray(cache[s], np.float64) for s in sites)
    config = SAEConfig("relu", d_in=N_HEADS * D_HEAD, d_sae=D_SAE)
    params = SAE(config).init(jax.random.key(2), jnp.zeros((1, config.d_in)))["params"]
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(3), p.shape),
                          flax.linen.meta.unbox(params))  # nonzero biases
    w_enc, b_enc, b_dec = (np.asarray(params[k], np.float64) for k in ("W_enc", "b_enc", "b_dec"))

    # independent: per (q, k, h) term in float64, by loops over heads
    terms = np.zeros((3, 9, 9, D_SAE))
    for h in range(N_HEADS):
        proj = v[:, :, h] @ w_enc[h * D_HEAD:(h + 1) * D_HEAD]  # [b, k, f]
        terms += pattern[:, h, :, :, None] * proj[:, None]
    got = np.asarray(source_attribution(cache[sites[1]], cache[sites[2]], params["W_enc"]))
    np.testing.assert_allclose(got, terms, rtol=1e-4, atol=1e-5)

    pre = z.reshape(3, 9, -1) @ w_enc - b_dec @ w_enc + b_enc  # the SAE's pre-activation
    np.testing.assert_allclose(got.sum(2) + b_enc - b_dec @ w_enc, pre, rtol=1e-4, atol=1e-4)
    out = SAE(config).apply({"params": params}, cache[sites[0]].reshape(3, 9, -1))
    np.testing.assert_allclose(np.asarray(out.pre), pre, rtol=1e-4, atol=1e-4)

    cats = np.stack([np.eye(9)[None, :, :].repeat(3, 0), 1 - np.eye(9)[None].repeat(3, 0)], -1)
    by_cat = np.asarray(source_attribution(cache[sites[1]], cache[sites[2]], params["W_enc"],
                                           jnp.asarray(cats)))
    np.testing.assert_allclose(by_cat[:, :, 0], np.einsum("bqqf->bqf", terms), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(by_cat.sum(2), terms.sum(2), rtol=1e-4, atol=1e-4)
