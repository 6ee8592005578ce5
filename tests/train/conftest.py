"""Fixtures for the training tests that run the training binary in subprocesses."""

import os

import pytest

from tests.train.family_configs import compile_cache_env


@pytest.fixture(scope="session")
def xla_cache(tmp_path_factory) -> dict[str, str]:
    """Environment for subprocesses: one XLA compilation cache for the whole session (shared by
    the pytest-xdist workers), so a program compiled by one test's run is loaded, not compiled
    again, by every later run of the same command in any test."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return compile_cache_env(str(root / "xla_cache"))
