"""Steering vectors: build them from contrastive activations, add them, sweep their strength.

Construction (from paired activations `positive[i]`, `negative[i]`, each [n, d]):
- `mean_difference`: `mean(positive) - mean(negative)` (ActAdd, Turner et al. 2023; contrastive
  activation addition, Rimsky et al. 2024).
- `principal_directions` / `principal_direction`: representation-engineering *reading
  vectors* (Zou et al. 2023, "Representation Engineering", LAT with PCA): the top-k principal
  directions of the paired differences `positive[i] - negative[i]`, unit norm and orthogonal,
  each signed so that the positive example of a pair projects higher than its negative one.
  Checked against the authors' code (`repe/rep_readers.py`, `PCARepReader`): they shuffle the
  order within each pair, take the differences, centre them and fit PCA; the sign of each
  component is +1 when the labelled-positive member of a pair has the larger projection in
  more pairs than it has the smaller one (`get_signs`; ties +1). Here the pairs keep their
  order and the SVD is uncentred by default: the uncentred SVD is invariant to flipping the
  sign of any row, so it is what RepE computes up to the (small) mean of the randomly signed
  differences. The sign rule is RepE's majority vote over pairs (a tie falls back to the sign
  of the mean difference's projection, then +1).

Which site to steer: `probe_sites` fits a logistic probe (`analysis.probes`) per site to tell
the positive from the negative activations and reports its held-out accuracy; the site with
the highest accuracy is the one to steer (`best_site`).

Use:
- `contrastive_activations` captures contrastive prompt sets at one position of each site;
  `steering_vectors` builds a vector per site from them;
- `steer` turns `{site: vector}` and per-site weights into `ji.Add` interventions (per-layer
  weighted steering);
- `subspace_steer` steers inside a k-dim subspace (e.g. the top-k reading vectors): the
  activation's coordinates `c = B h` in the orthonormal basis `B [k, d]` are moved towards
  target coordinates (`set_to`) or shifted (`shift`), the rest of `h` kept:
  `h' = h + strength * (set_to - B h) B` or `h' = h + strength * shift B`;
- `strength_sweep` runs a whole range of strengths as one vmapped (optionally chunked) call,
  optionally each site alone (`each_site=True`: one call over (site, strength)), or any
  `strength -> interventions` function (subspace steering).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.analysis.probes import fit_logistic_probe
from jaxinterp.interventions import Add, Apply, Intervention
from jaxinterp.run import run


def _check_pairs(positive: jax.Array, negative: jax.Array, paired: bool) -> None:
    if positive.ndim != 2 or negative.ndim != 2:
        raise ValueError(f"activations must be [n, d], got {positive.shape} and {negative.shape}")
    if positive.shape[1] != negative.shape[1]:
        raise ValueError(f"positive and negative widths differ: {positive.shape} vs "
                         f"{negative.shape}")
    if paired and positive.shape != negative.shape:
        raise ValueError("paired differences need as many positive as negative examples, got "
                         f"{positive.shape} and {negative.shape}")
    if positive.shape[0] == 0 or negative.shape[0] == 0:
        raise ValueError("need at least one positive and one negative example")


def mean_difference(positive: jax.Array, negative: jax.Array) -> jax.Array:
    """`mean(positive) - mean(negative)`: [n_pos, d], [n_neg, d] -> [d]."""
    positive, negative = jnp.asarray(positive), jnp.asarray(negative)
    _check_pairs(positive, negative, paired=False)
    return positive.mean(0) - negative.mean(0)


def principal_directions(positive: jax.Array, negative: jax.Array, k: int = 1,
                         center: bool = False) -> jax.Array:
    """RepE reading vectors: the top-`k` principal directions of the paired differences,
    [n, d], [n, d] -> [k, d] (orthonormal rows), each signed by RepE's vote (module docstring).

    Uncentred by default: the directions that maximise the summed squared projection of the
    differences, which keeps the consistent shift between the pairs. `center=True` removes the
    mean difference first (then the directions are the main *variation* of the shift).
    """
    positive, negative = jnp.asarray(positive), jnp.asarray(negative)
    _check_pairs(positive, negative, paired=True)
    if not 1 <= k <= min(positive.shape):
        raise ValueError(f"k={k}: need 1 <= k <= min(n, d) = {min(positive.shape)}")
    diffs = (positive - negative).astype(jnp.float32)
    mean = diffs.mean(0)
    _, _, vt = jnp.linalg.svd(diffs - mean if center else diffs, full_matrices=False)
    dirs = vt[:k]  # [k, d]
    proj = jnp.einsum("nd,kd->kn", diffs, dirs)  # pos - neg projection of each pair
    vote = jnp.sign((proj > 0).sum(1) - (proj < 0).sum(1))  # RepE's get_signs
    tie = jnp.where(dirs @ mean < 0, -1.0, 1.0)
    sign = jnp.where(vote == 0, tie, vote)
    return dirs * sign[:, None]


def principal_direction(positive: jax.Array, negative: jax.Array,
                        center: bool = False) -> jax.Array:
    """The first reading vector, `principal_directions(..., k=1)[0]`: unit [d]."""
    return principal_directions(positive, negative, 1, center)[0]


def contrastive_activations(
    model: nn.Module,
    variables: Any,
    positive_inputs: Any,
    negative_inputs: Any,
    sites: str | Sequence[str],
    *,
    position: int | Sequence[int] | jax.Array = -1,
) -> dict[str, tuple[jax.Array, jax.Array]]:
    """`{site: (positive [n_pos, ...], negative [n_neg, ...])}`: each site's activations of
    the two input sets at `position` (sites with a position axis second, [batch, pos, ...]),
    one capture run per set. `position` is one position for every example, or one per
    example (int [n], the same for both sets, e.g. each padded prompt's last token)."""
    patterns = (sites,) if isinstance(sites, str) else tuple(sites)
    _, pos_cache = run(model, variables, positive_inputs, capture=patterns)
    _, neg_cache = run(model, variables, negative_inputs, capture=patterns)
    index = np.asarray(position)
    if index.ndim > 1:
        raise ValueError(f"position must be an int or [n] ints, got shape {index.shape}")
    out = {}
    for name, a in pos_cache.items():
        b = neg_cache[name]
        if a.ndim < 3 or index.size == 0 or not (-a.shape[1] <= index.min()
                                                 and index.max() < a.shape[1]):
            raise ValueError(f"site {name!r} of shape {a.shape} has no position {position}")
        if index.ndim == 0:
            out[name] = (a[:, int(index)], b[:, int(index)])
        elif not len(index) == len(a) == len(b):
            raise ValueError(f"{len(index)} positions for {len(a)} positive and {len(b)} "
                             "negative examples; per-example positions need one per example")
        else:
            rows = np.arange(len(index))
            out[name] = (a[rows, index], b[rows, index])
    return out


def steering_vectors(
    model: nn.Module,
    variables: Any,
    positive_inputs: Any,
    negative_inputs: Any,
    sites: str | Sequence[str],
    *,
    position: int | Sequence[int] | jax.Array = -1,
    method: Literal["mean", "pca"] = "mean",
) -> dict[str, jax.Array]:
    """`{site: vector [d]}` from the activations of contrastive inputs at `position`.

    Args:
      model, variables: a model whose sites have a position axis second ([batch, pos, ..., d]).
      positive_inputs, negative_inputs: model inputs, e.g. tokens [n, pos] (the same shape for
        `method="pca"`, whose examples are paired by index).
      sites: site names or globs (`"blocks.*.hook_resid_post"` gives one vector per layer).
      position: the position whose activation is used (-1: the last token), or one per
        example (`contrastive_activations`).
      method: "mean" (`mean_difference`) or "pca" (`principal_direction`, a reading vector).
    """
    builders: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
        "mean": mean_difference, "pca": principal_direction}
    if method not in builders:
        raise ValueError(f"method={method!r}; choose from {sorted(builders)}")
    acts = contrastive_activations(model, variables, positive_inputs, negative_inputs, sites,
                                   position=position)
    return {name: builders[method](pa.reshape(pa.shape[0], -1),
                                   nb.reshape(nb.shape[0], -1)).reshape(pa.shape[1:])
            for name, (pa, nb) in acts.items()}


def probe_sites(
    activations: Mapping[str, tuple[jax.Array, jax.Array]],
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    l2: float = 1e-3,
    steps: int = 200,
) -> dict[str, float]:
    """`{site: held-out accuracy}` of a logistic probe (`probes.fit_logistic_probe`) telling
    the positive (label 1) from the negative (label 0) activations of each site.

    Args:
      activations: `{site: (positive [n_pos, ...], negative [n_neg, ...])}`, e.g. from
        `contrastive_activations`; trailing axes are flattened.
      test_fraction, seed, l2, steps: the probe's split and fit (`fit_logistic_probe`).
    """
    scores = {}
    for name, (a, b) in activations.items():
        x = np.concatenate([np.asarray(a).reshape(len(a), -1),
                            np.asarray(b).reshape(len(b), -1)])
        y = np.concatenate([np.ones(len(a), np.int32), np.zeros(len(b), np.int32)])
        fit = fit_logistic_probe(x, y, n_classes=2, l2=l2, test_fraction=test_fraction,
                                 seed=seed, steps=steps)
        scores[name] = fit.test_score
    return scores


def best_site(scores: Mapping[str, float]) -> str:
    """The site with the highest probe accuracy (the first in order on a tie)."""
    if not scores:
        raise ValueError("no probe scores to choose a site from")
    return max(scores, key=lambda name: scores[name])


def steer(
    vectors: Mapping[str, jax.Array],
    weights: Mapping[str, float] | float = 1.0,
    *,
    scale: float | jax.Array = 1.0,
    positions: Any = None,
) -> list[Add]:
    """`ji.Add` interventions adding `scale * weights[site] * vectors[site]` at each site.

    Args:
      vectors: `{site: vector}`, e.g. from `steering_vectors`.
      weights: one weight per site (per-layer weighted steering) or one for all.
      scale: a global strength (a leaf: vmap or differentiate it; an array such as
        `[batch, 1, 1]` steers each example by its own strength).
      positions: where to add (default every position).
    """
    if not isinstance(weights, Mapping):
        weights = dict.fromkeys(vectors, weights)
    missing, extra = sorted(set(vectors) - set(weights)), sorted(set(weights) - set(vectors))
    if missing or extra:
        raise ValueError(f"weights must name exactly the vector sites; missing {missing}, "
                         f"extra {extra}")
    return [Add(site, jnp.asarray(v), scale=jnp.asarray(scale) * weights[site],
                positions=positions) for site, v in vectors.items()]


def _subspace_edit(x: jax.Array, params: dict[str, jax.Array]) -> jax.Array:
    """`x + strength * (delta_coords) B`, `B [k, d]`: see `subspace_steer`."""
    basis = params["basis"]
    xf = x.astype(jnp.float32)
    coords = jnp.einsum("...d,kd->...k", xf, basis)  # contract d: coordinates in the basis
    delta = params["shift"] + params["set_mask"] * (params["set_to"] - coords)
    return (xf + params["strength"] * jnp.einsum("...k,kd->...d", delta, basis)).astype(x.dtype)


def subspace_steer(
    site: str,
    basis: jax.Array,
    *,
    set_to: jax.Array | None = None,
    shift: jax.Array | None = None,
    strength: float | jax.Array = 1.0,
    positions: Any = None,
) -> Apply:
    """Latent-subspace steering at `site`: move the activation within span(`basis`) only.

    With `B = basis [k, d]` (orthonormal rows, e.g. `principal_directions(..., k)`) and the
    activation's coordinates `c = B h` [k]:

        set_to:  h' = h + strength * (set_to - c) B     (strength 1: the coordinates become
                                                          set_to; the complement is kept)
        shift:   h' = h + strength * shift B

    (both given: the two moves are added). `set_to` is e.g. the positive class's mean
    coordinates, `B mean(positive)`. `strength` is a leaf (sweep or differentiate it).
    """
    basis = jnp.atleast_2d(jnp.asarray(basis, jnp.float32))
    if basis.ndim != 2:
        raise ValueError(f"subspace_steer at {site!r}: basis must be [k, d], got {basis.shape}")
    k = basis.shape[0]
    if set_to is None and shift is None:
        raise ValueError(f"subspace_steer at {site!r}: give set_to and/or shift ([{k}] each)")
    for name, value in (("set_to", set_to), ("shift", shift)):
        if value is not None and jnp.shape(value)[-1:] != (k,):
            raise ValueError(f"subspace_steer at {site!r}: {name} has shape "
                             f"{jnp.shape(value)}; the basis has k = {k} directions")
    params = {"basis": basis,
              "set_to": jnp.zeros(k) if set_to is None else jnp.asarray(set_to, jnp.float32),
              "set_mask": jnp.asarray(0.0 if set_to is None else 1.0),
              "shift": jnp.zeros(k) if shift is None else jnp.asarray(shift, jnp.float32),
              "strength": jnp.asarray(strength, jnp.float32)}
    return Apply(site, _subspace_edit, params, positions=positions)


def strength_sweep(
    model: nn.Module,
    variables: Any,
    inputs: Any,
    vectors: Mapping[str, jax.Array] | Callable[[jax.Array], Sequence[Intervention]],
    strengths: jax.Array,
    *,
    weights: Mapping[str, float] | float = 1.0,
    positions: Any = None,
    each_site: bool = False,
    metric: Callable[[jax.Array], jax.Array] | None = None,
    batch_size: int | None = None,
) -> jax.Array:
    """The model's output (or `metric(output)`) at every steering strength, in one compiled
    call: `vmap` over `strengths`, or `lax.map` in chunks of `batch_size` to bound memory.

    Args:
      inputs: one model input (e.g. tokens [batch, pos]).
      vectors: `{site: vector}` (steered as `steer` does, with `weights` and `positions`), or
        a function `strength -> interventions` (e.g. `lambda s: [subspace_steer(..., strength=s)]`).
      strengths: [n] global scales.
      each_site: steer each site of `vectors` alone (the others get weight 0): the sweep runs
        over (site, strength) in the same one call and gains a leading site axis, in the order
        of `vectors` (per-layer strength-response curves).
      metric: maps the model output to what is kept (e.g. the last position's logits); default
        the whole output.
      batch_size: grid points per chunk (None: all at once).

    Returns:
      `[n, ...]` (or `[n_sites, n, ...]` with `each_site`): the stacked `metric(output)`.
    """
    strengths = jnp.asarray(strengths, jnp.float32)
    if strengths.ndim != 1:
        raise ValueError(f"strengths must be 1-D, got shape {strengths.shape}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    metric = metric or (lambda out: out)
    if callable(vectors):
        if each_site:
            raise ValueError("each_site needs a {site: vector} mapping, not a function")
        make = vectors
        grid = strengths[:, None]  # [n, 1]: (strength,)
    else:
        names = list(vectors)
        base = weights if isinstance(weights, Mapping) else dict.fromkeys(names, weights)
        onehot = np.eye(len(names), dtype=np.float32) if each_site else np.ones((1, len(names)),
                                                                              np.float32)
        rows = [np.concatenate([[s], m]) for m in onehot for s in np.asarray(strengths)]
        grid = jnp.asarray(np.stack(rows))  # [sites * n, 1 + n_sites]: (strength, site mask)

        def make(point):
            return steer(vectors, {n: base[n] * point[1 + i] for i, n in enumerate(names)},
                         scale=point[0], positions=positions)

    def one(point):
        ivs = make(point[0]) if callable(vectors) else make(point)
        out, _ = run(model, variables, inputs, interventions=ivs)
        return metric(out)

    if batch_size is None:
        out = jax.jit(jax.vmap(one))(grid)
    else:
        out = jax.jit(lambda g: jax.lax.map(one, g, batch_size=batch_size))(grid)
    if each_site:
        out = jax.tree.map(lambda a: a.reshape(len(vectors), len(strengths), *a.shape[1:]), out)
    return out
