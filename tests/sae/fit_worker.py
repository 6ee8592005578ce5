"""A tiny SAE training run as a process, for the resume tests (killed with SIGKILL, rerun, run
as one of several JAX processes):

    python -m tests.sae.fit_worker --workdir=W --out=final.npz [--kill_at_batch=N |
        --kill_after_save=STEP] [--num_processes=2 --process_id=I --coordinator=host:port]

It trains `sae_config()` / `train_config()` on a tiny model's activations streamed from a grain
iterator (`jaxinterp.data.make_iterator`, this process's rows) with `jaxinterp.sae.train.fit`
and `workdir=W`, so a rerun resumes. At the end process 0 writes every leaf of the final
`SAEState` (gathered from all processes) to `--out`, keyed by its path.

--kill_at_batch=N: SIGKILL this process when it asks the token iterator for its N-th batch
(counting from 1; the first request is `fit`'s look at the first batch), i.e. mid-run and,
with the settings below, mid-buffer.
--kill_after_save=STEP: SIGKILL this process as soon as `Checkpointer.save` returns for STEP,
i.e. while that asynchronous save is still being written.
"""

from __future__ import annotations

import argparse
import os
import signal

import numpy as np

SITE = "blocks.0.hook_resid_post"
MESH = {"data": 2, "fsdp": 2, "tensor": 2}
MODEL_BATCH = 8  # global token batch [8, 10]: 80 activation rows


def sae_config(d_sae: int = 64):
    from jaxinterp.sae.model import SAEConfig

    return SAEConfig(architecture="topk", d_in=32, d_sae=d_sae, k=4, site=SITE)


def train_config(**overrides):
    """24 steps of 40 rows; a buffer of 2 model batches is 160 rows = 4 steps, so the
    checkpoints at 5, 10, 15 fall inside a buffer and the one at 20 on a refill boundary;
    dead latents are resampled every 6 steps."""
    from jaxinterp.sae.train import TrainConfig

    return TrainConfig(**{**dict(num_steps=24, batch_size=40, buffer_batches=2,
                                 checkpoint_every=5, resample_every=6, dead_after_steps=3,
                                 log_every=4, warmup_steps=5, learning_rate=3e-3), **overrides})


def token_source(n: int = 256, seq: int = 10, vocab: int = 40) -> np.ndarray:
    """Random token sequences [n, seq] (a random-access source for make_iterator)."""
    return np.random.default_rng(0).integers(0, vocab, (n, seq)).astype(np.int32)


def token_iterator(process_index: int | None = None, process_count: int | None = None):
    from jaxinterp.data import make_iterator

    return make_iterator(token_source(), batch_size=MODEL_BATCH, seed=0, shuffle=True,
                         process_index=process_index, process_count=process_count)


class KillAt:
    """Delegates to a token iterator (position included); SIGKILLs the process on the
    `n`-th request for a batch."""

    def __init__(self, it, n: int):
        self._it, self._n, self._calls = it, n, 0

    def __iter__(self):
        return self

    def __next__(self):
        self._calls += 1
        if self._calls == self._n:
            os.kill(os.getpid(), signal.SIGKILL)
        return next(self._it)

    def get_state(self):
        return self._it.get_state()

    def set_state(self, state):
        self._it.set_state(state)


def flat_state(state) -> dict[str, np.ndarray]:
    """Every leaf of `state` as a NumPy array, keyed by its path (`opt_state/0/0/mu/W_enc`)."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--kill_at_batch", type=int, default=0)
    p.add_argument("--kill_after_save", type=int, default=0)
    p.add_argument("--num_processes", type=int, default=1)
    p.add_argument("--process_id", type=int, default=0)
    p.add_argument("--coordinator", default="")
    args = p.parse_args(argv)

    import jax

    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    from jax.experimental import multihost_utils

    from jaxinterp.sae.train import fit
    from jaxinterp.train import sharding
    from jaxinterp.train.checkpoint import Checkpointer
    from tests.helpers.tiny_models import tiny

    if args.kill_after_save:
        save = Checkpointer.save

        def save_then_die(self, step, *a, **kw):
            save(self, step, *a, **kw)
            if step == args.kill_after_save:  # the async commit is still in flight
                os.kill(os.getpid(), signal.SIGKILL)

        Checkpointer.save = save_then_die

    model, variables, _ = tiny()
    tokens = token_iterator()
    if args.kill_at_batch:
        tokens = KillAt(tokens, args.kill_at_batch)
    result = fit(sae_config(), train_config(), model, variables, tokens,
                 mesh=sharding.make_mesh(MESH), workdir=args.workdir)
    state = result.state
    if jax.process_count() > 1:  # the global arrays, whole, on every process
        state = multihost_utils.process_allgather(state, tiled=True)
    if jax.process_index() == 0:
        np.savez(args.out, **flat_state(jax.device_get(state)))
    print(f"done; started at step {result.start_step}", flush=True)


if __name__ == "__main__":
    main()
