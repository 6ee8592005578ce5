"""The train state: parameters, the model's other collections, optimizer state, step, rng and
intervention statistics, created directly on the mesh."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh

from jaxinterp.hooks import COLLECTION
from jaxinterp.train import sharding as sharding_lib


@struct.dataclass
class TrainState:
    """Everything training changes, sharded, checkpointed and restored together.

    step: int32 scalar; params: the model's `params` collection (unboxed arrays);
    opt_state: optax state; rng: raw uint32 PRNG key data (checkpointable), for anything
    stochastic in training (`jax.random.wrap_key_data(state.rng)`); model_state: the model's
    other variable collections (`batch_stats`, `kan_grid`, ...); iv_state: running statistics
    of training-time interventions, `{index: {"mean", "count"}}` (`RunningMean`).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    model_state: Any = struct.field(default_factory=dict)
    iv_state: Any = struct.field(default_factory=dict)

    @property
    def variables(self) -> dict[str, Any]:
        """`{"params": ..., **model_state}`: what `model.apply` takes."""
        return {"params": self.params, **self.model_state}


def create(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    example_inputs: Any,
    seed: int,
    mesh: Mesh,
    rules,
    *,
    example_kwargs: dict[str, Any] | None = None,
    iv_state: Any = None,
) -> tuple[TrainState, TrainState]:
    """Initialises a TrainState placed on `mesh` by the logical-axis `rules`.

    Args:
      example_inputs: the model's input (or a tuple of inputs) for `model.init`.
      example_kwargs: keyword inputs for `model.init` (e.g. an attention mask).
      iv_state: initial intervention statistics (replicated), default none.

    Returns:
      (state, shardings): the state, and a TrainState-shaped tree of `NamedSharding`s for it
      (the `in_shardings`/`out_shardings` of the train step, and the restore target's layout).
      Every variable collection is placed by its logical axes (unannotated ones replicated).
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    kwargs = example_kwargs or {}
    iv_state = {} if iv_state is None else iv_state

    def init(rng):
        params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
        boxed = dict(model.init({"params": params_rng, "dropout": dropout_rng}, *inputs,
                                **kwargs))
        boxed.pop(COLLECTION, None)
        variables = nn.meta.unbox(boxed)
        params = variables.pop("params")
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=optimizer.init(params),
                          rng=jax.random.key_data(state_rng), model_state=variables,
                          iv_state=iv_state), boxed

    rng = jax.random.key(seed)
    abstract_state, abstract_boxed = jax.eval_shape(init, rng)
    var_sh = sharding_lib.logical_shardings(abstract_boxed, mesh, rules)
    param_sh = var_sh.pop("params")
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    shardings = TrainState(
        step=replicated, params=param_sh,
        opt_state=sharding_lib.like_params(abstract_state.opt_state, param_sh, mesh),
        rng=replicated, model_state=var_sh,
        iv_state=jax.tree.map(lambda _: replicated, abstract_state.iv_state))
    state = jax.jit(lambda r: init(r)[0], out_shardings=shardings)(rng)
    return state, shardings


def abstract(state_shardings: TrainState, state_like: TrainState) -> TrainState:
    """`jax.ShapeDtypeStruct`s with shardings: a restore target for checkpoints."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        state_like, state_shardings)
