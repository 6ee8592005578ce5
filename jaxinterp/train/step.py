"""Jitted train, eval and KAN-grid steps with explicit shardings, for any model and task.

The forward pass is `jaxinterp.run_with_state`, so training-time interventions (clamp a head to
its running mean, scale a site, ...) are the same objects as analysis-time ones; with none it is
exactly `model.apply`. What the step knows of the model: a `train` argument of its `__call__`
(if it has one) is True in the train step and False in eval; the collections in `mutable`
(`batch_stats`) are updated by the train step; the `dropout` rng comes from the train state.
What it knows of the data comes from the task (`jaxinterp.train.tasks`). Every value a module
`sow`s into the `losses` collection (`LOSSES`; e.g. LoFiT's L1 term on its scalings) is added
to the task's loss, in training and eval, and reported as the `penalty` metric (the task's
`loss` metric stays the task's own).
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxinterp.interventions import Intervention, RunningMean
from jaxinterp.run import run_with_state
from jaxinterp.train import sharding as sharding_lib
from jaxinterp.train.state import TrainState
from jaxinterp.train.tasks import NextToken, Task

Batch = dict[str, jax.Array]  # the task's features, each [batch, ...]
_EVAL_STREAM = 0x5EED  # folds the eval key out of the state's rng (the same every eval)
LOSSES = "losses"  # sown values in this collection are added to the loss


def mode_kwargs(model: nn.Module, train: bool) -> dict[str, bool]:
    """`{"train": train}` if the model's `__call__` takes `train`, else `{}`."""
    return {"train": train} if "train" in inspect.signature(model.__call__).parameters else {}


def init_iv_state(interventions: Sequence[Intervention], site_shapes: dict[str, Any]) -> dict:
    """Zero statistics `{str(index): {"mean", "count"}}` for the `RunningMean`s in
    `interventions`; `site_shapes` is `jaxinterp.sites(model, example)` at batch size 1."""
    out = {}
    for k, iv in enumerate(interventions):
        if not isinstance(iv, RunningMean):
            continue
        names = [n for n in site_shapes if fnmatch.fnmatchcase(n, iv.site)]
        if len(names) != 1:
            raise ValueError(f"RunningMean site {iv.site!r} matches {len(names)} sites "
                             f"({names[:4]}); it needs exactly one (one intervention per site)")
        out[str(k)] = {"mean": jnp.zeros(site_shapes[names[0]].shape, jnp.float32),
                       "count": jnp.zeros((), jnp.int32)}
    return out


def bind(interventions: Sequence[Intervention], iv_state: dict, train: bool) -> list:
    """The interventions with their statistics from the train state filled in."""
    out = []
    for k, iv in enumerate(interventions):
        if isinstance(iv, RunningMean):
            s = iv_state[str(k)]
            iv = iv.replace(mean=s["mean"], count=s["count"], update=train)
        out.append(iv)
    return out


def loss_fn(
    params: Any,
    batch: Batch,
    model: nn.Module,
    interventions: Sequence[Intervention] = (),
    z_loss: float = 0.0,
    *,
    task: Task | None = None,
    model_state: dict | None = None,
    iv_state: dict | None = None,
    key: jax.Array | None = None,
    train: bool = False,
    mutable: Sequence[str] = (),
) -> tuple[jax.Array, tuple[dict[str, jax.Array], dict, dict]]:
    """`(loss, (metrics, new model_state, new iv_state))` of `model` on `batch`.

    `task` defaults to next-token prediction on `tokens` with `z_loss`; `key` drives the task's
    randomness (masked LM) and dropout.
    """
    task = NextToken(z_loss=z_loss) if task is None else task
    model_state, iv_state = model_state or {}, iv_state or {}
    key = jax.random.key(0) if key is None else key
    task_key, dropout_key = jax.random.split(key)
    split = task.split(batch, task_key)
    output, _, new = run_with_state(
        model, {"params": params, **model_state}, *split.inputs,
        interventions=bind(interventions, iv_state, train),
        mutable=(*mutable, LOSSES) if train else (LOSSES,),
        rngs={"dropout": dropout_key}, **split.kwargs, **mode_kwargs(model, train))
    loss, metrics = task.loss(output, split)
    if new.get(LOSSES):  # penalties the model sowed (a method's regulariser)
        penalty = sum(jnp.sum(x) for x in jax.tree.leaves(new[LOSSES]))
        loss, metrics = loss + penalty, {**metrics, "penalty": penalty}
    new_model_state = {**model_state, **{c: new[c] for c in mutable if c in new}}
    new_iv_state = {k: {"mean": new["interventions"][int(k)].astype(jnp.float32),
                        "count": v["count"] + 1} for k, v in iv_state.items()} \
        if train else iv_state
    return loss, (metrics, new_model_state, new_iv_state)


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    lr_schedule: optax.Schedule,
    task: Task | None = None,
    interventions: Sequence[Intervention] = (),
    z_loss: float = 0.0,
    accum_steps: int = 1,
    mutable: Sequence[str] = (),
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update. With `accum_steps > 1` the batch is split into that many
    micro-batches whose gradients are averaged (a `lax.scan`, so memory is one micro-batch's);
    model state and intervention statistics are updated micro-batch by micro-batch."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    kwargs = dict(model=model, interventions=interventions, z_loss=z_loss, task=task,
                  train=True, mutable=mutable)
    if accum_steps == 1:
        (_, (metrics, model_state, iv_state)), grads = grad_fn(
            state.params, batch, model_state=state.model_state, iv_state=state.iv_state,
            key=key, **kwargs)
    else:
        # Row r goes to micro-batch r % accum_steps, so each device's rows stay on that device.
        micro = jax.tree.map(lambda x: jnp.swapaxes(
            x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]), 0, 1), batch)

        def body(carry, xs):
            grads, metrics, model_state, iv_state = carry
            mb, i = xs
            (_, (m, model_state, iv_state)), g = grad_fn(
                state.params, mb, model_state=model_state, iv_state=iv_state,
                key=jax.random.fold_in(key, i), **kwargs)
            return (jax.tree.map(jnp.add, grads, g), jax.tree.map(jnp.add, metrics, m),
                    model_state, iv_state), None

        first = jax.tree.map(lambda x: x[0], micro)
        shapes = jax.eval_shape(lambda: grad_fn(
            state.params, first, model_state=state.model_state, iv_state=state.iv_state,
            key=key, **kwargs))
        zeros = jax.tree.map(jnp.zeros_like, (shapes[1], shapes[0][1][0]))
        (grads, metrics, model_state, iv_state), _ = jax.lax.scan(
            body, (*zeros, state.model_state, state.iv_state), (micro, jnp.arange(accum_steps)))
        grads = jax.tree.map(lambda g: g / accum_steps, grads)
        metrics = {k: v if k == "weight" else v / accum_steps for k, v in metrics.items()}
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads),
               "learning_rate": lr_schedule(state.step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         model_state=model_state, iv_state=iv_state), metrics


def eval_step(state: TrainState, batch: Batch, *, model: nn.Module, task: Task | None = None,
              interventions: Sequence[Intervention] = ()) -> dict[str, jax.Array]:
    """Metrics of the current variables on `batch` (inference mode, no update; running-mean
    interventions use their stored means)."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), _EVAL_STREAM)
    _, (metrics, _, _) = loss_fn(state.params, batch, model, interventions, task=task,
                                 model_state=state.model_state, iv_state=state.iv_state,
                                 key=key, train=False)
    return metrics


def grid_step(state: TrainState, batch: Batch, *, model: nn.Module, task: Task) -> TrainState:
    """Adapts every B-spline KAN grid to this batch's inputs and refits the coefficients
    (`jaxinterp.layers.kan.update_grid`, pykan's `update_grid_from_samples`); the optimizer
    state is kept. Training-time interventions are not applied here."""
    from jaxinterp.layers.kan import update_grid

    split = task.split(batch, jax.random.key(0))
    new = update_grid(model, state.variables, *split.inputs, **split.kwargs)
    params = new.pop("params")
    return state.replace(params=params, model_state={**state.model_state, **new})


def compile_steps(
    mesh: Mesh,
    state_shardings: TrainState,
    train_fn: Callable[..., Any],
    eval_fn: Callable[..., Any],
    rules=sharding_lib.DEFAULT_RULES,
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """`jax.jit`s the steps with explicit shardings; the train step donates the old state.
    The steps are traced with the mesh and the logical-axis `rules` in context, so the models'
    activation constraints lay activations out on the mesh (`sharding.on_mesh`)."""
    batch_sh = sharding_lib.batch_sharding(mesh)
    replicated = NamedSharding(mesh, P())
    train = jax.jit(sharding_lib.on_mesh(train_fn, mesh, rules),
                    in_shardings=(state_shardings, batch_sh),
                    out_shardings=(state_shardings, replicated), donate_argnums=(0,))
    evaluate = jax.jit(sharding_lib.on_mesh(eval_fn, mesh, rules),
                       in_shardings=(state_shardings, batch_sh),
                       out_shardings=replicated)
    return train, evaluate
