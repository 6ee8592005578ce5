"""MS-MLP (the `msmlp_t` preset, shrunk to two stages) on the 8x8 digits.

    python -m experiments.train --config=configs/digits/ms_mlp.py --workdir=/tmp/digits_runs/ms_mlp

Measured (seed 0, 2 CPU cores shared with other jobs, load average ~8): 29 s wall for the
command, 22,718 parameters, test accuracy 0.981 (353/360; 0.922 at step 100, 0.972 at 200).

Two stages instead of four: patch 2 -> a 4x4 map of 20 channels, one 2x2 merging -> 2x2 of 40,
one block each, with the preset's first two stages' mixing kernels. 20 channels split into the
preset's 5 shift groups of 4 (`torch.chunk`). 400 steps: a step costs ~3x a ViT step here.
"""

from configs.digits.common import digits_config


def get_config():
    return digits_config(
        "msmlp_t",
        dict(patch_size=2, d_model=20, n_layers=(1, 1),
             mix_size=((1, 1, 3, 5, 7), (1, 3, 3, 5, 7))),
        steps=400)
