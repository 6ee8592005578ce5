"""`train_vmapped`: each vmapped run equals the same run trained alone with the trainer's
optimizer (a plain Python loop of optax steps), evaluations land at the stated steps, and bad
run arguments are a clear error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.train.config import base_config
from jaxinterp.train.optimizer import make_optimizer
from jaxinterp.train.vmapped import train_vmapped

W_TRUE = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)


def init_fn(key):
    return {"w": 0.1 * jax.random.normal(key, (4, 2))}


def loss_fn(p, key, args, step):
    x = jax.random.normal(key, (8, 4))
    y = x @ (args["scale"] * W_TRUE)
    loss = jnp.mean((x @ p["w"] - y) ** 2)
    return loss, {"step": step.astype(jnp.float32)}


def test_each_run_equals_a_separate_loop_of_the_trainer_optimizer():
    opt = base_config().optimizer
    opt.learning_rate, opt.warmup_steps = 0.05, 2
    keys = jnp.stack([jax.random.PRNGKey(s) for s in (0, 1, 2)])
    args = {"scale": jnp.asarray([1.0, -1.0, 2.0])}
    params, hist = train_vmapped(loss_fn, init_fn, keys, args, opt, 10,
                                 eval_fn=lambda p, a: {"w0": p["w"][0, 0]}, eval_every=4)
    assert hist["train/loss"].shape == (3, 10)
    np.testing.assert_array_equal(hist["train/step"][0], np.arange(10))
    np.testing.assert_array_equal(hist["eval_step"], [0, 4, 8, 10])
    assert hist["eval/w0"].shape == (3, 4)
    tx = make_optimizer(opt, 10)

    @jax.jit
    def ref_step(p, s, k, a, t):
        (loss, _), g = jax.value_and_grad(loss_fn, has_aux=True)(p, k, a, t)
        u, s = tx.update(g, s, p)
        return jax.tree.map(lambda x, d: x + d, p, u), s, loss

    for r in range(3):
        init_key, step_key = jax.random.split(keys[r])
        p = init_fn(init_key)
        s = tx.init(p)
        a = {"scale": args["scale"][r]}
        losses, done = [], 0
        for n in (4, 4, 2):  # the same key splitting as the chunks between evaluations
            step_key, sub = jax.random.split(step_key)
            for t, k in enumerate(jax.random.split(sub, n)):
                p, s, loss = ref_step(p, s, k, a, jnp.int32(done + t))
                losses.append(loss)
            done += n
        np.testing.assert_allclose(params["w"][r], p["w"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(hist["train/loss"][r], losses, rtol=1e-5)
        np.testing.assert_allclose(hist["eval/w0"][r, -1], p["w"][0, 0], rtol=1e-5)


def test_run_args_need_a_run_axis():
    keys = jnp.stack([jax.random.PRNGKey(s) for s in (0, 1)])
    with pytest.raises(ValueError, match="leading run axis of 2"):
        train_vmapped(loss_fn, init_fn, keys, {"scale": jnp.ones(3)}, base_config().optimizer, 2)
    with pytest.raises(ValueError, match="num_steps=0"):
        train_vmapped(loss_fn, init_fn, keys, {"scale": jnp.ones(2)}, base_config().optimizer, 0)
