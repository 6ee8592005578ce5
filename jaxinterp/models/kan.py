"""KAN networks: a stack of KAN layers (Liu et al. 2024, arXiv:2404.19756).

Input [batch, d_in] (images [batch, H, W, C] are flattened) -> [batch, widths[-1]].

    model = jaxinterp.models.build("kan_64_64_10")
    variables = model.init(key, images)                 # params and kan_grid (B-spline grids)
    variables = kan.update_grid(model, variables, x)    # adapt grids to data, refit
    variables = kan.extend_grid(variables, 10, order=3) # finer grids ...
    model = jaxinterp.models.build("kan_64_64_10", grid_size=10)  # ... used by this model

Sites (`jaxinterp.layers.kan`): layers.{i}.hook_basis [batch, d_in, n_basis],
layers.{i}.hook_edge [batch, d_in, d_out], layers.{i}.hook_post [batch, d_out]
(GR-KAN layers: hook_basis [batch, d_in]). Parameters live under `layers_{i}`.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.hooks import layer as site_layer
from jaxinterp.layers import kan
from jaxinterp.layers.config import check_dtypes, dtypes
from jaxinterp.models.preset import Preset

LAYER_TYPES = (*kan.FAMILIES, "grkan")


@dataclasses.dataclass(frozen=True)
class KANConfig:
    """Hyperparameters of a KAN network.

    Attributes:
      widths: node counts, input first: (64, 64, 10) is 64 inputs, 64 hidden, 10 outputs
        (pykan's `width`). Kept as one tuple rather than the `n_layers` / `d_model` other
        families have: a KAN's layers have different widths (input, hidden and output widths
        are all free), so there is no single d_model; `n_layers` is `len(widths) - 1`.
      layer_type: "bspline", "rbf", "chebyshev", "fourier", "grkan" (group-rational + linear,
        KAT), or a tuple of the first four (a learnable mix per edge).
      grid_size, order, grid_range: B-spline grid (G intervals, order k, initial range).
      rbf_centers, rbf_range: RBF centres.
      degree: Chebyshev degree.  n_freq: Fourier frequencies.
      grkan_groups, grkan_init: GR-KAN groups (must divide every input width) and the initial
        shape of every layer's rational ("swish", "gelu" or "identity"); the same settings as
        `ViTConfig.grkan_groups` / `grkan_init`.
      use_base: the silu base branch (None: the family's default).
      use_bias: output biases.
      mix: "softmax" or "linear" mixing (tuple `layer_type`).
      dtype, param_dtype: compute and parameter dtypes.
    """

    widths: tuple[int, ...] = (64, 64, 10)
    layer_type: str | tuple[str, ...] = "bspline"
    grid_size: int = 5
    order: int = 3
    grid_range: tuple[float, float] = (-1.0, 1.0)
    rbf_centers: int = 8
    rbf_range: tuple[float, float] = (-2.0, 2.0)
    degree: int = 4
    n_freq: int = 5
    grkan_groups: int = 8
    grkan_init: str = "swish"
    use_base: bool | None = None
    use_bias: bool = False
    mix: str = "softmax"
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        w = self.widths
        if len(w) < 2 or any(not isinstance(n, int) or n <= 0 for n in w):
            raise ValueError(f"KANConfig.widths={w!r}: give at least two positive ints "
                             "(input width first)")
        object.__setattr__(self, "widths", tuple(w))
        if isinstance(self.layer_type, list):
            object.__setattr__(self, "layer_type", tuple(self.layer_type))
        if self.layer_type == "grkan":
            bad = [n for n in w[:-1] if n % self.grkan_groups]
            if bad:
                raise ValueError(f"KANConfig: grkan_groups={self.grkan_groups} must divide "
                                 f"every input width, not {bad}")
        else:
            try:
                kan.families(self.layer_type)
            except ValueError:
                raise ValueError(f"KANConfig.layer_type={self.layer_type!r}; choose from "
                                 f"{LAYER_TYPES} or a tuple of {kan.FAMILIES}") from None
        check_dtypes(self)

    @property
    def n_layers(self) -> int:
        """Number of KAN layers, `len(widths) - 1`."""
        return len(self.widths) - 1


class KAN(nn.Module):
    """x [batch, d_in] or images [batch, H, W, C] -> [batch, widths[-1]]."""

    config: KANConfig

    @nn.compact
    def __call__(self, x: jax.Array, update_grid: bool = False) -> jax.Array:
        c = self.config
        if x.ndim == 4:
            x = x.reshape(x.shape[0], -1)
        if x.ndim != 2 or x.shape[-1] != c.widths[0]:
            raise ValueError(f"KAN expects [batch, {c.widths[0]}] (or images with "
                             f"{c.widths[0]} values), got shape {x.shape}")
        if update_grid and not _has_bspline(c):
            raise ValueError(f"update_grid: layer_type={c.layer_type!r} has no B-spline grid")
        dtype, pd = dtypes(c)
        x = x.astype(dtype)
        n = len(c.widths) - 1
        for i, d_out in enumerate(c.widths[1:]):
            name = f"layers_{i}"
            if c.layer_type == "grkan":
                layer = kan.GroupRationalKAN(d_out, n_groups=c.grkan_groups,
                                             rational_init=c.grkan_init,
                                             use_bias=c.use_bias, dtype=dtype,
                                             param_dtype=pd, name=name)
                with site_layer(layer, "layers", i, n):
                    x = layer(x)
                continue
            layer = kan.KANLayer(
                d_out, basis=c.layer_type, grid_size=c.grid_size, order=c.order,
                grid_range=c.grid_range, rbf_centers=c.rbf_centers, rbf_range=c.rbf_range,
                degree=c.degree, n_freq=c.n_freq, use_base=c.use_base, use_bias=c.use_bias,
                mix=c.mix, dtype=dtype, param_dtype=pd, name=name)
            with site_layer(layer, "layers", i, n):
                x = layer(x, update_grid=update_grid)
        return x.astype(jnp.float32)


def _has_bspline(c: KANConfig) -> bool:
    return c.layer_type != "grkan" and "bspline" in kan.families(c.layer_type)


PRESETS: dict[str, Preset] = {
    "kan_64_64_10": Preset(
        KAN, KANConfig, dict(widths=(64, 64, 10), layer_type="bspline", grid_size=5, order=3),
        "B-spline KAN 64-64-10 (grid 5, cubic), e.g. for 8x8 digits; 42,624 parameters."),
    "kan_pykan_tiny": Preset(
        KAN, KANConfig, dict(widths=(2, 5, 1), layer_type="bspline", grid_size=5, order=3),
        "pykan's tutorial network [2, 5, 1] (grid 5, cubic)."),
    "fastkan_64_64_10": Preset(
        KAN, KANConfig, dict(widths=(64, 64, 10), layer_type="rbf", rbf_centers=8),
        "RBF KAN (FastKAN) 64-64-10, 8 Gaussian centres on [-2, 2], silu base branch."),
    "grkan_64_64_10": Preset(
        KAN, KANConfig, dict(widths=(64, 64, 10), layer_type="grkan", grkan_groups=8,
                             use_bias=True),
        "Group-rational KAN (KAT's GR-KAN layers) 64-64-10, 8 groups."),
}
