"""Orthonormal rows from an unconstrained matrix: the rotation shared by DAS and LoReFT.

DAS (Geiger et al. 2023) and LoReFT (Wu et al. 2024) learn `R` [r, d] with orthonormal rows
(`R Rᵀ = I_r`, r <= d). pyvene and pyreft get it from `torch.nn.utils.parametrizations.
orthogonal`, which maps an unconstrained weight onto the Stiefel manifold (by default with the
matrix exponential for square matrices and Householder products for rectangular ones). Here
the map is the QR decomposition with the sign fixed:

    A [r, d]  ->  Aᵀ = Q S  (Q [d, r] orthonormal columns, S [r, r] upper triangular)
    R = (Q diag(sign(diag S)))ᵀ                                     R [r, d], R Rᵀ = I_r

which is Gram-Schmidt on the rows of `A`: row i of `R` is row i of `A` with its components
along rows 0..i-1 removed, normalised. Why QR: one map for the square rotation of DAS and the
rectangular `R` of LoReFT (the matrix exponential and the Cayley map need a square matrix);
it costs O(d r²), not O(d³); JAX differentiates `jnp.linalg.qr` (full-rank `A`, which an
orthogonal initialisation gives); and an `A` whose rows are already orthonormal maps to itself,
so `nn.initializers.orthogonal()` (the init pyvene and pyreft use) is the starting rotation.
The sign fix makes the map a smooth function of `A` (raw QR may flip columns).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def orthonormal_rows(a: jax.Array) -> jax.Array:
    """`R` [r, d] with orthonormal rows from any full-rank `a` [r, d] (r <= d): Gram-Schmidt
    on `a`'s rows via QR (module docstring). A ValueError if `a` is not 2-D with r <= d."""
    if a.ndim != 2 or a.shape[0] > a.shape[1]:
        raise ValueError(f"orthonormal_rows needs a [r, d] matrix with r <= d, got shape "
                         f"{a.shape}")
    q, s = jnp.linalg.qr(a.astype(jnp.float32).T)  # q [d, r], s [r, r]
    sign = jnp.where(jnp.diagonal(s) < 0, -1.0, 1.0)  # [r]
    return (q * sign[None, :]).T


def orthonormal_param(module: nn.Module, name: str, rows: int, dim: int) -> jax.Array:
    """Declares param `name` [rows, dim] of `module` (unconstrained; orthogonal init) and
    returns `orthonormal_rows` of it. Call inside a compact `__call__`."""
    if not 0 < rows <= dim:
        raise ValueError(f"{type(module).__name__}: a rotation of {rows} rows in {dim} "
                         f"dimensions needs 0 < rows <= {dim}")
    return orthonormal_rows(module.param(name, nn.initializers.orthogonal(), (rows, dim)))
