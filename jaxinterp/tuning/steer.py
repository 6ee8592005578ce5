"""A trained steering vector: the simplest method, `x + v` at one site with `v` learned."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxinterp.interventions import Add
from jaxinterp.tuning.frozen import Frozen


class SteeringVector(nn.Module):
    """Learns `v` [width] added at `site` (every position, or `positions`): `h' = h + v`.

    Attributes:
      site: one site of the base model (e.g. `"blocks.1.hook_resid_post"`); its last axis is
        the vector's width.
      positions: absolute positions to steer (empty: all).
    """

    site: str
    positions: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, frozen: Frozen, *inputs: Any, **kwargs: Any) -> Any:
        width = frozen.site_shape(self.site, *inputs, **kwargs)[-1]
        vector = self.param("vector", nn.initializers.zeros, (width,))
        add = Add(self.site, vector, positions=list(self.positions) or None)
        return frozen.run(*inputs, interventions=[add], **kwargs)[0]
