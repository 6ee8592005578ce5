"""Image-classification transforms (normalise, crop, flip) and TFDS image datasets by name."""

import importlib.util
import io
import itertools

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxinterp import data
from jaxinterp.data import image

H, W = 7, 9


def distinct_image(channels: int = 2) -> np.ndarray:
    """uint8 [H, W, C] with distinct non-zero values, so any shift or flip is identifiable."""
    return (np.arange(H * W * channels) + 1).astype(np.uint8).reshape(H, W, channels)


def shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`x` with its content moved by (dy, dx) pixels, zeros moving in (a reference crop)."""
    out = np.zeros_like(x)
    h, w = x.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def find_shift(out: np.ndarray, x: np.ndarray, p: int) -> tuple[int, int] | None:
    for dy, dx in itertools.product(range(-p, p + 1), repeat=2):
        if np.array_equal(out, shifted(x, dy, dx)):
            return dy, dx
    return None


def image_source(n: int = 32, size: int = 6, channels: int = 3) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"image": rng.integers(0, 256, (size, size, channels), dtype=np.uint8),
             "label": np.int64(i % 10)} for i in range(n)]


AUGMENT = dict(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), crop_padding=2, flip=True)


def batches(it, n: int) -> list[dict]:
    return [next(it) for _ in range(n)]


def assert_same_batches(a: list[dict], b: list[dict]):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_normalize_equals_numpy():
    x = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    label = np.int64(3)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = image.Normalize(mean=mean, std=std).map({"image": x, "label": label})
    ref = (x.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
    assert out["image"].dtype == np.float32 and out["image"].shape == x.shape
    np.testing.assert_allclose(out["image"], ref, rtol=1e-6, atol=1e-6)
    assert out["label"] is label
    # One value broadcasts over the channels; the defaults scale to [0, 1].
    one = image.Normalize(mean=[0.5], std=0.25).map({"image": x})["image"]
    np.testing.assert_allclose(one, (x / 255.0 - 0.5) / 0.25, rtol=1e-6, atol=1e-6)
    (only,) = image.make_transforms()
    np.testing.assert_allclose(only.map({"image": x})["image"], x / 255.0, rtol=1e-6)


def test_crop_moves_content_at_most_padding_pixels():
    x, p = distinct_image(), 2
    crop = image.RandomCrop(padding=p)
    seen = set()
    for i in range(300):
        out = crop.random_map({"image": x, "label": 1}, np.random.default_rng(i))
        assert out["image"].shape == x.shape and out["image"].dtype == x.dtype
        assert out["label"] == 1
        shift = find_shift(out["image"], x, p)
        assert shift is not None, f"draw {i}: not a shift of at most {p} pixels"
        seen.add(shift)
    assert seen == set(itertools.product(range(-p, p + 1), repeat=2))  # every offset occurs
    same = image.RandomCrop(padding=0).random_map({"image": x}, np.random.default_rng(0))
    np.testing.assert_array_equal(same["image"], x)


def test_flip_flips_about_half_the_time():
    x = distinct_image()
    flip = image.RandomHorizontalFlip()
    flipped = []
    for i in range(200):
        out = flip.random_map({"image": x, "label": 1}, np.random.default_rng(i))["image"]
        assert np.array_equal(out, x) or np.array_equal(out, x[:, ::-1])
        flipped.append(not np.array_equal(out, x))
    assert 0.35 < np.mean(flipped) < 0.65


def test_crop_and_flip_in_one_pipeline_draw_independently():
    """grain gives both RandomMaps the same generator state per example; they must not
    make the flip a function of the crop offset."""
    x, p = distinct_image(), 1
    source = [{"image": x, "label": np.int64(0)}] * 64
    transforms = image.make_transforms(crop_padding=p, flip=True)[:2]  # no Normalize
    it = data.make_iterator(source, batch_size=64, seed=0, shuffle=False, num_epochs=1,
                            transform=transforms, process_index=0, process_count=1)
    flips_by_shift: dict[tuple[int, int], set[bool]] = {}
    for out in next(it)["image"]:
        for flipped in (False, True):
            shift = find_shift(out[:, ::-1] if flipped else out, x, p)
            if shift is not None:
                flips_by_shift.setdefault(shift, set()).add(flipped)
                break
        else:
            raise AssertionError("an output is neither a small shift nor its mirror image")
    assert any(len(f) == 2 for f in flips_by_shift.values()), flips_by_shift


def test_same_seed_same_batches_other_seed_other_augmentation():
    source = image_source()
    make = lambda seed: data.make_iterator(
        source, batch_size=8, seed=seed, transform=image.make_transforms(**AUGMENT),
        process_index=0, process_count=1)
    a, b, c = batches(make(0), 6), batches(make(0), 6), batches(make(1), 6)
    assert_same_batches(a, b)
    assert a[0]["image"].dtype == np.float32 and a[0]["image"].shape == (8, 6, 6, 3)
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_restored_iterator_continues_bit_for_bit():
    source = image_source()  # 4 batches an epoch: the resumed part crosses an epoch
    make = lambda: data.make_iterator(
        source, batch_size=8, seed=3, transform=image.make_transforms(**AUGMENT),
        process_index=0, process_count=1)
    it = make()
    batches(it, 3)
    state = it.get_state()
    expected = batches(it, 5)
    fresh = make()
    fresh.set_state(state)
    assert_same_batches(batches(fresh, 5), expected)


def test_augmentation_changes_between_epochs():
    source = image_source(n=8)
    it = data.make_iterator(source, batch_size=8, seed=0, shuffle=False,
                            transform=image.make_transforms(**AUGMENT),
                            process_index=0, process_count=1)
    first, second = batches(it, 2)
    np.testing.assert_array_equal(first["label"], second["label"])  # same examples, in order
    assert not np.array_equal(first["image"], second["image"])


def test_eval_transforms_have_no_randomness():
    source = image_source()
    transforms = image.make_transforms(**AUGMENT, train=False)
    assert [type(t) for t in transforms] == [image.Normalize]
    make = lambda seed: data.make_iterator(source, batch_size=8, seed=seed, shuffle=False,
                                           transform=transforms, num_epochs=1,
                                           process_index=0, process_count=1)
    a, b = batches(make(0), 4), batches(make(7), 4)
    assert_same_batches(a, b)
    raw = np.stack([e["image"] for e in source[:8]])
    ref = (raw / 255.0 - np.array(AUGMENT["mean"])) / np.array(AUGMENT["std"])
    np.testing.assert_allclose(a[0]["image"], ref, rtol=1e-6, atol=1e-6)


def test_other_features_pass_through():
    x, y = distinct_image(), distinct_image()[::-1].copy()
    element = {"image": x, "aux": y, "label": np.int64(2)}
    out = element
    for t in image.make_transforms(feature="aux", crop_padding=1, flip=True):
        out = t.random_map(out, np.random.default_rng(0)) \
            if isinstance(t, grain.transforms.RandomMap) else t.map(out)
    assert out["image"] is x and out["label"] is element["label"]
    assert out["aux"].dtype == np.float32 and out["aux"].shape == y.shape
    assert element["aux"] is y  # the input element is not modified


def test_from_config():
    (t,) = image.from_config(None, train=True)
    assert t == image.Normalize(mean=(0.0,), std=(1.0,))
    cfg = image.default_config()
    assert dict(cfg) == dict(feature="image", mean=(0.0,), std=(1.0,), crop_padding=0,
                             flip=False)
    assert image.from_config(cfg, train=True) == [t]
    cfg.update(crop_padding=4, flip=True, mean=[0.5, 0.5, 0.5], std=(0.25,))
    train = image.from_config(cfg, train=True)
    assert [type(x) for x in train] == [image.RandomCrop, image.RandomHorizontalFlip,
                                        image.Normalize]
    assert train[0].padding == 4 and train[2].mean == (0.5, 0.5, 0.5)
    assert image.from_config(cfg, train=False) == [train[2]]
    assert image.from_config({"flip": True}, train=True)[0] == image.RandomHorizontalFlip()
    with pytest.raises(ValueError, match="did you mean 'crop_padding'"):
        image.from_config({"crop_pading": 2}, train=True)


def test_bad_values_are_clear_errors():
    x = distinct_image(channels=3)
    with pytest.raises(ValueError, match="crop_padding must be an int >= 0"):
        image.make_transforms(crop_padding=-1)
    with pytest.raises(ValueError, match="crop_padding must be an int >= 0"):
        image.RandomCrop(padding=1.5)
    with pytest.raises(ValueError, match="std must be > 0"):
        image.make_transforms(std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="std must be > 0"):
        image.Normalize(std=-1.0)
    with pytest.raises(ValueError, match="mean has 2 channels but std has 3"):
        image.Normalize(mean=(0.0, 0.0), std=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="mean is empty"):
        image.Normalize(mean=())
    with pytest.raises(ValueError, match=r"mean has 2 values but the image \(7, 9, 3\) has 3"):
        image.Normalize(mean=(0.0, 0.0)).map({"image": x})
    with pytest.raises(ValueError, match=r"feature 'img' is not in the element; its keys are "
                                         r"\['image', 'label'\]"):
        image.Normalize(feature="img").map({"image": x, "label": 0})
    with pytest.raises(ValueError, match="'img' is not in the element"):
        image.RandomCrop(feature="img", padding=1).random_map({"image": x},
                                                              np.random.default_rng(0))
    with pytest.raises(ValueError, match="must be uint8"):
        image.Normalize().map({"image": x.astype(np.float32)})
    with pytest.raises(ValueError, match=r"one image \[H, W, C\]"):
        image.RandomHorizontalFlip().random_map({"image": x[None]}, np.random.default_rng(0))


@pytest.mark.parametrize("name,shape,mean,std", [
    ("mnist", (28, 28, 1), (0.1307,), (0.3081,)),
    ("cifar10", (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
])
def test_tfds_image_dataset_by_name_mocked(tmp_path, name, shape, mean, std):
    with tfds.testing.mock_data(num_examples=16):
        source = data.load_source(name, "train", str(tmp_path))
        assert source[0]["image"].shape == shape and source[0]["image"].dtype == np.uint8
        transforms = image.make_transforms(mean=mean, std=std, crop_padding=4, flip=True)
        it = data.make_iterator(source, batch_size=8, seed=0, transform=transforms,
                                process_index=0, process_count=1)
        batch = next(it)
    assert batch["image"].shape == (8, *shape) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int64
    assert np.isfinite(batch["image"]).all()


# Two registered TFDS builders with PNG-encoded `Image` features, prepared for real (no mock):
# one yields PNG bytes (encoded here with Pillow), one yields NumPy arrays, as mnist and cifar10
# do, which TFDS encodes with TensorFlow.

def _png_example(i: int) -> tuple[np.ndarray, bytes]:
    x = np.random.default_rng(i).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="png")
    return x, buf.getvalue()


class _PngImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    _ENCODE_HERE = True

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(5, 4, 3)),
            "label": tfds.features.ClassLabel(num_classes=10),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(6):
            x, png = _png_example(i)
            yield i, {"image": png if self._ENCODE_HERE else x, "label": i}


class JaxinterpTestPngBytes(_PngImages):
    """Images given as PNG bytes (registered as `jaxinterp_test_png_bytes`)."""


class JaxinterpTestNumpyImages(_PngImages):
    """Images given as NumPy arrays (registered as `jaxinterp_test_numpy_images`)."""

    _ENCODE_HERE = False


def test_png_images_decode_without_tensorflow(tmp_path):
    source = data.load_source("jaxinterp_test_png_bytes", "train", str(tmp_path))
    assert len(source) == 6
    assert sorted(int(source[j]["label"]) for j in range(6)) == list(range(6))
    for j in range(6):  # TFDS stores the examples in an order of its own; label = index
        ex = source[j]
        assert ex["image"].dtype == np.uint8
        np.testing.assert_array_equal(ex["image"], _png_example(int(ex["label"]))[0])
    batch = next(data.make_iterator(source, batch_size=6, seed=0,
                                    transform=image.make_transforms(),
                                    process_index=0, process_count=1))
    expected = np.stack([_png_example(int(i))[0] for i in batch["label"]]) / 255.0
    np.testing.assert_allclose(batch["image"], expected, rtol=1e-6)


def test_preparing_numpy_images_needs_tensorflow_or_works(tmp_path):
    if importlib.util.find_spec("tensorflow") is not None:  # pragma: no cover
        source = data.load_source("jaxinterp_test_numpy_images", "train", str(tmp_path))
        ex = source[0]
        np.testing.assert_array_equal(ex["image"], _png_example(int(ex["label"]))[0])
        return
    with pytest.raises(ModuleNotFoundError, match=r"needs TensorFlow.*jaxinterp\[tfds-images\]"):
        data.load_source("jaxinterp_test_numpy_images", "train", str(tmp_path))
