"""Influence and pruning of attribution graphs (circuit-tracer's `graph.py`, the 2025 paper's
"Graph pruning" appendix).

With A the adjacency made non-negative and row-normalised (|A[t, s]| / sum_s |A[t, s]|), the
influence of every node on the logits is w A + w A^2 + ... (w: the logit probabilities on the
logit nodes), a power series that terminates because the graph is acyclic. Nodes are kept
until they hold `node_threshold` of the total influence; edges are then scored by the influence
of their target times their normalised weight and kept until `edge_threshold` of the edge
mass; nodes left without outgoing (features, errors) or incoming (features) edges go, until
nothing changes. Tokens and logits are always kept.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def normalize(matrix: np.ndarray) -> np.ndarray:
    """|matrix| with each row summing to 1 (all-zero rows stay zero)."""
    m = np.abs(np.asarray(matrix, np.float64))
    return m / np.maximum(m.sum(1, keepdims=True), 1e-10)


def influence(normalized: np.ndarray, weights: np.ndarray, max_iter: int = 1000) -> np.ndarray:
    """weights A + weights A^2 + ... for A = `normalized` [nodes, nodes] (rows: targets);
    `weights` [nodes]. A RuntimeError if the series does not end (a cycle)."""
    current = weights @ normalized
    total = current.copy()
    for _ in range(max_iter):
        if not current.any():
            return total
        current = current @ normalized
        total += current
    raise RuntimeError(f"influence did not converge in {max_iter} iterations (a cycle?)")


def partial_influences(rows: np.ndarray, logit_probs: np.ndarray, row_nodes: np.ndarray,
                       n_nodes: int, max_iter: int = 128) -> np.ndarray:
    """Influence on the logits [n_nodes] from the rows computed so far: `rows` [r, n_nodes]
    (the incoming edges of nodes `row_nodes` [r]; logit rows first, in the order of
    `logit_probs`). What the attribution loop ranks unvisited features by."""
    norm = normalize(rows)
    prod = np.zeros(max(n_nodes, int(row_nodes.max()) + 1))
    prod[row_nodes[:len(logit_probs)]] = logit_probs
    total = np.zeros(n_nodes)
    for _ in range(max_iter):
        prod_rows = prod[row_nodes] @ norm  # [n_nodes]: through one more edge
        if not prod_rows.any():
            return total
        total += prod_rows
        prod = np.zeros_like(prod)
        prod[:n_nodes] = prod_rows
    raise RuntimeError(f"influence did not converge in {max_iter} iterations")


def _threshold(scores: np.ndarray, fraction: float) -> float:
    """The score above which the top scores hold `fraction` of the total."""
    s = np.sort(np.asarray(scores).ravel())[::-1]
    total = s.sum()
    if total <= 0:
        return np.inf
    i = int(np.searchsorted(np.cumsum(s) / total, fraction))
    return float(s[min(i, len(s) - 1)])


@dataclasses.dataclass
class Pruned:
    """What `prune` keeps.

    node_mask [nodes], edge_mask [nodes, nodes] (rows targets); node_influence [nodes] (on the
    logits, before pruning); cumulative [nodes] (each node's rank as the share of total
    influence held by nodes at least as influential: circuit-tracer's `influence` field);
    kept_influence: the share of the total node influence held by the kept nodes.
    """

    node_mask: np.ndarray
    edge_mask: np.ndarray
    node_influence: np.ndarray
    cumulative: np.ndarray
    kept_influence: float


def prune(adjacency: np.ndarray, logit_probs: np.ndarray, n_features: int, n_tokens: int,
          node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
    """Prunes a graph whose nodes are [features (n_features), errors, tokens (n_tokens),
    logits (len(logit_probs))], as circuit-tracer's `prune_graph`."""
    for name, v in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name}={v} must be in [0, 1]")
    n = adjacency.shape[0]
    n_logits = len(logit_probs)
    weights = np.zeros(n)
    weights[n - n_logits:] = logit_probs
    node_influence = influence(normalize(adjacency), weights)
    node_mask = node_influence >= _threshold(node_influence, node_threshold)
    node_mask[n - n_logits - n_tokens:] = True
    pruned = np.where(node_mask[:, None] & node_mask[None, :], adjacency, 0.0)
    norm = normalize(pruned)
    edge_scores = norm * (influence(norm, weights) + weights)[:, None]
    edge_mask = edge_scores >= _threshold(edge_scores, edge_threshold)
    inner = n - n_logits - n_tokens  # features and errors
    while True:
        old = node_mask.copy()
        edge_mask &= node_mask[:, None] & node_mask[None, :]
        node_mask[:inner] &= edge_mask[:, :inner].any(0)  # keeps an outgoing edge
        node_mask[:n_features] &= edge_mask[:n_features].any(1)  # keeps an incoming edge
        if (node_mask == old).all():
            break
    order = np.argsort(-node_influence, kind="stable")
    cumulative = np.zeros(n)
    total = node_influence.sum()
    cumulative[order] = np.cumsum(node_influence[order]) / max(total, 1e-12)
    kept = float(node_influence[node_mask].sum() / max(total, 1e-12))
    return Pruned(node_mask, edge_mask, node_influence, cumulative, kept)
