"""The train state: parameters, optimizer state, step and rng, created directly on the mesh."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from jaxinterp.train import sharding as sharding_lib


@struct.dataclass
class TrainState:
    """step: int32 scalar; params: the model's `params` collection (unboxed arrays);
    opt_state: optax state; rng: raw uint32 PRNG key data (checkpointable), for anything
    stochastic in training (`jax.random.wrap_key_data(state.rng)`)."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def create(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    example_inputs: jax.Array,
    seed: int,
    mesh: Mesh,
    rules,
) -> tuple[TrainState, TrainState]:
    """Initialises a TrainState placed on `mesh` by the logical-axis `rules`.

    Returns:
      (state, shardings): the state, and a TrainState-shaped tree of `NamedSharding`s for it
      (the `in_shardings`/`out_shardings` of the train step, and the restore target's layout).
    """
    def init(rng):
        params_rng, state_rng = jax.random.split(rng)
        boxed = model.init(params_rng, example_inputs)["params"]
        params = nn.meta.unbox(boxed)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=optimizer.init(params),
                          rng=jax.random.key_data(state_rng)), boxed

    rng = jax.random.key(seed)
    abstract_state, abstract_boxed = jax.eval_shape(init, rng)
    param_sh = sharding_lib.logical_shardings(abstract_boxed, mesh, rules)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    shardings = TrainState(
        step=replicated, params=param_sh,
        opt_state=sharding_lib.like_params(abstract_state.opt_state, param_sh, mesh),
        rng=replicated)
    state = jax.jit(lambda r: init(r)[0], out_shardings=shardings)(rng)
    return state, shardings


def abstract(state_shardings: TrainState, state_like: TrainState) -> TrainState:
    """`jax.ShapeDtypeStruct`s with shardings: a restore target for checkpoints."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        state_like, state_shardings)
