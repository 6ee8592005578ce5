"""Streamed activation statistics equal the same numbers computed from stored activations."""

import jax
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.analysis.stats import activation_stats
from tests.helpers.tiny_models import tiny


def _batches(d_vocab, sizes=(3, 3, 2)):
    return [jax.random.randint(jax.random.key(10 + i), (b, 10), 0, d_vocab)
            for i, b in enumerate(sizes)]


def test_streamed_stats_equal_stored_activations():
    model, variables, _ = tiny("gpt2_small", act_fn="relu")
    batches = _batches(model.config.d_vocab)
    edges = np.linspace(-3, 3, 13)
    st = activation_stats(model, variables, batches,
                          sites=("blocks.*.mlp.hook_post", "blocks.*.hook_resid_post"),
                          top_k=5, edges=edges)
    caches = [ji.run(model, variables, b, capture=("blocks.*.mlp.hook_post",
                                                   "blocks.*.hook_resid_post"))[1]
              for b in batches]
    names = sorted(caches[0])
    assert sorted(st.count) == names
    everything = []
    for name in names:
        x = np.concatenate([np.asarray(c[name], np.float64) for c in caches])  # [examples, ...]
        rows = x.reshape(-1, x.shape[-1])
        assert st.count[name] == rows.shape[0] == 8 * 10
        np.testing.assert_allclose(st.nonzero_fraction[name], (rows > 0).mean(), rtol=1e-12)
        np.testing.assert_allclose(st.nonzero_per_feature[name], (rows > 0).mean(0), rtol=1e-12)
        np.testing.assert_allclose(st.mean_abs[name], np.abs(x).mean(), rtol=1e-5)
        inside = np.histogram(x, bins=edges)[0]
        want_hist = np.concatenate([[(x < edges[0]).sum()], inside, [(x > edges[-1]).sum()]])
        np.testing.assert_array_equal(st.histograms[name], want_hist)
        order = np.argsort(-np.abs(x), axis=None)[:5]
        want_top = [(name, *np.unravel_index(i, x.shape)) for i in order]
        got_top = [(m.site, m.example, *m.index) for m in st.top_per_site[name]]
        assert got_top == want_top
        for m in st.top_per_site[name]:
            assert m.value == pytest.approx(x[(m.example, *m.index)], rel=1e-6)
        everything += [(abs(x[t[1:]]), t) for t in want_top]
    assert [(m.site, m.example, *m.index) for m in st.massive] == [
        t for _, t in sorted(everything, key=lambda e: -e[0])[:5]]
    # ReLU MLPs are sparse: a real fraction, strictly between 0 and 1, and per-feature values
    # that differ.
    frac = st.nonzero_fraction["blocks.0.mlp.hook_post"]
    assert 0.05 < frac < 0.95


def test_threshold_and_errors():
    model, variables, _ = tiny("gpt2_small")
    batches = _batches(model.config.d_vocab, (2,))
    st = activation_stats(model, variables, batches, sites="blocks.1.mlp.hook_post",
                          threshold=0.5)
    x = np.asarray(ji.run(model, variables, batches[0],
                          capture="blocks.1.mlp.hook_post")[1]["blocks.1.mlp.hook_post"])
    np.testing.assert_allclose(st.nonzero_fraction["blocks.1.mlp.hook_post"], (x > 0.5).mean())
    with pytest.raises(ValueError, match="no batches"):
        activation_stats(model, variables, [])
    with pytest.raises(ValueError, match="edges"):
        activation_stats(model, variables, batches, edges=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"matches no site|nearest"):
        activation_stats(model, variables, batches, sites="blocks.*.mlp.hook_postt")


def test_batches_of_different_lengths():
    model, variables, _ = tiny("gpt2_small")
    batches = [jax.random.randint(jax.random.key(3), (2, 10), 0, model.config.d_vocab),
               jax.random.randint(jax.random.key(4), (3, 6), 0, model.config.d_vocab)]
    name = "blocks.1.hook_resid_post"
    st = activation_stats(model, variables, batches, sites=name, top_k=4)
    xs = [np.asarray(ji.run(model, variables, b, capture=name)[1][name]) for b in batches]
    assert st.count[name] == 2 * 10 + 3 * 6
    want = sorted(((abs(x[i]), (offset + i[0], *i[1:]))
                   for offset, x in ((0, xs[0]), (2, xs[1])) for i in np.ndindex(x.shape)),
                  key=lambda e: -e[0])[:4]
    assert [(m.example, *m.index) for m in st.top_per_site[name]] == [w[1] for w in want]
