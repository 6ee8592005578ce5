"""An attribution graph of an induction model, validated by perturbation (issue 15, experiment 2).

Ameisen et al. 2025, "Circuit Tracing: Revealing Computational Graphs in Language Models": the
replacement model's graph is "a faithful description of the model's mechanisms" to the extent
that interventions on its features in the real model have the effects the graph predicts.

    python -m experiments.attribution_graph --config=configs/attribution_graph.py \\
        --workdir=workdirs/attribution_graph

Trains the 2-layer GPT-2-style LM of configs/train_sae.py (d_model 64, MLPs, induction
sequences over 64 tokens) for 600 steps, a TopK transcoder per layer (512 latents, k 8,
`ln2.hook_normalized` -> `hook_mlp_out`), then builds the graph of one held-out prompt whose
last token the model completes by induction (every active feature a node), prunes it
(node 0.8, edge 0.98) and writes `graph.json` (circuit-tracer's frontend), `graph.png` and
`validation.png`. Validation: each of the `validate_top` most influential features is removed
from the real model (its write subtracted from its layer's MLP output at its position; attention
and later MLPs recomputed), and scaled up by the same amount; the change of the target logit is
compared with the graph's prediction (the perturbation propagated through the graph's edges,
linear in each node's value) and with its direct edge alone.

Measured once at this config (seed 0; 974 s wall, 90 s CPU on the 2 cores shared with 7 other
jobs): transcoders explain 0.93 / 0.95 of the MLP outputs' variance at L0 8; the prompt's target
has p = 0.17 (the model's induction is weak at 600 steps); 384 active features, 466 nodes;
pruning keeps 41 nodes and 184 edges holding 0.88 of the influence; the graph took 41 s (24
tokens, every feature a node, chunks of 64; the first call compiles); completeness error
1.9e-6. Removing each of the 24 most influential features in the real model: the measured
change of the target logit correlates with the graph's prediction at r = 0.987 (the direct edge
alone: 0.980; the largest, -0.91 measured, -1.26 predicted); signs agree on 17 of 24 (the
disagreements are changes below 0.04). Doubling them: r = 0.77 (direct 0.76), signs 14 of 24.

The CLT arm (`--config.transcoders=clt`: one cross-layer transcoder, `jaxinterp.sae.clt`, with
the same TopK encoders, 512 latents and k 8 per layer, trained for the same 1000 steps without
resampling; its layer-0 features also write into layer 1's MLP output), measured once (seed
0; 429 s wall for the whole run including the LM, 114 s CPU on the shared 2 cores): explained
variance 0.93 / 0.96 at L0 8 per layer; the same prompt (target p = 0.17); 384 active features,
466 nodes; pruning keeps 42 nodes and 204 edges holding 0.90 of the influence; graph 14 s;
completeness error 2.9e-6. Removing each of the 24 most influential features: r = 0.979
(direct edge alone 0.977; the largest, -0.37 measured, -0.71 predicted), signs agree on 18 of
24; doubling them: r = 0.79 (direct 0.78). So the CLT does about as well as the per-layer
transcoders here (r 0.979 against 0.987), not better; the default stays per-layer.

Tested at tiny settings by tests/experiments/test_attribution_graph.py (removal r > 0.5 on
three transcoder seeds: 0.94 / 0.77 / 0.70; seeds 1 and 2 are marked slow).
"""

from ml_collections import ConfigDict

from configs import train_sae
from jaxinterp.sae.train import TrainConfig
from jaxinterp.train.config import dataclass_config


def get_config():
    c = ConfigDict()
    c.lm = train_sae.get_config().lm
    # "per_layer": one transcoder per layer (jaxinterp.sae.fit); "clt": one cross-layer
    # transcoder (jaxinterp.sae.clt.fit; the same encoder settings, `train` without resampling).
    c.transcoders = "per_layer"
    c.transcoder = ConfigDict(dict(architecture="topk", d_sae=512, k=8))  # per layer
    # The CLT's penalty ("": topk's none, the paper's tanh otherwise; or "tanh", "l1", "l0",
    # "none"), its weight λ and the c of tanh(c ||W_dec|| a); unused with topk's default.
    c.clt = ConfigDict(dict(penalty="", sparsity_coeff=1e-3, tanh_scale=1.0))
    c.train = dataclass_config(TrainConfig, num_steps=1000, resample_every=250,
                               resample_until=750)
    c.model_batch_size = 32
    c.prompt_len = 24          # tokens of the attributed prompt (a held-out sequence's start)
    c.max_feature_nodes = 0    # 0: every active feature is a node
    c.chunk_size = 64
    c.node_threshold = 0.8
    c.edge_threshold = 0.98
    c.validate_top = 24        # most influential features perturbed in the real model
    return c
