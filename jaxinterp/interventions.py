"""Interventions: data that says how to change the activation at a named site.

Each intervention is a pytree (a `flax.struct.dataclass`): the site name and any mode string
are static, every array (vectors, scales, masks, indices, keys) is a leaf. So interventions pass
through `jax.jit` as arguments, stack and `jax.vmap` (a sweep over steering strengths is one
compiled call), differentiate (`jax.grad` with respect to `Add.scale`), and shard.

`site` is a full site name or a glob (`"blocks.*.attn.hook_z"` applies at every layer).

Where an intervention applies within the site is narrowed by two optional selectors:

  positions: indices (ints, negative allowed) or a bool mask over the site's "pos" axis
             ("query_pos" for attention scores and patterns).
  heads:     indices or a bool mask over the site's "head" axis (`hook_q/k/v/z`, patterns).

Outside the selection the activation is left exactly as it was. Shapes are checked against the
site when the model is traced, with errors that name the site and both shapes; index ranges
are checked whenever the indices are concrete (not traced).

Positions are absolute. When the model computes a chunk of a longer sequence against a KV cache
(a decode step of `jaxinterp.generate`, suffix-only patching; the site's `SiteView` then has
`seq_len` set, see `jaxinterp.hooks.positions`), `positions` index (or mask) the whole sequence
of `seq_len` positions, and an operand whose position axis has `seq_len` entries (e.g. a
`Patch` source captured from a full run) is read at the chunk's positions. So the same
intervention means the same thing with and without the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxinterp.hooks import SiteView

ArrayLike = Any  # jax.Array | np.ndarray | float | Sequence[int]


class Intervention:
    """Base class. Subclasses are `flax.struct.dataclass`es with a static `site` field."""

    site: str
    positions: ArrayLike | None
    heads: ArrayLike | None

    def __call__(self, x: jax.Array, view: SiteView) -> jax.Array:
        """Returns the activation after the intervention (same shape as `x`)."""
        new = jnp.broadcast_to(self._new_value(x, view), x.shape)
        where = _selection(self, view)
        return new if where is None else jnp.where(where, new, x)

    def _new_value(self, x: jax.Array, view: SiteView) -> jax.Array:
        raise NotImplementedError

    def _operand(self, field: str, view: SiteView, dtype: Any = None) -> jax.Array:
        """Field `field` as an array (of `dtype`), checked to broadcast to the site's shape."""
        value = _at_positions(getattr(self, field), view)
        _check_broadcast(self, field, value, view)
        return jnp.asarray(value, dtype)

    def _name(self) -> str:
        return type(self).__name__


@struct.dataclass
class Add(Intervention):
    """Adds `scale * vector` (a steering vector): `x + scale * vector`.

    `vector` broadcasts against the site, e.g. `[d_model]` at a residual site or
    `[head, d_head]` at `hook_z`. `scale` is a scalar (or broadcastable) leaf, so a strength
    sweep is a `vmap` over it and `jax.grad` differentiates with respect to it.
    """

    site: str = struct.field(pytree_node=False)
    vector: ArrayLike
    scale: ArrayLike = 1.0
    positions: ArrayLike | None = None
    heads: ArrayLike | None = None

    def _new_value(self, x, view):
        vector = self._operand("vector", view)
        return x + self._operand("scale", view) * vector


@struct.dataclass
class Scale(Intervention):
    """Multiplies the activation: `x * scale` (per head: `Scale(site, 0.5, heads=[3])`)."""

    site: str = struct.field(pytree_node=False)
    scale: ArrayLike
    positions: ArrayLike | None = None
    heads: ArrayLike | None = None

    def _new_value(self, x, view):
        return x * self._operand("scale", view)


@struct.dataclass
class Clamp(Intervention):
    """Sets the activation to `value` where `mask` (and the selectors) hold.

    `value` and `mask` broadcast against the site; `mask=None` means everywhere, so
    `Clamp("blocks.0.mlp.hook_post", 0.0, mask=neuron_mask)` clamps chosen neurons.
    """

    site: str = struct.field(pytree_node=False)
    value: ArrayLike
    mask: ArrayLike | None = None
    positions: ArrayLike | None = None
    heads: ArrayLike | None = None

    def __call__(self, x, view):
        new = jnp.broadcast_to(self._operand("value", view, x.dtype), x.shape)
        where = _selection(self, view)
        if self.mask is not None:
            mask = self._operand("mask", view, bool)
            where = mask if where is None else where & mask
        return new if where is None else jnp.where(where, new, x)


@struct.dataclass
class Ablate(Intervention):
    """Ablates the activation: `how` in "zero", "mean" or "resample".

    zero: sets it to 0. mean: sets it to `value` (e.g. a dataset mean from a cache) or, when
    `value` is None, to the mean over this batch. resample: replaces each example's activation
    with that of another example of the batch, chosen by a permutation drawn from `key`.
    """

    site: str = struct.field(pytree_node=False)
    how: str = struct.field(pytree_node=False, default="zero")
    value: ArrayLike | None = None
    key: jax.Array | None = None
    positions: ArrayLike | None = None
    heads: ArrayLike | None = None

    def __post_init__(self):
        if self.how not in ("zero", "mean", "resample"):
            raise ValueError(
                f"Ablate(how={self.how!r}) at {self.site!r}: how must be 'zero', 'mean' or "
                "'resample'."
            )
        if self.how == "resample" and self.key is None:
            raise ValueError(
                f"Ablate(how='resample') at {self.site!r} needs key=jax.random.key(...).")

    def _new_value(self, x, view):
        if self.how == "zero":
            return jnp.zeros_like(x)
        batch = view.axis("batch")
        if self.how == "mean":
            if self.value is not None:
                return self._operand("value", view, x.dtype)
            if batch is None:
                raise ValueError(f"Ablate(how='mean') at site {view.describe()} needs `value`: "
                                 "the site has no batch axis to average over.")
            return jnp.mean(x, axis=batch, keepdims=True)
        if batch is None:
            raise ValueError(f"Ablate(how='resample') at site {view.describe()}: no batch axis.")
        perm = jax.random.permutation(self.key, x.shape[batch])
        return jnp.take(x, perm, axis=batch)


@struct.dataclass
class Patch(Intervention):
    """Replaces the activation with `source` (e.g. the same site in a clean run's cache),
    cast to the site's dtype; `source` broadcasts against the site."""

    site: str = struct.field(pytree_node=False)
    source: ArrayLike
    positions: ArrayLike | None = None
    heads: ArrayLike | None = None

    def _new_value(self, x, view):
        return self._operand("source", view, x.dtype)


@struct.dataclass
class ProjectOut(Intervention):
    """Removes the subspace spanned by `directions` (`[d]` or `[k, d]`, `d` = last axis).

    The directions need not be orthonormal: they are orthonormalised (QR) first, so the result
    is `x - x Q Qᵀ` with `Q` an orthonormal basis of their span.
    """

    site: str = struct.field(pytree_node=False)
    directions: ArrayLike
    positions: ArrayLike | None = None
    heads: ArrayLike | None = None

    def _new_value(self, x, view):
        d = jnp.atleast_2d(jnp.asarray(self.directions, jnp.float32))  # [k, d]
        if d.ndim != 2 or d.shape[-1] != view.shape[-1]:
            raise ValueError(
                f"ProjectOut at site {view.describe()}: directions have shape "
                f"{jnp.shape(self.directions)}; expected [d] or [k, d] with d = {view.shape[-1]}."
            )
        q, _ = jnp.linalg.qr(d.T)  # [d, k], orthonormal columns
        xf = x.astype(jnp.float32)
        coeff = jnp.einsum("...d,dk->...k", xf, q)  # contract the site's last axis
        return xf - jnp.einsum("...k,dk->...d", coeff, q)


@struct.dataclass
class Apply(Intervention):
    """Applies any function: `fn(x, params)` (or `fn(x)` when `params` is None).

    `fn` is static (hashable; a top-level function or `functools.partial`), `params` is a pytree
    of arrays that jit, vmap and grad see. The result must have the site's shape.
    """

    site: str = struct.field(pytree_node=False)
    fn: Callable[..., jax.Array] = struct.field(pytree_node=False)
    params: Any = None
    positions: ArrayLike | None = None
    heads: ArrayLike | None = None

    def _new_value(self, x, view):
        new = self.fn(x) if self.params is None else self.fn(x, self.params)
        if jnp.shape(new) != x.shape:
            raise ValueError(
                f"Apply at site {view.describe()}: fn returned shape {jnp.shape(new)}, "
                f"expected {x.shape}."
            )
        return new


@struct.dataclass
class RunningMean(Intervention):
    """Clamps the activation to its running mean over training (an exponential moving average
    of batch means, kept in the train state):

        m_t = decay * m_{t-1} + (1 - decay) * mean_batch(x_t),    m_1 = mean_batch(x_1)

    With `update=True` (training) the site is set to `m_t`, which includes this batch; with
    `update=False` (evaluation) to the stored `mean`, unchanged. `mean` has the site's shape with
    its batch axis of size 1; `count` is the number of batches averaged so far. The mean is
    computed over the whole site (selectors only choose where it is written) and carries no
    gradient. The trainer creates `mean` and `count` (a config spec leaves them out) and stores
    `m_t` after each step: `jaxinterp.run_with_state` returns it. The site pattern must match
    exactly one site (use one RunningMean per layer).
    """

    site: str = struct.field(pytree_node=False)
    mean: ArrayLike | None = None
    count: ArrayLike = 0
    decay: float = struct.field(pytree_node=False, default=0.99)
    update: bool = struct.field(pytree_node=False, default=True)
    positions: ArrayLike | None = None
    heads: ArrayLike | None = None

    def __post_init__(self):
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"RunningMean at {self.site!r}: decay={self.decay!r} must be in "
                             "[0, 1).")

    def _new_value(self, x, view):
        return self.statistic(x, view) if self.update else self._stored(view).astype(x.dtype)

    def statistic(self, x: jax.Array, view: SiteView) -> jax.Array:
        """`m_t`: the running mean after this batch (shape: the site's, batch axis 1)."""
        batch = view.axis("batch")
        if batch is None:
            raise ValueError(f"RunningMean at site {view.describe()}: the site has no batch "
                             "axis to average over.")
        batch_mean = jax.lax.stop_gradient(
            jnp.mean(x.astype(jnp.float32), axis=batch, keepdims=True))
        old = self._stored(view)
        return jnp.where(jnp.asarray(self.count) > 0,
                         self.decay * old + (1.0 - self.decay) * batch_mean, batch_mean)

    def _stored(self, view: SiteView) -> jax.Array:
        if self.mean is None:
            raise ValueError(f"RunningMean at site {view.describe()} has no `mean`: the trainer "
                             "creates it (or pass mean=zeros of the site's shape, batch axis 1).")
        want = tuple(1 if a == "batch" else n for a, n in zip(view.axes, view.shape,
                                                                 strict=True))
        if tuple(jnp.shape(self.mean)) != want:
            raise ValueError(f"RunningMean at site {view.describe()}: mean has shape "
                             f"{tuple(jnp.shape(self.mean))}, expected {want} (the site's "
                             "shape with batch axis 1).")
        return jax.lax.stop_gradient(jnp.asarray(self.mean, jnp.float32))


KINDS = {c.__name__: c for c in (Add, Scale, Clamp, Ablate, Patch, ProjectOut, RunningMean)}


def from_spec(spec: dict[str, Any]) -> Intervention:
    """An intervention from a config dict, e.g. for training-time interventions:

        {"kind": "Ablate", "site": "blocks.0.attn.hook_z", "how": "mean", "heads": [1]}

    Lists become arrays. `Apply` (which needs a function) is not available from a config.
    """
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in KINDS:
        raise ValueError(f"intervention kind {kind!r}; choose from {sorted(KINDS)}")
    fields = {f for f in KINDS[kind].__dataclass_fields__}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise ValueError(f"{kind} has no field(s) {unknown}; fields: {sorted(fields)}")
    spec = {k: np.asarray(v) if isinstance(v, (list, tuple)) else v for k, v in spec.items()}
    return KINDS[kind](**spec)


# -- helpers ----------------------------------------------------------------------------------


def _check_broadcast(iv: Intervention, what: str, value: ArrayLike, view: SiteView) -> None:
    shape = tuple(jnp.shape(value))
    try:
        ok = np.broadcast_shapes(shape, view.shape) == view.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{iv._name()} at site {view.describe()}: {what} has shape {shape}, which does not "
            f"broadcast to the site's shape {view.shape}."
        )


def _selection(iv: Intervention, view: SiteView) -> jax.Array | None:
    """Bool mask broadcastable to the site, True where `iv` applies; None means everywhere."""
    where = None
    for value, label, axis_names in (
        (iv.positions, "positions", ("pos", "query_pos")),
        (iv.heads, "heads", ("head",)),
    ):
        if value is None:
            continue
        axis = view.axis(*axis_names)
        if axis is None:
            raise ValueError(
                f"{iv._name()} at site {view.describe()} selects {label}, but the site has no "
                f"{' or '.join(repr(a) for a in axis_names)} axis."
            )
        if label == "positions" and view.seq_len is not None:  # absolute positions of a chunk
            mask = _axis_mask(iv, value, view.seq_len, label, view)
            mask = jax.lax.dynamic_slice_in_dim(mask, view.pos_offset, view.shape[axis])
        else:
            mask = _axis_mask(iv, value, view.shape[axis], label, view)
        shape = [1] * len(view.shape)
        shape[axis] = view.shape[axis]
        mask = mask.reshape(shape)
        where = mask if where is None else where & mask
    return where


def _whole(label: str, view: SiteView) -> str:
    if label == "positions" and view.seq_len is not None:
        return (f" (positions are absolute: the site is a chunk of a sequence of "
                f"{view.seq_len} positions)")
    return ""


def _at_positions(value: ArrayLike, view: SiteView) -> ArrayLike:
    """`value` read at the chunk's absolute positions when its position axis (aligned with the
    site's from the right, as in broadcasting) spans the whole sequence of `view.seq_len`."""
    if value is None or view.seq_len is None:
        return value
    axis = view.axis("pos", "query_pos")
    shape = jnp.shape(value)
    k = None if axis is None else axis - (len(view.shape) - len(shape))
    if k is None or not 0 <= k < len(shape) or shape[k] != view.seq_len:
        return value
    return jax.lax.dynamic_slice_in_dim(jnp.asarray(value), view.pos_offset, view.shape[axis], k)


def _axis_mask(iv: Intervention, value: ArrayLike, n: int, label: str, view: SiteView):
    """[n] bool mask from indices or a bool mask, with range checks on concrete indices."""
    arr = jnp.asarray(value)
    if arr.dtype == jnp.bool_:
        if arr.shape != (n,):
            raise ValueError(
                f"{iv._name()} at site {view.describe()}: {label} mask has shape {arr.shape}, "
                f"expected ({n},)" + _whole(label, view) + ".")
        return arr
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise ValueError(f"{iv._name()} at site {view.describe()}: {label} must be integer "
                         f"indices or a bool mask, got dtype {arr.dtype}.")
    if not isinstance(value, jax.core.Tracer) and not isinstance(arr, jax.core.Tracer):
        idx = np.asarray(arr).reshape(-1)
        bad = idx[(idx < -n) | (idx >= n)]
        if bad.size:
            raise ValueError(
                f"{iv._name()} at site {view.describe()}: {label[:-1]} index {int(bad[0])} is out "
                f"of range; the site has {n} {label} (valid: {-n}..{n - 1})"
                + _whole(label, view) + ".")
    return jnp.zeros((n,), bool).at[arr.reshape(-1)].set(True)
