"""LoFiT vs LoRA vs full fine-tuning: accuracy against trained-parameter count when a small
trained model is adapted to a shifted task.

    python -m experiments.lofit_vs_lora --config=configs/lofit_vs_lora.py \
        --workdir=workdirs/lofit_vs_lora

Paper: Yin, Ye and Durrett 2024, "LoFiT: Localized Fine-tuning on LLM Representations": LoFiT
"achieves comparable performance to other parameter-efficient fine-tuning methods such as LoRA,
despite modifying 20x-200x fewer parameters than these methods". Methods:
`jaxinterp.tuning.lofit` (stage 1 `lofit_scale`: per-head scalings on hook_z with an L1 term,
the top-k heads by ||A||_2; stage 2 `lofit_bias`: per-head offsets on those heads) and
`jaxinterp.tuning.lora` (`lora`: W + (alpha / r) A B on the attention kernels; `full`: a
delta on every parameter).

Task (training is part of the experiment): the `induction` data (BOS, a random segment
repeated at random positions among filler, `skip_prob` of the tokens following a skip-bigram
rule `x_t = perm[x_{t-2}]`). The base model (a 2-layer attention-only transformer) is trained
with `jaxinterp.train.train` on the data of `base_data_seed`, and then adapted to the data of
`new_data_seed`: the same kind of sequences with a different skip-bigram permutation (a
remapped-token variant: copying still works, the skip-bigram map is new). Every adaptation is
a `jaxinterp.train.train` run with `config.tuning.base` = the base's workdir and
`config.tuning.method` = the method; the trainer's step-0 eval gives the base's accuracy on the
new task. Metric: next-token accuracy on the new task's test split (every position; the random
tokens cap it well below 1). Each method and size is trained at every learning rate of `lrs`
for the same `num_steps`; the learning rate with the lowest final train loss (mean of the last
10% of steps) is the one reported (no selection on the test split). Trained-parameter count:
the size of the method's trained tree (LoFiT: the stage-2 biases, k * d_head; its stage-1
scalings, which only choose the heads, are listed separately).

Writes `accuracy_vs_params.png` and `summary.json`. Measured numbers: `configs/lofit_vs_lora.py`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

from experiments import runner
from experiments.plotting import pyplot
from jaxinterp import tuning
from jaxinterp.train import load, train
from jaxinterp.train.config import base_config


def train_config(config: ConfigDict, data_seed: int, steps: int, lr: float) -> ConfigDict:
    """The trainer config of one run: the induction data of `data_seed`, `steps` AdamW steps
    at a constant `lr` (after `warmup_steps`), one eval at the start and one at the end."""
    c = base_config(num_train_steps=steps, batch_size=config.batch_size, seed=config.seed,
                    log_every_steps=max(steps, 1), eval_every_steps=steps,
                    checkpoint_every_steps=steps, eval_batches=0, keep_checkpoints=1)
    c.model = ConfigDict({"preset": "attn_only_2l", **dict(config.model)})
    c.data.name = "induction"
    c.data.builder_kwargs = ConfigDict({**dict(config.data), "seed": int(data_seed)})
    c.data.data_dir = config.data_dir
    c.optimizer.learning_rate = float(lr)
    c.optimizer.schedule = "constant"
    c.optimizer.warmup_steps = min(config.warmup_steps, steps // 2)
    c.optimizer.weight_decay = config.weight_decay
    return c


def read_metrics(workdir: str) -> dict[str, Any]:
    """From the run's `metrics.jsonl`: eval accuracy / loss at the first and last eval, and the
    mean train loss over the last 10% of steps."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    evals = [r for r in rows if "eval/accuracy" in r]
    train_loss = [r["train/loss"] for r in rows if "train/loss" in r]
    tail = max(1, len(train_loss) // 10)
    return {"start_accuracy": evals[0]["eval/accuracy"], "start_loss": evals[0]["eval/loss"],
            "accuracy": evals[-1]["eval/accuracy"], "loss": evals[-1]["eval/loss"],
            "final_train_loss": float(np.mean(train_loss[-tail:])),
            "penalty": evals[-1].get("eval/penalty")}


def n_params(params: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def adapt(config: ConfigDict, base_dir: str, method: dict, workdir: str, lr: float,
          steps: int) -> dict[str, Any]:
    """One adaptation run through the trainer; its metrics and trained-parameter count."""
    c = train_config(config, config.new_data_seed, steps, lr)
    c.tuning.base = base_dir
    c.tuning.method = ConfigDict(method)
    result = train(c, workdir)
    return {"lr": float(lr), "params": n_params(result.state.params), **read_metrics(workdir)}


def best_lr(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the lowest final train loss (ties: the first)."""
    return min(runs, key=lambda r: r["final_train_loss"])


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Base training, LoFiT's two stages, LoRA at each rank and full fine-tuning, each at each
    learning rate; the figure and the summary (module docstring)."""
    t0 = time.time()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    if not config.data_dir:
        config = ConfigDict(config.to_dict())
        config.data_dir = os.path.join(workdir, "data")
    if config.base_data_seed == config.new_data_seed:
        raise ValueError(f"new_data_seed={config.new_data_seed} equals base_data_seed: the new "
                         "task must differ from the base's (another skip-bigram permutation)")
    n_heads = config.model.n_layers * config.model.n_heads
    bad = [k for k in config.lofit_ks if not 1 <= k <= n_heads]
    if bad:
        raise ValueError(f"lofit_ks {bad}: each must be in 1..{n_heads} (the model's heads)")

    base_dir = os.path.join(workdir, "base")
    train(train_config(config, config.base_data_seed, config.base_steps, config.base_lr),
          base_dir)
    base = read_metrics(base_dir)

    arms: dict[str, dict[str, Any]] = {}

    def sweep(name: str, method: dict) -> None:
        runs = [adapt(config, base_dir, method, os.path.join(workdir, f"{name}_lr{lr:g}"), lr,
                      config.num_steps) for lr in config.lrs]
        arms[name] = {"method": method, "runs": runs, "best": best_lr(runs)}

    # LoFiT stage 1 (head selection), once, at its own learning rate.
    scale_dir = os.path.join(workdir, "lofit_scale")
    scale = adapt(config, base_dir, {"name": "lofit_scale", "l1": config.lofit_l1}, scale_dir,
                  config.lofit_scale_lr, config.num_steps)
    scale_params = load(scale_dir)[1]["params"]
    norms = tuning.lofit.head_norms(scale_params)
    for k in config.lofit_ks:
        heads = tuning.select_heads(scale_params, k)
        sweep(f"lofit_k{k}", {"name": "lofit_bias", "heads": [list(h) for h in heads]})
    for r in config.lora_ranks:
        sweep(f"lora_r{r}", {"name": "lora", "rank": r, "targets": list(config.lora_targets),
                             "alpha": float(r) * config.lora_alpha_per_rank})
    if config.full:
        sweep("full", {"name": "full"})

    before = next(iter(arms.values()))["best"]["start_accuracy"] if arms else None
    table = {name: {"params": a["best"]["params"], "accuracy": a["best"]["accuracy"],
                    "loss": a["best"]["loss"], "lr": a["best"]["lr"]} for name, a in arms.items()}
    lofit = [v for k, v in table.items() if k.startswith("lofit")]
    lora = [v for k, v in table.items() if k.startswith("lora")]
    summary = {
        "base_on_own_task": {"accuracy": base["accuracy"], "loss": base["loss"]},
        "base_on_new_task": {"accuracy": before,
                             "loss": next(iter(arms.values()))["best"]["start_loss"]
                             if arms else None},
        "lofit_scale": {"accuracy": scale["accuracy"], "params": scale["params"],
                        "loss": scale["loss"], "penalty": scale["penalty"],
                        "head_norms": {str(k): v.tolist() for k, v in norms.items()}},
        "table": table,
        "best_lofit": max(lofit, key=lambda v: v["accuracy"]) if lofit else None,
        "best_lora": max(lora, key=lambda v: v["accuracy"]) if lora else None,
        "arms": arms,
        "runtime_s": round(time.time() - t0, 1),
    }
    if lofit and lora:
        bl, br = summary["best_lofit"], summary["best_lora"]
        summary["lofit_over_lora_accuracy"] = bl["accuracy"] - br["accuracy"]
        summary["lora_over_lofit_params"] = br["params"] / bl["params"]
    return runner.write_outputs(workdir, summary, {
        "accuracy_vs_params.png": lambda path: plot_accuracy(summary, path)})


def plot_accuracy(summary: dict[str, Any], path: str) -> None:
    """Accuracy on the new task against trained parameters (log x), one line per method family,
    LoFiT's stage-1 scalings alone (open square), the base's accuracy on the new task (dashed)
    and on its own task (dotted)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for family, color in (("lofit", "C0"), ("lora", "C1"), ("full", "C2")):
        pts = sorted((v["params"], v["accuracy"], k) for k, v in summary["table"].items()
                     if k.startswith(family))
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color,
                label=family)
        for x, y, name in pts:
            ax.annotate(name.split("_")[-1] if family != "full" else "full", (x, y),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
    scale = summary["lofit_scale"]
    ax.plot([scale["params"]], [scale["accuracy"]], marker="s", mfc="none", color="C0", ls="",
            label="lofit stage 1 (scalings A only)")
    if summary["base_on_new_task"]["accuracy"] is not None:
        ax.axhline(summary["base_on_new_task"]["accuracy"], color="gray", ls="--",
                   label="base, no tuning")
    ax.axhline(summary["base_on_own_task"]["accuracy"], color="gray", ls=":",
               label="base on its own task")
    ax.set(xscale="log", xlabel="trained parameters", ylabel="accuracy on the new task",
           title="adapting to a new skip-bigram map")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "lofit_vs_lora", omit=("arms",))
