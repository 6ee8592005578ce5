"""Dictionary sweeps: many SAEs and transcoders trained together from one activation stream.

    configs, trains = grid(SAEConfig("relu", d_in=64, site="blocks.1.hook_resid_post"),
                           TrainConfig(num_steps=2000, batch_size=4096),
                           d_sae=[512, 2048], l1_coeff=[1e-3, 3e-3, 1e-2],
                           learning_rate=[1e-3, 3e-4])
    result = sweep(configs, trains, model, variables, token_batches, eval_tokens=held_out)
    result.params[i], result.configs[i], result.metrics[i]["loss_recovered"]

Groups: configs that differ only in their loss weights (`l1_coeff`, `l0_coeff`, `aux_coeff`),
the JumpReLU `threshold_init`, and, in their `TrainConfig`s, the `learning_rate` and `seed`,
form one group (`groups`). A group's states are stacked (every leaf gets a leading member axis
[m, ...]) and its train step is `jax.vmap`ped over the stack, with the varying settings as
vmapped float32 arrays [m] (`train_step(coeffs=...)`, `optimizer(learning_rate=...)`); every
other setting is static (a width, an architecture, `k`, `aux_k`, `bandwidth`, the sites), so
each group is one compiled step. Each batch of activations comes from ONE forward pass of the
model that captures every site any config reads (`capture_fn`), and feeds every group in turn.

The loop, b_dec initialisation, dead-latent resampling (vmapped; each member draws from
`fold_in(its rng, step)`), checkpoints and resuming are `fit`'s (`jaxinterp.sae.train`): the
checkpoint holds the tuple of the groups' stacked states and the stream's position, so an
interrupted sweep, rerun with the same `workdir`, continues where it stopped. Rows are sharded
over the mesh's data axes and each member's `d_sae` over `tensor`, like `fit`; the member axis
is not sharded.

A member equals `fit(configs[i], trains[i], ...)` on the same stream (up to float rounding of
batched against unbatched matmuls; `tests/sae/test_sweep.py` checks rtol 1e-5): the stream is
shuffled with `trains[0].seed`, as `fit` shuffles with its own seed, so this holds for members
whose seed is `trains[0].seed` or with `shuffle=False`; a member's seed always sets its
initialisation and resampling draws.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxinterp.sae.metrics import evaluate, loss_recovered
from jaxinterp.sae.model import SAEConfig
from jaxinterp.sae.train import (
    SAEState,
    TrainConfig,
    Trainer,
    capture_fn,
    check_run,
    create_state,
    init_b_dec_mean,
    make_data,
    needed_sites,
    optimizer,
    pair_of,
    resample_from_state,
    train_loop,
    train_step,
)
from jaxinterp.train import sharding as sharding_lib

VARIED_SAE = ("l1_coeff", "l0_coeff", "aux_coeff", "threshold_init")
"""SAEConfig fields that may vary within a group (vmapped)."""
VARIED_TRAIN = ("learning_rate", "seed")
"""TrainConfig fields that may vary between the members of a sweep."""


@dataclasses.dataclass
class SweepResult:
    """Per member i (in the order of the configs): `params[i]`, `configs[i]`,
    `train_configs[i]`; `metrics[i]`: `l0`, `explained_variance`, `mse` on `eval_tokens` with
    `loss_recovered` (and `ce_clean`, `ce_spliced`, `ce_zero_ablation`), or without
    eval_tokens the last training step's metrics; `history[i]`: the metrics (floats) at every
    logged step, with `step`. `groups`: member indices of each compiled group; `states`: each
    group's stacked final `SAEState`; `start_step`: where this call resumed (0: fresh)."""

    params: list[dict[str, jax.Array]]
    configs: list[SAEConfig]
    train_configs: list[TrainConfig]
    metrics: list[dict[str, float]]
    history: list[list[dict[str, float]]]
    groups: list[list[int]]
    states: list[SAEState]
    start_step: int = 0


def grid(sae: SAEConfig, train: TrainConfig | None = None, **axes: Sequence[Any]
         ) -> tuple[list[SAEConfig], list[TrainConfig]]:
    """The cartesian product of `axes` (SAEConfig fields, or `learning_rate` / `seed`) over
    `sae` and `train` (default `TrainConfig()`), the first axis varying slowest:
    `(configs, train_configs)` for `sweep`."""
    train = TrainConfig() if train is None else train
    sae_fields = {f.name for f in dataclasses.fields(SAEConfig)}
    for name, values in axes.items():
        if name not in sae_fields and name not in VARIED_TRAIN:
            raise ValueError(f"grid axis {name!r} is neither an SAEConfig field "
                             f"({', '.join(sorted(sae_fields))}) nor one of {VARIED_TRAIN}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"grid axis {name}={values!r} must be a non-empty list of values")
    configs, trains = [], []
    for combo in itertools.product(*axes.values()):
        point = dict(zip(axes, combo, strict=True))
        configs.append(dataclasses.replace(
            sae, **{k: v for k, v in point.items() if k in sae_fields}))
        trains.append(dataclasses.replace(
            train, **{k: v for k, v in point.items() if k in VARIED_TRAIN}))
    return configs, trains


def group_key(config: SAEConfig) -> SAEConfig:
    """The static part of a config: equal keys train in one vmapped group."""
    return dataclasses.replace(config, l1_coeff=1.0, l0_coeff=1.0, aux_coeff=1.0,
                               threshold_init=1.0)


def groups_of(configs: Sequence[SAEConfig]) -> list[list[int]]:
    """Indices of `configs` grouped by `group_key`, groups in order of first appearance."""
    groups: dict[SAEConfig, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(group_key(c), []).append(i)
    return list(groups.values())


def hyperparameters(configs: Sequence[SAEConfig], trains: Sequence[TrainConfig]
                    ) -> dict[str, np.ndarray]:
    """The vmapped settings of a group's members: float32 arrays [m] of `learning_rate`,
    `l1_coeff`, `l0_coeff`, `aux_coeff` and `log_threshold_init` (float32 of the float64 log,
    as `resample_dead` computes it)."""
    f32 = np.float32
    return {"learning_rate": np.array([t.learning_rate for t in trains], f32),
            "l1_coeff": np.array([c.l1_coeff for c in configs], f32),
            "l0_coeff": np.array([c.l0_coeff for c in configs], f32),
            "aux_coeff": np.array([c.aux_coeff for c in configs], f32),
            "log_threshold_init": np.array([math.log(c.threshold_init) for c in configs], f32)}


def group_step(state: SAEState, x: jax.Array, y: jax.Array, hp: Mapping[str, jax.Array], *,
               config: SAEConfig, tc: TrainConfig) -> tuple[SAEState, dict[str, jax.Array]]:
    """`train_step` vmapped over a stacked state [m, ...] and its settings `hp` [m] (see
    `hyperparameters`), on the same rows x [batch, d_in], y [batch, d_out]; metrics [m]."""
    def one(s, h):
        tx, lr_schedule = optimizer(tc, h["learning_rate"])
        return train_step(s, x, y, config=config, tx=tx, lr_schedule=lr_schedule,
                          dead_after_steps=tc.dead_after_steps, coeffs=h)

    return jax.vmap(one)(state, hp)


def group_resample(state: SAEState, x: jax.Array, y: jax.Array, hp: Mapping[str, jax.Array],
                   *, config: SAEConfig, dead_after_steps: int) -> tuple[SAEState, jax.Array]:
    """`fit`'s resampling vmapped over a stacked state; the number resampled per member [m]."""
    def one(s, h):
        return resample_from_state(s, x, y, config=config, dead_after_steps=dead_after_steps,
                                    log_threshold_init=h["log_threshold_init"])

    return jax.vmap(one)(state, hp)


def stacked_state(configs: Sequence[SAEConfig], trains: Sequence[TrainConfig], mesh: Mesh,
                  rules) -> tuple[SAEState, SAEState]:
    """A group's fresh states stacked on a leading member axis [m, ...], and its shardings
    (each member's, unsharded on that axis): `create_state` vmapped over the members' seeds,
    one compiled program, bit for bit each member's own `create_state` (the JumpReLU
    threshold is then set to each member's `threshold_init`, by the float32 log)."""
    config = group_key(configs[0])
    tx = optimizer(trains[0])[0]  # Adam's initial state does not depend on the rate
    member: dict[str, SAEState] = {}

    def one(seed, log_threshold):
        state, member["shardings"] = create_state(config, tx, mesh, rules, seed)
        if "log_threshold" not in state.params:
            return state
        params = {**state.params, "log_threshold": jnp.full_like(
            state.params["log_threshold"], log_threshold)}
        return state.replace(params=params)

    seeds = np.array([t.seed for t in trains], np.int32)
    log_thresholds = np.log(np.array([c.threshold_init for c in configs], np.float32))
    jax.eval_shape(jax.vmap(one), seeds, log_thresholds)  # traces: the member's shardings
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, P(None, *s.spec)),
                             member["shardings"])
    init = jax.jit(jax.vmap(one), out_shardings=shardings)
    return init(seeds, log_thresholds), shardings


def _check_trains(configs: Sequence[SAEConfig], train: TrainConfig | Sequence[TrainConfig]
                  ) -> list[TrainConfig]:
    if not configs:
        raise ValueError("sweep needs at least one SAEConfig")
    trains = [train] * len(configs) if isinstance(train, TrainConfig) else list(train)
    if len(trains) != len(configs):
        raise ValueError(f"{len(trains)} TrainConfigs for {len(configs)} SAEConfigs: give one "
                         "TrainConfig, or one per SAEConfig")
    for i, t in enumerate(trains):
        for f in dataclasses.fields(TrainConfig):
            if f.name not in VARIED_TRAIN and getattr(t, f.name) != getattr(trains[0], f.name):
                raise ValueError(f"train_configs[{i}].{f.name}={getattr(t, f.name)!r} differs "
                                 f"from train_configs[0]'s {getattr(trains[0], f.name)!r}; "
                                 f"members of a sweep may differ only in {VARIED_TRAIN}")
    return trains


def sweep(configs: Sequence[SAEConfig], train: TrainConfig | Sequence[TrainConfig],
          model: nn.Module | None = None, variables: Any = None,
          token_batches: Iterable[Any] | None = None, *,
          activations: Iterable[Mapping[str, Any]] | None = None, eval_tokens: Any = None,
          mesh: Mesh | None = None, rules=sharding_lib.DEFAULT_RULES,
          workdir: str | os.PathLike | None = None, verbose: bool = True) -> SweepResult:
    """Trains every SAE / transcoder of `configs` on one stream of activations.

    Args:
      configs: the dictionaries (any mix of widths, architectures, k, sites).
      train: one TrainConfig for all, or one per config, differing only in `learning_rate`
        and `seed` (see `grid`); the shared settings (steps, batch size, stream, resampling,
        checkpoints) are `train[0]`'s, and the stream is shuffled with `train[0].seed`.
      model, variables, token_batches: as for `fit`; the model runs once per token batch,
        capturing every site the configs read.
      activations: instead, stored activations `{site: rows}` (`jaxinterp.sae.store.loader`).
      eval_tokens: held-out tokens [batch, pos] (needs the model): `metrics` are measured on
        them (`evaluate` and `loss_recovered`).
      mesh, rules, workdir, verbose: as for `fit`.

    Returns:
      A `SweepResult`.

    Raises:
      ValueError: as `fit`, and if the TrainConfigs differ in another field, two configs read
        one site with different widths, or eval_tokens come without a model.
    """
    configs = list(configs)
    trains = _check_trains(configs, train)
    tc = trains[0]
    if eval_tokens is not None and model is None:
        raise ValueError("eval_tokens need the model (metrics on stored activations only come "
                         "from training batches)")
    mesh = check_run(configs, tc, mesh)
    data, placed = make_data(configs, tc, model, variables, token_batches, activations,
                             mesh=mesh, rules=rules, workdir=workdir, seed=tc.seed, pairs=False)
    groups = groups_of(configs)
    rows = sharding_lib.batch_sharding(mesh)
    replicated = NamedSharding(mesh, P())
    trainers = []
    for idx in groups:
        gcfg = group_key(configs[idx[0]])
        state, shardings = stacked_state([configs[i] for i in idx], [trains[i] for i in idx],
                                         mesh, rules)
        hp = jax.device_put(hyperparameters([configs[i] for i in idx],
                                            [trains[i] for i in idx]), replicated)
        step = jax.jit(functools.partial(group_step, config=gcfg, tc=tc),
                       in_shardings=(shardings, rows, rows, replicated),
                       out_shardings=(shardings, replicated), donate_argnums=(0,))
        resample = jax.jit(functools.partial(group_resample, config=gcfg,
                                             dead_after_steps=tc.dead_after_steps),
                           in_shardings=(shardings, rows, rows, replicated),
                           out_shardings=(shardings, replicated))
        init = jax.jit(lambda s, y: jax.vmap(lambda m: init_b_dec_mean(m, y))(s),
                       in_shardings=(shardings, rows), out_shardings=shardings)
        trainers.append(Trainer(
            state=state, shardings=shardings,
            step=functools.partial(_with_hp, step, hp=hp),
            resample=functools.partial(_with_hp, resample, hp=hp), init_b_dec=init,
            select=pair_of(gcfg)))
    saved_config = {"saes": [dataclasses.asdict(c) for c in configs],
                    "train": [dataclasses.asdict(t) for t in trains], "groups": groups}

    def shown(last: list[dict[str, Any]]) -> dict[str, float]:
        return {k: float(np.mean(np.concatenate([np.ravel(m[k]) for m in last])))
                for k in ("mse", "explained_variance", "l0", "dead_fraction")}

    states, hist, start = train_loop(
        trainers, data, tc, workdir=workdir, saved_config=saved_config, single=False,
        what=f"this sweep's {len(groups)} groups", shown=shown, verbose=verbose)

    n = len(configs)
    params: list[Any] = [None] * n
    history: list[list[dict[str, float]]] = [[] for _ in range(n)]
    metrics: list[dict[str, float]] = [{} for _ in range(n)]
    for idx, state, rows_g in zip(groups, states, hist, strict=True):
        for j, i in enumerate(idx):
            params[i] = jax.tree.map(lambda a, j=j: a[j], state.params)
            history[i] = [{k: (v if k == "step" else float(v[j])) for k, v in row.items()}
                          for row in rows_g]
            if history[i]:
                metrics[i] = {k: history[i][-1][k] for k in ("l0", "explained_variance", "mse")}
    if eval_tokens is not None:
        _evaluate(metrics, model, placed, eval_tokens, configs, groups, states)
    return SweepResult(params=params, configs=configs, train_configs=trains, metrics=metrics,
                       history=history, groups=groups, states=states, start_step=start)


def _with_hp(fn, state, x, y, *, hp):
    return fn(state, x, y, hp)


def _evaluate(metrics: list[dict[str, float]], model: nn.Module, variables: Any,
              tokens: Any, configs: Sequence[SAEConfig], groups: list[list[int]],
              states: list[SAEState]) -> None:
    """Fills `metrics[i]` with member i's `evaluate` and `loss_recovered` on `tokens` (one
    forward pass for the rows; one compiled program per group for each)."""
    tokens = np.asarray(tokens)
    rows = jax.jit(capture_fn(model, needed_sites(configs)))(variables, tokens)
    for idx, state in zip(groups, states, strict=True):
        gcfg = group_key(configs[idx[0]])
        x, y = pair_of(gcfg)(rows)
        ev = jax.device_get(jax.jit(jax.vmap(lambda p, c=gcfg, x=x, y=y: evaluate(p, c, x, y)))(
            state.params))
        lr = jax.jit(functools.partial(loss_recovered, model, config=gcfg))
        for j, i in enumerate(idx):
            member = jax.tree.map(lambda a, j=j: a[j], state.params)
            got = jax.device_get(lr(variables, tokens, member))
            metrics[i] = {**{k: float(v[j]) for k, v in ev.items()},
                          **{k: float(v) for k, v in got.items()}}
