"""The base training config and its validation (clear errors before anything compiles).

Experiment configs in `configs/` start from `base_config()` (and, for settings held in a
dataclass such as `jaxinterp.sae.SAEConfig`, from `dataclass_config(cls)`) and change only what
the experiment changes; every field can be overridden on the command line
(`--config.optimizer.learning_rate=1e-3`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any

import flax.linen as nn
import jax
from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder

from jaxinterp.data import pipeline
from jaxinterp.models import registry
from jaxinterp.train import sharding
from jaxinterp.train.tasks import make_task


def base_config(**overrides: Any) -> ConfigDict:
    """Defaults shared by training configs (a small LM on the induction task), with top-level
    `overrides` applied (`base_config(num_train_steps=1500, batch_size=64)`); an unknown name
    is a ValueError."""
    c = ConfigDict()
    c.seed = 0
    c.num_train_steps = 1000
    c.batch_size = 32  # global, across all processes
    c.grad_accum_steps = 1
    c.log_every_steps = 50
    c.eval_every_steps = 200
    c.eval_batches = 4  # batches of batch_size per eval; 0 means the whole eval split
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 3
    c.async_checkpointing = True

    # Model: a registry preset plus any field of its config as an override.
    c.model = ConfigDict({"preset": "attn_only_2l"})

    # The task (jaxinterp.train.tasks): name plus the task's fields, e.g.
    # {"name": "classification", "input_feature": "image"}; next_token takes z_loss (PaLM).
    c.task = ConfigDict({"name": "next_token"})
    # Variable collections the train step updates (BatchNorm's running statistics); the
    # model's other collections (kan_grid) change only through their own updates.
    c.mutable = ["batch_stats"]
    # B-spline KAN grids adapted to the current batch before the optimizer step, at steps
    # 0, every, 2 * every, ... below `update_until` (pykan's grid_update_freq and
    # stop_grid_update_step); every=0 never updates.
    c.kan_grid = ConfigDict(dict(update_every=0, update_until=0))

    c.data = ConfigDict()
    c.data.name = "induction"  # a jaxinterp builder, or any TFDS dataset name
    c.data.data_dir = ""  # "" means <workdir>/data
    c.data.builder_kwargs = ConfigDict()
    c.data.train_split = "train"
    c.data.eval_split = "test"
    # Image datasets: normalisation and augmentation (jaxinterp.data.image.default_config());
    # None for non-image data.
    c.data.image = None
    # Host input pipeline: grain threads decoding batches, and how many batches they read
    # ahead of the step (a few suffice when the step is slower than decoding; raise both for
    # heavy per-example augmentation).
    c.data.read_threads = pipeline.DEFAULT_READ_OPTIONS.num_threads  # 2
    c.data.prefetch_batches = pipeline.DEFAULT_READ_OPTIONS.prefetch_buffer_size  # 4

    # name "adamw" or "sgd" (jaxinterp.train.optimizer); b1, b2, eps: AdamW only; momentum:
    # SGD only (0: plain SGD; PyTorch's heavy-ball momentum, buf = momentum * buf + grad).
    c.optimizer = ConfigDict(dict(
        name="adamw", learning_rate=1e-3, schedule="cosine", warmup_steps=100,
        min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, grad_clip_norm=1.0,
        momentum=0.0))

    # Mesh axis sizes; -1 takes the remaining devices.
    c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.logical_axis_rules = [list(r) for r in sharding.DEFAULT_RULES]

    # Training-time interventions: list of `jaxinterp.interventions.from_spec` dicts.
    c.interventions = []

    # Trained interventions (jaxinterp.tuning): the base model, frozen, from a jaxinterp
    # workdir (`base`) or a Hugging Face checkpoint folder (`hf`), and the method trained on it
    # ({"name": "lofit", ...}, jaxinterp.tuning.METHODS); `config.model` is then unused.
    c.tuning = ConfigDict(dict(base="", hf="", method=ConfigDict({"name": ""})))

    # Multi-host: set coordinator_address (host:port), num_processes and process_id, or leave
    # coordinator_address empty to rely on the environment (e.g. a TPU pod or SLURM).
    c.distributed = ConfigDict(dict(initialize=False, coordinator_address="",
                                    num_processes=1, process_id=0))
    unknown = sorted(set(overrides) - set(c))
    if unknown:
        raise ValueError(f"base_config has no field(s) {unknown}; its fields: {sorted(c)}")
    c.update(overrides)
    return c


def dataclass_config(cls: type, *, exclude: Iterable[str] = (), **overrides: Any) -> ConfigDict:
    """A ConfigDict of dataclass `cls`'s fields at their defaults, with `overrides` applied.

    `cls(**config)` then builds the dataclass. A field whose default is None (e.g. `d_out:
    int | None = None`) becomes a placeholder of its type, so that the command line can set it
    (`--config.sae.d_out=128`). Fields named in `exclude` are left out (ones the experiment sets
    itself); an unknown name in `overrides` or `exclude` is a ValueError.
    """
    if not dataclasses.is_dataclass(cls):
        raise ValueError(f"dataclass_config needs a dataclass, got {cls!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    exclude = set(exclude)
    unknown = sorted((set(overrides) | exclude) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; its fields: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if name in exclude:
            continue
        if name in overrides:
            values[name] = overrides[name]
        elif field.default is not dataclasses.MISSING:
            values[name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            values[name] = field.default_factory()
        else:
            raise ValueError(f"{cls.__name__}.{name} has no default; pass it as an override")
        if values[name] is None:
            values[name] = _placeholder(hints.get(name))
    return ConfigDict(values)


def _placeholder(hint: Any) -> Any:
    """`placeholder(T)` for a hint `T | None` (None for any other hint)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(kinds) == 1 and isinstance(kinds[0], type):
            return placeholder(kinds[0])
    return None


def validate(config: ConfigDict, n_devices: int | None = None) -> None:
    """Raises ValueError naming the field for any invalid value."""
    n_devices = jax.device_count() if n_devices is None else n_devices
    for field in ("num_train_steps", "batch_size", "checkpoint_every_steps", "log_every_steps",
                  "eval_every_steps", "keep_checkpoints", "grad_accum_steps"):
        value = config[field]
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"config.{field} must be a positive integer, got {value!r}")
    if not isinstance(config.eval_batches, int) or config.eval_batches < 0:
        raise ValueError(f"config.eval_batches must be an integer >= 0 (0: the whole eval "
                         f"split), got {config.eval_batches!r}")
    for field in ("read_threads", "prefetch_batches"):
        value = config.data.get(field, 1)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"config.data.{field} must be a positive integer, got {value!r}")
    if not config.optimizer.learning_rate > 0:
        raise ValueError("config.optimizer.learning_rate must be positive, got "
                         f"{config.optimizer.learning_rate!r}")
    if config.optimizer.warmup_steps < 0:
        raise ValueError("config.optimizer.warmup_steps must be >= 0")
    shape = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(config.mesh, n_devices),
                     strict=True))
    data_ways = shape["data"] * shape["fsdp"]
    per_step = config.batch_size // config.grad_accum_steps
    if config.batch_size % config.grad_accum_steps:
        raise ValueError(f"config.batch_size={config.batch_size} is not divisible by "
                         f"grad_accum_steps={config.grad_accum_steps}")
    if per_step % data_ways:
        raise ValueError(f"config.batch_size={config.batch_size} (per micro-batch {per_step}) "
                         f"is not divisible by the data axes data x fsdp = {data_ways} "
                         f"(mesh {shape})")
    if config.batch_size % jax.process_count():
        raise ValueError(f"config.batch_size={config.batch_size} is not divisible by the "
                         f"{jax.process_count()} processes")
    build_model(config)  # unknown preset or field: a clear error from the registry
    make_task(config.task)  # unknown task or field
    grid = config.kan_grid
    if grid.update_every < 0 or grid.update_until < 0:
        raise ValueError(f"config.kan_grid: update_every={grid.update_every} and update_until="
                         f"{grid.update_until} must be >= 0")


def build_model(config: ConfigDict) -> nn.Module:
    """The model that `config.model` describes: a registry preset plus field overrides; with
    `config.tuning` set, `jaxinterp.tuning.Tuned` around the frozen base model."""
    if tuning_base(config):
        from jaxinterp import tuning

        return tuning.Tuned(tuning.base_model(config.tuning), tuning.make_method(
            config.tuning.method))
    fields = dict(config.model)
    return registry.build(fields.pop("preset"), **fields)


def tuning_base(config: ConfigDict) -> str:
    """`config.tuning.base` or `.hf` (where the frozen base model comes from), or "" when the
    run trains a model; both set is a ValueError."""
    t = config.get("tuning")
    if t is None:
        return ""
    if t.base and t.hf:
        raise ValueError(f"config.tuning: set base ({t.base!r}) or hf ({t.hf!r}), not both")
    if (t.base or t.hf) and not t.method.get("name"):
        raise ValueError("config.tuning.method.name is empty: name the method to train "
                         "(jaxinterp.tuning.METHODS)")
    return t.base or t.hf
