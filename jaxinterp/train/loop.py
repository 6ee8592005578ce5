"""The training loop: `train(config, workdir)` is what binaries and notebooks call.

A rerun of the same command resumes from the newest checkpoint in `workdir`, with the data
iterator's position restored, so an interrupted run ends with the same parameters as an
uninterrupted one. The host dispatches step N before reading step N-1's metrics, so it never
waits on the device except at checkpoints (which first check that the state is finite).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from ml_collections import ConfigDict

from jaxinterp import data as data_lib
from jaxinterp.hooks import COLLECTION
from jaxinterp.hooks import sites as list_sites
from jaxinterp.interventions import RunningMean, from_spec
from jaxinterp.layers.kan import GRID_COLLECTION
from jaxinterp.train import sharding as sharding_lib
from jaxinterp.train import state as state_lib
from jaxinterp.train import step as step_lib
from jaxinterp.train.checkpoint import Checkpointer
from jaxinterp.train.config import build_model, tuning_base, validate
from jaxinterp.train.metrics import MetricsWriter, Progress
from jaxinterp.train.optimizer import make_optimizer, schedule
from jaxinterp.train.tasks import MaskedLM, NextToken, make_task
from jaxinterp.tuning.frozen import FROZEN

EvalHook = Callable[[int, Any, nn.Module], Mapping[str, float]]
"""`hook(step, params, model) -> {name: scalar}`, run at every eval (and at step 0)."""


@dataclasses.dataclass
class Result:
    """What `train` returns: the final state and model, and where it resumed from."""

    state: state_lib.TrainState
    model: nn.Module
    start_step: int
    workdir: str

    @property
    def variables(self) -> dict[str, Any]:
        """The trained model's variables (`params` and its other collections)."""
        return self.state.variables


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
    """Trains (or resumes training) as `config` says, writing everything under `workdir`.

    Any registry model on any dataset its task fits: `config.task` says how a batch becomes
    inputs, targets and a loss (`jaxinterp.train.tasks`). Bad settings raise before anything
    compiles: the config is validated, the task checks the first batch, and the train step is
    traced abstractly (`jax.eval_shape`) before it is compiled.
    """
    maybe_initialize_distributed(config)
    validate(config)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding_lib.make_mesh(config.mesh)
    rules = sharding_lib.rules_from_config(config.logical_axis_rules)
    model = build_model(config)
    task = make_task(config.task)
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
    train_it = _iterator(train_source, config, shuffle=True, num_epochs=None, train=True)
    first = next(_iterator(train_source, config, shuffle=False, num_epochs=1, train=False))
    task.check(first, config.data.name)
    example = task.split({f: jnp.asarray(first[f][:1]) for f in task.features},
                         jax.random.key(0))
    interventions = [from_spec(s) for s in config.interventions]
    mutable = _check_collections(config, model, example)

    iv_state = {}
    if any(isinstance(iv, RunningMean) for iv in interventions):
        shapes = list_sites(model, *example.inputs, **example.kwargs)
        iv_state = step_lib.init_iv_state(interventions, shapes)
    state, shardings = state_lib.create(model, optimizer, example.inputs, config.seed, mesh,
                                        rules, example_kwargs=example.kwargs,
                                        iv_state=iv_state)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints,
                        config.async_checkpointing)
    start = 0
    restored = ckpt.restore(state_lib.abstract(shardings, state), data_iterator=train_it)
    if restored is not None:
        state, start = restored
        if jax.process_index() == 0:
            print(f"resumed from step {start} in {workdir}", flush=True)
    elif tuning_base(config):
        state = _with_base_weights(state, shardings, config)

    train_fn = functools.partial(step_lib.train_step, model=model, optimizer=optimizer,
                                 lr_schedule=lr_schedule, task=task, interventions=interventions,
                                 accum_steps=config.grad_accum_steps, mutable=mutable)
    eval_fn = functools.partial(step_lib.eval_step, model=model, task=task,
                                interventions=interventions)
    batch_spec = jax.sharding.PartitionSpec(sharding_lib.BATCH)

    def global_batch(local: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's rows of the task's features -> the global batch on the mesh."""
        return data_lib.to_global({f: local[f] for f in task.features}, mesh, batch_spec)

    # Trace once abstractly: shape errors (task vs model output, collections) surface here,
    # before XLA compiles anything.
    abstract_batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((config.batch_size, *np.shape(x)[1:]),
                                       jax.dtypes.canonicalize_dtype(np.asarray(x).dtype)),
        {f: first[f] for f in task.features})
    _check_output(task, model, state, example, abstract_batch, train_source)
    jax.eval_shape(sharding_lib.on_mesh(train_fn, mesh, rules),
                   state_lib.abstract(shardings, state), abstract_batch)
    train_step, eval_step = step_lib.compile_steps(mesh, shardings, train_fn, eval_fn,
                                                   rules)
    grid_step = _grid_step(config, model, task, mesh, shardings, rules)

    writer = MetricsWriter(workdir)
    tokens = isinstance(task, (NextToken, MaskedLM))
    per_step = config.batch_size * (np.shape(example.targets)[-1] if tokens else 1)
    progress = Progress(config.num_train_steps, per_step, start,
                        unit="tokens" if tokens else "examples")

    def evaluate(step: int) -> None:
        rows = []
        it = _iterator(eval_source, config, shuffle=False, num_epochs=1, train=False)
        if config.eval_batches:
            it = itertools.islice(it, config.eval_batches)
        for batch in it:
            rows.append(jax.device_get(eval_step(state, global_batch(batch))))
        scalars = _mean_metrics(rows)
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
            if grid_step is not None and _grid_due(config, step):
                state = grid_step(state, batch)
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


def _mean_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Eval metrics over batches, each weighted by its number of scored positions."""
    if not rows:
        return {}
    w = np.asarray([float(r.get("weight", 1.0)) for r in rows])
    w = w / max(w.sum(), 1e-12)
    return {k: float(np.sum(w * np.asarray([float(r[k]) for r in rows])))
            if k != "weight" else float(sum(float(r[k]) for r in rows)) for k in rows[0]}


def _check_collections(config: ConfigDict, model: nn.Module, example) -> list[str]:
    """The collections the train step updates; clear errors for collections the config and
    the model disagree on."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *example.inputs,
                                               **example.kwargs))
    collections = sorted(set(shapes) - {"params", COLLECTION, FROZEN})
    frozen = [c for c in collections if c not in config.mutable and c != GRID_COLLECTION]
    if frozen:
        raise ValueError(
            f"model {config.model.preset!r} has variable collection(s) {frozen} that training "
            f"would never update: add them to config.mutable (now {list(config.mutable)})")
    if config.kan_grid.update_every:
        takes = "update_grid" in inspect.signature(model.__call__).parameters
        if not takes or GRID_COLLECTION not in collections:
            raise ValueError(
                f"config.kan_grid.update_every={config.kan_grid.update_every}, but model "
                f"{config.model.preset!r} has no B-spline KAN grid to update (set it to 0)")
    return [c for c in config.mutable if c in collections]


def _with_base_weights(state, shardings, config: ConfigDict):
    """A fresh tuning run's state with the base model's real weights in the `frozen`
    collection (placed like the randomly initialised ones they replace)."""
    from jaxinterp import tuning

    _, base_variables = tuning.load_base(config.tuning)
    variables = tuning.with_frozen(state.variables, base_variables)
    frozen = jax.device_put(variables[FROZEN], shardings.model_state[FROZEN])
    return state.replace(model_state={**state.model_state, FROZEN: frozen})


def _check_output(task, model, state, example, abstract_batch, source) -> None:
    """Checks the model's output shape against the task, abstractly."""
    batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in abstract_batch.items()}

    def forward(variables):
        split = task.split(batch, jax.random.key(0))
        return model.apply(variables, *split.inputs, **split.kwargs), split

    out, split = jax.eval_shape(forward, state.variables)
    task.check_output(out, split, source)


def _grid_step(config: ConfigDict, model: nn.Module, task, mesh, shardings, rules):
    if not config.kan_grid.update_every:
        return None
    fn = functools.partial(step_lib.grid_step, model=model, task=task)
    return jax.jit(sharding_lib.on_mesh(fn, mesh, rules),
                   in_shardings=(shardings, sharding_lib.batch_sharding(mesh)),
                   out_shardings=shardings, donate_argnums=(0,))


def _grid_due(config: ConfigDict, step: int) -> bool:
    g = config.kan_grid
    until = g.update_until or config.num_train_steps
    return step % g.update_every == 0 and step < until


def _report(step, metrics, check, writer, progress, config) -> None:
    values = check(step, metrics)
    writer.write(step, values)
    if step % config.log_every_steps == 0 or step == config.num_train_steps:
        progress.log(step, {k: values[k] for k in ("loss", "accuracy") if k in values})
        writer.flush()


def _iterator(source, config: ConfigDict, *, shuffle: bool, num_epochs: int | None,
              train: bool):
    transform = None
    if config.data.get("image") is not None:
        from jaxinterp.data import image

        transform = image.from_config(config.data.image, train=train)
    return data_lib.make_iterator(
        source, batch_size=config.batch_size, seed=config.seed, shuffle=shuffle,
        num_epochs=num_epochs, process_index=jax.process_index(),
        process_count=jax.process_count(), transform=transform,
        read_options=grain.ReadOptions(
            num_threads=config.data.get("read_threads", _READ.num_threads),
            prefetch_buffer_size=config.data.get("prefetch_batches", _READ.prefetch_buffer_size)))


_READ = data_lib.pipeline.DEFAULT_READ_OPTIONS  # for configs saved before data.read_threads
