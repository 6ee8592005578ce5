"""Convert parameters between unrolled (`blocks_{i}`) and scanned (`blocks`, stacked) layouts."""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_BLOCK = re.compile(r"^blocks_(\d+)$")


def stack_layers(variables: Any) -> Any:
    """Unrolled -> scanned: `{blocks_0: t0, blocks_1: t1, ...}` -> `{blocks: stack(t0, t1, ...)}`.

    Works on any dict level that holds `blocks_{i}` keys (e.g. `{"params": {...}}`); logical
    partitioning boxes are removed.
    """
    variables = nn.meta.unbox(variables)
    if not isinstance(variables, dict):
        return variables
    indices = sorted(int(m.group(1)) for k in variables if (m := _BLOCK.match(k)))
    out = {k: stack_layers(v) for k, v in variables.items() if not _BLOCK.match(k)}
    if indices:
        if indices != list(range(len(indices))):
            raise ValueError(f"blocks are not numbered 0..n-1: {indices}")
        blocks = [variables[f"blocks_{i}"] for i in indices]
        out["blocks"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
    return out


def unstack_layers(variables: Any) -> Any:
    """Scanned -> unrolled: the inverse of `stack_layers`."""
    variables = nn.meta.unbox(variables)
    if not isinstance(variables, dict):
        return variables
    out = {k: unstack_layers(v) for k, v in variables.items() if k != "blocks"}
    if "blocks" in variables:
        stacked = variables["blocks"]
        n = jax.tree.leaves(stacked)[0].shape[0]
        for i in range(n):
            out[f"blocks_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
    return out
