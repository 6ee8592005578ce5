"""`heads.key_attention` against a loop over queries, and its link to `attention_sink_score`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.analysis import heads


def _causal_pattern(key, batch=3, n_heads=2, n=6):
    scores = jax.random.normal(key, (batch, n_heads, n, n))
    scores = jnp.where(jnp.tril(jnp.ones((n, n), bool)), scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=-1)


def test_key_attention_by_loop():
    pattern = np.asarray(_causal_pattern(jax.random.key(0)))
    b, h, n, _ = pattern.shape
    want = np.zeros((b, h, n))
    for k in range(n - 1):  # the last key has no later query: 0
        want[:, :, k] = np.mean([pattern[:, :, q, k] for q in range(k + 1, n)], axis=0)
    np.testing.assert_allclose(heads.key_attention(pattern), want, rtol=1e-6, atol=1e-7)


def test_key_attention_of_key_zero_is_the_sink_score():
    pattern = _causal_pattern(jax.random.key(1))
    np.testing.assert_allclose(heads.key_attention(pattern)[..., 0].mean(0),
                               heads.attention_sink_score(pattern), rtol=1e-6)


def test_key_attention_of_a_perfect_sink_and_jit():
    n = 5
    sink = jnp.zeros((1, 1, n, n)).at[..., 0].set(1.0)  # every query on key 0
    np.testing.assert_allclose(jax.jit(heads.key_attention)(sink)[0, 0], [1, 0, 0, 0, 0])


def test_key_attention_rejects_a_bad_shape():
    with pytest.raises(ValueError, match="query_pos == key_pos"):
        heads.key_attention(jnp.zeros((1, 1, 3, 4)))
