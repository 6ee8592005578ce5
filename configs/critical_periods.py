"""Critical learning periods in deep linear networks (Kleinman, Achille & Soatto, ICLR 2024,
"Critical Learning Periods Emerge Even in Deep Linear Networks", arXiv:2308.12221; code:
github.com/mjkleinman/CriticalPeriodDeepLinearNets).

Claim: a deficit early in training, then removed, leaves a permanent effect that a late deficit
of the same length does not, and how strong it is depends on depth and on the data. Two
settings (see experiments/critical_periods.py for the setup):

    python -m experiments.critical_periods --config=configs/critical_periods.py \
        --workdir=workdirs/critical_periods

Runtime on 2 CPU cores: (measured below).

Result at this config: (measured below).
"""

from ml_collections import ConfigDict


def get_config():
    c = ConfigDict()
    c.seeds = (0, 1, 2)  # one vmapped axis: every seed runs in the same compiled call

    # Competition between two pathways (paper section 3, after Saxe et al.'s multi-pathway
    # model): 8 one-hot items -> 15 hierarchical features, 0.5 * summed squared error, plain
    # gradient descent at the paper's rate 0.01. Deficit: pathway B's input blanked for the
    # first T steps; `recovery_steps` steps after it ends; the late control starts the same
    # deficit at `late_start`, after the features have been learned.
    c.pathways = ConfigDict(dict(
        depths=(1, 2, 4),  # weight matrices per pathway
        deficit="freeze",  # the paper's gate_path: B's output counts, B does not learn; "blank"
        width=32,
        init_scale=0.01,  # the paper's eps
        lr=0.01,
        deficit_lengths=(0, 25, 50, 100, 200, 400, 800),
        late_start=2000,
        recovery_steps=2000,
        record_every=10,
    ))

    # Deep matrix completion (paper section 4): an n x n matrix of rank `rank`, n_observed
    # entries seen (the paper: n=100, rank 5, 2000 entries, about 2x the 2nr - r^2 degrees of
    # freedom; here n=48, rank 4, 800 entries: 2.2x). Deficit as in the paper's code: the
    # observed entries come from another matrix, of rank `deficit_rank`, for the first T
    # steps. Loss 0.5 * mean squared error over the observed entries, gradient descent,
    # Gaussian initialisation with end-to-end Frobenius norm ~ init_scale * sqrt(n).
    c.completion = ConfigDict(dict(
        depths=(1, 2, 4),
        n=48,
        rank=4,
        deficit_rank=8,
        n_observed=800,
        init_scale=1e-3,
        lr=0.5,
        deficit_lengths=(0, 1000, 2000, 4000, 8000, 16000),
        recovery_steps=8000,
        record_every=100,
    ))
    return c
