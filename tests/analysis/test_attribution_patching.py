"""Attribution patching: exact where the metric is linear in the site, close to activation
patching (correlation) on a trained model, and the gradient against a hand-derived one."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxinterp as ji
from jaxinterp.analysis.attribution import attr_patch
from jaxinterp.analysis.patching import act_patch
from tests.helpers.tiny_models import assert_close, tiny, tokens_like

# No final norm: the logits, hence the metric, are linear in the last layer's resid_post and
# mlp_out; in an attention-only model also in its attn_out and z.
MODEL, VARIABLES, CLEAN = tiny(normalization_type=None, tie_embeddings=False,
                               unembed_bias=True)
CORRUPT = tokens_like(CLEAN, seed=11, d_vocab=MODEL.config.d_vocab)
ATTN_ONLY = tiny(normalization_type=None, attn_only=True)[:2]


def metric(logits):
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


@pytest.mark.parametrize("site,by,attn_only", [
    ("resid_post", "layer_pos", False), ("mlp_out", "layer_pos", False),
    ("attn_out", "layer_pos", True), ("z", "layer_head", True), ("z", "layer_pos_head", True)])
def test_exact_where_the_metric_is_linear_in_the_site(site, by, attn_only):
    model, variables = ATTN_ONLY if attn_only else (MODEL, VARIABLES)
    corrupted_metric = metric(model.apply(variables, CORRUPT))
    want = act_patch(model, variables, CLEAN, CORRUPT, metric, site, by, layers=[1])
    got = attr_patch(model, variables, CLEAN, CORRUPT, metric, site, by, layers=[1])
    assert got.shape == want.shape
    assert_close(got, want - corrupted_metric, rtol=1e-5)
    assert np.abs(np.asarray(want - corrupted_metric)).max() > 1e-2  # not all zero


def test_resid_post_by_hand():
    """d metric / d resid_post[b, -1] = (W_U[:, 3] - W_U[:, 5]) / batch, zero elsewhere."""
    name = "blocks.1.hook_resid_post"
    clean = np.asarray(ji.run(MODEL, VARIABLES, CLEAN, capture=[name])[1][name], np.float64)
    corr = np.asarray(ji.run(MODEL, VARIABLES, CORRUPT, capture=[name])[1][name], np.float64)
    w_u = np.asarray(VARIABLES["params"]["W_U"].unbox(), np.float64)
    grad = (w_u[:, 3] - w_u[:, 5]) / CLEAN.shape[0]
    want = np.zeros(CLEAN.shape[1])
    want[-1] = ((clean - corr)[:, -1] @ grad).sum()
    got = attr_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, "resid_post", "layer_pos",
                     layers=[1])
    assert_close(got[0], want, rtol=1e-5)


def test_shapes_and_nonlinear_sites():
    """Layer 0 is not linear: the estimate differs from the exact patch (the exact test above
    can fail), but shapes follow act_patch, also for patterns and several layers."""
    got = attr_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, "pattern", "layer_pos_head")
    assert got.shape == (2, CLEAN.shape[1], MODEL.config.n_heads)
    exact = act_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, "resid_pre", "layer_pos",
                      layers=[1]) - metric(MODEL.apply(VARIABLES, CORRUPT))
    approx = attr_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, "resid_pre", "layer_pos",
                        layers=[1])
    assert np.abs(np.asarray(exact - approx)).max() > 1e-3


def test_scanned_model_gives_the_same_numbers():
    cfg = {**dataclasses.asdict(MODEL.config), "scan_layers": True}
    scanned = ji.models.build("gpt2_small", **cfg), ji.models.stack_layers(VARIABLES)
    for site, by in [("resid_pre", "layer_pos"), ("k", "layer_pos_head")]:
        np.testing.assert_allclose(
            attr_patch(*scanned, CLEAN, CORRUPT, metric, site, by),
            attr_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, site, by), rtol=1e-4,
            atol=1e-4)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="not valid for site 'attn_out'"):
        attr_patch(MODEL, VARIABLES, CLEAN, CORRUPT, metric, "attn_out", "layer_pos_head")
    with pytest.raises(ValueError, match="metric must return a scalar"):
        attr_patch(MODEL, VARIABLES, CLEAN, CORRUPT, lambda x: x[:, -1, 3], "z", "layer_head")


V, N = 16, 6


def _train_copy_first_token(steps: int = 200):
    """A 2-layer model trained to predict, at the last position, the first token."""
    model = ji.models.build("gpt2_small", n_layers=2, d_model=32, n_heads=4, d_head=8,
                            d_mlp=64, d_vocab=V, n_ctx=N)
    tokens = lambda key, b=128: jax.random.randint(key, (b, N), 0, V)
    params = model.init(jax.random.key(0), tokens(jax.random.key(1)))
    opt = optax.adam(1e-2)

    def loss(p, x):
        logp = jax.nn.log_softmax(model.apply(p, x)[:, -1])
        return -jnp.take_along_axis(logp, x[:, :1], -1).mean()

    @jax.jit
    def step(p, state, key):
        value, grads = jax.value_and_grad(loss)(p, tokens(key))
        updates, state = opt.update(grads, state, p)
        return optax.apply_updates(p, updates), state, value

    state = opt.init(params)
    for i in range(steps):
        params, state, value = step(params, state, jax.random.key(100 + i))
    return model, params, float(value)


@pytest.mark.slow
def test_correlates_with_activation_patching_on_a_trained_model():
    model, params, final_loss = _train_copy_first_token()
    assert final_loss < 0.1
    clean = jax.random.randint(jax.random.key(7), (16, N), 0, V)
    shift = jax.random.randint(jax.random.key(8), (16,), 1, V)
    corrupt = clean.at[:, 0].set((clean[:, 0] + shift) % V)  # a different first token

    def logit_diff(logits):
        last = logits[:, -1]
        return (jnp.take_along_axis(last, clean[:, :1], -1)
                - jnp.take_along_axis(last, corrupt[:, :1], -1)).mean()

    base = logit_diff(model.apply(params, corrupt))
    for site, by in [("resid_pre", "layer_pos"), ("attn_out", "layer_pos"),
                     ("z", "layer_pos_head")]:
        exact = np.asarray(act_patch(model, params, clean, corrupt, logit_diff, site, by) - base)
        approx = np.asarray(attr_patch(model, params, clean, corrupt, logit_diff, site, by))
        r = np.corrcoef(exact.ravel(), approx.ravel())[0, 1]
        assert r > 0.9, (site, by, r)
