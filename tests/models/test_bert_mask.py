"""The BERT padding mask (`Bert(attention_mask=...)`) and the attention layer's `key_mask`:
parity with Hugging Face `BertModel(attention_mask=...)` on a padded batch (fixtures written by
tests/pretrained/make_hf_fixtures.py with PyTorch; no torch here), invariance of the real
positions to whatever the padding holds, scanned = unrolled, and the shape errors."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.layers.attention import ATTENTION_TYPES, Attention
from jaxinterp.pretrained.hf import load_hf

DATA = pathlib.Path(__file__).parents[1] / "pretrained" / "data"
TOL = dict(rtol=1e-4, atol=1e-4)  # against PyTorch
TIGHT = dict(rtol=1e-6, atol=1e-6)  # jaxinterp against itself, different padding / shapes
SCAN_TOL = dict(rtol=1e-5, atol=1e-5)  # scanned vs unrolled: XLA fuses them differently
NEG = np.finfo(np.float32).min


def _padded(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(DATA / f"{name}_padded.npz"))


def _inputs(ref):
    return ref["input_ids"], ref["token_type_ids"], ref["attention_mask"]


def _real(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """x [batch, pos, ...] at the real (mask 1) positions: [n_real, ...]."""
    return np.asarray(x)[np.asarray(mask, bool)]


@pytest.fixture(scope="module", params=[False, True], ids=["unrolled", "scanned"])
def bert(request):
    return load_hf(DATA / "bert", scan_layers=request.param)


def test_fixture_is_padded():
    ref = _padded("bert")
    assert ref["attention_mask"].sum(1).tolist() == [7, 5, 3]
    assert (ref["input_ids"][ref["attention_mask"] == 0] == 0).all()


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
@pytest.mark.parametrize("name", ["bert", "bert_mlm"])
def test_padded_batch_matches_transformers(name, scan):
    ref = _padded(name)
    model, variables = load_hf(DATA / name, scan_layers=scan)
    mask = ref["attention_mask"]
    run = jax.jit(lambda v, *x: ji.run(model, v, *x, capture=[
        "blocks.0.hook_resid_pre", "blocks.*.hook_normalized_resid_post"]))
    out, cache = run(variables, *_inputs(ref))  # traced mask: the value check is skipped
    want = ref["logits" if name == "bert_mlm" else "last_hidden_state"]
    np.testing.assert_allclose(_real(out, mask), _real(want, mask), **TOL)
    hidden = ref["hidden_states"]
    np.testing.assert_allclose(_real(cache["blocks.0.hook_resid_pre"], mask),
                               _real(hidden[0], mask), **TOL)
    for i in range(model.config.n_layers):
        np.testing.assert_allclose(_real(cache[f"blocks.{i}.hook_normalized_resid_post"], mask),
                                   _real(hidden[i + 1], mask), **TOL, err_msg=f"layer {i}")
    # The mask matters: without it the real positions of the padded rows are far off.
    unmasked = model.apply(variables, ref["input_ids"], ref["token_type_ids"])
    assert np.abs(_real(unmasked, mask) - _real(want, mask)).max() > 1e-2


def test_scores_and_pattern_sites_show_the_mask(bert):
    model, variables = bert
    ref = _padded("bert")
    _, cache = ji.run(model, variables, *_inputs(ref),
                      capture=["blocks.*.attn.hook_attn_scores", "blocks.*.attn.hook_pattern"])
    pad = ref["attention_mask"][:, None, None, :] == 0  # [batch, 1, 1, key_pos]
    for i in range(model.config.n_layers):
        scores = np.asarray(cache[f"blocks.{i}.attn.hook_attn_scores"])
        pattern = np.asarray(cache[f"blocks.{i}.attn.hook_pattern"])
        assert scores.shape == (3, 4, 7, 7)
        np.testing.assert_array_equal(scores[np.broadcast_to(pad, scores.shape)], NEG)
        assert (np.abs(scores[~np.broadcast_to(pad, scores.shape)]) < 100).all()
        np.testing.assert_array_equal(pattern[np.broadcast_to(pad, pattern.shape)], 0.0)
        np.testing.assert_allclose(pattern.sum(-1), 1.0, rtol=1e-6)


def test_padding_content_does_not_change_real_positions(bert):
    model, variables = bert
    ids, types, mask = _inputs(_padded("bert"))
    out = model.apply(variables, ids, types, mask)
    rng = np.random.RandomState(0)
    pad = mask == 0
    ids2 = np.where(pad, rng.randint(0, 100, ids.shape), ids)
    types2 = np.where(pad, rng.randint(0, 2, ids.shape), types)
    assert (ids2 != ids).any() and (types2 != types).any()
    out2 = model.apply(variables, ids2, types2, mask)
    np.testing.assert_allclose(_real(out2, mask), _real(out, mask), **TIGHT)
    assert np.abs(_real(out2, 1 - mask) - _real(out, 1 - mask)).max() > 1e-3  # padding did change


def test_extra_padding_and_unpadded_rows_give_the_same_real_positions(bert):
    model, variables = bert
    ids, types, mask = _inputs(_padded("bert"))
    out = model.apply(variables, ids, types, mask)
    extra = ((0, 0), (0, 4))  # pad 7 -> 11 positions
    out_long = model.apply(variables, np.pad(ids, extra, constant_values=7),
                           np.pad(types, extra), np.pad(mask, extra))
    assert out_long.shape == (3, 11, 32)
    np.testing.assert_allclose(np.asarray(out_long)[:, :7][mask == 1], _real(out, mask), **TIGHT)
    for row, n in enumerate(mask.sum(1)):  # each row alone, unpadded, no mask
        alone = model.apply(variables, ids[row:row + 1, :n], types[row:row + 1, :n])
        np.testing.assert_allclose(np.asarray(out)[row, :n], alone[0], **TIGHT,
                                   err_msg=f"row {row} (length {n})")


def test_scanned_equals_unrolled_with_a_mask():
    ref = _padded("bert_mlm")
    names = ["blocks.*.attn.hook_attn_scores", "blocks.*.hook_normalized_resid_post"]
    results = []
    for scan in (False, True):
        model, variables = load_hf(DATA / "bert_mlm", scan_layers=scan)
        results.append(ji.run(model, variables, *_inputs(ref), capture=names))
    (out_u, cache_u), (out_s, cache_s) = results
    np.testing.assert_allclose(out_s, out_u, **SCAN_TOL)
    assert sorted(cache_s) == sorted(cache_u) and len(cache_u) == 4
    for k in cache_u:
        np.testing.assert_allclose(cache_s[k], cache_u[k], **SCAN_TOL, err_msg=k)


@pytest.mark.parametrize("ones", [np.ones((3, 7), np.int32), np.ones((3, 7), bool)],
                         ids=["int", "bool"])
def test_no_mask_equals_all_ones(bert, ones):
    model, variables = bert
    ids, types, _ = _inputs(_padded("bert"))
    np.testing.assert_array_equal(model.apply(variables, ids, types, ones),
                                  model.apply(variables, ids, types))


def test_wrong_mask_raises(bert):
    model, variables = bert
    ids, types, mask = _inputs(_padded("bert"))
    with pytest.raises(ValueError, match=r"attention_mask shape \(3, 6\) != tokens shape \(3, 7\)"):
        model.apply(variables, ids, types, mask[:, :6])
    with pytest.raises(ValueError, match=r"attention_mask shape \(7,\) != tokens shape \(3, 7\)"):
        model.apply(variables, ids, types, mask[0])
    with pytest.raises(ValueError, match=r"1 \(real token\) or 0 \(padding\), got 2"):
        model.apply(variables, ids, types, mask * 2)


# -- the attention layer's key_mask, every attention type ----------------------------------------

@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("kind", ATTENTION_TYPES)
def test_key_mask_equals_running_the_unpadded_rows(kind, causal):
    """Real positions of a right-padded batch = each row run alone at its own length (for
    sigmoid that needs n = unpadded length, for softplus N_i = visible real keys)."""
    attn = Attention(n_heads=2, d_head=8, causal=causal, attention_type=kind, init_range=0.3)
    x = jax.random.normal(jax.random.key(1), (3, 6, 16))
    lengths = np.array([6, 4, 2])
    mask = np.arange(6)[None, :] < lengths[:, None]
    variables = attn.init(jax.random.key(0), x)
    out = np.asarray(attn.apply(variables, x, jnp.asarray(mask)))
    np.testing.assert_array_equal(attn.apply(variables, x, np.ones((3, 6), bool)),
                                  attn.apply(variables, x))
    for row, n in enumerate(lengths):
        alone = attn.apply(variables, x[row:row + 1, :n])
        np.testing.assert_allclose(out[row, :n], alone[0], rtol=1e-5, atol=1e-6,
                                   err_msg=f"row {row} (length {n})")


def test_key_mask_shape_error():
    attn = Attention(n_heads=2, d_head=8, causal=False)
    x = jnp.ones((3, 6, 16))
    variables = attn.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"key_mask shape \(3, 5\) != .* \(3, 6\)"):
        attn.apply(variables, x, jnp.ones((3, 5), bool))
