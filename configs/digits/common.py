"""The digits classification config every `configs/digits/<family>.py` starts from.

    from configs.digits.common import SMALL, digits_config
    c = digits_config("vit_ti16", dict(SMALL, n_heads=4, d_head=8, d_mlp=64), steps=400)

The scikit-learn 8x8 digits (the `digits` TFDS builder: 1437 train / 360 test images, offline)
at `image_size` (8, or a bilinear upsampling) with `channels` 1 or 3; task `classification`;
the whole test split evaluated (`eval_batches=0`). The default batch size, 72, divides the 360
test images, so no test image is dropped with the last partial eval batch (40, 120 or 360 would
too; `digits_config` refuses one that does not divide 360).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ml_collections import ConfigDict

from jaxinterp.models import registry
from jaxinterp.train.config import base_config

NUM_CLASSES = 10
NUM_TEST = 360

# The shrunk shape of the ViT-like families (vit, kat, maxim, ninformer): patch 2 (16 tokens
# of the 8x8 image), 2 blocks of width 32. init_range 0.1: the presets' 0.02 (timm's, which
# suits width 192 and up) starts on a plateau at width 32 (each config's note measures it).
SMALL = dict(patch_size=2, n_layers=2, d_model=32, init_range=0.1)


def digits_config(preset: str, model_overrides: dict[str, Any], *, image_size: int = 8,
                  channels: int = 1, steps: int = 500, lr: float = 3e-3, batch_size: int = 72,
                  warmup_steps: int = 50, weight_decay: float = 1e-4) -> ConfigDict:
    """`base_config()` training registry preset `preset` (with `model_overrides`) on digits.

    The model's `image_size`, `in_channels` and `num_classes` are set from the data wherever
    the preset's config has these fields (every image family; a KAN takes `widths` instead).
    AdamW with linear warmup and cosine decay to 0.1 x `lr`.
    """
    if NUM_TEST % batch_size:
        raise ValueError(f"batch_size={batch_size} does not divide the {NUM_TEST} test images: "
                         "the last partial eval batch would be dropped")
    c = base_config(num_train_steps=steps, batch_size=batch_size,
                    log_every_steps=max(1, steps // 10), eval_every_steps=max(1, steps // 4),
                    eval_batches=0,  # the whole test split
                    checkpoint_every_steps=steps)  # one checkpoint, at the end

    fields = {f.name for f in dataclasses.fields(registry.PRESETS[preset].config)}
    data_fields = dict(image_size=image_size, in_channels=channels, num_classes=NUM_CLASSES)
    c.model = ConfigDict({"preset": preset,
                          **{k: v for k, v in data_fields.items() if k in fields},
                          **model_overrides})
    c.task = ConfigDict(dict(name="classification", num_classes=NUM_CLASSES))

    c.data.name = "digits"
    c.data.builder_kwargs = ConfigDict(dict(image_size=image_size, channels=channels))

    c.optimizer.learning_rate = lr
    c.optimizer.warmup_steps = warmup_steps
    c.optimizer.weight_decay = weight_decay
    return c
