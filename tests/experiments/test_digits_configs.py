"""Every config in configs/digits/ (found by glob, so a new file is tested too) and
configs/kan_transformer.py trains through `jaxinterp.train.train` at tiny settings to a test
accuracy well above chance, on the whole test split.

Each case is the config as it is (model, batch size, learning rate) with fewer steps (`STEPS`,
or `OVERRIDES`), a 10-step warmup and one eval at the end; datasets are prepared once in a
shared directory. Measured test accuracy (8 CPU devices as in conftest; seeds 0 / 1 / 2):

  activator 0.947 / 0.928 / 0.942    mixer      0.950 / 0.947 / 0.969
  deep_mlp  0.967 / 0.972 / 0.964    ms_mlp     0.947 / 0.939 / 0.933
  kan       0.975 / 0.983 / 0.981    ninformer  0.939 / 0.950 / 0.958
  kat       0.933 / 0.922 / 0.931    raftmlp    0.978 / 0.972 / 0.953
  maxim     0.811 / 0.889 / 0.767    strip_mlp  0.944 / 0.964 / 0.969  (50 steps)
  vit       0.933 / 0.931 / 0.933    kan_transformer 0.651 / 0.615 / 0.581  (500 steps)

Digits chance is 0.1, modular addition mod 31 chance 1/31; the test runs seed 0.
"""

import glob
import importlib
import os

import pytest

from jaxinterp.data import load_source
from jaxinterp.train.loop import train
from jaxinterp.train.metrics import read_jsonl

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS = sorted(os.path.splitext(os.path.basename(p))[0]
                for p in glob.glob(os.path.join(ROOT, "configs", "digits", "*.py"))
                if os.path.basename(p) not in ("__init__.py", "common.py"))
MODULES = [f"configs.digits.{name}" for name in DIGITS] + ["configs.kan_transformer"]

STEPS = 150  # digits
OVERRIDES = {
    "configs.digits.strip_mlp": dict(num_train_steps=50),  # slow steps (~0.2 s); fits fast
    "configs.kan_transformer": dict(num_train_steps=500),  # held-out pairs need more steps
}
MIN_ACCURACY = {"digits": 0.5, "modular_arithmetic": 0.3}


def tiny_config(module: str, seed: int, data_dir: str):
    """The config of `module` at the test's tiny settings."""
    config = importlib.import_module(module).get_config()
    config.seed = seed
    config.num_train_steps = STEPS
    config.optimizer.warmup_steps = 10
    for key, value in OVERRIDES.get(module, {}).items():
        config[key] = value
    steps = config.num_train_steps
    config.eval_every_steps = config.checkpoint_every_steps = config.log_every_steps = steps
    config.data.data_dir = data_dir
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def test_every_digits_config_is_tested():
    assert {"vit", "kat", "mixer", "raftmlp", "strip_mlp", "ms_mlp", "maxim", "activator",
            "ninformer", "deep_mlp", "kan"} <= set(DIGITS)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.rsplit(".", 1)[-1])
def test_config_trains_above_chance(module, data_dir, tmp_path):
    config = tiny_config(module, seed=0, data_dir=data_dir)
    train(config, str(tmp_path))
    final = [r for r in read_jsonl(str(tmp_path)) if "eval/accuracy" in r][-1]
    print(f"{module}: test accuracy {final['eval/accuracy']:.3f} after {final['step']} steps")
    assert final["step"] == config.num_train_steps
    # Every test example was scored once (the batch size divides the split: none dropped).
    test_split = load_source(config.data.name, config.data.eval_split, data_dir,
                             **config.data.builder_kwargs)
    assert final["eval/weight"] == len(test_split)
    assert final["eval/accuracy"] >= MIN_ACCURACY[config.data.name]
