"""One axes vocabulary: the site axes of activations and the logical axes they map to.

Two kinds of axis names exist, for two readers:

- **Site axes** name every axis of an activation declared with `hooks.site` (what interventions
  and `jaxinterp.run` captures see): TransformerLens's `batch`, `pos`, `d_model`, `head`,
  `d_head`, `d_mlp`, ... The tuples below are the shared ones; a module with a one-off shape
  writes its tuple inline.
- **Logical axes** name parameter and activation axes for sharding (`embed`, `heads`, `mlp`,
  `kv`, `vocab`, `layers`, ...); the trainer's rules (`jaxinterp.train.sharding.DEFAULT_RULES`)
  map them to mesh axes.

`logical(axes)` translates a site-axes tuple into logical axes with `SITE_TO_LOGICAL`; axes with
no logical name (image height and width, windows, ...) become None (never sharded). The layer
stack (`jaxinterp.layers.stack`) uses it to constrain each block's input and output with
`nn.with_logical_constraint`, so activations follow the same rules as the parameters.
"""

from __future__ import annotations

Axes = tuple[str, ...]

# -- site axes --------------------------------------------------------------------------------
RESID_AXES: Axes = ("batch", "pos", "d_model")  # residual stream of a sequence model
TOKEN_AXES: Axes = RESID_AXES  # token features of a vision model (same axes)
POOLED_AXES: Axes = ("batch", "d_model")  # one vector per example (pooled tokens, deep MLP)
VEC_AXES: Axes = POOLED_AXES  # the deep MLP's residual stream
VEC_NEURON_AXES: Axes = ("batch", "d_mlp")  # the deep MLP's hidden units
IMAGE_AXES: Axes = ("batch", "height", "width", "channels")  # NHWC input images
MAP_AXES: Axes = ("batch", "height", "width", "d_model")  # NHWC feature maps
MAP_NEURON_AXES: Axes = ("batch", "height", "width", "d_mlp")  # hidden units of a map's MLP
NEURON_AXES: Axes = ("batch", "pos", "d_mlp")  # hidden units of a token MLP
HEAD_AXES: Axes = ("batch", "pos", "head", "d_head")  # per-head q, k, v, z
FEATURE_AXES: Axes = ("batch", "pos", "head", "d_feature")  # linear-attention feature maps
PATTERN_AXES: Axes = ("batch", "head", "query_pos", "key_pos")  # attention scores / pattern
GATE_AXES: Axes = ("batch", "pos", "head")  # per-head attention gates
ROUTER_AXES: Axes = ("batch", "pos", "expert")  # MoE router logits / weights
EXPERT_NEURON_AXES: Axes = ("batch", "pos", "expert", "d_mlp")  # MoE hidden units
EXPERT_OUT_AXES: Axes = ("batch", "pos", "expert", "d_model")  # MoE per-expert outputs
WINDOW_AXES: Axes = ("batch", "window", "window_pos", "d_gate")  # MAXIM's windowed gMLP

# -- site axis -> logical axis ----------------------------------------------------------------
SITE_TO_LOGICAL: dict[str, str] = {
    "batch": "batch",
    "pos": "pos",
    "d_model": "embed",
    "head": "heads",
    "d_head": "kv",
    "d_mlp": "mlp",
    "expert": "expert",
    "vocab": "vocab",
    "layer": "layers",
}
"""Site axis -> logical axis name of the same concept (the trainer's rules shard the latter)."""


def logical(axes: Axes) -> tuple[str | None, ...]:
    """Logical axes of an activation with site axes `axes`, e.g. `("batch", "pos", "d_model")`
    -> `("batch", "pos", "embed")`; a site axis without a logical name maps to None."""
    if isinstance(axes, str) or not all(isinstance(a, str) for a in axes):
        raise ValueError(f"site axes must be a tuple of names, got {axes!r}")
    return tuple(SITE_TO_LOGICAL.get(a) for a in axes)
