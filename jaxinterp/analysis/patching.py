"""Activation patching: which activations carry the difference between two inputs.

Activation patching (Vig et al. 2020; Meng et al. 2022, "causal tracing"; Heimersheim & Nanda
2024, "How to use and interpret activation patching") runs the model on a CORRUPTED input and
replaces one activation (a layer's residual stream at one position, one attention head, ...)
with its value on the CLEAN input. If the metric (e.g. the logit difference between the clean
and the corrupted answer) recovers, that activation carries the information that distinguishes
them. We follow TransformerLens's `patching` module: the clean activation is patched into the
corrupted run, the result is `metric(patched output)` (not a difference), and results are laid
out `[layer, pos]`, `[layer, head]` or `[layer, pos, head]`.

    result = act_patch(model, variables, clean_tokens, corrupted_tokens, metric,
                       site="resid_pre", by="layer_pos")        # [n_layers, pos]

Sites (`site=`) and sweeps (`by=`):

  site                                         by                           result
  resid_pre, resid_mid, resid_post,            layer_pos                    [layer, pos]
  attn_out, mlp_out  ([batch, pos, d_model])
  z, q, k, v  ([batch, pos, head, d_head])     layer_head (all positions)   [layer, head]
                                               layer_pos_head               [layer, pos, head]
  pattern  ([batch, head, query_pos, key_pos]) layer_head (whole pattern)   [layer, head]
                                               layer_pos_head (one query    [layer, pos, head]
                                               row: pos is the query pos)

Under grouped-query attention `k` and `v` have `n_kv_heads` heads, so their head axis is the KV
head. A patch applies to every example of the batch; `metric(output) -> scalar` usually averages
over it.

How it runs: for each layer, one compiled, `jax.vmap`ped call of `jaxinterp.run` over the sweep's
cells (positions, heads or both), each cell a `Patch` whose `positions` / `heads` are one-hot
bool masks. Because only the patched layer's intervention depends on the vmapped mask, the layers
before it are computed once per call, not once per cell. `batch_size` bounds memory: the cells of
a layer are processed in chunks of that many (each chunk one call of the same compiled function).

Suffix-only patching (causal `Transformer`s, the default there; `suffix=False` for the path
above). Patching position p of layer l leaves every position < p unchanged at every layer, and
every layer < l unchanged. So the corrupted run is computed once with a KV cache (every layer's
keys and values and `hook_resid_pre` at all T positions, and its logits), and each cell
recomputes only positions [p, T) of layers l .. n_layers - 1, starting from the corrupted
`blocks.{l}.hook_resid_pre` of those positions, attending to the cached keys and values of
positions < p (`jaxinterp.models.transformer.forward_from`, the mechanism `jaxinterp.generate`
uses). The logits of positions < p are the corrupted run's; those of [p, T) are unembedded one
position at a time, so XLA drops the unembedding of positions the metric does not read. p is 0
for `layer_head` (all positions patched) and the patched (query) position otherwise. The suffix
starts are grouped: with `suffix_starts=S`, the positions are split into S contiguous groups
and a cell whose position lies in the group starting at s recomputes [s, T) (s <= p, so the
result is the same); each group is one compiled function (the layer is a traced loop bound),
called once per layer and vmapped over the group's cells. `suffix_starts=None` gives every
position its own start (least compute, T compilations per site). Results equal the full
recomputation to float rounding (tested to 1e-5 for every site and sweep).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import hooks
from jaxinterp.hooks import sites as list_sites
from jaxinterp.interventions import Patch
from jaxinterp.models import transformer as tfm
from jaxinterp.run import run

Metric = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class SiteKind:
    """A kind of per-layer site that patching sweeps over.

    Attributes:
      hook: name below `blocks.{layer}.`, e.g. `"attn.hook_z"`.
      pos_axis: the site's position axis (the query position for patterns).
      head_axis: the site's head axis, or None.
      bys: the sweeps valid at this site.
    """

    hook: str
    pos_axis: int
    head_axis: int | None
    bys: tuple[str, ...]

    def name(self, layer: int) -> str:
        return f"blocks.{layer}.{self.hook}"


_RESID = ("layer_pos",)
_HEADS = ("layer_head", "layer_pos_head")
SITE_KINDS: dict[str, SiteKind] = {
    "resid_pre": SiteKind("hook_resid_pre", 1, None, _RESID),
    "resid_mid": SiteKind("hook_resid_mid", 1, None, _RESID),
    "resid_post": SiteKind("hook_resid_post", 1, None, _RESID),
    "attn_out": SiteKind("hook_attn_out", 1, None, _RESID),
    "mlp_out": SiteKind("hook_mlp_out", 1, None, _RESID),
    "z": SiteKind("attn.hook_z", 1, 2, _HEADS),
    "q": SiteKind("attn.hook_q", 1, 2, _HEADS),
    "k": SiteKind("attn.hook_k", 1, 2, _HEADS),
    "v": SiteKind("attn.hook_v", 1, 2, _HEADS),
    "pattern": SiteKind("attn.hook_pattern", 2, 1, _HEADS),
}
BYS = ("layer_pos", "layer_head", "layer_pos_head")


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A resolved (site, by, layers) sweep on a given model and input shape."""

    kind: SiteKind
    by: str
    layers: tuple[int, ...]
    n_pos: int
    n_heads: int | None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.kind.name(layer) for layer in self.layers)

    def cells(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """One-hot `(positions [cells, pos], heads [cells, head])` bool masks (None: all), the
        cells in the result's row-major order (pos before head)."""
        pos = np.eye(self.n_pos, dtype=bool)
        if self.by == "layer_pos":
            return pos, None
        head = np.eye(self.n_heads, dtype=bool)
        if self.by == "layer_head":
            return None, head
        return np.repeat(pos, self.n_heads, axis=0), np.tile(head, (self.n_pos, 1))

    @property
    def cell_shape(self) -> tuple[int, ...]:
        return {"layer_pos": (self.n_pos,), "layer_head": (self.n_heads,),
                "layer_pos_head": (self.n_pos, self.n_heads)}[self.by]

    def reduce(self, x: jax.Array) -> jax.Array:
        """Sums a site-shaped array over every axis but the sweep's: -> `cell_shape`."""
        keep = {"layer_pos": (self.kind.pos_axis,), "layer_head": (self.kind.head_axis,),
                "layer_pos_head": (self.kind.pos_axis, self.kind.head_axis)}[self.by]
        summed = x.sum(axis=tuple(a for a in range(x.ndim) if a not in keep))
        return summed.T if keep[0] > keep[-1] else summed  # [pos, head] order


def resolve_sweep(model: nn.Module, inputs: jax.Array, site: str, by: str,
                  layers: Sequence[int] | None) -> Sweep:
    """Validates `site`, `by` and `layers` against `model` and returns the sweep.

    Raises:
      ValueError: unknown site kind or sweep, a sweep the site does not support, a site the
        model lacks (e.g. `mlp_out` of an attention-only model), or a layer out of range.
    """
    if site not in SITE_KINDS:
        raise ValueError(f"unknown patching site {site!r}; valid sites: {', '.join(SITE_KINDS)}")
    kind = SITE_KINDS[site]
    if by not in BYS:
        raise ValueError(f"unknown by={by!r}; valid: {', '.join(BYS)}")
    if by not in kind.bys:
        why = " (it has no head axis)" if kind.head_axis is None else ""
        raise ValueError(f"by={by!r} is not valid for site {site!r}{why}; "
                         f"valid for {site!r}: {', '.join(kind.bys)}")
    shapes = list_sites(model, inputs)
    n_layers = 0
    while f"blocks.{n_layers}.hook_resid_pre" in shapes:
        n_layers += 1
    if kind.name(0) not in shapes:
        raise ValueError(f"this model has no site {kind.name(0)!r} (site={site!r}); "
                         "attention-only models have no resid_mid or mlp_out")
    if layers is None:
        layers = tuple(range(n_layers))
    else:
        layers = tuple(int(x) for x in np.asarray(layers).reshape(-1))
        bad = [x for x in layers if not 0 <= x < n_layers]
        if bad:
            raise ValueError(f"layer {bad[0]} is out of range: the model has {n_layers} layers "
                             f"(valid: 0..{n_layers - 1})")
        if not layers:
            raise ValueError("layers is empty; pass None for every layer")
    shape = shapes[kind.name(0)].shape
    n_heads = None if kind.head_axis is None else shape[kind.head_axis]
    return Sweep(kind, by, layers, shape[kind.pos_axis], n_heads)


def check_pair(clean_inputs: jax.Array, corrupted_inputs: jax.Array) -> None:
    """Clean and corrupted inputs must have the same shape and dtype."""
    a, b = jnp.shape(clean_inputs), jnp.shape(corrupted_inputs)
    if a != b:
        raise ValueError(f"clean and corrupted inputs must have the same shape; got {a} (clean) "
                         f"and {b} (corrupted)")


def check_metric(model: nn.Module, variables: Any, inputs: jax.Array, metric: Metric) -> None:
    """`metric(model output)` must be a hashable function returning a scalar (checked with
    `jax.eval_shape`: nothing runs)."""
    try:
        hash(metric)
    except TypeError:
        raise ValueError(f"metric {metric!r} is not hashable (it is a static argument of "
                         "jax.jit); use a function that closes over its arrays") from None
    out = jax.eval_shape(model.apply, variables, inputs)
    value = jax.eval_shape(metric, out)
    shape = getattr(value, "shape", None)
    if shape != ():
        raise ValueError(f"metric must return a scalar, got {value!r} (shape {shape}); reduce "
                         "over the batch, e.g. with .mean()")


def check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and (not isinstance(batch_size, int | np.integer)
                                   or isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")


def chunked(fn: Callable[..., jax.Array], masks: Sequence[np.ndarray | None],
            batch_size: int | None) -> jax.Array:
    """`fn(*masks)` over the leading (cell) axis in chunks of `batch_size` cells.

    The last chunk is padded with all-False masks (a patch that changes nothing), so every
    chunk has the same shape and `fn` compiles once.
    """
    n = next(m.shape[0] for m in masks if m is not None)
    check_batch_size(batch_size)
    if batch_size is None or batch_size >= n:
        return fn(*masks)
    pad = -n % batch_size
    masks = [None if m is None else np.concatenate([m, np.zeros((pad, *m.shape[1:]), bool)])
             for m in masks]
    outs = [fn(*(None if m is None else m[i:i + batch_size] for m in masks))
            for i in range(0, n + pad, batch_size)]
    return jnp.concatenate(outs)[:n]


@functools.partial(jax.jit, static_argnames=("model", "metric", "name"))
def patched_metrics(variables, inputs, source, positions, heads, *, model, metric, name):
    """metric(run on `inputs` with `source` patched in at `name`) for each cell: [cells].

    The compiled sweep that `act_patch` runs once per layer (and per chunk of `batch_size`
    cells); public so that benchmarks can lower and inspect it.

    Args:
      inputs: the corrupted inputs, e.g. tokens [batch, pos].
      source: the clean activation at site `name` (its shape as `ji.run` captures it).
      positions: bool [cells, pos] (or None): the positions each cell patches.
      heads: bool [cells, head] (or None): the heads each cell patches.
    """

    def one(pos_mask, head_mask):
        patch = Patch(name, source, positions=pos_mask, heads=head_mask)
        out, _ = run(model, variables, inputs, interventions=[patch])
        return metric(out)

    return jax.vmap(one)(positions, heads)


@functools.partial(jax.jit, static_argnames=("model", "names"))
def _capture(variables, inputs, *, model, names):
    return run(model, variables, inputs, capture=names)


def act_patch(model: nn.Module, variables: Any, clean_inputs: jax.Array,
              corrupted_inputs: jax.Array, metric: Metric, site: str, by: str, *,
              layers: Sequence[int] | None = None, batch_size: int | None = None,
              suffix: bool | None = None, suffix_starts: int | None = 4) -> jax.Array:
    """Patches each clean activation into the corrupted run and returns the metric.

    Args:
      model, variables: a jaxinterp transformer and its variables.
      clean_inputs, corrupted_inputs: token arrays of the same shape, e.g. `[batch, pos]`.
      metric: `metric(model output) -> scalar` (e.g. mean logit difference at the last
        position). It must be hashable (a function; it is a static argument of `jax.jit`).
      site: one of `SITE_KINDS` (see the module docstring).
      by: "layer_pos", "layer_head" or "layer_pos_head" (valid combinations: module docstring).
      layers: the layers to sweep (default: all), in the order of the result's first axis.
      batch_size: cells (positions, heads or (pos, head) pairs) per compiled call; None: all
        the cells of a layer in one call. Memory grows with it; the result does not change.
        (Suffix-only: head cells per call; each position is its own call.)
      suffix: recompute only the suffix (module docstring). None: when the model allows it (a
        causal `Transformer` without register tokens); True: require it; False: never.
      suffix_starts: how many distinct suffix starts (compiled functions per site) the
        suffix-only sweep uses; None: one per position (module docstring).

    Returns:
      float32 `[layer, pos]`, `[layer, head]` or `[layer, pos, head]`: entry `[i, ...]` is
      `metric(output of the corrupted run with site {site} of layer layers[i] replaced by its
      clean value at that pos / head)`.

    Raises:
      ValueError: an unknown site or by, an invalid combination, a layer out of range, inputs
        of different shapes, or a metric that does not return a scalar.
    """
    check_pair(clean_inputs, corrupted_inputs)
    check_batch_size(batch_size)
    sweep = resolve_sweep(model, corrupted_inputs, site, by, layers)
    check_metric(model, variables, corrupted_inputs, metric)
    if suffix_starts is not None and (not isinstance(suffix_starts, int | np.integer)
                                      or isinstance(suffix_starts, bool) or suffix_starts < 1):
        raise ValueError(f"suffix_starts must be a positive int or None, got {suffix_starts!r}")
    if use_suffix(model, suffix):
        return _suffix_act_patch(model, variables, clean_inputs, corrupted_inputs, metric, sweep,
                                 batch_size, suffix_starts)
    _, clean_cache = _capture(variables, clean_inputs, model=model, names=sweep.names)
    positions, heads = sweep.cells()
    rows = []
    for name in sweep.names:
        fn = functools.partial(patched_metrics, variables, corrupted_inputs, clean_cache[name],
                               model=model, metric=metric, name=name)
        rows.append(chunked(fn, [positions, heads], batch_size).reshape(sweep.cell_shape))
    return jnp.stack(rows).astype(jnp.float32)


# -- suffix-only patching (causal transformers) ----------------------------------------------

def use_suffix(model: nn.Module, suffix: bool | None, caller: str = "act_patch") -> bool:
    """Whether to patch suffix-only: `suffix` (True raises a ValueError naming `caller` where
    the model does not allow it), or for None whether it does (a causal `Transformer` without
    register tokens)."""
    ok = (isinstance(model, tfm.Transformer) and model.config.causal
          and not model.config.n_register_tokens)
    if suffix and not ok:
        tfm.check_transformer(model, f"{caller}(suffix=True)")
        tfm.check_cacheable(model.config, f"{caller}(suffix=True)")
    return ok if suffix is None else bool(suffix)


@functools.partial(jax.jit, static_argnames=("model",))
def cached_corrupted_run(variables, inputs, *, model):
    """The corrupted run of suffix-only patching: (logits [batch, T, vocab], the KV cache of
    all T positions, every layer's `hook_resid_pre` stacked [n_layers, batch, T, d_model])."""
    n_layers = model.config.n_layers
    cache = tfm.init_cache(model, inputs.shape[0], inputs.shape[1])
    (logits, cache), captured = run(model, variables, inputs, capture="blocks.*.hook_resid_pre",
                                    cache=cache, offset=0)
    resid = jnp.stack([captured[f"blocks.{i}.hook_resid_pre"] for i in range(n_layers)])
    return logits, cache, resid


@functools.partial(jax.jit, static_argnames=("model", "metric", "hook", "offset"))
def suffix_metrics(blocks, variables, corrupted_logits, cache, resid, source, layer, positions,
                   heads, *, model, metric, hook, offset):
    """metric of the corrupted run with `source` patched in at `blocks.{layer}.{hook}`, each
    cell recomputing only positions [offset, T) of layers >= `layer`: [cells].

    The compiled function of suffix-only `act_patch`, one per `offset` (public so that
    benchmarks can lower it).

    Args:
      blocks: `jaxinterp.models.transformer.stacked_blocks(variables)`.
      corrupted_logits, cache: from `cached_corrupted_run`.
      resid: [batch, T, d_model], the corrupted `blocks.{layer}.hook_resid_pre`.
      source: the clean activation at `blocks.{layer}.{hook}` (whole sequence).
      layer: int32 scalar (traced: every layer shares the compiled function).
      positions: bool [cells, T] (absolute positions, none before `offset`) or None.
      heads: bool [cells, head] or None.
    """
    chunk = resid[:, offset:]

    def one(pos_mask, head_mask):
        patch = Patch(f"blocks.*.{hook}", source, positions=pos_mask, heads=head_mask)
        with hooks.active(hooks.Session((), [patch])):  # the patched layer only
            x = tfm.forward_from(model, blocks, chunk, cache, offset, layer, layer + 1)
        with hooks.active(None):
            x = tfm.forward_from(model, blocks, x, cache, offset, layer + 1)
        normed = tfm.final_norm(model, variables, x)
        pieces = [tfm.unembed(model, variables, normed[:, i:i + 1])
                  for i in range(normed.shape[1])]  # one per position: unread ones are dropped
        return metric(jnp.concatenate([corrupted_logits[:, :offset], *pieces], axis=1))

    return jax.vmap(one)(positions, heads)


def suffix_groups(n_pos: int, starts: int | None) -> list[tuple[int, int]]:
    """Contiguous position groups `(start, stop)` covering range(n_pos): `starts` of them (at
    most n_pos), or one per position for None."""
    n = n_pos if starts is None else min(int(starts), n_pos)
    bounds = [*sorted({int(b) for b in np.linspace(0, n_pos, n, endpoint=False)}), n_pos]
    return list(itertools.pairwise(bounds))


def _suffix_act_patch(model, variables, clean_inputs, corrupted_inputs, metric, sweep,
                      batch_size, starts):
    _, clean_cache = _capture(variables, clean_inputs, model=model, names=sweep.names)
    logits, cache, resid = cached_corrupted_run(variables, corrupted_inputs, model=model)
    blocks = tfm.stacked_blocks(variables)
    n_pos = sweep.n_pos
    head = None if sweep.n_heads is None else np.eye(sweep.n_heads, dtype=bool)
    # (offset, positions [cells, T] or None, heads [cells, head] or None) per group of cells,
    # the cells in the result's row-major order
    eye = np.eye(n_pos, dtype=bool)
    if sweep.by == "layer_head":
        groups = [(0, None, head)]
    elif sweep.by == "layer_pos":
        groups = [(a, eye[a:b], None) for a, b in suffix_groups(n_pos, starts)]
    else:
        groups = [(a, np.repeat(eye[a:b], len(head), axis=0), np.tile(head, (b - a, 1)))
                  for a, b in suffix_groups(n_pos, starts)]
    rows = []
    for layer, name in zip(sweep.layers, sweep.names, strict=True):
        fixed = dict(model=model, metric=metric, hook=sweep.kind.hook)
        row = []
        for offset, pos, hd in groups:
            fn = functools.partial(suffix_metrics, blocks, variables, logits, cache, resid[layer],
                                   clean_cache[name], jnp.int32(layer), offset=offset, **fixed)
            row.append(chunked(fn, [pos, hd], batch_size))
        rows.append(jnp.concatenate(row).reshape(sweep.cell_shape))
    return jnp.stack(rows).astype(jnp.float32)
