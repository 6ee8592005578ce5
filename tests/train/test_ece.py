"""`jaxinterp.train.metrics.ece` against hand-computed expected calibration errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.train.metrics import ece


def _logits(probs):
    return jnp.log(jnp.asarray(probs, jnp.float32))


def test_ece_hand_computed():
    # Confidences 0.9, 0.9, 0.6, 0.6 (bins of width 0.1: two in (0.8, 0.9], two in (0.5, 0.6]).
    # Bin 0.9: 1 of 2 correct -> |0.5 - 0.9| = 0.4; bin 0.6: 2 of 2 correct -> |1 - 0.6| = 0.4.
    # ECE = 2/4 * 0.4 + 2/4 * 0.4 = 0.4.
    probs = [[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]]
    labels = jnp.array([0, 1, 1, 1])
    np.testing.assert_allclose(ece(_logits(probs), labels, n_bins=10), 0.4, atol=1e-6)
    # One bin: |accuracy - mean confidence| = |0.75 - 0.75| = 0.
    np.testing.assert_allclose(ece(_logits(probs), labels, n_bins=1), 0.0, atol=1e-6)


def test_ece_against_a_loop_and_under_jit_vmap():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 200, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, size=(3, 200))
    got = jax.jit(jax.vmap(lambda lg, y: ece(lg, y, n_bins=7)))(logits, labels)
    for i in range(3):
        p = np.exp(logits[i]) / np.exp(logits[i]).sum(-1, keepdims=True)
        conf, pred = p.max(-1), p.argmax(-1)
        want = 0.0
        for b in range(7):
            lo, hi = b / 7, (b + 1) / 7
            sel = (conf > lo) & (conf <= hi)
            if sel.any():
                want += sel.mean() * abs((pred[sel] == labels[i][sel]).mean() - conf[sel].mean())
        np.testing.assert_allclose(got[i], want, atol=1e-5)


def test_ece_errors():
    with pytest.raises(ValueError, match="n_bins"):
        ece(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), n_bins=0)
    with pytest.raises(ValueError, match="labels"):
        ece(jnp.zeros((2, 3)), jnp.zeros(3, jnp.int32))
