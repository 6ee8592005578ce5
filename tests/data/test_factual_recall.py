"""The `factual_recall` builder: layout, one fact table across examples, determinism, errors."""

import numpy as np
import pytest

from jaxinterp import data
from jaxinterp.data.factual_recall import BOS, PAD, SEP, make_prompts

KW = dict(n_subjects=12, n_subject_tokens=10, n_relations=3, n_attributes=12,
          context_prob=0.5, num_train=300, num_test=20)


def stacked(source):
    rows = [source[i] for i in range(len(source))]
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    builder = data.FactualRecall(data_dir=str(tmp_path_factory.mktemp("fr")), **KW)
    builder.download_and_prepare()
    return builder


def test_layout_and_features(prepared):
    cfg = prepared.builder_config
    assert cfg.vocab_size == 3 + 10 + 3 + 12 and cfg.seq_len == 10
    assert data.BUILDERS["factual_recall"] is data.FactualRecall
    ex = stacked(prepared.as_data_source("train"))
    tok = ex["tokens"]
    assert tok.shape == (300, 10) and tok.dtype == np.int32 and (tok[:, 0] == BOS).all()
    n_ctx = ex["has_context"].sum()
    assert 100 < n_ctx < 200  # context_prob 0.5
    subj = cfg.subject_tokens
    assert sum(len(s) == 2 for s in subj) == 6 and len(set(subj)) == 12
    singles = {s[0] for s in subj if len(s) == 1}
    assert not singles & {s[0] for s in subj if len(s) == 2}  # prefixes are unambiguous
    for i in range(len(tok)):
        t, s, r, ap = tok[i], ex["subject"][i], ex["relation"][i], ex["answer_pos"][i]
        pieces, rel = list(subj[s]), cfg.relation_tokens[r]
        query = [*pieces, rel]
        if ex["has_context"][i]:
            a2 = ex["in_context"][i]
            want = [BOS, *pieces, rel, a2, SEP, *query, a2]
            assert a2 != ex["memorised"][i] and a2 in cfg.relation_attributes(r)
            assert ex["answer"][i] == a2
            np.testing.assert_array_equal(np.flatnonzero(ex["context_mask"][i]),
                                          1 + np.arange(len(pieces)))
        else:
            want = [BOS, *query, ex["memorised"][i]]
            assert ex["in_context"][i] == -1 and ex["answer"][i] == ex["memorised"][i]
            assert not ex["context_mask"][i].any()
        assert ap == len(want) - 1 and t[ap] == ex["answer"][i]
        np.testing.assert_array_equal(t, want + [PAD] * (10 - len(want)))
        np.testing.assert_array_equal(np.flatnonzero(ex["loss_mask"][i]), [ap])
        np.testing.assert_array_equal(np.flatnonzero(ex["subject_mask"][i]),
                                      ap - 1 - len(pieces) + np.arange(len(pieces)))


def test_one_fact_table_across_examples_and_splits(prepared):
    cfg = prepared.builder_config
    table = cfg.fact_table
    assert table.shape == (12, 3)
    for r in range(3):  # typed attributes: each relation answers from its own group
        assert np.isin(table[:, r], cfg.relation_attributes(r)).all()
    for split in ("train", "test"):
        ex = stacked(prepared.as_data_source(split))
        np.testing.assert_array_equal(ex["memorised"], table[ex["subject"], ex["relation"]])
    # make_prompts gives the builder's features for the same triples.
    ex = stacked(prepared.as_data_source("test"))
    ctx = [int(c) if h else None for c, h in zip(ex["in_context"], ex["has_context"],
                                                   strict=True)]
    made = make_prompts(cfg, ex["subject"], ex["relation"], ctx)
    assert made.keys() == ex.keys()
    for k in ex:
        np.testing.assert_array_equal(made[k], ex[k], err_msg=k)


def test_determinism_and_seeds(tmp_path):
    def build(d, **kw):
        b = data.FactualRecall(data_dir=str(tmp_path / d), **{**KW, "num_train": 40, **kw})
        b.download_and_prepare()
        return b.builder_config, stacked(b.as_data_source("train"))

    cfg_a, a = build("a")
    _, b = build("b")
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    cfg_c, c = build("c", seed=1)  # other prompts, same world
    assert not np.array_equal(a["tokens"], c["tokens"])
    np.testing.assert_array_equal(cfg_a.fact_table, cfg_c.fact_table)
    cfg_d, _ = build("d", world_seed=1)  # another world
    assert not np.array_equal(cfg_a.fact_table, cfg_d.fact_table)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="n_attributes"):
        data.FactualRecall(data_dir=str(tmp_path), n_relations=3, n_attributes=10)
    with pytest.raises(ValueError, match="n_subject_tokens"):
        data.FactualRecall(data_dir=str(tmp_path), n_subjects=30, n_subject_tokens=4)
    cfg = data.FactualRecallConfig(name="x", **{k: v for k, v in KW.items()})
    with pytest.raises(ValueError, match="not an attribute token"):
        make_prompts(cfg, [0], [0], [BOS])
