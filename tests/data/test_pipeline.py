"""grain pipelines: batches, epochs, determinism, sharding, checkpointing, global arrays."""

import itertools

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import PartitionSpec as P

from jaxinterp import data

pytestmark = pytest.mark.mesh  # builds meshes of the 8 CPU devices in this process

BATCH = 8


@pytest.fixture(scope="module")
def pairs(data_dir):
    """modular_arithmetic p=7: 24 train examples, each identified by its (a, b)."""
    return data.load_source("modular_arithmetic", "train", data_dir, p=7, train_fraction=0.5)


@pytest.fixture(scope="module")
def tokens(data_dir):
    return data.load_source(
        "induction", "train", data_dir, vocab_size=16, half_len=3, num_train=64, num_test=4
    )


def ids(batch) -> list[tuple[int, int]]:
    return list(zip(batch["a"].tolist(), batch["b"].tolist(), strict=True))


def take(it, n):
    return list(itertools.islice(it, n))


def assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_batches_have_declared_dtypes(pairs):
    assert len(pairs) == 24
    batch = next(data.make_iterator(pairs, batch_size=BATCH, seed=0, num_epochs=1))
    assert batch["tokens"].shape == (BATCH, 4) and batch["tokens"].dtype == np.int32
    # TFDS decodes scalars to Python ints; the pipeline restores the declared int32.
    assert batch["target"].shape == (BATCH,) and batch["target"].dtype == np.int32


def test_one_epoch_covers_every_example_once_and_epochs_reshuffle(pairs):
    it = data.make_iterator(pairs, batch_size=BATCH, seed=0, num_epochs=2)
    batches = list(it)
    assert len(batches) == 6
    epochs = [[x for b in batches[i : i + 3] for x in ids(b)] for i in (0, 3)]
    everything = {(int(pairs[i]["a"]), int(pairs[i]["b"])) for i in range(24)}
    for epoch in epochs:
        assert len(epoch) == 24 and set(epoch) == everything
    assert epochs[0] != epochs[1]


def test_same_seed_same_batches(pairs):
    run = lambda seed: take(data.make_iterator(pairs, batch_size=BATCH, seed=seed), 5)
    assert_same(run(3), run(3))
    assert ids(run(3)[0]) != ids(run(4)[0])
    unshuffled = take(data.make_iterator(pairs, batch_size=BATCH, seed=0, shuffle=False), 2)
    assert ids(unshuffled[0]) == [(int(pairs[i]["a"]), int(pairs[i]["b"])) for i in range(8)]


class CountingSource:
    """`source` that counts its reads (the TFDS decodes a cache saves)."""

    def __init__(self, source):
        self.source, self.reads = source, 0
        self.dataset_info = source.dataset_info

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        self.reads += 1
        return self.source[i]


def test_a_small_source_is_decoded_once_and_gives_the_same_batches(pairs):
    cached, uncached = CountingSource(pairs), CountingSource(pairs)
    a = take(data.make_iterator(cached, batch_size=BATCH, seed=1), 15)  # 5 epochs
    b = take(data.make_iterator(uncached, batch_size=BATCH, seed=1, cache_bytes=0), 15)
    assert_same(a, b)
    assert a[0]["target"].dtype == np.int32  # cast as without the cache
    # 24 examples (+1: the first, read to estimate the size) against one read per row
    assert cached.reads <= 25 < 15 * BATCH <= uncached.reads  # (+ batches read ahead)


def test_two_processes_read_disjoint_halves(pairs):
    def epoch(index, count):
        it = data.make_iterator(
            pairs, batch_size=BATCH, seed=1, num_epochs=1, process_index=index, process_count=count
        )
        batches = list(it)
        assert all(len(b["a"]) == BATCH // count for b in batches)
        return [x for b in batches for x in ids(b)]

    p0, p1, single = epoch(0, 2), epoch(1, 2), epoch(0, 1)
    assert len(p0) == len(p1) == 12
    assert not set(p0) & set(p1)
    assert set(p0) | set(p1) == set(single)
    assert len(single) == 24


def test_state_round_trip_gives_the_same_next_batches(tokens):
    make = lambda: data.make_iterator(
        tokens,
        batch_size=BATCH,
        seed=5,
        process_index=1,
        process_count=2,
        transform=data.language_model_batch,
    )
    it = make()
    take(it, 5)  # crosses an epoch boundary (64 / 2 / 4 = 8 batches per epoch)
    state = it.get_state()
    expected = take(it, 6)
    fresh = make()
    fresh.set_state(state)
    assert_same(take(fresh, 6), expected)
    it.set_state(state)  # rewinding the same iterator works too
    assert_same(take(it, 6), expected)


def test_orbax_checkpoint_manager_round_trip(tokens, tmp_path):
    make = lambda: data.make_iterator(tokens, batch_size=BATCH, seed=2)
    it = make()
    take(it, 3)
    options = ocp.CheckpointManagerOptions(max_to_keep=2)
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as mngr:
        mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
        expected = take(it, 4)
        assert mngr.latest_step() == 3
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as mngr:
        restored = make()
        out = mngr.restore(
            3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored))
        )
        assert out.data is restored
    assert_same(take(restored, 4), expected)


def test_transforms(tokens):
    it = data.make_iterator(tokens, batch_size=BATCH, seed=0, transform=data.language_model_batch)
    batch = next(it)
    assert batch["inputs"].shape == batch["targets"].shape == (BATCH, 6)
    assert batch["inputs"].dtype == np.int32
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])

    class Double(grain.transforms.Map):
        def map(self, element):
            return {"tokens": element["tokens"] * 2}

    it = data.make_iterator(tokens, batch_size=BATCH, seed=0, transform=[Double(), lambda x: x])
    assert (next(it)["tokens"] % 2 == 0).all()


def test_language_model_batch_on_a_batch():
    tok = np.arange(12).reshape(2, 6)
    out = data.language_model_batch(tok)
    np.testing.assert_array_equal(out["inputs"], tok[:, :-1])
    np.testing.assert_array_equal(out["targets"], tok[:, 1:])


def test_bad_arguments(pairs):
    with pytest.raises(ValueError, match="multiple of process_count"):
        data.make_iterator(pairs, batch_size=6, seed=0, process_index=0, process_count=4)
    with pytest.raises(ValueError, match="process_index"):
        data.make_iterator(pairs, batch_size=8, seed=0, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        data.make_iterator(pairs, batch_size=32, seed=0)


def test_to_global_on_an_8_device_mesh(tokens):
    assert jax.device_count() == 8
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"))
    local = next(
        data.make_iterator(tokens, batch_size=BATCH, seed=0, transform=data.language_model_batch)
    )
    batch = data.to_global(local, mesh)
    for k, x in batch.items():
        assert isinstance(x, jax.Array) and x.shape == (BATCH, 6)
        assert x.sharding.spec == P(("data", "fsdp"))
        assert {s.data.shape for s in x.addressable_shards} == {(BATCH // 4, 6)}
        np.testing.assert_array_equal(np.asarray(x), local[k])
    by_data = data.to_global(local, mesh, P("data"))["inputs"]
    assert {s.data.shape for s in by_data.addressable_shards} == {(BATCH // 2, 6)}
    summed = jax.jit(lambda b: b["inputs"].sum())(batch)
    assert int(summed) == int(local["inputs"].sum())


def test_global_batches_do_not_depend_on_the_number_of_processes(tokens):
    """Concatenating the processes' parts gives exactly the 1-process global batch, epoch
    after epoch (so a 2-process run sees the same data as a 1-process run)."""
    n_batches = 2 * (len(tokens) // 8) + 1  # into the third epoch
    one = take(data.make_iterator(tokens, batch_size=8, seed=3, process_index=0,
                                  process_count=1), n_batches)
    parts = [take(data.make_iterator(tokens, batch_size=8, seed=3, process_index=p,
                                     process_count=2), n_batches) for p in range(2)]
    for i in range(n_batches):
        joined = np.concatenate([parts[0][i]["tokens"], parts[1][i]["tokens"]])
        np.testing.assert_array_equal(joined, one[i]["tokens"])
    per_epoch = len(tokens) // 8
    first_epoch = np.concatenate([b["tokens"] for b in one[:per_epoch]])
    second_epoch = np.concatenate([b["tokens"] for b in one[per_epoch: 2 * per_epoch]])
    assert not np.array_equal(first_epoch, second_epoch)  # reshuffled each epoch
