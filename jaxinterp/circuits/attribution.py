"""Attribution graphs from batched VJPs (Ameisen et al. 2025; circuit-tracer's `attribute`).

Nodes, in circuit-tracer's order: the selected active features (layer, pos, feature), one error
node per (layer, pos), one token node per position, and the salient logits of the last
position. The edge from source s to target t is the direct effect of s's write on t's value in
the frozen replacement model (`jaxinterp.circuits.replacement`):

    A[t, s] = w_s . J_{read(t) <- write(s)}^T v_t

with w_s the write (a_s W_dec[s] for a feature, the error vector, the token embedding) and v_t
the target's read direction (its encoder column W_enc[:, i] at its layer's MLP input, or the
demeaned unembedding column W_U[:, v] - mean_v W_U at the final norm). Because the frozen model
is affine, each target's value is the sum of its incoming edges plus a bias term (what it reads
with every source's write removed): `Graph.values = Graph.adjacency.sum(1) + Graph.biases`
over all active sources (completeness).

One VJP of the frozen forward per target row: targets are processed in chunks of
`chunk_size` (a `vmap` over injected cotangents, one compiled program for every chunk), so the
memory is that of `chunk_size` backward passes whatever the number of nodes; with a `mesh`,
each chunk's rows are split over its devices. Rows are computed in influence order (the logits
first, then the features with the largest influence on the logits so far, recomputed every
`update_interval` chunks), up to `max_feature_nodes` features: only the visited rows are ever
held ([visited + logits, nodes]), never the dense [active, active] matrix.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxinterp.circuits.prune import partial_influences
from jaxinterp.circuits.replacement import (
    Transcoders,
    check_model,
    prompt_values,
    reads,
)
from jaxinterp.models.transformer import unembedding


@dataclasses.dataclass
class Graph:
    """An attribution graph (NumPy).

    Attributes:
      tokens: [pos] the prompt.
      active_features: [n_active, 3] (layer, pos, feature) of every active feature.
      activation_values: [n_active] their activations.
      selected_features: [n_selected] indices into `active_features` of the feature nodes.
      logit_tokens, logit_probabilities: [n_logits] the salient logits of the last position.
      adjacency: [n_nodes, n_nodes] direct effects, rows targets, columns sources; nodes are
        [selected features, errors (layer-major), tokens, logits]; rows of tokens and errors
        are zero (they have no inputs).
      values: [n_nodes] each target's value (feature pre-activation = activation, demeaned
        logit); biases: [n_nodes] what it reads with every source write removed (0 for
        tokens and errors).
      n_layers: layers of the model.
      complete: whether every active feature is a node (then `adjacency.sum(1) + biases ==
        values` holds for every feature and logit row).
    """

    tokens: np.ndarray
    active_features: np.ndarray
    activation_values: np.ndarray
    selected_features: np.ndarray
    logit_tokens: np.ndarray
    logit_probabilities: np.ndarray
    adjacency: np.ndarray
    values: np.ndarray
    biases: np.ndarray
    n_layers: int
    complete: bool

    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return len(self.selected_features)

    def node_kinds(self) -> np.ndarray:
        """[n_nodes] "feature", "error", "token" or "logit"."""
        counts = (self.n_features, self.n_layers * self.n_pos, self.n_pos,
                  len(self.logit_tokens))
        return np.repeat(np.array(["feature", "error", "token", "logit"]), counts)


def salient_logits(logits: np.ndarray, max_n_logits: int = 10,
                   desired_logit_prob: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The fewest top tokens (at most `max_n_logits`) whose probabilities sum to at least
    `desired_logit_prob`: (token ids [k], probabilities [k]); logits [vocab]."""
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")[:max_n_logits]
    cutoff = int(np.searchsorted(np.cumsum(probs[order]), desired_logit_prob)) + 1
    order = order[:cutoff]
    return order, probs[order].astype(np.float32)


@struct.dataclass
class _Sources:
    """Write vectors of the source nodes: active features (layer, pos, scaled decoder row),
    errors and token embeddings, as device arrays."""

    positions: jax.Array  # [n_active]
    dst_layers: jax.Array  # [n_active, k]: the layers each feature writes into (PLT k = 1)
    decoder: jax.Array  # [n_active, k, d_model]: a_s W_dec[s] into each of those layers
    errors: jax.Array   # [layer, pos, d_model]
    embeds: jax.Array   # [pos, d_model]


def _rows(model, variables, tokens, frozen, sources: _Sources, read_index, pos_index, vectors):
    """Attribution rows [chunk, n_sources] of targets reading `vectors` [chunk, d_model] at
    read `read_index` [chunk] (layer l's MLP input, or n_layers: the final norm) and position
    `pos_index` [chunk]: one VJP of the frozen forward per row (vmapped)."""
    n_layers, n_pos, d = sources.errors.shape
    zeros = {"mlp": jnp.zeros((n_layers, n_pos, d), jnp.float32),
             "embed": jnp.zeros((n_pos, d), jnp.float32)}
    _, vjp = jax.vjp(lambda probes: reads(model, variables, tokens, frozen, probes), zeros)

    def row(r, p, v):
        cotangent = jnp.zeros((n_layers + 1, n_pos, d), jnp.float32).at[r, p].set(v)
        (g,) = vjp(cotangent)
        at = g["mlp"][sources.dst_layers, sources.positions[:, None]]  # [n_active, k, d]
        feats = jnp.einsum("nkd,nkd->n", at, sources.decoder)  # contract writes and d_model
        errs = jnp.einsum("lpd,lpd->lp", g["mlp"], sources.errors).reshape(-1)
        toks = jnp.einsum("pd,pd->p", g["embed"], sources.embeds)
        return jnp.concatenate([feats, errs, toks])

    return jax.vmap(row)(read_index, pos_index, vectors)


def attribute(
    model: nn.Module,
    variables: Any,
    transcoders: Transcoders,
    tokens: Any,
    *,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    max_feature_nodes: int | None = None,
    chunk_size: int = 64,
    update_interval: int = 4,
    mesh: Mesh | None = None,
    progress: bool = False,
) -> Graph:
    """The attribution graph of the base model + per-layer `transcoders` on `tokens` [pos].

    Args:
      model, variables: a jaxinterp transformer with MLP blocks and its variables.
      transcoders: one per layer (`Transcoders.stack`) or a cross-layer transcoder
        (`Transcoders.cross_layer`), reading `ln2.hook_normalized` and writing `hook_mlp_out`.
      tokens: the prompt [pos] (int).
      max_n_logits, desired_logit_prob: the logit nodes (`salient_logits`).
      max_feature_nodes: at most this many feature nodes, chosen by influence on the logits
        (None: every active feature).
      chunk_size: target rows per compiled VJP batch (bounds memory).
      update_interval: chunks between recomputations of the influence ranking.
      mesh: split each chunk's rows over this mesh's devices (`chunk_size` must divide
        evenly); None: the default device.
      progress: print one line per influence update.

    Returns:
      `Graph`, unpruned (see `jaxinterp.circuits.prune`).
    """
    check_model(model, transcoders)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"attribute takes one prompt: int tokens [pos], got {tokens.dtype} "
                         f"{tokens.shape}")
    if chunk_size <= 0 or update_interval <= 0:
        raise ValueError(f"chunk_size={chunk_size} and update_interval={update_interval} "
                         "must be positive")
    n_devices = 1 if mesh is None else mesh.size
    if chunk_size % n_devices:
        raise ValueError(f"chunk_size={chunk_size} must be divisible by the mesh's "
                         f"{n_devices} devices")
    if max_feature_nodes is not None and max_feature_nodes < 0:
        raise ValueError(f"max_feature_nodes={max_feature_nodes} must be >= 0 (or None)")

    variables = nn.meta.unbox(variables)
    prompt = prompt_values(model, variables, transcoders, tokens)
    n_layers, n_pos = prompt.errors.shape[:2]
    active = np.argwhere(prompt.acts != 0)  # [n_active, 3], sorted (layer, pos, feature)
    act_values = prompt.acts[tuple(active.T)]
    w_enc = np.asarray(transcoders.params["W_enc"])
    b_enc = np.asarray(transcoders.params["b_enc"])
    rows_dec, dst = transcoders.decoder_rows(active[:, 0], active[:, 2])
    sources = _Sources(
        positions=jnp.asarray(active[:, 1]), dst_layers=jnp.asarray(dst),
        decoder=jnp.asarray(rows_dec * act_values[:, None, None]),
        errors=jnp.asarray(prompt.errors), embeds=jnp.asarray(prompt.embeds))

    logit_ids, logit_probs = salient_logits(prompt.logits[-1], max_n_logits, desired_logit_prob)
    w_u, b_u = (np.asarray(a, np.float32) if a is not None else None
                for a in unembedding(model, variables))
    logit_vecs = (w_u - w_u.mean(1, keepdims=True))[:, logit_ids].T  # [n_logits, d_model]
    b_u = np.zeros(w_u.shape[1], np.float32) if b_u is None else b_u
    logit_bias = b_u[logit_ids] - b_u.mean()
    logit_values = prompt.logits[-1][logit_ids] - prompt.logits[-1].mean()

    # Every target: read index, position, read vector (features first, then logits).
    n_active, n_logits = len(active), len(logit_ids)
    read_index = np.concatenate([active[:, 0], np.full(n_logits, n_layers)])
    pos_index = np.concatenate([active[:, 1], np.full(n_logits, n_pos - 1)])
    vectors = np.concatenate([w_enc[active[:, 0], :, active[:, 2]], logit_vecs])

    rows_fn = _compile_rows(model, mesh)
    tokens_dev = jnp.asarray(tokens)
    frozen = jax.tree.map(jnp.asarray, prompt.frozen)

    def compute(targets: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(targets), chunk_size):
            idx = targets[start:start + chunk_size]
            pad = np.concatenate([idx, np.full(chunk_size - len(idx), idx[0])])
            rows = rows_fn(variables, tokens_dev, frozen, sources, jnp.asarray(read_index[pad]),
                           jnp.asarray(pos_index[pad]), jnp.asarray(vectors[pad]))
            out.append(np.asarray(jax.device_get(rows))[:len(idx)])
        return np.concatenate(out) if out else np.zeros((0, n_sources), np.float32)

    n_sources = n_active + n_layers * n_pos + n_pos
    budget = n_active if max_feature_nodes is None else min(max_feature_nodes, n_active)
    rows = [compute(n_active + np.arange(n_logits))]  # logit rows first
    row_nodes = [n_active + n_layers * n_pos + n_pos + np.arange(n_logits)]  # node id per row
    visited = np.zeros(n_active, bool)
    while visited.sum() < budget:
        if budget == n_active:
            pending = np.arange(n_active)
        else:
            influence = partial_influences(np.concatenate(rows), logit_probs,
                                           np.concatenate(row_nodes), n_sources)
            rank = np.argsort(-influence[:n_active], kind="stable")
            pending = rank[~visited[rank]][:min(update_interval * chunk_size,
                                                budget - int(visited.sum()))]
        rows.append(compute(pending))
        row_nodes.append(pending)
        visited[pending] = True
        if progress:
            print(f"attribution: {int(visited.sum())}/{budget} feature rows", flush=True)

    selected = np.flatnonzero(visited)
    rows_all, nodes_all = np.concatenate(rows), np.concatenate(row_nodes)
    keep_cols = np.concatenate([selected, np.arange(n_active, n_sources)])
    n_nodes = len(selected) + n_layers * n_pos + n_pos + n_logits
    adjacency = np.zeros((n_nodes, n_nodes), np.float32)
    feature_row = {int(f): i for i, f in enumerate(selected)}
    for r, node in zip(rows_all, nodes_all, strict=True):
        if node < n_active:
            target = feature_row[int(node)]
        else:  # a logit: node ids of logits start after the sources
            target = len(selected) + (int(node) - n_active)
        adjacency[target, :len(keep_cols)] = r[keep_cols]

    # The bias terms: what each target reads with every source's write removed (each MLP
    # output reduced to its transcoder's b_dec, no token embeddings).
    b_dec = np.asarray(transcoders.params["b_dec"])
    writes = np.asarray(transcoders.decode(jnp.asarray(prompt.acts))) - b_dec[:, None] \
        + prompt.errors
    removed = np.asarray(jax.device_get(jax.jit(functools.partial(reads, model))(
        variables, tokens_dev, frozen, {"mlp": jnp.asarray(-writes),
                                "embed": jnp.asarray(-prompt.embeds)})))
    feats = active[selected]
    values = np.zeros(n_nodes, np.float32)
    biases = np.zeros(n_nodes, np.float32)
    values[:len(selected)] = act_values[selected]
    biases[:len(selected)] = np.einsum("nd,nd->n", removed[feats[:, 0], feats[:, 1]],
                                       vectors[selected]) + b_enc[feats[:, 0], feats[:, 2]]
    values[-n_logits:] = logit_values
    biases[-n_logits:] = removed[n_layers, n_pos - 1] @ logit_vecs.T + logit_bias
    return Graph(tokens=tokens, active_features=active, activation_values=act_values,
                 selected_features=selected, logit_tokens=logit_ids,
                 logit_probabilities=logit_probs, adjacency=adjacency, values=values,
                 biases=biases, n_layers=n_layers, complete=len(selected) == n_active)


def _compile_rows(model: nn.Module, mesh: Mesh | None):
    """`_rows` jitted; with a mesh, the chunk's rows split over every device."""
    fn = functools.partial(_rows, model)
    if mesh is None:
        return jax.jit(fn)
    rows = NamedSharding(mesh, P(mesh.axis_names))
    rep = NamedSharding(mesh, P())
    return jax.jit(fn, in_shardings=(rep, rep, rep, rep, rows, rows, rows), out_shardings=rows)


def rows_memory(model: nn.Module, variables: Any, transcoders: Transcoders, tokens: Any,
                chunk_size: int, n_active: int = 64) -> dict[str, int]:
    """XLA's memory analysis of one compiled chunk of `chunk_size` rows for a prompt of
    `len(tokens)` positions and `n_active` active features: bytes of arguments, outputs and
    temporaries (`temp`), as the compiler reports them."""
    variables = nn.meta.unbox(variables)
    tokens = jnp.asarray(tokens)
    n_layers, d = transcoders.n_layers, transcoders.config.d_in
    n_pos = tokens.shape[0]
    k = n_layers if transcoders.is_cross_layer else 1
    sources = _Sources(jnp.zeros(n_active, jnp.int32), jnp.zeros((n_active, k), jnp.int32),
                       jnp.zeros((n_active, k, d)), jnp.zeros((n_layers, n_pos, d)),
                       jnp.zeros((n_pos, d)))
    frozen = jax.tree.map(jnp.asarray, prompt_values(model, variables, transcoders,
                                                     np.asarray(tokens)).frozen)
    compiled = jax.jit(functools.partial(_rows, model)).lower(
        variables, tokens, frozen, sources, jnp.zeros(chunk_size, jnp.int32),
        jnp.zeros(chunk_size, jnp.int32), jnp.zeros((chunk_size, d))).compile()
    m = compiled.memory_analysis()
    return {"arguments": int(m.argument_size_in_bytes), "outputs": int(m.output_size_in_bytes),
            "temp": int(m.temp_size_in_bytes),
            "rows_bytes": int(chunk_size * (n_active + (n_layers + 1) * n_pos) * 4),
            "chunk_size": chunk_size, "n_pos": int(n_pos)}
