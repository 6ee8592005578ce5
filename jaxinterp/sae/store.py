"""An on-disk activation store: a model's activations at some sites, written once to array_record
files (one shard per process) and read back as a shuffled, checkpointable grain iterator that
feeds `fit` or `sweep` without running the model again.

    sites = ["blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"]  # a transcoder's pair
    store.write("acts", model, variables, token_batches, sites)   # every process: its rows
    rows = store.loader("acts", batch_size=4096, seed=0)  # {site: [4096 / processes, d]}
    sae.fit(config, TrainConfig(batch_size=4096), activations=rows)  # or sae.sweep(...)

Layout of a store directory:

    metadata.json                          {"format", "sites": {site: {"shape": [d],
                                            "site_shape", "dtype"}}, "num_shards": P}  (p 0)
    shard-00000-of-00002.array_record      one record per token (row): the raw bytes of the
    shard-00000-of-00002.json              row at every site in metadata order; and
    ...                                    {"count": rows, "sites": ...} of the shard

Rows keep the site's dtype (a bfloat16 model's rows stay bfloat16; `fit` casts to float32 as
its own stream does) and are flattened as `fit` flattens them: `hook_z` [batch, pos, n_heads,
d_head] is stored as rows [n_heads * d_head] (`site_shape` records [n_heads, d_head]).
Reading is random access (records written with `group_size:1`): `loader` is
`jaxinterp.data.make_iterator` over all shards as one source, so the global order is fixed by
the seed alone, every process reads its slice of each global batch, and the iterator's
position is saved by `get_state` (and by `fit`'s checkpoints).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from jaxinterp.data.pipeline import make_iterator
from jaxinterp.hooks import sites as list_sites
from jaxinterp.sae.train import capture_fn

FORMAT = "jaxinterp.sae.store/1"
METADATA = "metadata.json"
WRITER_OPTIONS = "group_size:1"  # random access: one record per chunk


def shard_name(index: int, count: int) -> str:
    """`shard-{index:05d}-of-{count:05d}` (add `.array_record` / `.json`)."""
    return f"shard-{index:05d}-of-{count:05d}"


def write(directory: str | os.PathLike, model: Any, variables: Any,
          token_batches: Iterable[Any], sites: Sequence[str], *,
          num_batches: int | None = None, process_index: int | None = None,
          process_count: int | None = None) -> dict[str, Any]:
    """Runs `model` on this process's token batches and writes its rows at `sites` to this
    process's shard under `directory` (process 0 also writes `metadata.json`).

    Args:
      directory: the store (created if needed); this shard must not exist yet.
      model, variables: the model (run on this process's devices, one jitted forward pass per
        token batch capturing every site).
      token_batches: this process's token batches [batch, pos] (or dicts with "inputs").
      sites: sites to store, e.g. a transcoder's input and output sites.
      num_batches: stop after this many token batches (None: when they run out).
      process_index, process_count: this shard; default `jax.process_index()` /
        `jax.process_count()` (pass them to write shards from one process).

    Returns:
      This shard's metadata: `{"count", "sites": {site: {"shape", "dtype"}}}`.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    sites = list(sites)
    if not sites or len(set(sites)) != len(sites):
        raise ValueError(f"sites={sites!r} must be a non-empty list of distinct site names")
    os.makedirs(directory, exist_ok=True)
    name = os.path.join(directory, shard_name(process_index, process_count))
    if os.path.exists(name + ".array_record") or os.path.exists(name + ".json"):
        raise ValueError(f"{name}.array_record already exists: write each shard once (use a "
                         "fresh directory)")
    acts = jax.jit(capture_fn(model, sites, dtype=None))
    variables = jax.device_put(nn.meta.unbox(jax.device_get(variables)))  # once
    layout: dict[str, Any] | None = None
    count = 0
    writer = ArrayRecordWriter(name + ".array_record", WRITER_OPTIONS)
    try:
        for tokens in itertools.islice(token_batches, num_batches):
            if isinstance(tokens, Mapping):
                tokens = tokens["inputs"]
            tokens = np.asarray(tokens)
            rows = jax.device_get(acts(variables, tokens))  # {site: [batch * pos, d]}
            if layout is None:
                shapes = list_sites(model, tokens)
                layout = {s: {"shape": [rows[s].shape[1]],
                              "site_shape": list(shapes[s].shape[2:]),
                              "dtype": str(rows[s].dtype)} for s in sites}
            packed = np.concatenate([np.ascontiguousarray(rows[s]).view(np.uint8)
                                     for s in sites], axis=1)  # [batch * pos, record bytes]
            for record in packed:
                writer.write(record.tobytes())
            count += packed.shape[0]
    finally:
        writer.close()
    if layout is None:
        os.remove(name + ".array_record")
        raise ValueError("token_batches gave no batch: nothing to store")
    meta = {"format": FORMAT, "count": count, "sites": layout}
    with open(name + ".json", "w") as f:
        json.dump(meta, f, indent=2)
    if process_index == 0:
        with open(os.path.join(directory, METADATA), "w") as f:
            json.dump({"format": FORMAT, "sites": layout, "num_shards": process_count}, f,
                      indent=2)
    return meta


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """`metadata.json` of a store, with `count` (rows over all shards) and `shards` (each
    shard's count): a ValueError naming the missing shards if some process did not write."""
    path = os.path.join(directory, METADATA)
    if not os.path.exists(path):
        raise ValueError(f"{directory} has no {METADATA}: not an activation store, or process "
                         "0 has not written its shard")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    n = meta["num_shards"]
    shards, missing = [], []
    for p in range(n):
        name = os.path.join(directory, shard_name(p, n))
        if not (os.path.exists(name + ".json") and os.path.exists(name + ".array_record")):
            missing.append(p)
            continue
        with open(name + ".json") as f:
            shard = json.load(f)
        if shard["sites"] != meta["sites"]:
            raise ValueError(f"{name}.json stores {shard['sites']}, but {METADATA} says "
                             f"{meta['sites']}")
        shards.append(shard["count"])
    if missing:
        raise ValueError(f"{directory}: shard(s) {missing} of {n} are missing; every one of "
                         f"the {n} processes must run write()")
    return {**meta, "count": sum(shards), "shards": shards}


class ActivationSource:
    """A random-access grain source over every shard of a store: `source[i]` is row i
    `{site: array [d]}` (shards in process order, rows in written order)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.fspath(directory)
        self.metadata = read_metadata(directory)
        n = self.metadata["num_shards"]
        self._paths = [os.path.join(self.directory, shard_name(p, n) + ".array_record")
                       for p in range(n)]
        self._layout = []
        offset = 0
        for site, spec in self.metadata["sites"].items():
            dtype = jnp.dtype(spec["dtype"])
            count = math.prod(spec["shape"])
            self._layout.append((site, dtype, tuple(spec["shape"]), offset, count))
            offset += count * dtype.itemsize
        self._record_bytes = offset
        self._source = grain.sources.ArrayRecordDataSource(self._paths)
        if len(self._source) != self.metadata["count"]:
            raise ValueError(f"{self.directory}: the shards hold {len(self._source)} records, "
                             f"their metadata says {self.metadata['count']}")

    def __len__(self) -> int:
        return self.metadata["count"]

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.decode(self._source[index])

    def decode(self, record: bytes) -> dict[str, np.ndarray]:
        """One record's bytes -> `{site: row}`."""
        if len(record) != self._record_bytes:
            raise ValueError(f"a record of {len(record)} bytes in {self.directory}; its "
                             f"metadata gives {self._record_bytes}")
        return {site: np.frombuffer(record, dtype, count, offset).reshape(shape)
                for site, dtype, shape, offset, count in self._layout}

    def __repr__(self) -> str:
        return f"ActivationSource({self.directory!r}, {len(self)} rows)"


def loader(directory: str | os.PathLike, *, batch_size: int, seed: int = 0,
           shuffle: bool = True, num_epochs: int | None = None,
           process_index: int | None = None, process_count: int | None = None,
           num_threads: int = 4, prefetch_batches: int = 4) -> grain.DatasetIterator:
    """A checkpointable iterator of this process's part of each global batch of stored rows:
    `{site: [batch_size / process_count, d]}` (`jaxinterp.data.make_iterator` over an
    `ActivationSource`: the global order is a function of `seed`, new each epoch; None
    epochs repeats forever). Pass it to `fit` / `sweep` as `activations=` (with the same
    global `batch_size` as the TrainConfig). `num_threads` threads read ahead
    `prefetch_batches` batches (grain's default, 500, would hold that many in memory)."""
    return make_iterator(ActivationSource(directory), batch_size=batch_size, seed=seed,
                         shuffle=shuffle, num_epochs=num_epochs, process_index=process_index,
                         process_count=process_count,
                         read_options=grain.ReadOptions(num_threads=num_threads,
                                                        prefetch_buffer_size=prefetch_batches))
