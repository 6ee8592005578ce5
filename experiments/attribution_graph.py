"""An attribution graph of an induction model, validated by perturbation.

    python -m experiments.attribution_graph --config=configs/attribution_graph.py --workdir=W

See configs/attribution_graph.py for the claim, the settings and the measured numbers. From a
notebook: `summary = run_experiment(config, workdir)`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

import jaxinterp as ji
from experiments import runner
from experiments.plotting import pyplot
from jaxinterp import circuits
from jaxinterp import data as data_lib
from jaxinterp.sae import clt
from jaxinterp.sae.metrics import evaluate
from jaxinterp.sae.model import SAEConfig
from jaxinterp.sae.train import TrainConfig, activation_fn, capture_fn, fit


def train_transcoders(config: ConfigDict, model, variables, train_src, workdir: str
                      ) -> tuple[circuits.Transcoders, list[dict[str, float]]]:
    """One transcoder per layer (`ln2.hook_normalized` -> `hook_mlp_out`), each trained by
    `jaxinterp.sae.fit` under `<workdir>/transcoder_{l}`; returns them stacked and each
    one's held-out metrics on a training batch's activations."""
    params, configs, metrics = [], [], []
    d = model.config.d_model
    for layer in range(model.config.n_layers):
        c = SAEConfig(**dict(config.transcoder), d_in=d, transcoder=True,
                      site=f"blocks.{layer}.ln2.hook_normalized",
                      out_site=f"blocks.{layer}.hook_mlp_out")
        tc = TrainConfig(**dict(config.train))
        tokens = data_lib.make_iterator(train_src, batch_size=config.model_batch_size,
                                        seed=tc.seed + layer, shuffle=True, num_epochs=None,
                                        transform=_inputs)
        result = fit(c, tc, model, variables, tokens,
                     workdir=os.path.join(workdir, f"transcoder_{layer}"), verbose=False)
        p = jax.device_get(result.params)
        batch = next(data_lib.make_iterator(train_src, batch_size=64, seed=99, shuffle=True,
                                            num_epochs=1, transform=_inputs))["inputs"]
        x, y = jax.jit(activation_fn(model, c.site, c.out_site))(variables, batch)
        metrics.append({k: float(v) for k, v in evaluate(p, c, x, y).items()})
        params.append(p)
        configs.append(c)
    return circuits.Transcoders.stack(params, configs), metrics


def train_clt(config: ConfigDict, model, variables, train_src, workdir: str
              ) -> tuple[circuits.Transcoders, list[dict[str, float]]]:
    """A cross-layer transcoder (`jaxinterp.sae.clt.fit` under `<workdir>/clt`; the same
    encoder settings and training as the per-layer ones, without resampling) and each layer's
    held-out metrics, as `train_transcoders`."""
    n_layers, d = model.config.n_layers, model.config.d_model
    c = clt.CLTConfig(SAEConfig(**dict(config.transcoder), d_in=d, transcoder=True),
                      n_layers=n_layers, penalty=config.clt.penalty or None,
                      sparsity_coeff=config.clt.sparsity_coeff,
                      tanh_scale=config.clt.tanh_scale)
    tc = dataclasses.replace(TrainConfig(**dict(config.train)), resample_every=0,
                             resample_until=0)
    tokens = data_lib.make_iterator(train_src, batch_size=config.model_batch_size,
                                    seed=tc.seed, shuffle=True, num_epochs=None,
                                    transform=_inputs)
    result = clt.fit(c, tc, model, variables, tokens, workdir=os.path.join(workdir, "clt"),
                     verbose=False)
    p = jax.device_get(result.params)
    batch = next(data_lib.make_iterator(train_src, batch_size=64, seed=99, shuffle=True,
                                        num_epochs=1, transform=_inputs))["inputs"]
    sites = [s for lc in c.layer_configs for s in (lc.site, lc.out_site)]
    x, y = clt.select(c)(jax.jit(capture_fn(model, sites))(variables, batch))
    m = jax.device_get(clt.evaluate(p, c, x, y))
    metrics = [{"mse": float(m["mse_per_layer"][i]),
                "explained_variance": float(m["explained_variance_per_layer"][i]),
                "l0": float(m["l0_per_layer"][i])} for i in range(n_layers)]
    return circuits.Transcoders.cross_layer(p, c.sae), metrics


def pick_prompt(model, variables, eval_src, length: int) -> np.ndarray:
    """The first held-out sequence (cut to `length` tokens) whose last token's prediction is
    its next token and is a repeat (induction)."""
    for i in range(min(len(eval_src), 512)):
        seq = np.asarray(eval_src[i]["tokens"])
        prompt, answer = seq[:length], seq[length]
        if answer not in prompt[1:]:
            continue
        logits = model.apply(variables, jnp.asarray(prompt[None]))
        if int(jnp.argmax(logits[0, -1])) == int(answer):
            return prompt
    raise ValueError(f"no held-out prompt of {length} tokens is completed by induction")


def perturbation_effects(model, variables, tc: circuits.Transcoders, graph: circuits.Graph,
                         nodes: np.ndarray, scale: float) -> np.ndarray:
    """Change of the target (first) logit, demeaned, when each feature node in `nodes` has its
    write changed by `scale` times itself (-1: removed; +1: doubled) in the real model (one
    vmapped run per layer)."""
    tokens = jnp.asarray(graph.tokens[None])
    base = np.asarray(model.apply(variables, tokens))[0, -1]
    target = int(graph.logit_tokens[0])
    base = base[target] - base.mean()
    feats = graph.active_features[graph.selected_features[nodes]]
    acts = graph.activation_values[graph.selected_features[nodes]]
    rows, dst = tc.decoder_rows(feats[:, 0], feats[:, 2])  # [n, k, d], [n, k]
    out = np.zeros(len(nodes))
    n_pos = graph.n_pos

    def one(vectors, mask):  # vectors [k, d]: the write into each dst layer
        ivs = [ji.Add(f"blocks.{layer}.hook_mlp_out", vectors[j], positions=mask)
               for j, layer in enumerate(dst_layers)]
        logits = ji.run(model, variables, tokens, interventions=ivs)[0][0, -1]
        return logits[target] - logits.mean()

    for key in {tuple(d) for d in dst}:
        dst_layers = key
        idx = np.flatnonzero((dst == np.asarray(key)).all(1))
        vectors = jnp.asarray(scale * acts[idx, None, None] * rows[idx])
        masks = jnp.asarray(np.eye(n_pos, dtype=bool)[feats[idx, 1]])
        out[idx] = np.asarray(jax.jit(jax.vmap(one))(vectors, masks)) - base
    return out


def predicted_effects(graph: circuits.Graph, nodes: np.ndarray, scale: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The graph's prediction of the target logit's change for the same perturbations:
    (total: propagated through every edge, each node's inputs linear in its sources' values;
    direct: the node's own edge to the logit), each [len(nodes)]."""
    a = graph.adjacency.astype(np.float64)
    n_feat = graph.n_features
    values = graph.values.astype(np.float64)
    per_unit = np.zeros_like(a)  # effect per unit change of each feature source's value
    per_unit[:, :n_feat] = a[:, :n_feat] / values[None, :n_feat]
    target = len(a) - len(graph.logit_tokens)
    total = np.linalg.solve(np.eye(len(a)) - per_unit,
                            np.eye(len(a))[:, nodes] * scale * values[nodes])[target]
    return total, scale * a[target, nodes]


TRANSCODERS = {"per_layer": train_transcoders, "clt": train_clt}


def run_experiment(config: ConfigDict, workdir: str) -> dict[str, Any]:
    if config.transcoders not in TRANSCODERS:
        raise ValueError(f"config.transcoders={config.transcoders!r}; choose from "
                         f"{', '.join(map(repr, TRANSCODERS))}")
    workdir = os.path.abspath(workdir)
    model, variables, train_src, eval_src = runner.trained_lm(config.lm, workdir)
    tc, tc_metrics = TRANSCODERS[config.transcoders](config, model, variables, train_src,
                                                     workdir)

    prompt = pick_prompt(model, variables, eval_src, config.prompt_len)
    start = time.perf_counter()
    graph = circuits.attribute(model, variables, tc, prompt, chunk_size=config.chunk_size,
                               max_feature_nodes=config.max_feature_nodes or None)
    seconds = time.perf_counter() - start
    kept = circuits.prune(graph.adjacency, graph.logit_probabilities, graph.n_features,
                          graph.n_pos, config.node_threshold, config.edge_threshold)
    n_logits = len(graph.logit_tokens)
    rows = np.r_[0:graph.n_features, len(graph.values) - n_logits:len(graph.values)]
    completeness = float(np.abs(graph.adjacency[rows].sum(1) + graph.biases[rows]
                                - graph.values[rows]).max())

    influence = kept.node_influence[:graph.n_features]
    top = np.argsort(-influence, kind="stable")[:config.validate_top]
    measured = {s: perturbation_effects(model, variables, tc, graph, top, s) for s in (-1, 1)}
    predicted = {s: predicted_effects(graph, top, s) for s in (-1, 1)}
    summary = {
        "transcoder_kind": config.transcoders, "transcoders": tc_metrics, "prompt": prompt,
        "target_token": graph.logit_tokens[0],
        "target_probability": graph.logit_probabilities[0],
        "n_active_features": len(graph.active_features), "n_nodes": len(graph.values),
        "kept_nodes": int(kept.node_mask.sum()), "kept_edges": int(kept.edge_mask.sum()),
        "kept_influence": kept.kept_influence, "graph_seconds": seconds,
        "completeness_max_error": completeness,
        "validated_features": graph.active_features[graph.selected_features[top]],
    }
    for s, name in ((-1, "ablate"), (1, "double")):
        total, direct = predicted[s]
        summary[name] = {
            "measured": measured[s], "predicted_total": total, "predicted_direct": direct,
            "r_total": _pearson(total, measured[s]), "r_direct": _pearson(direct, measured[s]),
            "sign_agreement": float(np.mean(np.sign(total) == np.sign(measured[s]))),
        }
    token_names = [str(i) for i in range(model.config.d_vocab)]
    circuits.write_json(graph, kept, os.path.join(workdir, "graph.json"), token_names,
                        slug="induction", d_transcoder=tc.config.d_sae)
    return runner.write_outputs(workdir, summary, {
        "graph.png": lambda path: circuits.plot_graph(graph, kept, path, token_names),
        "validation.png": lambda path: _plot_validation(summary, path)})


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _plot_validation(summary: dict, path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, name in zip(axes, ("ablate", "double"), strict=True):
        s = summary[name]
        ax.scatter(s["predicted_total"], s["measured"], label=f"graph (r={s['r_total']:.2f})")
        ax.scatter(s["predicted_direct"], s["measured"], marker="x",
                   label=f"direct edge only (r={s['r_direct']:.2f})")
        lim = np.abs(np.r_[s["predicted_total"], s["measured"]]).max() * 1.1
        ax.plot([-lim, lim], [-lim, lim], "k:", lw=0.8)
        ax.set_xlabel("predicted change of the target logit")
        ax.set_ylabel("measured change (real model)")
        ax.set_title(f"{name} each top feature")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _inputs(example: dict[str, Any]) -> dict[str, np.ndarray]:
    return {"inputs": np.asarray(example["tokens"][:-1], np.int32)}


if __name__ == "__main__":
    runner.main(run_experiment, "attribution_graph")
