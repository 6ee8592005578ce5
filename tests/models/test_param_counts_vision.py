"""Parameter counts of the vision presets (ViT, KAT, deep MLP, Activator, NiNformer) against
published numbers and against formulas written from each reference implementation's layer list.
Models are only traced (`jax.eval_shape`), never allocated."""

import jax
import jax.numpy as jnp
import pytest

import jaxinterp as ji
from jaxinterp.layers.vision import count_params


def n_params(name: str) -> int:
    model = ji.models.build(name)
    c = model.config
    images = jax.ShapeDtypeStruct((1, c.image_size, c.image_size, c.in_channels), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    return count_params(variables["params"])


def linear(d_in: int, d_out: int) -> int:  # torch nn.Linear(d_in, d_out): weight + bias
    return d_in * d_out + d_out


def layer_norm(d: int) -> int:
    return 2 * d


def patch_conv(p: int, c: int, d: int) -> int:  # nn.Conv2d(c, d, kernel_size=p, stride=p)
    return p * p * c * d + d


def timm_vit(d: int, depth: int, mlp_ratio: int = 4, img: int = 224, p: int = 16,
             classes: int = 1000, rational_per_block: int = 0) -> int:
    """timm VisionTransformer: patch_embed.proj, cls_token, pos_embed (cls included), blocks
    (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2), norm, head."""
    tokens = (img // p) ** 2 + 1
    block = (layer_norm(d) + linear(d, 3 * d) + linear(d, d) + layer_norm(d)
             + linear(d, mlp_ratio * d) + linear(mlp_ratio * d, d) + rational_per_block)
    return (patch_conv(p, 3, d) + d + tokens * d + depth * block + layer_norm(d)
            + linear(d, classes))


# rational_kat_cu KAT_Group: weight_numerator [1, 5 + 1] shared, weight_denominator [8, 4];
# KAT's KAN MLP has two of them (act1 before fc1, act2 before fc2).
KAT_GROUP = 1 * 6 + 8 * 4


@pytest.mark.parametrize("name, published", [
    ("vit_ti16", 5_717_416),    # timm vit_tiny_patch16_224
    ("vit_s16", 22_050_664),    # timm vit_small_patch16_224
    ("vit_b16", 86_567_656),    # timm vit_base_patch16_224
])
def test_vit_matches_timm(name, published):
    d = {"vit_ti16": 192, "vit_s16": 384, "vit_b16": 768}[name]
    assert timm_vit(d, 12) == published
    assert n_params(name) == published


@pytest.mark.parametrize("name, d, vit_count", [
    ("kat_t", 192, 5_717_416), ("kat_s", 384, 22_050_664), ("kat_b", 768, 86_567_656)])
def test_kat_is_vit_plus_group_rationals(name, d, vit_count):
    """KAT = timm ViT with `KAN` MLPs (same linears) plus two KAT_Group rationals per block;
    the paper reports 5.7M / 22.1M / 86.6M."""
    want = timm_vit(d, 12, rational_per_block=2 * KAT_GROUP)
    assert want == vit_count + 12 * 2 * 38
    assert n_params(name) == want


@pytest.mark.parametrize("name, blocks, width", [
    ("deep_mlp_b6_wi512", 6, 512), ("deep_mlp_b6_wi1024", 6, 1024),
    ("deep_mlp_b12_wi512", 12, 512), ("deep_mlp_b12_wi1024", 12, 1024)])
def test_deep_mlp_matches_bottleneck_mlp(name, blocks, width):
    """scaling_mlps BottleneckMLP(dim_in=64*64*3, dim_out=1000, block_dims=[[4w, w]] * n):
    linear_in, per block LayerNorm(w) + Linear(w, 4w) + Linear(4w, w), linear_out."""
    want = (linear(64 * 64 * 3, width)
            + blocks * (layer_norm(width) + linear(width, 4 * width) + linear(4 * width, width))
            + linear(width, 1000))
    assert n_params(name) == want
    if name == "deep_mlp_b12_wi1024":
        assert want == 114_358_248


def test_activator_matches_reference():
    """Abdullah-88/Activator train.py model: Conv2d patcher, 4 x ActivatorBlock(256, 512)
    [norm, ActivatorGatingUnit: proj_1, proj_2, proj_3, norm(512); FeedForward], classifier."""
    d, f = 256, 512
    gate = 2 * linear(d, f) + linear(f, d) + layer_norm(f)
    ffn = linear(d, f) + linear(f, d)
    head = patch_conv(4, 3, d) + linear(d, 10)
    assert n_params("activator_c10") == head + 4 * (layer_norm(d) + gate + ffn) == 2_650_890
    assert n_params("activator_glu_only_c10") == head + 4 * (layer_norm(d) + gate) == 1_599_242


def test_ninformer_matches_reference():
    """Abdullah-88/NiNformer train.py model: Conv2d patcher, 4 x NiNBlock(256, 512, 64)
    [norm, MixerGatingUnit: proj + MixerBlock(token FF 64->512->64, channel FF 256->512->256,
    two LayerNorms); FeedForward(256, 512)], classifier."""
    d, f, n = 256, 512, 64
    mixer = (layer_norm(d) + linear(n, f) + linear(f, n)  # token mixing over the 64 tokens
             + layer_norm(d) + linear(d, f) + linear(f, d))  # channel mixing
    block = layer_norm(d) + linear(d, d) + mixer + linear(d, f) + linear(f, d)
    want = patch_conv(4, 3, d) + 4 * block + linear(d, 10)
    assert want == 2_652_170
    assert n_params("ninformer_c10") == want
