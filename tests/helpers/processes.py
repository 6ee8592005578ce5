"""Helpers for tests that start several processes."""

import socket


def free_port() -> int:
    """A localhost TCP port that is free now (for a jax.distributed coordinator)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]
