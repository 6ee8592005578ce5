"""What every KAN layer shares: site axes, and the sum over edges that the output is.

A KAN layer (Liu et al. 2024, "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756) puts a
learnable univariate function on every edge (input i -> output j) and sums at the nodes:

    edge[..., i, j] = phi_ij(x[..., i])            hook_edge  [batch, (pos,) d_in, d_out]
    out[..., j]     = sum_i edge[..., i, j] (+ b_j) hook_post  [batch, (pos,) d_out]

Materialising `edge` costs d_in x d_out values per example, so it is only done while a
`jaxinterp.run` session traces the model (where the site can be captured or intervened on).
Under a plain `model.apply` the same sum is one fused contraction (a matmul). The two agree up
to float rounding (summation order), not bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

from jaxinterp.hooks import site, wanted


def lead_axes(x: jax.Array, what: str) -> tuple[str, ...]:
    """Site axis names of `x`'s leading dims: ("batch",) or ("batch", "pos")."""
    if x.ndim == 2:
        return ("batch",)
    if x.ndim == 3:
        return ("batch", "pos")
    raise ValueError(f"{what} takes inputs [batch, d_in] or [batch, pos, d_in], "
                     f"got shape {x.shape}")


def sum_edges(
    module: nn.Module,
    lead: tuple[str, ...],
    edges: Callable[[], jax.Array],
    fused: Callable[[], jax.Array],
) -> jax.Array:
    """`sum_i edge[..., i, j]`, through the `hook_edge` site when sites are live.

    Args:
      module: the KAN layer (the site's owner).
      lead: leading axis names, from `lead_axes`.
      edges: returns the per-edge values [..., d_in, d_out].
      fused: returns the same sum without materialising the edges [..., d_out].
    """
    if not wanted(module, "hook_edge"):
        return fused()
    e = site(module, "hook_edge", edges(), (*lead, "d_in", "d_out"))
    return e.sum(axis=-2)
