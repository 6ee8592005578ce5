"""Critical learning periods in deep linear networks (Kleinman, Achille & Soatto, ICLR 2024,
"Critical Learning Periods Emerge Even in Deep Linear Networks", arXiv:2308.12221; code:
github.com/mjkleinman/CriticalPeriodDeepLinearNets).

Claim: a deficit early in training, then removed, leaves a permanent effect that a late deficit
of the same length does not; it grows with the deficit's length and depends on depth (deeper
networks are more affected). Two settings (setup: experiments/critical_periods.py):
  pathways:   two deep linear pathways compete for one task; pathway B is frozen (the paper's
              "gate_path": its output counts, it does not learn) for the first T steps.
  completion: deep matrix completion; for the first T steps the observed entries are those of
              another (rank-8) matrix, as in the paper's code.

    python -m experiments.critical_periods --config=configs/critical_periods.py \
        --workdir=workdirs/critical_periods

Runtime on 2 CPU cores (shared with other jobs, load ~15): 155 s (2.8 min wall with start-up)
for 3 depths x 2 settings: pathways 4800 steps x 16 runs (8 early, 8 late) x 5 seeds, matrix
completion 24000 steps x 8 deficit lengths x 5 seeds.

Measured at this config (seeds 0-4; gap = value after the deficit minus the same seed's value
without one; min-max over seeds within 0.5 of the mean for pathways):
  pathways, deprived pathway's loss alone (4.0 without a deficit, 16 = B learned nothing; the
  total task loss recovers to < 1e-5 in every run), gap at T = 10, 25, 50, 100, 200, 800:
    depth 1   0.80  1.97  3.78   6.68  9.93  11.99     B's share of the features 0.45 -> 0.00
    depth 2   2.52  6.13  9.38  11.24 11.90  12.02     B's share 0.36 -> 0.00
    depth 4   5.34  7.58  9.41  10.82 11.52  12.03     B's share 0.32 -> 0.00
    the same deficits from step 2000 (late): gap < 1e-4 at every depth and length.
  completion, final test loss (mean squared error over all 48 x 48 entries) at T = 0, 1000,
  2000, 4000, 6000, 8000, 12000, 16000:
    depth 1   0.667 at every T (gap exactly 0: one matrix only moves its observed entries)
    depth 2   0.018 0.121 0.250 0.335 0.360 0.372 0.381 0.384 (gap > 0 in every seed from
              T = 1000, min over seeds 0.05 -> 0.27)
    depth 4   0.000 0.000 0.000 0.000 0.161 0.794 0.603 0.776 (seeds spread 0.01-3.1 at
              T >= 8000)
Reproduced: early deficits leave a lasting deficit, growing with T, and late ones none
(pathways); the deprived pathway loses more the deeper the network for short deficits
(T <= 50: depth 1 < 2 < 4); matrix completion has a critical period at depth >= 2 and none at
depth 1. Not as cleanly as "deeper is worse": in the pathways long deficits saturate every
depth (B learns nothing; depth 2 is slightly above depth 4 for T = 100-400), and in matrix
completion depth 4 is unaffected by deficits up to 4000 steps (from a small initialisation it
has not yet learned the corrupted matrix when the deficit ends: its critical period starts
later), then has the largest, most seed-dependent gaps (mean 0.6-0.8; 0.35-0.37 at depth 2).
Blanking B's input instead (`pathways.deficit="blank"`: B also stops contributing) gives the
same early gaps, but a late blank is no longer harmless: pathway A takes over B's share while
B is silent, leaving late gaps up to 5.0 / 3.1 / 2.55 at depth 1 / 2 / 4 (vs ~12 early).
"""

from ml_collections import ConfigDict


def get_config():
    c = ConfigDict()
    c.seeds = (0, 1, 2, 3, 4)  # one vmapped axis: every seed runs in the same compiled call

    # Competition between two pathways (the paper's multi-pathway model, after Saxe et al.):
    # 8 one-hot items -> 15 hierarchical features, 0.5 * summed squared error, plain gradient
    # descent at the paper's rate 0.01, both pathways from the same initial weights.
    # Deficit on pathway B for the first T steps, then `recovery_steps` steps without; the
    # late control starts the same deficit at `late_start`, after the features are learned.
    c.pathways = ConfigDict(dict(
        depths=(1, 2, 4),  # weight matrices per pathway
        deficit="freeze",  # the paper's gate_path (B's output counts, B does not learn); "blank"
        # zeroes B's input instead (B neither contributes nor learns)
        width=32,
        init_scale=0.01,  # the paper's eps
        lr=0.01,
        deficit_lengths=(0, 10, 25, 50, 100, 200, 400, 800),
        late_start=2000,
        recovery_steps=2000,
        record_every=10,
    ))

    # Deep matrix completion: an n x n matrix of rank `rank`, n_observed entries seen (the
    # paper: n=100, rank 5, 2000 entries, about 2x the 2nr - r^2 degrees of freedom; here
    # n=48, rank 4, 800 entries: 2.2x). Deficit as in the paper's code: the
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
        deficit_lengths=(0, 1000, 2000, 4000, 6000, 8000, 12000, 16000),
        recovery_steps=8000,
        record_every=100,
    ))
    return c
