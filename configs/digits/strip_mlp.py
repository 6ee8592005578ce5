"""Strip-MLP (the `strip_mlp_t_light` preset, shrunk) on the 8x8 digits.

    python -m experiments.train --config=configs/digits/strip_mlp.py \
        --workdir=/tmp/digits_runs/strip_mlp

Measured (seed 0, 2 CPU cores shared with other jobs, load average ~8): 113 s wall for the
command, 77,124 parameters, test accuracy 0.986 (355/360; 0.928 at step 50, 0.967 at 100).

The only family with BatchNorm: the trainer calls it with `train=True` and updates the
`batch_stats` collection (`config.mutable`, base_config's default); the preset's stochastic
depth (drop_path_rate 0.1, on a `dropout` rng from the train state) is kept. The eval at step
0 uses the initial running statistics, hence its loss of 3.7.

Patch 1 so that the reference's three 2x2 mergings fit: stages on 8x8, 4x4, 2x2 and 1x1 maps of
8, 16, 32 and 64 channels, one block each. Why only 200 steps: the model is slow on CPU, not
hard to fit. Its many small depthwise convolutions (3x3, 7x3, 3x7 and 7x7 per block) make a step
~0.2 s, and XLA compiles the jitted `model.init` (169 variables) slowly: 40-50 s of the 113 s,
more than the train step (~25 s); with `jax_threefry_partitionable=False` (JAX's former
default) the same init compiles in 14 s.
"""

from configs.digits.common import digits_config


def get_config():
    return digits_config(
        "strip_mlp_t_light", dict(patch_size=1, d_model=8, n_layers=(1, 1, 1, 1)), steps=200)
