"""Named sites (hook points): the places where activations can be captured and intervened on.

A model declares a site by passing an activation through `site(module, name, x, axes)`:

    q = hooks.site(self, "hook_q", q, ("batch", "pos", "head", "d_head"))

Outside `jaxinterp.run` no session is active and `site` returns `x` itself, so a plain
`model.apply` is untouched (bit for bit, and with nothing extra in the compiled program).
Inside `run`, a `Session` is active for the duration of the trace. It is trace-time state
only, scoped with a `contextvars.ContextVar` the way `flax.linen.intercept_methods` scopes
interceptors: it decides, while JAX traces the model, which interventions apply at each site
and which values to capture. Nothing of it survives into the compiled function except the
arithmetic it added.

Names. A site's full name is the module's Flax path joined with dots plus the site name
(`ln_final.hook_normalized`). The layer stack (`jaxinterp.layers.stack`) calls each block inside
`with hooks.layer(block, "blocks", index, size):`, and every site below it is named
`blocks.{index}.<rest of the path>.<name>`. `index` is a Python int in an unrolled model and a
traced integer under `nn.scan`; in the scanned case an intervention on `blocks.1.x` is applied
with `jnp.where(index == 1, ...)`, and captured values come back stacked over layers (Flax `sow`
with `variable_axes={"intermediates": 0}`), which `run` splits into per-layer names. The same
names and the same numbers come out either way.

Absolute positions. When a model computes a chunk of a longer sequence against a KV cache
(`jaxinterp.generate`, suffix-only patching), it declares where the chunk lies with
`with hooks.positions(offset, seq_len):` (chunk position i is absolute position offset + i of a
sequence of seq_len positions). Sites then hand interventions a `SiteView` with `pos_offset`
and `seq_len` set, and `positions` selectors and operands with a whole-sequence position axis
are read at the chunk's absolute positions (`jaxinterp.interventions`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import fnmatch
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    import flax.linen as nn

COLLECTION = "intermediates"
"""Flax variable collection that captured site values are sown into."""

Axes = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SiteView:
    """What an intervention sees of the site it is applied at (at trace time).

    Attributes:
      name: full site name, e.g. `blocks.1.attn.hook_z` (for a scanned model, the name of the
        layer the intervention targets).
      axes: one name per axis of the activation, e.g. `("batch", "pos", "head", "d_head")`.
      shape: the activation's shape, one entry per axis.
      pos_offset: absolute position of the site's first "pos" / "query_pos" entry (an int or a
        traced int32 scalar; 0 unless a chunk of a longer sequence is computed, see
        `positions`).
      seq_len: length of the whole sequence those positions index, or None when the site's
        position axis is the whole sequence.
    """

    name: str
    axes: Axes
    shape: tuple[int, ...]
    pos_offset: Any = 0
    seq_len: int | None = None

    def describe(self) -> str:
        """`'blocks.0.attn.hook_z' of shape (2, 5, 4, 8) [batch, pos, head, d_head]`."""
        return f"'{self.name}' of shape {self.shape} [{', '.join(self.axes)}]"

    def axis(self, *names: str) -> int | None:
        """Index of the first axis called one of `names`, or None."""
        for i, a in enumerate(self.axes):
            if a in names:
                return i
        return None


class Edit(Protocol):
    """What a `Session` applies at a site (`jaxinterp.interventions.Intervention` is one):
    a `site` name or glob, and a call that returns the new activation, same shape as `x`."""

    site: str

    def __call__(self, x: jax.Array, view: SiteView) -> jax.Array: ...


@dataclasses.dataclass
class _Layer:
    path: tuple[str, ...]  # Flax path of the block module
    prefix: str  # "blocks"
    index: int | jax.Array  # Python int (unrolled) or traced int32 (nn.scan)
    size: int


@dataclasses.dataclass
class _Captured:
    names: tuple[str, ...]  # full names, one per stacked layer when scanned
    scanned: bool


class Session:
    """Trace-time record of one `run`: which sites exist, what to capture, what to change."""

    def __init__(self, capture: Sequence[str], interventions: Sequence[Edit],
                 every_site: bool = False):
        self.capture = tuple(capture)
        self.interventions = tuple(interventions)
        self.every_site = every_site  # `sites()`: optional sites are declared too (`wanted`)
        self.site_shapes: dict[str, jax.ShapeDtypeStruct] = {}
        self.site_axes: dict[str, Axes] = {}
        self.captured: dict[tuple[str, ...], _Captured] = {}
        self.capture_hits: set[str] = set()
        self.intervention_hits: set[int] = set()
        self.order: dict[str, tuple[int, int, int]] = {}  # name -> execution-order sort key
        # intervention index -> (sown key, scanned, layer slot, site name) for interventions
        # with a `statistic` (RunningMean): the value they record for the train state.
        self.stats: dict[int, tuple[tuple[str, ...], bool, int, str]] = {}
        self._layers: list[_Layer] = []
        self._seq = 0  # visits so far
        self._first_seen: dict[str, int] = {}  # template or stack prefix -> first visit
        self._positions: list[tuple[Any, int]] = []  # (offset, seq_len) of the current chunk

    # -- called from models -------------------------------------------------------------
    def visit(self, module: nn.Module, name: str, x: jax.Array, axes: Axes) -> jax.Array:
        if len(axes) != x.ndim:
            raise ValueError(f"site {name!r} declares axes {axes} for an array of shape {x.shape}")
        path = tuple(module.path)
        layer, template, candidates, names = self._names(module, name)
        self._seq += 1
        if layer is None:
            keys = [(self._first(names[0]), 0, 0)]
        else:
            keys = [(self._first(layer.prefix), i, self._first(template)) for i in candidates]
        for n, key in zip(names, keys, strict=True):
            self.site_shapes[n] = jax.ShapeDtypeStruct(x.shape, x.dtype)
            self.site_axes[n] = axes
            self.order[n] = key

        for k, iv in enumerate(self.interventions):
            hits = [fnmatch.fnmatchcase(n, iv.site) for n in names]
            if not any(hits):
                continue
            self.intervention_hits.add(k)
            target = names[hits.index(True)]
            offset, seq_len = self._positions[-1] if self._positions else (0, None)
            view = SiteView(target, axes, tuple(x.shape), offset, seq_len)
            if hasattr(iv, "statistic"):
                self._record_statistic(k, iv, module, name, x, view, hits, layer)
            new = iv(x, view).astype(x.dtype)
            if len(names) == 1:
                x = new
            else:  # traced layer index under nn.scan: select this layer's branch
                x = jnp.where(jnp.asarray(hits)[layer.index], new, x)

        wanted = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in self.capture)]
        if wanted:
            for p in self.capture:
                if any(fnmatch.fnmatchcase(n, p) for n in names):
                    self.capture_hits.add(p)
            module.sow(COLLECTION, name, x)
            scanned = layer is not None and not isinstance(layer.index, int)
            self.captured[(*path, name)] = _Captured(tuple(names), scanned)
        return x

    def _names(self, module: nn.Module, name: str):
        """(layer, name template, layer indices, full names) of a site: inside a layer stack
        whose index is traced (nn.scan), one full name per layer the site may be in."""
        path = tuple(module.path)
        layer = self._layers[-1] if self._layers else None
        if layer is not None and path[: len(layer.path)] == layer.path:
            template = ".".join([layer.prefix, "{i}", *path[len(layer.path) :], name])
            if isinstance(layer.index, int):
                candidates = [layer.index]
            else:
                candidates = list(range(layer.size))
            return layer, template, candidates, [template.format(i=i) for i in candidates]
        return None, None, None, [".".join([*path, name])]

    def wants(self, module: nn.Module, name: str) -> bool:
        """Whether a site would be captured or intervened on (or `sites()` is listing)."""
        if self.every_site:
            return True
        names = self._names(module, name)[3]
        patterns = (*self.capture, *(iv.site for iv in self.interventions))
        return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)

    def _record_statistic(self, k, iv, module, name, x, view, hits, layer) -> None:
        """Sows `iv.statistic(x, view)` so that `collect_stats` can return it."""
        if sum(hits) > 1 or (k in self.stats and self.stats[k][3] != view.name):
            raise ValueError(f"{type(iv).__name__} site pattern {iv.site!r} matches more than "
                             f"one site (e.g. {view.name!r}); its statistic belongs to one "
                             "site: use one intervention per site.")
        key = f"{name}__stat{k}"
        module.sow(COLLECTION, key, iv.statistic(x, view))
        scanned = layer is not None and not isinstance(layer.index, int)
        self.stats[k] = ((*tuple(module.path), key), scanned, hits.index(True), view.name)

    # -- called from run ------------------------------------------------------------------
    def collect_stats(self, state: dict[str, Any]) -> dict[int, jax.Array]:
        """`{intervention index: statistic}` for interventions with a `statistic`."""
        from flax import traverse_util

        flat = traverse_util.flatten_dict(state.get(COLLECTION, {}))
        out = {}
        for k, (key, scanned, slot, _) in self.stats.items():
            value = flat[key][-1]
            out[k] = value[slot] if scanned else value
        return out

    def collect(self, state: dict[str, Any]) -> dict[str, jax.Array]:
        """Turns the sown `intermediates` collection into `{full site name: array}`."""
        from flax import traverse_util

        flat = traverse_util.flatten_dict(state.get(COLLECTION, {}))
        cache: dict[str, jax.Array] = {}
        for key, values in flat.items():
            info = self.captured.get(key)
            if info is None:
                continue
            value = values[-1]
            if info.scanned:
                for i, n in enumerate(info.names):
                    if any(fnmatch.fnmatchcase(n, p) for p in self.capture):
                        cache[n] = value[i]
            else:
                cache[info.names[0]] = value
        return self.sorted(cache)

    def sorted(self, d: dict[str, Any]) -> dict[str, Any]:
        """`d` (keyed by site name) in execution order, layer by layer."""
        return dict(sorted(d.items(), key=lambda kv: self.order[kv[0]]))

    def _first(self, key: str) -> int:
        return self._first_seen.setdefault(key, self._seq)

    def check_all_matched(self) -> None:
        """Raises if a capture pattern or an intervention matched no site."""
        for p in self.capture:
            if p not in self.capture_hits:
                raise ValueError(f"capture pattern {p!r} matches no site. {self._nearest(p)}")
        for k, iv in enumerate(self.interventions):
            if k not in self.intervention_hits:
                raise ValueError(
                    f"{type(iv).__name__} targets site {iv.site!r}, which matches no site of "
                    f"this model. {self._nearest(iv.site)}"
                )

    def _nearest(self, pattern: str) -> str:
        names = list(self.sorted(self.site_shapes))
        probe = pattern.replace("*", "0").replace("?", "0")
        close = difflib.get_close_matches(probe, names, n=5, cutoff=0.4)
        if not close:
            close = names[:5]
        return f"Nearest valid names: {', '.join(close)} (see jaxinterp.sites(model, ...))."

    @contextlib.contextmanager
    def _layer(self, layer: _Layer) -> Iterator[None]:
        self._layers.append(layer)
        try:
            yield
        finally:
            self._layers.pop()


_SESSION: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "jaxinterp_session", default=None
)


def wanted(module: nn.Module, name: str) -> bool:
    """Whether the optional site `name` of `module` is needed: a `run` captures or intervenes
    on it, or `sites` is listing every site. Layers that compute something extra only to
    expose it at a site (e.g. per-edge KAN outputs) check this first and otherwise take their
    fast path (a `run` with no capture or intervention there, as the trainer's, stays fused)."""
    session = _SESSION.get()
    return session is not None and session.wants(module, name)


def site(module: nn.Module, name: str, x: jax.Array, axes: Axes) -> jax.Array:
    """Declares a named site. Identity unless called under `jaxinterp.run`.

    Args:
      module: the module the site belongs to; its Flax path prefixes the name.
      name: the site's own name, e.g. `"hook_q"`.
      x: the activation.
      axes: one name per axis of `x`; interventions use "pos"/"query_pos" and "head".

    Returns:
      `x`, or `x` after the active interventions that target this site.
    """
    session = _SESSION.get()
    if session is None:
        return x
    return session.visit(module, name, x, axes)


@contextlib.contextmanager
def layer(module: nn.Module, prefix: str, index: int | jax.Array, size: int) -> Iterator[None]:
    """Names every site below `module` `{prefix}.{index}.…` (see the module docstring)."""
    session = _SESSION.get()
    if session is None:
        yield
        return
    with session._layer(_Layer(tuple(module.path), prefix, index, size)):
        yield


@contextlib.contextmanager
def positions(offset: int | jax.Array, seq_len: int) -> Iterator[None]:
    """Declares that the sites traced inside compute absolute positions `offset + i` (i: the
    site's "pos" / "query_pos" index) of a sequence of `seq_len` positions (see the module
    docstring). A no-op outside a session."""
    session = _SESSION.get()
    if session is None:
        yield
        return
    session._positions.append((offset, int(seq_len)))
    try:
        yield
    finally:
        session._positions.pop()


@contextlib.contextmanager
def active(session: Session | None) -> Iterator[Session | None]:
    """Makes `session` the active one while a model is traced (`None`: no session, e.g. to
    apply a helper model such as an SAE inside a run without registering its sites)."""
    token = _SESSION.set(session)
    try:
        yield session
    finally:
        _SESSION.reset(token)


def sites(model: nn.Module, *inputs: Any, **apply_kwargs: Any) -> dict[str, jax.ShapeDtypeStruct]:
    """Every site of `model` on `inputs`, as `{name: jax.ShapeDtypeStruct}`.

    Nothing is run or allocated: the model is initialised and applied under `jax.eval_shape`.
    Names come in execution order, layer by layer.
    """
    session = Session(capture=(), interventions=(), every_site=True)

    def trace(*xs):
        variables = model.init(jax.random.key(0), *xs, **apply_kwargs)
        with active(session):
            return model.apply(variables, *xs, **apply_kwargs)

    jax.eval_shape(trace, *inputs)
    return session.sorted(session.site_shapes)
