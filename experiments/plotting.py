"""Figures for the experiment binaries: matplotlib on the headless Agg backend."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported only when an experiment plots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
