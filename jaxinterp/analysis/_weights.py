"""Read access to a `Transformer`'s weights for weight-based analyses (OV circuits, ...).

Norms and MLPs are applied through the model's own layer modules, so an analysis computes
exactly what the forward pass does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.layers.mlp import MLP
from jaxinterp.layers.norms import make_norm


@dataclasses.dataclass(frozen=True)
class TransformerWeights:
    """Unboxed parameters of a `jaxinterp.models.Transformer` and its config."""

    config: Any
    params: dict

    @property
    def has_bias(self) -> bool:
        return self.config.use_bias

    def block(self, layer: int) -> dict:
        """Parameters of block `layer` (sliced out of the stack for a scanned model)."""
        c = self.config
        if not 0 <= layer < c.n_layers:
            raise ValueError(f"layer {layer} is outside [0, n_layers={c.n_layers})")
        if c.scan_layers:
            return jax.tree.map(lambda x: x[layer], self.params["blocks"])
        return self.params[f"blocks_{layer}"]

    def embed(self, tokens: jax.Array) -> jax.Array:
        """tokens [...] -> token embeddings [..., d_model] (no positions)."""
        return self.params["embed"]["W_E"][tokens]

    def norm(self, layer: int | None, name: str, x: jax.Array) -> jax.Array:
        """Applies norm `name` ("ln1", "ln2"; `layer=None` for "ln_final") to x [..., d_model]."""
        c = self.config
        norm = make_norm(c.normalization_type, c.eps, jnp.float32, jnp.float32, name)
        if norm is None:
            return x
        p = self.params[name] if layer is None else self.block(layer)[name]
        return norm.apply({"params": p}, x, ("d_model",) * x.ndim)

    def mlp(self, layer: int, x: jax.Array) -> jax.Array:
        """Block `layer`'s MLP on x [..., d_model] -> [..., d_model]."""
        c = self.config
        mlp = MLP(d_mlp=c.d_mlp, act_fn=c.act_fn, gated=c.gated_mlp, use_bias=c.use_bias)
        flat = x.reshape(1, -1, x.shape[-1])
        return mlp.apply({"params": self.block(layer)["mlp"]}, flat).reshape(x.shape)

    def kv_heads(self, layer: int, name: str) -> jax.Array:
        """`W_K`/`W_V` ([head, d_model, d_head]) or `b_K`/`b_V` ([head, d_head]) of block
        `layer`, repeated to one entry per query head under grouped-query attention."""
        c = self.config
        key = name if name.startswith("b_") else f"W_{name}"
        w = self.block(layer)["attn"][key]
        return jnp.repeat(w, c.n_heads // w.shape[0], axis=0)

    def unembed(self, x: jax.Array) -> jax.Array:
        """Final norm then unembedding: x [..., d_model] -> logits [..., d_vocab_out]."""
        c = self.config
        x = self.norm(None, "ln_final", x)
        w_u = self.params["embed"]["W_E"].T if c.tie_embeddings else self.params["W_U"]
        logits = jnp.einsum("...m,mv->...v", x, w_u)  # contract d_model
        if c.unembed_bias:
            logits = logits + self.params["b_U"]
        return logits


def transformer_weights(model: nn.Module, variables: Any) -> TransformerWeights:
    """`TransformerWeights` of a `jaxinterp.models.Transformer` and its variables."""
    from jaxinterp.models.transformer import Transformer

    if not isinstance(model, Transformer):
        raise ValueError(f"weight-based analyses need a jaxinterp Transformer, got "
                         f"{type(model).__name__}")
    params = nn.meta.unbox(variables)["params"]
    return TransformerWeights(model.config, params)
