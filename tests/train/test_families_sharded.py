"""One device vs eight: the same 20 losses (float32, rtol 1e-5) for a ViT, an MLP-Mixer, a
Strip-MLP and a B-spline KAN trained on the digits through `jaxinterp.train.train`.

Both runs are the training binary in a subprocess (`train` builds its mesh over every device
there is), with 1 CPU device and with 8 on the family's mesh (`family_configs.MESHES`):
data=2 x fsdp=2 x tensor=2. The family configs
(tests/train/family_configs.py) train with augmentation; Strip-MLP with BatchNorm in train mode,
drop path and a RunningMean intervention, the KAN with grid updates at steps 0, 5, 10 and 15.
Compiled programs are cached for the session (`xla_cache`), so the SIGKILL and 2-process tests
reuse the 8-device ones.

Measured max relative loss differences over the 20 steps (2 CPU cores, jax 0.12):
vit 1.1e-7, mixer 1.1e-7, kan 1.6e-6, strip_mlp 3.9e-7.

Strip-MLP matches on 2 x 2 x 2 only because it steers around two XLA SPMD (GSPMD and Shardy
alike) miscompilations, reproduced below in a few lines of plain JAX (`test_xla_*`, strict
xfails: they will pass, and so fail, once XLA is fixed):
  1. the kernel gradient of a grouped (depthwise) convolution with the batch split over
     data x fsdp comes out multiplied by the size of the `tensor` axis, which holds replicas
     of the batch (4 times on data=2 x tensor=4; right on data x fsdp meshes, and for dense
     convolutions). Strip-MLP writes its one-input-channel-per-group convolutions as patches
     times per-channel weights (`jaxinterp.layers.conv.channelwise_conv`), not with
     `feature_group_count`;
  2. LocalMixing's reweighting, `x * ((x.mean((1, 2)) @ w1 @ w2).reshape(b, d, 3))[..., 0]`
     with x's channels on `tensor`, w1 (fsdp, tensor), w2 (tensor, fsdp), is wrong in the
     forward pass (max error 4 on values of size 17; a slice `[..., :d]` instead of the
     reshape is as wrong). Strip-MLP constrains every site's value to be split over its batch
     axis only (`nn.with_logical_constraint`; the train step is traced under the mesh and the
     logical axis rules), so XLA never splits its activations over their channels.
Before these two changes Strip-MLP's 2 x 2 x 2 losses differed by 1.5e-5 at step 1, 6e-4 at
step 3 and 1.1e-2 by step 20. Rewriting only the reweighting (slicing w2 per branch) moved the
wrong forward values to the next block's reweighting: hence constraints everywhere.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tests.train.family_configs import (
    flags,
    get_config,
    mesh_flags,
    run,
    saved_shardings,
    saved_state,
    train_losses,
)

RTOL = 1e-5


@pytest.fixture(scope="module")
def runs(tmp_path_factory, xla_cache):
    """`get(family, devices)`: the workdir of the family's run on 1 device or on 8 (its
    mesh), run once, on first use."""
    data_dir = str(tmp_path_factory.mktemp("data"))
    done = {}

    def get(family: str, devices: int) -> str:
        if (family, devices) not in done:
            workdir = str(tmp_path_factory.mktemp(f"{family}_{devices}"))
            mesh = mesh_flags(family) if devices == 8 else {"mesh__data": 1}
            run(workdir, family, *flags(data__data_dir=data_dir, **mesh), devices=devices,
                env=xla_cache)
            done[family, devices] = workdir
        return done[family, devices]

    return get


def compare_losses(family: str, runs) -> tuple[str, str]:
    """The 1- and 8-device workdirs, after checking that their losses agree."""
    one, eight = runs(family, 1), runs(family, 8)
    a, b = train_losses(one), train_losses(eight)
    assert len(a) == len(b) == 20
    rel = float(np.max(np.abs(b - a) / np.abs(a)))
    print(f"{family}: max relative loss difference, 1 vs 8 devices: {rel:.2e}")
    np.testing.assert_allclose(b, a, rtol=RTOL)
    assert np.ptp(a) > 0.05  # the losses move: the updates are not negligible
    return one, eight


def layouts(workdir: str, prefix: str = "params/") -> tuple[set, set]:
    """(partition specs, mesh shapes) the run's parameters were saved with."""
    shardings = {k: v for k, v in saved_shardings(workdir).items() if k.startswith(prefix)}
    return {spec for _, spec in shardings.values()}, {mesh for mesh, _ in shardings.values()}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["vit", "mixer"])
def test_vision_transformer_and_mixer(family, runs):
    _, eight = compare_losses(family, runs)
    # The parameters really are split over tensor and fsdp (e.g. ViT W_Q [heads, d_model, d]:
    # ('tensor', 'fsdp', None); Mixer Dense kernels ('fsdp', 'tensor') / ('tensor', 'fsdp')).
    specs, meshes = layouts(eight)
    assert meshes == {(2, 2, 2)}
    assert ("fsdp", "tensor") in specs, specs
    assert ("tensor", "fsdp") in {s[:2] for s in specs}, specs


@pytest.mark.slow
def test_strip_mlp_batchnorm_drop_path_running_mean(runs):
    one, eight = compare_losses("strip_mlp", runs)
    specs, meshes = layouts(eight)
    assert meshes == {(2, 2, 2)} and ("fsdp",) in specs, specs  # e.g. BatchNorm scales
    want, got = saved_state(one), saved_state(eight)
    stats = {k: v for k, v in got.items() if k.startswith("model_state/batch_stats/")}
    assert len(stats) == 2 * 13  # 4 blocks x 3 BatchNorms + the final one; mean and var each
    # Every BatchNorm's running mean and variance moved away from its init (0 and 1).
    for key, x in stats.items():
        moved = float(np.max(np.abs(x - (1.0 if key.endswith("/var") else 0.0))))
        assert moved > 1e-3, (key, moved)
    # ... and equal the 1-device run's, except the running means of the BatchNorms right
    # after a bias that BatchNorm cancels (`proj` -> `proj_norm`; in stage 4, whose maps are
    # 1 x 1, `relate_pos_h` and `proj_h`'s bias -> `strip_mixing/norm`). Such a bias has zero
    # gradient up to rounding, and Adam scales that rounding noise up to steps of the learning
    # rate: it drifts differently on 1 and 8 devices (by up to 0.03 after 20 steps), and so do
    # those means, with no effect on the loss. Measured elementwise: var 3e-6, other means
    # 5e-5, RunningMean 3e-4 relative (atol: 1e-4 of the array's largest value).
    def close(key):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4,
                                   atol=1e-4 * float(np.abs(want[key]).max()), err_msg=key)

    drifting = ("proj_norm/mean", "blocks4_0/strip_mixing/norm/mean")
    compared = [k for k in stats if not k.endswith(drifting)]
    assert len(compared) == 2 * 13 - 5
    for key in compared:
        close(key)
    # The RunningMean statistics were updated every step.
    assert int(got["iv_state/0/count"]) == int(want["iv_state/0/count"]) == 20
    assert float(np.abs(got["iv_state/0/mean"]).max()) > 1e-3
    close("iv_state/0/mean")


@pytest.mark.slow
def test_kan_with_grid_updates(runs):
    one, eight = compare_losses("kan", runs)
    assert layouts(eight)[1] == {(2, 2, 2)}  # (KAN parameters have no sharded axes)
    want, got = saved_state(one), saved_state(eight)
    uniform = np.linspace(-1, 1, 6)  # the initial interior knots on grid_range (-1, 1)
    grids = [k for k in got if k.startswith("model_state/kan_grid/")]
    assert len(grids) == 2
    for key in grids:
        assert got[key].shape[1] == 5 + 2 * 3 + 1
        assert np.abs(got[key][:, 3:-3] - uniform).max() > 0.1, key  # adapted to the data
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5, err_msg=key)


# The two XLA bugs behind the Strip-MLP xfail, in plain JAX on the (2, 2, 2) mesh.

def _mesh():
    return jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                         (jax.sharding.AxisType.Auto,) * 3)


def _put(mesh, x, *spec):
    return jax.device_put(x, NamedSharding(mesh, P(*spec)))


@pytest.mark.mesh  # 2 x 2 x 2 in this process
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
    # Today: got == 2 * want exactly, as if the tensor axis's 2 replicas of each batch shard
    # were summed (4x with tensor=4). A dense convolution (feature_group_count=1) is right.
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.mesh  # 2 x 2 x 2 in this process
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
    # Today: off by up to 4.2 (values up to ~17). Measured right when x's channels are not on
    # tensor, or w1, w2 are (fsdp, None), (None, fsdp) or (None, tensor), (tensor, None).
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
