"""The condensation tests' fixture: the real data they condense (tests/conftest.py holds what every group uses)."""

import pytest

from zoo.condense import load_real


@pytest.fixture(scope="module")
def real():
    """The digits at 16x16, loaded once per module (test_condense_mtt.py narrows them to 10 per class)."""
    return load_real("digits", image_size=16)
