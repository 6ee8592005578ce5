"""Train a model from a config: `python -m experiments.train --config=configs/X.py --workdir=W`.

Every config field can be overridden (`--config.num_train_steps=100`). Rerunning the same
command resumes from the newest checkpoint in the workdir.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from jaxinterp.train.loop import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and figures go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:  # orbax logs every save at INFO
        logging.set_verbosity(logging.WARNING)
    train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
