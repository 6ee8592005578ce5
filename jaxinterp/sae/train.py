"""Training SAEs and transcoders on activations streamed from a model, sharded like any training.

    result = fit(SAEConfig(architecture="topk", d_in=64, d_sae=512, k=8,
                           site="blocks.1.hook_resid_post"),
                 TrainConfig(num_steps=2000, batch_size=4096),
                 model, variables, token_batches)

The stream: a jitted function runs the model (`jaxinterp.run` with `capture=[site]`) on a token
batch [batch, pos] and returns its activations flattened to rows [batch * pos, d]; with
`buffer_batches > 1`, that many model batches are pooled and shuffled (one permutation of the
pool per refill) before being cut into training batches, so a training batch mixes tokens of
many sequences. Every array lives on a `(data, fsdp, tensor)` mesh from
`jaxinterp.train.sharding`: activation rows are split over the data axes, SAE parameters are
placed by their logical axes (`d_sae` like `mlp`, over `tensor`).

The step: Adam with linear warmup (`jaxinterp.train.optimizer`); with unit-norm decoders, the
gradient's component along each decoder row is removed before the update and rows are
renormalised after it (Bricken et al. 2023). Dead latents: `steps_since_fired[s]` counts steps
since latent s was last non-zero on any row of a batch; a latent is dead once it reaches
`dead_after_steps`. Every `resample_every` steps (until `resample_until`) dead latents are
resampled as in "Towards Monosemanticity": inputs of the current batch are drawn with
probability proportional to the square of their reconstruction loss; a dead latent's decoder
row becomes the unit vector of its drawn input (centred by `b_dec`; for a transcoder, the drawn
target), its encoder column that direction times 0.2 x the mean encoder norm of live latents,
its encoder bias 0 (and its JumpReLU threshold `threshold_init`), and its Adam moments are
reset to 0.

Processes: with several JAX processes, every process feeds only its own token rows (e.g. a
`jaxinterp.data.make_iterator` iterator, which reads process p's rows of each global batch);
`jax.make_array_from_process_local_data` assembles them into the global token batch, sharded
over the data axes, so the activations, the pooled buffer and its permutation are global
arrays and the result equals one process's on the same global batches (integers exactly,
floats up to the rounding of cross-process reductions). The model's variables are placed by
their logical axes with the same rules as the SAE (replicated where it names none).

Checkpoints: `fit(..., workdir=W)` saves `{state, data position, config}` with
`jaxinterp.train.checkpoint.Checkpointer` (orbax, asynchronous, keeps
`TrainConfig.keep_checkpoints`) under `W/checkpoints` every `checkpoint_every` steps and at
the end, and a rerun restores the newest readable one (onto whatever mesh this run uses: the
restore target is the fresh state's `jax.ShapeDtypeStruct`s with their shardings) and
continues. The state holds everything that changes: params, Adam moments, step, rng and
`steps_since_fired`; resampling draws its key from `fold_in(state.rng, step)`, so it needs
nothing else. A rerun on the same mesh and processes ends bit for bit where an uninterrupted
run ends (on another mesh it continues, up to float rounding); the stream's position is saved
per process, so the process count must stay the same.

The resumable stream: the shuffle buffer is not saved. Buffer r's permutation key is
`fold_in(key, r)`, a function of r alone, so a buffer is re-derived exactly from the token
iterator's position at the start of the buffer. `ActivationStream.get_state()` records that
position (the token iterator's own `get_state()`), r, and how many training batches were
already cut from buffer r; `set_state()` rewinds the token iterator there, and the next batch
refills buffer r (the same model batches through the same jitted functions: the same rows,
the same permutation) and skips the batches already used. At a refill boundary the position
is simply the current one, and nothing is recomputed. The cost of a mid-buffer resume is one
buffer's forward passes. So resuming needs a checkpointable token iterator (`get_state` /
`set_state` with a JSON-serialisable state, like grain's `DatasetIterator`); `fit` with a
workdir and a plain iterable (a list, a generator) is a ValueError, and without a workdir any
iterable works. Resuming with another batch_size, buffer_batches or shuffle is a ValueError
(the saved position would mean other rows), as is an SAE of another shape (Checkpointer's
shape check); other settings (learning rate, num_steps, ...) may change between runs.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import ConfigDict

from jaxinterp.data.pipeline import to_global
from jaxinterp.hooks import sites as list_sites
from jaxinterp.run import run
from jaxinterp.sae.model import LATENT_AXIS, SAE, SAEConfig, loss
from jaxinterp.train import sharding as sharding_lib
from jaxinterp.train import state as state_lib
from jaxinterp.train.checkpoint import Checkpointer
from jaxinterp.train.metrics import Progress
from jaxinterp.train.optimizer import make_optimizer, schedule


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train an SAE.

    Attributes:
      num_steps: optimizer steps.
      batch_size: activation rows per step (global; divisible by the mesh's data x fsdp).
      learning_rate: Adam's peak learning rate.
      warmup_steps: linear warmup from 0.
      b1, b2: Adam's moment decay rates.
      buffer_batches: model batches pooled and shuffled per refill (1 and `shuffle=False`:
        rows in model order).
      shuffle: shuffle each pooled buffer.
      dead_after_steps: a latent that has not fired for this many steps is dead.
      resample_every: resample dead latents every this many steps; 0 disables.
      resample_until: no resampling at or after this step (0 means `num_steps`).
      init_b_dec_mean: start `b_dec` at the mean of the first batch's targets.
      log_every: steps between metric reads (and progress lines).
      seed: initialisation, shuffling and resampling seed.
      checkpoint_every: with a workdir, save a checkpoint every this many steps (and always
        at the end); 0: only at the end.
      keep_checkpoints: how many checkpoints to keep.
    """

    num_steps: int = 1000
    batch_size: int = 1024
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    b1: float = 0.9
    b2: float = 0.999
    buffer_batches: int = 4
    shuffle: bool = True
    dead_after_steps: int = 200
    resample_every: int = 0
    resample_until: int = 0
    init_b_dec_mean: bool = True
    log_every: int = 100
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3

    def __post_init__(self):
        for f in ("num_steps", "batch_size", "buffer_batches", "dead_after_steps", "log_every",
                  "keep_checkpoints"):
            v = getattr(self, f)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"TrainConfig.{f} must be a positive int, got {v!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate must be positive, got "
                             f"{self.learning_rate!r}")
        for f in ("warmup_steps", "resample_every", "resample_until", "checkpoint_every"):
            if getattr(self, f) < 0:
                raise ValueError(f"TrainConfig.{f} must be >= 0, got {getattr(self, f)}")


@struct.dataclass
class SAEState:
    """step: int32 scalar; params, opt_state: as in `jaxinterp.train.state.TrainState`;
    rng: raw PRNG key data; steps_since_fired: [d_sae] int32."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    steps_since_fired: jax.Array


def optimizer(tc: TrainConfig, learning_rate: float | jax.Array | None = None
              ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Adam (no weight decay, no clipping) with linear warmup to a constant learning rate:
    `tc.learning_rate`, or `learning_rate` if given (a traced scalar under `jax.vmap`, as in
    a sweep)."""
    lr = tc.learning_rate if learning_rate is None else learning_rate
    cfg = ConfigDict(dict(name="adamw", learning_rate=lr, schedule="constant",
                          warmup_steps=tc.warmup_steps, min_lr_ratio=1.0, b1=tc.b1, b2=tc.b2,
                          eps=1e-8, weight_decay=0.0, grad_clip_norm=0.0))
    return make_optimizer(cfg, tc.num_steps), schedule(cfg, tc.num_steps)


def create_state(config: SAEConfig, tx: optax.GradientTransformation, mesh: Mesh,
                 rules=sharding_lib.DEFAULT_RULES, seed: int = 0) -> tuple[SAEState, SAEState]:
    """A fresh state placed on `mesh` by logical-axis `rules`, and its shardings."""
    example = np.zeros((1, config.d_in), np.float32)
    train_state, sh = state_lib.create(SAE(config), tx, example, seed, mesh, rules)
    replicated = NamedSharding(mesh, P())
    counts = jax.device_put(jnp.zeros((config.d_sae,), jnp.int32), replicated)
    state = SAEState(train_state.step, train_state.params, train_state.opt_state,
                     train_state.rng, counts)
    shardings = SAEState(sh.step, sh.params, sh.opt_state, sh.rng, replicated)
    return state, shardings


def train_step(state: SAEState, x: jax.Array, y: jax.Array, *, config: SAEConfig,
               tx: optax.GradientTransformation, lr_schedule: optax.Schedule,
               dead_after_steps: int, coeffs: Mapping[str, jax.Array] | None = None
               ) -> tuple[SAEState, dict[str, jax.Array]]:
    """One update on activations x [batch, d_in] -> targets y [batch, d_out] (SAE: y = x).

    `coeffs`: the loss weights `l1_coeff`, `l0_coeff`, `aux_coeff` as (traced) scalars in place
    of the config's, so that `jax.vmap` can sweep them (`jaxinterp.sae.sweep`); None: the
    config's."""
    dead = state.steps_since_fired >= dead_after_steps
    (total, m), grads = jax.value_and_grad(_loss, has_aux=True)(state.params, x, y, config, dead,
                                                                 coeffs)
    if config.normalize_decoder:
        grads = {**grads, "W_dec": _remove_parallel(grads["W_dec"], state.params["W_dec"])}
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if config.normalize_decoder:
        params = {**params, "W_dec": unit_rows(params["W_dec"])}
    counts = jnp.where(m["fired"], 0, state.steps_since_fired + 1)
    metrics = {k: v for k, v in m.items() if k not in ("acts", "fired", "per_example_mse")}
    metrics.update(loss=total, learning_rate=lr_schedule(state.step),
                   dead_fraction=jnp.mean((counts >= dead_after_steps).astype(jnp.float32)))
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                        steps_since_fired=counts)
    return new, metrics


def _loss(params, x, y, config: SAEConfig, dead, coeffs):
    """`loss`, with the penalty weights taken from `coeffs` when given: `loss` runs with unit
    weights and its (unweighted) penalty terms are weighted here, the same arithmetic as
    `loss` with the weights in the config (`c * t` either way, then `mse + sparsity + aux`)."""
    if coeffs is None:
        return loss(params, x, y, config, dead)
    unit = dataclasses.replace(config, l1_coeff=1.0, l0_coeff=1.0, aux_coeff=1.0)
    _, m = loss(params, x, y, unit, dead)
    weight = coeffs["l1_coeff"] if config.architecture == "relu" else coeffs["l0_coeff"]
    m = {**m, "sparsity": weight * m["sparsity"], "aux": coeffs["aux_coeff"] * m["aux"]}
    return m["mse"] + m["sparsity"] + m["aux"], m


def compile_train_step(mesh: Mesh, shardings: SAEState, **kwargs: Any) -> Callable[..., Any]:
    """`train_step` jitted with explicit shardings (rows over the data axes), donating the
    old state. `kwargs` are `train_step`'s keyword arguments."""
    rows = sharding_lib.batch_sharding(mesh)
    return jax.jit(functools.partial(train_step, **kwargs),
                   in_shardings=(shardings, rows, rows),
                   out_shardings=(shardings, NamedSharding(mesh, P())), donate_argnums=(0,))


def resample_dead(state: SAEState, x: jax.Array, y: jax.Array, key: jax.Array, *,
                  config: SAEConfig, dead_after_steps: int,
                  log_threshold_init: jax.Array | None = None) -> tuple[SAEState, jax.Array]:
    """Reinitialises dead latents toward high-loss inputs (see the module docstring).

    Args:
      state: the train state.
      x, y: a batch of inputs [batch, d_in] and targets [batch, d_out] to draw from.
      key: PRNG key.
      log_threshold_init: float32 log of the JumpReLU threshold resampled latents restart
        at (a traced scalar in a sweep); None: `log(config.threshold_init)`.

    Returns:
      (state, number of latents resampled). Live latents, `b_dec` and the Adam moments of
      live latents are unchanged, bit for bit.
    """
    params = state.params
    dead = state.steps_since_fired >= dead_after_steps  # [d_sae]
    _, m = loss(params, x, y, config)
    weight = jnp.square(m["per_example_mse"])  # [batch]
    total = jnp.sum(weight)
    p = jnp.where(total > 0, weight / jnp.where(total > 0, total, 1.0), 1.0 / x.shape[0])
    idx = jax.random.choice(key, x.shape[0], (config.d_sae,), p=p)  # one input per latent
    src = x[idx] if config.transcoder else x[idx] - params["b_dec"]  # [d_sae, d_in]
    tgt = y[idx] if config.transcoder else src  # [d_sae, d_out]
    enc_dir, dec_dir = unit_rows(src), unit_rows(tgt)
    enc_norm = jnp.linalg.norm(params["W_enc"], axis=0)  # [d_sae]
    n_alive = jnp.sum(~dead)
    alive_norm = jnp.where(n_alive > 0, jnp.sum(jnp.where(dead, 0.0, enc_norm))
                           / jnp.maximum(n_alive, 1), 1.0)
    fresh = {"W_enc": enc_dir.T * 0.2 * alive_norm, "b_enc": jnp.zeros_like(params["b_enc"]),
             "W_dec": dec_dir}
    if "log_threshold" in params:
        value = math.log(config.threshold_init) if log_threshold_init is None \
            else log_threshold_init
        fresh["log_threshold"] = jnp.full_like(params["log_threshold"], value)
    params = _where_latent(dead, {**params, **fresh}, params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    pstruct = jax.tree.structure(params)

    def is_param_tree(t):
        return jax.tree.structure(t) == pstruct and not isinstance(t, jax.Array)

    opt_state = jax.tree.map(lambda t: _where_latent(dead, zeros, t) if is_param_tree(t) else t,
                             state.opt_state, is_leaf=is_param_tree)
    counts = jnp.where(dead, 0, state.steps_since_fired)
    new = state.replace(params=params, opt_state=opt_state, steps_since_fired=counts)
    return new, jnp.sum(dead)


def capture_fn(model: nn.Module, sites: Iterable[str], dtype: Any = jnp.float32
               ) -> Callable[[Any, jax.Array], dict[str, jax.Array]]:
    """`fn(variables, tokens [batch, pos]) -> {site: rows [batch*pos, prod(...)]}`: one forward
    pass (`jaxinterp.run` with `capture=sites`), every site flattened to rows and cast to
    `dtype` (None: the site's own dtype)."""
    sites = tuple(sites)

    def fn(variables, tokens):
        _, cache = run(model, variables, tokens, capture=sites)
        return {s: _rows(cache[s], dtype) for s in sites}

    return fn


def activation_fn(model: nn.Module, site: str, out_site: str = ""
                  ) -> Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]:
    """`fn(variables, tokens [batch, pos]) -> (x [batch*pos, d_in], y [batch*pos, d_out])`.

    The model runs through `jaxinterp.run` with `capture=[site]` (and `out_site`, whose
    values are the targets of a transcoder; without it `y` is `x`). Site values
    [batch, pos, ...] are flattened to rows [batch * pos, prod(...)] (e.g. `hook_z`'s heads
    concatenated).
    """
    rows = capture_fn(model, (site,) if not out_site else (site, out_site))

    def fn(variables, tokens):
        r = rows(variables, tokens)
        return r[site], (r[out_site] if out_site else r[site])

    return fn


def site_width(model: nn.Module, tokens: Any, site: str) -> int:
    """Width of `site`'s rows (product of its axes after [batch, pos]); errors list the
    nearest names for an unknown site."""
    shapes = list_sites(model, tokens)
    if site not in shapes:
        close = difflib.get_close_matches(site, list(shapes), n=5, cutoff=0.4) or list(shapes)[:5]
        raise ValueError(f"{site!r} is not a site of this model (an SAE reads exactly one "
                         f"site, no patterns). Nearest valid names: {', '.join(close)}.")
    shape = shapes[site].shape
    if len(shape) < 3:
        raise ValueError(f"site {site!r} has shape {shape}; an SAE reads a site shaped "
                         "[batch, pos, ...]")
    return math.prod(shape[2:])


class ActivationStream:
    """Training batches `(x [batch_size, d_in], y [batch_size, d_out])` of a model's
    activations: an iterator whose position can be saved and restored exactly. (Batches have
    the structure `acts` returns: a pair for `activation_fn`, `{site: rows}` for
    `capture_fn`; every leaf is pooled, permuted and cut alike.)

    Each refill reads `buffer_batches` token batches, runs `acts` on each, pools the rows
    (permuted with key `fold_in(key, refill index)` when `shuffle`) and cuts them into
    training batches; rows left over from a buffer are dropped. `get_state()` / `set_state()`
    (bytes, JSON) save and restore the position (see the module docstring), so the stream is
    a `data_iterator` for `jaxinterp.train.checkpoint.Checkpointer`; they need a token
    iterator with `get_state` / `set_state` (`checkpointable`).
    """

    def __init__(self, acts: Callable[..., tuple[jax.Array, jax.Array]], variables: Any,
                 token_batches: Iterable[Any], *, batch_size: int, buffer_batches: int = 1,
                 shuffle: bool = True, key: jax.Array | None = None, mesh: Mesh | None = None):
        self.batch_size, self.buffer_batches, self.shuffle = batch_size, buffer_batches, shuffle
        self._acts, self._variables, self._mesh = acts, variables, mesh
        self._tokens = iter(token_batches)
        self._key = jax.random.key(0) if key is None else key
        out_sh = None if mesh is None else sharding_lib.batch_sharding(mesh)
        self._pool = jax.jit(functools.partial(_pool, shuffle=shuffle), out_shardings=out_sh)
        self._cut = jax.jit(functools.partial(_cut, size=batch_size), out_shardings=out_sh)
        self._refill = 0  # buffers filled so far: the index of the next one
        self._buffer: Any = None  # buffer self._refill - 1 (rows as `acts` returns them)
        self._start: Any = None  # the token iterator's state before that buffer was read
        self._n = 0  # training batches in the buffer
        self._offset = 0  # training batches already cut from it
        self._skip = 0  # training batches to skip in the next buffer (set by set_state)
        self.saved_settings: dict[str, Any] | None = None  # of the last set_state

    @property
    def checkpointable(self) -> bool:
        """Whether the token iterator's position can be saved (it has get/set_state)."""
        return _checkpointable(self._tokens)

    @property
    def settings(self) -> dict[str, Any]:
        """What a saved position depends on besides the token stream."""
        return {"batch_size": self.batch_size, "buffer_batches": self.buffer_batches,
                "shuffle": self.shuffle}

    def __iter__(self) -> ActivationStream:
        return self

    def __next__(self) -> Any:
        while self._buffer is None or self._offset >= self._n:
            self._fill()  # raises StopIteration when the token batches run out
        batch = self._cut(self._buffer, self._offset)
        self._offset += 1
        return batch

    def get_state(self) -> bytes:
        """The position: `{tokens, refill, offset}` (+ `settings`) as JSON bytes."""
        if not self.checkpointable:
            raise TypeError(f"the token batches ({type(self._tokens).__name__}) have no "
                            "get_state/set_state, so the stream's position cannot be saved")
        if self._buffer is not None and self._offset < self._n:  # inside buffer r
            tokens, refill, offset = self._start, self._refill - 1, self._offset
        else:  # at a refill boundary (or just restored): the current position
            tokens, refill, offset = self._tokens.get_state(), self._refill, self._skip
        return json.dumps({"tokens": tokens, "refill": refill, "offset": offset,
                           **self.settings}).encode()

    def set_state(self, state: bytes | str) -> None:
        """Restores a `get_state()` position; the next batch re-reads its buffer. The saved
        settings are kept in `saved_settings` for the caller to compare (a mismatch is not
        raised here: orbax would take it for an unreadable checkpoint)."""
        saved = json.loads(state)
        self._tokens.set_state(saved["tokens"])
        self._refill, self._skip = int(saved["refill"]), int(saved["offset"])
        self._buffer, self._start, self._n, self._offset = None, None, 0, 0
        self.saved_settings = {k: saved.get(k) for k in self.settings}

    def start_prefetch(self) -> None:
        """Called by grain's orbax handler after `set_state`; nothing to start here."""

    def _fill(self) -> None:
        start = copy.deepcopy(self._tokens.get_state()) if self.checkpointable else None
        chunk = []
        for _ in range(self.buffer_batches):
            tokens = next(self._tokens)
            if isinstance(tokens, Mapping):
                tokens = tokens["inputs"]
            chunk.append(self._acts(self._variables, self._global(tokens)))
        key = jax.random.fold_in(self._key, self._refill)
        rows = self._pool(key, chunk)
        n = _n_rows(rows) // self.batch_size
        if n == 0:
            raise ValueError(f"a buffer of {self.buffer_batches} model batch(es) has "
                             f"{_n_rows(rows)} rows, fewer than batch_size={self.batch_size}; "
                             "raise buffer_batches or the model batch size")
        self._buffer, self._start, self._n = rows, start, n
        self._refill += 1
        self._offset, self._skip = self._skip, 0

    def _global(self, tokens: Any) -> Any:
        """This process's token rows [local_batch, pos] -> the global batch on the mesh."""
        if self._mesh is None:
            return tokens
        tokens = np.asarray(tokens)
        ways = self._mesh.shape["data"] * self._mesh.shape["fsdp"]
        n_proc = jax.process_count()
        if tokens.shape[0] * n_proc % ways == 0:
            spec = P(sharding_lib.BATCH)
        elif n_proc == 1:
            spec = P()  # one process: an odd model batch is simply replicated
        else:
            raise ValueError(f"each process's token batch has {tokens.shape[0]} rows, "
                             f"{tokens.shape[0] * n_proc} over {n_proc} processes, which the "
                             f"mesh's data x fsdp = {ways} does not divide")
        return to_global(tokens, self._mesh, spec)


def stream(acts: Callable[..., tuple[jax.Array, jax.Array]], variables: Any,
           token_batches: Iterable[Any], *, batch_size: int, buffer_batches: int = 1,
           shuffle: bool = True, key: jax.Array | None = None, mesh: Mesh | None = None
           ) -> ActivationStream:
    """Training batches `(x [batch_size, d_in], y [batch_size, d_out])` of activations.

    Args:
      acts: e.g. `jax.jit(activation_fn(model, site))`.
      variables: the model's variables.
      token_batches: iterable of token arrays [batch, pos] (or dicts with "inputs"); with a
        mesh, NumPy arrays of this process's rows (they become a global batch over the data
        axes); with a checkpointable iterator (a grain `DatasetIterator`), the stream's
        position can be saved.
      batch_size: rows per training batch; rows left over from a buffer are dropped.
      buffer_batches: model batches pooled per refill.
      shuffle: permute each pooled buffer (buffer r with `fold_in(key, r)`).
      mesh: where to place rows (over the data axes); default: wherever `acts` puts them.

    Returns:
      An `ActivationStream` (an iterator with `get_state` / `set_state`).
    """
    return ActivationStream(acts, variables, token_batches, batch_size=batch_size,
                            buffer_batches=buffer_batches, shuffle=shuffle, key=key, mesh=mesh)


class RowBatches:
    """Global row batches `{site: [batch_size, d] float32}` from an iterator of this process's
    rows, e.g. `jaxinterp.sae.store.loader(...)` (`{site: [batch_size / processes, d]}` NumPy
    arrays): each batch becomes global arrays split over the mesh's data axes
    (`jaxinterp.data.to_global`). Its position is the iterator's (`get_state` / `set_state`,
    JSON bytes), so it is a `data_iterator` for `Checkpointer` when the iterator has one."""

    def __init__(self, batches: Iterable[Mapping[str, Any]], mesh: Mesh, batch_size: int):
        self.batch_size, self._mesh = batch_size, mesh
        self._it = iter(batches)
        self.saved_settings: dict[str, Any] | None = None

    @property
    def checkpointable(self) -> bool:
        return _checkpointable(self._it)

    @property
    def settings(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size}

    def __iter__(self) -> RowBatches:
        return self

    def __next__(self) -> dict[str, jax.Array]:
        batch = next(self._it)
        if not isinstance(batch, Mapping):
            raise ValueError(f"activation batches must be dicts {{site: rows [n, d]}}, got "
                             f"{type(batch).__name__}")
        rows = {k: np.asarray(v, np.float32).reshape(np.shape(v)[0], -1)
                for k, v in batch.items()}
        n = {v.shape[0] for v in rows.values()}
        if len(n) != 1 or n.pop() * jax.process_count() != self.batch_size:
            raise ValueError(f"activation batches have {sorted({k: v.shape[0] for k, v in
                             rows.items()}.items())} rows in this process (x "
                             f"{jax.process_count()} processes); TrainConfig.batch_size="
                             f"{self.batch_size} needs {self.batch_size // jax.process_count()}")
        return to_global(rows, self._mesh, P(sharding_lib.BATCH))

    def get_state(self) -> bytes:
        if not self.checkpointable:
            raise TypeError(f"the activation batches ({type(self._it).__name__}) have no "
                            "get_state/set_state, so their position cannot be saved")
        return json.dumps({"rows": self._it.get_state(), **self.settings}).encode()

    def set_state(self, state: bytes | str) -> None:
        saved = json.loads(state)
        self._it.set_state(saved["rows"])
        self.saved_settings = {k: saved.get(k) for k in self.settings}

    def start_prefetch(self) -> None:
        """Called by grain's orbax handler after `set_state`; nothing to start here."""


@dataclasses.dataclass
class FitResult:
    """params: trained SAE parameters; state: the final SAEState; history: metrics (floats)
    at every `log_every` step that this call ran, with `step`; start_step: the step it
    resumed from (0 for a fresh run)."""

    params: dict[str, jax.Array]
    state: SAEState
    history: list[dict[str, float]]
    start_step: int = 0


def fit(config: SAEConfig, tc: TrainConfig, model: nn.Module | None = None,
        variables: Any = None, token_batches: Iterable[Any] | None = None, *,
        activations: Iterable[Mapping[str, Any]] | None = None, mesh: Mesh | None = None,
        rules=sharding_lib.DEFAULT_RULES, workdir: str | os.PathLike | None = None,
        verbose: bool = True) -> FitResult:
    """Trains an SAE (or transcoder) on `config.site` of `model` as `tc` says.

    Args:
      config: the SAE; `config.site` (and `out_site` for a transcoder) name the model's sites.
      tc: training settings.
      model, variables: the model whose activations are streamed.
      token_batches: iterable of token batches [batch, pos] (or dicts with "inputs"): this
        process's rows of each global batch (see `stream`). With a workdir it must be
        checkpointable, e.g. `jaxinterp.data.make_iterator(...)`.
      activations: instead of a model and tokens, batches of stored activations
        `{site: [batch_size / processes, d]}` (this process's rows), e.g.
        `jaxinterp.sae.store.loader(dir, batch_size=tc.batch_size)`; `tc.buffer_batches` and
        `tc.shuffle` do not apply (the loader shuffles).
      mesh: default `make_mesh({"data": -1, "fsdp": 1, "tensor": 1})` (every device on data).
      rules: logical-axis rules for the SAE's and the model's parameters.
      workdir: if given, checkpoints go to `<workdir>/checkpoints` (every
        `tc.checkpoint_every` steps and at the end), and a run finds the newest readable one
        there and continues from it: an interrupted run, rerun, ends in the same state, bit
        for bit, as an uninterrupted one. None: no checkpoints.
      verbose: print a progress line every `log_every` steps (and where it resumed).

    Raises:
      ValueError: if the site is unknown (listing the nearest names), its width is not
        `config.d_in` (`d_out` for `out_site`), the batch does not divide the data axes, a
        workdir comes with non-checkpointable token batches, or the workdir's checkpoint was
        written for an SAE of other shapes or another batch_size / buffer_batches / shuffle.
    """
    mesh = check_run([config], tc, mesh)
    data, _ = make_data([config], tc, model, variables, token_batches, activations,
                        mesh=mesh, rules=rules, workdir=workdir, seed=tc.seed, pairs=True)
    tx, lr_schedule = optimizer(tc)
    state, shardings = create_state(config, tx, mesh, rules, tc.seed)
    replicated = NamedSharding(mesh, P())
    rows = sharding_lib.batch_sharding(mesh)
    trainer = Trainer(
        state=state, shardings=shardings,
        step=compile_train_step(mesh, shardings, config=config, tx=tx, lr_schedule=lr_schedule,
                                dead_after_steps=tc.dead_after_steps),
        resample=jax.jit(functools.partial(resample_from_state, config=config,
                                           dead_after_steps=tc.dead_after_steps),
                         in_shardings=(shardings, rows, rows),
                         out_shardings=(shardings, replicated)),
        init_b_dec=jax.jit(init_b_dec_mean, in_shardings=(shardings, rows),
                           out_shardings=shardings),
        select=pair_of(config) if activations is not None else (lambda batch: batch))
    saved_config = {"sae": dataclasses.asdict(config), "train": dataclasses.asdict(tc)}

    def shown(rows: list[dict[str, Any]]) -> dict[str, float]:
        return {k: float(rows[0][k]) for k in ("mse", "explained_variance", "l0",
                                               "dead_fraction")}

    (state,), (history,), start = train_loop(
        [trainer], data, tc, workdir=workdir, saved_config=saved_config, single=True,
        what="this SAEConfig (d_in, d_sae, d_out, architecture)", shown=shown,
        verbose=verbose)
    history = [{k: (v if k == "step" else float(v)) for k, v in row.items()} for row in history]
    return FitResult(params=state.params, state=state, history=history, start_step=start)


def check_run(configs: Iterable[SAEConfig], tc: TrainConfig, mesh: Mesh | None) -> Mesh:
    """The mesh to train on (default: every device on data), after checking that every
    config names its sites and that the batch divides the data axes."""
    for config in configs:
        if not config.site:
            raise ValueError("SAEConfig.site must name the model site to train on")
        if config.transcoder and not config.out_site:
            raise ValueError("a transcoder needs SAEConfig.out_site (e.g. "
                             "'blocks.0.hook_mlp_out')")
    mesh = mesh or sharding_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if tc.batch_size % ways:
        raise ValueError(f"TrainConfig.batch_size={tc.batch_size} is not divisible by the "
                         f"mesh's data x fsdp = {ways}")
    return mesh


def pair_of(config: SAEConfig) -> Callable[[Mapping[str, jax.Array]], tuple[jax.Array, ...]]:
    """`{site: rows} -> (x, y)`: the SAE's input rows and its targets (an SAE's are x)."""
    def select(batch):
        return batch[config.site], batch[config.out_site or config.site]
    return select


def needed_sites(configs: Iterable[SAEConfig]) -> dict[str, tuple[int, str]]:
    """`{site: (width, "SAEConfig.d_in" / "SAEConfig.d_out")}` that `configs` read, in order;
    a ValueError if two configs disagree on a site's width."""
    sites: dict[str, tuple[int, str]] = {}
    for c in configs:
        for name, want, field in ((c.site, c.d_in, "d_in"), (c.out_site, c.d_output, "d_out")):
            if not name:
                continue
            if name in sites and sites[name][0] != want:
                raise ValueError(f"site {name!r} is read with width {sites[name][0]} by one "
                                 f"config and {want} (SAEConfig.{field}) by another")
            sites.setdefault(name, (want, f"SAEConfig.{field}"))
    return sites


def make_data(configs: list[SAEConfig], tc: TrainConfig, model: nn.Module | None,
              variables: Any, token_batches: Iterable[Any] | None,
              activations: Iterable[Mapping[str, Any]] | None, *, mesh: Mesh, rules,
              workdir: Any, seed: int, pairs: bool) -> tuple[Any, Any]:
    """The training batches for `configs` and the model's placed variables (None without a
    model): an `ActivationStream` running the model once per token batch (`pairs`: yielding
    the one config's `(x, y)`; else `{site: rows}` for every site the configs read), or
    `RowBatches` of stored `activations`. Checks sites, widths and checkpointability."""
    sites = needed_sites(configs)
    if activations is not None:
        if model is not None or token_batches is not None:
            raise ValueError("give either activations or a model with token_batches, not both")
        batches = iter(activations)
        if workdir is not None and not _checkpointable(batches):
            raise ValueError(
                f"training with a workdir resumes the activation batches from a checkpoint, "
                f"which needs an iterator whose position can be saved (get_state/set_state), "
                f"e.g. jaxinterp.sae.store.loader(...); got {type(activations).__name__}. "
                "Pass workdir=None to train without checkpoints.")
        first, batches = _peek(batches)
        for name, (want, field) in sites.items():
            if name not in first:
                raise ValueError(f"the activation batches have sites {sorted(first)}, not "
                                 f"{name!r}")
            if (width := math.prod(np.shape(first[name])[1:])) != want:
                raise ValueError(f"site {name!r} has width {width}, but {field}={want}")
        return RowBatches(batches, mesh, tc.batch_size), None
    if model is None or variables is None or token_batches is None:
        raise ValueError("give a model, its variables and token_batches (or activations=)")
    batches = iter(token_batches)
    if workdir is not None and not _checkpointable(batches):
        raise ValueError(
            f"fit(workdir=...) resumes the activation stream from a checkpoint, which needs a "
            f"token iterator whose position can be saved (get_state/set_state), e.g. "
            f"jaxinterp.data.make_iterator(...); got {type(token_batches).__name__}. Pass "
            "workdir=None to train without checkpoints.")
    first, batches = _peek(batches)
    first_tokens = first["inputs"] if isinstance(first, Mapping) else first
    for name, (want, field) in sites.items():
        if (width := site_width(model, first_tokens, name)) != want:
            raise ValueError(f"site {name!r} has width {width}, but {field}={want}")
    rows = sharding_lib.batch_sharding(mesh)
    if pairs:
        (config,) = configs
        acts = jax.jit(activation_fn(model, config.site, config.out_site),
                       out_shardings=(rows, rows))
    else:
        acts = jax.jit(capture_fn(model, sites), out_shardings=rows)
    variables = _place_variables(model, variables, first_tokens, mesh, rules)
    data = stream(acts, variables, batches, batch_size=tc.batch_size,
                  buffer_batches=tc.buffer_batches, shuffle=tc.shuffle,
                  key=jax.random.key(seed + 1), mesh=mesh)
    return data, variables


def init_b_dec_mean(state: SAEState, y: jax.Array) -> SAEState:
    """`b_dec` set to the mean target row of y [batch, d_out]."""
    return state.replace(params={**state.params, "b_dec": jnp.mean(y, 0)})


@dataclasses.dataclass
class Trainer:
    """One compiled training program fed by every batch: `fit`'s SAE, or one sweep group.

    state/shardings: its state (any pytree, e.g. a stacked `SAEState`) and their placement;
    step(state, x, y) -> (state, metrics); resample(state, x, y) -> (state, n);
    init_b_dec(state, y) -> state; select(batch) -> (x, y)."""

    state: Any
    shardings: Any
    step: Callable[..., Any]
    resample: Callable[..., Any]
    init_b_dec: Callable[..., Any]
    select: Callable[[Any], tuple[jax.Array, jax.Array]]


def train_loop(trainers: list[Trainer], data: Any, tc: TrainConfig, *, workdir: Any,
               saved_config: dict[str, Any], single: bool, what: str,
               shown: Callable[[list[dict[str, Any]]], dict[str, float]], verbose: bool
               ) -> tuple[list[Any], list[list[dict[str, Any]]], int]:
    """Runs `tc.num_steps` steps of every trainer on each batch of `data` (b_dec
    initialisation at step 0, resampling, checkpoints and resuming as in the module
    docstring).

    The checkpointed state is the single trainer's state (`single`) or the tuple of all;
    `what` names what it was created from (for a shape mismatch on restore); `shown` turns
    the trainers' metrics of a logged step into the progress line's numbers.

    Returns:
      (final states, per trainer the metrics at each logged step as host arrays with
      `step`, the step it resumed from).
    """
    states = [t.state for t in trainers]

    def pack(xs):
        return xs[0] if single else tuple(xs)

    ckpt, start = None, 0
    if workdir is not None:
        workdir = os.path.abspath(workdir)
        ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), tc.keep_checkpoints)
        restored, start = _restore(ckpt, pack(states), pack([t.shardings for t in trainers]),
                                   data, workdir, what)
        states = [restored] if single else list(restored)
        if start and verbose and jax.process_index() == 0:
            print(f"resumed from step {start} in {workdir}", flush=True)
    until = tc.resample_until or tc.num_steps
    progress = Progress(tc.num_steps, tc.batch_size, start)
    history: list[list[dict[str, Any]]] = [[] for _ in trainers]
    try:
        for step in range(start, tc.num_steps):
            try:
                batch = next(data)
            except StopIteration:
                raise ValueError(f"the activation batches ran out after {step} steps "
                                 f"(num_steps={tc.num_steps})") from None
            done = step + 1
            log = done % tc.log_every == 0 or done == tc.num_steps
            for i, t in enumerate(trainers):
                x, y = t.select(batch)
                if step == 0 and tc.init_b_dec_mean:
                    states[i] = t.init_b_dec(states[i], y)
                states[i], metrics = t.step(states[i], x, y)
                if tc.resample_every and done % tc.resample_every == 0 and done < until:
                    states[i], n = t.resample(states[i], x, y)
                    metrics = {**metrics, "resampled": n}
                if log:
                    history[i].append({"step": done, **jax.device_get(metrics)})
            if log and verbose:
                progress.log(done, shown([h[-1] for h in history]))
            if ckpt is not None and (done == tc.num_steps or (
                    tc.checkpoint_every and done % tc.checkpoint_every == 0)):
                ckpt.save(done, pack(states), data, saved_config)
    finally:
        if ckpt is not None:
            ckpt.close()  # waits for the last asynchronous save
    return states, history, start


def unit_rows(w: jax.Array) -> jax.Array:
    """Rows of `w` [n, d] scaled to unit L2 norm (zero rows stay zero)."""
    norm = jnp.linalg.norm(w, axis=-1, keepdims=True)
    return w / jnp.where(norm > 0, norm, 1.0)


def _remove_parallel(g: jax.Array, w: jax.Array) -> jax.Array:
    """g - <g, w> w per row: the part of the gradient that keeps unit rows at unit norm."""
    w = unit_rows(w)
    return g - jnp.sum(g * w, axis=-1, keepdims=True) * w


def _where_latent(mask: jax.Array, new: dict[str, jax.Array], old: dict[str, jax.Array]
                  ) -> dict[str, jax.Array]:
    """`new` for latents where `mask` [d_sae] holds, `old` elsewhere (b_dec: always old)."""
    out = {}
    for name, value in old.items():
        axis = LATENT_AXIS.get(name)
        if axis is None:
            out[name] = value
            continue
        shape = [1] * value.ndim
        shape[axis] = value.shape[axis]
        out[name] = jnp.where(mask.reshape(shape), new[name], value)
    return out


def _rows(a: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
    """[batch, pos, ...] -> [batch * pos, prod(...)] (cast to `dtype` unless None)."""
    a = a.reshape(a.shape[0] * a.shape[1], -1)
    return a if dtype is None else a.astype(dtype)


def _pool(key, chunks: list[Any], shuffle: bool):
    """Model batches' row pytrees -> one pytree of rows, permuted (every leaf alike)."""
    rows = jax.tree.map(lambda *a: jnp.concatenate(a), *chunks)
    if not shuffle:
        return rows
    perm = jax.random.permutation(key, _n_rows(rows))
    return jax.tree.map(lambda a: a[perm], rows)


def _cut(rows, i, size: int):
    return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, i * size, size), rows)


def _n_rows(rows: Any) -> int:
    return jax.tree.leaves(rows)[0].shape[0]


def _chain(first, rest):
    yield first
    yield from rest


def _checkpointable(it: Any) -> bool:
    return callable(getattr(it, "get_state", None)) and callable(getattr(it, "set_state", None))


def _peek(batches: Iterator[Any]) -> tuple[Any, Iterator[Any]]:
    """The first token batch, and an iterator that still starts with it (a checkpointable
    iterator is rewound, so its position stays the true one)."""
    if not _checkpointable(batches):
        first = next(batches)
        return first, _chain(first, batches)
    position = batches.get_state()
    first = next(batches)
    batches.set_state(position)
    return first, batches


def _place_variables(model: nn.Module, variables: Any, tokens: Any, mesh: Mesh, rules) -> Any:
    """The model's variables as global arrays on `mesh`, split by their logical axes like the
    trainer's parameters (replicated where the model names none, or if `variables` is not
    shaped like `model.init`'s). Every process passes the same (host or local) values."""
    host = jax.device_get(nn.meta.unbox(variables))
    key = jax.random.key(0)
    boxed = jax.eval_shape(lambda t: model.init({"params": key, "dropout": key}, t),
                           np.asarray(tokens))
    boxed = {k: v for k, v in boxed.items() if k in host}  # e.g. no sown intermediates
    shardings = sharding_lib.logical_shardings(boxed, mesh, rules)
    if jax.tree.structure(shardings) != jax.tree.structure(host):
        shardings = jax.tree.map(lambda _: NamedSharding(mesh, P()), host)
    return jax.tree.map(lambda x, s: jax.make_array_from_callback(
        np.shape(x), s, lambda index, x=x: np.asarray(x)[index]), host, shardings)


def resample_from_state(state: SAEState, x: jax.Array, y: jax.Array, **kwargs: Any
                         ) -> tuple[SAEState, jax.Array]:
    """`resample_dead` with the key `fold_in(state.rng, state.step)`: a function of the
    state alone, so a resumed run draws the same keys."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    return resample_dead(state, x, y, key, **kwargs)


def _restore(ckpt: Checkpointer, state: Any, shardings: Any, data: Any, workdir: str,
             what: str) -> tuple[Any, int]:
    """The newest readable checkpoint's state and step (the stream's position restored in
    place), or `(state, 0)` when there is none."""
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            state, shardings)
    try:
        restored = ckpt.restore(abstract, data_iterator=data)
    except ValueError as e:
        ckpt.close()
        raise ValueError(f"{e}\nThe state checkpointed in {workdir} has other shapes than "
                         f"{what}: resume with the config(s) it was trained with, or use a "
                         "fresh workdir.") from e
    if restored is None:
        return state, 0
    state, step = restored
    if data.saved_settings != data.settings:
        ckpt.close()
        raise ValueError(f"the checkpoint at step {step} in {workdir} streamed activations "
                         f"with {data.saved_settings}, but this run has {data.settings}; its "
                         "saved position means other rows. Resume with the same settings, or "
                         "use a fresh workdir.")
    return state, step
