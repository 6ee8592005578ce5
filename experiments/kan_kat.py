"""KAN and KAT: KAT against ViT on digits (with KAT's initialisation ablated), function fitting
by every KAN basis and a parameter-matched MLP, B-spline grid extension, and training speed.

    python -m experiments.kan_kat --config=configs/kan_kat.py --workdir=workdirs/kan_kat

Papers: Yang & Wang 2024, "Kolmogorov-Arnold Transformer" (KAT; arXiv:2409.10594); Yang et al.
2024, "Activation Space Selectable Kolmogorov-Arnold Networks" (S-KAN; arXiv:2408.08338); Liu
et al. 2024, "KAN: Kolmogorov-Arnold Networks" (pykan; arXiv:2404.19756).

Four parts, each a few compiled calls vmapped over seeds (and over target functions):

  kat       ViT and KAT (ViT whose MLPs are GR-KANs: `jaxinterp.models.vit`, `mlp_type="grkan"`)
            of the same shape on the 8x8 digits, and KAT again with every rational's
            coefficients drawn at random (N(0, `kat.random_std`^2)) instead of the paper's
            initialisation (fc1's rational the identity, fc2's swish: `grkan_init`). The two KAT
            arms have the same shapes and are one vmapped call (over arm x seed).
  fit       the target functions (`FUNCTIONS`: pykan's toy formulas, see below) fitted by KANs
            [d, hidden, 1] with each basis of `jaxinterp.layers.kan_basis` (B-spline, RBF,
            Chebyshev, Fourier), the per-edge selectable mix of all four (`KANLayer` with a
            tuple basis: softmax weights per edge, as S-KAN's weighted combination) and an MLP
            [d, h, 1] with h chosen so that its parameter count matches the single-basis KANs
            (`mlp`) or the mix (`mlp_large`). Test RMSE per function and model; a run that ends
            non-finite is reported as "nan" and one whose train RMSE ends above its initial value
            as "diverged" (kept in the table, never dropped). One compiled call per (model,
            input width), vmapped over function x seed.
  grid      pykan's coarse-to-fine: a B-spline KAN trained on a coarse grid, then its grid
            refined (`jaxinterp.layers.kan.extend_grid`: coefficients refitted so the function is
            kept) and trained again, stage after stage; against the same network trained as long
            on the coarse grid alone.
  speed     one optimizer step (forward, backward, AdamW) of a B-spline KAN, a GR-KAN and an MLP
            with matched parameter counts, and of the ViT and KAT of part `kat` (and that ViT
            with ReLU MLPs), timed round-robin in the same process (median over repeats, compile
            excluded).

Every loss here is a plain `model.apply` (`task_loss`), not the trainer's `loss_fn`: that one
runs inside a `run_with_state` session, under which KAN layers materialise their per-edge
outputs (seen here: a GR-KAN 64-568-10 step took 233 ms that way against 6 ms fused).

The S-KAN paper's seven target functions could not be read here (only its abstract was
available), so `fit` uses seven of pykan's standard toy formulas instead (`FUNCTIONS`, each with
its pykan example). Optimisation is Adam, full batch (pykan's examples use LBFGS).

Writes `kat.png`, `fit_rmse.png`, `mix_weights.png`, `grid_extension.png`, `speed.png` and
`summary.json` to the workdir. `run_experiment` is the library entry point.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from ml_collections import ConfigDict

from experiments import runner
from experiments.plotting import pyplot
from jaxinterp.data import load_source
from jaxinterp.layers import kan as kan_layers
from jaxinterp.layers.kan_rational import rational
from jaxinterp.models import registry
from jaxinterp.train.optimizer import make_optimizer
from jaxinterp.train.step import mode_kwargs
from jaxinterp.train.tasks import Classification, Regression

FAMILIES = kan_layers.FAMILIES  # ("bspline", "rbf", "chebyshev", "fourier")
MIX = "mix"
FIT_MODELS = (*FAMILIES, MIX, "mlp", "mlp_large")


# -- target functions ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """A target function f: x [n, d] -> [n] on the cube [lo, hi]^d, and where pykan uses it."""

    d: int
    lo: float
    hi: float
    fn: Callable[[np.ndarray], np.ndarray]
    source: str


def _j0(x: np.ndarray) -> np.ndarray:
    from scipy.special import j0

    return j0(x)


FUNCTIONS: dict[str, Target] = {
    "exp(sin(pi x)+y^2)": Target(
        2, -1.0, 1.0, lambda x: np.exp(np.sin(np.pi * x[:, 0]) + x[:, 1] ** 2),
        "pykan hellokan / Example 1"),
    "xy": Target(2, -1.0, 1.0, lambda x: x[:, 0] * x[:, 1], "KAN paper Sec. 3.1 toy (c)"),
    "exp(J0(20x)+y^2)": Target(
        2, -1.0, 1.0, lambda x: np.exp(_j0(20 * x[:, 0]) + x[:, 1] ** 2),
        "pykan Example 5 (special functions)"),
    "sqrt(x^2+y^2)": Target(2, -1.0, 1.0, lambda x: np.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2),
                            "pykan Example 9"),
    "sin(pi x)sin(pi y)": Target(
        2, -1.0, 1.0, lambda x: np.sin(np.pi * x[:, 0]) * np.sin(np.pi * x[:, 1]),
        "pykan Example 6 (PDE solution)"),
    "(x+y)/(1+xy)": Target(2, -0.9, 0.9, lambda x: (x[:, 0] + x[:, 1]) / (1 + x[:, 0] * x[:, 1]),
                           "pykan Example 10 (relativistic addition)"),
    "exp((sin(pi(x1^2+x2^2))+sin(pi(x3^2+x4^2)))/2)": Target(
        4, -1.0, 1.0,
        lambda x: np.exp((np.sin(np.pi * (x[:, 0] ** 2 + x[:, 1] ** 2))
                          + np.sin(np.pi * (x[:, 2] ** 2 + x[:, 3] ** 2))) / 2),
        "pykan Example 3 (deep formula)"),
}


def function_data(name: str, n_train: int, n_test: int, seed: int) -> dict[str, np.ndarray]:
    """Uniform samples of `FUNCTIONS[name]` (as pykan's `create_dataset`): x [n, d] float32,
    y [n, 1] float32, for "train" and "test"."""
    if name not in FUNCTIONS:
        raise ValueError(f"unknown target function {name!r}; choose from {list(FUNCTIONS)}")
    t = FUNCTIONS[name]
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.uniform(t.lo, t.hi, size=(n, t.d))
        out[f"x_{split}"] = x.astype(np.float32)
        out[f"y_{split}"] = t.fn(x)[:, None].astype(np.float32)
    return out


# -- models -------------------------------------------------------------------------------------


class FlatMLP(nn.Module):
    """x [batch, d] (or images, flattened) -> [batch, widths[-1]]: Dense layers with `act`
    between them (the MLP baseline)."""

    widths: tuple[int, ...]
    act: str = "silu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        act = {"silu": jax.nn.silu, "tanh": jnp.tanh, "relu": jax.nn.relu}[self.act]
        for i, w in enumerate(self.widths[1:]):
            x = nn.Dense(w, name=f"dense_{i}")(x)
            if i < len(self.widths) - 2:
                x = act(x)
        return x


def n_params(model: nn.Module, example: jax.Array) -> int:
    """Parameter count of `model` (abstract init; no arrays are made)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), example))
    return int(sum(np.prod(s.shape) for s in jax.tree.leaves(shapes["params"])))


def matched_width(build: Callable[[int], nn.Module], example: jax.Array, target: int,
                  multiple: int = 1, max_width: int = 4096) -> int:
    """The hidden width h (a multiple of `multiple`) whose `build(h)` has the parameter count
    closest to `target` (counts grow with h, so a bisection on the count)."""
    lo, hi = 1, max_width // multiple
    while lo < hi:
        mid = (lo + hi) // 2
        if n_params(build(mid * multiple), example) < target:
            lo = mid + 1
        else:
            hi = mid
    cands = [h * multiple for h in (max(lo - 1, 1), lo)]
    return min(cands, key=lambda h: abs(n_params(build(h), example) - target))


def kan_model(cfg: ConfigDict, widths: tuple[int, ...], basis: str | tuple[str, ...]):
    """A `KAN` from the registry with the fit section's basis sizes."""
    return registry.build("kan_pykan_tiny", widths=tuple(widths), layer_type=basis,
                          grid_size=cfg.grid_size, rbf_centers=cfg.rbf_centers,
                          rbf_range=tuple(cfg.rbf_range), degree=cfg.degree, n_freq=cfg.n_freq)


def _init_members(model: nn.Module, keys: jax.Array, example: jax.Array) -> dict[str, Any]:
    """Unboxed variables with a leading member axis, one init per key."""
    return jax.vmap(lambda k: nn.meta.unbox(model.init(k, example)))(keys)


def task_loss(params, state, batch, model: nn.Module, task, train: bool = False,
              key: jax.Array | None = None) -> jax.Array:
    """The task's loss of `model.apply` on `batch` (no `jaxinterp.run` session).

    `jaxinterp.train.step.loss_fn` runs the forward pass inside a `run_with_state` session,
    under which KAN layers materialise every edge (`kan_common.sum_edges`: [batch, d_in, d_out]
    per layer) even with nothing captured; a plain apply takes their fused path, the one meant
    for training and the one timed here.
    """
    split = task.split(batch, jax.random.key(0) if key is None else key)
    kw = mode_kwargs(model, train)
    rngs = {"dropout": key} if key is not None else None
    out = model.apply({"params": params, **state}, *split.inputs, **split.kwargs, rngs=rngs,
                      **kw)
    return task.loss(out, split)[0]


# -- part (b)/(c): regression training ----------------------------------------------------------


def fit_members(model: nn.Module, variables, data: dict[str, jax.Array], *, steps: int, lr: float,
                eval_every: int, grid_every: int = 0, grid_until: int = 0):
    """Trains one regression per leading index of `variables` and of `data` (x_train [M, n, d],
    y_train [M, n, 1], x_test, y_test), full batch, Adam at `lr`, vmapped and compiled once.

    B-spline grids (if the model has them) are adapted to the training inputs at steps 0,
    grid_every, ... below grid_until (`kan.update_grid`). Returns (final variables,
    {"train_rmse", "test_rmse": [M, steps // eval_every]} after each chunk, "init_train_rmse"
    [M]).
    """
    task = Regression(input_feature="x", target_feature="y")
    opt = optax.adam(lr)
    has_grid = kan_layers.GRID_COLLECTION in variables

    def rmse(params, state, x, y):
        return jnp.sqrt(task_loss(params, state, {"x": x, "y": y}, model, task))

    def one(variables, x_tr, y_tr, x_te, y_te):
        params = variables["params"]
        state = {k: v for k, v in variables.items() if k != "params"}

        def mse(p, st):
            return task_loss(p, st, {"x": x_tr, "y": y_tr}, model, task)

        def step(carry, i):
            p, st, os = carry
            if has_grid and grid_every:
                def regrid(args):
                    v = kan_layers.update_grid(model, {"params": args[0], **args[1]}, x_tr)
                    return v["params"], {k: v[k] for k in args[1]}
                due = (i % grid_every == 0) & (i < grid_until)
                p, st = jax.lax.cond(due, regrid, lambda a: a, (p, st))
            g = jax.grad(mse)(p, st)
            upd, os = opt.update(g, os, p)
            return (optax.apply_updates(p, upd), st, os), None

        def chunk(carry, c):
            carry, _ = jax.lax.scan(step, carry, c * eval_every + jnp.arange(eval_every))
            p, st, _ = carry
            return carry, (rmse(p, st, x_tr, y_tr), rmse(p, st, x_te, y_te))

        init_rmse = rmse(params, state, x_tr, y_tr)
        carry = (params, state, opt.init(params))
        (params, state, _), (tr, te) = jax.lax.scan(chunk, carry,
                                                    jnp.arange(steps // eval_every))
        return {"params": params, **state}, {"train_rmse": tr, "test_rmse": te,
                                             "init_train_rmse": init_rmse}

    return jax.jit(jax.vmap(one))(variables, data["x_train"], data["y_train"],
                                  data["x_test"], data["y_test"])


def _status(final_train: float, init_train: float, final_test: float) -> str:
    if not (np.isfinite(final_train) and np.isfinite(final_test)):
        return "nan"
    if final_train > init_train:
        return "diverged"
    return "ok"


def run_fit(config: ConfigDict) -> tuple[dict[str, Any], dict[str, Any]]:
    """Part `fit`: every function x every model in FIT_MODELS, seeds vmapped. Returns (summary
    section, arrays for the figures)."""
    cfg, seeds = config.fit, list(config.seeds)
    names = list(cfg.functions)
    for n in names:
        if n not in FUNCTIONS:
            raise ValueError(f"config.fit.functions: unknown {n!r}; choose from {list(FUNCTIONS)}")
    data = {n: function_data(n, cfg.n_train, cfg.n_test, cfg.data_seed) for n in names}
    groups: dict[int, list[str]] = {}
    for n in names:
        groups.setdefault(FUNCTIONS[n].d, []).append(n)

    results = {n: {} for n in names}
    mix_weights: dict[str, list[np.ndarray]] = {}
    curves: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    params_of: dict[int, dict[str, int]] = {}
    for d, fnames in groups.items():
        widths = (d, *cfg.hidden, 1)
        example = jnp.zeros((1, d), jnp.float32)
        models = {b: kan_model(cfg, widths, b) for b in FAMILIES}
        models[MIX] = kan_model(cfg, widths, FAMILIES)
        counts = {b: n_params(m, example) for b, m in models.items()}
        single = round(float(np.mean([counts[b] for b in FAMILIES])))
        for name, target in (("mlp", single), ("mlp_large", counts[MIX])):
            def build(h, d=d):
                return FlatMLP((d, *([h] * len(cfg.hidden)), 1), act=cfg.mlp_act)
            models[name] = build(matched_width(build, example, target))
            counts[name] = n_params(models[name], example)
        params_of[d] = counts
        # members: function-major, then seed
        m_data = {k: jnp.asarray(np.repeat(np.stack([data[n][k] for n in fnames]), len(seeds),
                                           axis=0)) for k in data[fnames[0]]}
        keys = jnp.stack([jax.random.key(1000 * s + 17) for _ in fnames for s in seeds])
        for b, model in models.items():
            variables = _init_members(model, keys, example)
            final, out = fit_members(model, variables, m_data, steps=cfg.steps, lr=cfg.lr,
                                     eval_every=cfg.eval_every, grid_every=cfg.grid_update_every,
                                     grid_until=cfg.grid_update_until)
            out = jax.device_get(out)
            for fi, n in enumerate(fnames):
                rows = slice(fi * len(seeds), (fi + 1) * len(seeds))
                tr, te = out["train_rmse"][rows], out["test_rmse"][rows]
                init = out["init_train_rmse"][rows]
                status = [_status(float(tr[s, -1]), float(init[s]), float(te[s, -1]))
                          for s in range(len(seeds))]
                final_te = [float(v) if np.isfinite(v) else None for v in te[:, -1]]
                ok = [v for v in final_te if v is not None]
                results[n][b] = {
                    "test_rmse": final_te,
                    "test_rmse_median": float(np.median(ok)) if ok else None,
                    "train_rmse_median": float(np.nanmedian(tr[:, -1])) if ok else None,
                    "status": next((s for s in ("nan", "diverged") if s in status), "ok"),
                    "status_per_seed": status,
                    "params": counts[b],
                }
                curves[n][b] = te
            if b == MIX:
                flat = traverse_util.flatten_dict(final["params"])
                for fi, n in enumerate(fnames):
                    row = fi * len(seeds)  # seed 0's run
                    mix_weights[n] = [np.asarray(jax.nn.softmax(flat[k][row], axis=-1))
                                      for k in sorted(flat) if k[-1] == "mix"]
    # the mix's learned weights: mean over edges per layer, and the per-edge arrays (seed 0)
    mix_summary = {n: {"mean_weight_per_layer": [dict(zip(FAMILIES, w.reshape(-1, len(FAMILIES))
                                                          .mean(0).round(4).tolist(),
                                                          strict=True)) for w in ws],
                       "per_edge_seed0": [w.round(4).tolist() for w in ws]}
                   for n, ws in mix_weights.items()}
    best = {n: min((b for b in FIT_MODELS if results[n][b]["test_rmse_median"] is not None),
                   key=lambda b: results[n][b]["test_rmse_median"]) for n in names}
    section = {"functions": {n: {"d": FUNCTIONS[n].d, "range": [FUNCTIONS[n].lo, FUNCTIONS[n].hi],
                                 "source": FUNCTIONS[n].source} for n in names},
               "params_by_input_width": {str(d): c for d, c in params_of.items()},
               "test_rmse": results, "best_model": best, "mix_weights": mix_summary}
    return section, {"curves": curves, "mix_weights": mix_weights, "results": results}


def run_grid(config: ConfigDict) -> tuple[dict[str, Any], dict[str, Any]]:
    """Part `grid`: coarse-to-fine grid extension against the coarse grid alone."""
    cfg, seeds = config.grid, list(config.seeds)
    d = FUNCTIONS[cfg.function].d
    one = function_data(cfg.function, cfg.n_train, cfg.n_test, cfg.data_seed)
    data = {k: jnp.asarray(np.repeat(v[None], len(seeds), axis=0)) for k, v in one.items()}
    widths = (d, *cfg.hidden, 1)
    example = jnp.zeros((1, d), jnp.float32)
    keys = jnp.stack([jax.random.key(1000 * s + 29) for s in seeds])

    def build(g):
        return registry.build("kan_pykan_tiny", widths=widths, layer_type="bspline", grid_size=g)

    grids = list(cfg.grids)
    kw = dict(lr=cfg.lr, eval_every=cfg.eval_every)
    variables = _init_members(build(grids[0]), keys, example)
    stages_tr, stages_te, stage_end = [], [], []
    for i, g in enumerate(grids):
        if i:
            variables = jax.vmap(lambda v, g=g: kan_layers.extend_grid(v, g, order=3))(variables)
        variables, out = fit_members(build(g), variables, data, steps=cfg.steps_per_grid,
                                     grid_every=cfg.grid_update_every if i == 0 else 0,
                                     grid_until=cfg.grid_update_until, **kw)
        out = jax.device_get(out)
        stages_tr.append(out["train_rmse"])
        stages_te.append(out["test_rmse"])
        stage_end.append({"grid": g, "train_rmse": out["train_rmse"][:, -1].tolist(),
                          "test_rmse": out["test_rmse"][:, -1].tolist()})
    total = cfg.steps_per_grid * len(grids)
    base = _init_members(build(grids[0]), keys, example)
    _, fixed = fit_members(build(grids[0]), base, data, steps=total,
                           grid_every=cfg.grid_update_every, grid_until=cfg.grid_update_until,
                           **kw)
    fixed = jax.device_get(fixed)
    section = {"function": cfg.function, "widths": list(widths), "grids": grids,
               "steps_per_grid": cfg.steps_per_grid,
               "params": [n_params(build(g), example) for g in grids],
               "stages": stage_end,
               "fixed_coarse_grid": {"grid": grids[0], "steps": total,
                                     "train_rmse": fixed["train_rmse"][:, -1].tolist(),
                                     "test_rmse": fixed["test_rmse"][:, -1].tolist()}}
    return section, {"extended_train": np.concatenate(stages_tr, 1),
                     "extended_test": np.concatenate(stages_te, 1),
                     "fixed_train": fixed["train_rmse"], "fixed_test": fixed["test_rmse"]}


# -- part (a): KAT against ViT on digits --------------------------------------------------------


def digits_arrays(data_dir: str) -> dict[str, np.ndarray]:
    """The digits splits as arrays: images float32 [n, 8, 8, 1] in [0, 1] (uint8 / 255, as the
    trainer feeds them), labels int32 [n]."""
    out = {}
    for split in ("train", "test"):
        src = load_source("digits", split, data_dir)
        out[f"x_{split}"] = np.stack([src[i]["image"] for i in range(len(src))]).astype(
            np.float32) / 255.0
        out[f"y_{split}"] = np.asarray([src[i]["label"] for i in range(len(src))], np.int32)
    return out


def randomize_rationals(params, key: jax.Array, std: float):
    """`params` with every GR-KAN `numerator` and `denominator` redrawn i.i.d. N(0, std^2)."""
    flat = traverse_util.flatten_dict(params)
    keys = jax.random.split(key, len(flat))
    new = {k: (std * jax.random.normal(kk, v.shape, v.dtype)
               if k[-1] in ("numerator", "denominator") else v)
           for (k, v), kk in zip(flat.items(), keys, strict=True)}
    return traverse_util.unflatten_dict(new)


def train_classifier(model: nn.Module, params, keys: jax.Array, data: dict[str, jax.Array],
                     config: ConfigDict) -> dict[str, jax.Array]:
    """Trains one classifier per leading index of `params` (and `keys`: batch order) on the
    digits arrays, minibatches of `config.kat.batch_size`, the project's AdamW
    (`config.kat.optimizer`). Returns {"test_acc", "train_loss": [M, n_evals]} (train loss:
    mean over each chunk) and "test_acc_init" [M]."""
    cfg = config.kat
    task = Classification(input_feature="image", label_feature="label", num_classes=10)
    opt = make_optimizer(cfg.optimizer, cfg.steps)
    x_tr, y_tr, x_te, y_te = (data[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    n = x_tr.shape[0]

    def test_acc(p):
        logits = model.apply({"params": p}, x_te)
        return (jnp.argmax(logits, -1) == y_te).mean()

    def one(params, key):
        def step(carry, i):
            p, os = carry
            idx = jax.random.choice(jax.random.fold_in(key, i), n, (cfg.batch_size,),
                                    replace=False)
            batch = {"image": x_tr[idx], "label": y_tr[idx]}
            loss, g = jax.value_and_grad(task_loss)(p, {}, batch, model, task, train=True,
                                                    key=jax.random.fold_in(key, i + (1 << 20)))
            upd, os = opt.update(g, os, p)
            return (optax.apply_updates(p, upd), os), loss

        def chunk(carry, c):
            carry, losses = jax.lax.scan(step, carry, c * cfg.eval_every + jnp.arange(
                cfg.eval_every))
            return carry, (test_acc(carry[0]), losses.mean())

        acc0 = test_acc(params)
        _, (acc, loss) = jax.lax.scan(chunk, (params, opt.init(params)),
                                      jnp.arange(cfg.steps // cfg.eval_every))
        return {"test_acc": acc, "train_loss": loss, "test_acc_init": acc0}

    return jax.jit(jax.vmap(one))(params, keys)


def _kat_models(config: ConfigDict) -> dict[str, nn.Module]:
    m = dict(config.kat.model)
    return {"vit": registry.build("vit_ti16", **m),
            "kat": registry.build("kat_t", **m, grkan_groups=config.kat.grkan_groups,
                                  grkan_init=config.kat.grkan_init)}


def run_kat(config: ConfigDict, data_dir: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Part `kat`: ViT, KAT (paper init) and KAT (random rationals), seeds vmapped."""
    cfg, seeds = config.kat, list(config.seeds)
    data = {k: jnp.asarray(v) for k, v in digits_arrays(data_dir).items()}
    models = _kat_models(config)
    example = data["x_train"][:1]
    init_keys = jnp.stack([jax.random.key(1000 * s + 5) for s in seeds])
    batch_keys = jnp.stack([jax.random.key(1000 * s + 6) for s in seeds])
    out, rationals = {}, {}
    if cfg.vit:
        vit_params = _init_members(models["vit"], init_keys, example)["params"]
        out["vit"] = jax.device_get(train_classifier(models["vit"], vit_params, batch_keys,
                                                     data, config))
    kat_params = _init_members(models["kat"], init_keys, example)["params"]
    rand_keys = jnp.stack([jax.random.key(1000 * s + 7) for s in seeds])
    kat_random = jax.vmap(lambda p, k: randomize_rationals(p, k, cfg.random_std))(kat_params,
                                                                                   rand_keys)
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), kat_params, kat_random)
    res = jax.device_get(train_classifier(models["kat"], both,
                                          jnp.concatenate([batch_keys, batch_keys]), data,
                                          config))
    k = len(seeds)
    out["kat"] = jax.tree.map(lambda a: a[:k], res)
    out["kat_random_init"] = jax.tree.map(lambda a: a[k:], res)
    rationals["kat"] = _rationals(kat_params)
    rationals["kat_random_init"] = _rationals(kat_random)
    counts = {a: n_params(models["vit" if a == "vit" else "kat"], example) for a in out}
    section = {a: {"params": counts[a],
                   "test_acc_final": r["test_acc"][:, -1].tolist(),
                   "test_acc_final_mean": float(r["test_acc"][:, -1].mean()),
                   "test_acc_init": r["test_acc_init"].tolist(),
                   "train_loss_final": r["train_loss"][:, -1].tolist()} for a, r in out.items()}
    section["steps"] = cfg.steps
    return section, {"curves": out, "rationals": rationals}


def _rationals(params) -> dict[str, np.ndarray]:
    """Block 0's two rational functions (fc1, fc2) of the first member (seed 0) on
    x in [-3, 3]: {"fc1" | "fc2": [groups, 121]}."""
    xs = jnp.linspace(-3, 3, 121)
    out = {}
    for fc in ("fc1", "fc2"):
        layer = params["blocks_0"]["mlp"][fc]
        num, den = layer["numerator"][0], layer["denominator"][0]  # [1, 6], [G, 4]
        num = jnp.broadcast_to(num, (den.shape[0], num.shape[-1]))
        out[fc] = np.asarray(rational(xs[None, :], num[:, None, :], den[:, None, :]))
    return out


# -- part (d): speed ----------------------------------------------------------------------------


def compiled_step(model: nn.Module, task, batch: dict[str, jax.Array], seed: int = 0):
    """`(step, carry)`: one jitted AdamW step (forward, backward, update) of `model` on
    `batch`, already compiled, and its initial (params, opt_state)."""
    x = batch[task.input_feature]
    variables = nn.meta.unbox(model.init(jax.random.key(seed), x[:1]))
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    opt = optax.adamw(1e-3)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(carry):
        p, os = carry
        g = jax.grad(task_loss)(p, state, batch, model, task)
        upd, os = opt.update(g, os, p)
        return optax.apply_updates(p, upd), os

    carry = jax.block_until_ready(step((params, opt.init(params))))  # compiles
    return step, carry


def time_steps(steps: dict[str, tuple], repeats: int, steps_per_repeat: int) -> dict[str, float]:
    """Median seconds per step of each compiled `(step, carry)`, timed round-robin (every
    repeat times every model once, so a change in the machine's load hits all alike)."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    carries = {k: c for k, (_, c) in steps.items()}
    for _ in range(repeats):
        for k, (step, _) in steps.items():
            t0 = time.perf_counter()
            c = carries[k]
            for _ in range(steps_per_repeat):
                c = step(c)
            carries[k] = jax.block_until_ready(c)
            times[k].append((time.perf_counter() - t0) / steps_per_repeat)
    return {k: float(np.median(v)) for k, v in times.items()}


def run_speed(config: ConfigDict, data_dir: str) -> dict[str, Any]:
    """Part `speed`: step times of KAN, GR-KAN and MLP at matched parameters, and ViT / KAT."""
    cfg = config.speed
    data = digits_arrays(data_dir)
    x = jnp.asarray(data["x_train"][: cfg.batch_size])
    y = jnp.asarray(data["y_train"][: cfg.batch_size])
    task = Classification(input_feature="image", label_feature="label", num_classes=10)
    batch = {"image": x, "label": y}
    d_in = int(np.prod(x.shape[1:]))
    widths = (d_in, cfg.kan_hidden, 10)
    kan = registry.build("kan_64_64_10", widths=widths)
    target = n_params(kan, x[:1])
    groups = 8

    def grkan(h):
        return registry.build("grkan_64_64_10", widths=(d_in, h, 10), grkan_groups=groups)

    def mlp(h):
        return FlatMLP((d_in, h, 10), act="silu")

    models = {"kan_bspline": kan,
              "grkan": grkan(matched_width(grkan, x[:1], target, multiple=groups)),
              "mlp": mlp(matched_width(mlp, x[:1], target)), **_kat_models(config)}
    # the ViT with ReLU MLPs: on XLA:CPU, GELU fused into the next dot costs as much as the
    # rest of the step (see configs/kan_kat.py)
    models["vit_relu"] = registry.build("vit_ti16", **config.kat.model, act_fn="relu")
    bad = [m for m in cfg.models if m not in models]
    if bad:
        raise ValueError(f"config.speed.models: unknown {bad}; choose from {list(models)}")
    models = {k: models[k] for k in cfg.models}
    seconds = time_steps({k: compiled_step(m, task, batch) for k, m in models.items()},
                         cfg.repeats, cfg.steps_per_repeat)
    out = {k: {"params": n_params(m, x[:1]), "step_ms": 1e3 * seconds[k]}
           for k, m in models.items()}
    ratios = {f"{a}/{b}": out[a]["step_ms"] / out[b]["step_ms"]
              for a, b in (("kan_bspline", "mlp"), ("grkan", "mlp"), ("kat", "vit"))
              if a in out and b in out}
    for k, v in ratios.items():
        print(f"speed: {k} step time ratio {v:.2f}", flush=True)
    return {"batch_size": cfg.batch_size, "models": out,
            "ratios": {k: round(v, 3) for k, v in ratios.items()}}


# -- the experiment -----------------------------------------------------------------------------


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """All four parts (those named in `config.parts`), the figures and the summary."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    data_dir = config.data_dir or os.path.join(workdir, "data")
    parts = tuple(config.parts)
    bad = [p for p in parts if p not in ("kat", "fit", "grid", "speed")]
    if bad:
        raise ValueError(f"config.parts: unknown {bad}; choose from kat, fit, grid, speed")
    summary: dict[str, Any] = {"seeds": list(config.seeds)}
    figures: dict[str, Callable[[str], None]] = {}
    timings = {}
    if "kat" in parts:
        t = time.time()
        summary["kat"], kat_arrays = run_kat(config, data_dir)
        timings["kat"] = time.time() - t
        print(f"kan_kat: part kat took {timings['kat']:.0f} s", flush=True)
        figures["kat.png"] = lambda path: plot_kat(kat_arrays, summary["kat"], config, path)
    if "fit" in parts:
        t = time.time()
        summary["fit"], fit_arrays = run_fit(config)
        timings["fit"] = time.time() - t
        print(f"kan_kat: part fit took {timings['fit']:.0f} s", flush=True)
        figures["fit_rmse.png"] = lambda path: plot_fit(fit_arrays, path)
        figures["mix_weights.png"] = lambda path: plot_mix(fit_arrays, path)
    if "grid" in parts:
        t = time.time()
        summary["grid"], grid_arrays = run_grid(config)
        timings["grid"] = time.time() - t
        print(f"kan_kat: part grid took {timings['grid']:.0f} s", flush=True)
        figures["grid_extension.png"] = lambda path: plot_grid(grid_arrays, summary["grid"],
                                                               config, path)
    if "speed" in parts:
        t = time.time()
        summary["speed"] = run_speed(config, data_dir)
        timings["speed"] = time.time() - t
        print(f"kan_kat: part speed took {timings['speed']:.0f} s", flush=True)
        figures["speed.png"] = lambda path: plot_speed(summary["speed"], path)
    summary["seconds_per_part"] = {k: round(v, 1) for k, v in timings.items()}
    summary["seconds"] = round(time.time() - t0, 1)
    return runner.write_outputs(workdir, summary, figures)


# -- figures ------------------------------------------------------------------------------------


def plot_kat(arrays, section, config, path: str) -> None:
    """Test accuracy over training per arm (mean and per seed), and block 0's rationals at
    initialisation for both KAT arms."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    every = config.kat.eval_every
    colors = {"vit": "tab:blue", "kat": "tab:green", "kat_random_init": "tab:red"}
    section = {k: v for k, v in section.items() if k in arrays["curves"]}
    for arm, r in arrays["curves"].items():
        acc = np.asarray(r["test_acc"])
        steps = every * (1 + np.arange(acc.shape[1]))
        for s in range(acc.shape[0]):
            axes[0].plot(steps, acc[s], color=colors[arm], alpha=0.3, lw=1)
        axes[0].plot(steps, acc.mean(0), color=colors[arm], lw=2,
                     label=f"{arm} ({section[arm]['params']:,} params): "
                           f"{section[arm]['test_acc_final_mean']:.3f}")
        axes[1].plot(steps, np.asarray(r["train_loss"]).mean(0), color=colors[arm], label=arm)
    axes[0].set(title="digits test accuracy (thin: seeds)", xlabel="step", ylim=(0, 1))
    axes[1].set(title="train loss (chunk mean, over seeds)", xlabel="step", yscale="log")
    xs = np.linspace(-3, 3, 121)
    for arm, ls in (("kat", "-"), ("kat_random_init", ":")):
        for name, f in arrays["rationals"][arm].items():
            for g in range(f.shape[0]):
                axes[2].plot(xs, f[g], ls=ls if name == "fc1" else "-.", color=colors[arm],
                             lw=1, label=f"{arm} {name}" if g == 0 else None)
    axes[2].set(title="block 0 rationals at init (per group)", xlabel="x", ylim=(-4, 4))
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fit(arrays, path: str) -> None:
    """log10 median test RMSE [function x model], with nan / diverged marked."""
    plt = pyplot()
    res = arrays["results"]
    names = list(res)
    m = np.full((len(names), len(FIT_MODELS)), np.nan)
    for i, n in enumerate(names):
        for j, b in enumerate(FIT_MODELS):
            v = res[n][b]["test_rmse_median"]
            m[i, j] = np.log10(v) if v is not None else np.nan
    fig, ax = plt.subplots(figsize=(11, 0.6 * len(names) + 2))
    im = ax.imshow(m, cmap="viridis_r", aspect="auto")
    for i, n in enumerate(names):
        for j, b in enumerate(FIT_MODELS):
            r = res[n][b]
            text = r["status"] if r["status"] != "ok" else ""
            if r["test_rmse_median"] is not None:
                text = f"{r['test_rmse_median']:.1e}" + (f"\n{text}" if text else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="w")
    params = [res[names[0]][b]["params"] for b in FIT_MODELS]
    ax.set_xticks(range(len(FIT_MODELS)),
                  [f"{b}\n({p} params)" for b, p in zip(FIT_MODELS, params, strict=True)],
                  fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title("median test RMSE over seeds (params: first function's input width)")
    fig.colorbar(im, ax=ax, label="log10 test RMSE")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_mix(arrays, path: str) -> None:
    """The selectable mix's learned softmax weights, per edge (stacked bars), seed 0."""
    plt = pyplot()
    mw = arrays["mix_weights"]
    fig, axes = plt.subplots(len(mw), 1, figsize=(12, 1.8 * len(mw) + 0.5), squeeze=False)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for ax, (n, ws) in zip(axes[:, 0], mw.items(), strict=True):
        edges = np.concatenate([w.reshape(-1, len(FAMILIES)) for w in ws])
        labels = [f"L{layer}:{i}>{j}" for layer, w in enumerate(ws)
                  for i in range(w.shape[0]) for j in range(w.shape[1])]
        bottom = np.zeros(len(edges))
        for k, fam in enumerate(FAMILIES):
            ax.bar(range(len(edges)), edges[:, k], bottom=bottom, color=colors[k], label=fam)
            bottom += edges[:, k]
        ax.set_xticks(range(len(edges)), labels, fontsize=5, rotation=90)
        ax.set(ylim=(0, 1), title=n, ylabel="weight")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=4, loc="upper center")
    fig.suptitle("selectable mix: softmax weight of each family per edge (seed 0)", y=0.995,
                 x=0.2, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_grid(arrays, section, config, path: str) -> None:
    """Train and test RMSE over training, grid extension against the fixed coarse grid."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    every = config.grid.eval_every
    for key, color, label in (("extended", "tab:blue", "grids " + ",".join(
            str(g) for g in section["grids"])), ("fixed", "tab:gray",
                                                  f"grid {section['grids'][0]} only")):
        for split, ls in (("train", "-"), ("test", "--")):
            v = np.asarray(arrays[f"{key}_{split}"])
            steps = every * (1 + np.arange(v.shape[1]))
            ax.plot(steps, np.median(v, 0), color=color, ls=ls, label=f"{label}: {split}")
    for i in range(1, len(section["grids"])):
        ax.axvline(i * section["steps_per_grid"], color="k", lw=0.5, ls=":")
    ax.set(yscale="log", xlabel="step", ylabel="RMSE (median over seeds)",
           title=f"grid extension on {section['function']}, KAN {section['widths']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_speed(section, path: str) -> None:
    """Step time per model (bars), parameter counts in the labels."""
    plt = pyplot()
    ms = section["models"]
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(ms)
    ax.bar(range(len(names)), [ms[n]["step_ms"] for n in names], color="tab:purple")
    ax.set_xticks(range(len(names)), [f"{n}\n{ms[n]['params']:,}" for n in names], fontsize=8)
    r = section["ratios"]
    ax.set(ylabel="ms per train step", title=", ".join(f"{k} = {v:.2f}" for k, v in r.items()))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "kan_kat")
