"""Deep linear networks: a product of bias-free matrices, one pathway or several in parallel.

`DeepLinear`: x [batch, d_in] -> x W_0 W_1 ... W_{depth-1} [batch, d_out], every hidden layer of
width `width` (depth 1: a single matrix [d_in, d_out]). Deep linear networks compute a linear map
but learn it nonlinearly (Saxe, McClelland & Ganguli 2014): from a small initialisation each
singular mode of the target is picked up in a sigmoidal step, later and more abruptly the
deeper the network. Deep matrix factorisation (Arora et al. 2019) is the case d_in = d_out = n
applied to the identity: the end-to-end matrix itself is the prediction.

`MultiPathwayLinear`: `n_pathways` deep linear networks that read the same input and whose
outputs are summed, the multi-pathway model of Kleinman, Achille & Soatto 2024 ("Critical
Learning Periods Emerge Even in Deep Linear Networks", after Saxe et al. 2022, "The Neural Race
Reduction"). Two kinds of deficit, each [n_pathways] with values in [0, 1]:
  gates:  multiply each pathway's input; gate 0 blanks that input source (the pathway neither
          contributes nor learns, since every gradient of a linear pathway carries its input).
  frozen: 1 passes the pathway's output through `jax.lax.stop_gradient` (it still contributes
          but does not learn: the paper's "gate_path" deficit).
With `tied_init=True` every pathway starts from the same weights, so without a deficit the
pathways split every feature evenly.

Initialisation (both): W_i ~ Normal(0, init_scale^(2/depth) / fan_in), so the end-to-end
matrix has mean squared Frobenius norm init_scale^2 * d_out (the "gaussian" initialisation of
the paper's code; a small init_scale is the rich, incremental regime).

Parameters: `W_0 .. W_{depth-1}`, [fan_in, fan_out] (`DeepLinear`) or [pathway, fan_in,
fan_out] (`MultiPathwayLinear`). `end_to_end(params)` multiplies them: [d_in, d_out] or
[pathway, d_in, d_out].

Sites:
  hook_hidden_{i} (i < depth - 1)   [batch, width]              DeepLinear
  hook_pathway_out                  [pathway, batch, d_out]     MultiPathwayLinear
Neither is a registry preset (they have no fixed input size).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import hooks
from jaxinterp.layers.axes import VEC_NEURON_AXES

PATHWAY_AXES = ("pathway", "batch", "d_out")


def _check(depth: int, width: int, d_out: int, init_scale: float) -> None:
    for name, value in (("depth", depth), ("width", width), ("d_out", d_out)):
        if value < 1:
            raise ValueError(f"{name}={value}; must be a positive integer")
    if not init_scale > 0:
        raise ValueError(f"init_scale={init_scale}; must be > 0")


def _dims(d_in: int, depth: int, width: int, d_out: int) -> list[int]:
    """[d_in, width, ..., width, d_out]: depth + 1 sizes."""
    return [d_in] + [width] * (depth - 1) + [d_out]


def layer_init(init_scale: float, depth: int):
    """Normal initialiser of one layer [..., fan_in, fan_out] with standard deviation
    init_scale^(1/depth) / sqrt(fan_in)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        std = init_scale ** (1.0 / depth) / np.sqrt(shape[-2])
        return std * jax.random.normal(key, shape, dtype)

    return init


def end_to_end(params: dict[str, jax.Array]) -> jax.Array:
    """The product W_0 W_1 ... W_{depth-1}: [d_in, d_out], or [pathway, d_in, d_out] for
    `MultiPathwayLinear` parameters (the leading pathway axis is batched over)."""
    depth = len(params)
    if set(params) != {f"W_{i}" for i in range(depth)} or depth == 0:
        raise ValueError(f"want parameters W_0..W_{{depth-1}}, got {sorted(params)}")
    m = params["W_0"]
    for i in range(1, depth):
        m = jnp.einsum("...io,...oj->...ij", m, params[f"W_{i}"])  # contract the hidden axis
    return m


class DeepLinear(nn.Module):
    """x [batch, d_in] -> x W_0 ... W_{depth-1} [batch, d_out] (see the module docstring)."""

    depth: int
    width: int
    d_out: int
    init_scale: float = 1e-3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check(self.depth, self.width, self.d_out, self.init_scale)
        if x.ndim != 2:
            raise ValueError(f"DeepLinear: want x [batch, d_in], got shape {x.shape}")
        dims = _dims(x.shape[-1], self.depth, self.width, self.d_out)
        init = layer_init(self.init_scale, self.depth)
        for i in range(self.depth):
            w = self.param(f"W_{i}", init, (dims[i], dims[i + 1]))
            x = jnp.einsum("bi,io->bo", x, w)  # contract the layer's input axis
            if i < self.depth - 1:
                x = hooks.site(self, f"hook_hidden_{i}", x, VEC_NEURON_AXES)
        return x


class MultiPathwayLinear(nn.Module):
    """(x [batch, d_in], gates [n_pathways] or None, frozen [n_pathways] or None) ->
    [batch, d_out]: the sum over pathways p of gates[p] * x W_{p,0} ... W_{p,depth-1}, the
    frozen pathways' terms without gradient (see the module docstring)."""

    depth: int
    width: int
    d_out: int
    n_pathways: int = 2
    init_scale: float = 1e-3
    tied_init: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, gates: jax.Array | None = None,
                 frozen: jax.Array | None = None) -> jax.Array:
        _check(self.depth, self.width, self.d_out, self.init_scale)
        if self.n_pathways < 1:
            raise ValueError(f"n_pathways={self.n_pathways}; must be a positive integer")
        if x.ndim != 2:
            raise ValueError(f"MultiPathwayLinear: want x [batch, d_in], got shape {x.shape}")
        gates = jnp.ones((self.n_pathways,), x.dtype) if gates is None else jnp.asarray(gates)
        frozen = jnp.zeros((self.n_pathways,), x.dtype) if frozen is None else jnp.asarray(frozen)
        for name, v in (("gates", gates), ("frozen", frozen)):
            if v.shape != (self.n_pathways,):
                raise ValueError(f"{name}: want shape ({self.n_pathways},), got {v.shape}")
        dims = _dims(x.shape[-1], self.depth, self.width, self.d_out)
        layer = layer_init(self.init_scale, self.depth)

        def init(key, shape, dtype=jnp.float32):
            if self.tied_init:  # one draw, copied to every pathway
                return jnp.broadcast_to(layer(key, shape[1:], dtype), shape)
            return layer(key, shape, dtype)

        h = jnp.einsum("p,bi->pbi", gates, x)  # each pathway's (gated) input source
        for i in range(self.depth):
            w = self.param(f"W_{i}", init, (self.n_pathways, dims[i], dims[i + 1]))
            h = jnp.einsum("pbi,pio->pbo", h, w)  # contract the layer's input axis, per pathway
        f = frozen[:, None, None]
        h = (1 - f) * h + f * jax.lax.stop_gradient(h)  # same value; no gradient where frozen
        h = hooks.site(self, "hook_pathway_out", h, PATHWAY_AXES)
        return h.sum(axis=0)
