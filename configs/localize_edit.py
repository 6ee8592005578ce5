"""Localisation vs editing (Hase et al. 2023, "Does Localization Inform Editing? Surprising
Differences in Causality-Based Localization vs. Knowledge Editing in Language Models").

    python -m experiments.localize_edit --config=configs/localize_edit.py \
        --workdir=workdirs/localize_edit

Claim (abstract): "localization conclusions from representation denoising (also known as
Causal Tracing) do not provide any insight into which model MLP layer would be best to edit
in order to override an existing stored fact with a new one"; "which layer we edit is a far
better predictor of performance" (the R^2 of edit success on the tracing effect is near zero,
on the layer much larger).

Setup: MEASURED RESULTS PENDING (see the experiment module docstring for the method).
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
    # analysis draws differ; the tests' CPU budget allows one training run)
    c.n_facts = 48  # facts edited per seed (each at every layer)
    c.methods = ("rome", "finetune")
    c.edit_token = "last"  # the relation token; "subject_last": ROME's fact token (see above)
    c.trace_site = "mlp_out"  # a causal_trace site: mlp_out, resid_pre, resid_post, attn_out
    c.trace_samples = 10  # noise draws (ROME: 10)
    c.cov_ridge = 0.01  # C + ridge * mean(diag C) * I (few keys: d_mlp 256, ~500 positions)
    c.rome = ConfigDict(dict(steps=20, lr=0.5, weight_decay=0.5, clamp_norm=4.0))  # ROME's
    c.finetune = ConfigDict(dict(steps=20, lr=1e-2))
    return c
