"""Fixtures for the data tests: TFDS progress bars off, a shared data_dir for prepared data."""

import pytest
import tensorflow_datasets as tfds


@pytest.fixture(autouse=True, scope="session")
def _quiet_tfds():
    tfds.display_progress_bar(False)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """One directory for the session, so each tiny dataset is prepared once."""
    return str(tmp_path_factory.mktemp("tfds"))
