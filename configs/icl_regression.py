"""In-context linear regression (issue 11, experiment 4).

Papers: Mahankali et al. 2023, "One Step of Gradient Descent is Provably the Optimal In-Context
Learner with One Layer of Linear Self-Attention"; Raventós et al. 2023, "Pretraining task
diversity and the emergence of non-Bayesian in-context learning for regression"; Wurgaft et al.
2025, "In-Context Learning Strategies Emerge Rationally".

Claims: (1) a trained one-layer linear self-attention model predicts like one step of GD with
the best step size (R^2 >= 0.99 on fresh tasks); (2) with anisotropic inputs, like
preconditioned GD rather than plain GD; (3) as the pool of pretraining tasks grows, a
transformer moves from the memorising dMMSE predictor to ridge regression.

    python -m experiments.icl_regression --config=configs/icl_regression.py \
        --workdir=workdirs/icl_regression

MEASURED: see the end of this docstring (filled in from one run of the default config).
"""

from ml_collections import ConfigDict


def get_config():
    c = ConfigDict()
    c.data_dir = ""  # "" = <workdir>/data (the builder's fresh evaluation tasks)

    c.lsa = ConfigDict(dict(
        d=5, n_context=20, seeds=[0, 1, 2], batch_size=512, num_steps=3000,
        learning_rate=3e-3, init_std=0.05,
        cov_eigs=[0.25, 0.5, 1.0, 2.0, 4.0],  # anisotropic arm: diag covariance
        num_eval=2000, eval_seed=123))

    c.sweep = ConfigDict(dict(
        enabled=True, d=4, n_points=8, noise_std=0.5, seeds=[0, 1],
        pool_sizes=[1, 2, 4, 8, 16, 32, 64, 256, 0],  # 0: a fresh task per example
        n_layers=2, d_model=32, n_heads=2, d_mlp=64,
        batch_size=64, num_steps=2500, learning_rate=1e-3, eval_every=250,
        num_eval=512, eval_seed=321))
    return c
