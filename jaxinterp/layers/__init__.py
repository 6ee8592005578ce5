"""Building blocks shared by model families: attention (softmax and its variants), MLPs (dense,
GLU, MoE, KAN), KAN layers, norms and position encodings."""

from jaxinterp.layers.attention import ATTENTION_TYPES, Attention
from jaxinterp.layers.kan import GroupRationalKAN, KANLayer, extend_grid, update_grid
from jaxinterp.layers.linear_attention import HedgehogFeatureMap, causal_linear_attention
from jaxinterp.layers.mlp import KANMLP, MLP
from jaxinterp.layers.moe import MoE, load_balancing_loss
from jaxinterp.layers.norms import LayerNorm, RMSNorm, make_norm

__all__ = [
    "ATTENTION_TYPES",
    "KANMLP",
    "MLP",
    "Attention",
    "GroupRationalKAN",
    "HedgehogFeatureMap",
    "KANLayer",
    "LayerNorm",
    "MoE",
    "RMSNorm",
    "causal_linear_attention",
    "extend_grid",
    "load_balancing_loss",
    "make_norm",
    "update_grid",
]
