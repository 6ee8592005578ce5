"""Fourier IPR: one frequency gives 1, two equal ones 1/2, a spike (flat spectrum) 1/(p//2)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.analysis.fourier import fourier_power, ipr


def test_ipr_of_periodic_and_localised_weights():
    p = 31
    x = np.arange(p)
    w = np.stack([np.cos(2 * np.pi * 3 * x / p) + 5.0,  # the constant is dropped
                  np.cos(2 * np.pi * 3 * x / p) + np.sin(2 * np.pi * 7 * x / p),
                  np.eye(p)[4]], axis=1)  # [p, neuron]
    got = np.asarray(ipr(jnp.asarray(w), axis=0))
    np.testing.assert_allclose(got, [1.0, 0.5, 1.0 / (p // 2)], rtol=1e-5)
    assert fourier_power(jnp.asarray(w), axis=0).shape == (p // 2, 3)
    assert fourier_power(jnp.asarray(w), axis=0, drop_constant=False).shape == (p // 2 + 1, 3)
    assert float(ipr(jnp.asarray(w.T), axis=1)[0]) == pytest.approx(1.0, rel=1e-5)
