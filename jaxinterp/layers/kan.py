"""KAN layers (work in progress; GR-KAN is stable). See `kan_rational` for GR-KAN."""

from jaxinterp.layers.kan_rational import (
    RATIONAL_INITS,
    GroupRationalKAN,
    group_rational,
    rational,
    rational_denominator,
)

__all__ = ["RATIONAL_INITS", "GroupRationalKAN", "group_rational", "rational",
           "rational_denominator"]
