"""Transcoders vs SAEs: the sparsity-faithfulness frontier, and weights-based circuit analysis.

    python -m experiments.transcoders_vs_saes --config=configs/transcoders_vs_saes.py \\
        --workdir=workdirs/transcoders_vs_saes

See configs/transcoders_vs_saes.py for the claim, the settings and the measured numbers. From a
notebook: `summary = run_experiment(config, workdir)`.

Method. One LM (`config.lm`, trained by `jaxinterp.train.train`). Two dictionary sweeps
(`jaxinterp.sae.sweep.sweep`), each fed by one activation stream of the same token batches:
SAEs on `blocks.{l}.hook_mlp_out`, and transcoders `blocks.{l}.ln2.hook_normalized ->
blocks.{l}.hook_mlp_out`, TopK at every (layer, width, k) of the config. Held-out metrics
(`jaxinterp.sae.metrics`): L0, explained variance of `hook_mlp_out`, and loss recovered, where
the SAE's run replaces `hook_mlp_out` by its reconstruction and the transcoder's run replaces it
by the transcoder's prediction from the clean MLP input (the MLP replaced); both against
zero-ablating `hook_mlp_out`.

Circuit analysis (`jaxinterp.circuits.weights`) on the transcoders of `circuit.src_layer` and
`circuit.dst_layer` at (`circuit.d_sae`, `circuit.k`): for the target feature j of the later
layer (`circuit.feature`, or -1: the one active on the most held-out tokens), the
input-invariant connection from each earlier feature i is `W_dec0[i] . centre(w_ln2 * W_enc1[:,
j])` (the LayerNorm's weight and centring folded in, its scale ignored, as in the paper), and
the input-dependent attribution at a token is `a_i(x) times that`, averaged over the held-out
tokens where j fires. Reported: the top input-invariant sources, and how well the connections
predict the mean attributions (Spearman / Pearson over the sources active on those tokens,
top-k overlap), beside the same agreement for the sources' mean activations alone.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from experiments import runner
from experiments.plotting import pyplot
from jaxinterp import data as data_lib
from jaxinterp.circuits import weights as cw
from jaxinterp.models.transformer import unrolled_params
from jaxinterp.run import run
from jaxinterp.sae.model import SAE, SAEConfig
from jaxinterp.sae.sweep import grid, sweep
from jaxinterp.sae.train import TrainConfig

KINDS = ("sae", "transcoder")


def check_config(config: ConfigDict) -> None:
    """Raises ValueError for settings the experiment cannot run, before anything compiles."""
    n_layers = config.lm.model.n_layers
    for name in ("layers", "widths", "ks", "seeds"):
        values = list(config[name])
        if not values or any(not isinstance(v, int) or v < 0 for v in values):
            raise ValueError(f"config.{name}={values!r} must be a non-empty list of ints >= 0")
    if bad := [v for v in config.layers if v >= n_layers]:
        raise ValueError(f"config.layers has {bad}; the model has layers 0..{n_layers - 1}")
    if bad := [k for k in config.ks if not 0 < k <= min(config.widths)]:
        raise ValueError(f"config.ks has {bad}; each k must be in [1, min(widths)="
                         f"{min(config.widths)}]")
    c = config.circuit
    if not c.src_layer < c.dst_layer or {c.src_layer, c.dst_layer} - set(config.layers):
        raise ValueError(f"circuit.src_layer={c.src_layer} must be < circuit.dst_layer="
                         f"{c.dst_layer}, both in config.layers={list(config.layers)}")
    if c.d_sae not in config.widths or c.k not in config.ks:
        raise ValueError(f"circuit.d_sae={c.d_sae} must be in widths {list(config.widths)} and "
                         f"circuit.k={c.k} in ks {list(config.ks)}")
    if not -1 <= c.feature < c.d_sae:
        raise ValueError(f"circuit.feature={c.feature} must be -1 (automatic) or in "
                         f"[0, {c.d_sae})")
    if not 0 < c.top_k <= c.d_sae:
        raise ValueError(f"circuit.top_k={c.top_k} must be in [1, circuit.d_sae={c.d_sae}]")


def dictionary_grid(config: ConfigDict, kind: str, d_model: int
                    ) -> tuple[list[SAEConfig], list[TrainConfig]]:
    """Every (layer, width, k, seed) of `kind` ("sae" or "transcoder"), layer slowest; the
    seeds of one (layer, width, k) train in one vmapped group."""
    tc = TrainConfig(**dict(config.train))
    configs, trains = [], []
    for layer in config.layers:
        out = f"blocks.{layer}.hook_mlp_out"
        base = (SAEConfig("topk", d_in=d_model, site=out) if kind == "sae" else
                SAEConfig("topk", d_in=d_model, transcoder=True, out_site=out,
                          site=f"blocks.{layer}.ln2.hook_normalized"))
        c, t = grid(base, tc, d_sae=list(config.widths), k=list(config.ks),
                    seed=list(config.seeds))
        configs += c
        trains += t
    return configs, trains


def _layer(c: SAEConfig) -> int:
    return int((c.out_site if c.transcoder else c.site).split(".")[1])


def frontier_rows(result, kind: str) -> list[dict[str, Any]]:
    """One row per dictionary of a `SweepResult`: kind, layer, d_sae, k, seed and its
    held-out metrics."""
    return [{"kind": kind, "layer": _layer(c), "d_sae": c.d_sae, "k": c.k, "seed": t.seed, **m}
            for c, t, m in zip(result.configs, result.train_configs, result.metrics,
                               strict=True)]


def circuit_analysis(config: ConfigDict, model, variables, tokens: np.ndarray,
                     tc_params: dict[int, dict], tc_configs: dict[int, SAEConfig]
                     ) -> dict[str, Any]:
    """The weights-based analysis of one feature pair of layers (see the module docstring)."""
    c = config.circuit
    src, dst = c.src_layer, c.dst_layer
    x_src, x_dst = (f"blocks.{layer}.ln2.hook_normalized" for layer in (src, dst))
    scale_site = f"blocks.{dst}.ln2.hook_scale"
    _, cache = jax.jit(lambda v, t: run(model, v, t, capture=[x_src, x_dst, scale_site]))(
        variables, jnp.asarray(tokens))
    d = model.config.d_model

    def acts(layer, x):
        out = SAE(tc_configs[layer]).apply({"params": tc_params[layer]}, x.reshape(-1, d))
        return np.asarray(out.acts, np.float64)

    a_src, a_dst = acts(src, cache[x_src]), acts(dst, cache[x_dst])  # [tokens, d_sae]
    scale = np.asarray(cache[scale_site], np.float64).reshape(-1)  # 1 / sigma per token
    fired = (a_dst > 0).sum(0)
    j = int(np.argmax(fired)) if c.feature < 0 else int(c.feature)
    on = a_dst[:, j] > 0
    if on.sum() == 0:
        raise ValueError(f"layer-{dst} feature {j} never fires on the held-out tokens; choose "
                         "another circuit.feature")
    ln_w = unrolled_params(variables)[f"blocks_{dst}"]["ln2"]["w"]
    conn = np.asarray(cw.connections(tc_params[src]["W_dec"], tc_params[dst]["W_enc"], ln_w),
                      np.float64)  # [n_src, n_dst]
    col = conn[:, j]
    attr = np.asarray(cw.attributions(a_src[on], col), np.float64)  # [tokens_on, n_src]
    mean_attr = attr.mean(0)
    exact = np.asarray(cw.attributions(a_src[on], col, scale=scale[on]), np.float64)
    # the direct residual path's share of j's pre-activation (sigma frozen), for scale
    pre = (np.asarray(cache[x_dst], np.float64).reshape(-1, d)[on]
           @ np.asarray(tc_params[dst]["W_enc"], np.float64)[:, j]
           + float(tc_params[dst]["b_enc"][j]))
    seen = (a_src[on] > 0).any(0)  # sources active on at least one of j's tokens
    mean_act = a_src[on].mean(0)
    top = cw.top_sources(col, c.top_k)
    return {
        "feature": j, "feature_fraction_active": float(on.mean()), "n_tokens": int(on.sum()),
        "n_sources_seen": int(seen.sum()),
        "connection": col, "mean_attribution": mean_attr, "mean_activation": mean_act,
        "top_sources": [{"source": int(i), "connection": float(col[i]),
                         "mean_attribution": float(mean_attr[i]),
                         "fraction_active": float((a_src[on][:, i] > 0).mean())} for i in top],
        "agreement": cw.agreement(col, mean_attr, c.top_k, mask=seen),
        "agreement_all_sources": cw.agreement(col, mean_attr, c.top_k),
        "activation_only_agreement": cw.agreement(mean_act, mean_attr, c.top_k, mask=seen),
        "agreement_with_ln_scale": cw.agreement(col, exact.mean(0), c.top_k, mask=seen),
        "direct_path_share": float(np.sum(exact.sum(1)) / np.sum(pre)),
        "chance_top_k_overlap": c.top_k / len(col),
    }


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    check_config(config)
    workdir = os.path.abspath(workdir)
    model, variables, train_src, eval_src = runner.trained_lm(config.lm, workdir)
    n_eval = min(config.eval_batch_size, len(eval_src))
    held_out = np.stack([np.asarray(eval_src[i]["tokens"], np.int32) for i in range(n_eval)])

    rows, results = [], {}
    for kind in KINDS:
        configs, trains = dictionary_grid(config, kind, model.config.d_model)
        tokens = data_lib.make_iterator(train_src, batch_size=config.model_batch_size,
                                        seed=trains[0].seed, shuffle=True, num_epochs=None,
                                        transform=_inputs)
        result = sweep(configs, trains, model, variables, tokens, eval_tokens=held_out,
                       workdir=os.path.join(workdir, f"{kind}s"), verbose=config.verbose)
        results[kind] = result
        rows += frontier_rows(result, kind)

    c = config.circuit
    tr, circuits = results["transcoder"], []
    for seed in config.seeds:
        chosen = {_layer(cfg): i for i, (cfg, t) in enumerate(zip(tr.configs, tr.train_configs,
                                                                   strict=True))
                  if (cfg.d_sae, cfg.k, t.seed) == (c.d_sae, c.k, seed)}
        tc_params = {layer: jax.device_get(tr.params[i]) for layer, i in chosen.items()}
        tc_configs = {layer: tr.configs[i] for layer, i in chosen.items()}
        circuits.append({"seed": seed, **circuit_analysis(config, model, variables, held_out,
                                                          tc_params, tc_configs)})

    summary = {"frontier": rows, "circuits": circuits, **_headline(rows)}
    return runner.write_outputs(workdir, summary, {
        "frontier.png": lambda path: _plot_frontier(rows, path),
        "connections.png": lambda path: _plot_connections(circuits[0], c, path)})


def _headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (layer, width, k, seed): transcoder minus SAE loss recovered and explained variance;
    the fraction of those grid points where the transcoder is at least as good, and the mean
    difference."""
    by = {(r["kind"], r["layer"], r["d_sae"], r["k"], r["seed"]): r for r in rows}
    diffs = []
    for (kind, *point), r in by.items():
        if kind != "transcoder":
            continue
        s = by[("sae", *point)]
        diffs.append({**dict(zip(("layer", "d_sae", "k", "seed"), point, strict=True)),
                      "loss_recovered_tc_minus_sae": r["loss_recovered"] - s["loss_recovered"],
                      "explained_variance_tc_minus_sae":
                          r["explained_variance"] - s["explained_variance"]})
    lr = [d["loss_recovered_tc_minus_sae"] for d in diffs]
    ev = [d["explained_variance_tc_minus_sae"] for d in diffs]
    return {"tc_minus_sae": diffs,
            "tc_at_least_as_good_fraction": float(np.mean(np.asarray(lr) >= 0)),
            "mean_loss_recovered_tc_minus_sae": float(np.mean(lr)),
            "mean_explained_variance_tc_minus_sae": float(np.mean(ev))}


def _plot_frontier(rows: list[dict[str, Any]], path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    keys = sorted({(r["layer"], r["d_sae"]) for r in rows})
    for ax, metric in zip(axes, ("loss_recovered", "explained_variance"), strict=True):
        for kind, marker in zip(KINDS, ("o", "s"), strict=True):
            for n, (layer, d_sae) in enumerate(keys):
                sel = [r for r in rows
                       if (r["kind"], r["layer"], r["d_sae"]) == (kind, layer, d_sae)]
                pts = sorted((np.mean([r["l0"] for r in sel if r["k"] == k]),
                              np.mean([r[metric] for r in sel if r["k"] == k]))
                             for k in sorted({r["k"] for r in sel}))  # mean over seeds
                ax.plot(*zip(*pts, strict=True), marker=marker,
                        ls="-" if kind == "transcoder" else "--", color=f"C{n}",
                        label=f"{kind}, layer {layer}, {d_sae} latents")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("L0 (active latents per token)")
        ax.set_ylabel(metric.replace("_", " ") + " (MLP output)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("TopK transcoders (MLP in -> out) vs SAEs (MLP out), held-out tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_connections(circuit: dict[str, Any], c: ConfigDict, path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    top = circuit["top_sources"]
    names = [str(t["source"]) for t in top]
    xs = np.arange(len(top))
    ax = axes[0]
    ax.bar(xs - 0.2, [t["connection"] for t in top], 0.4, label="input-invariant connection")
    ax.bar(xs + 0.2, [t["mean_attribution"] for t in top], 0.4, color="C1",
           label="mean input-dependent attribution")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(xs, names, rotation=90, fontsize=7)
    ax.set_xlabel(f"layer-{c.src_layer} transcoder feature (by |connection|)")
    ax.set_ylabel("connection W_dec[i] . W_enc[:, j] / mean a_i(x) x it", fontsize=8)
    ax.set_title(f"top {len(top)} sources of layer-{c.dst_layer} feature {circuit['feature']}",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    conn, attr = np.asarray(circuit["connection"]), np.asarray(circuit["mean_attribution"])
    seen = np.asarray(circuit["mean_activation"]) > 0
    ax.scatter(conn[~seen], attr[~seen], s=6, c="0.7", label="never active on these tokens")
    ax.scatter(conn[seen], attr[seen], s=8, c="C0", label="active")
    a = circuit["agreement"]
    ax.set_title(f"Spearman {a['spearman']:.2f}, top-{c.top_k} overlap {a['top_k_overlap']:.2f}"
                 f" (n={a['n_sources']})", fontsize=9)
    ax.set_xlabel("input-invariant connection")
    ax.set_ylabel(f"mean attribution over {circuit['n_tokens']} tokens where j fires")
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _inputs(example: dict[str, Any]) -> dict[str, np.ndarray]:
    return {"inputs": np.asarray(example["tokens"][:-1], np.int32)}


__all__ = ["check_config", "circuit_analysis", "dictionary_grid", "run_experiment"]

if __name__ == "__main__":
    runner.main(run_experiment, "transcoders_vs_saes")

