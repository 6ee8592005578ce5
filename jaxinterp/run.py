"""`jaxinterp.run`: a forward pass with captures and interventions, as a pure function."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from jaxinterp import hooks
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
                         f"{hooks.COLLECTION!r} collection); use run_with_state to update "
                         "other collections (BatchNorm statistics, ...).")
    output, cache, _ = run_with_state(model, variables, *inputs, capture=capture,
                                      interventions=interventions, **apply_kwargs)
    return output, cache


def run_with_state(
    model: nn.Module,
    variables: Any,
    *inputs: Any,
    capture: str | Sequence[str] = (),
    interventions: Intervention | Sequence[Intervention] = (),
    mutable: Sequence[str] = (),
    **apply_kwargs: Any,
) -> tuple[Any, dict[str, jax.Array], dict[str, Any]]:
    """`run` that also returns what the forward pass updates (what the trainer calls).

    Args: as `run`, plus `mutable`: variable collections the model may update (e.g.
    `["batch_stats"]` with `train=True`).

    Returns:
      `(output, cache, state)`: `state` maps each collection in `mutable` to its new value, and
      `"interventions"` to `{index in interventions: statistic}` for interventions that keep
      one (`RunningMean`: its running mean after this batch).
    """
    if isinstance(capture, str):
        capture = (capture,)
    if isinstance(interventions, Intervention):
        interventions = (interventions,)
    for iv in interventions:
        if not isinstance(iv, Intervention):
            raise TypeError(f"interventions must be jaxinterp interventions, got {type(iv)}")
    if hooks.COLLECTION in mutable:
        raise ValueError(f"{hooks.COLLECTION!r} is where captures go; capture sites instead")
    session = hooks.Session(capture=capture, interventions=interventions)
    sow = bool(capture) or any(hasattr(iv, "statistic") for iv in interventions)
    collections = [*mutable, *([hooks.COLLECTION] if sow else [])]
    with hooks.active(session):
        if collections:
            output, state = model.apply(variables, *inputs, mutable=collections,
                                        **apply_kwargs)
        else:
            output, state = model.apply(variables, *inputs, **apply_kwargs), {}
    session.check_all_matched()
    updated = {c: state[c] for c in mutable if c in state}
    updated["interventions"] = session.collect_stats(state)
    return output, session.collect(state), updated
