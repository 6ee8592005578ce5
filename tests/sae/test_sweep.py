"""Dictionary sweeps: 8 SAEs trained together equal 8 separate `fit`s; grouping and grids; a
sweep from a model (SAEs and a transcoder from one forward pass, held-out metrics); a crashed
sweep resumes bit for bit."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from jaxinterp.data import make_iterator
from jaxinterp.sae import sweep as S
from jaxinterp.sae import train as T
from jaxinterp.sae.model import SAEConfig
from jaxinterp.train import sharding
from tests.helpers.tiny_models import tiny

pytestmark = pytest.mark.mesh  # builds meshes of the 8 CPU devices in this process

D, SITE = 16, "acts"
ONE_DEVICE = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
TC = T.TrainConfig(num_steps=8, batch_size=32, learning_rate=3e-3, warmup_steps=3,
                   buffer_batches=1, shuffle=False, resample_every=4, dead_after_steps=2,
                   log_every=4, checkpoint_every=3)


def rows(n=8 * 32, seed=0):
    """Sparse combinations of 64 random directions in 16 dimensions: one dict per row."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(64, D))
    on = (rng.random((n, 64)) < 0.06) * rng.uniform(0.5, 1.5, (n, 64))
    return [{SITE: r} for r in (on @ feats).astype(np.float32)]


ROWS = rows()


def row_batches():
    """A checkpointable iterator of the rows in order, 32 per batch."""
    return make_iterator(ROWS, batch_size=32, seed=0, shuffle=False, num_epochs=1)


def members():
    """8 SAEs in 3 groups (relu 32 x 3, topk 64 with k=2 and AuxK x 3, jumprelu 32 x 2) with
    their TrainConfigs: loss weights, thresholds, learning rates and seeds vary."""
    relu = SAEConfig("relu", d_in=D, d_sae=32, site=SITE)
    topk = SAEConfig("topk", d_in=D, d_sae=64, k=2, aux_k=4, site=SITE)
    jump = SAEConfig("jumprelu", d_in=D, d_sae=32, bandwidth=0.05, site=SITE)
    configs = [dataclasses.replace(relu, l1_coeff=1e-3), dataclasses.replace(relu, l1_coeff=1e-2),
               dataclasses.replace(relu, l1_coeff=3e-3), topk,
               dataclasses.replace(topk, aux_coeff=0.1), dataclasses.replace(topk, aux_coeff=0.5),
               dataclasses.replace(jump, l0_coeff=0.1, threshold_init=0.05),
               dataclasses.replace(jump, l0_coeff=0.01, threshold_init=0.1)]
    trains = [TC] * 8
    for i, lr in ((1, 1e-2), (4, 1e-3), (7, 1e-2)):
        trains[i] = dataclasses.replace(TC, learning_rate=lr)
    for i, seed in ((2, 3), (5, 5)):
        trains[i] = dataclasses.replace(TC, seed=seed)
    return configs, trains


@pytest.fixture(scope="module")
def swept():
    configs, trains = members()
    return S.sweep(configs, trains, activations=row_batches(), mesh=ONE_DEVICE, verbose=False)


def test_sweep_of_8_equals_8_separate_fits(swept):
    configs, trains = members()
    assert swept.groups == [[0, 1, 2], [3, 4, 5], [6, 7]]
    resampled = aux = 0.0
    for i, (c, t) in enumerate(zip(configs, trains, strict=True)):
        alone = T.fit(c, t, activations=row_batches(), mesh=ONE_DEVICE, verbose=False)
        for k, want in alone.params.items():
            np.testing.assert_allclose(swept.params[i][k], want, rtol=1e-5, atol=1e-6,
                                       err_msg=f"member {i} {k}")
        assert [h["step"] for h in swept.history[i]] == [4, 8]
        for got, want in zip(swept.history[i], alone.history, strict=True):
            assert set(got) == set(want)
            for k in want:
                np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6,
                                           err_msg=f"member {i} {k} at step {want['step']}")
        resampled += swept.history[i][0]["resampled"]
        aux += sum(h["aux"] for h in swept.history[i])
        assert swept.metrics[i] == {k: swept.history[i][-1][k]
                                    for k in ("l0", "explained_variance", "mse")}
    assert resampled > 0 and aux > 0  # resampling and AuxK were exercised


def test_a_crashed_sweep_resumes_bit_for_bit(swept, tmp_path):
    configs, trains = members()
    configs, trains = configs[3:6], trains[3:6]  # the topk group: its program, its data

    class CrashAt:  # the 6th batch (step 6), after the checkpoint at step 3
        def __init__(self, it):
            self._it, self._calls = it, 0

        def __iter__(self):
            return self

        def __next__(self):
            self._calls += 1
            if self._calls == 7:  # one more: the sweep's look at the first batch
                raise RuntimeError("crash")
            return next(self._it)

        def get_state(self):
            return self._it.get_state()

        def set_state(self, state):
            self._it.set_state(state)

    with pytest.raises(RuntimeError, match="crash"):
        S.sweep(configs, trains, activations=CrashAt(row_batches()), mesh=ONE_DEVICE,
                workdir=tmp_path, verbose=False)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3"]
    resumed = S.sweep(configs, trains, activations=row_batches(), mesh=ONE_DEVICE,
                      workdir=tmp_path, verbose=False)
    assert resumed.start_step == 3 and [h["step"] for h in resumed.history[0]] == [4, 8]
    (got,), want = resumed.states, swept.states[1]  # as within the whole sweep, bit for bit
    for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want),
                            strict=True):
        np.testing.assert_array_equal(g, w, err_msg=jax.tree_util.keystr(path))


def test_grid_and_groups():
    base = SAEConfig("topk", d_in=D, d_sae=32, site=SITE)
    configs, trains = S.grid(base, TC, d_sae=[32, 64], k=[2, 4], learning_rate=[1e-3, 3e-3])
    assert len(configs) == 8 and [c.d_sae for c in configs[:4]] == [32] * 4
    assert [(c.k, t.learning_rate) for c, t in zip(configs[:4], trains[:4], strict=True)] == [
        (2, 1e-3), (2, 3e-3), (4, 1e-3), (4, 3e-3)]
    assert S.groups_of(configs) == [[0, 1], [2, 3], [4, 5], [6, 7]]  # by width and k
    with pytest.raises(ValueError, match="grid axis 'l2_coeff' is neither"):
        S.grid(base, TC, l2_coeff=[1.0])
    with pytest.raises(ValueError, match=r"train_configs\[1\]\.num_steps=9 differs"):
        S.sweep(configs[:2], [TC, dataclasses.replace(TC, num_steps=9)], activations=[])


def test_sweep_from_a_model_one_forward_pass_feeds_saes_and_a_transcoder():
    model, variables, _ = tiny()
    resid, ln2, mlp_out = ("blocks.0.hook_resid_post", "blocks.1.ln2.hook_normalized",
                           "blocks.1.hook_mlp_out")
    configs = [SAEConfig("relu", d_in=32, d_sae=64, l1_coeff=c, site=resid) for c in (1e-3, 1e-2)]
    configs.append(SAEConfig("topk", d_in=32, d_sae=64, k=8, transcoder=True, site=ln2,
                             out_site=mlp_out))
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 40, (8, 10)).astype(np.int32) for _ in range(6)]
    reads = []

    def tokens():
        for b in batches:
            reads.append(1)
            yield b

    tc = T.TrainConfig(num_steps=5, batch_size=40, buffer_batches=2, learning_rate=3e-3,
                       warmup_steps=2, log_every=5)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 1, "tensor": 2}, jax.devices()[:4])
    held_out = rng.integers(0, 40, (4, 10)).astype(np.int32)
    result = S.sweep(configs, tc, model, variables, tokens(), eval_tokens=held_out, mesh=mesh,
                     verbose=False)
    assert result.groups == [[0, 1], [2]]
    assert len(reads) == 4  # 5 steps of 40 rows: 2 buffers of 2 batches of 80 rows, each read
    # once, for all three dictionaries
    w_enc = result.states[0].params["W_enc"]  # [member, d_in, d_sae]
    assert w_enc.shape == (2, 32, 64) and tuple(w_enc.sharding.spec) == (None, "fsdp", "tensor")
    for m in result.metrics:
        assert set(m) == {"l0", "explained_variance", "mse", "ce_clean", "ce_spliced",
                          "ce_zero_ablation", "loss_recovered"}
        assert np.isfinite(list(m.values())).all()
    assert result.metrics[0]["mse"] != result.metrics[1]["mse"]  # other L1 weights
    assert result.metrics[0]["ce_clean"] == result.metrics[2]["ce_clean"]
    assert result.metrics[2]["l0"] <= 8  # TopK
