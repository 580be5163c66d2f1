"""zoo.kernels.build: where a C++ kernel library's build lives in torch's extension cache."""

import re
from pathlib import Path

import pytest
import torch

from zoo.kernels.build import build_name


def test_the_build_name_follows_the_source_the_flags_and_the_torch_built_against(monkeypatch):
    name = build_name("zoo_x", "int f();", ["-O3", "-mavx2"])
    assert re.fullmatch(r"zoo_x_[0-9a-f]{12}", name)
    assert build_name("zoo_x", "int f();", ["-O3", "-mavx2"]) == name  # the same build is found again
    others = {build_name("zoo_x", "int g();", ["-O3", "-mavx2"]), build_name("zoo_x", "int f();", ["-O2", "-mavx2"])}
    # another environment sharing the cache: another torch version, or the same one installed elsewhere (whose
    # headers the build names by path) gets a folder of its own instead of rebuilding over this one
    monkeypatch.setattr(torch, "__version__", torch.__version__ + "+other")
    others.add(build_name("zoo_x", "int f();", ["-O3", "-mavx2"]))
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__file__", "/another/venv/site-packages/torch/__init__.py")
    others.add(build_name("zoo_x", "int f();", ["-O3", "-mavx2"]))
    assert len(others) == 4 and name not in others


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_building_the_kernels_says_nothing_of_cuda_on_a_machine_without_a_gpu():
    """A CUDA build of torch on a CPU machine warns "No CUDA runtime is found" when its compiler driver is imported;
    the zoo's kernels are CPU code and the line is kept out of every command's output (a fresh process: the driver
    warns once, at its import)."""
    import subprocess
    import sys

    # the module alone (it imports torch, not the zoo): a process that starts in a few seconds
    module = Path(__file__).resolve().parents[2] / "zoo" / "kernels" / "build.py"
    code = (
        "import importlib.util, logging, sys; logging.basicConfig()\n"
        "spec = importlib.util.spec_from_file_location('build', sys.argv[1])\n"
        "build = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(build); build._compiler_driver()"
    )
    done = subprocess.run([sys.executable, "-c", code, str(module)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CUDA" not in done.stderr, done.stderr


def test_a_build_compiles_the_copies_in_a_folder_named_by_their_text(monkeypatch, tmp_path):
    """Where the sources lie plays no part: the same text in another folder (a moved package) finds the same build,
    changed text gets a folder of its own; the compiler reads the copies written into the build folder, so a folder's
    library never stands for other sources. ``TORCH_EXTENSIONS_DIR`` places the builds, as it does torch's."""
    from torch.utils import cpp_extension

    from zoo.kernels import build

    loads = []
    monkeypatch.setattr(cpp_extension, "load", lambda name, sources, **kw: loads.append((name, sources, kw)))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    old, moved = tmp_path / "old", tmp_path / "moved"
    for folder in (old, moved):
        folder.mkdir()
        (folder / "k.cpp").write_text('#include "k.h"\n')
        (folder / "k.h").write_text("int f();\n")
    first = build.build("zoo_x", str(old), ("k.cpp", "k.h"), ["-O3"])
    assert build.build("zoo_x", str(moved), ("k.cpp", "k.h"), ["-O3"]) == first
    (moved / "k.h").write_text("int g();\n")
    changed = build.build("zoo_x", str(moved), ("k.cpp", "k.h"), ["-O3"])
    assert changed != first
    assert Path(first).parent == Path(changed).parent == tmp_path / "ext"
    assert (Path(changed) / "k.h").read_text() == "int g();\n" and (Path(first) / "k.h").read_text() == "int f();\n"
    for (name, sources, kw), folder in zip(loads, (first, first, changed)):
        assert sources == [str(Path(folder) / "k.cpp")] and kw["build_directory"] == folder
        assert name == Path(folder).name


def test_every_c_source_lies_in_the_kernels_room_and_ships():
    """The C++ kernels have one room: every ``.cpp`` / ``.h`` under ``zoo/`` is in ``zoo/kernels/``, and pyproject's
    package data for ``zoo.kernels`` names each (a wheel without them could not build the kernels)."""
    import fnmatch

    root = Path(__file__).resolve().parents[2]
    sources = sorted(p for ext in ("*.cpp", "*.h", "*.cc", "*.hpp") for p in (root / "zoo").rglob(ext))
    kernels = root / "zoo" / "kernels"
    assert sources and [p for p in sources if p.parent != kernels] == []
    text = (root / "pyproject.toml").read_text()  # as text: tomllib is Python 3.11+
    table = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    line = next(x for x in table.splitlines() if x.startswith('"zoo.kernels"'))
    patterns = re.findall(r'"([^"]+)"', line.split("=", 1)[1])
    assert [p.name for p in sources if not any(fnmatch.fnmatch(p.name, pat) for pat in patterns)] == []
