"""colabs/attention.ipynb runs top to bottom (see notebook.py)."""

import pytest

from tests.colabs.notebook import run_notebook


@pytest.mark.slow
def test_notebook_runs(tmp_path):
    run_notebook("attention.ipynb", tmp_path)
