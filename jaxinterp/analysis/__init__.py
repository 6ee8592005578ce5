"""Analyses built on `jaxinterp.run`, each a few compiled (and vmapped) calls.

    from jaxinterp import analysis as A
    A.act_patch(model, variables, clean, corrupted, metric, site="resid_pre", by="layer_pos")

Modules, one concept each:
  patching, path_patching, attribution   activation, path and attribution patching
  lenses       logit lens and tuned lens       dla       direct logit attribution
  heads        head detectors                  stats     activation statistics over a dataset
  steering     steering vectors and sweeps     probes    linear and logistic probes
  weights      TransformerLens-style weight processing
  figures      matplotlib figures for all of the above
"""

from jaxinterp.analysis import (
    attribution,
    dla,
    figures,
    heads,
    lenses,
    patching,
    path_patching,
    probes,
    stats,
    steering,
    weights,
)
from jaxinterp.analysis.attribution import attr_patch
from jaxinterp.analysis.dla import LogitAttribution, direct_logit_attribution
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
from jaxinterp.analysis.lenses import (
    TunedLens,
    init_tuned_lens,
    lens_kl,
    load_tuned_lens,
    logit_lens,
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
    mean_difference,
    principal_direction,
    steer,
    steering_vectors,
    strength_sweep,
)
from jaxinterp.analysis.weights import process_weights

__all__ = [
    "ActivationStats",
    "LogitAttribution",
    "ProbeFit",
    "TunedLens",
    "act_patch",
    "activation_stats",
    "attention_sink_score",
    "attr_patch",
    "attribution",
    "classify_heads",
    "detection_score",
    "direct_logit_attribution",
    "dla",
    "duplicate_token_pattern",
    "figures",
    "fit_linear_probe",
    "fit_linear_probe_stream",
    "fit_logistic_probe",
    "fit_logistic_probe_stream",
    "heads",
    "induction_pattern",
    "induction_score",
    "init_tuned_lens",
    "lens_kl",
    "lenses",
    "load_tuned_lens",
    "logit_lens",
    "mean_difference",
    "patching",
    "path_patch",
    "path_patching",
    "previous_token_pattern",
    "previous_token_score",
    "principal_direction",
    "probes",
    "process_weights",
    "retrieval_score",
    "save_tuned_lens",
    "site_batches",
    "stats",
    "steer",
    "steering",
    "steering_vectors",
    "strength_sweep",
    "successor_score",
    "train_tuned_lens",
    "tuned_lens",
    "weights",
]
