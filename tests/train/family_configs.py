"""Tiny training configs of several model families on the 8x8 digits, in-process or as a
config file for the training binary:

    config = family_configs.get_config("strip_mlp")                 # in-process: train(...)
    python -m experiments.train --config=tests/train/family_configs.py:strip_mlp --workdir=W

Each model has 4k-24k parameters and trains 20 steps of batch 16 (a checkpoint every 5) with
augmentation (random crop with 1 pixel of padding, random flip); compiling takes most of the
time (Strip-MLP's programs about a minute of CPU). The families:

  vit        ViT, 2 layers, d_model 16, 2 heads, patches 4x4
  mixer      MLP-Mixer, 2 blocks, hidden 16, patches 2x2
  strip_mlp  Strip-MLP, one block per stage, patch 1: BatchNorm in train mode, drop path 0.1
             (the `dropout` rng), and a training-time `RunningMean` intervention clamping
             block 1's local-mixing branch to its running mean (statistics in the train state)
  kan        B-spline KAN 64-16-10 (kan_64_64_10 narrowed), grids updated at steps 0, 5, 10, 15;
             learning rate 3e-3 (the others 1e-2)

`run(workdir, family, *flags, devices=...)` runs the binary in a subprocess with that many CPU
devices (`popen=True` returns the process instead of waiting); with `env=compile_cache_env(d)`
it reuses the programs earlier runs compiled. `MESHES` is each family's 8-device mesh;
`train_losses`, `saved_state` and `saved_shardings` read a run's results back.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys

import numpy as np
from ml_collections import ConfigDict

from jaxinterp.data import image
from jaxinterp.train.config import base_config
from jaxinterp.train.metrics import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILE = os.path.relpath(os.path.abspath(__file__), ROOT)

MODELS = {
    "vit": dict(preset="vit_ti16", image_size=8, patch_size=4, in_channels=1, num_classes=10,
                n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32),
    "mixer": dict(preset="mixer_s32", image_size=8, patch_size=2, in_channels=1,
                  num_classes=10, n_layers=2, d_model=16, d_mlp_tokens=16,
                  d_mlp=32),
    "strip_mlp": dict(preset="strip_mlp_t_light", image_size=8, patch_size=1, in_channels=1,
                      num_classes=10, d_model=4, n_layers=(1, 1, 1, 1), strip_groups=1,
                      drop_path_rate=0.1),
    "kan": dict(preset="kan_64_64_10", widths=(64, 16, 10)),
}
FAMILIES = tuple(MODELS)
# The 8-device mesh each family's tests train on (the 1-device vs 8-device test, the SIGKILL
# test and the 2-process test run the same command on it, so they share compiled programs).
# Strip-MLP works around two XLA bugs on tensor > 1 (tests/train/test_families_sharded.py).
MESHES = {"vit": dict(data=2, fsdp=2, tensor=2), "mixer": dict(data=2, fsdp=2, tensor=2),
          "strip_mlp": dict(data=2, fsdp=2, tensor=2), "kan": dict(data=2, fsdp=2, tensor=2)}


def mesh_flags(family: str) -> dict[str, int]:
    """`flags(**mesh_flags(family))`: the family's 8-device mesh as overrides."""
    return {f"mesh__{axis}": size for axis, size in MESHES[family].items()}


def get_config(family: str = "vit") -> ConfigDict:
    """The tiny config of `family` (one of FAMILIES)."""
    if family not in MODELS:
        raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")
    c = base_config(num_train_steps=20, batch_size=16, log_every_steps=5, eval_every_steps=10,
                    eval_batches=1, checkpoint_every_steps=5)
    c.model = ConfigDict(MODELS[family])
    c.task = ConfigDict({"name": "classification", "num_classes": 10})
    c.data.name = "digits"
    c.data.image = image.default_config()
    c.data.image.update(mean=(0.3,), std=(0.4,), crop_padding=1, flip=True)
    c.optimizer.learning_rate = 1e-2
    c.optimizer.warmup_steps = 2
    c.optimizer.weight_decay = 1e-4
    if family == "strip_mlp":
        c.interventions = [{"kind": "RunningMean", "site": RUNNING_MEAN_SITE, "decay": 0.9}]
    if family == "kan":
        c.kan_grid.update_every = 5
        # At 1e-2 the loss jumps after grid updates, and 1 and 8 devices drift apart by ~1e-5
        # (float32 rounding, amplified); at 3e-3 by ~2e-6.
        c.optimizer.learning_rate = 3e-3
    return c


RUNNING_MEAN_SITE = "blocks.1.local_mixing.hook_out"  # Strip-MLP: a branch, not the residual


def flags(**overrides) -> list[str]:
    """Command-line overrides; dotted keys are spelled with `__` (mesh__data=2)."""
    return [f"--config.{k.replace('__', '.')}={v}" for k, v in overrides.items()]


def run(workdir: str, family: str, *flags: str, devices: int = 8, popen: bool = False,
        module: str = "experiments.train", env: dict | None = None, timeout: float = 600,
        config: str = ""):
    """`python -m <module> --config=<this file>:<family> --workdir=<workdir> <flags>` with
    `devices` CPU devices; the finished `CompletedProcess` (asserted to succeed), or the
    running `Popen` (stdout and stderr together) with `popen=True`. `config` names another
    config file instead (then `family` only labels the run)."""
    cmd = [sys.executable, "-m", module, f"--config={config or f'{FILE}:{family}'}",
           f"--workdir={workdir}", *flags]
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices),
                **(env or {})}
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    with _one_at_a_time(full_env, [module, family, str(devices), *sorted(
            f for f in flags if not f.startswith("--config.data.data_dir="))]):
        result = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True,
                                timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@contextlib.contextmanager
def _one_at_a_time(env: dict, command: list[str]):
    """With a compilation cache: holds a lock for this command (its workdir and data_dir
    aside) in the cache directory, so two pytest-xdist workers running the same program wait
    for each other, and the second loads what the first compiled instead of compiling it too."""
    cache = env.get("JAX_COMPILATION_CACHE_DIR")
    if not cache:
        yield
        return
    os.makedirs(cache, exist_ok=True)
    name = hashlib.sha256("\0".join(command).encode()).hexdigest()[:16]
    with open(os.path.join(cache, f"run-{name}.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def compile_cache_env(directory: str) -> dict[str, str]:
    """Environment for a subprocess that keeps every XLA executable it compiles in `directory`
    and reuses what an earlier run with the same program put there: a rerun of the same config
    then skips compiling (Strip-MLP takes about a minute to compile on 2 CPU cores). The same
    executable gives the same numbers, so bit-for-bit comparisons are unaffected."""
    return {"JAX_COMPILATION_CACHE_DIR": directory,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def train_losses(workdir: str) -> np.ndarray:
    """The per-step train losses in `workdir/metrics.jsonl`, steps 1, 2, ... (a resumed run
    appends the steps it redid; the last row of each step wins)."""
    rows = {r["step"]: r["train/loss"] for r in read_jsonl(workdir) if "train/loss" in r}
    assert sorted(rows) == list(range(1, len(rows) + 1)), sorted(rows)
    return np.asarray([rows[s] for s in sorted(rows)])


def checkpoint_steps(workdir: str) -> tuple[list[int], list[str]]:
    """(committed checkpoint steps, names of uncommitted temporary folders) in `workdir`."""
    d = os.path.join(workdir, "checkpoints")
    names = os.listdir(d) if os.path.isdir(d) else []
    return (sorted(int(n) for n in names if n.isdigit()),
            sorted(n for n in names if "orbax-checkpoint-tmp" in n))


def saved_shardings(workdir: str, step: int | None = None) -> dict[str, tuple]:
    """`{leaf key (as in saved_state): (mesh shape, partition spec)}` of the arrays a run saved
    at `step` (default: the newest): how they were laid out on the run's devices."""
    import jax

    manager, step = _open_checkpoints(workdir, step)
    try:
        tree = _state_metadata(manager, step)
    finally:
        manager.close()
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_key(path): (tuple(int(n) for n in m.sharding.shape), tuple(m.sharding.partition_spec))
            for path, m in flat}


def _open_checkpoints(workdir: str, step: int | None):
    """(orbax CheckpointManager of `workdir`'s checkpoints, `step` or the newest step)."""
    import grain
    import orbax.checkpoint as ocp

    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    step = max(checkpoint_steps(workdir)[0]) if step is None else step
    manager = ocp.CheckpointManager(directory, item_handlers={
        "state": ocp.PyTreeCheckpointHandler(), "config": ocp.JsonCheckpointHandler(),
        "data": grain.checkpoint.CheckpointHandler()})
    return manager, step


def _state_metadata(manager, step: int):
    """The saved train state's array metadata at `step` (a tree like the state)."""
    tree = manager.item_metadata(step)["state"]
    return tree.tree if hasattr(tree, "tree") else tree


def _key(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def saved_state(workdir: str, step: int | None = None) -> dict[str, np.ndarray]:
    """Every leaf of the train state saved at `step` (default: the newest) in `workdir`:
    `{"step": ..., "params/...": ..., "opt_state/...": ..., "rng": ..., "model_state/...",
    "iv_state/..."}` as NumPy arrays, read with orbax directly (no model or config needed)."""
    import jax
    import orbax.checkpoint as ocp

    manager, step = _open_checkpoints(workdir, step)
    try:
        tree = _state_metadata(manager, step)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                              tree)
        state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target))))
    finally:
        manager.close()
    state = state["state"]
    return {_key(path): np.asarray(v) for path, v in jax.tree_util.tree_flatten_with_path(state)[0]}
