"""Checkpoints with orbax: asynchronous saves that keep the last N, of the train state, the
data iterator's position and the config, restorable onto any mesh.

Resuming is automatic: `restore` returns the newest readable checkpoint. A checkpoint that
cannot be read (a crash mid-write leaves only orbax's temporary folder, which is ignored; a
damaged file raises) is moved aside to `corrupted-<step>` with a warning, never deleted, and the
previous one is used. A checkpoint whose shapes do not match the model is a clear error, and
nothing is moved or deleted.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:
    """Saves and restores `{state, data, config}` under `directory`."""

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3,
                 async_save: bool = True):
        self.directory = epath.Path(os.path.abspath(directory))  # orbax needs absolute paths
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True)
        self._manager = self._new_manager()

    def _new_manager(self) -> ocp.CheckpointManager:
        handlers = {"state": ocp.StandardCheckpointHandler(),
                    "data": grain.checkpoint.CheckpointHandler(),
                    "config": ocp.JsonCheckpointHandler()}
        return ocp.CheckpointManager(self.directory, options=self._options,
                                     item_handlers=handlers)

    def save(self, step: int, state: Any, data_iterator: Any = None,
             config: dict[str, Any] | None = None) -> None:
        """Starts saving (asynchronously); returns once the arrays are copied off the device."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        if config is not None:
            items["config"] = ocp.args.JsonSave(config)
        self._manager.save(step, args=ocp.args.Composite(**items))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, abstract_state: Any, data_iterator: Any = None) -> tuple[Any, int] | None:
        """The newest readable checkpoint as `(state, step)`, or None if there is none.

        Args:
          abstract_state: `jax.ShapeDtypeStruct`s with the target shardings (any mesh).
          data_iterator: a grain iterator whose position is restored in place.
        """
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                saved = self._manager.item_metadata(step)["state"]
            except Exception as e:
                self._set_aside(step, e)
                continue
            _check_compatible(saved, abstract_state, self.directory / str(step))
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if data_iterator is not None:
                items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as e:
                self._set_aside(step, e)
                continue
            return restored["state"], step
        return None

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def _set_aside(self, step: int, error: Exception) -> None:
        path = self.directory / str(step)
        aside = self.directory / f"corrupted-{step}-{int(time.time())}"
        logging.warning("checkpoint at step %d is unreadable (%s: %s); moved to %s, trying the "
                        "previous one", step, type(error).__name__, str(error)[:200], aside)
        if jax.process_index() == 0:
            path.rename(aside)
        self._manager.close()
        self._manager = self._new_manager()


def load_params(workdir: str | os.PathLike, step: int | None = None) -> Any:
    """The model parameters saved by a training run in `workdir` (newest step by default),
    as arrays on this host's first device, ready for `model.apply({"params": params}, ...)`."""
    return _restore_variables(workdir, step)[0]["params"]


def load(workdir: str | os.PathLike, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    """`(model, variables)` of the training run in `workdir` (newest step by default).

    The model is rebuilt from the config saved with the checkpoint; `variables` holds `params`
    and every other collection the model has (`batch_stats`, `kan_grid`), on this host's first
    device, ready for `model.apply(variables, ...)` or `jaxinterp.run`.
    """
    from ml_collections import ConfigDict

    from jaxinterp.train.config import build_model

    variables, config = _restore_variables(workdir, step)
    if config is None:
        raise FileNotFoundError(f"the checkpoint in {workdir} has no saved config to rebuild "
                                "the model from; use load_params and build the model yourself")
    return build_model(ConfigDict(config)), variables


def saved_config(workdir: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
    """The config saved with the newest (or `step`'s) checkpoint in `workdir`, as a dict,
    without reading any arrays."""
    directory = epath.Path(os.path.abspath(workdir)) / "checkpoints"
    steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) \
        if directory.exists() else []
    if not steps:
        raise FileNotFoundError(f"no checkpoints under {directory}")
    step = steps[-1] if step is None else step
    if not (directory / str(step) / "config").exists():
        raise FileNotFoundError(f"the checkpoint for step {step} under {directory} has no "
                                "saved config")
    manager = ocp.CheckpointManager(directory, item_handlers={
        "config": ocp.JsonCheckpointHandler()})
    try:
        return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
                               )["config"]
    finally:
        manager.close()


def _restore_variables(workdir, step):
    """`(variables, saved config dict or None)` from the newest (or `step`'s) checkpoint."""
    directory = epath.Path(os.path.abspath(workdir)) / "checkpoints"
    if not directory.exists():
        raise FileNotFoundError(f"no checkpoints under {directory}")
    # Every item saved is registered (a manager that knows only some items logs a warning
    # about the others on each restore).
    manager = ocp.CheckpointManager(directory, item_handlers={
        "state": ocp.PyTreeCheckpointHandler(), "config": ocp.JsonCheckpointHandler(),
        "data": grain.checkpoint.CheckpointHandler()})
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            raise FileNotFoundError(f"no checkpoints under {directory}")
        step = steps[-1] if step is None else step
        if step not in steps:
            raise ValueError(f"no checkpoint for step {step} under {directory}; steps: {steps}")
        tree = manager.item_metadata(step)["state"]
        tree = tree.tree if hasattr(tree, "tree") else tree
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        wanted = {"params": tree["params"], "model_state": tree.get("model_state") or {}}
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                              wanted)
        items = {"state": ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True)}
        # (item_metadata reports None for JSON items even when they are there.)
        has_config = (directory / str(step) / "config").exists()
        if has_config:
            items["config"] = ocp.args.JsonRestore()
        restored = manager.restore(step, args=ocp.args.Composite(**items))
    finally:
        manager.close()
    state = restored["state"]
    variables = {"params": state["params"], **(state.get("model_state") or {})}
    return variables, restored["config"] if has_config else None


def _check_compatible(saved_metadata: Any, abstract_state: Any, where: epath.Path) -> None:
    saved = saved_metadata.tree if hasattr(saved_metadata, "tree") else saved_metadata
    want = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    have = {_path(k): v for k, v in jax.tree_util.tree_flatten_with_path(saved)[0]}
    problems = []
    for path, leaf in want:
        key = _path(path)
        if key not in have:
            problems.append(f"{key}: missing from the checkpoint")
        elif tuple(have[key].shape) != tuple(leaf.shape):
            problems.append(f"{key}: checkpoint {tuple(have[key].shape)} vs model "
                            f"{tuple(leaf.shape)}")
    if problems:
        raise ValueError(
            f"checkpoint {where} does not fit this model/config ({len(problems)} mismatches; "
            f"nothing was changed on disk):\n  " + "\n  ".join(problems[:10]))


def _path(keys) -> str:
    """`params/blocks_0/attn/W_Q`, whether the tree is a dataclass, a dict or a list."""
    parts = []
    for k in keys:
        for attr in ("name", "key", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
    return "/".join(parts)

