"""R training runs as one compiled call: `jax.vmap` over runs, `jax.lax.scan` over steps.

For sweeps whose runs share shapes (seeds, data arms of the same shapes, training-time
interventions whose arrays differ per run), `train_vmapped` trains them all at once:

    params, history = train_vmapped(loss_fn, init_fn, keys, run_args, optimizer, steps,
                                    eval_fn=eval_fn, eval_every=100)

Each run r has its own initial parameters (`init_fn(keys[r])`), its own data stream (the step
keys are split from `keys[r]`) and its own `run_args[r]` (any pytree with a leading run axis:
its dataset, the masks of its interventions, ...). The optimizer is the trainer's
(`optimizer.make_optimizer`: AdamW after global-norm clipping on the config's schedule), so a
run is the same as a single run of the same loss. Evaluation (`eval_fn`, vmapped too) runs at
step 0 and every `eval_every` steps; between evaluations the steps are one `lax.scan`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from jaxinterp.train.optimizer import make_optimizer

LossFn = Callable[[Any, jax.Array, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def train_vmapped(
    loss_fn: LossFn,
    init_fn: Callable[[jax.Array], Any],
    keys: jax.Array,
    run_args: Any,
    optimizer: ConfigDict,
    num_steps: int,
    *,
    eval_fn: Callable[[Any, Any], dict[str, jax.Array]] | None = None,
    eval_every: int = 0,
) -> tuple[Any, dict[str, np.ndarray]]:
    """Trains `len(keys)` runs in one vmapped, compiled program.

    Args:
      loss_fn: `(params, key, args, step) -> (loss, metrics)` of one run at one step: draws its
        batch from `key`, reads its data (and interventions) from `args`; `step` (int32, from 0)
        lets an intervention depend on time; metrics are scalars.
      init_fn: `key -> params` of one run.
      keys: [R] PRNG keys (`jax.random.key` or raw `PRNGKey`), one per run: its
        initialisation and its step keys are split from it.
      run_args: pytree whose leaves have a leading run axis [R, ...] (`None` or `()`: none).
      optimizer: an optimizer config as in `train.config.base_config().optimizer`.
      num_steps: training steps (the schedule's length).
      eval_fn: `(params, args) -> {name: array}` of one run; None: no evaluation.
      eval_every: steps between evaluations (0: only at step 0 and the end).

    Returns:
      `(params, history)`: final parameters with a leading run axis, and `history` with
      `"train/<metric>"` [R, num_steps] (measured before each step's update, `loss` included)
      and, with `eval_fn`, `"eval_step"` [E] (0, eval_every, ..., num_steps) and
      `"eval/<name>"` [R, E, ...].
    """
    if num_steps <= 0 or eval_every < 0:
        raise ValueError(f"num_steps={num_steps} must be positive and eval_every={eval_every} "
                         ">= 0")
    n_runs = len(keys)
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(run_args)}
    if sizes - {n_runs}:
        raise ValueError(f"every leaf of run_args needs a leading run axis of {n_runs} (the "
                         f"number of keys); got leading sizes {sorted(sizes, key=str)}")
    tx = make_optimizer(optimizer, num_steps)
    init_keys, step_keys = jax.vmap(lambda k: tuple(jax.random.split(k)))(keys)
    params = jax.jit(jax.vmap(init_fn))(init_keys)
    opt_state = jax.jit(jax.vmap(tx.init))(params)

    def chunk(p, s, key, args, start, n):
        def step(carry, xs):
            p, s = carry
            k, t = xs
            (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, k, args, t)
            updates, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), {"loss": loss, **metrics}

        steps = start + jnp.arange(n, dtype=jnp.int32)
        (p, s), history = jax.lax.scan(step, (p, s), (jax.random.split(key, n), steps))
        return p, s, history

    run_chunk = jax.jit(jax.vmap(chunk, in_axes=(0, 0, 0, 0, None, None)), static_argnums=5)
    run_eval = None if eval_fn is None else jax.jit(jax.vmap(eval_fn))
    evals: list[dict[str, np.ndarray]] = []
    eval_steps: list[int] = []
    if run_eval is not None:
        evals.append(jax.device_get(run_eval(params, run_args)))
        eval_steps.append(0)
    train: list[dict[str, np.ndarray]] = []
    done, every = 0, eval_every or num_steps
    while done < num_steps:
        n = min(every, num_steps - done)
        step_keys, sub = jax.vmap(lambda k: tuple(jax.random.split(k)))(step_keys)
        params, opt_state, hist = run_chunk(params, opt_state, sub, run_args,
                                            jnp.asarray(done, jnp.int32), n)
        train.append(jax.device_get(hist))
        done += n
        if run_eval is not None:
            evals.append(jax.device_get(run_eval(params, run_args)))
            eval_steps.append(done)
    history = {f"train/{k}": np.concatenate([h[k] for h in train], axis=1) for k in train[0]}
    if evals:
        history["eval_step"] = np.asarray(eval_steps)
        history.update({f"eval/{k}": np.stack([e[k] for e in evals], axis=1) for k in evals[0]})
    return params, history
