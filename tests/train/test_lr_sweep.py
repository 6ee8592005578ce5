"""`train_lr_sweep` equals separate runs of the trainer's optimizer at each rate, and
`lr_sensitivity` is Wortsman et al.'s mean of min(L, L0) minus the best."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinterp.train.config import base_config
from jaxinterp.train.lr_sweep import lr_sensitivity, train_lr_sweep
from jaxinterp.train.optimizer import make_optimizer


def _problem():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(12, 8, 5)), jnp.float32)  # [steps, batch, in]
    y = jnp.asarray(rng.normal(size=(12, 8, 3)), jnp.float32)
    params = {"w": jnp.asarray(rng.normal(size=(5, 3)) * 0.1, jnp.float32),
              "b": jnp.zeros((3,), jnp.float32)}

    def loss_fn(p, batch):
        xb, yb = batch
        err = jnp.einsum("bi,io->bo", xb, p["w"]) + p["b"] - yb  # contract in
        return (err ** 2).mean(), {"w_norm": jnp.linalg.norm(p["w"])}

    return loss_fn, params, (x, y)


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_each_rate_equals_a_separate_run_of_the_trainer_optimizer(schedule):
    loss_fn, params, batches = _problem()
    opt = base_config().optimizer
    opt.schedule, opt.warmup_steps, opt.weight_decay = schedule, 3, 0.1
    lrs = [1e-3, 3e-2, 0.5]
    final, history = train_lr_sweep(loss_fn, params, batches, lrs, opt)
    assert history["loss"].shape == history["w_norm"].shape == (3, 12)
    for r, lr in enumerate(lrs):
        opt.learning_rate = lr
        tx = make_optimizer(opt, 12)
        p, state, losses = params, tx.init(params), []
        for t in range(12):
            batch = jax.tree.map(lambda a, t=t: a[t], batches)
            loss, grads = jax.value_and_grad(lambda q, b=batch: loss_fn(q, b)[0])(p)
            updates, state = tx.update(grads, state, p)
            p = optax.apply_updates(p, updates)
            losses.append(loss)
        np.testing.assert_allclose(history["loss"][r], np.array(losses), rtol=1e-5)
        for k in p:
            np.testing.assert_allclose(final[k][r], p[k], rtol=1e-5, atol=1e-7)


def test_lr_sensitivity_by_hand():
    # min(L, L0) = [3, 2, 4, 4(diverged), 4]: mean 3.4, best 2.
    assert lr_sensitivity([3.0, 2.0, 4.5, np.nan, np.inf], 4.0) == pytest.approx(1.4)
    assert lr_sensitivity([2.0, 2.0], 4.0) == 0.0
    with pytest.raises(ValueError, match="1-d"):
        lr_sensitivity(np.zeros((2, 2)), 1.0)
    with pytest.raises(ValueError, match="init_loss"):
        lr_sensitivity([1.0], np.nan)


def test_bad_inputs_are_value_errors():
    loss_fn, params, (x, y) = _problem()
    opt = base_config().optimizer
    with pytest.raises(ValueError, match="1-d"):
        train_lr_sweep(loss_fn, params, (x, y), [[1e-3]], opt)
    with pytest.raises(ValueError, match="leading step axis"):
        train_lr_sweep(loss_fn, params, (x, y[:5]), [1e-3], opt)
