"""One device vs eight: the same 20 losses (float32, rtol 1e-5) for a ViT, an MLP-Mixer, a
Strip-MLP and a B-spline KAN trained on the digits through `jaxinterp.train.train`.

The 8-device run is in this process (tests/conftest.py forces 8 CPU devices), on the mesh
data=2 x fsdp=2 x tensor=2; the 1-device run is the training binary in a subprocess with one
CPU device (`train` builds its mesh over every device there is). The family configs
(tests/train/family_configs.py) train with augmentation; Strip-MLP with BatchNorm in train mode,
drop path and a RunningMean intervention, the KAN with grid updates at steps 0, 5, 10 and 15.

Measured max relative loss differences over the 20 steps (2 CPU cores, jax 0.12):
vit 1.1e-7, mixer 1.1e-7, kan 1.6e-6, strip_mlp on data=4 x fsdp=2 1e-7.

Strip-MLP on data=2 x fsdp=2 x tensor=2 does NOT match (losses differ by 1e-4 at step 1 and
1e-3 later) because XLA's SPMD partitioning (GSPMD and Shardy alike) computes two of its
patterns wrongly on that mesh; both are reproduced below in a few lines of plain JAX
(`test_xla_*`, strict xfails that will pass, and so fail, once XLA is fixed):
  1. the kernel gradient of a grouped (depthwise) convolution with the batch split over
     data x fsdp comes out multiplied by the size of the `tensor` axis (2 here), which holds
     replicas of the batch: every depthwise-conv kernel of Strip-MLP gets twice its gradient;
  2. LocalMixing's reweighting, `x * ((x.mean((1, 2)) @ w1 @ w2).reshape(b, d, 3))[..., 0]`
     with x's channels on `tensor`, w1 (fsdp, tensor), w2 (tensor, fsdp), is wrong in the
     forward pass (max error 4 on values of size 17).
So Strip-MLP is checked on data=4 x fsdp=2 (its parameters sharded over fsdp; neither pattern
occurs with tensor=1), and its 2 x 2 x 2 run is a strict xfail.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxinterp.train import train
from tests.train.family_configs import flags, get_config, run, saved_state, train_losses

MESH_222 = dict(data=2, fsdp=2, tensor=2)
MESH_421 = dict(data=4, fsdp=2, tensor=1)
RTOL = 1e-5


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def one_device(data_dir, tmp_path_factory):
    """`get(family)`: the workdir of the family's 1-device run (run once, on first use)."""
    done = {}

    def get(family: str) -> str:
        if family not in done:
            workdir = str(tmp_path_factory.mktemp(f"one_{family}"))
            run(workdir, family, *flags(data__data_dir=data_dir, mesh__data=1), devices=1)
            done[family] = workdir
        return done[family]

    return get


def eight_devices(family: str, mesh: dict, data_dir: str, workdir: str):
    assert jax.device_count() == 8
    config = get_config(family)
    config.data.data_dir = data_dir
    config.mesh.update(mesh)
    return train(config, workdir)


def compare_losses(family: str, one: str, eight: str) -> float:
    a, b = train_losses(one), train_losses(eight)
    assert len(a) == len(b) == 20
    rel = float(np.max(np.abs(b - a) / np.abs(a)))
    print(f"{family}: max relative loss difference, 1 vs 8 devices: {rel:.2e}")
    np.testing.assert_allclose(b, a, rtol=RTOL)
    return rel


def specs(tree) -> set:
    return {tuple(x.sharding.spec) for x in jax.tree.leaves(tree)}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["vit", "mixer"])
def test_vision_transformer_and_mixer(family, one_device, data_dir, tmp_path):
    result = eight_devices(family, MESH_222, data_dir, str(tmp_path))
    compare_losses(family, one_device(family), result.workdir)
    # The parameters really are split over tensor and fsdp (e.g. ViT W_Q [heads, d_model, d]:
    # ('tensor', 'fsdp', None); Mixer Dense kernels ('fsdp', 'tensor') / ('tensor', 'fsdp')).
    assert ("fsdp", "tensor") in specs(result.state.params)
    assert ("tensor", "fsdp") in {s[:2] for s in specs(result.state.params)}
    assert dict(result.state.step.sharding.mesh.shape) == MESH_222


def _assert_batch_stats_trained(stats, init):
    """Every BatchNorm's running mean and variance moved away from their init (0 and 1)."""
    flat = jax.tree_util.tree_flatten_with_path(stats)[0]
    assert len(flat) == 2 * 13  # 4 blocks x 3 BatchNorms + the final one; mean and var each
    for (path, x), y in zip(flat, jax.tree.leaves(init), strict=True):
        moved = float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        assert moved > 1e-3, (jax.tree_util.keystr(path), moved)


@pytest.mark.slow
def test_strip_mlp_batchnorm_drop_path_running_mean(one_device, data_dir, tmp_path):
    result = eight_devices("strip_mlp", MESH_421, data_dir, str(tmp_path))
    one = one_device("strip_mlp")
    compare_losses("strip_mlp", one, result.workdir)
    assert ("fsdp",) in specs(result.state.params)  # e.g. the BatchNorm scales
    stats = result.state.model_state["batch_stats"]
    # Flax BatchNorm starts from mean 0 and var 1.
    init = jax.tree_util.tree_map_with_path(
        lambda p, x: np.full(x.shape, 1.0 if p[-1].key == "var" else 0.0, np.float32), stats)
    _assert_batch_stats_trained(stats, init)
    # ... and equal the 1-device run's, except the running means of the BatchNorms right
    # after a bias that BatchNorm cancels (`proj` -> `proj_norm`; in stage 4, whose maps are
    # 1 x 1, `relate_pos_h` and `proj_h`'s bias -> `strip_mixing/norm`). Such a bias has zero
    # gradient up to rounding, and Adam scales that rounding noise up to steps of the learning
    # rate: it drifts differently on 1 and 8 devices (by up to 0.03 after 20 steps), and so do
    # those means, with no effect on the loss. Measured elementwise: var 3e-6, other means
    # 5e-5, RunningMean 3e-4 relative (atol: 1e-4 of the array's largest value).
    saved = saved_state(one)

    def close(x, key):
        want = saved[key]
        np.testing.assert_allclose(np.asarray(x), want, rtol=1e-4,
                                   atol=1e-4 * float(np.abs(want).max()), err_msg=key)

    drifting = ("proj_norm/mean", "blocks4_0/strip_mixing/norm/mean")
    compared = 0
    for path, x in jax.tree_util.tree_flatten_with_path(stats)[0]:
        key = "model_state/batch_stats/" + "/".join(k.key for k in path)
        if not key.endswith(drifting):
            close(x, key)
            compared += 1
    assert compared == 2 * 13 - 5
    # The RunningMean statistics were updated every step.
    iv = result.state.iv_state["0"]
    assert int(iv["count"]) == int(saved["iv_state/0/count"]) == 20
    assert float(jnp.abs(iv["mean"]).max()) > 1e-3
    close(iv["mean"], "iv_state/0/mean")


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="XLA SPMD miscompiles Strip-MLP on a mesh with tensor > 1: see "
                          "test_xla_grouped_conv_kernel_gradient and test_xla_local_mixing")
def test_strip_mlp_on_the_2x2x2_mesh(one_device, data_dir, tmp_path):
    result = eight_devices("strip_mlp", MESH_222, data_dir, str(tmp_path))
    compare_losses("strip_mlp (2 x 2 x 2)", one_device("strip_mlp"), result.workdir)


@pytest.mark.slow
def test_kan_with_grid_updates(one_device, data_dir, tmp_path):
    result = eight_devices("kan", MESH_222, data_dir, str(tmp_path))
    one = one_device("kan")
    compare_losses("kan", one, result.workdir)
    grids = result.state.model_state["kan_grid"]
    saved = saved_state(one)
    uniform = np.linspace(-1, 1, 6)  # the initial interior knots on grid_range (-1, 1)
    for name, g in grids.items():
        g = np.asarray(g["grid"])
        assert g.shape[1] == 5 + 2 * 3 + 1
        assert np.abs(g[:, 3:-3] - uniform).max() > 0.1, name  # adapted to the data
        np.testing.assert_allclose(g, saved[f"model_state/kan_grid/{name}/grid"],
                                   rtol=1e-4, atol=1e-5, err_msg=name)


# The two XLA bugs behind the Strip-MLP xfail, in plain JAX on the (2, 2, 2) mesh.

def _mesh():
    return jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                         (jax.sharding.AxisType.Auto,) * 3)


def _put(mesh, x, *spec):
    return jax.device_put(x, NamedSharding(mesh, P(*spec)))


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="XLA SPMD: grouped-conv kernel gradient x tensor-axis size")
def test_xla_grouped_conv_kernel_gradient():
    mesh, rng = _mesh(), np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 4)).astype(np.float32)
    k = rng.normal(size=(3, 3, 1, 4)).astype(np.float32)

    def loss(k, x):
        y = jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         feature_group_count=4)
        return jnp.sum(y ** 2)

    grad = jax.jit(jax.grad(loss))
    want = np.asarray(grad(k, x))
    got = np.asarray(grad(_put(mesh, k), _put(mesh, x, ("data", "fsdp"))))
    # Today: got == 2 * want exactly (the tensor axis's 2 replicas of each batch shard are
    # summed). A dense convolution (feature_group_count=1) comes out right.
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="XLA SPMD: Strip-MLP LocalMixing reweighting computed wrongly")
def test_xla_local_mixing():
    mesh, rng = _mesh(), np.random.default_rng(0)
    x = rng.normal(size=(16, 4, 4, 4)).astype(np.float32)
    w1 = rng.normal(size=(4, 2)).astype(np.float32)
    w2 = rng.normal(size=(2, 12)).astype(np.float32)

    def f(x, w1, w2):
        a = (x.mean(axis=(1, 2)) @ w1 @ w2).reshape(16, 4, 3)
        return x * a[:, None, None, :, 0]

    x64 = x.astype(np.float64)
    want = x64 * (x64.mean(axis=(1, 2)) @ w1 @ w2).reshape(16, 4, 3)[:, None, None, :, 0]
    np.testing.assert_allclose(np.asarray(jax.jit(f)(x, w1, w2)), want, rtol=1e-4, atol=1e-5)
    got = jax.jit(f)(_put(mesh, x, ("data", "fsdp"), None, None, "tensor"),
                     _put(mesh, w1, "fsdp", "tensor"), _put(mesh, w2, "tensor", "fsdp"))
    # Today: off by up to 4.2 (values up to ~17); right with any one of the shardings removed.
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_family_configs_are_tiny():
    """The configs build, and the models stay small (compile time dominates these tests)."""
    from jaxinterp.train.config import build_model

    sizes = {}
    for family in ("vit", "mixer", "strip_mlp", "kan"):
        config = get_config(family)
        model = build_model(config)
        shapes = jax.eval_shape(lambda m=model: m.init(
            {"params": jax.random.key(0), "dropout": jax.random.key(1)},
            jnp.zeros((1, 8, 8, 1))))
        sizes[family] = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes["params"]))
    assert sizes == {"vit": 5018, "mixer": 3642, "strip_mlp": 24135, "kan": 10656}, sizes
