"""Tasks, running-mean interventions, scheduled KAN grid updates and the trainer's errors."""

import functools
import os
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.layers.kan import update_grid
from jaxinterp.train import sharding, tasks
from jaxinterp.train import state as state_lib
from jaxinterp.train import step as step_lib
from jaxinterp.train.config import base_config
from jaxinterp.train.loop import train
from jaxinterp.train.optimizer import make_optimizer, schedule

TINY_VIT = dict(preset="vit_ti16", image_size=8, patch_size=2, in_channels=1, num_classes=10,
                n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def digits_config(data_dir, **model):
    c = base_config()
    c.model = model or dict(TINY_VIT)
    c.task = {"name": "classification"}
    c.data.name = "digits"
    c.data.data_dir = data_dir
    c.num_train_steps, c.batch_size = 6, 16
    c.eval_every_steps = c.checkpoint_every_steps = c.log_every_steps = 6
    c.eval_batches = 1
    c.optimizer.warmup_steps = 1
    return c


# -- tasks against NumPy ---------------------------------------------------------------------


def test_next_token_answer_and_mask_features():
    tokens = np.array([[3, 9, 4, 10], [1, 9, 2, 10]], np.int32)  # a op b =
    answer = np.array([7, 3], np.int32)
    split = tasks.NextToken(answer_feature="target").split(
        {"tokens": tokens, "target": answer}, jax.random.key(0))
    np.testing.assert_array_equal(split.inputs[0], tokens)
    np.testing.assert_array_equal(split.targets[:, -1], answer)
    np.testing.assert_array_equal(split.mask, [[0, 0, 0, 1], [0, 0, 0, 1]])
    mask = np.array([[0, 0, 1, 1], [0, 1, 0, 1]], np.int32)
    split = tasks.NextToken(mask_feature="m").split({"tokens": tokens, "m": mask},
                                                    jax.random.key(0))
    np.testing.assert_array_equal(split.mask, mask[:, 1:])
    np.testing.assert_array_equal(split.targets, tokens[:, 1:])


def test_classification_and_regression_losses_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 5)
    task = tasks.Classification()
    split = task.split({"image": np.zeros((5, 2, 2, 1), np.uint8), "label": labels},
                       jax.random.key(0))
    loss, metrics = task.loss(jnp.asarray(logits), split)
    lse = np.log(np.exp(logits).sum(-1))
    np.testing.assert_allclose(loss, np.mean(lse - logits[np.arange(5), labels]), rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(logits.argmax(-1) == labels))

    task = tasks.Regression(input_feature="x", target_feature="y", mask_feature="m")
    y = rng.normal(size=(3, 4)).astype(np.float32)
    pred = rng.normal(size=(3, 4, 1)).astype(np.float32)
    m = (rng.random((3, 4)) < 0.5).astype(np.float32)
    m[0, 0] = 1
    split = task.split({"x": y, "y": y, "m": m}, jax.random.key(0))
    loss, _ = task.loss(jnp.asarray(pred), split)
    np.testing.assert_allclose(loss, ((pred[..., 0] - y) ** 2 * m).sum() / m.sum(), rtol=1e-6)


def test_masked_lm_chooses_real_tokens_and_corrupts_80_10_10():
    task = tasks.MaskedLM(mask_token_id=99, mask_prob=0.15, pad_id=0, vocab_size=90)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 90, (400, 64)).astype(np.int32)
    tokens[:, 48:] = 0  # padding
    split = task.split({"tokens": tokens}, jax.random.key(1))
    chosen = np.asarray(split.mask) > 0
    inputs = np.asarray(split.inputs[0])
    assert not chosen[:, 48:].any()  # padding is never predicted
    assert chosen.any(axis=1).all()  # at least one prediction per row
    np.testing.assert_allclose(chosen[:, :48].mean(), 0.15, atol=0.01)
    masked = (inputs == 99)[chosen].mean()
    kept = (inputs == tokens)[chosen].mean()
    np.testing.assert_allclose(masked, 0.8, atol=0.03)
    np.testing.assert_allclose(kept, 0.1 + 0.1 / 90, atol=0.03)
    np.testing.assert_array_equal(inputs[~chosen], tokens[~chosen])  # the rest untouched
    np.testing.assert_array_equal(split.kwargs["attention_mask"], tokens != 0)
    np.testing.assert_array_equal(split.targets, tokens)


def test_make_task_errors():
    with pytest.raises(ValueError, match=r"unknown task 'clasification'. Did you mean "
                                         "classification"):
        tasks.make_task({"name": "clasification"})
    with pytest.raises(ValueError, match=r"no field\(s\) \['label'\]"):
        tasks.make_task({"name": "classification", "label": "y"})


# -- RunningMean: the train state's EMA equals NumPy's ----------------------------------------


def test_running_mean_clamp_equals_numpy_ema_step_by_step():
    model = ji.models.build("gpt2_small", n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
                            d_vocab=32, n_ctx=9)
    site, decay = "blocks.0.hook_mlp_out", 0.8
    iv = ji.interventions.from_spec({"kind": "RunningMean", "site": site, "decay": decay})
    opt_cfg = base_config().optimizer
    opt = make_optimizer(opt_cfg, 10)
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    example = np.zeros((1, 8), np.int32)
    iv_state = step_lib.init_iv_state([iv], ji.sites(model, example))
    state, _ = state_lib.create(model, opt, example, 0, mesh, sharding.DEFAULT_RULES,
                                iv_state=iv_state)
    step = jax.jit(functools.partial(step_lib.train_step, model=model, optimizer=opt,
                                     lr_schedule=schedule(opt_cfg, 10), interventions=[iv]))
    clean = jax.jit(lambda p, t: ji.run(model, {"params": p}, t, capture=[site])[1][site])
    rng = np.random.default_rng(0)
    ema = None
    for _ in range(5):
        tokens = rng.integers(0, 32, (8, 9)).astype(np.int32)
        # The site's own value (nothing upstream is changed) under the parameters of this step.
        batch_mean = np.asarray(clean(state.params, tokens[:, :-1]), np.float64).mean(
            0, keepdims=True)
        ema = batch_mean if ema is None else decay * ema + (1 - decay) * batch_mean
        state, _ = step(state, {"tokens": tokens})
        np.testing.assert_allclose(state.iv_state["0"]["mean"], ema, rtol=1e-5, atol=1e-6)
    assert int(state.iv_state["0"]["count"]) == 5
    # In eval the site is the stored mean, whatever the batch.
    bound = step_lib.bind([iv], state.iv_state, train=False)
    _, cache = ji.run(model, {"params": state.params}, tokens[:, :-1], interventions=bound,
                      capture=[site])
    np.testing.assert_allclose(cache[site], np.broadcast_to(ema, cache[site].shape),
                               rtol=1e-5, atol=1e-6)


def test_running_mean_needs_exactly_one_site():
    model = ji.models.build("gpt2_small", n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
                            d_vocab=32, n_ctx=9)
    iv = ji.RunningMean("blocks.*.hook_mlp_out")
    with pytest.raises(ValueError, match="matches 2 sites"):
        step_lib.init_iv_state([iv], ji.sites(model, np.zeros((1, 8), np.int32)))


# -- scheduled KAN grid updates ----------------------------------------------------------------


def test_scheduled_grid_update_equals_update_grid_by_hand(data_dir, tmp_path):
    config = digits_config(data_dir, preset="kan_64_64_10", widths=(64, 8, 10))
    config.num_train_steps = 5
    config.kan_grid.update_every, config.kan_grid.update_until = 2, 4  # at steps 0 and 2
    config.optimizer.learning_rate = 1e-2
    result = train(config, str(tmp_path / "run"))

    # By hand: the same initial state, batches and steps, with update_grid before steps 0, 2.
    from jaxinterp import data as data_lib
    from jaxinterp.train.config import build_model

    model = build_model(config)
    source = data_lib.load_source("digits", "train", data_dir)
    it = data_lib.make_iterator(source, batch_size=16, seed=config.seed)
    opt = make_optimizer(config.optimizer, 5)
    mesh = sharding.make_mesh(config.mesh)
    state, _ = state_lib.create(model, opt, np.zeros((1, 8, 8, 1), np.float32), config.seed,
                                mesh, sharding.DEFAULT_RULES)
    task = tasks.Classification()
    step = jax.jit(functools.partial(step_lib.train_step, model=model, optimizer=opt,
                                     lr_schedule=schedule(config.optimizer, 5), task=task))
    by_hand = jax.jit(update_grid, static_argnums=0)
    for i in range(5):
        batch = {k: v for k, v in next(it).items() if k in task.features}
        batch = jax.device_put(batch, sharding.batch_sharding(mesh))  # as the trainer's
        if i in (0, 2):
            images = batch["image"].astype(jnp.float32) / 255.0
            new = by_hand(model, state.variables, images)
            state = state.replace(params=new.pop("params"), model_state=new)
        state, _ = step(state, batch)
    got = jax.tree.map(np.asarray, result.state.variables)
    want = jax.tree.map(np.asarray, state.variables)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)
    # The grids really moved (the update ran): they differ from the initial uniform grid.
    init = model.init(jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))["kan_grid"]
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), got["kan_grid"], init)
    assert all(jax.tree.leaves(moved))


# -- clear errors before anything compiles -----------------------------------------------------


def _raises(config, workdir, match):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        train(config, workdir)
    assert time.perf_counter() - t0 < 30  # no training happened


def test_errors_before_compiling(data_dir, tmp_path):
    w = str(tmp_path)
    c = digits_config(data_dir)
    c.task = {"name": "next_token"}
    _raises(c, w, "dataset 'digits' has no feature 'tokens'")
    c.task = {"name": "next_token", "feature": "image"}
    _raises(c, w, "needs an int sequence")
    c = digits_config(data_dir)
    c.task = {"name": "classification", "label_feature": "digit"}
    _raises(c, w, "has no feature 'digit'")
    c = digits_config(data_dir, **{**TINY_VIT, "num_classes": 5})
    _raises(c, w, "labels up to 9 .10 classes., but the model outputs only 5 logits")
    c = digits_config(data_dir, **{**TINY_VIT, "patch_size": 3})
    _raises(c, w, "patch_size=3 must be positive and divide the image size 8x8")
    c = digits_config(data_dir)
    c.task = {"name": "regresion"}
    _raises(c, w, "unknown task 'regresion'")
    c = digits_config(data_dir, preset="strip_mlp_t_light", image_size=8, patch_size=1,
                      in_channels=1, num_classes=10, d_model=8, n_layers=(1, 1, 1, 1))
    c.mutable = []
    _raises(c, w, r"collection\(s\) \['batch_stats'\] that training would never update")
    c = digits_config(data_dir)
    c.kan_grid.update_every = 10
    _raises(c, w, "has no B-spline KAN grid")
    assert not os.path.exists(os.path.join(w, "checkpoints", "1"))


def test_masked_lm_trains_a_tiny_bert(tmp_path):
    c = base_config()
    c.model = dict(preset="bert_base", n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=64,
                   d_vocab=18, n_ctx=16)
    c.task = {"name": "masked_lm", "mask_token_id": 17, "vocab_size": 16}
    c.data.builder_kwargs = {"vocab_size": 16, "half_len": 6, "num_train": 256, "num_test": 64}
    c.data.data_dir = str(tmp_path / "data")
    c.num_train_steps, c.batch_size = 60, 32
    c.eval_every_steps = c.checkpoint_every_steps = 60
    c.optimizer.learning_rate, c.optimizer.warmup_steps = 3e-3, 5
    result = train(c, str(tmp_path / "run"))
    from jaxinterp.train.metrics import read_jsonl

    evals = [r["eval/loss"] for r in read_jsonl(result.workdir) if "eval/loss" in r]
    assert evals[-1] < evals[0] - 0.3, evals  # masked tokens become predictable (repeats)


def test_accuracy_counts_ties_as_wrong():
    # A constant output (e.g. a zero-initialised head) must not score 1.
    from jaxinterp.train.loss import cross_entropy

    _, metrics = cross_entropy(jnp.zeros((2, 3, 5)), jnp.zeros((2, 3), jnp.int32))
    assert float(metrics["accuracy"]) == 0.0
    logits = jnp.array([[[0.0, 2.0, 1.0], [3.0, 0.0, 3.0], [0.0, 0.0, 5.0]]])
    _, metrics = cross_entropy(logits, jnp.array([[1, 0, 2]]))
    np.testing.assert_allclose(metrics["accuracy"], 2 / 3)  # the tie at position 1 is wrong
