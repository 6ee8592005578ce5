"""The lazy neuron phenomenon: few ReLU MLP activations are non-zero after training.

    python -m experiments.lazy_neurons --config=configs/lazy_neurons.py \
        --workdir=workdirs/lazy_neurons

Li et al. 2023 ("The Lazy Neuron Phenomenon: On Emergence of Activation Sparsity in
Transformers") report that after a ReLU, very few MLP activations are non-zero (3.0% for T5-Base,
6.3% for ViT-B16), at every layer, on training and evaluation data, in MLP-Mixers and 2-layer
MLPs too; that larger models (deeper, wider MLPs) are sparser; that sparsity also emerges with
random labels, random inputs and infinite data; and that enforcing sparsity with Top-k makes a
Transformer less sensitive to noisy labels, more robust to input corruption and better
calibrated. Here, at toy scale, four ReLU families:

  lm     a 2-layer transformer LM on the `induction` token task (repeated random segments with
         skip-bigram structure), one pass over fresh sequences (no sequence is seen twice: the
         paper's "infinite data" setting);
  vit    a ViT on the 8x8 digits (patch 2, 16 patches + a class token);
  mixer  an MLP-Mixer on the digits (token-mixing and channel-mixing MLPs are both measured);
  mlp    `deep_mlp` with one block on the flattened digits: linear embedding, one 2-layer ReLU
         MLP (the measured hidden layer), linear head.

Every run is trained with AdamW through the project's loss (`jaxinterp.train.step.loss_fn`,
tasks `next_token` / `classification`) and optimizer, all seeds (and data arms) of one model as
one vmapped, compiled call. At every eval the fraction of non-zero MLP activations per layer is
measured on held-out data with `jaxinterp.analysis.activation_stats` (streamed batch by batch,
no activation is stored). Arms:

  arms        image families: `clean`, `random_labels` (every training label uniform at random),
              `random_inputs` (every training image uniform noise, labels kept),
              `noisy_labels` (a fraction of the labels replaced by another class), vmapped
              together with the seeds (same initial weights per seed).
  sweeps      `width` (d_mlp) and `depth` (n_layers) for the chosen families, clean data.
  top_k       the ViT trained with only the k largest MLP activations of each token kept
              (`ji.Apply` at `blocks.*.mlp.hook_post` in training and evaluation), on clean and
              on noisy labels, against the dense ViT: test accuracy, expected calibration
              error (`jaxinterp.train.metrics.ece`), accuracy on noise-corrupted test images.

Writes `nonzero_over_training.png`, `sweeps.png`, `top_k.png`, `summary.json` (the held-out
non-zero fraction per (family, layer, seed) at the start and the end of training, per arm and
sweep point, the Top-k metrics, and `claims`: each of the abstract's claims with whether its
direction holds here) and `params/<family>.msgpack` (the clean runs' final parameters, all
seeds; `load_final_params`). `run_experiment` is the library entry point.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from ml_collections import ConfigDict

import jaxinterp as ji
from experiments import runner
from experiments.plotting import pyplot
from jaxinterp.analysis import activation_stats
from jaxinterp.data import load_source
from jaxinterp.train.metrics import ece
from jaxinterp.train.optimizer import make_optimizer
from jaxinterp.train.step import loss_fn
from jaxinterp.train.tasks import Classification, NextToken

IMAGE_FAMILIES = ("vit", "mixer", "mlp")
BATCHED_CONV_IS_SLOW = ("vit", "mixer")  # patch stems are convolutions (see train_runs)
FAMILIES = ("lm", *IMAGE_FAMILIES)
ARMS = ("clean", "random_labels", "random_inputs", "noisy_labels")
# The MLP post-activation sites of each family (the ReLU outputs).
SITES = {"lm": ("blocks.*.mlp.hook_post",), "vit": ("blocks.*.mlp.hook_post",),
         "mixer": ("blocks.*.token_mixing.hook_post", "blocks.*.channel_mixing.hook_post"),
         "mlp": ("blocks.*.mlp.hook_post",)}


# -- data -------------------------------------------------------------------------------------


def load_digits(data_dir: str) -> dict[str, np.ndarray]:
    """The digits splits: `train_x`/`test_x` float32 [N, 8, 8, 1] in [0, 1], `*_y` int32 [N]."""
    out = {}
    for split in ("train", "test"):
        src = load_source("digits", split, data_dir)
        out[f"{split}_x"] = np.stack([src[i]["image"] for i in range(len(src))]).astype(
            np.float32) / 255.0
        out[f"{split}_y"] = np.array([src[i]["label"] for i in range(len(src))], np.int32)
    return out


def load_lm_tokens(config: ConfigDict, data_dir: str) -> dict[str, np.ndarray]:
    """`train` int32 [steps * batch, L] (one pass: every sequence is used once) and `test`
    int32 [num_test, L] from the `induction` builder."""
    kw = dict(config.lm_data)
    kw["num_train"] = config.num_train_steps * config.lm_batch_size
    train = load_source("induction", "train", data_dir, **kw)
    test = load_source("induction", "test", data_dir, **kw)
    return {"train": np.stack([train[i]["tokens"] for i in range(len(train))]).astype(np.int32),
            "test": np.stack([test[i]["tokens"] for i in range(len(test))]).astype(np.int32)}


def image_arms(digits: dict[str, np.ndarray], arms, seed: int, noise: float):
    """Training data per arm: (x float32 [arm, N, 8, 8, 1], y int32 [arm, N])."""
    rng = np.random.default_rng(1000 + seed)
    x, y = digits["train_x"], digits["train_y"]
    xs, ys = [], []
    for arm in arms:
        if arm == "clean":
            xs.append(x), ys.append(y)
        elif arm == "random_labels":
            xs.append(x), ys.append(rng.integers(0, 10, size=y.shape).astype(np.int32))
        elif arm == "random_inputs":
            xs.append(rng.random(x.shape).astype(np.float32)), ys.append(y)
        elif arm == "noisy_labels":
            flip = rng.random(y.shape) < noise
            other = (y + rng.integers(1, 10, size=y.shape)) % 10
            xs.append(x), ys.append(np.where(flip, other, y).astype(np.int32))
        else:
            raise ValueError(f"unknown arm {arm!r}; choose from {ARMS}")
    return np.stack(xs), np.stack(ys)


# -- models, Top-k ----------------------------------------------------------------------------


def build(config: ConfigDict, family: str, **overrides) -> nn.Module:
    """The family's model: `config.models.<family>` (a preset plus overrides) and `overrides`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    fields = {**dict(config.models[family]), **overrides}
    return ji.models.build(fields.pop("preset"), **fields)


def keep_top_k(x: jax.Array, k: int) -> jax.Array:
    """x [..., d] with all but the k largest entries of each row (each token's MLP
    activations) set to 0 (ties with the k-th largest are kept)."""
    kth = jax.lax.top_k(x, k)[0][..., -1:]
    return jnp.where(x >= kth, x, jnp.zeros_like(x))


def top_k_intervention(k: int) -> ji.Apply:
    return ji.Apply("blocks.*.mlp.hook_post", functools.partial(keep_top_k, k=k))


# -- training ---------------------------------------------------------------------------------


def train_runs(config: ConfigDict, model: nn.Module, family: str, keys: jax.Array, data: Any,
               interventions=()) -> tuple[Any, np.ndarray]:
    """Trains one run per row of `keys` (and of `data`'s leading axis, for images), vmapped.

    Args:
      keys: [R] PRNG keys; a run's init key depends only on its seed (`fold_in(key, 0)`).
      data: images: (x [R, N, 8, 8, 1], y [R, N]); lm: the shared one-pass train tokens
        [steps * batch, L] (run r starts at offset r * N / R).

    Returns:
      (params at steps 0, every, 2 every, ..., steps: leaves [R, n_evals + 1, ...],
       mean train loss per eval interval [R, n_evals]).
    """
    steps, every = config.num_train_steps, config.eval_every_steps
    if steps % every:
        raise ValueError(f"num_train_steps={steps} must be a multiple of eval_every_steps={every}")
    n_evals = steps // every
    opt = make_optimizer(config.optimizer, steps)
    lm = family == "lm"
    task = NextToken() if lm else Classification(input_feature="image", label_feature="label")
    batch_size = config.lm_batch_size if lm else config.batch_size
    example = jnp.zeros((1, data.shape[1] - 1), jnp.int32) if lm else jnp.zeros((1, 8, 8, 1))
    n_runs = keys.shape[0]

    def one_run(key, run_data, offset):
        params = model.init(jax.random.fold_in(key, 0), example)["params"]

        def step(carry, xs):
            params, opt_state = carry
            k, s = xs
            if lm:
                idx = (s * batch_size + jnp.arange(batch_size) + offset) % run_data.shape[0]
                batch = {"tokens": run_data[idx]}
            else:
                idx = jax.random.randint(k, (batch_size,), 0, run_data[1].shape[0])
                batch = {"image": run_data[0][idx], "label": run_data[1][idx]}
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                params, batch, model, interventions, task=task, train=True)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        def chunk(carry, xs):
            carry, losses = jax.lax.scan(step, carry, xs)
            return carry, (carry[0], losses.mean())

        data_keys = jax.random.split(jax.random.fold_in(key, 1), steps).reshape(n_evals, every)
        step_ids = jnp.arange(steps).reshape(n_evals, every)
        _, (history, losses) = jax.lax.scan(chunk, (params, opt.init(params)),
                                            (data_keys, step_ids))
        history = jax.tree.map(lambda p0, h: jnp.concatenate([p0[None], h]), params, history)
        return history, losses

    offsets = jnp.arange(n_runs) * (data.shape[0] // n_runs if lm else 0)
    if lm:
        fn = jax.vmap(one_run, in_axes=(0, None, 0))
        history, losses = jax.jit(fn)(keys, jnp.asarray(data), offsets)
    elif family in BATCHED_CONV_IS_SLOW:
        # vmap would turn the patch stem's convolution into a grouped convolution (one group
        # per run), which XLA:CPU runs ~100x slower than the plain one: map over runs instead
        # (still one compiled call).
        history, losses = jax.jit(lambda *a: jax.lax.map(lambda r: one_run(*r), a))(
            keys, tuple(map(jnp.asarray, data)), offsets)
    else:
        history, losses = jax.jit(jax.vmap(one_run))(keys, tuple(map(jnp.asarray, data)),
                                                     offsets)
    return history, np.asarray(losses)


def nonzero_fractions(model: nn.Module, params: Any, inputs: np.ndarray, family: str,
                      n_batches: int) -> dict[str, float]:
    """`{site: fraction of entries > 0}` at the family's MLP post-activation sites over
    `inputs`, streamed in `n_batches` batches with `activation_stats` (nothing stored)."""
    batches = iter(np.array_split(inputs, n_batches))
    stats = activation_stats(model, {"params": params}, batches, sites=SITES[family], top_k=1)
    return dict(stats.nonzero_fraction)


def curves_of(config, model, history, family, inputs) -> dict[str, np.ndarray]:
    """`{site: [R, n_evals + 1]}` held-out non-zero fractions over training."""
    n_runs, n_points = jax.tree.leaves(history)[0].shape[:2]
    out: dict[str, np.ndarray] = {}
    for r in range(n_runs):
        for e in range(n_points):
            p = jax.tree.map(lambda h, r=r, e=e: h[r, e], history)
            for site, v in nonzero_fractions(model, p, inputs, family,
                                             config.stats_batches).items():
                out.setdefault(site, np.zeros((n_runs, n_points)))[r, e] = v
    return out


def _sorted_sites(sites) -> list[str]:
    return sorted(sites, key=lambda s: (int(s.split(".")[1]), s))


def final_params(history: Any) -> Any:
    return jax.tree.map(lambda h: h[:, -1], history)


def save_final_params(workdir: str, family: str, params: Any) -> None:
    os.makedirs(os.path.join(workdir, "params"), exist_ok=True)
    with open(os.path.join(workdir, "params", f"{family}.msgpack"), "wb") as f:
        f.write(flax.serialization.to_bytes(jax.device_get(params)))


def load_final_params(config: ConfigDict, workdir: str, family: str) -> tuple[nn.Module, Any]:
    """(model, params with leaves [n_seeds, ...]) of the family's clean runs at the end."""
    model = build(config, family)
    example = (jnp.zeros((1, config.models.lm.n_ctx), jnp.int32) if family == "lm"
               else jnp.zeros((1, 8, 8, 1)))
    template = jax.vmap(lambda k: model.init(k, example)["params"])(
        jax.random.split(jax.random.key(0), config.n_seeds))
    with open(os.path.join(workdir, "params", f"{family}.msgpack"), "rb") as f:
        return model, flax.serialization.from_bytes(template, f.read())


def _seed_keys(config: ConfigDict, repeat: int = 1) -> jax.Array:
    """[repeat * n_seeds] keys: arm-major, so run a * n_seeds + s has seed s."""
    keys = jnp.stack([jax.random.key(config.seed + s) for s in range(config.n_seeds)])
    return jnp.concatenate([keys] * repeat)


def _classify(model, params, x, interventions=()):
    return ji.run(model, {"params": params}, x, interventions=list(interventions))[0]


def classifier_metrics(config, model, params, digits, interventions=()) -> dict[str, np.ndarray]:
    """Per run [R]: test accuracy, ECE, accuracy on Gaussian-noise-corrupted test images."""
    x, y = jnp.asarray(digits["test_x"]), jnp.asarray(digits["test_y"])
    noise = jax.random.normal(jax.random.key(123), x.shape) * config.corruption_std
    x_bad = jnp.clip(x + noise, 0.0, 1.0)

    def one(p):
        logits = _classify(model, p, x, interventions)
        logits_bad = _classify(model, p, x_bad, interventions)
        return {"test_accuracy": (logits.argmax(-1) == y).mean(),
                "ece": ece(logits, y, config.ece_bins),
                "corrupted_accuracy": (logits_bad.argmax(-1) == y).mean()}

    return jax.device_get(jax.jit(jax.vmap(one))(params))


def train_accuracy(model, params, x, y) -> np.ndarray:
    """[R] accuracy of run r on its own training data (x [R, N, ...], y [R, N])."""
    def one(p, xr, yr):
        return (_classify(model, p, xr).argmax(-1) == yr).mean()
    return np.asarray(jax.jit(jax.vmap(one))(params, jnp.asarray(x), jnp.asarray(y)))


# -- the experiment ---------------------------------------------------------------------------


def _held_out(family, digits, tokens):
    return tokens["test"][:, :-1] if family == "lm" else digits["test_x"]


def _train_inputs(config, family, digits, tokens):
    n = len(_held_out(family, digits, tokens))  # the same shapes: no new compile
    return tokens["train"][:n, :-1] if family == "lm" else digits["train_x"][:n]


def _mean_over_sites(curves: dict[str, np.ndarray]) -> np.ndarray:
    return np.mean(np.stack(list(curves.values())), axis=0)


def run_family(config, family, digits, tokens, workdir) -> dict[str, Any]:
    """The family's clean runs (plus the data arms for image families): curves, finals."""
    model = build(config, family)
    n = config.n_seeds
    arms = ("clean",) if family == "lm" else tuple(config.arms)
    if arms[0] != "clean":
        raise ValueError(f"config.arms must start with 'clean', got {arms}")
    if family == "lm":
        data = tokens["train"]
    else:
        xs, ys = image_arms(digits, arms, config.seed, config.label_noise)
        data = (np.repeat(xs, n, axis=0), np.repeat(ys, n, axis=0))  # arm-major runs
    history, losses = train_runs(config, model, family, _seed_keys(config, len(arms)), data)
    curves = curves_of(config, model, history, family, _held_out(family, digits, tokens))
    final = final_params(history)
    clean = jax.tree.map(lambda h: h[:n], final)
    save_final_params(workdir, family, clean)
    train_inputs = _train_inputs(config, family, digits, tokens)
    on_train = [nonzero_fractions(model, jax.tree.map(lambda h, s=s: h[s], clean), train_inputs,
                                  family, config.stats_batches) for s in range(n)]
    sites = _sorted_sites(curves)
    out = {
        "steps": list(range(0, config.num_train_steps + 1, config.eval_every_steps)),
        "sites": sites,
        "curves": {s: curves[s][:n] for s in sites},  # clean runs, [seed, eval]
        "nonzero_init": {s: curves[s][:n, 0] for s in sites},
        "nonzero_final": {s: curves[s][:n, -1] for s in sites},
        "nonzero_final_train": {s: np.array([o[s] for o in on_train]) for s in sites},
        "final_train_loss": losses[:n, -1],
    }
    if family != "lm":
        mean = _mean_over_sites(curves)  # [R, evals]
        acc = train_accuracy(model, final, *data)
        out["arms"] = {arm: {"nonzero_init": mean[a * n:(a + 1) * n, 0],
                             "nonzero_final": mean[a * n:(a + 1) * n, -1],
                             "train_accuracy": acc[a * n:(a + 1) * n],
                             "curve": mean[a * n:(a + 1) * n]}
                       for a, arm in enumerate(arms)}
        metrics = classifier_metrics(config, model, final, digits)
        out["dense_metrics"] = {arm: {k: v[a * n:(a + 1) * n] for k, v in metrics.items()}
                                for a, arm in enumerate(arms)}
    return out


def run_sweep(config, family, field, values, digits, tokens) -> dict[str, Any]:
    """Clean runs at each value of `field`: final held-out non-zero fraction, averaged over
    layers, per seed."""
    n = config.n_seeds
    out = {}
    for v in values:
        if family == "mlp" and field == "d_mlp":  # deep_mlp's width is d_model * expansion
            model = build(config, family, expansion=max(1, v // config.models.mlp.d_model))
        else:
            model = build(config, family, **{field: v})
        if family == "lm":
            data = tokens["train"]
        else:
            xs, ys = image_arms(digits, ("clean",), config.seed, config.label_noise)
            data = (np.repeat(xs, n, axis=0), np.repeat(ys, n, axis=0))
        history, _ = train_runs(config, model, family, _seed_keys(config), data)
        final = final_params(history)
        per_seed = [nonzero_fractions(model, jax.tree.map(lambda h, s=s: h[s], final),
                                      _held_out(family, digits, tokens), family,
                                      config.stats_batches) for s in range(n)]
        out[str(v)] = {"nonzero_final": np.array([np.mean(list(p.values())) for p in per_seed]),
                       "per_layer": {s: np.array([p[s] for p in per_seed])
                                     for s in _sorted_sites(per_seed[0])}}
    return out


def run_top_k(config, digits, dense: dict[str, Any]) -> dict[str, Any]:
    """The Top-k ViT on clean and noisy labels, against the dense ViT's same arms."""
    n = config.n_seeds
    k = config.top_k.k
    model = build(config, "vit")
    iv = top_k_intervention(k)
    arms = ("clean", "noisy_labels")
    xs, ys = image_arms(digits, arms, config.seed, config.label_noise)
    history, _ = train_runs(config, model, "vit", _seed_keys(config, len(arms)),
                            (np.repeat(xs, n, axis=0), np.repeat(ys, n, axis=0)), [iv])
    metrics = classifier_metrics(config, model, final_params(history), digits, [iv])
    top_k = {arm: {m: v[a * n:(a + 1) * n] for m, v in metrics.items()}
             for a, arm in enumerate(arms)}
    return {"k": k, "d_mlp": config.models.vit.d_mlp,
            "dense": {arm: dense["vit"]["dense_metrics"][arm] for arm in arms},
            "top_k": top_k}


def _mean(x) -> float:
    return float(np.mean(x))


def claims(summary: dict[str, Any]) -> dict[str, Any]:
    """Each claim of the abstract, its measured numbers (means over seeds), and whether its
    direction holds here."""
    fam = summary["families"]
    out: dict[str, Any] = {}
    final = {f: _mean([np.mean(v) for v in fam[f]["nonzero_final"].values()]) for f in fam}
    init = {f: _mean([np.mean(v) for v in fam[f]["nonzero_init"].values()]) for f in fam}
    out["sparser_after_training"] = {
        "init": init, "final": final, "holds": all(final[f] < init[f] for f in fam)}
    per_layer = all(np.mean(fam[f]["nonzero_final"][s]) < np.mean(fam[f]["nonzero_init"][s])
                    for f in fam for s in fam[f]["nonzero_final"])
    out["every_layer_sparser"] = {"holds": per_layer}
    train_final = {f: _mean([np.mean(v) for v in fam[f]["nonzero_final_train"].values()])
                   for f in fam}
    out["sparse_on_training_data_too"] = {
        "train": train_final, "held_out": final,
        "holds": all(train_final[f] < init[f] for f in fam)}
    for kind in ("width", "depth"):
        for f, sweep in summary["sweeps"].get(kind, {}).items():
            vals = [_mean(sweep[v]["nonzero_final"]) for v in sweep]
            out[f"larger_{kind}_sparser/{f}"] = {
                "values": list(sweep), "nonzero_final": vals,
                "holds": bool(vals[-1] < vals[0])}
    for arm in ("random_labels", "random_inputs"):
        rows = {f: fam[f]["arms"][arm] for f in fam if "arms" in fam[f] and arm in fam[f]["arms"]}
        if rows:
            out[f"emerges_with_{arm}"] = {
                "init": {f: _mean(r["nonzero_init"]) for f, r in rows.items()},
                "final": {f: _mean(r["nonzero_final"]) for f, r in rows.items()},
                "holds": all(_mean(r["nonzero_final"]) < _mean(r["nonzero_init"])
                             for r in rows.values())}
    if "lm" in fam:
        out["emerges_with_infinite_data"] = {"lm_init": init["lm"], "lm_final": final["lm"],
                                             "holds": final["lm"] < init["lm"]}
    tk = summary.get("top_k")
    if tk:
        d, t = tk["dense"], tk["top_k"]
        pairs = {
            "top_k_better_calibrated": ("clean", "ece", -1),
            "top_k_less_sensitive_to_noisy_labels": ("noisy_labels", "test_accuracy", 1),
            "top_k_more_robust_to_corruption": ("clean", "corrupted_accuracy", 1),
        }
        for name, (arm, metric, sign) in pairs.items():
            dv, tv = _mean(d[arm][metric]), _mean(t[arm][metric])
            out[name] = {"dense": dv, "top_k": tv, "metric": f"{arm}/{metric}",
                         "holds": bool(sign * (tv - dv) > 0)}
        out["top_k_clean_accuracy"] = {"dense": _mean(d["clean"]["test_accuracy"]),
                                       "top_k": _mean(t["clean"]["test_accuracy"])}
    return out


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Every family, arm, sweep and the Top-k arm; figures and a summary (module docstring)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    families = tuple(config.families)
    for f in (*families, *config.width_sweep.families, *config.depth_sweep.families):
        if f not in FAMILIES:
            raise ValueError(f"unknown family {f!r}; choose from {FAMILIES}")
    if config.top_k.k and not {"clean", "noisy_labels"} <= set(config.arms):
        raise ValueError(f"the Top-k arm (top_k.k={config.top_k.k}) is compared with the dense "
                         f"ViT's clean and noisy_labels arms, but arms={tuple(config.arms)}; add "
                         "them or set top_k.k=0")
    data_dir = config.data_dir or os.path.join(workdir, "data")
    digits = load_digits(data_dir)
    needs_lm = "lm" in (*families, *config.width_sweep.families, *config.depth_sweep.families)
    tokens = load_lm_tokens(config, data_dir) if needs_lm else None

    fam = {}
    for f in families:
        fam[f] = run_family(config, f, digits, tokens, workdir)
        logging.info("lazy_neurons: %s done at %.0f s", f, time.time() - t0)
    sweeps: dict[str, dict[str, Any]] = {"width": {}, "depth": {}}
    for f in config.width_sweep.families:
        sweeps["width"][f] = run_sweep(config, f, "d_mlp", config.width_sweep.d_mlp, digits,
                                       tokens)
    for f in config.depth_sweep.families:
        sweeps["depth"][f] = run_sweep(config, f, "n_layers", config.depth_sweep.n_layers,
                                       digits, tokens)
    logging.info("lazy_neurons: sweeps done at %.0f s", time.time() - t0)
    top_k = run_top_k(config, digits, fam) if config.top_k.k and "vit" in fam else None

    def without_curves(r):
        out = {k: v for k, v in r.items() if k not in ("curves", "steps", "arms")}
        if "arms" in r:  # the curves stay in `fam` for the figure
            out["arms"] = {arm: {k: v for k, v in a.items() if k != "curve"}
                           for arm, a in r["arms"].items()}
        return out

    summary: dict[str, Any] = {"families": {f: without_curves(r) for f, r in fam.items()},
                               "sweeps": sweeps, "top_k": top_k}
    summary["claims"] = claims(summary)
    summary["seconds"] = round(time.time() - t0, 1)
    return runner.write_outputs(workdir, summary, {
        "nonzero_over_training.png": lambda path: plot_curves(fam, path),
        "sweeps.png": lambda path: plot_sweeps(fam, sweeps, path),
        "top_k.png": lambda path: plot_top_k(top_k, path)})


# -- figures ----------------------------------------------------------------------------------


def plot_curves(fam: dict[str, Any], path: str) -> None:
    """Held-out non-zero fraction per layer over training (mean over seeds), one panel per
    family, and the image families' data arms (mean over layers)."""
    plt = pyplot()
    image = [f for f in fam if "arms" in fam[f]]
    fig, axes = plt.subplots(2, max(len(fam), len(image), 1), figsize=(4 * len(fam), 7),
                             squeeze=False)
    for j, (f, r) in enumerate(fam.items()):
        ax = axes[0, j]
        for s in r["sites"]:
            ax.plot(r["steps"], r["curves"][s].mean(0), label=s.replace(".hook_post", ""))
        ax.set(title=f"{f}: clean", xlabel="step", ylabel="non-zero fraction (held out)",
               ylim=(0, max(0.6, max(r["curves"][s].max() for s in r["sites"]) + 0.05)))
        ax.legend(fontsize=7)
    for j, f in enumerate(image):
        ax = axes[1, j]
        for arm, a in fam[f]["arms"].items():
            ax.plot(fam[f]["steps"], a["curve"].mean(0), label=arm)
        top = max(a["curve"].mean(0).max() for a in fam[f]["arms"].values())
        ax.set(title=f"{f}: data arms (mean over layers)", xlabel="step",
               ylabel="non-zero fraction", ylim=(0, max(0.6, top + 0.05)))
        ax.legend(fontsize=7)
    for j in range(len(image), axes.shape[1]):
        axes[1, j].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweeps(fam, sweeps, path: str) -> None:
    """Final non-zero fraction (mean over layers and seeds) against d_mlp and n_layers."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (kind, field) in zip(axes, (("width", "d_mlp"), ("depth", "n_layers")), strict=True):
        for f, sweep in sweeps[kind].items():
            xs = [int(v) for v in sweep]
            ys = [np.mean(sweep[v]["nonzero_final"]) for v in sweep]
            err = [np.std(sweep[v]["nonzero_final"]) for v in sweep]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f)
        ax.set(xscale="log" if kind == "width" else "linear", xlabel=field,
               ylabel="final non-zero fraction (held out)", title=f"{kind} sweep")
        if sweeps[kind]:
            ticks = sorted({int(v) for sweep in sweeps[kind].values() for v in sweep})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_top_k(top_k, path: str) -> None:
    """Dense against Top-k ViT: accuracy, ECE, accuracy under label noise and corruption."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    if top_k is None:
        ax.text(0.5, 0.5, "no Top-k arm", ha="center")
    else:
        bars = [("clean", "test_accuracy"), ("clean", "ece"), ("noisy_labels", "test_accuracy"),
                ("noisy_labels", "ece"), ("clean", "corrupted_accuracy")]
        x = np.arange(len(bars))
        for i, name in enumerate(("dense", "top_k")):
            vals = [np.mean(top_k[name][a][m]) for a, m in bars]
            errs = [np.std(top_k[name][a][m]) for a, m in bars]
            label = name if name == "dense" else f"top-{top_k['k']} of {top_k['d_mlp']}"
            ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, yerr=errs, capsize=3, label=label)
        ax.set_xticks(x, [f"{a}\n{m}" for a, m in bars], fontsize=8)
        ax.set(title="ViT on digits: dense vs Top-k MLP activations (mean over seeds)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "lazy_neurons", omit=("families", "sweeps"))
