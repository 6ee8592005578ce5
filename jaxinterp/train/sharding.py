"""Device mesh `(data, fsdp, tensor)` and parameter placement by logical-axis rules.

Models name every parameter axis (`embed`, `heads`, `mlp`, `vocab`, `layers`, ...); a table of
rules maps logical names to mesh axes, so sharding is configured, not edited into models. The
batch axis is split over `data` and `fsdp`.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")  # mesh axes the batch dimension is split over

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("pos", None),
    ("layers", None),
)


def mesh_shape(mesh_cfg: Any, n_devices: int) -> tuple[int, int, int]:
    """Resolves `{data, fsdp, tensor}` sizes (one of them may be -1: the rest of the devices)."""
    sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
    if sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes, strict=True))}: sizes must be "
                         "positive, with at most one -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n_devices % known:
            raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes, strict=True))} does not divide "
                             f"the {n_devices} devices")
        sizes[sizes.index(-1)] = n_devices // known
    if math.prod(sizes) != n_devices:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes, strict=True))} needs "
                         f"{math.prod(sizes)} devices, but there are {n_devices}")
    return tuple(sizes)


def make_mesh(mesh_cfg: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `(data, fsdp, tensor)` mesh (Auto axis types: placement follows `in_shardings`)."""
    devices = list(devices or jax.devices())
    shape = mesh_shape(mesh_cfg, len(devices))
    return jax.make_mesh(shape, MESH_AXES, (jax.sharding.AxisType.Auto,) * 3, devices=devices)


def rules_from_config(rules: Sequence[Sequence[Any]] | None) -> tuple[tuple[str, Any], ...]:
    """Config rules (lists, possibly nested) as the tuple-of-pairs flax expects."""
    if not rules:
        return DEFAULT_RULES
    out = []
    for name, axes in rules:
        out.append((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes))
    return tuple(out)


def on_mesh(fn: Callable[..., Any], mesh: Mesh, rules) -> Callable[..., Any]:
    """`fn` traced with `mesh` (as the abstract mesh) and the logical-axis `rules` in context.

    Models constrain activations with `nn.with_logical_constraint` (at the layer stack's block
    boundaries, `jaxinterp.layers.stack`); that is a no-op unless both are in context while the
    function is traced, so the steps are `jax.jit(on_mesh(step, mesh, rules))`.
    """
    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
            return fn(*args, **kwargs)

    return traced


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over data x fsdp; the rest replicated."""
    return NamedSharding(mesh, P(BATCH))


def logical_shardings(abstract_boxed: Any, mesh: Mesh, rules) -> Any:
    """`NamedSharding`s for a tree of logically partitioned (boxed) abstract values.

    The result has the structure of the *unboxed* tree. A dimension that the rules would split
    but that the mesh axes do not divide evenly is replicated instead (logged once per name).
    """
    def one(x):
        if not isinstance(x, nn.LogicallyPartitioned):
            return NamedSharding(mesh, P())
        spec = nn.logical_to_mesh_axes(x.names, rules)
        fixed = []
        for dim, axes in zip(x.value.shape, spec, strict=True):
            group = axes if isinstance(axes, tuple) else (axes,) if axes else ()
            size = math.prod(mesh.shape[a] for a in group)
            if size > 1 and dim % size:
                logging.info("replicating a dim of size %d (%s): not divisible by %s",
                             dim, x.names, group)
                axes = None
            fixed.append(axes)
        return NamedSharding(mesh, P(*fixed))

    return jax.tree.map(one, abstract_boxed,
                        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def like_params(tree: Any, params_shardings: Any, mesh: Mesh) -> Any:
    """Shardings for an optimizer state: every sub-tree shaped like the parameters gets the
    parameters' shardings (Adam's moments), everything else (counts) is replicated."""
    pstruct = jax.tree.structure(params_shardings)

    def is_param_tree(x):
        return jax.tree.structure(x) == pstruct and not _is_array(x)

    return jax.tree.map(lambda x: params_shardings if is_param_tree(x)
                        else NamedSharding(mesh, P()), tree, is_leaf=is_param_tree)


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))
