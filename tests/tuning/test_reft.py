"""LoReFT and the orthonormal-rows map against NumPy transcriptions of their equations, on a
tiny transformer; LoReFT trains through `jaxinterp.train.train` with the base untouched."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp import tuning
from jaxinterp.tuning.orthogonal import orthonormal_rows
from jaxinterp.tuning.reft import loreft_edit
from tests.helpers.numpy_linalg import gram_schmidt

SITE = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def base():
    model = ji.models.build("gpt2_small", n_layers=1, d_model=16, n_heads=2, d_head=8,
                            d_mlp=32, d_vocab=11, n_ctx=5)
    tokens = np.random.default_rng(0).integers(0, 11, (3, 5)).astype(np.int32)
    variables = model.init(jax.random.key(1), tokens)
    variables = {"params": nn.meta.unbox(variables["params"])}
    return model, variables, tokens



def test_orthonormal_rows_is_gram_schmidt():
    a = np.random.default_rng(0).normal(size=(3, 7))
    r = np.asarray(orthonormal_rows(jnp.asarray(a)))
    np.testing.assert_allclose(r, gram_schmidt(a), atol=1e-5)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-5)
    q = np.linalg.qr(np.random.default_rng(1).normal(size=(5, 5)))[0]  # orthonormal rows
    np.testing.assert_allclose(np.asarray(orthonormal_rows(jnp.asarray(q))), q, atol=1e-5)
    with pytest.raises(ValueError, match="r <= d"):
        orthonormal_rows(jnp.ones((4, 3)))


def test_loreft_matches_numpy(base):
    model, variables, tokens = base
    method = tuning.LoReFT(site=SITE, rank=3, positions=(0, -1))
    tuned = tuning.Tuned(model, method)
    v = tuning.with_frozen(tuned.init(jax.random.key(2), tokens), variables)
    rng = np.random.default_rng(3)
    params = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), v["params"])
    v = {**v, "params": params}
    out = tuned.apply(v, tokens)

    # Independent: capture the site, apply Phi(h) = h + R^T (W h + b - R h) in NumPy at
    # positions 0 and 4, and run the rest of the model on the edited site.
    _, cache = ji.run(model, variables, tokens, capture=SITE)
    h = np.asarray(cache[SITE], np.float64)  # [batch, pos, d]
    p = params["method"]
    r = gram_schmidt(p["rotation"])
    w, b = np.asarray(p["weight"], np.float64), np.asarray(p["bias"], np.float64)
    edited = h.copy()
    for t in (0, 4):
        x = h[:, t]
        edited[:, t] = x + (x @ w.T + b - x @ r.T) @ r
    want, _ = ji.run(model, variables, tokens,
                     interventions=[ji.Patch(SITE, jnp.asarray(edited, jnp.float32))])
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), atol=2e-4, rtol=2e-4)
    # The edit itself, on its own: R h of the result is W h + b (the subspace is replaced).
    got = np.asarray(loreft_edit(jnp.asarray(h, jnp.float32),
                                 {"rotation": jnp.asarray(r, jnp.float32),
                                  "weight": jnp.asarray(w, jnp.float32),
                                  "bias": jnp.asarray(b, jnp.float32)}))
    np.testing.assert_allclose(got @ r.T, h @ w.T + b, atol=1e-4)


def test_loreft_registered():
    method = tuning.make_method({"name": "loreft", "site": SITE, "rank": 2, "positions": [0]})
    assert isinstance(method, tuning.LoReFT) and method.positions == (0,)
