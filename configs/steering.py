"""Steering factual recall: reading vectors (Zou et al. 2023, "Representation Engineering"),
mean-difference vectors (Turner et al. 2023; Rimsky et al. 2024), latent-subspace steering and a
weighted steering controller (Hegazy et al. 2025, "Guiding Giants: Lightweight Controllers for
Weighted Activation Steering in LLMs").

    python -m experiments.steering --config=configs/steering.py --workdir=workdirs/steering

Claims compared with: steering vectors change a chosen behaviour with little effect elsewhere
(RepE; ActAdd: "steering vectors ... without ... damaging" other capabilities); Guiding Giants:
the controller "learns to discriminatively apply nuanced, layer-aware interventions,
activating steering primarily for harmful inputs", outperforming fixed steering.

Runtime on 2 CPU cores: MEASURED BELOW.

Measured at this config: MEASURED BELOW.
"""

from ml_collections import ConfigDict

from configs.factual_recall import base_model_config


def get_config():
    c = ConfigDict()
    c.seeds = (0, 1, 2)  # base-model and controller seeds (one base model per seed)
    c.data_dir = ""  # "" means <workdir>/data
    c.base = base_model_config()  # the factual-recall base model (trained per seed)
    c.base.num_train_steps = 300  # train and eval accuracy 1.0 by step 300 (not 600: time)
    c.source_relation = 0  # closed-book prompts of this relation ...
    c.target_relation = 1  # ... are steered to this relation's attribute
    c.sites = ("blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.1.hook_resid_pre",
               "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post")  # residual points
    c.strengths = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # vector strength sweep
    c.subspace_k = 2  # latent-subspace steering: top-k reading directions
    c.subspace_strengths = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
    c.controller = ConfigDict(dict(
        sites="blocks.*.hook_resid_pre",  # steered sites (vectors: their mean differences)
        input_site="blocks.1.hook_resid_post",  # what the controller reads (last position)
        hidden=32, patch_scale=1.0, switch_prob=0.5, num_train_steps=300,
        learning_rate=1e-2))
    c.controller_multipliers = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    return c
