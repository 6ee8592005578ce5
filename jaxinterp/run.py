"""`jaxinterp.run`: a forward pass with captures and interventions, as a pure function."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from jaxinterp import sites as sites_lib
from jaxinterp.interventions import Intervention


def run(
    model: nn.Module,
    variables: Any,
    *inputs: Any,
    capture: str | Sequence[str] = (),
    interventions: Intervention | Sequence[Intervention] = (),
    **apply_kwargs: Any,
) -> tuple[Any, dict[str, jax.Array]]:
    """Runs `model.apply(variables, *inputs)` with captures and interventions.

    Args:
      model: a jaxinterp model (any Flax module whose activations pass through named sites).
      variables: its variables, as returned by `model.init`.
      *inputs: the model's inputs, e.g. tokens `[batch, pos]` int32.
      capture: site names or glob patterns (`"blocks.*.attn.hook_pattern"`); every matching
        site's value (after any interventions at it) goes into the cache.
      interventions: `jaxinterp.Add`, `Scale`, `Clamp`, `Ablate`, `Patch`, `ProjectOut` or
        `Apply` objects, applied in the order given.
      **apply_kwargs: passed to `model.apply`.

    Returns:
      `(output, cache)`: the model's output and `{site name: array}` for every captured site,
      in execution order (a dict returned from `jax.jit` comes back with sorted keys). With no
      interventions the output is `model.apply(variables, *inputs)`'s, bit for bit.

    Raises:
      ValueError: at trace time (before anything compiles) if a capture pattern or an
        intervention matches no site (the message lists the nearest valid names), or an
        intervention's arrays do not fit its site (the message names the site and both shapes).

    `run` is a pure function of its array arguments: wrap it in `jax.jit`, `jax.vmap` over a
    stacked intervention, `jax.grad` with respect to intervention arrays, or shard its inputs.
    (When `capture` is a static argument of `jax.jit`, pass a tuple: lists are not hashable.)
    """
    if "mutable" in apply_kwargs:
        raise ValueError("run manages `mutable` itself (captures are sown into the "
                         f"{sites_lib.COLLECTION!r} collection); call model.apply for other "
                         "mutable collections.")
    if isinstance(capture, str):
        capture = (capture,)
    if isinstance(interventions, Intervention):
        interventions = (interventions,)
    for iv in interventions:
        if not isinstance(iv, Intervention):
            raise TypeError(f"interventions must be jaxinterp interventions, got {type(iv)}")
    session = sites_lib.Session(capture=capture, interventions=interventions)
    with sites_lib.active(session):
        if capture:
            output, state = model.apply(
                variables, *inputs, mutable=[sites_lib.COLLECTION], **apply_kwargs
            )
        else:
            output, state = model.apply(variables, *inputs, **apply_kwargs), {}
    session.check_all_matched()
    return output, session.collect(state)
