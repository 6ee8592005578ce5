"""Analyses built on `jaxinterp.run`, each a few compiled (and vmapped) calls.

    from jaxinterp import analysis as A
    A.act_patch(model, variables, clean, corrupted, metric, site="resid_pre", by="layer_pos")

One module per concept, with its main function(s) (in `__all__`, importable from the package):

  module          main function(s)                       what it answers
  patching        act_patch                              which activations carry a clean/corrupted
                                                         difference (activation patching)
  tracing         causal_trace                           where a noised subject's answer is restored
                                                         (ROME's causal tracing), one compiled sweep
  path_patching   path_patch                             a sender head's effect through chosen
                                                         receivers only
  attribution     attr_patch                             every activation patch at once, to first
                                                         order (one backward pass)
  eap             edge_attr_patch, edge_patch,           which edges (head -> later head's q/k/v,
                  faithfulness                           MLP, logits) carry it: EAP / EAP-IG, and
                                                         circuits checked by exact edge ablation
  lenses          logit_lens, tuned_lens,                each layer's residual stream (or each MLP
                  neuron_logits                          neuron's output row) read as a next-token
                                                         prediction
  dla             direct_logit_attribution               each component's direct share of a logit
  heads           detection_score, classify_heads        which mechanism an attention head
                                                         implements
  head_scaling    head_scale_sweep                       what scaling one head's attention to
                                                         chosen keys (a sink) does, for every
                                                         (gamma, layer, head) in one call
  editing         rome_edit, relation_neuron_scores      what editing an MLP's stored fact (a
                                                         rank-one or fine-tuning edit) or one
                                                         relation's neurons does
  semi_nmf        semi_nmf                               which neuron groups make up a layer's
                                                         activations (nonnegative codes)
  stats           activation_stats                       sparsity and massive activations, streamed
  steering        steering_vectors, steer                contrastive steering vectors, added to runs
  probes          fit_linear_probe, fit_logistic_probe   whether a property is linearly decodable
  fourier         ipr, fourier_power                     how periodic a weight is over its input
                                                         (grokking's Fourier features)
  icl_predictors  gd_query, ridge_prefix, dmmse_prefix   the reference in-context regression
                                                         predictors a model is compared with
  weights         process_weights                        TransformerLens-style weight processing
  figures         (plot_* functions)                     matplotlib figures for all of the above

The modules' other public names are also importable from the package (`A.induction_score`,
`A.train_tuned_lens`, ...); `help(A.<module>)` lists them with their definitions.
"""

from jaxinterp.analysis import (
    attribution,
    dla,
    eap,
    editing,
    figures,
    fourier,
    head_scaling,
    heads,
    icl_predictors,
    lenses,
    patching,
    path_patching,
    probes,
    semi_nmf,
    stats,
    steering,
    tracing,
    weights,
)
from jaxinterp.analysis.attribution import attr_patch
from jaxinterp.analysis.dla import LogitAttribution, direct_logit_attribution
from jaxinterp.analysis.eap import (
    EdgeGraph,
    EdgeScores,
    edge_attr_patch,
    edge_graph,
    edge_patch,
    faithfulness,
)
from jaxinterp.analysis.editing import relation_neuron_scores, rome_edit
from jaxinterp.analysis.fourier import fourier_power, ipr
from jaxinterp.analysis.head_scaling import head_scale_sweep, redistribute_attention
from jaxinterp.analysis.heads import (
    attention_sink_score,
    classify_heads,
    detection_score,
    duplicate_token_pattern,
    induction_pattern,
    induction_score,
    previous_token_pattern,
    previous_token_score,
    retrieval_score,
    successor_score,
)
from jaxinterp.analysis.icl_predictors import dmmse_prefix, gd_query, ridge_prefix
from jaxinterp.analysis.lenses import (
    TunedLens,
    init_tuned_lens,
    lens_kl,
    load_tuned_lens,
    logit_lens,
    neuron_logits,
    save_tuned_lens,
    train_tuned_lens,
    tuned_lens,
)
from jaxinterp.analysis.patching import act_patch
from jaxinterp.analysis.path_patching import path_patch
from jaxinterp.analysis.probes import (
    ProbeFit,
    fit_linear_probe,
    fit_linear_probe_stream,
    fit_logistic_probe,
    fit_logistic_probe_stream,
    site_batches,
)
from jaxinterp.analysis.stats import ActivationStats, activation_stats
from jaxinterp.analysis.steering import (
    best_site,
    contrastive_activations,
    mean_difference,
    principal_direction,
    principal_directions,
    probe_sites,
    steer,
    steering_vectors,
    strength_sweep,
    subspace_steer,
)
from jaxinterp.analysis.tracing import causal_trace
from jaxinterp.analysis.weights import process_weights

# The modules and their main functions (the table above). The other names imported here stay
# importable from the package (`A.induction_score`, as the README and colabs use them).
__all__ = [
    "act_patch",
    "activation_stats",
    "attr_patch",
    "attribution",
    "causal_trace",
    "classify_heads",
    "detection_score",
    "direct_logit_attribution",
    "dla",
    "dmmse_prefix",
    "eap",
    "edge_attr_patch",
    "edge_patch",
    "editing",
    "faithfulness",
    "figures",
    "fit_linear_probe",
    "fit_logistic_probe",
    "fourier",
    "fourier_power",
    "gd_query",
    "head_scale_sweep",
    "head_scaling",
    "heads",
    "icl_predictors",
    "ipr",
    "lenses",
    "logit_lens",
    "neuron_logits",
    "patching",
    "path_patch",
    "path_patching",
    "probes",
    "process_weights",
    "relation_neuron_scores",
    "ridge_prefix",
    "rome_edit",
    "semi_nmf",
    "stats",
    "steer",
    "steering",
    "steering_vectors",
    "tracing",
    "tuned_lens",
    "weights",
]
