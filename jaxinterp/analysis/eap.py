"""Edge attribution patching (EAP, EAP-IG) and exact edge-level patching on transformers.

The computational graph. A transformer's residual stream is a sum of component outputs, so a
later component's input is a sum over the earlier ones: each (earlier component, later input)
pair is an EDGE, and a circuit is a set of edges (Elhage et al. 2021; Conmy et al. 2023).
Nodes and edges are named as in Hanna et al.'s EAP-IG library:

  senders (what writes to the residual stream)
    input          the residual stream entering block 0 (`blocks.0.hook_resid_pre`: token and
                   position embeddings, and register tokens if any)
    a{l}.h{h}      head h of layer l: its output z_h W_O[h] (`blocks.{l}.attn.hook_result`)
    m{l}           the MLP of layer l (`blocks.{l}.hook_mlp_out`)
  receivers (what reads from it)
    a{l}.h{h}<q>   the query input of head h of layer l (`blocks.{l}.hook_q_input`)
    a{l}.h{g}<k>   the key input of (KV) head g (`blocks.{l}.hook_k_input`); <v> likewise
    m{l}           the input of the MLP of layer l (`blocks.{l}.hook_mlp_in`)
    logits         the final residual stream, read by ln_final and the unembedding
                   (`blocks.{n_layers - 1}.hook_resid_post`)
  edges            "sender->receiver", e.g. "a0.h3->a1.h0<k>", for every sender upstream of the
                   receiver: the input and earlier layers for a head's q/k/v; also the same
                   layer's heads for an MLP; everything for the logits.

The attention output bias b_O is constant (the same on every input) and belongs to no edge.
Scores and masks are `[sender, receiver]` arrays in `EdgeGraph` order (senders: input, then per
layer its heads and MLP; receivers: per layer the heads' q, then k, then v, then the MLP, and the
logits last); entries that are not edges are 0 / False.

EAP (Syed, Rager & Conmy 2023, "Attribution Patching Outperforms Automated Circuit Discovery")
estimates, to first order, how the metric changes when edge s -> r is corrupted, i.e. when
receiver r reads sender s's output from the corrupted run instead of the clean one:

    score(s -> r) = (a_s(corrupted) - a_s(clean)) . d metric / d input_r   (at the clean run)

summed over batch, positions and d_model, with a_s the sender's output and input_r the
receiver's own input. A forward pass of the corrupted input gives every a_s(corrupted); one
forward and backward pass of the clean input gives every a_s(clean) and the gradient with
respect to every receiver's input at once (the model's `use_split_qkv_input` path gives each
head its own input site), so all edges cost two forward passes and one backward pass, in one
compiled call.

EAP-IG (Hanna, Pezzelle & Belinkov 2024, "Have Faith in Faithfulness: Going Beyond Circuit
Overlap When Finding Model Mechanisms") replaces the gradient by its average along the straight
path from the corrupted to the clean input embeddings, with z, z' the clean and corrupted
`input` and m = `n_steps`:

    score(s -> r) = (a_s(corrupted) - a_s(clean)) . 1/m sum_{k=1..m} d metric / d input_r
                                                     (run with input = z' + k/m (z - z'))

a right Riemann sum of the integral over the path, so that one step is EAP exactly (k = m is
the clean run). The reference code (github.com/hannamw/EAP-IG, `get_scores_eap_ig`) sums
k = 0..m-1 instead, a left Riemann sum whose one-step case is the gradient at the corrupted
input; the two agree as m grows (its default is m = 30). The m backward passes run in one
compiled call (`lax.scan`).

Circuits and faithfulness. `EdgeScores.top(n)` is the circuit of the n edges with the largest
|score|. `edge_patch` runs the CLEAN input with every edge outside a circuit ablated, exactly:
receiver r's input is the sum over its senders of the sender's output in this very run where
the edge is kept, and of the sender's output in the corrupted run where it is ablated (as
Hanna et al.'s `evaluate_graph`). It is computed in one forward pass: the receivers' input sites
add `sum_{s ablated} (a_s(corrupted) - a_s(this run))` to the residual stream they read, with
this run's a_s read at the sender sites earlier in the same trace. With every edge kept this is
the clean run; with none, the corrupted run. `faithfulness` normalises it to
(metric(circuit) - metric(corrupted)) / (metric(clean) - metric(corrupted)).

    from jaxinterp import analysis as A
    def metric(logits):  # mean logit difference at the last position
        return (logits[:, -1, 7] - logits[:, -1, 3]).mean()
    scores = A.edge_attr_patch(model, variables, clean, corrupted, metric, n_steps=5)  # EAP-IG
    scores.ranked(5)                              # [("a0.h1->a1.h0<k>", 1.7), ...]
    circuit = scores.top(20)                      # bool [sender, receiver]
    A.faithfulness(model, variables, clean, corrupted, metric, circuit)

Any `jaxinterp.models.Transformer` (scanned or not, any attention variant but gated attention)
works: the analyses run its unrolled `use_split_qkv_input` twin, which computes the same
numbers from the same parameters.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import hooks
from jaxinterp.analysis.patching import Metric, check_metric, check_pair
from jaxinterp.interventions import Add, Patch
from jaxinterp.models.transformer import Transformer, check_transformer, unrolled_params
from jaxinterp.run import run

_INPUT_SITE = "blocks.0.hook_resid_pre"


@dataclasses.dataclass(frozen=True)
class EdgeGraph:
    """The nodes and edges of a transformer's computational graph (module docstring).

    Attributes:
      senders: sender names, in score-row order.
      receivers: receiver names, in score-column order.
      sender_sites: `(site name, number of senders it holds)` in sender order: the input and
        MLP sites hold one, `attn.hook_result` one per head (its head axis).
      receiver_sites: `(site name, number of receivers it holds)` in receiver order.
      sender_stage, receiver_stage: each node's place in the forward pass; s -> r is an edge
        exactly when `sender_stage[s] < receiver_stage[r]`.
    """

    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    sender_sites: tuple[tuple[str, int], ...]
    receiver_sites: tuple[tuple[str, int], ...]
    sender_stage: tuple[int, ...]
    receiver_stage: tuple[int, ...]

    @property
    def mask(self) -> np.ndarray:
        """bool [sender, receiver]: which pairs are edges."""
        return np.asarray(self.sender_stage)[:, None] < np.asarray(self.receiver_stage)[None, :]

    @property
    def n_edges(self) -> int:
        return int(self.mask.sum())

    def edges(self) -> list[str]:
        """Every edge's name, `"sender->receiver"`, row by row."""
        rows, cols = np.nonzero(self.mask)
        return [f"{self.senders[i]}->{self.receivers[j]}"
                for i, j in zip(rows, cols, strict=True)]

    def index(self, edge: str) -> tuple[int, int]:
        """`(sender row, receiver column)` of an edge name such as `"a0.h1->a1.h0<k>"`."""
        if not isinstance(edge, str) or edge.count("->") != 1:
            raise ValueError(f"edge {edge!r} must be a string 'sender->receiver', e.g. "
                             f"{self.edges()[0]!r}")
        s, r = edge.split("->")
        if s not in self.senders:
            raise ValueError(f"edge {edge!r}: unknown sender {s!r}; valid senders: "
                             f"{_listing(self.senders)}")
        if r not in self.receivers:
            raise ValueError(f"edge {edge!r}: unknown receiver {r!r}; valid receivers: "
                             f"{_listing(self.receivers)}")
        i, j = self.senders.index(s), self.receivers.index(r)
        if not self.mask[i, j]:
            raise ValueError(f"{edge!r} is not an edge: receiver {r!r} reads the residual stream "
                             f"before sender {s!r} writes to it")
        return i, j

    def edge_mask(self, edges: Sequence[str]) -> np.ndarray:
        """bool [sender, receiver], True at the named edges."""
        if isinstance(edges, str):
            edges = (edges,)
        mask = np.zeros(self.mask.shape, bool)
        for e in edges:
            mask[self.index(e)] = True
        return mask


def _listing(names: Sequence[str], n: int = 12) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


def edge_graph(model: nn.Module) -> EdgeGraph:
    """The computational graph of a `jaxinterp.models.Transformer` (module docstring)."""
    c = check_transformer(model, "edge_graph")
    n_kv = c.n_key_value_heads or c.n_heads
    senders, s_sites, s_stage = ["input"], [(_INPUT_SITE, 1)], [0]
    receivers, r_sites, r_stage = [], [], []
    for layer in range(c.n_layers):
        attn, mlp = 2 * layer + 1, 2 * layer + 2  # stages: attention reads, then the MLP
        senders += [f"a{layer}.h{h}" for h in range(c.n_heads)]
        s_sites.append((f"blocks.{layer}.attn.hook_result", c.n_heads))
        s_stage += [attn] * c.n_heads
        for which, n in (("q", c.n_heads), ("k", n_kv), ("v", n_kv)):
            receivers += [f"a{layer}.h{h}<{which}>" for h in range(n)]
            r_sites.append((f"blocks.{layer}.hook_{which}_input", n))
            r_stage += [attn] * n
        if not c.attn_only:
            senders.append(f"m{layer}")
            s_sites.append((f"blocks.{layer}.hook_mlp_out", 1))
            s_stage.append(mlp)
            receivers.append(f"m{layer}")
            r_sites.append((f"blocks.{layer}.hook_mlp_in", 1))
            r_stage.append(mlp)
    receivers.append("logits")
    r_sites.append((f"blocks.{c.n_layers - 1}.hook_resid_post", 1))
    r_stage.append(2 * c.n_layers + 1)
    return EdgeGraph(tuple(senders), tuple(receivers), tuple(s_sites), tuple(r_sites),
                     tuple(s_stage), tuple(r_stage))


@dataclasses.dataclass(frozen=True)
class EdgeScores:
    """Attribution scores of every edge.

    Attributes:
      graph: the `EdgeGraph` the scores index.
      scores: float32 [sender, receiver]; 0 where there is no edge. Each entry estimates
        metric(clean run with that one edge corrupted) - metric(clean run).
    """

    graph: EdgeGraph
    scores: jax.Array

    def top(self, n: int, absolute: bool = True) -> np.ndarray:
        """bool [sender, receiver]: the circuit of the `n` edges with the largest |score| (the
        largest score if not `absolute`)."""
        n_edges = self.graph.n_edges
        if not isinstance(n, int | np.integer) or isinstance(n, bool) or not 0 <= n <= n_edges:
            raise ValueError(f"n={n!r} must be an int in 0..{n_edges} (the number of edges)")
        order = self._order(absolute)[:n]
        mask = np.zeros(self.graph.mask.shape, bool)
        mask.flat[order] = True
        return mask

    def ranked(self, n: int | None = None, absolute: bool = True) -> list[tuple[str, float]]:
        """`[(edge name, score), ...]` for the `n` (default all) top edges, best first."""
        s = np.asarray(self.scores)
        out = []
        for k in self._order(absolute)[:n]:
            i, j = np.unravel_index(k, s.shape)
            out.append((f"{self.graph.senders[i]}->{self.graph.receivers[j]}", float(s[i, j])))
        return out

    def _order(self, absolute: bool) -> np.ndarray:
        s = np.asarray(self.scores, np.float64)
        key = np.where(self.graph.mask, np.abs(s) if absolute else s, -np.inf).ravel()
        order = np.argsort(-key, kind="stable")
        return order[: self.graph.n_edges]


# -- the split twin and its sites --------------------------------------------------------------

def _twin(model: nn.Module, variables: Any) -> tuple[Transformer, dict]:
    """The unrolled, non-remat `use_split_qkv_input` twin of `model` and unrolled variables."""
    c = check_transformer(model, "edge attribution patching")
    if c.gated_attention:
        raise ValueError("edge attribution patching needs per-head inputs, which gated attention "
                         "(gated_attention=True) does not have: its gate reads the whole input")
    twin = Transformer(dataclasses.replace(c, use_split_qkv_input=True, scan_layers=False,
                                           remat=False))
    return twin, {"params": unrolled_params(variables)}


def _stack_senders(graph: EdgeGraph, acts: dict[str, jax.Array]) -> jax.Array:
    """{sender site: activation} -> float32 [batch, pos, sender, d_model]."""
    return jnp.concatenate([_per_node(acts[name]) for name, _ in graph.sender_sites], axis=2)


def _stack_receivers(graph: EdgeGraph, grads: dict[str, jax.Array]) -> jax.Array:
    """{receiver site: gradient} -> float32 [batch, pos, receiver, d_model]."""
    return jnp.concatenate([_per_node(grads[name]) for name, _ in graph.receiver_sites], axis=2)


def _per_node(x: jax.Array) -> jax.Array:
    """A site's value as float32 [batch, pos, node, d_model] (head sites have a head axis)."""
    return (x if x.ndim == 4 else x[:, :, None]).astype(jnp.float32)


def _receiver_grads(model, variables, tokens, metric, graph, input_value=None):
    """(d metric / d (every receiver's input) on `tokens` [batch, pos, receiver, d_model], the
    senders' outputs in that run [batch, pos, sender, d_model]); `input_value` [batch, pos,
    d_model] replaces the `input` node (EAP-IG's interpolation)."""
    names = tuple(name for name, _ in graph.receiver_sites)
    senders = tuple(name for name, _ in graph.sender_sites)
    shapes = dict(jax.eval_shape(
        lambda: run(model, variables, tokens, capture=names)[1]).items())

    def f(deltas):
        ivs = [] if input_value is None else [Patch(_INPUT_SITE, input_value)]
        ivs += [Add(name, deltas[name]) for name in names]
        out, cache = run(model, variables, tokens, capture=senders, interventions=ivs)
        return metric(out), cache

    zeros = {n: jnp.zeros(s.shape, s.dtype) for n, s in shapes.items()}
    grads, acts = jax.grad(f, has_aux=True)(zeros)
    return _stack_receivers(graph, grads), _stack_senders(graph, acts)


@functools.partial(jax.jit, static_argnames=("model", "metric", "n_steps"))
def _edge_scores(variables, clean, corrupted, *, model, metric, n_steps):
    graph = edge_graph(model)
    names = tuple(name for name, _ in graph.sender_sites)
    _, corrupted_acts = run(model, variables, corrupted, capture=names)
    corrupted_out = _stack_senders(graph, corrupted_acts)
    # EAP: the gradient at the clean run, whose forward pass also gives the clean outputs
    grads, clean_out = _receiver_grads(model, variables, clean, metric, graph)
    diff = corrupted_out - clean_out
    if n_steps is not None:  # EAP-IG: the mean gradient at input = z' + k/m (z - z'), k = 1..m
        z, z_corrupted = clean_out[:, :, 0], corrupted_out[:, :, 0]  # the `input` node

        def step(total, k):
            x = z_corrupted + (k / n_steps) * (z - z_corrupted)
            return total + _receiver_grads(model, variables, clean, metric, graph, x)[0], None

        zero = jnp.zeros((*diff.shape[:2], len(graph.receivers), diff.shape[-1]), jnp.float32)
        grads, _ = jax.lax.scan(step, zero, jnp.arange(1, n_steps + 1, dtype=jnp.float32))
        grads = grads / n_steps
    scores = jnp.einsum("bpsm,bprm->sr", diff, grads)  # contract batch, pos, d_model
    return jnp.where(graph.mask, scores, 0.0)


def _check_inputs(model, variables, clean, corrupted, metric):
    check_pair(clean, corrupted)
    twin, twin_vars = _twin(model, variables)
    check_metric(twin, twin_vars, clean, metric)
    return twin, twin_vars


def edge_attr_patch(model: nn.Module, variables: Any, clean_inputs: jax.Array,
                    corrupted_inputs: jax.Array, metric: Metric, *, n_steps: int | None = None
                    ) -> EdgeScores:
    """Edge attribution patching: a first-order score for every edge of the graph.

    Args:
      model, variables: a `jaxinterp.models.Transformer` and its variables.
      clean_inputs, corrupted_inputs: tokens of the same shape [batch, pos].
      metric: `metric(logits [batch, pos, vocab]) -> scalar`, hashable (a static argument of
        `jax.jit`), e.g. the mean logit difference at the last position.
      n_steps: None: EAP (the gradient at the clean run). An int m >= 1: EAP-IG (Hanna et al.
        2024), the gradient averaged over m runs whose input embeddings go from the corrupted
        towards the clean ones, `z' + k/m (z - z')` for k = 1..m; m = 1 is EAP. The m
        backward passes run in one compiled call (`lax.scan`).

    Returns:
      `EdgeScores`: float32 [sender, receiver] `(a_s(corrupted) - a_s(clean)) . d metric /
      d input_r`, summed over batch, positions and d_model (module docstring).

    Raises:
      ValueError (before anything compiles): not a Transformer, gated attention, inputs of
        different shapes, a metric that is not hashable or not a scalar, `n_steps` not None
        or an int >= 1.
    """
    if n_steps is not None and (not isinstance(n_steps, int | np.integer)
                                or isinstance(n_steps, bool) or n_steps < 1):
        raise ValueError(f"n_steps={n_steps!r} must be an int >= 1 (EAP-IG: the number of "
                         "points on the path from the corrupted to the clean input), or None "
                         "(EAP)")
    twin, twin_vars = _check_inputs(model, variables, clean_inputs, corrupted_inputs, metric)
    scores = _edge_scores(twin_vars, clean_inputs, corrupted_inputs, model=twin, metric=metric,
                          n_steps=None if n_steps is None else int(n_steps))
    return EdgeScores(edge_graph(twin), scores)


# -- exact edge-level patching -----------------------------------------------------------------

class _EdgeAblation:
    """A `hooks.Edit` at every site (pattern "*") that ablates edges exactly (module docstring).

    At a sender site it records this run's output; at a receiver's input site it adds
    `sum_{s ablated} (a_s(corrupted) - a_s(this run))` per receiver. Its record lives for one
    trace of one unrolled forward pass (the senders come before their receivers in it).
    """

    site = "*"

    def __init__(self, graph: EdgeGraph, corrupted: jax.Array, ablate: jax.Array):
        self.graph = graph
        self.corrupted = corrupted  # float32 [batch, pos, sender, d_model]
        self.ablate = ablate  # float32 [sender, receiver], 1 where the edge is ablated
        self.live: list[jax.Array] = []  # this run's sender outputs, [batch, pos, n, d_model]
        self.senders = {name: n for name, n in graph.sender_sites}
        self.receivers = {}
        col = 0
        for name, n in graph.receiver_sites:
            self.receivers[name] = (col, n)
            col += n

    def __call__(self, x: jax.Array, view: hooks.SiteView) -> jax.Array:
        if view.name in self.senders:
            self.live.append(_per_node(x))
        if view.name in self.receivers:
            col, n = self.receivers[view.name]
            live = jnp.concatenate(self.live, axis=2)  # the senders so far: all upstream ones
            k = live.shape[2]
            upstream = self.graph.mask[:, col]
            if not (upstream[:k].all() and not upstream[k:].any()):  # trace order = graph order
                raise AssertionError(f"{view.name}: {k} senders recorded, graph says "
                                     f"{int(upstream.sum())}")
            ablate = self.ablate[:k, col:col + n]  # [upstream sender, receiver]
            delta = jnp.einsum("bpsm,sn->bpnm", self.corrupted[:, :, :k] - live, ablate)
            x = x + (delta if x.ndim == 4 else delta[:, :, 0]).astype(x.dtype)
        return x


def _ablated_output(model, variables, tokens, corrupted, ablate):
    graph = edge_graph(model)
    edit = _EdgeAblation(graph, corrupted, ablate)
    session = hooks.Session(capture=(), interventions=(edit,))
    with hooks.active(session):
        return model.apply(variables, tokens)


@functools.partial(jax.jit, static_argnames=("model", "metric"))
def _edge_patch_metrics(variables, clean, corrupted, keep, *, model, metric):
    """metric of the clean run with the edges outside each `keep` [k, sender, receiver]
    ablated: [k]."""
    graph = edge_graph(model)
    names = tuple(name for name, _ in graph.sender_sites)
    _, acts = run(model, variables, corrupted, capture=names)
    stacked = _stack_senders(graph, acts)

    def one(k):
        ablate = jnp.where(graph.mask, 1.0 - k.astype(jnp.float32), 0.0)
        return metric(_ablated_output(model, variables, clean, stacked, ablate))

    return jax.vmap(one)(keep)


def _keep_masks(graph: EdgeGraph, keep) -> tuple[np.ndarray, bool]:
    """`keep` as bool [k, sender, receiver] and whether it was a single circuit."""
    if isinstance(keep, str) or (isinstance(keep, Sequence) and keep
                                 and all(isinstance(e, str) for e in keep)):
        return graph.edge_mask(keep)[None], True
    if isinstance(keep, Sequence) and not keep:
        return np.zeros((1, *graph.mask.shape), bool), True
    k = np.asarray(keep)
    shape = graph.mask.shape
    if k.dtype != bool or k.shape[-2:] != shape or k.ndim not in (2, 3):
        raise ValueError(f"keep must be edge names ('sender->receiver') or a bool mask "
                         f"[sender, receiver] = {shape} (or [n_circuits, *{shape}]), got "
                         f"dtype {k.dtype} shape {k.shape}")
    return (k[None], True) if k.ndim == 2 else (k, False)


def edge_patch(model: nn.Module, variables: Any, clean_inputs: jax.Array,
               corrupted_inputs: jax.Array, metric: Metric, keep) -> jax.Array:
    """The metric of the clean run with every edge outside the circuit `keep` ablated to its
    corrupted value, exactly (module docstring).

    Args:
      model, variables, clean_inputs, corrupted_inputs, metric: as `edge_attr_patch`.
      keep: the circuit: edge names (`["input->a0.h0<q>", ...]`), a bool [sender, receiver]
        mask (e.g. `EdgeScores.top(n)`; non-edge entries are ignored), or a stack of masks
        [n_circuits, sender, receiver], evaluated in one vmapped call.

    Returns:
      float32 scalar, or [n_circuits] for a stack of masks.

    Raises:
      ValueError: as `edge_attr_patch`, and unknown sender or receiver names, pairs that are
        not edges, or a mask of the wrong shape.
    """
    twin, twin_vars = _check_inputs(model, variables, clean_inputs, corrupted_inputs, metric)
    masks, single = _keep_masks(edge_graph(twin), keep)
    out = _edge_patch_metrics(twin_vars, clean_inputs, corrupted_inputs, masks, model=twin,
                              metric=metric).astype(jnp.float32)
    return out[0] if single else out


def faithfulness(model: nn.Module, variables: Any, clean_inputs: jax.Array,
                 corrupted_inputs: jax.Array, metric: Metric, keep) -> jax.Array:
    """`(edge_patch(keep) - metric(corrupted)) / (metric(clean) - metric(corrupted))`: 1 when
    the circuit alone recovers the clean behaviour, 0 when it does no better than the corrupted
    run. Arguments and shapes as `edge_patch`."""
    twin, twin_vars = _check_inputs(model, variables, clean_inputs, corrupted_inputs, metric)
    graph = edge_graph(twin)
    masks, single = _keep_masks(graph, keep)
    ends = np.stack([graph.mask, np.zeros_like(graph.mask)])  # everything kept / nothing kept
    m = _edge_patch_metrics(twin_vars, clean_inputs, corrupted_inputs,
                            np.concatenate([masks, ends]), model=twin, metric=metric)
    clean, corrupted = m[-2], m[-1]
    out = ((m[:-2] - corrupted) / (clean - corrupted)).astype(jnp.float32)
    return out[0] if single else out
