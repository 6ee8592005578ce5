"""`IclTransformer`: the interleaved (exemplar, label) tokens are embedded as stated, its blocks
are the transformer's (same parameters, same sites), attention is causal over the items, the
query position is read out, and bad inputs are clear errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.models.icl_classification import IclTransformer, interleave, item_positions
from jaxinterp.models.transformer import Transformer, TransformerConfig

CFG = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_vocab=6, n_ctx=9,
                        attn_only=True)


def _inputs(seed=0, b=3, n=4, d=5):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.standard_normal((b, n, d)), jnp.float32),
            jnp.asarray(rng.integers(0, CFG.d_vocab, (b, n)), jnp.int32),
            jnp.asarray(rng.standard_normal((b, d)), jnp.float32))


def test_tokens_blocks_and_readout():
    ex, lab, q = _inputs()
    model = IclTransformer(CFG, d_input=5, d_readout_mlp=12)
    variables = model.init(jax.random.PRNGKey(0), ex, lab, q)
    p = nn.meta.unbox(variables["params"])
    # The blocks are the transformer's own (same parameter tree).
    lm = nn.meta.unbox(Transformer(CFG).init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, 9), jnp.int32))["params"])
    assert (jax.tree.map(jnp.shape, p["blocks_0"]) == jax.tree.map(jnp.shape, lm["blocks_0"]))
    logits, cache = ji.run(model, variables, ex, lab, q,
                           capture=("hook_embed", "blocks.*.attn.hook_pattern",
                                    "ln_final.hook_normalized", "readout.hook_post"))
    assert logits.shape == (3, 6) and logits.dtype == jnp.float32
    assert cache["blocks.1.attn.hook_pattern"].shape == (3, 2, 9, 9)
    assert cache["readout.hook_post"].shape == (3, 12)
    pos = item_positions(4)
    w_x, w_e = np.asarray(p["W_X"]), np.asarray(p["embed"]["W_E"])
    emb = np.asarray(cache["hook_embed"])
    np.testing.assert_allclose(emb[:, pos["exemplar"]], np.asarray(ex) @ w_x, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(emb[:, pos["label"]], w_e[np.asarray(lab)], rtol=1e-6)
    np.testing.assert_allclose(emb[:, int(pos["query"])], np.asarray(q) @ w_x, rtol=1e-5,
                               atol=1e-6)
    # The read-out is the query's final residual (+ the readout MLP), unembedded.
    h = cache["ln_final.hook_normalized"][:, -1]
    mlp_out = cache["readout.hook_post"] @ p["readout"]["W_out"] + p["readout"]["b_out"]
    want = (h + mlp_out) @ p["W_U"] + p["b_U"]
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)


def test_causal_over_items_and_query_read_out():
    ex, lab, q = _inputs()
    model = IclTransformer(CFG, d_input=5)
    variables = model.init(jax.random.PRNGKey(1), ex, lab, q)
    site = "blocks.1.hook_resid_post"
    _, a = ji.run(model, variables, ex, lab, q, capture=site)
    _, b = ji.run(model, variables, ex, lab.at[:, 2].set((lab[:, 2] + 1) % 6), q, capture=site)
    # Changing label 2 (position 5) leaves positions 0..4 unchanged and changes the later ones.
    np.testing.assert_allclose(a[site][:, :5], b[site][:, :5], rtol=1e-6)
    assert not np.allclose(a[site][:, 5:], b[site][:, 5:])
    # A uniform clamp of the last layer's pattern is accepted as an intervention at the site.
    uniform = jnp.tril(jnp.ones((9, 9))) / jnp.arange(1, 10)[:, None]
    out, _ = ji.run(model, variables, ex, lab, q,
                    interventions=[ji.Clamp("blocks.1.attn.hook_pattern", uniform)])
    assert out.shape == (3, 6)


def test_interleave_order():
    x = jnp.arange(4.0).reshape(1, 2, 2)
    lab = 10 + jnp.arange(4.0).reshape(1, 2, 2)
    q = jnp.asarray([[20.0, 21.0]])
    np.testing.assert_array_equal(interleave(x, lab, q)[0],
                                  [[0, 1], [10, 11], [2, 3], [12, 13], [20, 21]])


def test_bad_inputs_are_clear_errors():
    ex, lab, q = _inputs()
    model = IclTransformer(CFG, d_input=5)
    with pytest.raises(ValueError, match="d=5"):
        model.init(jax.random.PRNGKey(0), ex[..., :4], lab, q[:, :4])
    with pytest.raises(ValueError, match="labels"):
        model.init(jax.random.PRNGKey(0), ex, lab[:, :3], q)
    with pytest.raises(ValueError, match="outside"):
        model.init(jax.random.PRNGKey(0), ex, lab + 6, q)
    ex5, lab5, q5 = _inputs(n=5)
    with pytest.raises(ValueError, match="n_ctx=9"):
        model.init(jax.random.PRNGKey(0), ex5, lab5, q5)
