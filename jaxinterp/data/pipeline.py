"""grain input pipelines: sharded, shuffled, batched, checkpointable iterators.

    source = load_source("induction", "train", data_dir)
    it = make_iterator(source, batch_size=256, seed=0, shuffle=True, num_epochs=None,
                       transform=language_model_batch)
    batch = next(it)                                   # {"inputs": int32 [256/P, L-1], ...}
    batch = to_global(batch, mesh, PartitionSpec(("data", "fsdp")))   # global jax.Arrays

The iterator is a `grain.DatasetIterator`; `it.get_state()` / `it.set_state(state)` restore
its position exactly, and orbax saves it alongside the train state with

    mngr.save(step, args=ocp.args.Composite(state=..., data=grain.checkpoint.CheckpointSave(it)))
    mngr.restore(step, args=ocp.args.Composite(state=...,
                                               data=grain.checkpoint.CheckpointRestore(it)))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Transform = Callable[[Any], Any] | grain.transforms.Transformation

# Read-ahead of `make_iterator` when `read_options` is not given: 2 threads, 4 batches ahead.
# grain's own default (16 threads, 500 batches) decodes up to 500 batches before the first
# step needs 4: a 50-step tiny training run decoded 18k examples for the 1.6k it used (~15 s
# of CPU taken from compiling and stepping). Raise it for heavy per-example transforms.
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


@dataclasses.dataclass(frozen=True)
class _FnMap(grain.transforms.Map):
    """Wraps a plain per-example function as a grain `Map`."""

    fn: Callable[[Any], Any]

    def map(self, element):
        return self.fn(element)


@dataclasses.dataclass(frozen=True)
class _AsNumpy(grain.transforms.Map):
    """Casts every feature to a NumPy array of the dtype the source declares.

    TFDS decodes scalar features to Python scalars, which would batch as int64/float64.
    """

    dtypes: Any

    def map(self, element):
        return _cast(element, self.dtypes)


def _cast(x: Any, dtype: Any) -> Any:
    if isinstance(x, Mapping):
        sub = dtype if isinstance(dtype, Mapping) else {}
        return {k: _cast(v, sub.get(k)) for k, v in x.items()}
    if isinstance(dtype, (type, np.dtype)) and np.dtype(dtype) != np.dtype(object):
        return np.asarray(x, dtype=dtype)
    return np.asarray(x)


class _Decoded(Sequence):
    """`source`'s examples as `_AsNumpy` casts them, each decoded once (on its first read) and
    then kept in memory: a small dataset read for many epochs is decoded once, not once per
    epoch (TFDS decoding costs ~0.35 ms per example, more than a tiny model's step per row).
    Two threads reading the same new example both decode it; either copy is kept."""

    def __init__(self, source: Sequence[Any], dtypes: Any):
        self._source, self._dtypes = source, dtypes
        self._examples: list[Any] = [None] * len(source)

    def __len__(self) -> int:
        return len(self._examples)

    def __getitem__(self, i: int) -> Any:
        example = self._examples[i]
        if example is None:
            example = self._examples[i] = _cast(self._source[i], self._dtypes)
        return example


def _nbytes(example: Any) -> int:
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(example))


def _source_dtypes(source: Any) -> Any:
    info = getattr(source, "dataset_info", None)
    try:
        return info.features.np_dtype
    except AttributeError:
        return None


def language_model_batch(tokens: Any) -> dict[str, Any]:
    """Next-token pairs: `tokens [..., L] -> {"inputs": [..., L-1], "targets": [..., L-1]}`.

    Works on one example or a batch, NumPy or JAX. Given a dict, its `"tokens"` entry is used.
    """
    if isinstance(tokens, Mapping):
        tokens = tokens["tokens"]
    return {"inputs": tokens[..., :-1], "targets": tokens[..., 1:]}


def make_iterator(
    source: Sequence[Any],
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    transform: Transform | Sequence[Transform] | None = None,
    read_options: grain.ReadOptions | None = None,
    cache_bytes: int = 256 * 2**20,
) -> grain.DatasetIterator:
    """A checkpointable iterator of this process's part of each global batch.

    The global order is fixed by `seed` alone: a permutation of `source` that changes every
    epoch (or the source order when `shuffle=False`), cut into global batches of `batch_size`
    (an incomplete last batch of each epoch is dropped). Process `p` of `P` reads rows
    `[p * L, (p + 1) * L)` of every global batch, `L = batch_size // P`. So the global batch
    that `to_global` assembles is the same however many processes share the work, and each
    process reads only its own records.

    Args:
      source: random-access source (`len`, `__getitem__`), e.g. from `load_source`.
      batch_size: the GLOBAL batch size; must be divisible by `process_count`.
      seed: shuffling seed (a non-negative 32-bit int); also seeds grain `RandomMap`s, which
        draw each element's randomness from `(seed, its position in the global stream)`: the
        augmented global batch, too, is the same however many processes share the work.
      shuffle: whether to shuffle.
      num_epochs: passes over the data; None repeats forever.
      process_index, process_count: this process's part; default `jax.process_index()` and
        `jax.process_count()`. Pass them explicitly to simulate several processes.
      transform: per-example function or grain transformation (`grain.transforms.Map`,
        `RandomMap`), or a sequence of them, applied in order before batching.
      read_options: grain's threads and prefetch buffer (in batches); default
        `DEFAULT_READ_OPTIONS` (2 threads, 4 batches ahead).
      cache_bytes: a source whose examples take at most this many bytes in all (estimated
        from its first example) is decoded once and its examples kept in memory (before
        `transform`, which still runs on every read and must return new arrays rather than
        modify its input in place); 0 never caches.

    Returns:
      A `grain.DatasetIterator`: `next(it)` is a dict of NumPy arrays with leading axis
      `batch_size // process_count` and the dtypes the source declares; `it.get_state()` /
      `it.set_state()` save and restore its position; `grain.checkpoint.CheckpointSave(it)` /
      `CheckpointRestore(it)` do so through orbax.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if batch_size <= 0 or batch_size % process_count:
        raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of "
                         f"process_count ({process_count})")
    if len(source) < batch_size:
        raise ValueError(f"the source has {len(source)} examples, fewer than one global batch "
                         f"of {batch_size}")
    local = batch_size // process_count
    per_epoch = len(source) // batch_size * batch_size  # drop each epoch's partial batch

    dtypes = _source_dtypes(source)
    cached = cache_bytes > 0 and len(source) * _nbytes(_cast(source[0], dtypes)) <= cache_bytes
    ordered = grain.MapDataset.source(_Decoded(source, dtypes) if cached else source)
    if shuffle:
        ordered = ordered.shuffle(seed=seed)
    ordered = ordered.repeat(num_epochs)  # epoch e: a fresh permutation when shuffled
    # Transforms apply to the global stream, before it is cut up between processes: grain
    # seeds a `RandomMap` with (seed, index of the element in the stream it maps), so each
    # element's randomness follows its global position, whatever process reads it.
    if not cached:
        ordered = ordered.map(_AsNumpy(dtypes))
    for t in _transforms(transform):
        ordered = ordered.random_map(t, seed=seed) \
            if isinstance(t, grain.transforms.RandomMap) else ordered.map(t)
    n_global = per_epoch * num_epochs if num_epochs is not None else None

    def global_position(k: int) -> int:  # this process's k-th example
        batch, row = divmod(k, local)
        epoch, b = divmod(batch * batch_size, per_epoch)
        return epoch * len(source) + b + process_index * local + row

    n_local = n_global // process_count if n_global is not None else _FOREVER
    ds = grain.MapDataset.range(n_local).map(lambda k: ordered[global_position(k)])
    return iter(ds.batch(local, drop_remainder=True).to_iter_dataset(
        DEFAULT_READ_OPTIONS if read_options is None else read_options))


_FOREVER = 2**62  # "repeat forever" as a length grain can index


def _transforms(transform) -> list[Any]:
    if transform is None:
        return []
    items = list(transform) if isinstance(transform, Sequence) else [transform]
    for t in items:
        if isinstance(t, grain.transforms.Filter):
            raise ValueError("Filter transforms would change the global batch layout; filter "
                             "the source instead")
    return [t if isinstance(t, grain.transforms.Transformation) else _FnMap(t) for t in items]


def _default_batch_spec(mesh: Mesh) -> PartitionSpec:
    axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names) or tuple(mesh.axis_names)
    return PartitionSpec(axes)


def to_global(batch: Any, mesh: Mesh, batch_spec: PartitionSpec | None = None) -> Any:
    """Per-process NumPy batch (pytree) -> global `jax.Array`s sharded as `batch_spec`.

    Each leaf `[local_batch, ...]` becomes a global array `[local_batch * P, ...]` (P processes
    along the sharded axis) through `jax.make_array_from_process_local_data`.

    Args:
      batch: pytree (e.g. dict) of arrays whose leading axis is this process's batch.
      mesh: the device mesh.
      batch_spec: how the leading axis is sharded; default `PartitionSpec(("data", "fsdp"))`
        restricted to the mesh's axes (all mesh axes if it has neither).
    """
    spec = _default_batch_spec(mesh) if batch_spec is None else batch_spec
    sharding = NamedSharding(mesh, spec)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )
