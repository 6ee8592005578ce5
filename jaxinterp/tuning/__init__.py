"""Trained interventions: methods whose parameters are trained while the model stays frozen.

    from jaxinterp import tuning
    config.tuning.base = "/path/to/base/workdir"           # or config.tuning.hf = HF folder
    config.tuning.method = {"name": "steering_vector", "site": "blocks.1.hook_resid_post"}
    jaxinterp.train.train(config, workdir)                 # the same loop, sharded, resumable

A method is a Flax Linen module `__call__(frozen, *inputs)` (`frozen.Frozen`); `Tuned(base,
method)` holds the method's arrays in `params` (trained) and the base's variables in the `frozen`
collection (sharded and checkpointed with the state, never updated). Methods by config name:
`METHODS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from jaxinterp.tuning.controller import SteeringController
from jaxinterp.tuning.das import DAS, BoundlessDAS, interchange_accuracy
from jaxinterp.tuning.frozen import FROZEN, Frozen, Tuned, with_frozen
from jaxinterp.tuning.lofit import LoFiTBias, LoFiTScaling, lofit_heads, select_heads
from jaxinterp.tuning.lora import FullFineTune, LoRA
from jaxinterp.tuning.reft import LoReFT
from jaxinterp.tuning.steer import SteeringVector

METHODS: dict[str, type[nn.Module]] = {
    "steering_vector": SteeringVector,
    "steering_controller": SteeringController,
    "lofit_scale": LoFiTScaling, "lofit_bias": LoFiTBias,
    "lora": LoRA, "full": FullFineTune,
    "loreft": LoReFT, "das": DAS, "boundless_das": BoundlessDAS,
}


def make_method(cfg: Mapping[str, Any]) -> nn.Module:
    """The method `cfg["name"]` with the other entries as its fields; an unknown name or field
    is a ValueError naming the valid ones."""
    fields = dict(cfg)
    name = fields.pop("name", "")
    if name not in METHODS:
        raise ValueError(f"unknown tuning method {name!r}; methods: {sorted(METHODS)}")
    cls = METHODS[name]
    valid = {f for f in cls.__dataclass_fields__ if f not in ("parent", "name")}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise ValueError(f"tuning method {name!r} has no field(s) {unknown}; its fields: "
                         f"{sorted(valid)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


__all__ = ["DAS", "FROZEN", "METHODS", "BoundlessDAS", "Frozen", "FullFineTune", "LoFiTBias",
           "LoFiTScaling", "LoRA", "LoReFT", "SteeringController", "SteeringVector", "Tuned",
           "base_model", "interchange_accuracy", "load_base", "lofit_heads", "make_method",
           "select_heads", "with_frozen"]


def base_model(tuning_config: Mapping[str, Any]) -> nn.Module:
    """The frozen base model that `config.tuning` names (without reading its weights from a
    workdir; a Hugging Face folder is read whole)."""
    if tuning_config["base"]:
        from ml_collections import ConfigDict

        from jaxinterp.train.checkpoint import saved_config
        from jaxinterp.train.config import build_model

        return build_model(ConfigDict(saved_config(tuning_config["base"])))
    return load_base(tuning_config)[0]


def load_base(tuning_config: Mapping[str, Any]) -> tuple[nn.Module, Any]:
    """`(model, variables)` of the frozen base model that `config.tuning` names (unboxed)."""
    if tuning_config["base"]:
        from jaxinterp.train.checkpoint import load

        return load(tuning_config["base"])
    from jaxinterp.pretrained.hf import load_hf

    model, variables = load_hf(tuning_config["hf"])
    return model, nn.meta.unbox(variables)
