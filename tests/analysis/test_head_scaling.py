"""Head scaling: ACT's redistribution against a NumPy loop, and the (gamma x layer x head)
sweep against single `ji.run` calls with one hand-built intervention each."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.analysis import head_scaling as hs
from tests.helpers.tiny_models import assert_close, tiny


def _redistribute_numpy(pattern, multiplier):
    """Row by row: scaled keys get p * m, the unscaled ones share what was removed in
    proportion to their attention (clipped at 0); rows with nothing unscaled stay."""
    p = np.asarray(pattern, np.float64)
    m = np.broadcast_to(np.asarray(multiplier, np.float64), p.shape)
    out = p.copy()
    for idx in np.ndindex(p.shape[:-1]):
        row, mult = p[idx], m[idx]
        free = mult == 1
        rest = row[free].sum()
        if rest <= 0:
            continue
        removed = (row * (1 - mult)).sum()
        out[idx] = np.where(free, row * max(1 + removed / rest, 0.0), row * mult)
    return out


def test_redistribute_attention_matches_numpy_and_keeps_row_sums():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5, 5)) * 2
    causal = np.tril(np.ones((5, 5), bool))
    pattern = np.where(causal, np.exp(logits), 0)
    pattern = (pattern / pattern.sum(-1, keepdims=True)).astype(np.float32)
    mult = np.ones((1, 3, 1, 5), np.float32)
    mult[0, 1, 0, 0] = 0.3  # head 1, key 0 (the sink), for every query
    got = np.asarray(hs.redistribute_attention(jnp.asarray(pattern), mult))
    np.testing.assert_allclose(got, _redistribute_numpy(pattern, mult), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)  # rows keep their sum
    np.testing.assert_allclose(got[:, 1, 1:, 0], 0.3 * pattern[:, 1, 1:, 0], rtol=1e-6)
    np.testing.assert_array_equal(got[:, 1, 0], pattern[:, 1, 0])  # query 0 sees only key 0
    np.testing.assert_array_equal(got[:, [0, 2]], pattern[:, [0, 2]])  # other heads untouched
    # Unscaled keys keep their proportions.
    ratio = got[:, 1, 2:, 1] / got[:, 1, 2:, 2]
    np.testing.assert_allclose(ratio, pattern[:, 1, 2:, 1] / pattern[:, 1, 2:, 2], rtol=1e-5)
    # All-ones multipliers are the identity, bit for bit; gamma > 1 clips the factor at 0.
    np.testing.assert_array_equal(hs.redistribute_attention(pattern, np.ones(5)), pattern)
    big = mult.copy()
    big[0, 1, 0, 0] = 50.0
    np.testing.assert_allclose(hs.redistribute_attention(pattern, big),
                               _redistribute_numpy(pattern, big), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="does not broadcast"):
        hs.redistribute_attention(pattern, np.ones(4))


@pytest.mark.parametrize("redistribute", [False, True])
def test_sweep_equals_a_loop_of_single_runs(redistribute):
    model, variables, tokens = tiny()  # 2 layers x 4 heads, tokens [3, 10]
    gammas = np.array([0.0, 0.5, 2.0], np.float32)
    n_keys = tokens.shape[1]
    if redistribute:  # ACT's form on a per-sequence key (as the random-token control uses)
        mask = np.zeros((3, n_keys), bool)
        mask[np.arange(3), [3, 7, 5]] = True
        keys = mask
    else:  # plain scaling of the first key (a BOS sink)
        mask, keys = np.broadcast_to(np.arange(n_keys) == 0, (3, n_keys)), 0

    def metric(logits):
        return logits[:, -1].mean(0)  # [vocab]

    @jax.jit
    def single(mults):  # one run, one hand-built intervention per layer's pattern
        ivs = []
        for layer, mult in enumerate(mults):
            site = f"blocks.{layer}.attn.hook_pattern"
            ivs.append(ji.Apply(site, hs.redistribute_attention, mult) if redistribute
                       else ji.Scale(site, mult))
        return metric(ji.run(model, variables, tokens, interventions=ivs)[0])

    got = hs.head_scale_sweep(model, variables, tokens, gammas, keys, metric=metric,
                              redistribute=redistribute)
    assert got.shape == (3, 2, 4, model.config.d_vocab)
    for g, layer, head in np.ndindex(3, 2, 4):
        mults = np.ones((2, 3, 4, 1, n_keys), np.float32)  # [layer, batch, head, query, key]
        mults[layer, :, head, 0][mask] = gammas[g]
        assert_close(got[g, layer, head], single(mults), rtol=1e-5)
    # gamma = 1 is the clean run (here through lax.map chunks, one layer, whole logits).
    one = hs.head_scale_sweep(model, variables, tokens, [1.0], keys,
                              redistribute=redistribute, layers=[1], batch_size=3)
    assert one.shape == (1, 1, 4, 3, n_keys, model.config.d_vocab)
    clean = ji.run(model, variables, tokens)[0]
    for head in range(4):
        assert_close(one[0, 0, head], clean, rtol=1e-5)


def test_sweep_checks_its_arguments():
    model, variables, tokens = tiny()
    with pytest.raises(ValueError, match="1-D"):
        hs.head_scale_sweep(model, variables, tokens, [[0.5]])
    with pytest.raises(ValueError, match="out of range"):
        hs.head_scale_sweep(model, variables, tokens, [0.5], layers=[2])
    with pytest.raises(ValueError, match="outside a sequence"):
        hs.head_scale_sweep(model, variables, tokens, [0.5], keys=10)
    with pytest.raises(ValueError, match="keys mask"):
        hs.head_scale_sweep(model, variables, tokens, [0.5], keys=np.ones(4, bool))
    with pytest.raises(ValueError, match="batch_size"):
        hs.head_scale_sweep(model, variables, tokens, [0.5], batch_size=0)
