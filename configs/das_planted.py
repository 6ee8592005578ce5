"""DAS on a task with a planted causal variable (Geiger et al. 2023, "Finding Alignments
Between Interpretable Causal Variables and Distributed Neural Representations"; Wu et al.
2023, "Interpretability at Scale: Identifying Causal Mechanisms in Alpaca", Boundless DAS).

    python -m experiments.das_planted --config=configs/das_planted.py \
        --workdir=workdirs/das_planted

Claim: DAS "uncovered perfect alignments between interpretable symbolic algorithms and small
deep learning models" (Boundless DAS abstract; DAS: IIA 1.00 for the hierarchical-equality
variables at the right layer, against 0.60 for a brute-force neuron search): the learned
subspace reaches high interchange accuracy where the model holds the variable, and chance
where it does not.

Setup: `planted_sum` with m = 7 (`y = (a + b) * c`, s = a + b; 4096 train / 512 test pairs);
a 2-layer transformer (d_model 32, 4 heads, d_mlp 128) trained 1000 steps (batch 64, AdamW
1e-2); DAS (k = 8 of 32 dimensions) trained 600 steps (AdamW 2e-2) at each site, through
`jaxinterp.train.train` with `config.tuning`; Boundless DAS at the best site (temperature
50 -> 0.1 over the same steps).

Runtime on 2 CPU cores: (measured below).

Measured at this config: (below).
"""

from ml_collections import ConfigDict


def get_config():
    c = ConfigDict()
    c.seeds = (0,)
    c.data_dir = ""  # "" means <workdir>/data
    c.data = ConfigDict(dict(num_values=5, num_train=4096, num_test=512, seed=0))
    c.model = ConfigDict(dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=128))
    c.batch_size = 64
    c.warmup_steps = 50
    c.base_steps = 1000
    c.base_learning_rate = 1e-2
    c.das_steps = 600
    c.das_learning_rate = 2e-2
    c.subspace_dim = 8
    c.boundless = True  # Boundless DAS at the best site
    c.temperature_start = 50.0
    c.temperature_end = 0.1
    # (site, position): position 2 is c's (the answer's), 1 is b's.
    c.sites = (("blocks.0.hook_resid_pre", 2), ("blocks.0.hook_resid_mid", 2),
               ("blocks.0.hook_resid_post", 2), ("blocks.1.hook_resid_mid", 2),
               ("blocks.1.hook_resid_post", 2), ("blocks.0.hook_resid_post", 1))
    return c
