"""The MLP-family bench on 16x16 digits (see experiments/mlp_bench.py).

    python -m experiments.mlp_bench --config=configs/mlp_bench.py --workdir=workdirs/mlp_bench

Papers and what they claim (ImageNet / CIFAR scale): RaftMLP, Strip-MLP, MS-MLP, MAXIM's
multi-axis gMLP, NiNformer and Activator each report beating MLP-Mixer and/or ViT at a similar
size; KAT reports beating ViT at the same size; "Scaling MLPs" (Bachmann et al. 2023) that
plain deep MLPs gain a lot from data augmentation (crops, flips, MixUp); "Scaling Laws in
Patchification" that ViT and Mixer keep improving as patches shrink, down to 1x1 pixels.

Setup: the scikit-learn digits bilinearly upsampled to 16x16x1 (1437 train / 360 test), every
image family of the registry (`covers` in `families()`; the test checks they are all of
`experiments.mlp_bench.image_presets()`) at 30,000 parameters +- 10% counted on the BUILT
models (measured range 28,370-31,730), 100% and 20% (287 images) of the training data, seeds
0, 1, 2 (the 6 arms of a family are one vmapped, compiled call); AdamW lr 3e-3, 30 warmup
steps, cosine to 3e-4, weight decay 1e-4, 300 steps of 64 (13 epochs of the full set).

MEASURED at this config (mean +- std over seeds 0, 1, 2 of test accuracy on the 360 images;
deterministic: two runs gave the same numbers):

| family | preset | params | test acc, 100% data | test acc, 20% data |
|---|---|---|---|---|
| mixer | mixer_s32 | 29,650 | 0.983 +- 0.008 | 0.932 +- 0.012 |
| maxim | maxim_block_s | 30,384 | 0.981 +- 0.003 | 0.956 +- 0.005 |
| raftmlp | raftmlp_s | 31,730 | 0.980 +- 0.008 | 0.953 +- 0.006 |
| strip_mlp | strip_mlp_t_light | 29,163 | 0.980 +- 0.011 | 0.938 +- 0.015 |
| ms_mlp | msmlp_t | 28,370 | 0.980 +- 0.003 | 0.945 +- 0.013 |
| ninformer | ninformer_c10 | 30,030 | 0.979 +- 0.003 | 0.936 +- 0.002 |
| kat | kat_t | 28,522 | 0.975 +- 0.010 | 0.920 +- 0.029 |
| kan | kan_64_64_10 | 28,728 | 0.974 +- 0.003 | 0.955 +- 0.007 |
| vit | vit_ti16 | 28,370 | 0.973 +- 0.005 | 0.926 +- 0.016 |
| activator | activator_c10 | 29,638 | 0.965 +- 0.007 | 0.916 +- 0.007 |
| deep_mlp | deep_mlp_b6_wi512 | 30,298 | 0.946 +- 0.003 | 0.889 +- 0.020 |
| deep_mlp+aug | deep_mlp_b6_wi512 | 30,298 | 0.832 +- 0.023 | 0.856 +- 0.012 |

Patch sweep (100% data; patch 8 / 4 / 2 = 4 / 16 / 64 tokens): ViT 0.986 / 0.973 / 0.976
(29,810 / 28,370 / 29,810 parameters), Mixer 0.984 / 0.983 / 0.976 (30,778 / 29,650 /
35,218: the token MLP grows with the tokens).

Where the papers' orderings hold here: every MLP-family model with token mixing (MAXIM,
RaftMLP, Strip-MLP, MS-MLP, NiNformer) beats ViT at the same size, on both data fractions, and
KAT edges ViT with all the data (0.975 vs 0.973, inside the seed spread). Where they do not:
none beats MLP-Mixer with all the data (all within 0.003, inside one seed's spread of 0.008);
with 20% of the data MAXIM, RaftMLP, MS-MLP and Strip-MLP do beat Mixer (0.938-0.956 vs 0.932),
as does the KAN (0.955). Activator does not beat ViT (0.965 vs 0.973; it mixes no tokens: at
patch 4 it gave 0.819 / 0.722, at patch 8 0.965 / 0.916). KAT falls behind ViT with 20% of the
data (0.920 vs 0.926). Scaling MLPs' augmentation does NOT help at this budget: crop (2 pixels)
+ MixUp (alpha 0.8) costs the deep MLP 0.114 with all the data and 0.033 with 20% (probably
because 300 steps are far too few for MixUp's harder task; the paper trains far longer).
Patchification does NOT hold: the largest patch (8, four tokens) is best for both ViT and Mixer
and patch 2 is worst for Mixer; these 16x16 images are 2x upsamplings of 8x8 digits, so patches
below 2 pixels carry no new information, and 300 steps may be too few for 64 tokens.

Runtime: 176 s on the 2 CPU cores alone (re-timed at the end of the session). First measured
at 742 s wall on the 2 CPU cores shared with other helpers (load average 12-15; an
earlier run at load 15-19: 1144 s), 346 CPU-seconds (user + system) in all, so about 3-6
minutes on 2 dedicated cores (compilation, roughly half, is largely single-threaded). The
slowest families: Strip-MLP (193 s of the 742) and MS-MLP (110 s), mostly compilation.
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
