"""colabs/steering_and_editing.ipynb runs top to bottom (see notebook.py)."""

import pytest

from tests.colabs.notebook import run_notebook


@pytest.mark.slow
def test_notebook_runs(tmp_path):
    run_notebook("steering_and_editing.ipynb", tmp_path)
