"""The sparse TopK step (`SAEConfig(sparse_decode=True)`, `jaxinterp.sae.sparse`) equals the
dense one: loss and metrics, gradients, and the state after Adam steps (rtol 1e-5)."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.sae import train as T
from jaxinterp.sae.model import SAE, SAEConfig, loss
from jaxinterp.train import sharding
from tests.helpers.tiny_models import randomize

CONFIGS = {
    "auxk": SAEConfig(architecture="topk", d_in=16, d_sae=64, k=4, aux_k=8),
    "transcoder": SAEConfig(architecture="topk", d_in=16, d_sae=64, k=4, d_out=8,
                            transcoder=True, aux_k=6),
}


def params_for(config, seed=0):
    boxed = SAE(config).init(jax.random.key(seed), jnp.zeros((1, config.d_in)))
    return nn.meta.unbox(randomize(boxed, scale=0.3))["params"]


def data(config, rows=32):
    x = jax.random.normal(jax.random.key(1), (rows, config.d_in))
    y = x if not config.transcoder else jax.random.normal(jax.random.key(2),
                                                           (rows, config.d_output))
    return x, y


def close(a, b, what):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=what)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_sparse_loss_and_gradients_equal_dense(name):
    dense = CONFIGS[name]
    sparse = dataclasses.replace(dense, sparse_decode=True)
    params = params_for(dense)
    x, y = data(dense)
    dead = jnp.arange(dense.d_sae) % 3 == 0  # a third of the latents count as dead
    (ld, md), gd = jax.value_and_grad(loss, has_aux=True)(params, x, y, dense, dead)
    (ls, ms), gs = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=3)(
        params, x, y, sparse, dead)
    close(ls, ld, "loss")
    for k in ("mse", "aux", "l0", "explained_variance", "per_example_mse"):
        close(ms[k], md[k], k)
    np.testing.assert_array_equal(ms["fired"], md["fired"])
    if dense.aux_k:
        assert float(md["aux"]) > 0  # AuxK is exercised
    assert sorted(gs) == sorted(gd)
    for k in gd:
        assert float(jnp.abs(gd[k]).max()) > 0, k
        close(gs[k], gd[k], f"grad {k}")


def test_sparse_train_steps_equal_dense():
    dense = CONFIGS["auxk"]
    sparse = dataclasses.replace(dense, sparse_decode=True)
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    tc = T.TrainConfig(num_steps=10, batch_size=32, learning_rate=1e-2, warmup_steps=0)
    tx, lr_schedule = T.optimizer(tc)
    x, _ = data(dense)
    finals, hists = [], []
    for config in (dense, sparse):
        state, shardings = T.create_state(config, tx, mesh)
        step = T.compile_train_step(mesh, shardings, config=config, tx=tx,
                                    lr_schedule=lr_schedule, dead_after_steps=1)
        hist = []
        for i in range(3):
            state, m = step(state, x * (1 + 0.1 * i), x * (1 + 0.1 * i))
            hist.append(m)
        finals.append(state)
        hists.append(hist)
    (sd, ss), (hd, hs) = finals, hists
    assert float(hd[-1]["aux"]) > 0 and float(hd[-1]["dead_fraction"]) > 0
    for a, b in zip(hd, hs, strict=True):
        for k in a:
            close(b[k], a[k], k)
    for k in sd.params:
        close(ss.params[k], sd.params[k], f"param {k}")
    for a, b in zip(jax.tree.leaves(sd.opt_state), jax.tree.leaves(ss.opt_state), strict=True):
        close(b, a, "adam state")
    np.testing.assert_array_equal(ss.steps_since_fired, sd.steps_since_fired)


def test_sparse_decode_is_for_topk_only():
    with pytest.raises(ValueError, match="sparse_decode=True is for the topk architecture"):
        SAEConfig(architecture="relu", sparse_decode=True)
