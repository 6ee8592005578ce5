"""`Preset`: a named model variant (a module class, its config class and the defining fields).

Each family module defines `PRESETS: dict[str, Preset]`; `jaxinterp.models.registry` merges them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class Preset:
    """A model class, its config class, and the config fields that define the variant."""

    module: Callable[..., nn.Module]
    config: type
    fields: dict[str, Any]
    doc: str
