"""Named model presets: `build(name, **overrides) -> flax.linen.Module`."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import flax.linen as nn

from jaxinterp.models import (
    activator,
    bert,
    deep_mlp,
    kan,
    maxim,
    mixer,
    ms_mlp,
    ninformer,
    raftmlp,
    strip_mlp,
    vit,
)
from jaxinterp.models.preset import Preset
from jaxinterp.models.transformer import Transformer, TransformerConfig

_TRANSFORMER_PRESETS: dict[str, Preset] = {
    "gpt2_small": Preset(
        Transformer, TransformerConfig,
        dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257,
             n_ctx=1024, act_fn="gelu_new", normalization_type="LN", eps=1e-5,
             positional_embedding_type="standard", tie_embeddings=True, unembed_bias=False),
        "GPT-2 small (124M; Hugging Face `gpt2`, 124,439,808 parameters with tied embeddings)."),
    "attn_only_2l": Preset(
        Transformer, TransformerConfig,
        dict(n_layers=2, d_model=512, n_heads=8, d_head=64, d_vocab=48262, n_ctx=2048,
             attn_only=True, normalization_type="LN", positional_embedding_type="standard"),
        "Two-layer attention-only transformer, the shape of TransformerLens's `attn-only-2l` "
        "(learned positions added to the residual, not shortformer-style)."),
    "llama_small": Preset(
        Transformer, TransformerConfig,
        dict(n_layers=8, d_model=512, n_heads=8, n_key_value_heads=2, d_head=64, d_mlp=1408,
             d_vocab=32000, n_ctx=2048, act_fn="silu", gated_mlp=True, normalization_type="RMS",
             positional_embedding_type="rotary", use_bias=False, unembed_bias=False, eps=1e-5),
        "A small LLaMA-style decoder: RMSNorm, rotary, SwiGLU, grouped-query attention "
        "(8 query / 2 KV heads), no biases, untied unembedding."),
}

# Every family module defines `PRESETS: dict[str, Preset]`; add new families to this tuple.
_FAMILIES: tuple[dict[str, Preset], ...] = (
    _TRANSFORMER_PRESETS,
    bert.PRESETS,
    mixer.PRESETS,
    raftmlp.PRESETS,
    ms_mlp.PRESETS,
    vit.PRESETS,
    deep_mlp.PRESETS,
    activator.PRESETS,
    ninformer.PRESETS,
    kan.PRESETS,
    maxim.PRESETS,
    strip_mlp.PRESETS,
)


def _merge(families: tuple[dict[str, Preset], ...]) -> dict[str, Preset]:
    merged: dict[str, Preset] = {}
    for family in families:
        clash = sorted(set(merged) & set(family))
        if clash:
            raise ValueError(f"preset names defined twice: {clash}")
        merged.update(family)
    return merged


PRESETS: dict[str, Preset] = _merge(_FAMILIES)


def presets() -> dict[str, str]:
    """`{preset name: one-line description}`."""
    return {name: p.doc for name, p in PRESETS.items()}


def config(name: str, **overrides: Any) -> Any:
    """The frozen config of preset `name` with `overrides` applied."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3, cutoff=0.3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model preset {name!r}.{hint} Presets: {', '.join(PRESETS)}.")
    preset = PRESETS[name]
    fields = {f.name for f in dataclasses.fields(preset.config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        hints = []
        for u in unknown:
            close = difflib.get_close_matches(u, fields, n=2, cutoff=0.5)
            hints.append(f"{u!r}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
        raise ValueError(f"unknown config field(s) for {name!r}: {', '.join(hints)}. "
                         f"Valid fields: {', '.join(sorted(fields))}.")
    return preset.config(**{**preset.fields, **overrides})


def build(name: str, **overrides: Any) -> nn.Module:
    """Builds preset `name` with config `overrides`, e.g. `build("gpt2_small", n_layers=2)`."""
    return PRESETS[name].module(config(name, **overrides)) if name in PRESETS else config(name)
