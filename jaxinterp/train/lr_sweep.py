"""A learning-rate sweep as one compiled call, and the learning-rate sensitivity of its result.

`train_lr_sweep` trains one model at R learning rates at once: the same initial parameters and
the same batches, `jax.vmap` over the rate and `jax.lax.scan` over the steps. The optimizer is
the trainer's (`optimizer.make_optimizer`: AdamW after global-norm clipping, warmup + cosine or
constant schedule) built at learning rate 1 and its update multiplied by each rate. Adam's
state does not depend on the rate and every later part of the AdamW update is linear in it, so
row r is (up to float rounding) a run of `make_optimizer` at `learning_rate=lrs[r]`.

`lr_sensitivity` is Wortsman et al. 2023 ("Small-scale proxies for large-scale Transformer
training instabilities", arXiv:2309.14322), section 2: the mean over the swept rates of
`min(final loss, initial loss) - best final loss`; a diverged run (NaN or inf) counts as the
initial loss.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from jaxinterp.train.optimizer import make_optimizer


def lr_sensitivity(final_losses: Any, init_loss: float) -> float:
    """Learning-rate sensitivity: `mean_r min(L_r, L_0) - min_r min(L_r, L_0)`.

    Args:
      final_losses: [R] final loss at each swept rate (NaN / inf: diverged).
      init_loss: the loss at initialisation, L_0.
    """
    losses = np.asarray(final_losses, np.float64)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError(f"final_losses must be a non-empty 1-d array [rates], got shape "
                         f"{losses.shape}")
    if not np.isfinite(init_loss):
        raise ValueError(f"init_loss must be finite, got {init_loss}")
    capped = np.minimum(np.where(np.isfinite(losses), losses, np.inf), init_loss)
    return float(capped.mean() - capped.min())


def train_lr_sweep(
    loss_fn: Callable[[Any, Any], tuple[jax.Array, dict[str, jax.Array]]],
    params: Any,
    batches: Any,
    lrs: Any,
    optimizer: ConfigDict,
) -> tuple[Any, dict[str, jax.Array]]:
    """Trains `params` at every rate of `lrs` on the same `batches`, in one compiled call.

    Args:
      loss_fn: `(params, batch) -> (loss, metrics)`, metrics a dict of scalars recorded at
        every step (e.g. the maximum attention logit of that step's forward pass).
      params: the initial parameters (shared by every rate).
      batches: a pytree of arrays with a leading step axis [steps, ...]; step t uses
        `tree.map(lambda x: x[t], batches)`.
      lrs: [R] peak learning rates.
      optimizer: an optimizer config as in `train.config.base_config().optimizer`; its
        `learning_rate` is ignored (each rate of `lrs` takes its place).

    Returns:
      `(final_params, history)`: final parameters with a leading rate axis [R, ...], and
      `history` {"loss": [R, steps], each metric: [R, steps]} measured on each step's batch
      before that step's update.
    """
    lrs = jnp.asarray(lrs, jnp.float32)
    if lrs.ndim != 1:
        raise ValueError(f"lrs must be 1-d [rates], got shape {lrs.shape}")
    n_steps = {x.shape[0] for x in jax.tree.leaves(batches)}
    if len(n_steps) != 1:
        raise ValueError(f"every array of batches needs the same leading step axis, got "
                         f"{sorted(n_steps)}")
    cfg = copy.deepcopy(optimizer)
    with cfg.unlocked():
        cfg.learning_rate = 1.0
    tx = make_optimizer(cfg, n_steps.pop())

    def one_rate(lr):
        def step(carry, batch):
            p, opt_state = carry
            (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, batch)
            updates, opt_state = tx.update(grads, opt_state, p)
            updates = jax.tree.map(lambda u: lr * u, updates)
            return (optax.apply_updates(p, updates), opt_state), {"loss": loss, **metrics}

        (p, _), history = jax.lax.scan(step, (params, tx.init(params)), batches)
        return p, history

    return jax.jit(jax.vmap(one_rate))(lrs)
