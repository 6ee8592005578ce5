"""Augmented global batches do not depend on how many processes read them.

`make_iterator` seeds grain `RandomMap`s (random crop, random flip) by each element's position
in the global stream, so process p of P augments row r of a global batch exactly as a single
process would: the processes' parts, concatenated, are the single-process batch bit for bit,
and a restored iterator continues bit for bit.
"""

import itertools

import numpy as np
import pytest

from jaxinterp import data
from jaxinterp.data import image

BATCH = 8
N = 42  # 5 global batches an epoch; 2 examples of each epoch are dropped


def source() -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"image": rng.integers(1, 256, (5, 7, 3), dtype=np.uint8), "label": np.int64(i)}
            for i in range(N)]


def make(index: int, count: int, **kw):
    return data.make_iterator(source(), batch_size=BATCH, seed=4, process_index=index,
                              process_count=count,
                              transform=image.make_transforms(crop_padding=1, flip=True), **kw)


def take(it, n: int) -> list[dict]:
    return list(itertools.islice(it, n))


def joined(parts: list[list[dict]], i: int, key: str) -> np.ndarray:
    return np.concatenate([p[i][key] for p in parts])


@pytest.mark.parametrize("count", [2, 4])
def test_concatenated_local_batches_equal_the_single_process_batch(count):
    n = 12  # into the third epoch
    one = take(make(0, 1), n)
    parts = [take(make(p, count), n) for p in range(count)]
    for i in range(n):
        assert all(len(p[i]["label"]) == BATCH // count for p in parts)
        for key in ("image", "label"):
            np.testing.assert_array_equal(joined(parts, i, key), one[i][key])
    # The augmentation really is random and per example: some rows were cropped or flipped,
    # and the same example is augmented differently in another epoch.
    plain = {int(e["label"]): image.Normalize().map(e)["image"] for e in source()}
    changed = [not np.array_equal(x, plain[int(y)])
               for b in one for x, y in zip(b["image"], b["label"], strict=True)]
    assert 0.5 < np.mean(changed) < 1.0, np.mean(changed)  # 1 - 1/18 unchanged on average
    first = {int(y): x for b in one[:5] for x, y in zip(b["image"], b["label"], strict=True)}
    second = {int(y): x for b in one[5:10] for x, y in zip(b["image"], b["label"], strict=True)}
    both = first.keys() & second.keys()  # each epoch drops 2 examples of its own
    assert len(both) >= N - 4
    assert sum(not np.array_equal(first[k], second[k]) for k in both) > len(both) // 2


def test_each_process_resumes_bit_for_bit_and_still_matches_one_process():
    one = take(make(0, 1), 12)
    for p in range(2):
        it = make(p, 2)
        take(it, 7)  # past the first epoch
        state = it.get_state()
        expected = take(it, 5)
        fresh = make(p, 2)
        fresh.set_state(state)
        resumed = take(fresh, 5)
        for a, b, single in zip(resumed, expected, one[7:], strict=True):
            for key in ("image", "label"):
                np.testing.assert_array_equal(a[key], b[key])
                np.testing.assert_array_equal(a[key], single[key][p * 4:(p + 1) * 4])


def test_one_epoch_of_two_processes_equals_one_process():
    one = take(make(0, 1, num_epochs=1), 100)
    parts = [take(make(p, 2, num_epochs=1), 100) for p in range(2)]
    assert len(one) == len(parts[0]) == len(parts[1]) == N // BATCH
    for i in range(len(one)):
        np.testing.assert_array_equal(joined(parts, i, "image"), one[i]["image"])
