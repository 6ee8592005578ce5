"""Pretrained weights: Hugging Face safetensors loaders and a penzai exporter.

    model, variables = jaxinterp.pretrained.load_hf("path/to/hf_checkpoint")
    pz_model = jaxinterp.pretrained.to_penzai(model, variables)
"""

from jaxinterp.pretrained.hf import load_hf
from jaxinterp.pretrained.penzai_export import to_penzai

__all__ = ["load_hf", "to_penzai"]
