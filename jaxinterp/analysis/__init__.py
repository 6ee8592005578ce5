"""Analyses built on `jaxinterp.run`: head detectors (more to come: patching, lenses, ...)."""

from jaxinterp.analysis.heads import induction_score, previous_token_score

__all__ = ["induction_score", "previous_token_score"]
