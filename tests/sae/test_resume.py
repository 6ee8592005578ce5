"""SAE training checkpoints and resumes bit for bit: the activation stream's position, a crash
or SIGKILL mid-run or mid-save and a rerun, wrong shapes or settings, several processes."""

import functools
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxinterp.sae import train as T
from jaxinterp.train import sharding
from tests.helpers.processes import free_port
from tests.helpers.tiny_models import tiny
from tests.sae import fit_worker as W

pytestmark = pytest.mark.mesh  # builds meshes of the 8 CPU devices in this process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL, VARIABLES, _ = tiny()
# The 8-device mesh, built on first use (this module is imported, and its tests deselected,
# in the 1-device pass of `make test` too).
@functools.cache
def mesh_8():
    return sharding.make_mesh(W.MESH)


def _stream(tokens, **kw):
    acts = jax.jit(T.activation_fn(MODEL, W.SITE))
    kw = {"batch_size": 40, "buffer_batches": 2, "key": jax.random.key(3), "mesh": mesh_8(), **kw}
    return T.stream(acts, VARIABLES, tokens, **kw)


def _take(it, n):
    return [np.asarray(x) for x, _ in (next(it) for _ in range(n))]


@pytest.mark.parametrize("taken", [0, 1, 3, 4, 6])  # 4 batches per buffer: 4 is a boundary
def test_stream_position_restores_exactly(taken):
    reference = _stream(W.token_iterator())
    _take(reference, taken)
    state = reference.get_state()
    want = _take(reference, 5)
    resumed = _stream(W.token_iterator())
    resumed.set_state(state)
    assert resumed.get_state() == state  # restored, not yet read: the same position
    for i, (got, expected) in enumerate(zip(_take(resumed, 5), want, strict=True)):
        np.testing.assert_array_equal(got, expected, err_msg=f"batch {taken + i}")


def test_stream_of_a_plain_iterable_has_no_position():
    s = _stream(iter([W.token_source()[:8]] * 2))
    assert not s.checkpointable
    with pytest.raises(TypeError, match="cannot be saved"):
        s.get_state()


class Crash(Exception):
    pass


class CrashAt(W.KillAt):
    """Like the worker's SIGKILL, but raising in-process (checkpoints already started are
    committed, as after any crash that lets Python unwind)."""

    def __next__(self):
        self._calls += 1
        if self._calls == self._n:
            raise Crash
        return next(self._it)


def _fit(workdir, tokens=None, config=None, tc=None, mesh=None):
    tokens = W.token_iterator() if tokens is None else tokens
    return T.fit(config or W.sae_config(), tc or W.train_config(), MODEL, VARIABLES, tokens,
                 mesh=mesh or mesh_8(), workdir=workdir, verbose=False)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run (with checkpoints) and its workdir."""
    workdir = tmp_path_factory.mktemp("straight")
    return _fit(workdir), workdir


def _assert_same_state(got, want):
    got, want = W.flat_state(jax.device_get(got)), W.flat_state(jax.device_get(want))
    assert set(got) == set(want)
    assert any("steps_since_fired" in k for k in got) and any("rng" in k for k in got)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_checkpoints_are_saved_every_n_steps_and_at_the_end(straight):
    result, workdir = straight
    steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
    assert steps == [15, 20, 24]  # every 5 and the last; keeps 3
    assert result.start_step == 0 and int(result.state.step) == 24
    again = _fit(workdir)  # a finished run only restores
    assert again.start_step == 24 and again.history == []
    _assert_same_state(again.state, result.state)


def test_crash_mid_buffer_and_rerun_is_bit_identical(straight, tmp_path):
    # Token batch 7 is read at step 13 (buffer 3 = steps 13-16): after the checkpoint at
    # step 10, whose stream position is 2 batches into buffer 2.
    with pytest.raises(Crash):
        _fit(tmp_path, CrashAt(W.token_iterator(), 8))
    assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()) == [5, 10]
    resumed = _fit(tmp_path)
    assert resumed.start_step == 10
    _assert_same_state(resumed.state, straight[0].state)


def test_longer_run_continues_from_the_last_checkpoint(straight, tmp_path):
    _fit(tmp_path, tc=W.train_config(num_steps=13, resample_until=24))  # ends mid-buffer
    resumed = _fit(tmp_path)
    assert resumed.start_step == 13
    _assert_same_state(resumed.state, straight[0].state)


def test_checkpoint_restores_onto_another_mesh(straight):
    result, workdir = straight  # saved on data 2 x fsdp 2 x tensor 2
    other = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 4}, jax.devices()[:4])
    again = _fit(workdir, mesh=other)
    assert again.start_step == 24
    w_enc = again.state.params["W_enc"]
    assert dict(w_enc.sharding.mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 4}
    assert tuple(w_enc.sharding.spec) == ("fsdp", "tensor")
    _assert_same_state(again.state, result.state)


def test_wrong_sae_shape_is_a_clear_error_and_nothing_is_changed(straight):
    _, workdir = straight
    before = sorted(os.listdir(workdir / "checkpoints"))
    with pytest.raises(ValueError, match=r"does not fit(.|\n)*params\.?/?W_enc.*\(32, 64\) vs "
                                         r"model \(32, 128\)(.|\n)*other shapes than this "
                                         r"SAEConfig"):
        _fit(workdir, config=W.sae_config(d_sae=128))
    assert sorted(os.listdir(workdir / "checkpoints")) == before


def test_other_stream_settings_are_a_clear_error(straight):
    _, workdir = straight
    with pytest.raises(ValueError, match=r"streamed activations with .*'buffer_batches': 2.*"
                                         r"this run has .*'buffer_batches': 4"):
        _fit(workdir, tc=W.train_config(buffer_batches=4))


def test_workdir_with_a_plain_iterable_is_a_clear_error(tmp_path):
    batches = [W.token_source()[:8]] * 30
    with pytest.raises(ValueError, match="needs a token iterator whose position can be saved"
                                         r"(.|\n)*make_iterator(.|\n)*workdir=None"):
        _fit(tmp_path, batches)
    # Without a workdir, any iterable still works.
    assert T.fit(W.sae_config(), W.train_config(num_steps=2), MODEL, VARIABLES, batches,
                 mesh=mesh_8(), verbose=False).state.step == 2


# -- as processes: SIGKILL and rerun the same command; two JAX processes ------------------------

def _worker(workdir, out, *flags, devices=8, popen=False):
    cmd = [sys.executable, "-m", "tests.sae.fit_worker", f"--workdir={workdir}",
           f"--out={out}", *flags]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if popen:
        return proc
    output = proc.communicate(timeout=600)[0]
    return proc.returncode, output


def _load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _committed(workdir):
    names = os.listdir(os.path.join(workdir, "checkpoints"))
    return sorted(int(n) for n in names if n.isdigit()), [n for n in names if "tmp" in n]


@pytest.fixture(scope="module")
def straight_process(tmp_path_factory):
    """The final state of an uninterrupted worker process."""
    d = tmp_path_factory.mktemp("straight_process")
    rc, output = _worker(d / "w", d / "final.npz")
    assert rc == 0, output[-3000:]
    return _load(d / "final.npz")


def _assert_same_arrays(got, want):
    assert set(got) == set(want) and any("steps_since_fired" in k for k in want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.slow
def test_sigkill_mid_run_and_rerun_is_bit_identical(straight_process, tmp_path):
    rc, output = _worker(tmp_path / "w", tmp_path / "final.npz", "--kill_at_batch=8")
    assert rc == -signal.SIGKILL, output[-3000:]
    done, _ = _committed(tmp_path / "w")
    assert done and done[-1] <= 10, done  # killed at step 13
    rc, output = _worker(tmp_path / "w", tmp_path / "final.npz")
    assert rc == 0, output[-3000:]
    assert f"resumed from step {done[-1]}" in output
    _assert_same_arrays(_load(tmp_path / "final.npz"), straight_process)


@pytest.mark.slow
def test_sigkill_during_an_async_save_and_rerun_is_bit_identical(straight_process, tmp_path):
    rc, output = _worker(tmp_path / "w", tmp_path / "final.npz", "--kill_after_save=15")
    assert rc == -signal.SIGKILL, output[-3000:]
    done, tmp = _committed(tmp_path / "w")
    # Killed while step 15 was being written: only orbax's temporary folder holds it.
    assert done == [5, 10] and any(n.startswith("15.") for n in tmp), (done, tmp)
    rc, output = _worker(tmp_path / "w", tmp_path / "final.npz")
    assert rc == 0, output[-3000:]
    assert "resumed from step 10" in output
    _assert_same_arrays(_load(tmp_path / "final.npz"), straight_process)


@pytest.mark.slow
def test_two_processes_each_feeding_their_rows_train_the_same_sae(straight_process, tmp_path):
    port = free_port()
    procs = [_worker(tmp_path / "w", tmp_path / "final.npz", "--num_processes=2",
                     f"--process_id={i}", f"--coordinator=localhost:{port}", devices=4,
                     popen=True) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    two = _load(tmp_path / "final.npz")
    assert set(two) == set(straight_process)
    for k, want in straight_process.items():
        if want.dtype.kind in "iu":  # step, rng, steps_since_fired
            np.testing.assert_array_equal(two[k], want, err_msg=k)
        else:
            np.testing.assert_allclose(two[k], want, rtol=1e-5, atol=1e-6, err_msg=k)


def _tiny_experiment(num_steps, lm_workdir=""):
    from configs.train_sae import get_config

    c = get_config()
    c.lm_workdir = lm_workdir
    c.lm.num_train_steps = c.lm.checkpoint_every_steps = c.lm.eval_every_steps = 10
    c.lm.eval_batches, c.lm.log_every_steps = 1, 10
    c.lm.data.builder_kwargs.num_train, c.lm.data.builder_kwargs.num_test = 256, 64
    c.lm.model.d_model, c.lm.model.d_mlp = 32, 64
    c.sae.d_in, c.sae.d_sae = 32, 64
    # A buffer is 4 x 16 x 32 = 2048 rows = 8 steps: the checkpoint at 15 is mid-buffer.
    c.train.num_steps, c.train.batch_size, c.train.log_every = num_steps, 256, 5
    c.train.checkpoint_every, c.train.resample_every, c.train.dead_after_steps = 5, 8, 4
    c.model_batch_size, c.eval_batch_size = 16, 32
    return c


@pytest.mark.slow
def test_experiment_rerun_resumes_the_sae_bit_for_bit(tmp_path, capsys):
    from experiments.train_sae import run_experiment
    from jaxinterp.sae import io

    run_experiment(_tiny_experiment(15), str(tmp_path / "a"))  # stops at step 15
    capsys.readouterr()
    run_experiment(_tiny_experiment(30), str(tmp_path / "a"))  # the same command, longer
    assert f"resumed from step 15 in {tmp_path / 'a' / 'sae'}" in capsys.readouterr().out
    run_experiment(_tiny_experiment(30, lm_workdir=str(tmp_path / "a" / "lm")),
                   str(tmp_path / "b"))  # straight through, on the same model
    resumed, _ = io.load(tmp_path / "a" / "sae")
    straight, _ = io.load(tmp_path / "b" / "sae")
    for k in straight:
        np.testing.assert_array_equal(resumed[k], straight[k], err_msg=k)
