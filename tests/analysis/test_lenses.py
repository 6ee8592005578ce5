"""Logit lens and tuned lens against the model's own logits and a NumPy computation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxinterp as ji
from jaxinterp.analysis import lenses
from jaxinterp.models.transformer import read_out, unrolled_params
from tests.helpers import numpy_transformer
from tests.helpers.tiny_models import assert_close, tiny

MODEL, VARIABLES, TOKENS = tiny()
CFG = MODEL.config
N_POS = TOKENS.shape[1]


def scanned():
    """The test model with the same weights stacked for nn.scan (initialising a scanned model
    eagerly is slow)."""
    model = ji.models.build("gpt2_small", **{**dataclasses.asdict(CFG), "scan_layers": True})
    return model, ji.models.stack_layers(VARIABLES), TOKENS


def _np_unembed(params, resid):
    """Final LayerNorm and (tied) unembedding in float64, from the equations."""
    ln = params["ln_final"]
    x = resid - resid.mean(-1, keepdims=True)
    x = x / np.sqrt((x**2).mean(-1, keepdims=True) + CFG.eps) * ln["w"] + ln["b"]
    return x @ params["embed"]["W_E"].T


def _params64():
    return jax.tree.map(lambda x: np.asarray(x, np.float64),
                        unrolled_params(VARIABLES))


def test_last_layer_is_the_model_logits():
    np.testing.assert_array_equal(lenses.logit_lens(MODEL, VARIABLES, TOKENS)[-1],
                                  MODEL.apply(VARIABLES, TOKENS))


@pytest.mark.parametrize("scan", [False, True])
def test_last_layer_is_the_model_logits_under_jit(scan):
    model, variables, tokens = scanned() if scan else (MODEL, VARIABLES, TOKENS)
    jitted = jax.jit(lambda v, t: lenses.logit_lens(model, v, t))(variables, tokens)
    jit_apply = jax.jit(model.apply)(variables, tokens)
    np.testing.assert_allclose(jitted[-1], jit_apply, rtol=1e-6, atol=1e-6)


def test_middle_layer_matches_numpy():
    _, acts = numpy_transformer.forward(CFG, VARIABLES, TOKENS)
    want = _np_unembed(_params64(), acts["blocks.0.hook_resid_post"])
    got = lenses.logit_lens(MODEL, VARIABLES, TOKENS, layers=[1])[0]
    assert_close(got, want, rtol=1e-5)
    want0 = _np_unembed(_params64(), acts["blocks.0.hook_resid_pre"])
    assert_close(lenses.logit_lens(MODEL, VARIABLES, TOKENS, layers=0)[0], want0, rtol=1e-5)


def test_targets_and_top_k_are_reductions_of_the_full_lens():
    full = jax.nn.log_softmax(lenses.logit_lens(MODEL, VARIABLES, TOKENS), axis=-1)
    targets = jnp.roll(TOKENS, -1, axis=1)
    got = lenses.logit_lens(MODEL, VARIABLES, TOKENS, targets=targets)
    want = np.take_along_axis(np.asarray(full), np.asarray(targets)[None, ..., None], -1)[..., 0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    vals, ids = lenses.logit_lens(MODEL, VARIABLES, TOKENS, top_k=3, layers=[0, 2])
    order = np.argsort(-np.asarray(full)[[0, 2]], axis=-1)[..., :3]
    np.testing.assert_array_equal(ids, order)
    np.testing.assert_allclose(vals, np.take_along_axis(np.asarray(full)[[0, 2]], order, -1),
                               rtol=1e-6, atol=1e-6)


def test_tuned_lens_application_matches_hand_computation():
    lens = lenses.init_tuned_lens(MODEL)
    k1, k2 = jax.random.split(jax.random.key(3))
    lens = lenses.TunedLens(weight=0.1 * jax.random.normal(k1, lens.weight.shape),
                            bias=0.3 * jax.random.normal(k2, lens.bias.shape))
    _, acts = numpy_transformer.forward(CFG, VARIABLES, TOKENS)
    h = acts["blocks.0.hook_resid_post"]  # residual stream 1
    w, b = np.asarray(lens.weight[1], np.float64), np.asarray(lens.bias[1], np.float64)
    want = _np_unembed(_params64(), h + h @ w + b)
    got = lenses.tuned_lens(MODEL, VARIABLES, lens, TOKENS, layers=1)[0]
    assert_close(got, want, rtol=1e-5)
    # the last stream has no translator: the model's logits
    np.testing.assert_array_equal(lenses.tuned_lens(MODEL, VARIABLES, lens, TOKENS)[-1],
                                  MODEL.apply(VARIABLES, TOKENS))


@pytest.mark.slow
def test_training_reduces_kl_below_the_logit_lens(tmp_path):
    def batches(seed, n):
        for i in range(n):
            yield jax.random.randint(jax.random.key(seed + i), (8, 10), 0, CFG.d_vocab)

    held_out = next(batches(1000, 1))
    before = lenses.lens_kl(MODEL, VARIABLES, held_out)
    assert before[-1] < 1e-5 and (before[:-1] > 0.1).all()
    lens, losses = lenses.train_tuned_lens(MODEL, VARIABLES, batches(0, 150),
                                           optimizer=optax.adam(1e-2))
    assert losses.shape == (150,) and losses[-10:].mean() < losses[0]
    after = lenses.lens_kl(MODEL, VARIABLES, held_out, lens)
    assert (after[:-1] < 0.7 * before[:-1]).all(), (before, after)

    lenses.save_tuned_lens(lens, tmp_path / "lens")
    loaded = lenses.load_tuned_lens(tmp_path / "lens", MODEL)
    np.testing.assert_array_equal(loaded.weight, lens.weight)
    np.testing.assert_array_equal(loaded.bias, lens.bias)
    np.testing.assert_array_equal(lenses.lens_kl(MODEL, VARIABLES, held_out, loaded), after)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown layer 3"):
        lenses.logit_lens(MODEL, VARIABLES, TOKENS, layers=[3])
    with pytest.raises(ValueError, match="targets must be"):
        lenses.logit_lens(MODEL, VARIABLES, TOKENS, targets=TOKENS[:, :2])
    with pytest.raises(ValueError, match="at most one"):
        lenses.logit_lens(MODEL, VARIABLES, TOKENS, targets=TOKENS, top_k=2)
    with pytest.raises(ValueError, match="top_k"):
        lenses.logit_lens(MODEL, VARIABLES, TOKENS, top_k=0)
    other = ji.models.build("gpt2_small", n_layers=3, d_model=32, n_heads=4, d_head=8,
                            d_mlp=48, d_vocab=40, n_ctx=16)
    with pytest.raises(ValueError, match="this model needs"):
        lenses.tuned_lens(other, VARIABLES, lenses.init_tuned_lens(MODEL), TOKENS)
    with pytest.raises(ValueError, match="d_model"):
        read_out(MODEL, VARIABLES, jnp.zeros((1, 2, 5)))
    with pytest.raises(ValueError, match="no tuned lens"):
        lenses.load_tuned_lens(tmp_path)
    lenses.save_tuned_lens(lenses.init_tuned_lens(MODEL), tmp_path / "l")
    with pytest.raises(ValueError, match="this model needs"):
        lenses.load_tuned_lens(tmp_path / "l", other)
    with pytest.raises(ValueError, match="tokens must be"):
        lenses.train_tuned_lens(MODEL, VARIABLES, [TOKENS[0]])
    with pytest.raises(ValueError, match="no batches"):
        lenses.train_tuned_lens(MODEL, VARIABLES, [])


def test_logit_lens_figure_writes_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from jaxinterp.analysis.figures import plot_logit_lens

    logp, ids = lenses.logit_lens(MODEL, VARIABLES, TOKENS[:1], top_k=1)
    prob, ids = np.exp(np.asarray(logp[:, 0, :, 0])), np.asarray(ids[:, 0, :, 0])
    names = [f"t{i}" for i in range(CFG.d_vocab)]
    fig = plot_logit_lens(prob, ids, labels=names, pos_labels=[names[t] for t in TOKENS[0]])
    cells = [t.get_text() for t in fig.axes[0].texts]
    assert cells[:N_POS] == [names[i] for i in ids[0]] and len(cells) == ids.size
    fig.savefig(tmp_path / "lens.png")
    assert (tmp_path / "lens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"\[layer, pos\]"):
        plot_logit_lens(prob, ids[:, :2])
    with pytest.raises(ValueError, match="has no label"):
        plot_logit_lens(prob, ids, labels=names[:1])
