import os

import pytest
import torch
from fakehub import FakeHub

# under pytest-xdist each worker gets its share of the cores, so that workers do not oversubscribe them
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a loaded 2-core machine: one thread is many times faster than two. For a whole module:
    ``pytestmark = pytest.mark.usefixtures("one_thread")``; the thread count is restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The Hub stand-in of tests/fakehub.py for one test, with huggingface_hub pointed at it (endpoint, a cache
    under tmp_path, classic uploads, online); the server stops after the test."""
    with FakeHub() as server:
        yield server.use(monkeypatch, tmp_path / "hf-cache")


@pytest.fixture
def gguf_cache(tmp_path, monkeypatch):
    """A temporary ZOO_CACHE for one test; yields the folder of its GGUF entries (not created)."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "gguf"


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """ImageNet layout: train/<class>/*.png and val/<class>/*.png of tests/digit_runs.py's digit scans."""
    from digit_runs import CLASSES, digit_images

    root = tmp_path_factory.mktemp("data") / "digit-pngs"
    for split in ("train", "val"):
        for img, c, i in digit_images(split):
            folder = root / split / CLASSES[c]
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{i:04d}.png")
    return root
