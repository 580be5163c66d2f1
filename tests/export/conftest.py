"""The export tests' fixture: a GGUF cache of their own (tests/conftest.py holds what every group uses)."""

import pytest


@pytest.fixture
def gguf_cache(tmp_path, monkeypatch):
    """A temporary ZOO_CACHE for one test; yields the folder of its GGUF entries (not created)."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "gguf"
