"""One training config per model family on the scikit-learn 8x8 digits (`experiments.train`)."""
