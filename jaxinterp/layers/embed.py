"""Token and position embeddings with TransformerLens parameter names: `Embed` (`W_E`
[vocab, embed], whose `attend` is the tied unembedding) and `PosEmbed` (learned absolute
positions `W_pos` [n_ctx, embed]), and `check_ids`, the check of the ids they look up."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.layers.common import param


class Embed(nn.Module):
    """Token embedding `W_E` [vocab, embed]; `attend` is the tied unembedding."""

    d_vocab: int
    d_model: int
    init_range: float
    param_dtype: jnp.dtype

    def setup(self):
        self.W_E = param(self, "W_E", nn.initializers.normal(self.init_range),
                         (self.d_vocab, self.d_model), ("vocab", "embed"), self.param_dtype)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens [batch, pos] -> [batch, pos, d_model]."""
        sharding = jax.typeof(tokens).sharding
        spec = getattr(sharding, "spec", None)
        if spec is not None and any(a is not None for a in spec):
            # Explicit-sharding mesh: the gathered rows are laid out like the tokens.
            out = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec, None))
            return self.W_E.at[tokens].get(out_sharding=out)
        return jnp.take(self.W_E, tokens, axis=0)

    def attend(self, x: jax.Array) -> jax.Array:
        """x [..., d_model] -> logits [..., d_vocab] = x W_Eᵀ."""
        return jnp.einsum("...m,vm->...v", x, self.W_E.astype(x.dtype))  # contract d_model


class PosEmbed(nn.Module):
    """Learned absolute positions `W_pos` [n_ctx, embed]."""

    n_ctx: int
    d_model: int
    init_range: float
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, n_pos: int, batch: int) -> jax.Array:
        """-> [batch, n_pos, d_model]."""
        if n_pos > self.n_ctx:
            raise ValueError(f"sequence length {n_pos} exceeds n_ctx={self.n_ctx}")
        w = param(self, "W_pos", nn.initializers.normal(self.init_range),
                  (self.n_ctx, self.d_model), ("pos", "embed"), self.param_dtype)
        return jnp.broadcast_to(w[:n_pos], (batch, n_pos, self.d_model))


def check_ids(ids: jax.Array, what: str, noun: str, size: int, size_field: str,
              n_ctx: int) -> None:
    """Raises ValueError unless `ids` (the argument `what`, e.g. "tokens") is [batch, pos]
    integers with pos <= n_ctx and, when concrete, every id in [0, size) (`size_field` names
    the config field, e.g. "d_vocab"; `noun` one id, e.g. "token id"). Traced ids are not
    range-checked; concrete out-of-range ids are an error because a gather would clamp them."""
    if ids.ndim != 2:
        raise ValueError(f"{what} must be [batch, pos], got shape {ids.shape}")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"{what} must be integers, got dtype {ids.dtype}")
    if ids.shape[1] > n_ctx:
        raise ValueError(f"sequence length {ids.shape[1]} exceeds n_ctx={n_ctx}")
    if not isinstance(ids, jax.core.Tracer):  # concrete: JAX would silently clamp the gather
        t = np.asarray(ids)
        if t.size and (t.min() < 0 or t.max() >= size):
            bad = t[(t < 0) | (t >= size)]
            raise ValueError(f"{noun} {int(bad[0])} is outside [0, {size_field}={size}) "
                             f"({bad.size} ids out of range)")
