"""SIGKILL the training binary mid-run or during an asynchronous checkpoint save, rerun the same
command: the run ends with every variable of the uninterrupted run, bit for bit.

Two models whose train state holds more than parameters and optimizer moments (the family
configs of tests/train/family_configs.py, 20 steps, a checkpoint every 5, on 8 CPU devices,
on the family's mesh, family_configs.MESHES):
  strip_mlp  BatchNorm statistics (batch_stats), drop path (the `dropout` rng from the state's
             rng) and a training-time RunningMean intervention (iv_state);
  kan        B-spline grids (kan_grid) updated at steps 0, 5, 10 and 15.

The killed process is `tests.train.slow_commit` (the training binary with orbax's commit of
steps >= SLOW_COMMIT_FROM_STEP held back), so the kill lands where it should whatever the
machine's speed:
  mid_run   commits from step 15 on are held; kill -9 once step 10 is committed. The process
            cannot have finished (the save at 20 waits for 15's commit); the rerun resumes
            from step 10.
  mid_save  commits from step 10 on are held; kill -9 once step 10's temporary folder holds
            the written train state. Step 10 never commits; the rerun resumes from step 5.
The rerun is the plain binary. Every leaf of the final saved state (step, params, opt_state,
rng, model_state, iv_state), the data iterator's saved position and the per-step train losses
equal the uninterrupted run's exactly.
"""

import os
import signal
import time

import numpy as np
import pytest

from tests.train.family_configs import (
    checkpoint_steps,
    flags,
    mesh_flags,
    run,
    saved_state,
    train_losses,
)

# kill point -> (commits held from this step on, the step the rerun must resume from)
KILLS = {"mid_run": (15, 10), "mid_save": (10, 5)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def straight(data_dir, xla_cache, tmp_path_factory):
    """The uninterrupted run of each family (run once, on first use; the same command as the
    8-device run of test_families_sharded, so its programs come from the session's cache when
    that ran first)."""
    done = {}

    def get(family: str) -> str:
        if family not in done:
            workdir = str(tmp_path_factory.mktemp(f"straight_{family}"))
            run(workdir, family, *flags(data__data_dir=data_dir, **mesh_flags(family)),
                env=xla_cache)
            done[family] = workdir
        return done[family]

    return get


def _state_written(workdir: str, step: int) -> bool:
    """Whether step's temporary (uncommitted) checkpoint folder holds the written train state."""
    d = os.path.join(workdir, "checkpoints")
    for tmp in checkpoint_steps(workdir)[1]:
        if tmp.startswith(f"{step}."):
            for item in os.listdir(os.path.join(d, tmp)):
                if item.startswith("state") and os.path.exists(
                        os.path.join(d, tmp, item, "_METADATA")):
                    return True
    return False


def _kill_when(proc, ready, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before the kill point:\n" + \
            proc.communicate()[0][-3000:]
        assert time.time() < deadline, "the kill point never came"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("when", list(KILLS))
@pytest.mark.parametrize("family", ["strip_mlp", "kan"])
def test_sigkill_then_rerun_equals_the_uninterrupted_run_bit_for_bit(
        family, when, data_dir, xla_cache, straight, tmp_path):
    reference = straight(family)
    held_from, resume_step = KILLS[when]
    workdir = str(tmp_path / "killed")
    args = flags(data__data_dir=data_dir, **mesh_flags(family))
    proc = run(workdir, family, *args, popen=True, module="tests.train.slow_commit",
               env={**xla_cache, "SLOW_COMMIT_FROM_STEP": str(held_from)})
    if when == "mid_run":
        _kill_when(proc, lambda: 10 in checkpoint_steps(workdir)[0])
    else:
        _kill_when(proc, lambda: _state_written(workdir, 10))
    committed, pending = checkpoint_steps(workdir)
    assert committed == list(range(5, resume_step + 1, 5)), (committed, pending)
    print(f"{family} {when}: killed with checkpoints {committed} committed, in flight: "
          f"{pending}")

    out = run(workdir, family, *args, env=xla_cache).stdout
    assert f"resumed from step {resume_step} in" in out, out[-2000:]

    want, got = saved_state(reference, 20), saved_state(workdir, 20)
    assert sorted(got) == sorted(want)
    collections = {k.split("/")[0] for k in want} | {"/".join(k.split("/")[:2]) for k in want}
    expected = {"step", "params", "opt_state", "rng", "model_state"}
    expected |= ({"model_state/batch_stats", "iv_state"} if family == "strip_mlp"
                 else {"model_state/kan_grid"})
    assert expected <= collections, sorted(collections)
    assert int(got["step"]) == 20
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # The data iterator's saved position, and the loss of every step (the killed run's and the
    # rerun's rows together: the rerun redid the steps after its checkpoint).
    data = os.path.join(reference, "checkpoints", "20", "data")
    positions = [n for n in os.listdir(data) if n.endswith(".json")]  # process_0-of-1.json
    assert positions
    for name in positions:
        with open(os.path.join(reference, "checkpoints", "20", "data", name), "rb") as a, \
                open(os.path.join(workdir, "checkpoints", "20", "data", name), "rb") as b:
            assert a.read() == b.read(), name
    np.testing.assert_array_equal(train_losses(workdir), train_losses(reference))
