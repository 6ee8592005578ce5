"""In-context linear regression: one layer of linear self-attention is one step of gradient
descent, and task diversity moves a transformer from memorising to ridge regression.

    python -m experiments.icl_regression --config=configs/icl_regression.py \
        --workdir=workdirs/icl_regression

Part A (Mahankali et al. 2023): `LinearSelfAttention` (jaxinterp.models.icl_regression) is
trained on noiseless tasks `w ~ N(0, I)`, `x ~ N(0, cov)` with `m` context points, for
isotropic `cov = I` and an anisotropic diagonal `cov` (`config.lsa.cov_eigs`), seeds x arms as
one vmapped, compiled training run. On fresh tasks from the `icl_regression` builder (a
separate seed; for the anisotropic arm its `x` are scaled by `cov^(1/2)` and `y` recomputed
from its stored `w`) the model's query predictions are compared (R^2) with
  - one step of GD from w = 0, step size fitted to the model in closed form (least squares),
  - preconditioned GD with the optimal preconditioner `((1 + 1/m) cov + tr(cov)/m I)^-1`
    (scale also fitted).
Part B (Raventós et al. 2023; Wurgaft et al. 2025, "In-Context Learning Strategies Emerge
Rationally"): `RegressionTransformer` (2 causal softmax layers) trained on tasks drawn
uniformly from a pool of M task vectors, `y = w.x + noise`, one vmapped run per (pool size,
seed). During training its predictions on fresh tasks are compared with the closed-form
dMMSE predictor of its own pool and with ridge regression (NumPy,
jaxinterp.analysis.icl_predictors): the mean squared difference to each.

Both parts take their loss from the trainer's `regression` task (`jaxinterp.train.tasks`). The
trainer's loop itself is not used: its regression task feeds the model one input feature,
while these models need `xs` and `ys`, and the sweep is one vmapped call.

Writes `r2_vs_gd.png`, `task_diversity.png` and `summary.json` to the workdir.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from experiments import runner
from experiments.plotting import pyplot
from jaxinterp.analysis import icl_predictors as ref
from jaxinterp.data.sources import load_source
from jaxinterp.models.icl_regression import LinearSelfAttention, RegressionTransformer
from jaxinterp.train.tasks import Split, make_task

_TASK = make_task({"name": "regression"})


def regression_loss(pred: jax.Array, targets: jax.Array) -> jax.Array:
    """The trainer's `regression` task loss (mean squared error, no mask)."""
    return _TASK.loss(pred, Split((), {}, targets))[0]


def train_vmapped(model, sample, init_batch, keys, run_args, steps: int, lr: float,
                  eval_every: int = 0, eval_fn=None):
    """Adam (cosine decay to lr/100) on `len(keys)` runs as one compiled, vmapped call per chunk.

    `sample(key, *args) -> (xs, ys, targets)` draws one batch for a run with its `run_args`
    (arrays with a leading run axis). Returns (params with a leading run axis, list of
    (step, eval_fn(params)) every `eval_every` steps, step 0 included).
    """
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.01))
    init_keys, data_keys = jax.vmap(lambda k: jax.random.split(k))(keys).transpose(1, 0, 2)
    params = jax.vmap(lambda k: model.init(k, *init_batch)["params"])(init_keys)
    opt_state = jax.vmap(opt.init)(params)

    def one_step(carry, key, args):
        p, s = carry
        xs, ys, targets = sample(key, *args)

        def loss_fn(p):
            return regression_loss(model.apply({"params": p}, xs, ys), targets)

        loss, g = jax.value_and_grad(loss_fn)(p)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), loss

    def chunk(p, s, key, args, n):
        def body(carry, k):
            return one_step(carry, k, args)

        (p, s), losses = jax.lax.scan(body, (p, s), jax.random.split(key, n))
        return p, s, losses

    chunk_len = eval_every or steps
    run_chunk = jax.jit(jax.vmap(chunk, in_axes=(0, 0, 0, 0, None)), static_argnums=4)
    evals, losses = [], []
    if eval_fn is not None:
        evals.append((0, eval_fn(params)))
    done = 0
    while done < steps:
        n = min(chunk_len, steps - done)
        data_keys, sub = jax.vmap(lambda k: tuple(jax.random.split(k)))(data_keys)
        params, opt_state, ls = run_chunk(params, opt_state, sub, run_args, n)
        losses.append(np.asarray(ls))
        done += n
        if eval_fn is not None:
            evals.append((done, eval_fn(params)))
    return params, evals, np.concatenate(losses, axis=1)


# --- Part A: one layer of linear self-attention vs one step of GD ---------------------------


def run_lsa(c: ConfigDict, data_dir: str, sparse: bool = False) -> dict[str, Any]:
    """Both arms x seeds for one parameterization; per-arm results (see the docstring)."""
    d, m = c.d, c.n_context
    eigs = np.asarray(c.cov_eigs, np.float64)
    if len(eigs) != d:
        raise ValueError(f"lsa.cov_eigs has {len(eigs)} values; lsa.d is {d}")
    covs = {"isotropic": np.eye(d), "anisotropic": np.diag(eigs)}
    arms = list(covs)
    roots = np.stack([np.sqrt(covs[a]) for a in arms]).astype(np.float32)  # diagonal covs
    seeds = list(c.seeds)
    root_per_run = jnp.asarray(np.repeat(roots, len(seeds), axis=0))  # [arm * seed, d, d]
    keys = jnp.stack([jax.random.PRNGKey(s) for _ in arms for s in seeds])

    def sample(key, root):
        kw, kx = jax.random.split(key)
        w = jax.random.normal(kw, (c.batch_size, d))
        xs = jax.random.normal(kx, (c.batch_size, m + 1, d)) @ root.T
        ys = jnp.einsum("bnd,bd->bn", xs, w)
        return xs, ys, ys[:, -1]

    model = LinearSelfAttention(init_std=c.init_std, sparse=sparse)
    init = (jnp.zeros((1, m + 1, d)), jnp.zeros((1, m + 1)))
    params, _, losses = train_vmapped(model, sample, init, keys, (root_per_run,), c.num_steps,
                                      c.learning_rate)

    # Fresh tasks (never seen in training) from the icl_regression builder.
    src = load_source("icl_regression", "test", data_dir, d=d, n_points=m + 1, num_train=1,
                      num_test=c.num_eval, seed=c.eval_seed)
    ex = {k: np.stack([src[i][k] for i in range(len(src))]) for k in ("xs", "w")}
    out: dict[str, Any] = {"n_context": m, "d": d, "cov_eigs": eigs.tolist(), "seeds": seeds,
                           "theory_step_size_isotropic": m / (m + d + 1)}
    per_arm: dict[str, Any] = {}
    for a_i, arm in enumerate(arms):
        xs = ex["xs"].astype(np.float64) @ np.sqrt(covs[arm]).T
        ys = np.einsum("bnd,bd->bn", xs, ex["w"])
        gd = ref.gd_query(xs, ys)
        pgd = ref.gd_query(xs, ys, ref.optimal_preconditioner(covs[arm], m))
        rows = []
        for s_i in range(len(seeds)):
            run = a_i * len(seeds) + s_i
            p = jax.tree.map(lambda v, run=run: v[run], params)
            pred = np.asarray(model.apply({"params": p}, jnp.asarray(xs, jnp.float32),
                                          jnp.asarray(ys, jnp.float32)), np.float64)
            eta, scale = ref.fit_scale(pred, gd), ref.fit_scale(pred, pgd)
            rows.append({
                "step_size": eta, "r2_vs_one_step_gd": ref.r2(pred, eta * gd),
                "r2_vs_preconditioned_gd": ref.r2(pred, scale * pgd),
                "pgd_scale": scale, "final_train_mse": float(losses[run, -100:].mean()),
                "test_mse": float(np.mean((pred - ys[:, -1]) ** 2)),
                "optimal_one_step_gd_test_mse": float(np.mean(
                    (ref.fit_scale(ys[:, -1], gd) * gd - ys[:, -1]) ** 2)),
                "optimal_pgd_test_mse": float(np.mean((pgd - ys[:, -1]) ** 2)),
                "_pred": pred,
            })
        per_arm[arm] = {"per_seed": rows, "gd": gd, "pgd": pgd}
        out[arm] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "_pred"}
        out[arm]["per_seed"] = [{k: v for k, v in r.items() if k != "_pred"} for r in rows]
    out["train_loss_curves"] = losses
    out["_arms"] = per_arm
    return out


# --- Part B: task diversity -----------------------------------------------------------------


def run_sweep(c: ConfigDict) -> dict[str, Any]:
    d, n, s2 = c.d, c.n_points, c.noise_std ** 2
    pools_sizes = [int(p) for p in c.pool_sizes]  # 0 = a fresh task per example
    m_max = max(max(pools_sizes), 1)
    seeds = list(c.seeds)
    runs = [(p, s) for p in pools_sizes for s in seeds]
    pools = np.stack([np.random.default_rng([s, 7]).standard_normal((m_max, d))
                      for _, s in runs]).astype(np.float32)
    sizes = jnp.asarray([p for p, _ in runs], jnp.int32)
    keys = jnp.stack([jax.random.PRNGKey(1000 + s) for _, s in runs])

    def sample(key, pool, size):
        ki, kw, kx, ke = jax.random.split(key, 4)
        idx = jax.random.randint(ki, (c.batch_size,), 0, jnp.maximum(size, 1))
        w = jnp.where(size > 0, pool[idx].T, jax.random.normal(kw, (c.batch_size, d)).T).T
        xs = jax.random.normal(kx, (c.batch_size, n, d))
        ys = jnp.einsum("bnd,bd->bn", xs, w) + c.noise_std * jax.random.normal(ke, (c.batch_size,
                                                                                    n))
        return xs, ys, ys

    rng = np.random.default_rng([c.eval_seed, 3])
    xs_e = rng.standard_normal((c.num_eval, n, d))
    ys_e = (np.einsum("bnd,bd->bn", xs_e, rng.standard_normal((c.num_eval, d)))
            + c.noise_std * rng.standard_normal((c.num_eval, n)))
    ridge = ref.ridge_prefix(xs_e, ys_e, s2)
    dmmse = np.stack([ref.dmmse_prefix(xs_e, ys_e, pools[r][:p], s2) if p else ridge
                      for r, (p, _) in enumerate(runs)])
    model = RegressionTransformer(n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads,
                                  d_mlp=c.d_mlp, max_points=n)
    apply = jax.jit(jax.vmap(lambda p: model.apply({"params": p}, jnp.asarray(xs_e, jnp.float32),
                                                   jnp.asarray(ys_e, jnp.float32))))

    def eval_fn(params):
        pred = np.asarray(apply(params), np.float64)[:, :, 1:]  # positions with context
        return (np.mean((pred - ridge[None, :, 1:]) ** 2, axis=(1, 2)),
                np.mean((pred - dmmse[:, :, 1:]) ** 2, axis=(1, 2)),
                np.mean((pred - ys_e[None, :, 1:]) ** 2, axis=(1, 2)))

    init = (jnp.zeros((1, n, d)), jnp.zeros((1, n)))
    _, evals, losses = train_vmapped(model, sample, init, keys, (jnp.asarray(pools), sizes),
                                     c.num_steps, c.learning_rate, c.eval_every, eval_fn)
    steps = np.array([s for s, _ in evals])
    d_ridge = np.stack([e[0] for _, e in evals], 1)  # [run, eval]
    d_dmmse = np.stack([e[1] for _, e in evals], 1)
    mse = np.stack([e[2] for _, e in evals], 1)
    shape = (len(pools_sizes), len(seeds), len(steps))
    d_ridge, d_dmmse, mse = (a.reshape(shape) for a in (d_ridge, d_dmmse, mse))
    ridge_mse = float(np.mean((ridge[:, 1:] - ys_e[:, 1:]) ** 2))
    out: dict[str, Any] = {"pool_sizes": pools_sizes, "seeds": seeds, "steps": steps.tolist(),
                           "ridge_test_mse": ridge_mse, "per_pool": {}}
    finite = [i for i, p in enumerate(pools_sizes) if p > 0]
    for i, p in enumerate(pools_sizes):
        dr, dd = d_ridge[i].mean(0), d_dmmse[i].mean(0)
        settle = _settling_index(dd < dr) if p else None
        out["per_pool"][str(p or "inf")] = {
            "final_dist_ridge": float(dr[-1]), "final_dist_dmmse": float(dd[-1]) if p else None,
            "final_test_mse": float(mse[i].mean(0)[-1]),
            "final_closer_to": ("ridge" if not p or dr[-1] < dd[-1] else "dmmse"),
            "first_step_closer_to_dmmse": None if settle is None else int(steps[settle]),
            "dmmse_test_mse": float(np.mean((dmmse[i * len(seeds)][:, 1:] - ys_e[:, 1:]) ** 2)),
            "final_dist_ridge_per_seed": d_ridge[i, :, -1].tolist(),
            "final_dist_dmmse_per_seed": d_dmmse[i, :, -1].tolist() if p else None,
        }
    ridge_like = [pools_sizes[i] for i in finite
                  if out["per_pool"][str(pools_sizes[i])]["final_closer_to"] == "ridge"]
    out["transition_pool_size"] = min(ridge_like) if ridge_like else None
    # Memorisation time vs pool size (pools that become dMMSE-like), log-log slope.
    pts = [(p, out["per_pool"][str(p)]["first_step_closer_to_dmmse"])
           for p in pools_sizes if p and out["per_pool"][str(p)]["first_step_closer_to_dmmse"]]
    out["memorisation_step_vs_pool"] = pts
    out["memorisation_time_loglog_slope"] = (
        float(np.polyfit(np.log([p for p, _ in pts]), np.log([t for _, t in pts]), 1)[0])
        if len(pts) >= 2 else None)
    out["_curves"] = (steps, d_ridge, d_dmmse)
    out["train_loss_final"] = losses[:, -50:].mean(1).reshape(shape[:2]).tolist()
    return out


def _settling_index(closer: np.ndarray) -> int | None:
    """First eval index > 0 from which `closer` holds at every later eval (None: never).
    Eval 0 (initialisation) is skipped: an untrained model is near 0, as both predictors are
    on average, and which is nearer there means nothing."""
    for i in range(1, len(closer)):
        if closer[i:].all():
            return i
    return None


# --- Experiment -----------------------------------------------------------------------------


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Parts A and B, figures and summary.json (see the module docstring)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    data_dir = config.data_dir or os.path.join(workdir, "data")
    lsa = run_lsa(config.lsa, data_dir)
    lsa_sparse = run_lsa(config.lsa, data_dir, sparse=True)
    t_lsa = time.time() - t0
    sweep = run_sweep(config.sweep) if config.sweep.enabled else None
    iso, aniso = lsa["isotropic"], lsa["anisotropic"]
    summary: dict[str, Any] = {
        "r2_vs_one_step_gd": iso["r2_vs_one_step_gd"],
        "step_size": iso["step_size"],
        "theory_step_size": lsa["theory_step_size_isotropic"],
        "anisotropic": {"r2_vs_one_step_gd": aniso["r2_vs_one_step_gd"],
                        "r2_vs_preconditioned_gd": aniso["r2_vs_preconditioned_gd"],
                        "test_mse": aniso["test_mse"],
                        "optimal_one_step_gd_test_mse": aniso["optimal_one_step_gd_test_mse"],
                        "optimal_pgd_test_mse": aniso["optimal_pgd_test_mse"]},
        "anisotropic_sparse": {k: lsa_sparse["anisotropic"][k] for k in (
            "r2_vs_one_step_gd", "r2_vs_preconditioned_gd", "pgd_scale", "test_mse")},
        "isotropic_sparse": {k: lsa_sparse["isotropic"][k] for k in (
            "r2_vs_one_step_gd", "step_size", "test_mse")},
        "lsa": {k: v for k, v in lsa.items() if not k.startswith("_")
                and k != "train_loss_curves"},
        "lsa_sparse": {k: v for k, v in lsa_sparse.items() if not k.startswith("_")
                       and k != "train_loss_curves"},
        "seconds_lsa": round(t_lsa, 1),
    }
    if sweep is not None:
        summary["transition_pool_size"] = sweep["transition_pool_size"]
        summary["memorisation_time_loglog_slope"] = sweep["memorisation_time_loglog_slope"]
        summary["sweep"] = {k: v for k, v in sweep.items() if not k.startswith("_")}
    summary["seconds"] = round(time.time() - t0, 1)
    figures = {"r2_vs_gd.png": lambda path: plot_lsa(lsa, lsa_sparse, path)}
    if sweep is not None:
        figures["task_diversity.png"] = lambda path: plot_sweep(sweep, path)
    return runner.write_outputs(workdir, summary, figures)


def plot_lsa(lsa, lsa_sparse, path: str) -> None:
    """Model vs fitted one-step GD (isotropic), vs GD and preconditioned GD (anisotropic);
    top row the full LSA, bottom row the sparse form."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4))
    for (ax, arm, refname, r2key, scale_key), (res, form) in zip(
            [(axes[r, 0], "isotropic", "gd", "r2_vs_one_step_gd", "step_size") for r in (0, 1)]
            + [(axes[r, 1], "anisotropic", "gd", "r2_vs_one_step_gd", "step_size")
               for r in (0, 1)]
            + [(axes[r, 2], "anisotropic", "pgd", "r2_vs_preconditioned_gd", "pgd_scale")
               for r in (0, 1)],
            [(lsa, "full"), (lsa_sparse, "sparse")] * 3, strict=True):
        arms = res["_arms"]
        row = arms[arm]["per_seed"][0]
        x = row[scale_key] * arms[arm][refname]
        ax.scatter(x, row["_pred"], s=4, alpha=0.5)
        lim = np.abs(np.concatenate([x, row["_pred"]])).max()
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=1)
        label = "one-step GD" if refname == "gd" else "preconditioned GD"
        ax.set(xlabel=f"{label} prediction (fitted scale {row[scale_key]:.3f})",
               ylabel=f"LSA ({form}) prediction",
               title=f"{form} LSA, {arm}: R^2 = {row[r2key]:.4f} (seed {lsa['seeds'][0]})")
    fig.suptitle("one layer of linear self-attention on fresh tasks")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(sweep, path: str) -> None:
    """Final distance to dMMSE and ridge vs pool size; distances over training per pool."""
    plt = pyplot()
    steps, d_ridge, d_dmmse = sweep["_curves"]
    sizes = sweep["pool_sizes"]
    finite = [i for i, p in enumerate(sizes) if p]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    ps = [sizes[i] for i in finite]
    for arr, name, col in ((d_dmmse, "dMMSE", "tab:red"), (d_ridge, "ridge", "tab:blue")):
        mean = np.array([arr[i, :, -1].mean() for i in finite])
        axes[0].plot(ps, mean, "o-", color=col, label=f"to {name}")
        for i in finite:
            axes[0].scatter([sizes[i]] * arr.shape[1], arr[i, :, -1], color=col, s=8, alpha=0.4)
    inf = [i for i, p in enumerate(sizes) if not p]
    if inf:
        axes[0].axhline(d_ridge[inf[0], :, -1].mean(), color="tab:blue", ls=":",
                        label="fresh tasks (M = inf): to ridge")
    if sweep["transition_pool_size"]:
        axes[0].axvline(sweep["transition_pool_size"], color="k", ls="--", lw=1,
                        label="transition")
    axes[0].set(xscale="log", yscale="log", xlabel="pool size M (training tasks)",
                ylabel="mean squared distance (fresh tasks)",
                title="end of training: distance to each predictor")
    axes[0].legend(fontsize=8)
    cmap = plt.get_cmap("viridis")
    for j, i in enumerate(finite):
        col = cmap(j / max(len(finite) - 1, 1))
        ratio = d_dmmse[i].mean(0) / d_ridge[i].mean(0)
        axes[1].plot(np.maximum(steps, 1), ratio, color=col, label=f"M={sizes[i]}")
    axes[1].axhline(1, color="k", lw=1)
    axes[1].set(xscale="log", yscale="log", xlabel="step",
                ylabel="dist to dMMSE / dist to ridge",
                title="over training (< 1: memorising)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "icl_regression", omit=("lsa", "sweep"))
