"""The MLP-family bench: every image family of the registry on the digits at a matched parameter
budget, on 100% and 20% of the training data, several seeds; a Scaling-MLPs deep MLP with and
without augmentation; a patch-size sweep for ViT and Mixer.

    python -m experiments.mlp_bench --config=configs/mlp_bench.py --workdir=workdirs/mlp_bench

Papers (their orderings are what the table checks at this scale): RaftMLP, Strip-MLP, MS-MLP,
MAXIM (multi-axis gMLP), NiNformer, Activator, "Scaling MLPs: A Tale of Inductive Bias"
(Bachmann et al. 2023: plain deep MLPs gain a lot from data augmentation), "Scaling Laws in
Patchification" (smaller patches, i.e. more tokens, keep improving ViT and Mixer), plus ViT,
MLP-Mixer, KAN and KAT. See configs/mlp_bench.py for the claims and the measured numbers.

What one run is: a registry preset with the config's overrides (the parameter count is read
from the BUILT model's initialised variables, never from the config; every family must land
within `budget_tolerance` of `param_budget` or the run stops with a ValueError listing the
counts), trained with AdamW (the trainer's `make_optimizer`, warmup + cosine) on batches drawn
uniformly with replacement from its training subset (the first `fraction` of a seed-dependent
permutation of the 1437 training images; the 20% subset of a seed is inside its 100% set), then
scored on all 360 test images. The forward pass is the trainer's (`train=True` where the model
takes it, a `dropout` rng for stochastic depth, BatchNorm's `batch_stats` updated: Strip-MLP);
the loss is softmax cross-entropy against one-hot targets (MixUp's soft ones when augmenting).

All arms of one family (seeds x data fractions) are ONE compiled call: `jax.vmap` over the arms
of a `jax.lax.scan` over the steps (`vmap_arms=False` runs the same compiled single-arm scan in
a Python loop instead, for models that vmap badly on CPU).

Augmentation (`augment=True` families) is done on device, as the image pipeline's
`data.image.RandomCrop` (zero-pad by `crop_padding` pixels, crop back at a uniform offset; the
pixels are in [0, 1], so zero padding is black padding, as in the pipeline) plus MixUp with
Beta(`mixup_alpha`, `mixup_alpha`) weights (Scaling MLPs trains with crops, flips and MixUp;
the pipeline's left-right flip is left out here because digits are not mirror-symmetric).

Writes `bench.png` (test accuracy against parameters, one marker per family, filled = 100%,
open = 20% of the data, bars = seed range), `patch_sweep.png` (accuracy against patch size) and
`summary.json` (`table_markdown`, `rows`, `patch_sweep`, `orderings`, `seconds`).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import resource
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from experiments import runner
from experiments.plotting import pyplot
from jaxinterp.data import load_source
from jaxinterp.models import registry
from jaxinterp.train import step as step_lib
from jaxinterp.train.optimizer import make_optimizer

NUM_CLASSES = 10


# --------------------------------------------------------------------------- the registry side

def image_presets() -> list[str]:
    """Every registry preset that takes images [batch, H, W, C]: those whose config has an
    `image_size` field (the patch and image classifiers) and the KANs (`widths` configs, whose
    `KAN.__call__` flattens an image to `widths[0]` values)."""
    out = []
    for name, preset in registry.PRESETS.items():
        fields = {f.name for f in dataclasses.fields(preset.config)}
        if "image_size" in fields or "widths" in fields:
            out.append(name)
    return out


def build_family(family: ConfigDict, image_size: int, channels: int, patch_size: int = 0):
    """The registry model of one bench family for `image_size` x `image_size` x `channels`
    images (and `patch_size`, when given, for the patch sweep)."""
    preset = family.preset
    fields = {f.name for f in dataclasses.fields(registry.PRESETS[preset].config)}
    data = dict(image_size=image_size, in_channels=channels, num_classes=NUM_CLASSES)
    overrides = {**{k: v for k, v in data.items() if k in fields}, **dict(family.model)}
    if patch_size:
        overrides["patch_size"] = patch_size
    if "widths" in fields:  # a KAN reads the flattened image
        widths = tuple(overrides.get("widths", registry.config(preset).widths))
        overrides["widths"] = (image_size * image_size * channels, *widths[1:-1], NUM_CLASSES)
    return registry.build(preset, **_tuples(overrides))


def count_params(model, image_size: int, channels: int) -> int:
    """Number of trainable parameters of the BUILT `model` (its initialised `params` tree,
    traced abstractly with `jax.eval_shape`)."""
    x = jnp.zeros((1, image_size, image_size, channels), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    return int(sum(np.prod(a.shape) for a in jax.tree.leaves(shapes["params"])))


def _tuples(x: Any) -> Any:
    """Lists (as ConfigDicts hold them) back to the tuples the frozen model configs expect."""
    if isinstance(x, dict):
        return {k: _tuples(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return tuple(_tuples(v) for v in x)
    return x


# --------------------------------------------------------------------------- data

def load_digits_arrays(data_dir: str, image_size: int, channels: int) -> dict[str, np.ndarray]:
    """The digits builder's splits as arrays: `train_x` float32 [1437, S, S, C] in [0, 1],
    `train_y` int32 [1437], `test_x` [360, S, S, C], `test_y` [360]."""
    out = {}
    for split in ("train", "test"):
        source = load_source("digits", split, data_dir, image_size=image_size,
                             channels=channels)
        rows = [source[i] for i in range(len(source))]
        out[f"{split}_x"] = np.stack([r["image"] for r in rows]).astype(np.float32) / 255.0
        out[f"{split}_y"] = np.asarray([r["label"] for r in rows], np.int32)
    return out


def subsets(num_train: int, seeds, fractions) -> tuple[np.ndarray, np.ndarray]:
    """Per arm (seed-major, fraction-minor): a permutation of the training indices int32
    [arms, num_train] whose first `sizes[arm]` entries are the arm's subset. One permutation
    per seed, so the 20% subset of a seed is the first fifth of its 100% set."""
    perms, sizes = [], []
    for seed in seeds:
        perm = np.random.default_rng(1000 + int(seed)).permutation(num_train)
        for fraction in fractions:
            if not 0 < fraction <= 1:
                raise ValueError(f"data fraction {fraction!r} must be in (0, 1]")
            perms.append(perm)
            sizes.append(max(1, round(fraction * num_train)))
    return np.stack(perms).astype(np.int32), np.asarray(sizes, np.int32)


def augment_batch(x: jax.Array, y: jax.Array, key: jax.Array, crop_padding: int,
                  mixup_alpha: float) -> tuple[jax.Array, jax.Array]:
    """Random crop after zero padding (as `data.image.RandomCrop`) and MixUp.

    Args:
      x: float32 [batch, H, W, C] in [0, 1]; y: int32 [batch].
      crop_padding: pixels of zero padding per side (0 = no crop).
      mixup_alpha: Beta(alpha, alpha) mixing weight (0 = no MixUp).

    Returns:
      (images [batch, H, W, C], soft targets float32 [batch, 10]).
    """
    crop_key, perm_key, lam_key = jax.random.split(key, 3)
    targets = jax.nn.one_hot(y, NUM_CLASSES)
    if crop_padding:
        p = crop_padding
        h, w = x.shape[1:3]
        padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        offsets = jax.random.randint(crop_key, (x.shape[0], 2), 0, 2 * p + 1)
        x = jax.vmap(lambda img, o: jax.lax.dynamic_slice(
            img, (o[0], o[1], 0), (h, w, img.shape[-1])))(padded, offsets)
    if mixup_alpha:
        lam = jax.random.beta(lam_key, mixup_alpha, mixup_alpha)
        perm = jax.random.permutation(perm_key, x.shape[0])
        x = lam * x + (1 - lam) * x[perm]
        targets = lam * targets + (1 - lam) * targets[perm]
    return x, targets


# --------------------------------------------------------------------------- training

def _soft_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean cross-entropy of logits [batch, 10] against soft targets [batch, 10]."""
    return -(targets * jax.nn.log_softmax(logits.astype(jnp.float32))).sum(-1).mean()


def train_arms(model, data: dict[str, np.ndarray], perms: np.ndarray, sizes: np.ndarray,
               seeds, config: ConfigDict, *, augment: bool = False) -> dict[str, np.ndarray]:
    """Trains one model per arm and scores each on the whole test split.

    Args:
      model: a registry image model.
      data: `load_digits_arrays`'s dict.
      perms, sizes: `subsets(...)`: arm a trains on `train[perms[a, :sizes[a]]]`.
      seeds: one int per arm (initialisation, batch order and augmentation).
      config: the bench config (`steps`, `batch_size`, `optimizer`, `augmentation`,
        `vmap_arms`).
      augment: crop + MixUp as `config.augmentation` says.

    Returns:
      `test_accuracy` float [arms], `train_loss` float [arms] (mean over the last 10% of
      steps), `step_seconds` (wall time per step of all arms, compile excluded).
    """
    optimizer = make_optimizer(config.optimizer, config.steps)
    train_x, train_y = jnp.asarray(data["train_x"]), jnp.asarray(data["train_y"])
    example = train_x[:1]
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), example))
    mutable = [c for c in ("batch_stats",) if c in abstract]
    aug = config.augmentation
    batch_size, steps = config.batch_size, config.steps
    tail = max(1, steps // 10)

    def init(seed):
        variables = dict(model.init(jax.random.fold_in(jax.random.key(seed), 0), example))
        params = variables.pop("params")
        return params, optimizer.init(params), dict(variables)

    def run(params, opt_state, model_state, seed, perm, size):
        data_key = jax.random.fold_in(jax.random.key(seed), 1)

        def loss(params, model_state, x, y, key):
            aug_key, dropout_key = jax.random.split(key)
            if augment:
                x, targets = augment_batch(x, y, aug_key, aug.crop_padding, aug.mixup_alpha)
            else:
                targets = jax.nn.one_hot(y, NUM_CLASSES)
            # As the trainer's step: train=True where the model takes it, the dropout rng,
            # the mutable collections (BatchNorm statistics) updated.
            logits, new = model.apply({"params": params, **model_state}, x,
                                      rngs={"dropout": dropout_key}, mutable=mutable,
                                      **step_lib.mode_kwargs(model, True))
            return _soft_loss(logits, targets), {**model_state, **dict(new)}

        def body(carry, i):
            params, opt_state, model_state = carry
            key = jax.random.fold_in(data_key, i)
            pick_key, step_key = jax.random.split(key)
            pos = jax.random.randint(pick_key, (batch_size,), 0, size)
            idx = perm[pos]
            (value, model_state), grads = jax.value_and_grad(loss, has_aux=True)(
                params, model_state, train_x[idx], train_y[idx], step_key)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = jax.tree.map(jnp.add, params, updates)
            return (params, opt_state, model_state), value

        (params, _, model_state), losses = jax.lax.scan(
            body, (params, opt_state, model_state), jnp.arange(steps))
        return params, model_state, losses[-tail:].mean()

    def evaluate(params, model_state):
        logits = model.apply({"params": params, **model_state}, jnp.asarray(data["test_x"]),
                             **step_lib.mode_kwargs(model, False))
        return (logits.argmax(-1) == jnp.asarray(data["test_y"])).mean()

    seeds = jnp.asarray(seeds, jnp.int32)
    perms, sizes = jnp.asarray(perms), jnp.asarray(sizes)
    # Initialisation is its own compiled call, with the former threefry implementation
    # (scoped to this call): XLA compiles the partitionable one's `init` of a model with many
    # variables slowly (Strip-MLP: 40-50 s against 14 s, configs/digits/strip_mlp.py). Eager
    # init is worse still (Strip-MLP: minutes, one tiny compile per op).
    with jax.threefry_partitionable(False):
        stacked = jax.jit(jax.vmap(init))(seeds)
    state = [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(len(seeds))]

    def all_arms(state, seed, perm, size):
        params, model_state, train_loss = run(*state, seed, perm, size)
        return evaluate(params, model_state), train_loss

    if config.vmap_arms:
        args = (stacked, seeds, perms, sizes)
        compiled = jax.jit(jax.vmap(all_arms)).lower(*args).compile()
        t0 = time.time()
        acc, train_loss = jax.device_get(compiled(*args))
        seconds = time.time() - t0
    else:  # the same compiled single-arm program, once per arm
        compiled = jax.jit(all_arms).lower(state[0], seeds[0], perms[0], sizes[0]).compile()
        t0 = time.time()
        outs = [jax.device_get(compiled(*a)) for a in zip(state, seeds, perms, sizes, strict=True)]
        seconds = time.time() - t0
        acc, train_loss = (np.asarray(v) for v in zip(*outs, strict=True))
    return {"test_accuracy": np.asarray(acc, np.float64),
            "train_loss": np.asarray(train_loss, np.float64),
            "step_seconds": seconds / steps}


# --------------------------------------------------------------------------- the experiment

def check_budget(counts: dict[str, int], budget: int, tolerance: float) -> None:
    """ValueError unless every family's parameter count is within `tolerance` of `budget`."""
    off = {k: v for k, v in counts.items() if abs(v - budget) > tolerance * budget}
    if off:
        raise ValueError(f"families outside {budget:,} +- {tolerance:.0%} parameters: {off}; "
                         f"change their overrides in the config (all counts: {counts})")


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """The bench table, the patch sweep, the figures and the summary (module docstring)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    size, channels = config.image_size, config.channels
    data = load_digits_arrays(config.data_dir or os.path.join(workdir, "data"), size, channels)
    seeds, fractions = tuple(config.seeds), tuple(config.data_fractions)
    perms, sizes = subsets(len(data["train_y"]), seeds, fractions)
    arm_seeds = [s for s in seeds for _ in fractions]

    models = {name: build_family(fam, size, channels) for name, fam in config.families.items()}
    counts = {name: count_params(m, size, channels) for name, m in models.items()}
    check_budget(counts, config.param_budget, config.budget_tolerance)

    rows = []
    for name, fam in config.families.items():
        t = time.time()
        out = train_arms(models[name], data, perms, sizes, arm_seeds, config,
                         augment=bool(fam.get("augment", False)))
        acc = out["test_accuracy"].reshape(len(seeds), len(fractions))
        loss = out["train_loss"].reshape(len(seeds), len(fractions))
        for j, fraction in enumerate(fractions):
            rows.append(dict(family=name, preset=fam.preset, covers=list(fam.covers),
                             augment=bool(fam.get("augment", False)), params=counts[name],
                             fraction=fraction, num_train=int(sizes[j]),
                             test_accuracy=acc[:, j].tolist(),
                             mean=float(acc[:, j].mean()), std=float(acc[:, j].std()),
                             train_loss=float(loss[:, j].mean()),
                             seconds=round(time.time() - t, 1)))
        print(f"{name:12s} {counts[name]:>7,} params  "
              + "  ".join(f"{f:.0%}: {acc[:, j].mean():.3f}" for j, f in enumerate(fractions))
              + f"  ({time.time() - t:.0f} s, {out['step_seconds'] * 1e3:.0f} ms/step)",
              flush=True)

    sweep = []
    if fractions[0] != 1.0 and config.patch_sweep.families:
        raise ValueError(f"the patch sweep uses the first data fraction's arms, which must be "
                         f"1.0; data_fractions={fractions}")
    full = perms[::len(fractions)], sizes[::len(fractions)]  # 100%-data arms, one per seed
    for name in config.patch_sweep.families:
        for patch in config.patch_sweep.patch_sizes:
            fam = config.families[name]
            model = build_family(fam, size, channels, patch_size=patch)
            if patch == fam.model.get("patch_size"):  # the bench's own run, 100% data
                acc = next(r for r in rows if r["family"] == name
                           and r["fraction"] == fractions[0])["test_accuracy"]
            else:
                acc = train_arms(model, data, *full, list(seeds), config)["test_accuracy"]
            sweep.append(dict(family=name, patch_size=patch, tokens=(size // patch) ** 2,
                              params=count_params(model, size, channels),
                              test_accuracy=list(acc), mean=float(np.mean(acc))))
            print(f"patch sweep {name} patch {patch}: {sweep[-1]['mean']:.3f}", flush=True)

    summary = {
        "image_size": size, "channels": channels, "param_budget": config.param_budget,
        "budget_tolerance": config.budget_tolerance,
        "param_range": [min(counts.values()), max(counts.values())],
        "steps": config.steps, "batch_size": config.batch_size, "seeds": list(seeds),
        "data_fractions": list(fractions), "rows": rows, "patch_sweep": sweep,
        "orderings": orderings(rows, sweep),
    }
    summary["table_markdown"] = table_markdown(rows, fractions)
    summary["seconds"] = round(time.time() - t0, 1)
    usage = resource.getrusage(resource.RUSAGE_SELF)  # this process's CPU time, all threads
    summary["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 1)
    print(summary["table_markdown"])
    figures = {"bench.png": lambda path: plot_bench(rows, fractions, path)}
    if sweep:
        figures["patch_sweep.png"] = lambda path: plot_patch_sweep(sweep, path)
    return runner.write_outputs(workdir, summary, figures)


def table_markdown(rows: list[dict], fractions) -> str:
    """One line per family: parameters and mean +- std test accuracy per data fraction."""
    by_family: dict[str, dict] = {}
    for r in rows:
        by_family.setdefault(r["family"], {"params": r["params"], "preset": r["preset"]})
        by_family[r["family"]][r["fraction"]] = r
    head = "| family | preset | params | " + " | ".join(
        f"test acc, {f:.0%} data" for f in fractions) + " |"
    lines = [head, "|" + "---|" * (3 + len(fractions))]
    order = sorted(by_family, key=lambda k: -by_family[k][fractions[0]]["mean"])
    for name in order:
        v = by_family[name]
        cells = [f"{v[f]['mean']:.3f} +- {v[f]['std']:.3f}" for f in fractions]
        lines.append(f"| {name} | {v['preset']} | {v['params']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def orderings(rows: list[dict], sweep: list[dict]) -> dict[str, Any]:
    """The papers' orderings as measured: per data fraction the families ranked by mean test
    accuracy; the deep MLP's gain from augmentation; per swept family whether accuracy rises
    as patches shrink."""
    out: dict[str, Any] = {}
    for fraction in sorted({r["fraction"] for r in rows}, reverse=True):
        ranked = sorted((r for r in rows if r["fraction"] == fraction), key=lambda r: -r["mean"])
        out[f"ranking_{fraction:g}"] = [r["family"] for r in ranked]
    plain = {(r["preset"], r["fraction"]): r for r in rows if not r["augment"]}
    for r in rows:
        if r["augment"] and (r["preset"], r["fraction"]) in plain:
            base = plain[(r["preset"], r["fraction"])]
            out[f"augment_gain_{base['family']}_{r['fraction']:g}"] = r["mean"] - base["mean"]
    for name in sorted({s["family"] for s in sweep}):
        pts = sorted((s for s in sweep if s["family"] == name), key=lambda s: -s["patch_size"])
        means = [s["mean"] for s in pts]
        out[f"patch_sweep_{name}"] = {f"patch_{s['patch_size']}": s["mean"] for s in pts}
        rising = all(b >= a for a, b in itertools.pairwise(means))
        out[f"patch_sweep_{name}_monotone"] = bool(rising)
    return out


def plot_bench(rows: list[dict], fractions, path: str) -> None:
    """Test accuracy against parameters: one colour per family, filled markers for the first
    data fraction, open for the others; error bars = min/max over seeds."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    families = list(dict.fromkeys(r["family"] for r in rows))
    cmap = plt.get_cmap("tab20")
    for i, name in enumerate(families):
        for r in (r for r in rows if r["family"] == name):
            acc = np.asarray(r["test_accuracy"])
            filled = r["fraction"] == fractions[0]
            ax.errorbar(r["params"], r["mean"],
                        yerr=[[r["mean"] - acc.min()], [acc.max() - r["mean"]]],
                        fmt="o" if filled else "s", color=cmap(i % 20),
                        mfc=cmap(i % 20) if filled else "white", capsize=2,
                        label=name if filled else None)
    ax.set(xlabel="parameters (built model)", ylabel="test accuracy (360 digits)",
           title="digits: filled = 100% of the training data, open squares = "
                 f"{', '.join(f'{f:.0%}' for f in fractions[1:])}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_patch_sweep(sweep: list[dict], path: str) -> None:
    """Test accuracy against patch size (largest first: accuracy as patches shrink)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name in dict.fromkeys(s["family"] for s in sweep):
        pts = sorted((s for s in sweep if s["family"] == name), key=lambda s: -s["patch_size"])
        x = [s["patch_size"] for s in pts]
        ax.plot(x, [s["mean"] for s in pts], "o-", label=name)
        for s in pts:
            ax.scatter([s["patch_size"]] * len(s["test_accuracy"]), s["test_accuracy"],
                       s=8, color="gray")
    ax.set(xscale="log", xlabel="patch size (pixels; smaller = more tokens)",
           ylabel="test accuracy", title="patch-size sweep (100% data)")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "mlp_bench")
