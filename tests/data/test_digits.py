"""The `digits` builder at other sizes and channel counts: bilinear upsampling, own directories."""

import jax
import numpy as np
import pytest

from jaxinterp import data
from jaxinterp.data.digits import NUM_TEST, resize_images


def stacked_images(source) -> np.ndarray:
    return np.stack([np.asarray(source[i]["image"]) for i in range(len(source))])


def test_upsampled_rgb_digits_are_the_bilinear_resize_of_the_originals(data_dir):
    small = data.load_source("digits", "test", data_dir)
    big = data.load_source("digits", "test", data_dir, image_size=16, channels=3)
    assert len(big) == len(small) == NUM_TEST
    ex = big[0]
    assert ex["image"].shape == (16, 16, 3) and ex["image"].dtype == np.uint8
    images_8, images_16 = stacked_images(small), stacked_images(big)
    labels = lambda s: [int(s[i]["label"]) for i in range(len(s))]
    assert labels(big) == labels(small)
    # Three channels are the gray image repeated.
    np.testing.assert_array_equal(images_16[..., 1], images_16[..., 0])
    np.testing.assert_array_equal(images_16[..., 2], images_16[..., 0])
    # 8 -> 16: every bilinear weight is a multiple of 1/4, so float32 JAX is exact here too.
    ref = jax.image.resize(images_8.astype(np.float32), (NUM_TEST, 16, 16, 1), "bilinear")
    ref = np.clip(np.round(np.asarray(ref)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(images_16[..., :1], ref)
    assert images_16.max() == 255


def test_resize_matches_jax_bilinear_at_an_uneven_factor():
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8), dtype=np.uint8)
    out = resize_images(images, 12)
    ref = jax.image.resize(images.astype(np.float32), (4, 12, 12), "bilinear")
    assert out.shape == (4, 12, 12) and out.dtype == np.uint8
    # Rounding of float32 vs float64 may differ by one where a value sits on .5.
    assert np.abs(out.astype(int) - np.round(np.asarray(ref)).astype(int)).max() <= 1
    np.testing.assert_array_equal(resize_images(images, 8), images)


def test_each_config_has_its_own_directory(data_dir):
    default = data.get_builder("digits", data_dir)
    same = data.get_builder("digits", data_dir, image_size=8, channels=1)
    big = data.get_builder("digits", data_dir, image_size=32)
    rgb = data.get_builder("digits", data_dir, channels=3)
    assert default.builder_config.name == same.builder_config.name == "default"
    assert big.builder_config.name == "default-image_size32"
    assert rgb.builder_config.name == "default-channels3"
    assert len({str(b.data_dir) for b in (default, big, rgb)}) == 3
    assert big.info.features["image"].shape == (32, 32, 1)
    assert rgb.info.features["image"].shape == (8, 8, 3)


def test_bad_digits_configs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="image_size must be an int >= 8"):
        data.Digits(data_dir=tmp_path, image_size=4)
    with pytest.raises(ValueError, match="channels must be 1"):
        data.Digits(data_dir=tmp_path, channels=2)
    with pytest.raises(TypeError, match="did you mean 'image_size'"):
        data.Digits(data_dir=tmp_path, imagesize=16)
