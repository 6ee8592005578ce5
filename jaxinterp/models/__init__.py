"""Model families, their frozen configs, and a registry of named presets.

    model = jaxinterp.models.build("gpt2_small", n_layers=2)
    jaxinterp.models.presets()   # {name: description} for every family

Families (one module each): `transformer` (GPT-2 / LLaMA-style decoders and encoders with
attention, norm and MLP variants), `bert`, `vit` (ViT and KAT), `mixer` (MLP-Mixer), `raftmlp`,
`strip_mlp`, `ms_mlp`, `maxim` (multi-axis gMLP blocks), `ninformer`, `activator`, `deep_mlp`
(Scaling-MLPs), `kan` (KAN networks). Image models take NHWC float images.
"""

from jaxinterp.layers.stack import stack_layers, unstack_layers
from jaxinterp.models.activator import Activator, ActivatorConfig
from jaxinterp.models.bert import Bert, BertConfig
from jaxinterp.models.deep_mlp import DeepMLP, DeepMLPConfig
from jaxinterp.models.kan import KAN, KANConfig
from jaxinterp.models.maxim import Maxim, MaximConfig
from jaxinterp.models.mixer import Mixer, MixerConfig
from jaxinterp.models.ms_mlp import MSMLP, MSMLPConfig
from jaxinterp.models.ninformer import NiNformer, NiNformerConfig
from jaxinterp.models.raftmlp import RaftMLP, RaftMLPConfig
from jaxinterp.models.registry import PRESETS, build, config, presets
from jaxinterp.models.strip_mlp import StripMLP, StripMLPConfig
from jaxinterp.models.transformer import Transformer, TransformerConfig
from jaxinterp.models.vit import ViT, ViTConfig

__all__ = [
    "KAN",
    "MSMLP",
    "PRESETS",
    "Activator",
    "ActivatorConfig",
    "Bert",
    "BertConfig",
    "DeepMLP",
    "DeepMLPConfig",
    "KANConfig",
    "MSMLPConfig",
    "Maxim",
    "MaximConfig",
    "Mixer",
    "MixerConfig",
    "NiNformer",
    "NiNformerConfig",
    "RaftMLP",
    "RaftMLPConfig",
    "StripMLP",
    "StripMLPConfig",
    "Transformer",
    "TransformerConfig",
    "ViT",
    "ViTConfig",
    "build",
    "config",
    "presets",
    "stack_layers",
    "unstack_layers",
]
