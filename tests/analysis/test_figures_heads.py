"""Attention-pattern and head-score figures render to PNG with the labels given."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from jaxinterp.analysis import figures


def test_attention_pattern_figure(tmp_path):
    n = 5
    pattern = np.tril(np.ones((3, n, n))) / np.arange(1, n + 1)[:, None]
    labels = ["<bos>", "A", "B", "A", "B"]
    fig = figures.plot_attention_pattern(pattern, labels, title="layer 1")
    assert len([ax for ax in fig.axes if ax.get_visible() and ax.images]) == 3
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    np.testing.assert_allclose(ax.images[0].get_array(), pattern[0])
    path = tmp_path / "pattern.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="labels"):
        figures.plot_attention_pattern(pattern, labels[:2])
    with pytest.raises(ValueError, match="pattern must be"):
        figures.plot_attention_pattern(np.ones((2, 3)))


def test_head_scores_figure(tmp_path):
    scores = np.array([[0.1, 0.9], [0.3, 0.2]])
    fig = figures.plot_head_scores(scores, title="induction")
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["0.10", "0.20", "0.30", "0.90"]
    fig.savefig(tmp_path / "scores.png")
    assert (tmp_path / "scores.png").stat().st_size > 1000
