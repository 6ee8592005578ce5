"""Building blocks shared by model families: the one Dense (`dense`), Conv (`conv`), attention
(softmax and its variants), MLPs (dense in TransformerLens or Flax layout, GLU, MoE, KAN), KAN
layers, norms, position encodings, and the image pieces (`vision`: patch embedding, head)."""

from jaxinterp.layers.attention import ATTENTION_TYPES, Attention
from jaxinterp.layers.conv import Conv, depthwise
from jaxinterp.layers.dense import Dense, dense
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
    "Conv",
    "Dense",
    "GroupRationalKAN",
    "HedgehogFeatureMap",
    "KANLayer",
    "LayerNorm",
    "MoE",
    "RMSNorm",
    "causal_linear_attention",
    "dense",
    "depthwise",
    "extend_grid",
    "load_balancing_loss",
    "make_norm",
    "update_grid",
]
