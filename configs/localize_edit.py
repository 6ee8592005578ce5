"""Localisation vs editing (Hase et al. 2023, "Does Localization Inform Editing? Surprising
Differences in Causality-Based Localization vs. Knowledge Editing in Language Models").

    python -m experiments.localize_edit --config=configs/localize_edit.py \
        --workdir=workdirs/localize_edit

Claim (abstract): "localization conclusions from representation denoising (also known as
Causal Tracing) do not provide any insight into which model MLP layer would be best to edit
in order to override an existing stored fact with a new one"; "which layer we edit is a far
better predictor of performance" (the R^2 of edit success on the tracing effect is near zero,
on the layer much larger).

Setup (method: the experiment's module docstring): the factual-recall world of
`base_model_config()` (32 subjects x 4 relations, 8 attributes per relation), closed-book
prompts only; its base model with 4 layers instead of 2 (d_model 64, 4 heads, d_mlp 256),
trained by `jaxinterp.train.train` for 600 steps per seed (p(answer) ~1.0 on every fact).
Per seed 48 facts, each traced (MLP output restored at the edited token, 10 noise draws at 3x
the subject embeddings' std: p* 0.47-0.55 of p 1.0) and edited at each of the 4 layers to a
new attribute of the same relation (p(new) ~0 before): 192 ROME edits (ROME's gpt2-xl
hyperparameters: 20 steps, lr 0.5, weight decay 0.5, clamp 4) and 192 fine-tuning edits (20
Adam steps at 1e-2 on the layer's W_out), each set one compiled vmapped call.
The edited token is the relation token (`edit_token="last"`), not ROME's subject_last: on this
model ROME's v* optimisation at the subject's last token stalls (NLL of the new attribute
10-15 after 20-100 steps, with or without weight decay, at clamp factors 4 to 20) and the
edits fail (rewrite score ~0 on most facts; a seed-0 run: R^2 tracing 0.14, layer 0.13).

Runtime: 1342 s wall on the shared machine at high load (load average 11-21 on 2 cores; 900 s
of it the three trainings, run alongside relation_neurons), 217 s user + 12 s sys.

Measured (seeds 0 / 1 / 2):
  MLP tracing effect at the relation token, by layer (mean over facts): 0.40 0.17 0.12 0.12 /
    0.43 0.14 0.11 0.12 / 0.44 0.35 0.23 0.22: it peaks at layer 0.
  ROME mean rewrite score by layer: 0.94 0.85 0.65 0.72 / 0.96 0.73 0.56 0.73 / 1.00 1.00
    0.92 0.98 (layer 0 best, or tied, on every seed; success p'(new) > 0.5 on 56-100% of the edits).
  Fine-tuning: 0.94 / 0.96 / 1.00 at every layer (the same facts fail at every layer).
  R^2 of the ROME rewrite score: tracing 0.081 / 0.076 / 0.006, layer 0.089 / 0.114 / 0.063,
    both 0.115 / 0.127 / 0.063 (mean: tracing 0.054, layer 0.089). Fine-tuning: tracing
    0.012 / 0.000 / 0.053, layer 0.000 / 0.000 / 0.235.
  So: the layer predicts edit success better than the tracing effect on 3 / 3 seeds (ROME),
  as Hase et al. find, and the tracing effect explains almost none of it (<= 8%), as they
  find; but here the layer does not explain most of the variance either (<= 11%): which
  facts are editable at all varies more than layers do. The paper's "layer explains much
  more" part is NOT reproduced at this scale; nor is tracing "uninformative" in the mean:
  the layer with the largest mean tracing effect (0) is also the best layer to edit. Per
  fact, the best layer is the largest-tracing layer for 50% / 81% / 25% of the facts.
"""

from ml_collections import ConfigDict

from configs.factual_recall import base_model_config


def get_config():
    c = ConfigDict()
    c.seeds = (0, 1, 2)  # base-model seeds (one jaxinterp.train.train run each)
    c.base = base_model_config(context_prob=0.0, num_train=4096, num_test=256)
    c.base.model.n_layers = 4
    c.base.num_train_steps = 600
    c.base_workdir = ""  # "" means <workdir>; base models go to <base_workdir>/base_seed{s}
    c.share_base = False  # True: every seed analyses the base model of seeds[0] (only the
    # analysis draws differ: cheaper, but three seeds of one model)
    c.n_facts = 48  # facts edited per seed (each at every layer)
    c.methods = ("rome", "finetune")
    c.edit_token = "last"  # the relation token; "subject_last": ROME's fact token (see above)
    c.trace_site = "mlp_out"  # a causal_trace site: mlp_out, resid_pre, resid_post, attn_out
    c.trace_samples = 10  # noise draws (ROME: 10)
    c.cov_ridge = 0.01  # C + ridge * mean(diag C) * I (few keys: d_mlp 256, ~500 positions)
    c.rome = ConfigDict(dict(steps=20, lr=0.5, weight_decay=0.5, clamp_norm=4.0))  # ROME's
    c.finetune = ConfigDict(dict(steps=20, lr=1e-2))
    return c
