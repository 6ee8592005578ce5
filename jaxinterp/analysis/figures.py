"""Matplotlib figures for analyses: each function takes arrays (and labels) and returns a
`matplotlib.figure.Figure`; scripts save it with `fig.savefig(path)`, notebooks show it inline.

matplotlib is imported inside each function, so importing jaxinterp stays cheap and has no
side effects.
"""

from __future__ import annotations


def plot_attention_pattern(pattern, labels=None, *, title: str = "", max_heads: int = 16):
    """Attention patterns as heatmaps, one panel per head.

    Args:
      pattern: [query_pos, key_pos] (one head) or [head, query_pos, key_pos] (one layer, one
        example, e.g. `cache["blocks.1.attn.hook_pattern"][0]`).
      labels: one string per position (token strings), shown on both axes.
      title: figure title.
      max_heads: at most this many panels.

    Returns:
      A matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    p = np.asarray(pattern, np.float32)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"pattern must be [query_pos, key_pos] or [head, query_pos, key_pos], "
                         f"got shape {np.shape(pattern)}")
    n = p.shape[-1]
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} positions")
    heads = min(p.shape[0], max_heads)
    cols = min(heads, 4)
    rows = -(-heads // cols)
    size = 1.2 + 0.25 * n
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for h, ax in enumerate(axes.flat):
        if h >= heads:
            ax.axis("off")
            continue
        ax.imshow(p[h], vmin=0, vmax=1, cmap="Blues")
        ax.set_title(f"head {h}" if p.shape[0] > 1 else "pattern", fontsize=9)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
        if labels is not None:
            ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(n), labels, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_head_scores(scores, *, title: str = "head scores", vmin: float = 0.0,
                     vmax: float | None = None):
    """A [layer, head] score matrix (e.g. stacked `heads.detection_score` results) as an
    annotated heatmap. Returns a matplotlib Figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    s = np.asarray(scores, np.float32)
    if s.ndim != 2:
        raise ValueError(f"scores must be [layer, head], got shape {s.shape}")
    n_layers, n_heads = s.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n_heads, 0.8 + 0.5 * n_layers))
    im = ax.imshow(s, vmin=vmin, vmax=vmax if vmax is not None else max(float(s.max()), 1e-9),
                   cmap="viridis", aspect="auto")
    for (layer, head), v in np.ndenumerate(s):
        ax.text(head, layer, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def plot_logit_lens(top_prob, top_token, *, decode=None, labels=None, pos_labels=None,
                    layer_labels=None, title: str = "logit lens"):
    """A logit-lens table (nostalgebraist 2020): rows are residual streams (layers), columns are
    positions, each cell is coloured by the lens's top-token probability and annotated with
    that token.

    Args:
      top_prob: [layer, pos] probability of the top token (e.g.
        `jnp.exp(logit_lens(model, v, tokens, top_k=1)[0][:, 0, :, 0])` for example 0).
      top_token: [layer, pos] int ids of the top token.
      decode: a function id -> string used to label cells (e.g. a tokenizer's decode).
      labels: alternatively a sequence of strings indexed by token id.
      pos_labels: one string per position (the input tokens), for the x axis.
      layer_labels: one string per row; default "embed", "1", ..., as the lens indices.
      title: figure title.

    Returns:
      A matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    p = np.asarray(top_prob, np.float32)
    ids = np.asarray(top_token)
    if p.ndim != 2 or ids.shape != p.shape:
        raise ValueError(f"top_prob and top_token must both be [layer, pos]; got shapes "
                         f"{p.shape} and {ids.shape}")
    if decode is not None and labels is not None:
        raise ValueError("pass decode or labels, not both")
    if labels is not None:
        if ids.size and ids.max() >= len(labels):
            raise ValueError(f"token id {int(ids.max())} has no label ({len(labels)} labels)")
        decode = labels.__getitem__
    decode = decode or str
    n_layers, n = p.shape
    if pos_labels is not None and len(pos_labels) != n:
        raise ValueError(f"{len(pos_labels)} pos_labels for {n} positions")
    if layer_labels is None:
        layer_labels = ["embed"] + [str(i) for i in range(1, n_layers)]
    if len(layer_labels) != n_layers:
        raise ValueError(f"{len(layer_labels)} layer_labels for {n_layers} rows")
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * n, 1.0 + 0.45 * n_layers))
    im = ax.imshow(p, vmin=0, vmax=1, cmap="Blues", aspect="auto", origin="lower")
    for i in range(n_layers):
        for j in range(n):
            ax.text(j, i, str(decode(int(ids[i, j])))[:8], ha="center", va="center",
                    fontsize=7, color="white" if p[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), pos_labels if pos_labels is not None else range(n),
                  rotation=90 if pos_labels is not None else 0, fontsize=7)
    ax.set_yticks(range(n_layers), layer_labels, fontsize=7)
    ax.set_xlabel("position")
    ax.set_ylabel("layer")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="top-token probability")
    fig.tight_layout()
    return fig


def plot_patching(result, labels=None, *, by: str | None = None, layers=None,
                  title: str = "", metric_name: str = "metric", max_heads: int = 16):
    """An activation / attribution patching result as a heatmap: layer on y, token (or head)
    on x, a diverging colour scale centred on 0 (red up, blue down, as TransformerLens's plots).

    Args:
      result: `act_patch` / `attr_patch` output: [layer, pos], [layer, head] or
        [layer, pos, head] (one panel per head, each [layer, pos]).
      labels: one string per position (token strings) for the x axis; None: position indices.
      by: "layer_pos", "layer_head" or "layer_pos_head"; None infers it (3-D: layer_pos_head;
        2-D: layer_pos when labels are given, else layer_head).
      layers: the layer of each row (e.g. act_patch's `layers=`); default 0, 1, ...
      title: figure title.
      metric_name: colour-bar label.
      max_heads: at most this many panels for [layer, pos, head].

    Returns:
      A matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    r = np.asarray(result, np.float32)
    if by is None:
        by = "layer_pos_head" if r.ndim == 3 else "layer_pos" if labels is not None else (
            "layer_head")
    want_ndim = {"layer_pos": 2, "layer_head": 2, "layer_pos_head": 3}
    if by not in want_ndim:
        raise ValueError(f"by={by!r}; valid: {', '.join(want_ndim)}")
    if r.ndim != want_ndim[by]:
        raise ValueError(f"by={by!r} needs a {want_ndim[by]}-D result, got shape {r.shape}")
    n_layers, n_x = r.shape[0], r.shape[1]
    rows_lab = [str(i) for i in (range(n_layers) if layers is None else layers)]
    if len(rows_lab) != n_layers:
        raise ValueError(f"{len(rows_lab)} layers for a result with {n_layers} rows")
    if by == "layer_head":
        if labels is not None:
            raise ValueError("labels name positions; a [layer, head] result has none")
        x_lab, x_name = [str(h) for h in range(n_x)], "head"
    else:
        x_lab = [str(p) for p in range(n_x)] if labels is None else [str(t) for t in labels]
        x_name = "position"
        if len(x_lab) != n_x:
            raise ValueError(f"{len(x_lab)} labels for {n_x} positions")
    panels = [r] if r.ndim == 2 else [r[..., h] for h in range(min(r.shape[2], max_heads))]
    vmax = float(np.abs(r).max()) or 1.0
    cols = min(len(panels), 4)
    n_rows = -(-len(panels) // cols)
    w, h = 1.5 + 0.35 * n_x, 1.0 + 0.35 * n_layers
    fig, axes = plt.subplots(n_rows, cols, figsize=(w * cols + 1, h * n_rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.axis("off")
            continue
        im = ax.imshow(panels[i], cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_xticks(range(n_x), x_lab, rotation=90 if x_name == "position" else 0,
                      fontsize=7)
        ax.set_yticks(range(n_layers), rows_lab, fontsize=7)
        ax.set_xlabel(x_name)
        ax.set_ylabel("layer")
        if r.ndim == 3:
            ax.set_title(f"head {i}", fontsize=9)
    fig.colorbar(im, ax=axes.ravel().tolist(), label=metric_name)
    if title:
        fig.suptitle(title)
    return fig
