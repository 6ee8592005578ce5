"""Pretrained weights: Hugging Face safetensors loaders and a penzai exporter.

    model, variables = jaxinterp.pretrained.load_hf("path/to/hf_checkpoint")
    pz_model = jaxinterp.pretrained.to_penzai(model, variables)
"""

from jaxinterp.pretrained.hf import load_hf

__all__ = ["load_hf", "to_penzai"]


def __getattr__(name: str):
    if name == "to_penzai":  # penzai is imported on first use
        from jaxinterp.pretrained.penzai_export import to_penzai

        return to_penzai
    raise AttributeError(f"module 'jaxinterp.pretrained' has no attribute {name!r}")
