"""The activation store: rows written to array_record and read back equal the model's captures
exactly; per-process shards; a shuffled loader whose position restores; `fit` fed from it."""

import json

import jax
import numpy as np
import pytest

from jaxinterp.sae import store
from jaxinterp.sae import train as T
from jaxinterp.sae.model import SAEConfig
from jaxinterp.train import sharding
from tests.helpers.tiny_models import tiny

pytestmark = pytest.mark.mesh  # builds meshes of the 8 CPU devices in this process

MODEL, VARIABLES, _ = tiny()
SITES = ["blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out", "blocks.1.attn.hook_z"]
CAPTURE = jax.jit(T.capture_fn(MODEL, SITES))  # float32 rows [batch * pos, d], as fit sees


def token_batches(n, batch=4, seq=10, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, MODEL.config.d_vocab, (batch, seq)).astype(np.int32)
            for _ in range(n)]


def captured(batches):
    """{site: rows [n, d]} of the model on `batches`, concatenated in order."""
    per = [jax.device_get(CAPTURE(VARIABLES, t)) for t in batches]
    return {s: np.concatenate([p[s] for p in per]) for s in SITES}


def read_all(directory, batch_size, **kw):
    it = store.loader(directory, batch_size=batch_size, shuffle=False, num_epochs=1, **kw)
    got = list(it)
    return {s: np.concatenate([b[s] for b in got]) for s in SITES}


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory):
    """A store written by two (simulated) processes, each on its own token batches."""
    directory = tmp_path_factory.mktemp("store")
    toks = [token_batches(2, seed=0), token_batches(3, seed=1)]
    metas = [store.write(directory, MODEL, VARIABLES, toks[p], SITES, process_index=p,
                         process_count=2) for p in (1, 0)]  # any order
    return directory, toks, metas


def test_written_rows_equal_the_models_captures_exactly(tmp_path):
    toks = token_batches(3)
    meta = store.write(tmp_path, MODEL, VARIABLES, iter(toks), SITES, num_batches=2)
    assert meta["count"] == 80  # 2 of the 3 batches x 4 x 10 tokens
    with open(tmp_path / "metadata.json") as f:
        on_disk = json.load(f)
    assert on_disk["num_shards"] == 1
    assert on_disk["sites"]["blocks.1.attn.hook_z"] == {"shape": [32], "site_shape": [4, 8],
                                                        "dtype": "float32"}
    assert store.read_metadata(tmp_path)["count"] == 80
    got, want = read_all(tmp_path, batch_size=20), captured(toks[:2])
    for s in SITES:
        np.testing.assert_array_equal(got[s], want[s], err_msg=s)
    with pytest.raises(ValueError, match="already exists: write each shard once"):
        store.write(tmp_path, MODEL, VARIABLES, toks, SITES)


def test_each_process_writes_its_shard_and_reads_its_rows(two_shards, tmp_path):
    directory, toks, metas = two_shards
    assert [m["count"] for m in metas] == [120, 80]  # process 1: 3 batches, process 0: 2
    assert store.read_metadata(directory)["shards"] == [80, 120]
    # The global order is shards in process order: all of process 0's rows, then 1's.
    whole = read_all(directory, batch_size=40)
    want = captured(toks[0] + toks[1])
    for s in SITES:
        np.testing.assert_array_equal(whole[s], want[s], err_msg=s)
    # Read by two processes: each gets its half of every global (shuffled) batch.
    one = store.loader(directory, batch_size=40, seed=3)
    parts = [store.loader(directory, batch_size=40, seed=3, process_index=p, process_count=2)
             for p in (0, 1)]
    for _ in range(3):
        g, p0, p1 = next(one), next(parts[0]), next(parts[1])
        for s in SITES:
            assert p0[s].shape == (20, whole[s].shape[1])
            np.testing.assert_array_equal(np.concatenate([p0[s], p1[s]]), g[s])
    # A shard that was not written is an error that says which.
    partial = tmp_path / "partial"
    store.write(partial, MODEL, VARIABLES, toks[0], SITES, process_index=0, process_count=2)
    with pytest.raises(ValueError, match=r"shard\(s\) \[1\] of 2 are missing"):
        store.loader(partial, batch_size=8)


def test_shuffled_loader_restores_its_position(two_shards):
    directory, toks, _ = two_shards
    it = store.loader(directory, batch_size=40, seed=5)
    first = next(it)
    state = it.get_state()
    want = [next(it) for _ in range(6)]  # past the end of the first epoch (200 rows)
    again = store.loader(directory, batch_size=40, seed=5)
    again.set_state(state)
    for w in want:
        g = next(again)
        for s in SITES:
            np.testing.assert_array_equal(g[s], w[s])
    ordered = captured(toks[0] + toks[1])["blocks.0.hook_mlp_out"]
    shuffled = np.concatenate([first["blocks.0.hook_mlp_out"]]
                              + [w["blocks.0.hook_mlp_out"] for w in want[:4]])
    assert not np.array_equal(shuffled, ordered)  # shuffled, and a permutation of the rows
    np.testing.assert_array_equal(np.sort(shuffled, axis=0), np.sort(ordered, axis=0))


def test_fit_from_the_store_equals_fit_from_the_model(two_shards):
    directory, toks, _ = two_shards
    config = SAEConfig("relu", d_in=32, d_sae=64, transcoder=True, site=SITES[0],
                       out_site=SITES[1])
    tc = T.TrainConfig(num_steps=5, batch_size=40, buffer_batches=1, shuffle=False,
                       warmup_steps=2, learning_rate=3e-3, log_every=1)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 1, "tensor": 2}, jax.devices()[:4])
    from_store = T.fit(config, tc, activations=store.loader(directory, batch_size=40,
                                                            shuffle=False), mesh=mesh,
                       verbose=False)
    from_model = T.fit(config, tc, MODEL, VARIABLES, toks[0] + toks[1], mesh=mesh,
                       verbose=False)
    for k in from_model.params:
        np.testing.assert_allclose(from_store.params[k], from_model.params[k], rtol=1e-5,
                                   atol=1e-6, err_msg=k)
    assert [h["mse"] for h in from_store.history] == pytest.approx(
        [h["mse"] for h in from_model.history], rel=1e-5)
    with pytest.raises(ValueError, match=r"have sites .* not 'blocks\.1\.hook_resid_post'"):
        T.fit(SAEConfig(d_in=32, d_sae=64, site="blocks.1.hook_resid_post"), tc,
              activations=store.loader(directory, batch_size=40), mesh=mesh)
