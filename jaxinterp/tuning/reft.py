"""LoReFT: a low-rank linear subspace edit of the representation at chosen positions.

Wu et al. 2024, "ReFT: Representation Finetuning for Language Models" (arXiv 2404.03592),
section 3.1: with `R` [r, d] a low-rank projection with orthonormal rows, `W` [r, d] and
`b` [r], LoReFT edits a hidden representation `h` [d] as

    Phi_LoReFT(h) = h + Rᵀ (W h + b - R h)

i.e. the coordinates `R h` of `h` in the r-dimensional subspace spanned by R's rows are
replaced by the learned projected source `W h + b`, the rest of `h` is left as it was. The
edit is applied at a chosen site (the paper: the residual stream of chosen layers) and chosen
positions (the paper's "first p prefix and last s suffix" prompt positions, `p + s` here as
absolute positions with negative ones counted from the end: `positions=(0, 1, -2, -1)`).

Checked against pyreft (`pyreft/interventions.py`, `LoreftIntervention`, docstring
"LoReFT(h) = h + R^T(Wh + b − Rh)"): `rotated_base = rotate_layer(base)` (h R with the
layer's weight [d, r] = our Rᵀ), `output = base + (learned_source(base) - rotated_base) @
rotate_layer.weight.T`, `learned_source` an `nn.Linear(d, r)` (our `W`, `b`), the rotation
orthogonally initialised and kept orthonormal by `torch.nn.utils.parametrizations.
orthogonal` (here `jaxinterp.tuning.orthogonal`: QR of an unconstrained, orthogonally
initialised matrix). pyreft's optional activation on `W h + b` and dropout are left out (its
default is linear, no dropout). The stored pages held the paper's abstract, not section 3's
text, so the equation is quoted from pyreft's code and docstring.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.interventions import Apply
from jaxinterp.tuning.frozen import Frozen
from jaxinterp.tuning.orthogonal import orthonormal_param


def loreft_edit(h: jax.Array, params: dict[str, jax.Array]) -> jax.Array:
    """`h + Rᵀ (W h + b - R h)` on the last axis of `h` [..., d] (computed in float32, cast
    back); `params`: `rotation` R [r, d] (orthonormal rows), `weight` W [r, d], `bias` b [r]."""
    hf = h.astype(jnp.float32)
    r, w, b = params["rotation"], params["weight"], params["bias"]
    target = jnp.einsum("...d,rd->...r", hf, w) + b  # W h + b: contract d
    coords = jnp.einsum("...d,rd->...r", hf, r)  # R h
    return (hf + jnp.einsum("...r,rd->...d", target - coords, r)).astype(h.dtype)


class LoReFT(nn.Module):
    """LoReFT at one site and positions (module docstring): trained `rotation` (unconstrained;
    R = its orthonormalised rows), `weight` W and `bias` b.

    Attributes:
      site: one site of the base model (e.g. `"blocks.1.hook_resid_post"`); its last axis is
        the representation edited.
      rank: r, the subspace's dimension (r <= the site's width).
      positions: absolute positions edited, negative from the end (empty: all).
    """

    site: str
    rank: int = 4
    positions: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, frozen: Frozen, *inputs: Any, **kwargs: Any) -> Any:
        width = frozen.site_shape(self.site, *inputs, **kwargs)[-1]
        params = {"rotation": orthonormal_param(self, "rotation", self.rank, width),
                  "weight": self.param("weight", nn.initializers.lecun_normal(),
                                       (self.rank, width)),
                  "bias": self.param("bias", nn.initializers.zeros, (self.rank,))}
        edit = Apply(self.site, loreft_edit, params, positions=list(self.positions) or None)
        return frozen.run(*inputs, interventions=[edit], **kwargs)[0]
