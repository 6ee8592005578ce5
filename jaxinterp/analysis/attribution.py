"""Attribution patching: a first-order estimate of every activation patch at once.

Activation patching a site replaces the corrupted activation `a*` with the clean one `a`.
Attribution patching (Nanda 2023, "Attribution Patching: Activation Patching At Industrial
Scale"; Syed, Rager & Conmy 2023, "Attribution Patching Outperforms Automated Circuit
Discovery") replaces the patched run by its linearisation around the corrupted run:

    metric(patched) - metric(corrupted)  ~=  sum over the patched entries of
                                             (a - a*) * d metric / d a   (at the corrupted run)

The gradient with respect to every activation of every layer comes from ONE backward pass:
zero-valued `jaxinterp.Add` deltas are placed at the sites and `jax.grad` differentiates the
metric with respect to them. With the clean forward pass that gives the clean activations, the
whole `[layer, pos(, head)]` sweep costs two forward passes and one backward pass, however many
cells it has. The estimate is exact where the metric is linear in the activation (e.g. a
logit difference read from the last residual stream of a model without a final norm); it is
poor where the patch is large and the model curved (e.g. the token embedding at layer 0).

Sites, sweeps and the result's layout are those of `act_patch` (TransformerLens's patching
layout), but the value is the estimated CHANGE of the metric: compare with
`act_patch(...) - metric(corrupted output)`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.analysis.patching import Metric, check_metric, check_pair, resolve_sweep
from jaxinterp.interventions import Add
from jaxinterp.run import run


@functools.partial(jax.jit, static_argnames=("model", "metric", "sweep"))
def _attribution(variables, clean_inputs, corrupted_inputs, *, model, metric, sweep):
    names = sweep.names
    _, clean = run(model, variables, clean_inputs, capture=names)

    def corrupted_metric(deltas):
        ivs = [Add(name, deltas[name]) for name in names]
        out, cache = run(model, variables, corrupted_inputs, capture=names, interventions=ivs)
        return metric(out), cache

    zeros = {name: jnp.zeros_like(x) for name, x in clean.items()}
    grads, corrupted = jax.grad(corrupted_metric, has_aux=True)(zeros)
    rows = [sweep.reduce((clean[n] - corrupted[n]).astype(jnp.float32) * grads[n])
            for n in names]
    return jnp.stack(rows)


def attr_patch(model: nn.Module, variables: Any, clean_inputs: jax.Array,
               corrupted_inputs: jax.Array, metric: Metric, site: str, by: str, *,
               layers: Sequence[int] | None = None) -> jax.Array:
    """Linear estimate of `act_patch(...) - metric(corrupted output)` for every cell.

    Args: as `jaxinterp.analysis.patching.act_patch` (no `batch_size`: the cost is two forward
      and one backward pass whatever the sweep).

    Returns:
      float32 `[layer, pos]`, `[layer, head]` or `[layer, pos, head]` (as `act_patch`): entry
      `[i, ...]` is `sum (clean - corrupted) * d metric / d activation` over the batch, the
      features and whatever the cell does not index (all positions for `layer_head`; key
      positions for patterns), with the gradient taken on the corrupted run.

    Raises:
      ValueError: as `act_patch`.
    """
    check_pair(clean_inputs, corrupted_inputs)
    sweep = resolve_sweep(model, corrupted_inputs, site, by, layers)
    check_metric(model, variables, corrupted_inputs, metric)
    return _attribution(variables, clean_inputs, corrupted_inputs, model=model, metric=metric,
                        sweep=sweep).astype(jnp.float32)
