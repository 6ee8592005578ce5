"""Pruning masks: magnitude and random masks keep the requested count per weight matrix and leave
biases alone; a masked init trained with AdamW + `mask_updates` keeps its pruned weights at 0."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinterp.train import masks


def _params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"dense": {"kernel": jax.random.normal(k1, (6, 5)), "bias": jnp.arange(5.0)},
            "emb": jax.random.normal(k2, (10, 4))}


def test_magnitude_mask_keeps_the_largest_weights_per_matrix():
    params = _params()
    mask = masks.magnitude_mask(params, sparsity=0.6)
    np.testing.assert_array_equal(mask["dense"]["bias"], np.ones(5))
    for w, m in ((params["dense"]["kernel"], mask["dense"]["kernel"]),
                 (params["emb"], mask["emb"])):
        w, m = np.abs(np.asarray(w)), np.asarray(m)
        assert m.sum() == w.size - round(0.6 * w.size)
        assert w[m == 1].min() > w[m == 0].max()
    assert masks.sparsity_of(mask) == pytest.approx((18 + 24) / 70)


def test_random_mask_has_the_same_counts_at_other_positions():
    params = _params()
    mag = masks.magnitude_mask(params, sparsity=0.5)
    rand = masks.random_mask(jax.random.key(1), params, sparsity=0.5)
    for a, b in zip(jax.tree.leaves(mag), jax.tree.leaves(rand), strict=True):
        assert a.shape == b.shape and float(a.sum()) == float(b.sum())
    assert not np.array_equal(mag["emb"], rand["emb"])
    again = masks.random_mask(jax.random.key(1), params, sparsity=0.5)
    for a, b in zip(jax.tree.leaves(rand), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)


def test_custom_prunable_and_bad_sparsity():
    params = _params()
    only_emb = masks.magnitude_mask(params, 0.5, prunable=lambda path, w: path[0].key == "emb")
    assert float(only_emb["dense"]["kernel"].min()) == 1.0
    assert float(only_emb["emb"].sum()) == 20
    with pytest.raises(ValueError, match="sparsity must be in"):
        masks.magnitude_mask(params, 1.0)
    with pytest.raises(ValueError, match="sparsity must be in"):
        masks.random_mask(jax.random.key(0), params, -0.1)


def test_masked_training_keeps_pruned_weights_at_zero():
    params = _params()
    mask = masks.magnitude_mask(params, sparsity=0.5)
    opt = optax.chain(optax.adamw(1e-2, weight_decay=0.5), masks.mask_updates(mask))
    p = masks.apply_mask(params, mask)
    state = opt.init(p)

    def loss(p):
        x = p["emb"] @ p["dense"]["kernel"][:4] + p["dense"]["bias"]
        return jnp.sum((x - 1.0) ** 2)

    start = loss(p)
    for _ in range(20):
        updates, state = opt.update(jax.grad(loss)(p), state, p)
        p = optax.apply_updates(p, updates)
    assert loss(p) < start
    for w, m in zip(jax.tree.leaves(p), jax.tree.leaves(mask), strict=True):
        np.testing.assert_array_equal(np.asarray(w)[np.asarray(m) == 0], 0.0)
    assert jnp.any(p["dense"]["bias"] != params["dense"]["bias"])  # unmasked leaves train
