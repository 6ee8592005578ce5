"""SAEs in SAELens's on-disk format (and Gemma Scope's `params.npz`): save, so that SAELens
loads dictionaries trained here, and load, so that published ones run here, with identical
encodings.

    save_saelens("sae_dir", params, config)        # cfg.json + sae_weights.safetensors
    params, config = load_saelens("sae_dir")       # a SAELens directory (ReLU, TopK, JumpReLU)
    params, config = load_gemma_scope("params.npz", site="blocks.20.hook_resid_post")

The format, as checked in SAELens's source (jbloomAus/SAELens at 91ca16c, 2025-10-22, and the
sae-lens 6.54.12 wheel, whose files below agree with it):
  - `sae_lens/constants.py`: SAE_WEIGHTS_FILENAME = "sae_weights.safetensors",
    SAE_CFG_FILENAME = "cfg.json".
  - `sae_lens/saes/sae.py`, `SAE.save_model`: `save_file(state_dict, ...)` of the module's
    parameters, `json.dump(self.cfg.to_dict())`. `SAEConfig` fields: d_in, d_sae, dtype
    ("float32"), device, apply_b_dec_to_input (True), normalize_activations ("none",
    "expected_average_only_in", "layer_norm", ...), reshape_activations ("none", "hook_z"),
    metadata (a dict: sae_lens_version, hook_name, model_name, hook_head_index, ...; since
    6.0 the hook name lives there), plus "architecture". `process_sae_in`:
    `sae_in - b_dec * apply_b_dec_to_input`, then `hidden_pre = sae_in @ W_enc + b_enc`,
    `decode`: `feature_acts @ W_dec + b_dec`. So W_enc [d_in, d_sae], W_dec [d_sae, d_in]
    (rows are latents), b_enc [d_sae], b_dec [d_in]: our names, shapes and layout.
  - `saes/standard_sae.py`: architecture "standard", ReLU.
  - `saes/topk_sae.py`: architecture "topk", fields k and rescale_acts_by_decoder_norm
    (inference default False; when True, `hidden_pre * ||W_dec[s]||` before the top k and
    `acts / ||W_dec[s]||` before decoding); ReLU of the top k values.
  - `saes/jumprelu_sae.py`: architecture "jumprelu", tensor `threshold` [d_sae];
    `encode = ReLU(hidden_pre) * (hidden_pre > threshold)` (the training SAE's
    `log_threshold` is exp'd to `threshold` by `process_state_dict_for_saving`).
  - `loading/pretrained_sae_loaders.py`, `handle_pre_6_0_config`: configs written before 6.0
    name the hook `hook_name` (or `hook_point`) at the top level, the activation
    `activation_fn` (or `activation_fn_str`), and a TopK SAE is `activation_fn: "topk"` with
    `activation_fn_kwargs: {"k": k}`; a missing architecture means "standard".
  - Gemma Scope (`get_gemma_2_config_from_hf`, `gemma_2_sae_huggingface_loader`): a
    `params.npz` with W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc, b_dec, threshold
    (lower-case `w_` prefixes renamed to `W_`), architecture "jumprelu",
    apply_b_dec_to_input False.

Conventions converted (the encodings are the same function of the input):
  - apply_b_dec_to_input False (Gemma Scope): our SAE always encodes `x - b_dec`, so loading
    folds b_dec into the encoder bias, `b_enc' = b_enc + b_dec W_enc`.
  - TopK with rescale_acts_by_decoder_norm: folded as SAELens's own `fold_W_dec_norm` does,
    `W_enc' = W_enc ||W_dec[s]||`, `b_enc' = b_enc ||W_dec[s]||`, `W_dec' = W_dec / ||W_dec[s]||`.
  - JumpReLU: our `log_threshold = log(threshold)` (a threshold <= 0 selects the same latents
    as 0, since ReLU already zeroes pre <= 0: it becomes log 0 = -inf); our σ,
    `z H(z - θ)` on z = ReLU(pre), equals SAELens's for θ >= 0.
Saving writes apply_b_dec_to_input True, rescale_acts_by_decoder_norm False, the 6.0 layout
(hook name in metadata) plus the pre-6.0 top-level keys (hook_name, hook_layer, activation_fn,
activation_fn_kwargs, model_name) for older readers, and our full `SAEConfig` under
metadata["jaxinterp"], so that a round trip restores it exactly (SAELens ignores extra keys).
Unsupported (ValueError naming the value and what is supported): other architectures
(gated, batchtopk, transcoder, ...), normalize_activations other than "none", a
hook_head_index, a non-unit finetuning scaling factor, and transcoders on save.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import jax
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxinterp.sae.io import _check
from jaxinterp.sae.model import SAEConfig

WEIGHTS_FILE = "sae_weights.safetensors"
CONFIG_FILE = "cfg.json"
ARCH_TO_SAELENS = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}
SAELENS_TO_ARCH = {v: k for k, v in ARCH_TO_SAELENS.items()}
SAELENS_VERSION = "6.0.0"
"""Written to metadata.sae_lens_version: SAELens reads configs of >= 6.0 without renaming."""


def to_saelens(params: dict[str, Any], config: SAEConfig, *, model_name: str = ""
               ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(cfg dict, tensors) in SAELens's format for our `params` and `config`."""
    if config.transcoder:
        raise ValueError("save_saelens writes SAEs (architectures relu, topk, jumprelu); "
                         "transcoder=True is not supported")
    arrays = {k: np.asarray(jax.device_get(v), np.float32) for k, v in params.items()}
    _check(arrays, config, "params")
    tensors = {k: arrays[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if config.architecture == "jumprelu":
        tensors["threshold"] = np.exp(arrays["log_threshold"].astype(np.float64)).astype(
            np.float32)
    site = config.site
    layer = re.match(r"blocks\.(\d+)\.", site)
    model_name = model_name or config.model_preset
    cfg: dict[str, Any] = {
        "architecture": ARCH_TO_SAELENS[config.architecture],
        "d_in": config.d_in, "d_sae": config.d_sae, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": SAELENS_VERSION,
                     "sae_lens_training_version": SAELENS_VERSION,
                     "hook_name": site, "hook_head_index": None, "model_name": model_name,
                     "jaxinterp": dataclasses.asdict(config)},
        # pre-6.0 keys (SAELens >= 6 filters them out)
        "hook_name": site, "hook_layer": int(layer.group(1)) if layer else 0,
        "model_name": model_name,
        "activation_fn": "topk" if config.architecture == "topk" else "relu",
        "activation_fn_kwargs": {"k": config.k} if config.architecture == "topk" else {},
    }
    if config.architecture == "topk":
        cfg.update(k=config.k, rescale_acts_by_decoder_norm=False)
    return cfg, tensors


def save_saelens(directory: str | os.PathLike, params: dict[str, Any], config: SAEConfig, *,
                 model_name: str = "") -> None:
    """Writes `directory/cfg.json` and `directory/sae_weights.safetensors` (float32), which
    `sae_lens.SAE.load_from_disk(directory)` loads. `model_name` (default
    `config.model_preset`) goes to metadata.model_name."""
    cfg, tensors = to_saelens(params, config, model_name=model_name)
    os.makedirs(directory, exist_ok=True)
    save_file(tensors, os.path.join(directory, WEIGHTS_FILE))
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump(cfg, f, indent=2)


def load_saelens(directory: str | os.PathLike) -> tuple[dict[str, np.ndarray], SAEConfig]:
    """(params as float32 NumPy arrays, config) of the SAELens SAE saved under `directory`
    (`cfg.json` + `sae_weights.safetensors`, as `SAE.save_model` writes them)."""
    path = os.path.join(directory, CONFIG_FILE)
    with open(path) as f:
        cfg = json.load(f)
    tensors = {}
    with safe_open(os.path.join(directory, WEIGHTS_FILE), framework="flax") as f:
        for name in f.keys():
            tensors[name] = np.asarray(f.get_tensor(name), np.float32)
    return from_saelens(cfg, tensors, where=str(path))


def load_gemma_scope(path: str | os.PathLike, *, site: str = "", model_preset: str = ""
                     ) -> tuple[dict[str, np.ndarray], SAEConfig]:
    """A Gemma Scope JumpReLU SAE from its `params.npz` (W_enc, W_dec, b_enc, b_dec,
    threshold; no b_dec centring of the input), with `site` and `model_preset` as metadata."""
    with np.load(path) as data:
        tensors = {("W_" + k[2:] if k.startswith("w_") else k): np.asarray(data[k], np.float32)
                   for k in data.files}
    if "W_enc" not in tensors:
        raise ValueError(f"{path}: no W_enc (found {sorted(tensors)}); a Gemma Scope "
                         "params.npz has W_enc, W_dec, b_enc, b_dec, threshold")
    d_in, d_sae = tensors["W_enc"].shape
    cfg = {"architecture": "jumprelu", "d_in": int(d_in), "d_sae": int(d_sae),
           "apply_b_dec_to_input": False, "normalize_activations": "none",
           "metadata": {"hook_name": site, "sae_lens_version": SAELENS_VERSION}}
    params, config = from_saelens(cfg, tensors, where=str(path))
    return params, dataclasses.replace(config, model_preset=model_preset)


def from_saelens(cfg: dict[str, Any], tensors: dict[str, np.ndarray], *, where: str = "cfg"
                 ) -> tuple[dict[str, np.ndarray], SAEConfig]:
    """(params, config) of ours with the same encodings as SAELens's (cfg dict, tensors)."""
    meta = cfg.get("metadata") or {}
    arch = _architecture(cfg, where)
    k = None
    if arch == "topk":
        k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
        if not isinstance(k, int):
            raise ValueError(f"{where}: a topk SAE needs an int k (or activation_fn_kwargs.k), "
                             f"got {k!r}")
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, False, "none"):
        raise ValueError(f"{where}: normalize_activations={norm!r} is not supported (only "
                         "'none'); fold the scaling into the weights first (SAELens: "
                         "sae.fold_activation_norm_scaling_factor)")
    head = meta.get("hook_head_index", cfg.get("hook_head_index", cfg.get(
        "hook_point_head_index")))
    if head is not None:
        raise ValueError(f"{where}: hook_head_index={head!r} is not supported (only None: "
                         "an SAE reads the whole site)")
    if cfg.get("reshape_activations", "none") not in ("none", "hook_z"):
        raise ValueError(f"{where}: reshape_activations={cfg['reshape_activations']!r} is not "
                         "supported ('none' or 'hook_z', whose rows we flatten already)")
    t = dict(tensors)
    for name in ("scaling_factor", "finetuning_scaling_factor"):
        if name in t:
            if not np.allclose(t[name], 1.0):
                raise ValueError(f"{where}: a {name} that is not all ones is not supported")
            del t[name]
    want = {"W_enc", "b_enc", "W_dec", "b_dec"} | ({"threshold"} if arch == "jumprelu" else set())
    if set(t) != want:
        raise ValueError(f"{where}: tensors {sorted(t)} do not match a SAELens "
                         f"{ARCH_TO_SAELENS[arch]} SAE (expected {sorted(want)})")
    w_enc, b_enc, w_dec, b_dec = (t[n].astype(np.float64) for n in ("W_enc", "b_enc", "W_dec",
                                                                     "b_dec"))
    threshold = t.get("threshold")
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        n = np.linalg.norm(w_dec, axis=-1)  # [d_sae]
        w_enc, b_enc, w_dec = w_enc * n, b_enc * n, w_dec / n[:, None]
    if not cfg.get("apply_b_dec_to_input", True):
        b_enc = b_enc + b_dec @ w_enc  # our encoder subtracts b_dec: add it back
    params = {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": b_dec}
    if arch == "jumprelu":
        with np.errstate(divide="ignore"):
            params["log_threshold"] = np.log(np.maximum(threshold.astype(np.float64), 0.0))
    params = {k2: v.astype(np.float32) for k2, v in params.items()}

    saved = meta.get("jaxinterp")
    if isinstance(saved, dict):  # written by save_saelens: our exact config
        fields = {f.name for f in dataclasses.fields(SAEConfig)}
        config = SAEConfig(**{k2: v for k2, v in saved.items() if k2 in fields})
    else:
        site = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point") or ""
        unit = bool(np.allclose(np.linalg.norm(params["W_dec"], axis=-1), 1.0, atol=1e-4))
        extra = {"k": k} if arch == "topk" else {}
        config = SAEConfig(architecture=arch, d_in=int(cfg["d_in"]), d_sae=int(cfg["d_sae"]),
                           site=site, normalize_decoder=unit, **extra)
    _check(params, config, where)
    return params, config


def _architecture(cfg: dict[str, Any], where: str) -> str:
    name = cfg.get("architecture")
    act = cfg.get("activation_fn", cfg.get("activation_fn_str"))
    if name is None:  # pre-6.0: standard unless the activation says topk
        name = "topk" if act == "topk" else "standard"
    if name not in SAELENS_TO_ARCH:
        raise ValueError(f"{where}: SAELens architecture {name!r} is not supported; supported: "
                         f"{', '.join(SAELENS_TO_ARCH)}")
    if name == "standard" and act not in (None, "relu", "topk"):
        raise ValueError(f"{where}: activation_fn={act!r} is not supported for a standard SAE "
                         "(only 'relu'; 'topk' with activation_fn_kwargs.k)")
    if name == "standard" and act == "topk":
        name = "topk"
    return SAELENS_TO_ARCH[name]
