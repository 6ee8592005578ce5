"""Test set-up: 8 CPU devices (for mesh tests), one XLA compilation cache for the session (in
this process and, through the `xla_cache` fixture's environment, in subprocesses)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite is dominated by XLA compilation of small programs: LLVM's O0 backend cuts its CPU
# time by 25-40% (measured: 90 s against 156 s for test_lazy_neurons.py + test_generate.py, 34 s
# against 46 s for tests/layers/test_kan.py); XLA's own passes are unchanged. Benchmarks and
# binaries keep the default level.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

import jax

# 8 CPU devices by default. `make test` runs the tests not marked `mesh` with
# JAXINTERP_TEST_CPU_DEVICES=1: on one device a tiny training run costs about a third less CPU
# (fewer, smaller programs; no cross-device copies), and their subprocesses pick their own
# device counts. Tests marked `mesh` build meshes of all 8 devices in this process.
DEVICES = int(os.environ.get("JAXINTERP_TEST_CPU_DEVICES", "8"))
jax.config.update("jax_num_cpu_devices", DEVICES)


import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def xla_cache(tmp_path_factory) -> dict[str, str]:
    """Environment for subprocesses: one XLA compilation cache for the whole session (shared by
    the pytest-xdist workers), so a program compiled by one test's run is loaded, not compiled
    again, by every later run of the same command in any test."""
    from tests.train.family_configs import compile_cache_env

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    env = compile_cache_env(str(root / "xla_cache"))
    # The same cache in this process: tests that train the same tiny program again (another
    # seed, another test of one experiment) load it instead of compiling it (a tiny trainer
    # run: ~9 s of CPU compiling, ~5 s when its programs are cached).
    for name, value in env.items():
        jax.config.update(name.lower(), int(value) if value.isdigit() else value)
    return env


@pytest.fixture(autouse=True)
def _mesh_devices(request):
    """A `mesh` test run with fewer than 8 devices fails, naming the setting (never skips)."""
    if request.node.get_closest_marker("mesh") and DEVICES < 8:
        pytest.fail(f"{request.node.nodeid} is marked `mesh` and needs 8 CPU devices; "
                    f"JAXINTERP_TEST_CPU_DEVICES={DEVICES} (unset it, or run `-m 'not mesh'`)")


# Seconds the slowest test files took in `make test` (2 CPU cores, 2026-12-02). pytest-xdist
# hands whole files to its workers in collection order, so these are collected first: the run
# then does not end with one worker busy on a long file while the other idles.
SLOWEST_FILES = {
    "tests/experiments/test_das_planted.py": 202,
    "tests/sae/test_resume.py": 200,
    "tests/train/test_kill_resume.py": 195,
    "tests/train/test_families_sharded.py": 190,
    "tests/test_readme.py": 143,
    "tests/colabs/test_steering_and_editing.py": 119,
    "tests/experiments/test_digits_configs.py": 117,
    "tests/experiments/test_steering.py": 104,
    "tests/experiments/test_lofit_vs_lora.py": 100,
    "tests/experiments/test_kan_kat.py": 92,
    "tests/colabs/test_families.py": 86,
    "tests/colabs/test_training_dynamics.py": 83,
    "tests/experiments/test_attention_sinks.py": 75,
    "tests/experiments/test_bursty_icl.py": 73,
    "tests/experiments/test_induction_heads.py": 71,
    "tests/experiments/test_lazy_neurons.py": 69,
    "tests/colabs/test_attention.py": 68,
    "tests/train/test_multiprocess_vision.py": 62,
    "tests/experiments/test_attribution_graph.py": 60,
    "tests/train/test_resume_multiprocess.py": 51,
    "tests/experiments/test_localize_edit.py": 50,
    "tests/experiments/test_factual_recall.py": 46,
    "tests/experiments/test_semi_nmf_features.py": 41,
    "tests/colabs/test_toolkit.py": 39,
}


def pytest_collection_modifyitems(config, items):
    """The slowest files first (a stable sort: every other file keeps its order)."""
    items.sort(key=lambda item: -SLOWEST_FILES.get(item.nodeid.split("::")[0], 0))
