"""The `relation_switch` builder: switched closed-book prompts of the source relation are
answered with the target relation's fact; every other example is a `factual_recall` example
that is not a closed-book source-relation prompt; bad relations are errors."""

import pytest

from jaxinterp import data

KW = dict(n_subjects=8, n_subject_tokens=8, n_relations=3, n_attributes=9, context_prob=0.5,
          num_train=200, num_test=16, switch_prob=0.5)


def test_switched_and_other_examples(tmp_path):
    assert data.BUILDERS["relation_switch"] is data.RelationSwitch
    builder = data.RelationSwitch(data_dir=str(tmp_path), **KW)
    builder.download_and_prepare()
    cfg = builder.builder_config
    source = data.load_source("relation_switch", "train", str(tmp_path), **KW)
    rows = [source[i] for i in range(len(source))]
    switched = 0
    for ex in rows:
        s, r, ap = int(ex["subject"]), int(ex["relation"]), int(ex["answer_pos"])
        assert ex["tokens"][ap] == ex["answer"]
        if r == 0 and not ex["has_context"]:  # a closed-book source-relation prompt: switched
            assert ex["answer"] == cfg.fact_table[s, 1] != cfg.fact_table[s, 0]
            switched += 1
        elif not ex["has_context"]:
            assert ex["answer"] == cfg.fact_table[s, r]
        else:
            assert ex["answer"] == ex["in_context"] != cfg.fact_table[s, r]
    assert 0.35 < switched / len(rows) < 0.65, switched


def test_bad_relations_are_errors(tmp_path):
    with pytest.raises(ValueError, match=r"must be two different relations in 0\.\.2"):
        data.RelationSwitch(data_dir=str(tmp_path), **{**KW, "target_relation": 0})
