"""The training loop in-process: outputs, resume, checkpoint failure modes, config errors."""

import glob
import logging
import os

import chex
import jax
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.train import checkpoint as ckpt_lib
from jaxinterp.train import state as state_lib
from jaxinterp.train.config import validate
from jaxinterp.train.loop import train
from jaxinterp.train.metrics import read_jsonl
from tests.helpers.tiny_train_config import tiny_config

pytestmark = pytest.mark.mesh  # builds meshes of the 8 CPU devices in this process


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A completed 20-step run (checkpoints at 5, 10, 15, 20; keeps 3)."""
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config(data__data_dir=data_dir)
    result = train(config, workdir)
    return config, workdir, result


def test_outputs_metrics_events_checkpoints_and_params(finished):
    _, workdir, result = finished
    rows = read_jsonl(workdir)
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 21))
    assert {"train/loss", "train/accuracy", "train/grad_norm", "train/learning_rate"} <= set(
        train_rows[0])
    assert [r["step"] for r in rows if "eval/loss" in r] == [0, 10, 20]
    assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
    steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                   if d.isdigit())
    assert steps == [10, 15, 20]  # keeps the last 3
    params = ckpt_lib.load_params(workdir)
    want = jax.tree.map(np.asarray, result.state.params)
    chex.assert_trees_all_equal(params, want)
    # The saved parameters work with the model and ji.run.
    tokens = np.ones((2, 12), np.int32)
    logits, _ = ji.run(result.model, {"params": params}, tokens)
    assert logits.shape == (2, 12, 16)


def test_rerun_resumes_and_does_not_repeat_steps(finished, capsys):
    config, workdir, first = finished
    n_rows = len(read_jsonl(workdir))
    again = train(config, workdir)
    assert again.start_step == 20
    assert "resumed from step 20" in capsys.readouterr().out
    chex.assert_trees_all_equal(again.state.params, first.state.params)
    assert len(read_jsonl(workdir)) == n_rows  # nothing was trained again


def test_longer_run_continues_from_checkpoint(tmp_path, data_dir):
    """Training 10 steps, then resuming to 20, equals 20 steps in one go."""
    config = tiny_config(data__data_dir=data_dir, num_train_steps=10)
    train(config, str(tmp_path))
    resumed = train(tiny_config(data__data_dir=data_dir), str(tmp_path))
    straight = train(tiny_config(data__data_dir=data_dir), str(tmp_path / "straight"))
    assert resumed.start_step == 10
    chex.assert_trees_all_equal(resumed.state.params, straight.state.params)


def test_corrupted_newest_checkpoint_is_set_aside_with_warning(finished, tmp_path, caplog):
    import shutil

    _, workdir, result = finished
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    newest = copy / "checkpoints" / "20"
    for f in glob.glob(str(newest / "state" / "**" / "d" / "*"), recursive=True):
        with open(f, "wb") as fh:
            fh.write(b"garbage")
    checkpointer = ckpt_lib.Checkpointer(copy / "checkpoints")
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                           sharding=x.sharding), result.state)
    with caplog.at_level(logging.WARNING):
        restored = checkpointer.restore(abstract)
    assert restored is not None and restored[1] == 15
    assert "step 20 is unreadable" in caplog.text
    aside = [d for d in os.listdir(copy / "checkpoints") if d.startswith("corrupted-20")]
    assert aside and os.listdir(copy / "checkpoints" / aside[0])  # kept, not deleted
    checkpointer.close()


def test_incompatible_checkpoint_is_a_clear_error_and_nothing_is_deleted(finished, data_dir):
    _, workdir, _ = finished
    before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    with pytest.raises(ValueError, match=r"does not fit this model(.|\n)*"
                                         r"params/W_U: checkpoint \(32, 16\) vs model \(48, 16\)"):
        train(tiny_config(data__data_dir=data_dir, model__d_model=48), workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


def test_nan_guard_names_step_and_metric_and_keeps_good_checkpoint(tmp_path, data_dir):
    config = tiny_config(data__data_dir=data_dir, optimizer__learning_rate=1e30,
                         optimizer__warmup_steps=0, optimizer__grad_clip_norm=0.0,
                         checkpoint_every_steps=1)
    with pytest.raises(FloatingPointError, match=r"non-finite \w+=(nan|inf) at step \d+"):
        train(config, str(tmp_path))
    params = ckpt_lib.load_params(str(tmp_path))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


@pytest.mark.parametrize("overrides, message", [
    (dict(num_train_steps=0), "num_train_steps must be a positive integer"),
    (dict(optimizer__learning_rate=-1.0), "learning_rate must be positive"),
    (dict(batch_size=12), r"batch_size=12 .* not divisible by the data axes"),
    (dict(mesh__data=3), "needs 3 devices, but there are 8"),
    (dict(mesh__fsdp=3), "does not divide the 8 devices"),
    (dict(model__n_layer=2), "unknown config field.*n_layer"),
    (dict(model__preset="gpt3"), "unknown model preset 'gpt3'"),
    (dict(data__read_threads=0), "data.read_threads must be a positive integer, got 0"),
    (dict(data__prefetch_batches=-1), "data.prefetch_batches must be a positive integer"),
])
def test_bad_config_is_a_clear_error_before_compiling(overrides, message):
    config = tiny_config(**{k: v for k, v in overrides.items() if k != "model__n_layer"})
    if "model__n_layer" in overrides:
        config.model.unlock()
        config.model.n_layer = 2
    with pytest.raises(ValueError, match=message):
        validate(config)


def test_unknown_top_level_field_is_rejected():
    config = tiny_config()
    config.lock()
    with pytest.raises(AttributeError, match="num_steps"):
        config.num_steps = 10


def test_state_abstract_restore_target_keeps_shardings(finished):
    _, _, result = finished
    abstract = state_lib.abstract(jax.tree.map(lambda x: x.sharding, result.state),
                                  result.state)
    assert jax.tree.structure(abstract) == jax.tree.structure(result.state)


def test_checkpoint_restores_onto_a_different_mesh(finished, tmp_path, data_dir):
    import shutil

    _, workdir, first = finished
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    config = tiny_config(data__data_dir=data_dir, num_train_steps=22, mesh__data=2,
                         mesh__fsdp=2, mesh__tensor=2)
    resumed = train(config, copy)  # saved on an 8 x 1 x 1 mesh
    assert resumed.start_step == 20
    w_q = resumed.state.params["blocks_0"]["attn"]["W_Q"]
    assert dict(w_q.sharding.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert w_q.sharding.spec[:2] == ("tensor", "fsdp")
    restored = ckpt_lib.load_params(copy, step=20)
    chex.assert_trees_all_equal(restored, jax.device_get(first.state.params))


def test_relative_workdir(tmp_path, data_dir, monkeypatch):
    """`make demo` passes a relative --workdir; orbax itself needs absolute paths."""
    monkeypatch.chdir(tmp_path)
    train(tiny_config(data__data_dir=data_dir, num_train_steps=5), "relative/run")
    assert ckpt_lib.load_params("relative/run") is not None
    assert os.path.isdir(tmp_path / "relative" / "run" / "checkpoints" / "5")
