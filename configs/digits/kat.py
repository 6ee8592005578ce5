"""KAT (the `kat_t` preset: ViT-Ti with GR-KAN MLPs, shrunk) on the 8x8 digits.

    python -m experiments.train --config=configs/digits/kat.py --workdir=/tmp/digits_runs/kat

Measured (seed 0, 2 CPU cores shared with other jobs, load average ~8): 20 s wall for the
command, 18,370 parameters, test accuracy 0.975 (351/360; 0.928 at step 200, 0.953 at 400).

The same shape as configs/digits/vit.py, so the two compare directly: the preset's GR-KAN
MLPs (8 groups, shared numerators, fc1's rational starting as the identity, fc2's as swish) in
place of the GELU MLPs. Patch 2 on 8x8: 16 patches + the class token; 2 blocks of width 32.
"""

from configs.digits.common import SMALL, digits_config


def get_config():
    return digits_config("kat_t", dict(SMALL, n_heads=4, d_head=8, d_mlp=64), steps=800)
