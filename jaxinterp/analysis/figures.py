"""Matplotlib figures for analyses: each function takes arrays (and labels) and returns a
`matplotlib.figure.Figure`; scripts save it with `fig.savefig(path)`, notebooks show it inline.

matplotlib is imported inside each function, so importing jaxinterp stays cheap and has no
side effects.
"""

from __future__ import annotations
