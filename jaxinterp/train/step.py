"""Jitted train and eval steps with explicit shardings.

The forward pass is `jaxinterp.run`, so training-time interventions (clamp a head to its mean,
scale a site, ...) are the same objects as analysis-time ones. With no interventions `run` is
exactly `model.apply`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxinterp.interventions import Intervention
from jaxinterp.run import run
from jaxinterp.train import sharding as sharding_lib
from jaxinterp.train.loss import cross_entropy
from jaxinterp.train.state import TrainState

Batch = dict[str, jax.Array]  # inputs [batch, pos] int, targets [batch, pos] int, mask optional


def loss_fn(
    params: Any,
    batch: Batch,
    model: nn.Module,
    interventions: Sequence[Intervention] = (),
    z_loss: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(total loss, metrics) of `model` on `batch`, with `interventions` in the forward pass."""
    logits, _ = run(model, {"params": params}, batch["inputs"], interventions=interventions)
    return cross_entropy(logits, batch["targets"], batch.get("mask"), z_loss)


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    lr_schedule: optax.Schedule,
    interventions: Sequence[Intervention] = (),
    z_loss: float = 0.0,
    accum_steps: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update. With `accum_steps > 1` the batch is split into that many
    micro-batches whose gradients are averaged (a `lax.scan`, so memory is one micro-batch's)."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    kwargs = dict(model=model, interventions=interventions, z_loss=z_loss)
    if accum_steps == 1:
        (_, metrics), grads = grad_fn(state.params, batch, **kwargs)
    else:
        # Row r goes to micro-batch r % accum_steps, so each device's rows stay on that device.
        micro = jax.tree.map(lambda x: jnp.swapaxes(
            x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]), 0, 1), batch)

        def body(carry, mb):
            (_, m), g = grad_fn(state.params, mb, **kwargs)
            return jax.tree.map(jnp.add, carry, (g, m)), None

        first = jax.tree.map(lambda x: x[0], micro)
        zeros = jax.tree.map(jnp.zeros_like,
                             jax.eval_shape(lambda: grad_fn(state.params, first, **kwargs)))
        (grads, metrics), _ = jax.lax.scan(body, (zeros[1], zeros[0][1]), micro)
        grads = jax.tree.map(lambda g: g / accum_steps, grads)
        metrics = {k: v if k == "weight" else v / accum_steps for k, v in metrics.items()}
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "grad_norm": optax.tree.norm(grads),
               "learning_rate": lr_schedule(state.step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(state: TrainState, batch: Batch, *, model: nn.Module,
              interventions: Sequence[Intervention] = ()) -> dict[str, jax.Array]:
    """Metrics of the current parameters on `batch` (no update)."""
    return loss_fn(state.params, batch, model, interventions)[1]


def compile_steps(
    mesh: Mesh,
    state_shardings: TrainState,
    train_fn: Callable[..., Any],
    eval_fn: Callable[..., Any],
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """`jax.jit`s the steps with explicit shardings; the train step donates the old state."""
    batch_sh = sharding_lib.batch_sharding(mesh)
    replicated = NamedSharding(mesh, P())
    train = jax.jit(train_fn, in_shardings=(state_shardings, batch_sh),
                    out_shardings=(state_shardings, replicated), donate_argnums=(0,))
    evaluate = jax.jit(eval_fn, in_shardings=(state_shardings, batch_sh),
                       out_shardings=replicated)
    return train, evaluate
