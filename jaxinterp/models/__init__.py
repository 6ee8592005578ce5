"""Model families, their frozen configs, and a registry of named presets.

    model = jaxinterp.models.build("gpt2_small", n_layers=2)
"""

from jaxinterp.models.layout import stack_layers, unstack_layers
from jaxinterp.models.registry import PRESETS, build, config, presets
from jaxinterp.models.transformer import Transformer, TransformerConfig

__all__ = [
    "PRESETS",
    "Transformer",
    "TransformerConfig",
    "build",
    "config",
    "presets",
    "stack_layers",
    "unstack_layers",
]
