"""Parameter counts of the MLP-Mixer-family presets (224x224, 1000 classes), counted with
`jax.eval_shape` (nothing is materialised), against

(a) an independent count written in this file from each reference implementation's layer list
    (not from our modules), and
(b) published numbers where they exist; these are rounded to millions, so they are checked as
    rounded numbers.

Sources of the layer lists:
  Mixer:   google-research/vision_transformer `vit_jax/models_mixer.py` (Conv stem with bias;
           per block 2 LayerNorms, token MLP Dense(S->Dt), Dense(Dt->S), channel MLP
           Dense(C->Dc), Dense(Dc->C), all with bias; pre-head LayerNorm; Dense head).
  RaftMLP: okojoalg/raft-mlp `libs/modules.py` (SerialPermutedLevel, CrossScaleMLPEmbedding,
           PermutedBlock, ChannelBlock) and `libs/models.py` (RaftMLP with shortcut=False:
           final LayerNorm + classifier); configs `configs/settings/imagenet-raft-mlp-cross-mlp-
           emb-{s,m,l}.yaml`.
  MS-MLP:  JegZheng/MS-MLP `models/ms_mlp.py` (PatchEmbed conv + LayerNorm, MixShiftBlock with
           per-chunk depthwise convs for both shift directions, LayerNorm, pwconv1/2, gamma;
           PatchEmbed(2x2) downsampling with LayerNorm; final LayerNorm; head) and configs
           `configs/msmlp_{tiny,small}_patch4_shift5_224.yaml`.
Published:
  Mixer:   Tolstikhin et al. 2021 (arXiv:2105.01601), Table 1, "Params (M)": S/32 19, S/16 18,
           B/32 60, B/16 59, L/16 207. These match round(count without the 1000-class head / 1e6)
           for all five (e.g. B/16: 59,880,472 - 769,000 = 59.11M -> 59; with the head it would
           round to 60), so the table evidently excludes the head; that is what is asserted.
  MS-MLP:  JegZheng/MS-MLP README table, "Params": Tiny 28M, Small 50M.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.layers.vision import count_params
from jaxinterp.models.registry import PRESETS, build

IMAGE = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)


def n_params(name: str) -> int:
    model = build(name)
    return count_params(jax.eval_shape(model.init, jax.random.key(0), IMAGE)["params"])


def dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def layer_norm(d: int) -> int:
    return 2 * d


# -- MLP-Mixer --------------------------------------------------------------------------------
MIXER = {  # name: (blocks, hidden C, tokens_mlp Dt, channels_mlp Dc, patch)  (paper Table 1)
    "mixer_s32": (8, 512, 256, 2048, 32),
    "mixer_s16": (8, 512, 256, 2048, 16),
    "mixer_b32": (12, 768, 384, 3072, 32),
    "mixer_b16": (12, 768, 384, 3072, 16),
    "mixer_l16": (24, 1024, 512, 4096, 16),
}
MIXER_PAPER_M = {"mixer_s32": 19, "mixer_s16": 18, "mixer_b32": 60, "mixer_b16": 59,
                 "mixer_l16": 207}


def mixer_count(blocks: int, c: int, dt: int, dc: int, patch: int, classes: int = 1000) -> int:
    s = (224 // patch) ** 2  # tokens
    stem = patch * patch * 3 * c + c  # Conv kernel + bias
    block = (layer_norm(c) + dense(s, dt) + dense(dt, s)
             + layer_norm(c) + dense(c, dc) + dense(dc, c))
    return stem + blocks * block + layer_norm(c) + dense(c, classes)


@pytest.mark.parametrize("name", sorted(MIXER))
def test_mixer_counts(name):
    got = n_params(name)
    want = mixer_count(*MIXER[name])
    assert got == want
    assert round((got - dense(MIXER[name][1], 1000)) / 1e6) == MIXER_PAPER_M[name]


def test_mixer_hand_count_s16():
    """Mixer-S/16 worked by hand: stem 393,728; per block 2,048 + 100,804 + 2,099,712 =
    2,202,564 (x 8 = 17,620,512); pre-head norm 1,024; head 513,000."""
    assert n_params("mixer_s16") == 393_728 + 17_620_512 + 1_024 + 513_000 == 18_528_264


# -- RaftMLP ----------------------------------------------------------------------------------
RAFT = {  # name: dims (depths 2,2,6,2; patches 4,2,2,2; rafts 2; kernels (4,8),(2,4),(2,4),(2,))
    "raftmlp_s": (64, 128, 256, 512),
    "raftmlp_m": (96, 192, 384, 768),
    "raftmlp_l": (128, 192, 512, 1024),
}
RAFT_PAPER_M = {"raftmlp_s": 9.9, "raftmlp_m": 21.4, "raftmlp_l": 36.2}


def raft_count(dims, classes: int = 1000) -> int:
    depths, patches, rafts = (2, 2, 6, 2), (4, 2, 2, 2), (2, 2, 2, 2)
    kernels = ((4, 8), (2, 4), (2, 4), (2,))
    total, c_in, side = 0, 3, 224
    for d, depth, p, r, ks in zip(dims, depths, patches, rafts, kernels, strict=True):
        side //= p
        total += dense(c_in * sum(k * k for k in ks), d)  # CrossScaleMLPEmbedding.fc
        permuted = layer_norm(d) + dense(side * r, 2 * side * r) + dense(2 * side * r, side * r)
        channel = layer_norm(d) + dense(d, 4 * d) + dense(4 * d, d)
        total += depth * (2 * permuted + channel)  # vertical + horizontal PermutedBlock, channel
        c_in = d
    return total + layer_norm(dims[-1]) + dense(dims[-1], classes)


@pytest.mark.parametrize("name", sorted(RAFT))
def test_raftmlp_counts(name):
    """Published: RaftMLP paper (arXiv:2108.04384v2) Table of ImageNet results, "#params (M)",
    to 0.1M (S 9.9, M 21.4, L 36.2)."""
    got = n_params(name)
    assert got == raft_count(RAFT[name])
    assert round(got / 1e6, 1) == RAFT_PAPER_M[name]


# -- MS-MLP -----------------------------------------------------------------------------------
MSMLP = {"msmlp_t": (3, 3, 9, 3), "msmlp_s": (3, 3, 27, 3)}  # embed_dim 96, patch 4
MSMLP_README_M = {"msmlp_t": 28, "msmlp_s": 50}
MIX_SIZE = ((1, 1, 3, 5, 7), (1, 3, 3, 5, 7), (1, 5, 5, 5, 7), (1, 7, 7, 7, 7))


def msmlp_count(depths, embed: int = 96, classes: int = 1000) -> int:
    total = 4 * 4 * 3 * embed + embed + layer_norm(embed)  # PatchEmbed proj + norm
    for s, depth in enumerate(depths):
        d = embed * 2 ** s
        size = -(-d // 5)  # torch.chunk(d, 5)
        chunks = [min(size, d - i) for i in range(0, d, size)]
        dw = sum(ch * k * k + ch for ch, k in zip(chunks, MIX_SIZE[s], strict=True))
        block = 2 * dw + layer_norm(d) + dense(d, 4 * d) + dense(4 * d, d) + d  # + gamma
        total += depth * block
        if s < len(depths) - 1:
            total += 2 * 2 * d * 2 * d + 2 * d + layer_norm(2 * d)  # downsample PatchEmbed
    d = embed * 2 ** (len(depths) - 1)
    return total + layer_norm(d) + dense(d, classes)


@pytest.mark.parametrize("name", sorted(MSMLP))
def test_msmlp_counts(name):
    """The README's "Params" (28M, 50M) are the counts truncated to whole millions
    (28,656,232 -> 28; rounding would give 29)."""
    got = n_params(name)
    assert got == msmlp_count(MSMLP[name])
    assert got // 10**6 == MSMLP_README_M[name]


def test_every_mixer_family_preset_is_counted():
    counted = set(MIXER) | set(globals().get("RAFT", {})) | set(globals().get("MSMLP", {}))
    family = {n for n in PRESETS if n.startswith(("mixer_", "raftmlp_", "msmlp_"))}
    assert family <= counted, sorted(family - counted)


def test_counts_need_no_memory():
    """eval_shape: counting Mixer-L/16 (208M parameters) allocates nothing."""
    shapes = jax.eval_shape(build("mixer_l16").init, jax.random.key(0), IMAGE)
    assert all(isinstance(x, jax.ShapeDtypeStruct)
               for x in jax.tree.leaves(shapes, is_leaf=lambda x: hasattr(x, "shape")))
    assert int(np.prod(shapes["params"]["head"]["kernel"].value.shape)) == 1024 * 1000
