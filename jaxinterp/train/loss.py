"""Next-token cross-entropy with an optional z-loss (PaLM: z_loss * logsumexp(logits)²)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


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
      (loss, metrics) with metrics `loss` (cross-entropy alone), `accuracy`, `weight` (number
      of positions counted) and, when `z_loss` is non-zero, `z_loss`; all scalars.
    """
    logits = logits.astype(jnp.float32)
    mask = jnp.ones(targets.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    weight = jnp.maximum(mask.sum(), 1.0)
    # One normalisation pass over the vocabulary: log Z = logit_target - log p_target.
    logp = jax.nn.log_softmax(logits, axis=-1)
    logp_t = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # [batch, pos]
    ce_mean = -(logp_t * mask).sum() / weight
    accuracy = ((logits.argmax(-1) == targets) * mask).sum() / weight
    metrics = {"loss": ce_mean, "accuracy": accuracy, "weight": mask.sum()}
    if not z_loss:  # a Python number: the z-term is left out of the program entirely
        return ce_mean, metrics
    logit_t = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    z_mean = (jnp.square(logit_t - logp_t) * mask).sum() / weight
    return ce_mean + z_loss * z_mean, {**metrics, "z_loss": z_mean}
