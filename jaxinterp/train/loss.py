"""Next-token cross-entropy with an optional z-loss (PaLM: z_loss * logsumexp(logits)²)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(
    logits: jax.Array, targets: jax.Array, mask: jax.Array | None = None, z_loss: float = 0.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean cross-entropy over unmasked positions.

    Args:
      logits: [batch, pos, vocab] (any float dtype; computed in float32).
      targets: [batch, pos] int.
      mask: [batch, pos], 1 where the loss counts; None means everywhere.
      z_loss: weight of the mean squared log-partition function.

    Returns:
      (loss, metrics) with metrics `loss` (cross-entropy alone), `z_loss`, `accuracy`, `weight`
      (number of positions counted); all scalars.
    """
    logits = logits.astype(jnp.float32)
    mask = jnp.ones(targets.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    weight = jnp.maximum(mask.sum(), 1.0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [batch, pos]
    log_z = jax.nn.logsumexp(logits, axis=-1)
    ce_mean = (ce * mask).sum() / weight
    z_mean = (jnp.square(log_z) * mask).sum() / weight
    accuracy = ((logits.argmax(-1) == targets) * mask).sum() / weight
    metrics = {"loss": ce_mean, "z_loss": z_mean, "accuracy": accuracy, "weight": mask.sum()}
    return ce_mean + z_loss * z_mean, metrics
