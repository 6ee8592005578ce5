"""A tiny version of the flagship config, for in-process tests and for subprocess binaries."""

from __future__ import annotations

import os
import subprocess
import sys

from configs import induction_heads

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = {
    "num_train_steps": 20, "batch_size": 16, "checkpoint_every_steps": 5,
    "eval_every_steps": 10, "log_every_steps": 5, "eval_batches": 1,
    "model.d_model": 32, "model.n_heads": 2, "model.d_head": 16, "model.d_vocab": 16,
    "model.n_ctx": 13, "optimizer.warmup_steps": 2,
    "data.builder_kwargs.vocab_size": 16, "data.builder_kwargs.half_len": 6,
    "data.builder_kwargs.min_half_len": 3, "data.builder_kwargs.num_train": 512,
    "data.builder_kwargs.num_test": 64, "score_examples": 16,
}


def _merged(overrides) -> dict:
    """TINY updated with `overrides`, whose dotted keys are spelled with `__` (model__d_model)."""
    return {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}}


def tiny_config(**overrides):
    """The flagship config with TINY and `overrides` (dotted keys use `__`: model__d_model)."""
    config = induction_heads.get_config()
    for key, value in _merged(overrides).items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def cli(**overrides) -> list[str]:
    """The same overrides as command-line flags."""
    return [f"--config.{k}={v}" for k, v in _merged(overrides).items()]


def binary(module: str, workdir: str, *flags: str, devices: int = 8, env: dict | None = None,
           popen: bool = False):
    """Runs `python -m <module> --config=configs/induction_heads.py --workdir=... flags`."""
    cmd = [sys.executable, "-m", module, "--config=configs/induction_heads.py",
           f"--workdir={workdir}", *flags]
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices),
                **(env or {})}
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    result = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result
