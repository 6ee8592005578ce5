"""Building blocks shared by model families: attention, MLPs, norms, position encodings."""

from jaxinterp.layers.attention import Attention
from jaxinterp.layers.mlp import MLP
from jaxinterp.layers.norms import LayerNorm, RMSNorm, make_norm

__all__ = ["MLP", "Attention", "LayerNorm", "RMSNorm", "make_norm"]
