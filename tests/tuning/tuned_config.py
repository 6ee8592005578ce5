"""A tiny trained-intervention config for the training binary: a steering vector trained on a
frozen 2-layer induction model (tests/helpers/tiny_train_config.py), whose workdir comes as a
flag:

    python -m experiments.train --config=tests/tuning/tuned_config.py \\
        --config.tuning.base=<base workdir> --workdir=W
"""

from ml_collections import ConfigDict

from tests.helpers.tiny_train_config import tiny_config

SITE = "blocks.1.hook_resid_post"


def get_config() -> ConfigDict:
    config = tiny_config()
    config.optimizer.learning_rate = 3e-2
    config.tuning.method = ConfigDict({"name": "steering_vector", "site": SITE})
    return config
