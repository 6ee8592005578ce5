"""Saving and loading SAEs: `<dir>/sae.safetensors` (the parameters, float32, by name) and
`<dir>/config.json` (the `SAEConfig`: architecture, d_in, d_sae, k, site, model preset, ...).

    save("sae_dir", params, config)
    params, config = load("sae_dir")

The round trip is exact. Loading checks everything it can before returning: an unknown
architecture or config field, a missing or unexpected parameter, or a parameter whose shape
does not match the config is a ValueError that says which and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
from safetensors.numpy import load_file, save_file

from jaxinterp.sae.model import ARCHITECTURES, SAEConfig

FORMAT = "jaxinterp.sae/1"
PARAMS_FILE = "sae.safetensors"
CONFIG_FILE = "config.json"


def expected_shapes(config: SAEConfig) -> dict[str, tuple[int, ...]]:
    """`{parameter name: shape}` of an SAE with `config`."""
    shapes = {"W_enc": (config.d_in, config.d_sae), "b_enc": (config.d_sae,),
              "W_dec": (config.d_sae, config.d_output), "b_dec": (config.d_output,)}
    if config.architecture == "jumprelu":
        shapes["log_threshold"] = (config.d_sae,)
    return shapes


def save(directory: str | os.PathLike, params: dict[str, Any], config: SAEConfig) -> None:
    """Writes `params` (checked against `config`) and `config` under `directory`."""
    arrays = {k: np.asarray(jax.device_get(v)) for k, v in params.items()}
    _check(arrays, config, "params")
    os.makedirs(directory, exist_ok=True)
    save_file(arrays, os.path.join(directory, PARAMS_FILE), metadata={"format": FORMAT})
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump({"format": FORMAT, **dataclasses.asdict(config)}, f, indent=2, sort_keys=True)


def load(directory: str | os.PathLike) -> tuple[dict[str, np.ndarray], SAEConfig]:
    """(params as NumPy arrays, config) saved by `save` under `directory`."""
    with open(os.path.join(directory, CONFIG_FILE)) as f:
        raw = json.load(f)
    raw.pop("format", None)
    arch = raw.get("architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{directory}: unknown SAE architecture {arch!r}; this version "
                         f"knows {', '.join(ARCHITECTURES)}")
    fields = {f.name for f in dataclasses.fields(SAEConfig)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(f"{directory}/{CONFIG_FILE}: unknown field(s) {unknown}; "
                         f"SAEConfig fields: {sorted(fields)}")
    config = SAEConfig(**raw)
    params = load_file(os.path.join(directory, PARAMS_FILE))
    _check(params, config, os.path.join(str(directory), PARAMS_FILE))
    return params, config


def _check(arrays: dict[str, np.ndarray], config: SAEConfig, where: str) -> None:
    want = expected_shapes(config)
    missing, extra = sorted(set(want) - set(arrays)), sorted(set(arrays) - set(want))
    if missing or extra:
        raise ValueError(f"{where}: parameters do not match a {config.architecture} SAE "
                         f"(missing {missing}, unexpected {extra}; expected {sorted(want)})")
    for name, shape in want.items():
        if tuple(arrays[name].shape) != shape:
            raise ValueError(f"{where}: {name} has shape {tuple(arrays[name].shape)}, but "
                             f"the config (d_in={config.d_in}, d_sae={config.d_sae}, "
                             f"d_out={config.d_output}) needs {shape}")
