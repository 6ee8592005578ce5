"""Helpers every family's config dataclass uses: validation (clear ValueErrors naming the
config, the field and the bad value) and the compute / parameter dtypes its modules take.

  check_positive(config, *fields)   positive ints
  check_stages(config, *fields)     tuples of positive ints, one per stage
  check_dtypes(config)              `dtype` and `param_dtype` name dtypes
  dtypes(config) -> (dtype, param_dtype)         as `jnp.dtype`s
  dtype_kwargs(config) -> dict(dtype=..., param_dtype=...)   for a module's keywords
  StackConfig: the `scan_layers` and `remat` fields of every family whose blocks run through
    `jaxinterp.layers.stack.stack`
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class StackConfig:
    """How a family's blocks are stacked (`jaxinterp.layers.stack.stack`); the family
    configs inherit these fields (construct them by keyword).

    Attributes:
      scan_layers: stack the blocks with `nn.scan`: one subtree (`blocks`; Mixer:
        `MixerBlock`) with a leading layer axis, so compile time does not grow with depth
        (`jaxinterp.models.stack_layers` / `unstack_layers` convert the two layouts).
      remat: rematerialise each block's activations in the backward pass (`nn.remat`).
    """

    scan_layers: bool = False
    remat: bool = False


def check_positive(config, *fields: str) -> None:
    """Raises ValueError unless each named field of `config` is a positive int."""
    for f in fields:
        v = getattr(config, f)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{type(config).__name__}.{f} must be a positive int, got {v!r}")


def check_stages(config, *fields: str) -> None:
    """Raises ValueError unless each named field of `config` is a tuple of positive ints, one
    per stage (hierarchical families: `n_layers`, and `d_model` where it is per stage)."""
    for f in fields:
        v = getattr(config, f)
        if (not isinstance(v, tuple) or not v
                or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in v)):
            raise ValueError(f"{type(config).__name__}.{f} must be a tuple of positive ints, one "
                             f"per stage, got {v!r}")


def check_dtypes(config) -> None:
    """Raises ValueError unless `config.dtype` and `config.param_dtype` name dtypes."""
    for f in ("dtype", "param_dtype"):
        try:
            jnp.dtype(getattr(config, f))
        except TypeError:
            raise ValueError(f"{type(config).__name__}.{f}={getattr(config, f)!r} is not a "
                             "dtype") from None


def dtypes(config) -> tuple[jnp.dtype, jnp.dtype]:
    """(compute dtype, parameter dtype) of a config's `dtype`, `param_dtype` names."""
    return jnp.dtype(config.dtype), jnp.dtype(config.param_dtype)


def dtype_kwargs(config) -> dict[str, jnp.dtype]:
    """`dict(dtype=..., param_dtype=...)` of a config, for `Module(..., **dtype_kwargs(c))`."""
    dtype, param_dtype = dtypes(config)
    return dict(dtype=dtype, param_dtype=param_dtype)
