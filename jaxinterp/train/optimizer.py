"""The optimizer from a config: AdamW or SGD (with optional momentum) with warmup + cosine or
constant schedules, gradient clipping, and weight decay on weight matrices only.

`cfg.name`:
  "adamw": `optax.adamw(schedule, b1, b2, eps, weight_decay)` (decoupled weight decay).
  "sgd":   PyTorch's `torch.optim.SGD(lr, momentum, weight_decay)`: with g the (clipped)
           gradient plus `weight_decay * p` (an L2 term, coupled, on weight matrices only),
             buf_t = momentum * buf_{t-1} + g_t   (buf_0 = g_0; no momentum: buf_t = g_t)
             p_t = p_{t-1} - lr_t * buf_t
           `cfg.momentum` (0: plain SGD) is read only here; b1, b2, eps are ignored.
"""

from __future__ import annotations

from typing import Any

import jax
import optax
from ml_collections import ConfigDict


def schedule(cfg: ConfigDict, num_train_steps: int) -> optax.Schedule:
    """Learning rate per step: linear warmup to `learning_rate`, then cosine decay to
    `learning_rate * min_lr_ratio` at `num_train_steps`, or constant."""
    lr, warmup = cfg.learning_rate, cfg.warmup_steps
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=lr, warmup_steps=warmup,
            decay_steps=max(num_train_steps, warmup + 1), end_value=lr * cfg.min_lr_ratio)
    if cfg.schedule == "constant":
        if warmup == 0:
            return optax.constant_schedule(lr)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    raise ValueError(f"optimizer.schedule={cfg.schedule!r}; choose 'cosine' or 'constant'")


def decay_mask(params: Any) -> Any:
    """True for weight matrices (ndim >= 2); norms' gains and biases are not decayed."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(cfg: ConfigDict, num_train_steps: int) -> optax.GradientTransformation:
    """AdamW (`cfg.b1`, `b2`, `eps`, `weight_decay`) or SGD (`cfg.momentum`, `weight_decay`;
    see the module docstring) after global-norm clipping at `cfg.grad_clip_norm` (0
    disables), on `schedule(cfg, num_train_steps)`."""
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name={cfg.name!r}; choose from {OPTIMIZERS}")
    parts = []
    if cfg.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    if cfg.name == "sgd":
        momentum = cfg.get("momentum", 0.0)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"optimizer.momentum={momentum!r} must be in [0, 1)")
        if cfg.weight_decay:
            parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask))
        parts.append(optax.sgd(schedule(cfg, num_train_steps), momentum=momentum or None))
        return optax.chain(*parts)
    parts.append(optax.adamw(schedule(cfg, num_train_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, mask=decay_mask))
    return optax.chain(*parts)
