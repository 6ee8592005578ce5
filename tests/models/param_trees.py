"""Every preset's variable tree (collection/path -> shape), computed with `jax.eval_shape`.

    python -m tests.models.param_trees     # rewrites tests/models/data/param_trees.json

The JSON is the record that refactors are checked against (tests/models/test_param_trees.py):
checkpoints, the vit_jax Mixer layout and the Hugging Face loaders depend on these trees.
Regenerate it only for a deliberate change of a tree, and say so in the commit.
"""

from __future__ import annotations

import dataclasses
import json
import os

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from jaxinterp.models import registry

PATH = os.path.join(os.path.dirname(__file__), "data", "param_trees.json")


def example_input(name: str) -> np.ndarray:
    """A batch of one input that preset `name` accepts (its own image size or vocabulary)."""
    c = registry.config(name)
    fields = {f.name for f in dataclasses.fields(c)}
    if "image_size" in fields:
        return np.zeros((1, c.image_size, c.image_size, c.in_channels), np.float32)
    if "widths" in fields:
        return np.zeros((1, c.widths[0]), np.float32)
    return np.zeros((1, 8), np.int32)  # token models


def tree(name: str) -> dict[str, list[int]]:
    """`{"collection/path/to/leaf": shape}` of preset `name`'s variables."""
    model = registry.build(name)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), example_input(name)))
    flat = traverse_util.flatten_dict(jax.tree.map(
        lambda x: list(x.shape), dict(nn.meta.unbox(shapes)),
        is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct)), sep="/")
    return {k: v for k, v in sorted(flat.items()) if not k.startswith("intermediates/")}


def all_trees() -> dict[str, dict[str, list[int]]]:
    return {name: tree(name) for name in registry.PRESETS}


if __name__ == "__main__":
    with open(PATH, "w") as f:
        json.dump(all_trees(), f, indent=0, sort_keys=True)
    print(f"wrote {PATH}")
