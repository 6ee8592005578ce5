"""colabs/families.ipynb runs top to bottom (see notebook.py)."""

import pytest

from tests.colabs.notebook import run_notebook


@pytest.mark.slow
def test_notebook_runs(tmp_path):
    run_notebook("families.ipynb", tmp_path)
