"""Greedy `ji.generate` on the tiny HF decoder checkpoints against `transformers`' greedy
`generate` (fixtures written by make_hf_generate_fixtures.py with PyTorch; no torch here)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.pretrained.hf import load_hf

DATA = pathlib.Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["gpt2", "llama", "llama_tied"])
def test_greedy_generate_matches_transformers_token_for_token(name):
    ref = dict(np.load(DATA / f"{name}_generate.npz"))
    model, variables = load_hf(DATA / name)
    n_new = ref["tokens"].shape[1] - ref["prompt"].shape[1]
    out = ji.generate(model, variables, ref["prompt"], n_new, return_logits=True)
    np.testing.assert_array_equal(out.tokens, ref["tokens"])
    np.testing.assert_allclose(out.logits, ref["logits"], rtol=1e-4, atol=1e-4)
    eos = ji.generate(model, variables, ref["prompt"], n_new,
                      eos_token_id=int(ref["eos_token_id"]), pad_token_id=int(ref["pad_token_id"]))
    np.testing.assert_array_equal(eos.tokens, ref["eos_tokens"])
