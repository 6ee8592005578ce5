"""Train step: sharding-invariance, gradient accumulation, z-loss, interventions in training."""

import functools

import chex
import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

import jaxinterp as ji
from jaxinterp.train import sharding
from jaxinterp.train import state as state_lib
from jaxinterp.train import step as step_lib
from jaxinterp.train.optimizer import make_optimizer, schedule

pytestmark = pytest.mark.mesh  # builds meshes of the 8 CPU devices in this process

OPT = ConfigDict(dict(name="adamw", learning_rate=3e-3, schedule="cosine", warmup_steps=5,
                      min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                      grad_clip_norm=1.0))


def batches(n, batch=16, seq=12, vocab=64, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):  # counting sequences mod vocab from a random start: learnable
        t = (rng.integers(0, vocab, (batch, 1)) + np.arange(seq + 1)) % vocab
        t = t.astype(np.int32)
        yield {"tokens": t}


def train_losses(mesh_cfg, n_steps=20, devices=None, accum_steps=1, interventions=(),
                 z_loss=0.0, **model_kw):
    model = ji.models.build("gpt2_small", n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64,
                            d_vocab=64, n_ctx=16, **model_kw)
    mesh = sharding.make_mesh(mesh_cfg, devices)
    opt = make_optimizer(OPT, n_steps)
    state, shardings = state_lib.create(model, opt, np.zeros((2, 12), np.int32), seed=0,
                                        mesh=mesh, rules=sharding.DEFAULT_RULES)
    train_fn = functools.partial(step_lib.train_step, model=model, optimizer=opt,
                                 lr_schedule=schedule(OPT, n_steps), accum_steps=accum_steps,
                                 interventions=interventions, z_loss=z_loss)
    eval_fn = functools.partial(step_lib.eval_step, model=model)
    train, _ = step_lib.compile_steps(mesh, shardings, train_fn, eval_fn)
    losses = []
    for b in batches(n_steps):
        b = jax.device_put(b, sharding.batch_sharding(mesh))
        state, metrics = train(state, b)
        losses.append(float(metrics["loss"]))
    return np.array(losses), state


def test_8_device_mesh_matches_1_device_over_20_steps():
    one, _ = train_losses({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    eight, state = train_losses({"data": 2, "fsdp": 2, "tensor": 2})
    # Parameters really are sharded: W_Q's heads over tensor, its d_model over fsdp.
    spec = state.params["blocks_0"]["attn"]["W_Q"].sharding.spec
    assert spec[0] == "tensor" and spec[1] == "fsdp", spec
    assert one[-1] < one[0] - 0.5, one  # it learns the successor rule
    np.testing.assert_allclose(eight, one, rtol=1e-5)


def test_gradient_accumulation_matches_full_batch():
    full, s1 = train_losses({"data": -1, "fsdp": 1, "tensor": 1}, n_steps=5)
    accum, s2 = train_losses({"data": -1, "fsdp": 1, "tensor": 1}, n_steps=5, accum_steps=2)
    np.testing.assert_allclose(accum, full, rtol=1e-5)
    chex.assert_trees_all_close(s1.params, s2.params, rtol=1e-4, atol=1e-5)


def test_training_time_intervention_changes_training_and_scanned_remat_bf16_run():
    base, _ = train_losses({"data": -1, "fsdp": 1, "tensor": 1}, n_steps=3)
    iv = ji.interventions.from_spec({"kind": "Ablate", "site": "blocks.0.attn.hook_z",
                                     "how": "mean", "heads": [0, 1, 2, 3]})
    clamped, _ = train_losses({"data": -1, "fsdp": 1, "tensor": 1}, n_steps=3,
                              interventions=[iv])
    assert not np.allclose(base, clamped)
    other, _ = train_losses({"data": -1, "fsdp": 1, "tensor": 1}, n_steps=3, scan_layers=True,
                            remat=True, dtype="bfloat16", z_loss=1e-4)
    assert np.isfinite(other).all()


def test_mesh_errors():
    with pytest.raises(ValueError, match="needs 12 devices, but there are 8"):
        sharding.make_mesh({"data": 3, "fsdp": 2, "tensor": 2})
    with pytest.raises(ValueError, match="does not divide the 8 devices"):
        sharding.make_mesh({"data": -1, "fsdp": 3, "tensor": 1})
    with pytest.raises(ValueError, match="at most one -1"):
        sharding.make_mesh({"data": -1, "fsdp": -1, "tensor": 1})


def test_cross_entropy_against_numpy():
    from jaxinterp.train.loss import cross_entropy
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    targets = rng.integers(0, 5, (2, 3))
    mask = np.array([[1, 1, 0], [1, 0, 1]])
    lse = np.log(np.exp(logits).sum(-1))
    ce = lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    want = (ce * mask).sum() / mask.sum() + 0.1 * (lse**2 * mask).sum() / mask.sum()
    got, metrics = cross_entropy(logits, targets, mask, z_loss=0.1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], (ce * mask).sum() / mask.sum(), rtol=1e-5)
