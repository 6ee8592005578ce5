"""The training loop: `train(config, workdir)` is what binaries and notebooks call.

A rerun of the same command resumes from the newest checkpoint in `workdir`, with the data
iterator's position restored, so an interrupted run ends with the same parameters as an
uninterrupted one. The host dispatches step N before reading step N-1's metrics, so it never
waits on the device except at checkpoints (which first check that the state is finite).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from ml_collections import ConfigDict

from jaxinterp import data as data_lib
from jaxinterp.interventions import from_spec
from jaxinterp.train import sharding as sharding_lib
from jaxinterp.train import state as state_lib
from jaxinterp.train import step as step_lib
from jaxinterp.train.checkpoint import Checkpointer
from jaxinterp.train.config import build_model, validate
from jaxinterp.train.metrics import MetricsWriter, Progress
from jaxinterp.train.optimizer import make_optimizer, schedule

EvalHook = Callable[[int, Any, nn.Module], Mapping[str, float]]
"""`hook(step, params, model) -> {name: scalar}`, run at every eval (and at step 0)."""


@dataclasses.dataclass
class Result:
    """What `train` returns: the final state and model, and where it resumed from."""

    state: state_lib.TrainState
    model: nn.Module
    start_step: int
    workdir: str


def maybe_initialize_distributed(config: ConfigDict) -> None:
    """`jax.distributed.initialize` when `config.distributed.initialize` asks for it.

    On CPU, cross-process collectives use gloo. With an empty coordinator address JAX reads
    the cluster from the environment (TPU pods, SLURM, ...).
    """
    d = config.distributed
    if not d.initialize or jax.distributed.is_initialized():
        return
    # Cross-process collectives between CPU devices need gloo; other backends ignore this.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if d.coordinator_address:
        jax.distributed.initialize(d.coordinator_address, d.num_processes, d.process_id)
    else:
        jax.distributed.initialize()


def train(config: ConfigDict, workdir: str, *, eval_hooks: Sequence[EvalHook] = ()) -> Result:
    """Trains (or resumes training) as `config` says, writing everything under `workdir`."""
    maybe_initialize_distributed(config)
    validate(config)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding_lib.make_mesh(config.mesh)
    rules = sharding_lib.rules_from_config(config.logical_axis_rules)
    model = build_model(config)
    optimizer = make_optimizer(config.optimizer, config.num_train_steps)
    lr_schedule = schedule(config.optimizer, config.num_train_steps)

    data_dir = config.data.data_dir or os.path.join(workdir, "data")
    kwargs = dict(config.data.builder_kwargs)
    if jax.process_count() > 1:  # process 0 prepares the dataset once; the others wait
        if jax.process_index() == 0:
            data_lib.load_source(config.data.name, config.data.train_split, data_dir, **kwargs)
        multihost_utils.sync_global_devices("jaxinterp: dataset prepared")
    train_source = data_lib.load_source(config.data.name, config.data.train_split, data_dir,
                                        **kwargs)
    eval_source = data_lib.load_source(config.data.name, config.data.eval_split, data_dir,
                                       **kwargs)
    first = train_source[0]
    if not isinstance(first, Mapping) or "tokens" not in first:
        raise ValueError(f"dataset {config.data.name!r} has no 'tokens' feature (features: "
                         f"{sorted(first) if isinstance(first, Mapping) else type(first)}); "
                         "this loop trains next-token language models on token sequences")
    train_it = _iterator(train_source, config, shuffle=True, num_epochs=None)
    seq_len = np.asarray(first["tokens"]).shape[-1] - 1
    example = np.zeros((1, seq_len), np.int32)

    state, shardings = state_lib.create(model, optimizer, example, config.seed, mesh, rules)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints,
                        config.async_checkpointing)
    start = 0
    restored = ckpt.restore(state_lib.abstract(shardings, state), data_iterator=train_it)
    if restored is not None:
        state, start = restored
        if jax.process_index() == 0:
            print(f"resumed from step {start} in {workdir}", flush=True)

    interventions = [from_spec(s) for s in config.interventions]
    train_fn = functools.partial(step_lib.train_step, model=model, optimizer=optimizer,
                                 lr_schedule=lr_schedule, interventions=interventions,
                                 z_loss=config.z_loss, accum_steps=config.grad_accum_steps)
    eval_fn = functools.partial(step_lib.eval_step, model=model, interventions=interventions)
    train_step, eval_step = step_lib.compile_steps(mesh, shardings, train_fn, eval_fn)
    batch_spec = jax.sharding.PartitionSpec(sharding_lib.BATCH)

    def global_batch(local: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's token rows -> the global next-token batch, sharded over the mesh."""
        return data_lib.to_global(data_lib.language_model_batch(local), mesh, batch_spec)

    writer = MetricsWriter(workdir)
    progress = Progress(config.num_train_steps, config.batch_size * seq_len, start)

    def evaluate(step: int) -> None:
        rows = []
        it = _iterator(eval_source, config, shuffle=False, num_epochs=1)
        for _, batch in zip(range(config.eval_batches), it, strict=False):
            rows.append(jax.device_get(eval_step(state, global_batch(batch))))
        scalars = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
        for hook in eval_hooks:
            scalars.update(hook(step, state.params, model))
        writer.write(step, scalars, prefix="eval")
        writer.flush()

    def check(step: int, metrics: Any) -> dict[str, float]:
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        bad = [k for k, v in values.items() if not np.isfinite(v)]
        if bad:
            ckpt.wait()
            raise FloatingPointError(
                f"non-finite {bad[0]}={values[bad[0]]} at step {step}; stopped. The last "
                f"good checkpoint (step {ckpt.latest_step()}) in {workdir} is kept.")
        return values

    if start == 0:
        evaluate(0)
    pending = None
    try:
        for step in range(start, config.num_train_steps):
            batch = global_batch(next(train_it))
            state, metrics = train_step(state, batch)
            if pending is not None:  # the previous step's metrics; this step is in flight
                _report(*pending, check, writer, progress, config)
            pending = (step + 1, metrics)
            done = step + 1
            if done % config.checkpoint_every_steps == 0 or done == config.num_train_steps:
                _report(*pending, check, writer, progress, config)  # never save a bad state
                pending = None
                ckpt.save(done, state, train_it, config.to_dict())
            if done % config.eval_every_steps == 0 or done == config.num_train_steps:
                evaluate(done)
        if pending is not None:
            _report(*pending, check, writer, progress, config)
    finally:
        ckpt.close()
        writer.close()
    return Result(state=state, model=model, start_step=start, workdir=workdir)


def _report(step, metrics, check, writer, progress, config) -> None:
    values = check(step, metrics)
    writer.write(step, values)
    if step % config.log_every_steps == 0 or step == config.num_train_steps:
        progress.log(step, {k: values[k] for k in ("loss", "accuracy") if k in values})
        writer.flush()


def _iterator(source, config: ConfigDict, *, shuffle: bool, num_epochs: int | None):
    return data_lib.make_iterator(
        source, batch_size=config.batch_size, seed=config.seed, shuffle=shuffle,
        num_epochs=num_epochs, process_index=jax.process_index(),
        process_count=jax.process_count())
