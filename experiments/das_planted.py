"""DAS on a task with a planted causal variable: where does the learned subspace reach high
interchange-intervention accuracy (IIA), and where only chance?

    python -m experiments.das_planted --config=configs/das_planted.py \
        --workdir=workdirs/das_planted

Papers: Geiger et al. 2023, "Finding Alignments Between Interpretable Causal Variables and
Distributed Neural Representations" (DAS); Wu et al. 2023, "Interpretability at Scale:
Identifying Causal Mechanisms in Alpaca" (Boundless DAS). Methods: `jaxinterp.tuning.DAS`,
`BoundlessDAS` (equations and what was checked against pyvene: their module docstring).

The task (`jaxinterp/data/planted_sum.py`): `[a, b, c] -> y = (a + b) * c`, the planted
variable `s = a + b`; each example carries a source input and the counterfactual label
`s' * c` (the base's answer with s taken from the source). A 2-layer transformer is trained
on `tokens -> target` with `jaxinterp.train.train` (next-token loss on the answer only), then
DAS is trained, also with `jaxinterp.train.train` (`config.tuning`, the `interchange` task),
at each (site, position) of `config.sites`: the residual stream at the last position before
layer 0 (only c is there: the inputs are not yet combined), after layer 0's attention, after
its MLP, and through layer 1, and at b's position after layer 0. IIA is measured on held-out
pairs (`interchange_accuracy`) against two references: the null intervention (the base's
own answer scored against the counterfactual label: right only when s' = s) and a random
rotation (DAS untrained). Boundless DAS is trained at the site where DAS scored best; its
learned boundary (the subspace size, `boundary_size`) and IIA are reported.

Writes `iia.png` (IIA per site, DAS and the references, Boundless DAS at its site) and
`summary.json`. Measured numbers: `configs/das_planted.py`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

import jaxinterp as ji
from experiments import runner
from experiments.plotting import pyplot
from jaxinterp import tuning
from jaxinterp.data import load_source
from jaxinterp.data.planted_sum import PlantedSumConfig
from jaxinterp.train.config import base_config


def _common(config: ConfigDict, data_dir: str, steps: int, seed: int) -> ConfigDict:
    c = base_config(seed=seed, num_train_steps=steps, batch_size=config.batch_size,
                    log_every_steps=max(steps // 4, 1), eval_every_steps=steps,
                    checkpoint_every_steps=steps, eval_batches=2)
    c.data.name = "planted_sum"
    c.data.data_dir = data_dir
    c.data.builder_kwargs = ConfigDict(dict(config.data))
    c.optimizer.weight_decay = 0.0
    c.optimizer.warmup_steps = config.warmup_steps
    return c


def base_train_config(config: ConfigDict, data_dir: str, seed: int) -> ConfigDict:
    """The base model's run: `tokens -> target`, the answer's next-token loss only."""
    c = _common(config, data_dir, config.base_steps, seed)
    vocab = PlantedSumConfig(name="x", num_values=config.data.num_values).vocab_size
    c.model = ConfigDict({"preset": "gpt2_small", **dict(config.model), "d_vocab": vocab,
                          "n_ctx": 3})
    c.task = ConfigDict(dict(name="next_token", feature="tokens", answer_feature="target"))
    c.optimizer.learning_rate = config.base_learning_rate
    return c


def das_train_config(config: ConfigDict, data_dir: str, base: str, method: dict,
                     seed: int) -> ConfigDict:
    """A DAS run on the frozen `base`: `(tokens, source_tokens) -> counterfactual`."""
    c = _common(config, data_dir, config.das_steps, seed)
    c.tuning.base = base
    c.tuning.method = ConfigDict(method)
    c.task = ConfigDict(dict(name="interchange", base_feature="tokens",
                             source_feature="source_tokens", label_feature="counterfactual"))
    c.optimizer.learning_rate = config.das_learning_rate
    return c


def _site_label(site: str, position: int) -> str:
    short = site.replace("blocks.", "L").replace(".hook_resid_", " ")
    return f"{short} @{'abc'[position]}"


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    """Base training, DAS per site, Boundless DAS at the best one (module docstring)."""
    t0 = time.time()
    os.makedirs(workdir, exist_ok=True)
    data_dir = config.data_dir or os.path.join(workdir, "data")
    sites = [(str(s), int(p)) for s, p in config.sites]
    if not sites:
        raise ValueError("config.sites is empty: name (site, position) pairs to test")
    test = load_source("planted_sum", "test", data_dir, **dict(config.data))
    ex = {k: np.stack([test[i][k] for i in range(len(test))]) for k in test[0]}
    pairs = (ex["tokens"], ex["source_tokens"], ex["counterfactual"])
    null_iia = float(np.mean(ex["target"] == ex["counterfactual"]))

    per_seed = []
    for seed in [int(s) for s in config.seeds]:
        base_dir = os.path.join(workdir, f"seed{seed}", "base")
        ji.train.train(base_train_config(config, data_dir, seed), base_dir)
        model, variables = ji.train.load(base_dir)
        base_acc = float(np.mean(np.asarray(model.apply(variables, ex["tokens"]))[:, -1]
                                 .argmax(-1) == ex["target"]))
        das, random_rotation = [], []
        for k, (site, pos) in enumerate(sites):
            method = {"name": "das", "site": site, "subspace_dim": config.subspace_dim,
                      "positions": (pos,)}
            run_dir = os.path.join(workdir, f"seed{seed}", f"das{k}")
            ji.train.train(das_train_config(config, data_dir, base_dir, method, seed), run_dir)
            tuned, tv = ji.train.load(run_dir)
            das.append(tuning.interchange_accuracy(tuned, tv, *pairs))
            random_rotation.append(_random_rotation_iia(tuned, tv, pairs, seed))
        best = int(np.argmax(das))
        boundless = None
        if config.boundless:
            boundless = _boundless(config, data_dir, base_dir, sites[best], seed, pairs,
                                   os.path.join(workdir, f"seed{seed}", "boundless"))
        per_seed.append({
            "seed": seed, "base_accuracy": base_acc,
            "das_iia": dict(zip([_site_label(s, p) for s, p in sites], das, strict=True)),
            "random_rotation_iia": dict(zip([_site_label(s, p) for s, p in sites],
                                            random_rotation, strict=True)),
            "best_site": _site_label(*sites[best]),
            "boundless": boundless,
        })
    labels = [_site_label(s, p) for s, p in sites]
    summary = {"sites": labels, "null_iia": null_iia, "seeds": [int(s) for s in config.seeds],
               "subspace_dim": config.subspace_dim, "per_seed": per_seed,
               "mean_das_iia": {lab: float(np.mean([s["das_iia"][lab] for s in per_seed]))
                                for lab in labels},
               "runtime_s": round(time.time() - t0, 1)}
    return runner.write_outputs(workdir, summary,
                                {"iia.png": lambda path: plot_iia(summary, path)})


def _boundless(config, data_dir, base_dir, site_pos, seed, pairs, run_dir) -> dict:
    """Boundless DAS at one (site, position): its IIA and learned boundary size."""
    site, pos = site_pos
    method = {"name": "boundless_das", "site": site, "positions": (pos,),
              "temperature_start": config.temperature_start,
              "temperature_end": config.temperature_end, "anneal_steps": config.das_steps}
    ji.train.train(das_train_config(config, data_dir, base_dir, method, seed), run_dir)
    tuned, tv = ji.train.load(run_dir)
    width = tv["params"]["method"]["rotation"].shape[-1]
    return {"site": _site_label(site, pos), "iia": tuning.interchange_accuracy(tuned, tv, *pairs),
            "boundary_size": tuning.das.boundary_size(tv["params"]["method"]["boundary"], width),
            "width": int(width)}


def _random_rotation_iia(tuned, trained_variables, pairs, seed: int) -> float:
    """IIA of the same intervention with a random (untrained, orthogonally initialised)
    rotation: what the subspace's size alone gives."""
    fresh = tuned.init(jax.random.key(seed + 1000), pairs[0][:2], pairs[1][:2])
    variables = {**trained_variables, "params": fresh["params"]}
    return tuning.interchange_accuracy(tuned, variables, *pairs)


def plot_iia(summary: dict, path: str) -> None:
    """IIA per site: DAS (one dot per seed, bar = mean), the random rotation, the null
    intervention; Boundless DAS at its site."""
    plt = pyplot()
    labels = summary["sites"]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(1.3 * len(labels) + 2, 3.8))
    ax.bar(x, [summary["mean_das_iia"][lab] for lab in labels], color="C0", alpha=0.6,
           label=f"DAS (k={summary['subspace_dim']}), mean of seeds")
    for s in summary["per_seed"]:
        ax.plot(x, [s["das_iia"][lab] for lab in labels], "o", color="C0", ms=4)
        ax.plot(x, [s["random_rotation_iia"][lab] for lab in labels], "x", color="C7", ms=5)
        if s["boundless"]:
            b = s["boundless"]
            ax.plot(labels.index(b["site"]), b["iia"], "*", color="C3", ms=11)
    ax.plot([], [], "x", color="C7", label="random rotation (untrained)")
    ax.plot([], [], "*", color="C3", label="Boundless DAS at the best site")
    ax.axhline(summary["null_iia"], color="k", ls="--", lw=0.8,
               label="null intervention (chance)")
    ax.set(xticks=x, ylim=(0, 1.02), ylabel="interchange accuracy (held-out pairs)",
           title="DAS for s = a + b in y = (a + b) * c: IIA per site")
    ax.set_xticklabels(labels, fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    runner.main(run_experiment, "das_planted")
