"""RaftMLP (the `raftmlp_s` preset, shrunk to two levels) on the 8x8 digits.

    python -m experiments.train --config=configs/digits/raftmlp.py \
        --workdir=/tmp/digits_runs/raftmlp

Measured (seed 0, 2 CPU cores shared with other jobs, load average ~7): 20 s wall for the
command, 14,290 parameters, test accuracy 0.981 (353/360; 0.969 at step 200).

Two levels instead of the preset's four (8x8 halves only so often): patch 2 -> 4x4 maps of 16
channels, then patch 2 -> 2x2 of 32, one raft block each, rafts of 2 channels; the first
level's cross-scale embedding reads 2x2 and 4x4 neighbourhoods (as the preset's (4, 8)).
"""

from configs.digits.common import digits_config


def get_config():
    return digits_config(
        "raftmlp_s",
        dict(d_model=(16, 32), n_layers=(1, 1), patch_sizes=(2, 2), raft_sizes=(2, 2),
             embedding_kernels=((2, 4), (2,))),
        steps=800)
