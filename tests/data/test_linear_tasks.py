"""The deep-linear-network tasks: the hierarchy's structure and spectrum, low-rank matrices of
the documented rank and norm, masks with exactly the requested number of entries."""

import jax
import numpy as np
import pytest

from jaxinterp.data.linear_tasks import hierarchical_features, low_rank_matrix, observation_mask


def test_hierarchical_features():
    y = hierarchical_features()
    assert y.shape == (8, 15) and y.dtype == np.float32
    np.testing.assert_array_equal(y.sum(axis=0), [8, 4, 4] + [2] * 4 + [1] * 8)
    np.testing.assert_array_equal(y.sum(axis=1), [4] * 8)  # one feature per level
    np.testing.assert_array_equal(y[:, 7:], np.eye(8))
    s = np.linalg.svd(y, compute_uv=False)
    np.testing.assert_allclose(s, np.sqrt([15, 7, 3, 3, 1, 1, 1, 1]), rtol=1e-5)


def test_low_rank_matrix_and_mask():
    m = np.asarray(low_rank_matrix(jax.random.key(0), 20, 3))
    assert m.shape == (20, 20)
    assert np.linalg.matrix_rank(m, tol=1e-3) == 3
    np.testing.assert_allclose(np.linalg.norm(m), 20, rtol=1e-5)
    mask = np.asarray(observation_mask(jax.random.key(1), 20, 150))
    assert mask.shape == (20, 20) and mask.sum() == 150 and set(np.unique(mask)) == {0, 1}
    with pytest.raises(ValueError, match="rank=21"):
        low_rank_matrix(jax.random.key(0), 20, 21)
    with pytest.raises(ValueError, match="n_observed=401"):
        observation_mask(jax.random.key(0), 20, 401)
