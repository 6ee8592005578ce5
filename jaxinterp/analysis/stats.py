"""Activation statistics over a dataset, streamed batch by batch (no activation is stored).

One compiled `ji.run` per batch captures the chosen sites and reduces each to small summaries;
the host adds the summaries up. Per site (the last axis is the feature axis, e.g. `d_mlp`):

- *Sparsity*, the "lazy neuron" measure (Li et al. 2023, "The Lazy Neuron Phenomenon: On
  Emergence of Activation Sparsity in Transformers"): the fraction of entries above
  `threshold` (0: positive, i.e. non-zero after a ReLU), overall and per feature.
- *Massive activations* (Sun et al. 2024, "Massive Activations in Large Language Models"): the
  `top_k` largest magnitudes with where they occur (example index in the stream, position,
  feature), and the mean magnitude to compare them with (Sun et al. call an activation massive
  when it exceeds 100 and is about 1,000 times the median magnitude).
- *Histograms* of the values on fixed bin edges (plus underflow and overflow counts).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.run import run


@dataclasses.dataclass
class MassiveActivation:
    """One large activation: `|value|` at `site[example, *index]` (index excludes the batch)."""

    magnitude: float
    value: float
    site: str
    example: int
    index: tuple[int, ...]


@dataclasses.dataclass
class ActivationStats:
    """Summaries of every captured site over the whole stream.

    Attributes:
      count: entries seen per feature, `{site: int}` (examples x positions).
      nonzero_fraction: `{site: float}`, fraction of entries > threshold.
      nonzero_per_feature: `{site: [d]}`, the same per feature (neuron).
      mean_abs: `{site: float}`, mean magnitude.
      massive: the `top_k` largest magnitudes over all sites, largest first.
      top_per_site: `{site: list[MassiveActivation]}`, the `top_k` largest of each site.
      edges: [n_bins + 1] histogram bin edges.
      histograms: `{site: [n_bins + 2] int}`: underflow, one count per bin, overflow.
    """

    count: dict[str, int]
    nonzero_fraction: dict[str, float]
    nonzero_per_feature: dict[str, np.ndarray]
    mean_abs: dict[str, float]
    massive: list[MassiveActivation]
    top_per_site: dict[str, list[MassiveActivation]]
    edges: np.ndarray
    histograms: dict[str, np.ndarray]


def _summaries(acts: dict[str, jax.Array], threshold: float, top_k: int,
               edges: jax.Array) -> dict[str, dict[str, jax.Array]]:
    out = {}
    for name, x in acts.items():
        x = x.astype(jnp.float32)
        rows = x.reshape(-1, x.shape[-1])  # [batch * ..., d]
        mag = jnp.abs(x).reshape(-1)
        top, flat_idx = jax.lax.top_k(mag, min(top_k, mag.size))
        where = jnp.stack(jnp.unravel_index(flat_idx, x.shape), axis=-1)  # [k, x.ndim]
        bins = jnp.searchsorted(edges, x.reshape(-1), side="right")  # 0: underflow
        bins = jnp.where(x.reshape(-1) == edges[-1], edges.size - 1, bins)  # right edge closed
        out[name] = {
            "nonzero": (rows > threshold).sum(axis=0),  # [d]
            "abs_sum": mag.sum(),
            "top": top,
            "top_value": x.reshape(-1)[flat_idx],
            "top_where": where,
            "rows": jnp.asarray(rows.shape[0]),
            "hist": jnp.bincount(bins, length=edges.size + 1),
        }
    return out


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _stats_step(model: nn.Module, patterns: tuple[str, ...], threshold: float, top_k: int,
                variables: Any, edges: jax.Array, *inputs: Any) -> dict[str, dict[str, jax.Array]]:
    """One batch's summaries. Compiled once per (model, sites, threshold, top_k, shapes), so
    calling `activation_stats` again (e.g. at every eval of a training run) does not recompile."""
    _, cache = run(model, variables, *inputs, capture=patterns)
    return _summaries(cache, threshold, top_k, edges)


def activation_stats(
    model: nn.Module,
    variables: Any,
    batches: Iterable[Any],
    *,
    sites: str | Sequence[str] = "blocks.*.mlp.hook_post",
    threshold: float = 0.0,
    top_k: int = 10,
    edges: Sequence[float] | np.ndarray | None = None,
    max_batches: int | None = None,
    progress: bool = False,
) -> ActivationStats:
    """Streams `batches` through the model and summarises the activations at `sites`.

    Args:
      model, variables: any jaxinterp model and its variables.
      batches: an iterable of model inputs: an array (e.g. tokens [batch, pos]) or a tuple of
        positional inputs. Batches may differ in size (each new shape compiles once).
      sites: site names or globs, e.g. `"blocks.*.mlp.hook_post"` (sparsity) or
        `"blocks.*.hook_resid_post"` (massive activations).
      threshold: an entry counts as active when it is `> threshold`.
      top_k: how many of the largest magnitudes to keep (per site and overall).
      edges: histogram bin edges, increasing (default 101 edges on [-10, 10]).
      max_batches: stop after this many batches.
      progress: print a line every 10 batches.

    Returns:
      `ActivationStats`.
    """
    patterns = (sites,) if isinstance(sites, str) else tuple(sites)
    edges_np = np.linspace(-10, 10, 101) if edges is None else np.asarray(edges, np.float64)
    if edges_np.ndim != 1 or edges_np.size < 2 or np.any(np.diff(edges_np) <= 0):
        raise ValueError(f"edges must be a 1-D increasing array of >= 2 values, got {edges_np}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    edges_j = jnp.asarray(edges_np, jnp.float32)

    def step(variables, *inputs):
        return _stats_step(model, patterns, float(threshold), top_k, variables, edges_j,
                           *inputs)

    totals: dict[str, dict[str, Any]] = {}
    tops: dict[str, list[MassiveActivation]] = {}
    seen = 0
    t0 = time.perf_counter()
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        inputs = batch if isinstance(batch, tuple) else (batch,)
        summary = jax.device_get(step(variables, *inputs))
        n_batch = int(np.shape(inputs[0])[0])
        for name, s in summary.items():
            t = totals.setdefault(name, {"nonzero": 0, "abs_sum": 0.0, "hist": 0, "count": 0})
            t["nonzero"] = t["nonzero"] + s["nonzero"].astype(np.int64)
            t["abs_sum"] += float(s["abs_sum"])
            t["hist"] = t["hist"] + s["hist"].astype(np.int64)
            t["count"] += int(s["rows"])
            for mag, val, idx in zip(s["top"], s["top_value"], s["top_where"], strict=True):
                tops.setdefault(name, []).append(MassiveActivation(
                    float(mag), float(val), name, seen + int(idx[0]),
                    tuple(int(j) for j in idx[1:])))
            tops[name] = sorted(tops[name], key=lambda m: -m.magnitude)[:top_k]
        seen += n_batch
        if progress and (i + 1) % 10 == 0:
            print(f"activation_stats: {i + 1} batches, {seen} examples, "
                  f"{(i + 1) / (time.perf_counter() - t0):.1f} batches/s", flush=True)
    if not totals:
        raise ValueError("activation_stats got no batches")
    return ActivationStats(
        count={n: t["count"] for n, t in totals.items()},
        nonzero_fraction={n: float(t["nonzero"].sum() / (t["count"] * t["nonzero"].size))
                          for n, t in totals.items()},
        nonzero_per_feature={n: t["nonzero"] / t["count"] for n, t in totals.items()},
        mean_abs={n: t["abs_sum"] / (t["count"] * t["nonzero"].size) for n, t in totals.items()},
        massive=sorted((m for ms in tops.values() for m in ms), key=lambda m: -m.magnitude)[:top_k],
        top_per_site=tops,
        edges=edges_np,
        histograms={n: t["hist"] for n, t in totals.items()},
    )
