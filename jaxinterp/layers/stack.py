"""The layer stack every stacked family uses, and conversion between its two parameter layouts.

    x = stack(Block, x, n_layers=c.n_layers, scan=c.scan_layers, remat=c.remat,
              args=(c,), axes=RESID_AXES)

calls `Block(*args, name=...)(x, layer, *broadcast) -> (x, None)` once per layer, either

- unrolled: `n_layers` modules named `{name}_{i}` (`blocks_0`, `blocks_1`, ...; a Mixer's
  `MixerBlock_{i}` as in the vit_jax tree), `layer` a Python int, or
- scanned (`scan=True`): one module `{name}` under `nn.scan`, every variable collection it
  writes (params, captured sites in `hooks.COLLECTION`, MoE aux losses, KAN grids,
  batch_stats, ...) stacked on a leading axis 0 with the logical name `layers`; `layer` is a
  traced int32; the params and dropout rngs are split per layer. Compile time does not grow
  with depth.

`remat=True` rematerialises each block in the backward pass (`nn.remat`). Every site inside
the block is named `{site_prefix}.{layer}.<path below the block>.<site>` in both layouts
(`hooks.layer`), so captures and interventions are the same either way. With `axes` (the
block input's site axes, e.g. `("batch", "pos", "d_model")`), each block's input and output
are constrained to the logical axes `jaxinterp.layers.axes.logical(axes)` with
`nn.with_logical_constraint`: a no-op unless logical axis rules and a mesh are in context (the
trainer traces its steps inside both), where the activations are laid out like the rules say.

`stack_layers` / `unstack_layers` convert variables between the two layouts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp import hooks
from jaxinterp.layers.axes import Axes, logical

PREFIXES = ("blocks", "MixerBlock")
"""Parameter-tree names of the layer stacks in this package (`stack_layers` looks for these)."""

VARIABLE_AXES = {True: 0}
"""Every collection a block writes is stacked over layers on axis 0 when scanned."""

SPLIT_RNGS = {"params": True, "dropout": True}


def stack(
    block: Callable[..., nn.Module],
    x: jax.Array,
    *broadcast: Any,
    n_layers: int,
    scan: bool = False,
    remat: bool = False,
    args: Sequence[Any] = (),
    name: str = "blocks",
    site_prefix: str = "blocks",
    axes: Axes | None = None,
) -> jax.Array:
    """Applies `n_layers` blocks to `x` (call from inside a parent's `nn.compact` method).

    Args:
      block: a Module class; `block(*args, name=...)` makes one layer, called as
        `layer_module(x, layer, *broadcast)` and returning `(x, None)` (the scan carry).
      x: the stack's input, e.g. [batch, pos, d_model]; each block keeps its shape.
      *broadcast: extra inputs every layer sees unchanged (e.g. an attention mask).
      n_layers: number of blocks (a positive int).
      scan: one scanned module `name` (stacked variables) instead of `name_{i}` modules.
      remat: rematerialise each block's activations in the backward pass.
      args: the block's constructor arguments (e.g. `(config,)`).
      name: parameter-tree name: `name` when scanned, `{name}_{i}` when unrolled.
      site_prefix: the first part of every site name inside a block (`blocks.{i}....`).
      axes: site axes of `x` for the activation sharding constraint; None: no constraint.

    Returns:
      The last block's output, shaped like `x`.
    """
    if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers <= 0:
        raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
    cls = nn.remat(block) if remat else block
    spec = None if axes is None else logical(axes)

    def apply(mdl: nn.Module, h: jax.Array, layer: int | jax.Array, *rest: Any) -> jax.Array:
        h = _constrain(h, spec)
        with hooks.layer(mdl, site_prefix, layer, n_layers):
            h, _ = mdl(h, layer, *rest)
        return _constrain(h, spec)

    if not scan:
        for i in range(n_layers):
            x = apply(cls(*args, name=f"{name}_{i}"), x, i, *broadcast)
        return x

    def body(mdl, h, layer, *rest):
        return apply(mdl, h, layer, *rest), None

    scanned = nn.scan(body, variable_axes=VARIABLE_AXES, split_rngs=SPLIT_RNGS,
                      in_axes=(0, *(nn.broadcast,) * len(broadcast)), length=n_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
    x, _ = scanned(cls(*args, name=name), x, jnp.arange(n_layers, dtype=jnp.int32), *broadcast)
    return x


def _constrain(x: jax.Array, spec: tuple[str | None, ...] | None) -> jax.Array:
    if spec is None:
        return x
    if len(spec) != x.ndim:
        raise ValueError(f"stack axes {spec} do not match the block input's shape {x.shape}")
    return nn.with_logical_constraint(x, spec)


# -- layouts -----------------------------------------------------------------------------------

def stack_layers(variables: Any, prefix: str | None = None) -> Any:
    """Unrolled -> scanned: `{p_0: t0, p_1: t1, ...}` -> `{p: stack(t0, t1, ...)}` at every dict
    level that holds the unrolled blocks (e.g. in `params` and `intermediates`).

    Args:
      variables: a model's variables (boxed or not; logical partitioning boxes are removed).
      prefix: the stack's name `p` (`"blocks"`; `"MixerBlock"` for a Mixer); None: whichever
        of `PREFIXES` the tree holds.

    Returns:
      The scanned layout (unboxed). A tree that already is scanned is returned unboxed.

    Raises:
      ValueError: the tree holds no layer stack of that name (in either layout), or the
        blocks are not numbered 0..n-1.
    """
    variables = nn.meta.unbox(variables)
    prefix = _prefix(variables, prefix, "stack_layers")
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)$")

    def convert(tree):
        if not isinstance(tree, Mapping):
            return tree
        indices = sorted(int(m.group(1)) for k in tree if (m := pattern.match(k)))
        out = {k: convert(v) for k, v in tree.items() if not pattern.match(k)}
        if indices:
            if indices != list(range(len(indices))):
                raise ValueError(f"{prefix} blocks are not numbered 0..n-1: {indices}")
            blocks = [tree[f"{prefix}_{i}"] for i in indices]
            out[prefix] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
        return out

    return convert(variables)


def unstack_layers(variables: Any, prefix: str | None = None) -> Any:
    """Scanned -> unrolled: the inverse of `stack_layers` (same arguments). A tree that already
    is unrolled is returned unboxed; one with no layer stack raises a ValueError."""
    variables = nn.meta.unbox(variables)
    prefix = _prefix(variables, prefix, "unstack_layers")

    def convert(tree):
        if not isinstance(tree, Mapping):
            return tree
        out = {k: convert(v) for k, v in tree.items() if k != prefix}
        if prefix in tree:
            stacked = tree[prefix]
            n = jax.tree.leaves(stacked)[0].shape[0]
            for i in range(n):
                out[f"{prefix}_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
        return out

    return convert(variables)


def _keys(tree: Any) -> set[str]:
    """Every dict key at any level of `tree`."""
    if not isinstance(tree, Mapping):
        return set()
    out = set(tree)
    for v in tree.values():
        out |= _keys(v)
    return out


def _prefix(variables: Any, prefix: str | None, caller: str) -> str:
    """The stack name to convert: `prefix` if the tree holds it (in either layout), else the
    one of `PREFIXES` it holds; a ValueError if none."""
    keys = _keys(variables)

    def holds(p: str) -> bool:
        return p in keys or any(re.fullmatch(rf"{re.escape(p)}_\d+", k) for k in keys)

    candidates = (prefix,) if prefix is not None else PREFIXES
    found = [p for p in candidates if holds(p)]
    if not found:
        top = sorted(variables) if isinstance(variables, Mapping) else type(variables).__name__
        want = " or ".join(f"'{p}_{{i}}' / '{p}'" for p in candidates)
        raise ValueError(f"{caller}: the variables hold no layer stack named {want} (top-level "
                         f"keys: {top}); pass prefix= the stack's parameter name")
    if len(found) > 1:
        raise ValueError(f"{caller}: the variables hold several layer stacks {found}; pass "
                         "prefix= to choose one")
    return found[0]
