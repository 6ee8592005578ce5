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

jax.config.update("jax_num_cpu_devices", int(os.environ.get("JAXINTERP_TEST_CPU_DEVICES", "8")))


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
