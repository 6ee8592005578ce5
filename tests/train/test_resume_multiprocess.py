"""End to end through the training binary: SIGKILL and resume bit for bit; 2 processes."""

import os
import time

import chex
import numpy as np
import pytest

from jaxinterp.train.checkpoint import load_params
from jaxinterp.train.metrics import read_jsonl
from tests.helpers.processes import free_port
from tests.helpers.tiny_train_config import binary, cli


def _steps(workdir):
    d = os.path.join(workdir, "checkpoints")
    names = os.listdir(d) if os.path.isdir(d) else []
    return sorted(int(n) for n in names if n.isdigit()), [n for n in names if "tmp" in n]


@pytest.mark.slow
def test_sigkill_mid_training_and_rerun_gives_bit_identical_parameters(tmp_path):
    flags = cli(num_train_steps=60, checkpoint_every_steps=2, eval_every_steps=30,
                data__data_dir=str(tmp_path / "data"))
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    binary("experiments.train", straight, *flags)

    # Kill -9 as soon as an asynchronous save is in flight after step 10 (or, failing that,
    # once step 10 is committed). Saves come every 2 steps, so this is mid-training.
    proc = binary("experiments.train", killed, *flags, popen=True)
    deadline, caught_mid_save = time.time() + 300, False
    while time.time() < deadline and proc.poll() is None:
        done, tmp = _steps(killed)
        if done and done[-1] >= 10 and tmp:
            caught_mid_save = True
            break
        if done and done[-1] >= 14:
            break
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    done, _ = _steps(killed)
    assert done and done[-1] < 60, f"the run was not interrupted: {done}"
    # A save that a crash cut short leaves only a temporary folder: plant one past the last
    # step (whatever the kill above caught), which the rerun must ignore.
    partial = os.path.join(killed, "checkpoints", f"{done[-1] + 1}.orbax-checkpoint-tmp-99")
    os.makedirs(os.path.join(partial, "state"), exist_ok=True)
    with open(os.path.join(partial, "state", "junk"), "wb") as f:
        f.write(b"\0" * 100)

    out = binary("experiments.train", killed, *flags)
    assert f"resumed from step {done[-1]}" in out.stdout
    a, b = load_params(straight), load_params(killed)
    chex.assert_trees_all_equal(a, b)
    print(f"killed after step {done[-1]}; mid-save: {caught_mid_save}")


@pytest.mark.slow
def test_two_processes_give_the_same_losses_as_one_process(tmp_path):
    flags = cli(num_train_steps=12, mesh__data=2, mesh__fsdp=2, mesh__tensor=2,
                checkpoint_every_steps=6, data__data_dir=str(tmp_path / "data"))
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    port = free_port()  # the 2-process run goes first: it prepares the dataset itself
    procs = [binary("experiments.train", two, *flags,
                    "--config.distributed.initialize=True",
                    f"--config.distributed.coordinator_address=localhost:{port}",
                    "--config.distributed.num_processes=2",
                    f"--config.distributed.process_id={i}", devices=4, popen=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    binary("experiments.train", one, *flags, devices=8)
    losses = [[r["train/loss"] for r in read_jsonl(w) if "train/loss" in r] for w in (one, two)]
    assert len(losses[0]) == len(losses[1]) == 12
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    assert "step 12/12" in outputs[0] and "step 12/12" not in outputs[1]  # process 0 logs
