"""What every group of tests uses: the shared fixtures (one_thread, hub, image_folder), the seed, and the subject
markers that follow from what a test does. The tests sit in one folder per room of the package (tests/models,
tests/lm, tests/export, ...); a fixture that one group alone uses lives in that group's conftest.py. Helpers shared by
several groups live in the helper modules beside this file (model_checks, small_lms, tolerances, digit_runs,
fakehub, model_groups, maintainer_tools; on sys.path through pyproject's ``pythonpath``), those of one group in its
folder; a test module never imports another."""

import inspect
import os
import re
import sys

import pytest
from fakehub import FakeHub

# the test processes keep glibc's default allocator policy (zoo condense's keep_freed_memory would hold every
# worker's peak heap to its end); tests/platform/test_allocator.py checks the policy in a process of its own
os.environ.setdefault("ZOO_KEEP_FREED_MEMORY", "0")

# under pytest-xdist each worker gets its share of the cores, so that workers do not oversubscribe them
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    import torch  # in the workers only: the process that hands out the tests starts them sooner without it

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))


@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    """Collection writes its compiled modules (pytest's rewritten test modules, the zoo modules they import) even
    where ``PYTHONDONTWRITEBYTECODE`` is set: without them every run rewrites and compiles the test modules again,
    about a quarter of each worker's collection. The setting is the caller's again once the tests are collected."""
    caller = sys.dont_write_bytecode
    sys.dont_write_bytecode = False
    try:
        return (yield)
    finally:
        sys.dont_write_bytecode = caller


# A test that launches several processes: torchrun, torch.distributed.run or torch.multiprocessing's spawn
_LAUNCHES_PROCESSES = re.compile(r"\bTORCHRUN\b|torch\.distributed\.run|\bmp\.spawn\(|_ddp_worker\b")
# A test whose name says it compares with another implementation: *parity*, *_equals_the_authors*,
# *_matches_authors_forward*, *_equals_transformers_*, *_against_timm*, *_equal_llama_cpp*, ...
_PARITY_NAME = re.compile(
    r"parity|(?<!count)_(equals?|match(es)?)_(the_)?(authors|transformers|timm|llama_cpp)|_against_(transformers|timm)"
)


def subject_marks(name: str, fixturenames, source: str) -> list[str]:
    """The subject markers a test gets from what it does, beside those its module declares: ``hub`` when it uses
    the Hub stand-in (the ``hub`` fixture), ``ddp`` when it launches several processes, ``parity`` when its name says
    it compares with another implementation (the authors' code, transformers, timm, llama.cpp)."""
    marks = []
    if "hub" in fixturenames:
        marks.append("hub")
    if _LAUNCHES_PROCESSES.search(source):
        marks.append("ddp")
    if _PARITY_NAME.search(name):
        marks.append("parity")
    return marks


def _source(function) -> str:
    """The function's own code, from its ``def`` line (not its decorators' arguments)."""
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return ""
    start = re.search(r"^\s*(async\s+)?def\s", source, re.M)
    return source[start.start() :] if start else source


@pytest.hookimpl(tryfirst=True)  # before -m deselects by them
def pytest_collection_modifyitems(config, items):
    sources = {}
    for item in items:
        function = getattr(item, "function", None)
        if function not in sources:
            sources[function] = _source(function) if function is not None else ""
        name = getattr(item, "originalname", item.name)  # without the parameters' ids
        for mark in subject_marks(name, getattr(item, "fixturenames", ()), sources[function]):
            if item.get_closest_marker(mark) is None:
                item.add_marker(mark)


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a loaded 2-core machine: one thread is many times faster than two. For a whole module:
    ``pytestmark = pytest.mark.usefixtures("one_thread")``; the thread count is restored after the module."""
    from tolerances import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The Hub stand-in of tests/fakehub.py for one test, with huggingface_hub pointed at it (endpoint, a cache
    under tmp_path, classic uploads, online); the server stops after the test."""
    with FakeHub() as server:
        yield server.use(monkeypatch, tmp_path / "hf-cache")


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
