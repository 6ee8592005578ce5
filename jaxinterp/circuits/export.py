"""Writing attribution graphs: circuit-tracer's frontend JSON and a PNG.

The JSON is what circuit-tracer's `create_graph_files` writes and its frontend
(`frontend/assets/attribution_graph`) reads: `{"metadata", "qParams", "nodes", "links"}` with
node ids `"{layer}_{feature}_{pos}"` (features), `"0_{layer}_{pos}"` (errors), `"E_{token}_{pos}"`
(tokens) and `"{n_layers + 1}_{token}_{pos}"` (logits), `feature_type` "cross layer transcoder",
"mlp reconstruction error", "embedding" or "logit", and links `{"source", "target", "weight"}`
for the kept edges (checked against circuit-tracer's `frontend/graph_models.py` and
`utils/create_graph_files.py`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np

from jaxinterp.circuits.attribution import Graph
from jaxinterp.circuits.prune import Pruned


def graph_json(graph: Graph, pruned: Pruned, token_strings: Sequence[str] | None = None, *,
               slug: str = "graph", scan: str = "jaxinterp", d_transcoder: int | None = None,
               node_threshold: float = 0.8) -> dict:
    """The kept part of `graph` as circuit-tracer's frontend model (a JSON-able dict).
    `token_strings[i]` names token id i (default: the id)."""
    def name(t: int) -> str:
        return str(token_strings[t]) if token_strings is not None else str(int(t))

    kinds = graph.node_kinds()
    n_feat, n_pos, n_layers = graph.n_features, graph.n_pos, graph.n_layers
    offset = 10 ** math.ceil(math.log10(d_transcoder)) if d_transcoder else 0
    nodes = {}
    for i in np.flatnonzero(pruned.node_mask):
        influence = float(pruned.cumulative[i])
        if kinds[i] == "feature":
            layer, pos, feat = (int(v) for v in graph.active_features[graph.selected_features[i]])
            node = dict(node_id=f"{layer}_{feat}_{pos}", feature=feat + offset * layer,
                        layer=str(layer), ctx_idx=pos, feature_type="cross layer transcoder",
                        jsNodeId=f"{layer}_{feat}-0", influence=influence,
                        activation=float(graph.activation_values[graph.selected_features[i]]))
        elif kinds[i] == "error":
            layer, pos = divmod(int(i) - n_feat, n_pos)
            node = dict(node_id=f"0_{layer}_{pos}", feature=-1, layer=str(layer), ctx_idx=pos,
                        feature_type="mlp reconstruction error", jsNodeId=f"{layer}_{pos}-0",
                        influence=influence)
        elif kinds[i] == "token":
            pos = int(i) - n_feat - n_layers * n_pos
            tok = int(graph.tokens[pos])
            node = dict(node_id=f"E_{tok}_{pos}", feature=pos, layer="E", ctx_idx=pos,
                        feature_type="embedding", jsNodeId=f"E_{tok}-{pos}",
                        influence=influence)
        else:
            k = int(i) - (len(kinds) - len(graph.logit_tokens))
            tok, prob = int(graph.logit_tokens[k]), float(graph.logit_probabilities[k])
            node = dict(node_id=f"{n_layers + 1}_{tok}_{n_pos - 1}", feature=tok,
                        layer=str(n_layers + 1), ctx_idx=n_pos - 1, feature_type="logit",
                        token_prob=prob, is_target_logit=k == 0, jsNodeId=f"L_{tok}-{n_pos - 1}",
                        clerp=f'Output "{name(tok)}" (p={prob:.3f})')
        base = dict(token_prob=0.0, is_target_logit=False, run_idx=0, reverse_ctx_idx=0,
                    clerp="", influence=None, activation=None)
        nodes[int(i)] = {**base, **node}
    dst, src = np.nonzero(pruned.edge_mask)
    links = [{"source": nodes[s]["node_id"], "target": nodes[d]["node_id"],
              "weight": float(graph.adjacency[d, s])}
             for d, s in zip(dst.tolist(), src.tolist(), strict=True)
             if s in nodes and d in nodes]
    connected = {x for link in links for x in (link["source"], link["target"])}
    used = [n for n in nodes.values()
            if n["node_id"] in connected or n["feature_type"] in ("embedding", "logit")]
    return {
        "metadata": {"slug": slug, "scan": scan, "transcoder_list": [],
                     "prompt_tokens": [name(t) for t in graph.tokens],
                     "prompt": " ".join(name(t) for t in graph.tokens),
                     "node_threshold": node_threshold},
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "",
                    "sg_pos": ""},
        "nodes": used,
        "links": links,
    }


def write_json(graph: Graph, pruned: Pruned, path: str | os.PathLike,
               token_strings: Sequence[str] | None = None, **kwargs) -> dict:
    """Writes `graph_json(...)` to `path` (a `<slug>.json` that circuit-tracer's local server
    serves); returns the dict."""
    model = graph_json(graph, pruned, token_strings, **kwargs)
    with open(path, "w") as f:
        json.dump(model, f, indent=1)
    return model


def plot_graph(graph: Graph, pruned: Pruned, path: str | os.PathLike,
               token_strings: Sequence[str] | None = None, max_edges: int = 300) -> None:
    """Draws the kept nodes at (position, layer): tokens at the bottom, logits at the top,
    features as dots (size: influence), errors as squares; the `max_edges` strongest kept
    edges as lines (blue positive, red negative, width by |weight|)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = graph.node_kinds()
    n_feat, n_pos, n_layers = graph.n_features, graph.n_pos, graph.n_layers
    xy = np.zeros((len(kinds), 2))
    for i, kind in enumerate(kinds):
        if kind == "feature":
            layer, pos, _ = graph.active_features[graph.selected_features[i]]
            xy[i] = (pos, layer + 1)
        elif kind == "error":
            layer, pos = divmod(i - n_feat, n_pos)
            xy[i] = (pos + 0.25, layer + 1.25)
        elif kind == "token":
            xy[i] = (i - n_feat - n_layers * n_pos, 0)
        else:
            k = i - (len(kinds) - len(graph.logit_tokens))
            xy[i] = (n_pos - 1 + 0.3 * (k - (len(graph.logit_tokens) - 1) / 2), n_layers + 1)
    # Spread features sharing a (pos, layer) cell.
    for cell in {tuple(p) for p in xy[kinds == "feature"]}:
        same = np.flatnonzero((kinds == "feature") & (xy == cell).all(1))
        xy[same, 0] += np.linspace(-0.3, 0.3, len(same)) if len(same) > 1 else 0
    fig, ax = plt.subplots(figsize=(max(6, n_pos * 0.9), 1.6 * (n_layers + 2)))
    dst, src = np.nonzero(pruned.edge_mask)
    w = graph.adjacency[dst, src]
    order = np.argsort(-np.abs(w))[:max_edges]
    scale = np.abs(w[order]).max() if len(order) else 1.0
    for d, s, weight in zip(dst[order], src[order], w[order], strict=True):
        ax.plot(*zip(xy[s], xy[d], strict=True), color="tab:blue" if weight > 0 else "tab:red",
                alpha=0.25 + 0.6 * abs(weight) / scale, lw=0.4 + 2.5 * abs(weight) / scale,
                zorder=1)
    keep = pruned.node_mask
    style = {"feature": ("o", "tab:orange"), "error": ("s", "tab:gray"),
             "token": ("D", "tab:green"), "logit": ("^", "tab:purple")}
    for kind, (marker, color) in style.items():
        m = keep & (kinds == kind)
        size = 30 + 300 * (1 - pruned.cumulative[m]) if kind == "feature" else 60
        ax.scatter(xy[m, 0], xy[m, 1], marker=marker, c=color, s=size, zorder=2, label=kind,
                   edgecolors="k", linewidths=0.5)
    names = [str(token_strings[t]) if token_strings is not None else str(int(t))
             for t in graph.tokens]
    ax.set_xticks(range(n_pos), names, rotation=45)
    ax.set_yticks(range(n_layers + 2), ["tokens", *[f"L{i}" for i in range(n_layers)],
                                        "logits"])
    ax.set_title(f"attribution graph: {int(keep.sum())} nodes, {int(pruned.edge_mask.sum())} "
                 f"edges, {pruned.kept_influence:.0%} of the influence kept")
    ax.legend(loc="upper left", fontsize=7, ncols=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
