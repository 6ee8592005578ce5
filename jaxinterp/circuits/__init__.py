"""Circuits from features: attribution graphs on a replacement model of transcoders.

    from jaxinterp import circuits
    tc = circuits.Transcoders.stack(params_per_layer, configs_per_layer)
    graph = circuits.attribute(model, variables, tc, tokens, max_feature_nodes=256)
    kept = circuits.prune(graph.adjacency, graph.logit_probabilities, graph.n_features,
                          graph.n_pos)
    circuits.write_json(graph, kept, "graph.json", token_strings)   # circuit-tracer's frontend
    circuits.plot_graph(graph, kept, "graph.png")

Modules: `replacement` (the frozen local replacement model of a prompt, with per-layer or
cross-layer transcoders), `attribution` (edges as batched VJPs, chunked and shardable, in
influence order), `prune` (influence, pruning), `export` (circuit-tracer JSON, PNG), `weights`
(input-invariant feature-to-feature connections through the residual stream, Dunefsky et al.).
"""

from jaxinterp.circuits import weights
from jaxinterp.circuits.attribution import Graph, attribute, rows_memory, salient_logits
from jaxinterp.circuits.export import graph_json, plot_graph, write_json
from jaxinterp.circuits.prune import Pruned, influence, normalize, prune
from jaxinterp.circuits.replacement import Prompt, Transcoders, prompt_values, reads

__all__ = ["Graph", "Prompt", "Pruned", "Transcoders", "attribute", "graph_json", "influence",
           "normalize", "plot_graph", "prompt_values", "prune", "reads", "rows_memory",
           "salient_logits", "weights", "write_json"]
