"""The training binary with orbax's checkpoint commit held back, so a test can SIGKILL the
process while an asynchronous save is in flight:

    SLOW_COMMIT_FROM_STEP=10 python -m tests.train.slow_commit --config=... --workdir=...

takes the same flags as `python -m experiments.train` and does what it does (`train(config,
workdir)`, orbax's INFO logs off). Saves of steps >= SLOW_COMMIT_FROM_STEP write everything into
orbax's temporary folder (`<step>.orbax-checkpoint-tmp-*`) as usual, then wait
SLOW_COMMIT_SECONDS (default 600) before the commit (the rename to `<step>`), in orbax's
background thread. Training goes on meanwhile, up to the next save, which waits for this one to
commit. Nothing else changes: the same trainer, steps and data.
"""

import asyncio
import os

from absl import app, flags, logging
from ml_collections import config_flags
from orbax.checkpoint._src.path import atomicity

from jaxinterp.train.loop import train

_FROM = int(os.environ.get("SLOW_COMMIT_FROM_STEP", "0"))
_SECONDS = float(os.environ.get("SLOW_COMMIT_SECONDS", "600"))
_commit = atomicity.AtomicRenameTemporaryPath.finalize


async def _slow_commit(self):
    step = self.get_final().name
    if step.isdigit() and int(step) >= _FROM:
        print(f"slow_commit: holding the commit of step {step}", flush=True)
        await asyncio.sleep(_SECONDS)
    await _commit(self)


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    atomicity.AtomicRenameTemporaryPath.finalize = _slow_commit
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                              lock_config=True)
    _WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and logs go.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
