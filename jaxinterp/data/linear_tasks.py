"""Small in-memory tasks for deep linear networks (NumPy / JAX arrays, no TFDS builder).

- `hierarchical_features()`: the 8 items x 15 features of a three-level binary hierarchy
  (Saxe, McClelland & Ganguli 2019, "A mathematical theory of semantic development"; the
  dataset of Kleinman, Achille & Soatto 2024's multi-pathway experiments): one feature shared
  by all items, two by halves, four by quarters, eight by single items. With one-hot inputs
  the items x features matrix has singular values sqrt(15), sqrt(7), sqrt(3) x 2, 1 x 4.
- `low_rank_matrix(key, n, rank)` and `observation_mask(key, n, n_observed)`: the matrix
  completion task of Kleinman et al. (after Arora et al. 2019): an n x n matrix of rank `rank`,
  L^T L' / sqrt(rank) with standard normal L, L' [rank, n], scaled to Frobenius norm n (entries
  of root mean square 1), of which `n_observed` entries are seen in training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def hierarchical_features() -> np.ndarray:
    """float32 [8 items, 15 features]: column 0 is shared by all items, 1-2 by halves, 3-6 by
    quarters, 7-14 by single items."""
    items = np.arange(8)
    cols = [np.ones(8)]
    for size in (4, 2, 1):
        cols += [(items // size == g).astype(np.float64) for g in range(8 // size)]
    return np.stack(cols, axis=1).astype(np.float32)


def low_rank_matrix(key: jax.Array, n: int, rank: int) -> jax.Array:
    """float32 [n, n] of rank `rank` and Frobenius norm n (see the module docstring)."""
    if n < 1 or not 1 <= rank <= n:
        raise ValueError(f"low_rank_matrix: want n >= 1 and 1 <= rank <= n, got n={n}, "
                         f"rank={rank}")
    k1, k2 = jax.random.split(key)
    left = jax.random.normal(k1, (rank, n))
    right = jax.random.normal(k2, (rank, n))
    m = jnp.einsum("ri,rj->ij", left, right) / np.sqrt(rank)  # contract the rank axis
    return m / jnp.linalg.norm(m) * n


def observation_mask(key: jax.Array, n: int, n_observed: int) -> jax.Array:
    """float32 [n, n] with exactly `n_observed` ones at uniformly random distinct entries."""
    if not 1 <= n_observed <= n * n:
        raise ValueError(f"observation_mask: n_observed={n_observed}; valid: 1..{n * n}")
    flat = jnp.zeros((n * n,), jnp.float32)
    flat = flat.at[jax.random.permutation(key, n * n)[:n_observed]].set(1.0)
    return flat.reshape(n, n)
