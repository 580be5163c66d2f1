"""A ZOO_CACHE that cannot hold the dataset cache (a file, a path under a file, a ``datasets`` entry that is a file)
is one line naming it and what to do, from Python and from eval.py, before anything is downloaded or written."""

import os

import pytest

from zoo import evaluate
from zoo.data import standard
from zoo.data.errors import DataError
from zoo.data.sources import DataSource


def _a_file(tmp):
    (tmp / "f").write_text("mine")
    return tmp / "f"


def _datasets_a_file(tmp):
    (tmp / "c").mkdir()
    (tmp / "c" / "datasets").write_text("mine")
    return tmp / "c"


def _set_folder_a_file(tmp):
    (tmp / "c" / "datasets").mkdir(parents=True)
    (tmp / "c" / "datasets" / "mnist").write_text("mine")
    return tmp / "c"


CACHES = [
    ("ZOO_CACHE a file", _a_file),
    ("ZOO_CACHE under a file", lambda tmp: _a_file(tmp) / "sub"),
    ("its datasets folder a file", _datasets_a_file),
    ("the set's folder a file", _set_folder_a_file),
]


@pytest.fixture
def no_download(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("downloaded despite a cache that cannot be written")

    monkeypatch.setattr(standard, "_fetch_mnist", never)


@pytest.mark.parametrize("what, where", CACHES, ids=[c[0] for c in CACHES])
def test_a_dataset_cache_that_cannot_be_made_is_one_line(tmp_path, monkeypatch, capsys, no_download, what, where):
    cache = where(tmp_path)
    files = {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    monkeypatch.setenv("ZOO_CACHE", str(cache))
    with pytest.raises(DataError, match="the dataset cache .* cannot be made .*set ZOO_CACHE to a writable folder"):
        DataSource("mnist").folder()
    code = evaluate.main(["--model", "convnet_d3", "--data", "mnist", "--split", "test[:8]", "--no-profile"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "set ZOO_CACHE to a writable folder" in err and "--data-path" in err, err
    assert {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()} == files  # nothing written, nothing lost


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_dataset_cache_is_one_line(tmp_path, monkeypatch, no_download):
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "ro"))
    with pytest.raises(DataError, match="cannot be made .*ZOO_CACHE"):
        DataSource("mnist").folder()


def test_a_good_cache_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "new"))
    monkeypatch.setattr(standard, "_fetch_mnist", lambda name, root, *fetching: None)
    assert DataSource("mnist").folder() == tmp_path / "new" / "datasets" / "mnist"
    assert (tmp_path / "new" / "datasets" / "mnist").is_dir()
