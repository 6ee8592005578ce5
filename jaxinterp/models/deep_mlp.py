"""Deep MLPs on flattened images, as in Bachmann, Anagnostidis & Hofmann 2023, "Scaling MLPs:
A Tale of Inductive Bias" (reference: gregorbachmann/scaling_mlps, `BottleneckMLP`).

images [batch, H, W, C] float -> flatten -> linear_in (H*W*C -> d_model) -> n_layers blocks
`x + W_out gelu(W_in LN(x) + b_in) + b_out` (pre-LN inverted bottleneck, d_mlp = expansion *
d_model) -> linear_out (d_model -> num_classes). As in the reference code there is no norm
between the last block and the head; `final_norm=True` adds a LayerNorm there (not part of the
published models). "B-{n}/Wi-{w}" in the paper is n blocks of width w (thin) and 4w (wide).

Flattening is row-major over (height, width, channels) of the NHWC image (the reference
flattens CHW; only the order of linear_in's rows differs, not the function class or count).

Sites (every activation is a vector per image, no positions):
  hook_embed                                  [batch, d_model]  linear_in's output
  blocks.{i}.hook_resid_pre, hook_mlp_out, hook_resid_post            [batch, d_model]
  blocks.{i}.ln.hook_normalized                                       [batch, d_model]
  blocks.{i}.mlp.hook_pre, blocks.{i}.mlp.hook_post                   [batch, d_mlp]
  ln_final.hook_normalized (final_norm only)                          [batch, d_model]

Parameter count of B-12/Wi-1024 at 64x64x3 with 1000 classes, from the reference code's layer
list: 12,583,936 (linear_in) + 12 x 8,395,776 (LN + two linears) + 1,025,000 (linear_out)
= 114,358,248.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp import hooks
from jaxinterp.layers import vision as vc
from jaxinterp.layers.axes import VEC_AXES
from jaxinterp.layers.axes import VEC_NEURON_AXES as NEURON_AXES
from jaxinterp.layers.common import ACTIVATIONS
from jaxinterp.layers.config import StackConfig, dtypes
from jaxinterp.layers.dense import Dense
from jaxinterp.layers.mlp import MLP
from jaxinterp.layers.norms import LayerNorm
from jaxinterp.layers.stack import stack
from jaxinterp.models.preset import Preset


@dataclasses.dataclass(frozen=True)
class DeepMLPConfig(vc.ImageClassifierConfig, StackConfig):
    """Hyperparameters of a Scaling-MLPs bottleneck MLP (image_size 64 by default; the input,
    output and dtype fields: `layers.vision.ImageClassifierConfig`; scan_layers, remat:
    `layers.config.StackConfig`).

    Attributes:
      n_layers: bottleneck blocks ("B-n").
      d_model: thin width ("Wi-w"); d_mlp = expansion * d_model is the wide one.
      expansion: wide / thin (4 in the paper).
      act_fn: activation of the wide layer ("gelu" = exact, torch nn.GELU).
      final_norm: LayerNorm before the head (False in the reference code).
      eps: LayerNorm epsilon (torch default 1e-5).
      init_range: standard deviation of the normal initialiser of weights.
    """

    image_size: int = 64
    n_layers: int = 12
    d_model: int = 1024
    expansion: int = 4
    act_fn: str = "gelu"
    final_norm: bool = False
    eps: float = 1e-5
    init_range: float = 0.02

    def __post_init__(self):
        super().__post_init__()
        vc.check_positive(self, "n_layers", "d_model", "expansion")
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn={self.act_fn!r}; choose from {sorted(ACTIVATIONS)}")

    @property
    def d_mlp(self) -> int:
        return self.expansion * self.d_model


def _linear(features: int, axes: tuple[str | None, str], init_range: float, dtype, pd,
            name: str) -> Dense:
    """x [batch, d_in] -> [batch, features] = x W + b (parameters `W`, `b`)."""
    return Dense(features, axes, nn.initializers.normal(init_range), names=("W", "b"),
                 promote=False, dtype=dtype, param_dtype=pd, name=name)


class DeepMLPBlock(nn.Module):
    """x + MLP(LN(x)), the MLP an inverted bottleneck W_out act(W_in x + b_in) + b_out.
    x: [batch, d_model] -> ([batch, d_model], None)."""

    config: DeepMLPConfig

    @nn.compact
    def __call__(self, x: jax.Array, layer: int | jax.Array) -> tuple[jax.Array, None]:
        c = self.config
        dtype, pd = dtypes(c)
        resid_pre = hooks.site(self, "hook_resid_pre", x, VEC_AXES)
        h = LayerNorm(c.eps, dtype, pd, name="ln")(resid_pre, VEC_AXES)
        out = MLP(c.d_mlp, c.act_fn, init_range=c.init_range, site_axes=NEURON_AXES,
                  dtype=dtype, param_dtype=pd, name="mlp")(h)
        out = hooks.site(self, "hook_mlp_out", out, VEC_AXES)
        return hooks.site(self, "hook_resid_post", resid_pre + out, VEC_AXES), None


class DeepMLP(vc.ImageClassifier):
    """Bottleneck MLP: images [batch, H, W, C] float -> logits [batch, num_classes] float32
    (see the module docstring; `layers.vision.ImageClassifier` checks the images)."""

    config: DeepMLPConfig

    def forward(self, images: jax.Array, dtype: jnp.dtype, pd: jnp.dtype) -> jax.Array:
        c = self.config
        x = images.reshape(images.shape[0], -1).astype(dtype)  # [batch, H*W*C]
        x = _linear(c.d_model, (None, "embed"), c.init_range, dtype, pd, "linear_in")(x)
        x = hooks.site(self, "hook_embed", x, VEC_AXES)
        x = stack(DeepMLPBlock, x, n_layers=c.n_layers, scan=c.scan_layers, remat=c.remat,
                  args=(c,), axes=VEC_AXES)
        if c.final_norm:
            x = LayerNorm(c.eps, dtype, pd, name="ln_final")(x, VEC_AXES)
        logits = _linear(c.num_classes, ("embed", "vocab"), c.init_range, dtype, pd,
                         "linear_out")(x)
        return logits.astype(jnp.float32)


def _preset(n_layers: int, width: int) -> Preset:
    return Preset(DeepMLP, DeepMLPConfig,
                  dict(image_size=64, in_channels=3, num_classes=1000, n_layers=n_layers,
                       d_model=width, expansion=4),
                  f"Scaling-MLPs B-{n_layers}/Wi-{width} bottleneck MLP on 64x64x3 images, "
                  "1000 classes (gregorbachmann/scaling_mlps BottleneckMLP).")


PRESETS: dict[str, Preset] = {
    "deep_mlp_b6_wi512": _preset(6, 512),
    "deep_mlp_b6_wi1024": _preset(6, 1024),
    "deep_mlp_b12_wi512": _preset(12, 512),
    "deep_mlp_b12_wi1024": _preset(12, 1024),
}
