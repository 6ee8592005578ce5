"""`make_optimizer`: SGD (with and without momentum, L2 weight decay on matrices only, on the
schedule) against PyTorch's `torch.optim.SGD` update written out in NumPy; bad names and
momenta are clear errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinterp.train.config import base_config
from jaxinterp.train.optimizer import make_optimizer, schedule


def _config(**overrides):
    c = base_config().optimizer
    c.update(name="sgd", learning_rate=0.05, schedule="cosine", warmup_steps=2,
             weight_decay=0.1, grad_clip_norm=0.0, momentum=0.9)
    c.update(overrides)
    return c


def _loss(p):
    return jnp.sum(jnp.sin(p["w"]) ** 2) + jnp.sum((p["b"] - 1.0) ** 2) * 0.5


def _numpy_sgd(params, steps, lrs, momentum, weight_decay):
    """torch.optim.SGD: g += wd * p (matrices only); buf = m * buf + g (buf_0 = g); p -= lr buf."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    buf = None
    for t in range(steps):
        g = {"w": 2 * np.sin(p["w"]) * np.cos(p["w"]), "b": p["b"] - 1.0}
        g["w"] = g["w"] + weight_decay * p["w"]  # ndim >= 2 only: b is not decayed
        buf = g if buf is None or momentum == 0 else {k: momentum * buf[k] + g[k] for k in g}
        p = {k: p[k] - lrs[t] * buf[k] for k in p}
    return p


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_equals_torch_update_in_numpy(momentum):
    cfg = _config(momentum=momentum)
    steps = 6
    params = {"w": jax.random.normal(jax.random.key(0), (3, 4)),
              "b": jax.random.normal(jax.random.key(1), (4,))}
    tx = make_optimizer(cfg, steps)
    state = tx.init(params)
    p = params
    for _ in range(steps):
        updates, state = tx.update(jax.grad(_loss)(p), state, p)
        p = optax.apply_updates(p, updates)
    lrs = [float(schedule(cfg, steps)(t)) for t in range(steps)]
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(0.05)  # warmup, then cosine
    want = _numpy_sgd(params, steps, lrs, momentum, cfg.weight_decay)
    for k in p:
        np.testing.assert_allclose(p[k], want[k], rtol=1e-5, atol=1e-6)


def test_sgd_clips_before_the_update():
    cfg = _config(momentum=0.0, weight_decay=0.0, grad_clip_norm=0.5, schedule="constant",
                  warmup_steps=0)
    params = {"w": jnp.full((2, 2), 3.0), "b": jnp.zeros(2)}
    grads = {"w": jnp.full((2, 2), 10.0), "b": jnp.zeros(2)}
    updates, _ = make_optimizer(cfg, 10).update(grads, make_optimizer(cfg, 10).init(params),
                                                params)
    # the gradient's norm 20 clipped to 0.5: each entry 10 * 0.5 / 20 = 0.25, times -lr
    np.testing.assert_allclose(updates["w"], -0.05 * 0.25, rtol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    (dict(name="lion"), "optimizer.name='lion'; choose from ('adamw', 'sgd')"),
    (dict(momentum=1.0), "optimizer.momentum=1.0 must be in [0, 1)"),
    (dict(momentum=-0.1), "optimizer.momentum=-0.1 must be in [0, 1)"),
])
def test_bad_optimizer_is_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_optimizer(_config(**overrides), 10)


def test_base_config_momentum_default_leaves_adamw_unchanged():
    cfg = base_config().optimizer
    assert cfg.name == "adamw" and cfg.momentum == 0.0
    params = {"w": jnp.ones((2, 3))}
    grads = {"w": jnp.full((2, 3), 0.5)}
    ours = make_optimizer(cfg, 100)
    ref = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm),
                      optax.adamw(schedule(cfg, 100), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                                  weight_decay=cfg.weight_decay))
    got, _ = ours.update(grads, ours.init(params), params)
    want, _ = ref.update(grads, ref.init(params), params)
    np.testing.assert_array_equal(got["w"], want["w"])
