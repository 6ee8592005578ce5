"""Train a sparse autoencoder or transcoder on a model's activations.

    python -m experiments.train_sae --config=configs/train_sae.py --workdir=workdirs/train_sae

Every config field can be overridden (`--config.sae.architecture=jumprelu`). Rerunning the
same command resumes (the model's run, then the SAE's, from their checkpoints under --workdir),
so an interrupted run ends with the same SAE, bit for bit, as an uninterrupted one.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from jaxinterp.sae.experiment import run_experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "SAE experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the model, the SAE, their checkpoints "
                                "and logs go; a rerun resumes from them.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:  # orbax logs every save at INFO
        logging.set_verbosity(logging.WARNING)
    run_experiment(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
