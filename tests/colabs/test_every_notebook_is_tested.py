"""Every notebook in colabs/ has its own test file here, and there is at least one notebook."""

import pathlib

from tests.colabs.notebook import NOTEBOOKS


def test_every_notebook_has_a_test_file():
    assert NOTEBOOKS, "no notebooks in colabs/: nothing would be tested"
    here = pathlib.Path(__file__).parent
    missing = [p.name for p in NOTEBOOKS if not (here / f"test_{p.stem}.py").exists()]
    assert not missing, f"notebooks without a tests/colabs/test_<name>.py: {missing}"
    for p in NOTEBOOKS:
        assert f'run_notebook("{p.name}"' in (here / f"test_{p.stem}.py").read_text(), p.name
