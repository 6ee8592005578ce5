"""Every preset's variable tree (paths and shapes) equals the committed record, so that a
refactor of the model code cannot silently change a checkpoint layout or a loader's target."""

import json

import pytest

from jaxinterp.models import registry
from tests.models import param_trees

with open(param_trees.PATH) as f:
    RECORD = json.load(f)


def test_record_covers_every_preset():
    assert sorted(RECORD) == sorted(registry.PRESETS)


@pytest.mark.parametrize("name", sorted(registry.PRESETS))
def test_tree_unchanged(name):
    got = param_trees.tree(name)
    want = RECORD[name]
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not extra, f"{name}: missing {missing[:5]}, new {extra[:5]}"
    changed = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
    assert not changed, f"{name}: shapes changed {dict(list(changed.items())[:5])}"
