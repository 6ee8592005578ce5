"""KAT (the `kat_t` preset: ViT-Ti with GR-KAN MLPs, shrunk) on the 8x8 digits.

    python -m experiments.train --config=configs/digits/kat.py --workdir=/tmp/digits_runs/kat

Measured (seed 0, 2 CPU cores shared with other jobs, load average ~8): 20 s wall for the
command, 18,370 parameters, test accuracy 0.975 (351/360; 0.928 at step 200, 0.953 at 400).

The same shape as configs/digits/vit.py, so the two compare directly: the preset's GR-KAN
MLPs (8 groups, shared numerators, fc1's rational starting as the identity, fc2's as swish) in
place of the GELU MLPs. Patch 2 on 8x8: 16 patches + the class token; 2 blocks of width 32.
"""

from configs.digits.common import digits_config


def get_config():
    return digits_config(
        "kat_t",
        dict(patch_size=2, n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64,
             init_range=0.1),  # as in vit.py: 0.02 is slow to start at width 32
        steps=800)
