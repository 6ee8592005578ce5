"""Trained interventions through the one trainer (`config.tuning`): only the method's arrays
train, the frozen base stays bit-identical, 8 devices give the 1-device result, and a run
killed with SIGKILL resumes bit for bit.

The method is a steering vector (`SteeringVector`) on a 2-layer induction model trained 20
steps in-process (tests/helpers/tiny_train_config.py); the tuned runs are the training binary
with tests/tuning/tuned_config.py, on a (data 2, fsdp 2, tensor 2) mesh of 8 CPU devices, so
the frozen weights are sharded by their logical axes.
"""

import os

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

import jaxinterp as ji
from jaxinterp import tuning
from jaxinterp.train import load
from jaxinterp.train.config import validate
from jaxinterp.train.loop import train
from tests.helpers.tiny_train_config import tiny_config
from tests.train.family_configs import (
    checkpoint_steps,
    flags,
    run,
    saved_shardings,
    saved_state,
    train_losses,
)
from tests.train.test_kill_resume import _kill_when
from tests.tuning.tuned_config import SITE

CONFIG = os.path.join("tests", "tuning", "tuned_config.py")
MESH = dict(mesh__data=2, mesh__fsdp=2, mesh__tensor=2)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(data_dir, base workdir, base variables): the frozen model, trained 20 steps."""
    root = tmp_path_factory.mktemp("tuned")
    data_dir = str(root / "data")
    result = train(tiny_config(data__data_dir=data_dir), str(root / "base"))
    return data_dir, str(root / "base"), jax.device_get(result.variables)


@pytest.fixture(scope="module")
def straight(base, xla_cache, tmp_path_factory):
    """The uninterrupted tuned run on 8 devices (20 steps, checkpoints every 5)."""
    data_dir, base_dir, _ = base
    workdir = str(tmp_path_factory.mktemp("straight"))
    run(workdir, "tuned", *_flags(data_dir, base_dir), config=CONFIG, env=xla_cache)
    return workdir


def _flags(data_dir, base_dir, **mesh):
    return flags(data__data_dir=data_dir, tuning__base=base_dir, **(mesh or MESH))


def test_only_the_method_trains_and_the_base_is_bit_identical(base, straight):
    _, _, base_variables = base
    model, variables = load(straight)
    assert isinstance(model, tuning.Tuned) and isinstance(model.method, tuning.SteeringVector)
    assert jax.tree.map(np.shape, variables["params"]) == {"method": {"vector": (32,)}}
    assert np.abs(np.asarray(variables["params"]["method"]["vector"])).max() > 1e-3
    frozen = variables[tuning.FROZEN]["variables"]
    assert jax.tree.structure(frozen) == jax.tree.structure(base_variables)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(frozen)[0],
                            jax.tree.leaves(base_variables), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b),
                                      err_msg=jax.tree_util.keystr(path))
    # The trained model is the frozen base with the learned vector added at the site.
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (4, 12), 0, 16))
    vector = variables["params"]["method"]["vector"]
    want, _ = ji.run(load(base[1])[0], base_variables, tokens,
                     interventions=[ji.Add(SITE, vector)])
    np.testing.assert_array_equal(np.asarray(model.apply(variables, tokens)), np.asarray(want))
    # The frozen weights are laid out on the mesh by their logical axes, like a trained model's.
    layouts = saved_shardings(straight)
    specs = [spec for key, (_, spec) in layouts.items()
             if key.startswith("model_state/frozen/variables/params/")]
    assert specs and any(any(axis is not None for axis in s) for s in specs), specs


def test_eight_devices_give_the_one_device_result(base, straight, xla_cache, tmp_path):
    data_dir, base_dir, _ = base
    one = str(tmp_path / "one")
    run(one, "tuned", *_flags(data_dir, base_dir, mesh__data=1), config=CONFIG, devices=1,
        env=xla_cache)
    np.testing.assert_allclose(train_losses(one), train_losses(straight), rtol=1e-5)
    want, got = saved_state(straight), saved_state(one)
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-7, err_msg=key)


@pytest.mark.slow
def test_sigkill_then_rerun_equals_the_uninterrupted_run_bit_for_bit(
        base, straight, xla_cache, tmp_path):
    data_dir, base_dir, _ = base
    workdir = str(tmp_path / "killed")
    args = _flags(data_dir, base_dir)
    proc = run(workdir, "tuned", *args, popen=True, module="tests.train.slow_commit",
               config=CONFIG, env={**xla_cache, "SLOW_COMMIT_FROM_STEP": "15"})
    _kill_when(proc, lambda: 10 in checkpoint_steps(workdir)[0])
    assert checkpoint_steps(workdir)[0] == [5, 10]
    out = run(workdir, "tuned", *args, config=CONFIG, env=xla_cache).stdout
    assert "resumed from step 10 in" in out, out[-2000:]
    want, got = saved_state(straight, 20), saved_state(workdir, 20)
    assert sorted(got) == sorted(want)
    assert any(k.startswith("model_state/frozen/") for k in want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    np.testing.assert_array_equal(train_losses(workdir), train_losses(straight))


def test_bad_tuning_configs_are_clear_errors(base):
    _, base_dir, _ = base
    config = tiny_config()
    config.tuning.base = base_dir
    config.tuning.method = ConfigDict({"name": "lofty"})
    with pytest.raises(ValueError, match="unknown tuning method 'lofty'; methods:"):
        validate(config)
    config.tuning.method = ConfigDict({"name": "steering_vector", "sight": SITE})
    with pytest.raises(ValueError, match=r"no field\(s\) \['sight'\]; its fields"):
        validate(config)
    config.tuning.method = ConfigDict({"name": ""})
    with pytest.raises(ValueError, match=r"method\.name is empty"):
        validate(config)
    config.tuning.method = ConfigDict({"name": "steering_vector", "site": SITE})
    config.tuning.hf = "/some/folder"
    with pytest.raises(ValueError, match=r"set base .* or hf .*, not both"):
        validate(config)
    config.tuning.hf = ""
    config.tuning.base = os.path.join(base_dir, "nowhere")
    with pytest.raises(FileNotFoundError, match="no checkpoints under"):
        validate(config)


def test_with_frozen_checks_the_base_variables(base):
    _, _, base_variables = base
    model = tuning.Tuned(load(base[1])[0], tuning.SteeringVector(SITE))
    tokens = np.zeros((1, 12), np.int32)
    variables = model.init(jax.random.key(0), tokens)
    full = tuning.with_frozen(variables, base_variables)
    np.testing.assert_array_equal(
        np.asarray(model.apply(full, tokens)),
        np.asarray(load(base[1])[0].apply(base_variables, tokens)))  # the vector starts at 0
    bad = jax.tree.map(lambda x: x, base_variables)
    bad["params"]["embed"]["W_E"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"base variable .*W_E.* has shape \(3, 3\)"):
        tuning.with_frozen(variables, bad)
