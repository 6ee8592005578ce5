"""Test set-up: 8 CPU devices (for mesh tests)."""

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

jax.config.update("jax_num_cpu_devices", 8)
