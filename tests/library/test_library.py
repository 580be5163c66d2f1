"""The installed package is the library, not the lab: its docstrings and comments say what and why, never how fast on
which machine. A measured figure (a time, a speed-up, a machine, a load average, a torch version a run used) rots
with the next kernel or machine; it lives in ``results/`` with its provenance, and a docstring may link it."""

import ast
import io
import os
import re
import tokenize
from pathlib import Path

import pytest

ZOO = Path(__file__).resolve().parents[2] / "zoo"

# a figure of a run: a speed-up, a time, a rate, a machine, its load, the torch it ran; a target (">= 1.3x") is not
FIGURES = re.compile(
    r"""(?ix)
    (?=[0-9exrzsahlt])  # the first character of every figure below: elsewhere the search moves on at once
    (?:\b\d+(\.\d+)?(\s?-\s?\d+(\.\d+)?)?\s?x\s+(faster|slower|quicker|speed-?up)\b
    | (?<!>=\s)(?<!<=\s)(?<!most\s)(?<!least\s)\b\d+\.\d+x\b
    | (?<!every\s)\b\d+(\.\d+)?\s?(ms|us|µs)\b
    | \b\d+(\.\d+)?\s?(tok|img|tokens|images)/s\b
    | \b\d+(\.\d+)?\s?s\ (per|an|a)\ (iteration|step|token|epoch)\b
    | \bEPYC\b | \bXeon\b | \bRyzen\b | \bZen\ ?\d\b | Sapphire\ Rapids | \b[AH]100\b | \bH200\b
    | \bload\ average\b
    | \btorch\ 2\.\d+
    | \b\d+-core\ (CPU|x86|AMD|Intel|machine)\b)
    """
)


def _texts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring line of ``path``."""
    source = path.read_text(encoding="utf-8")
    out = [
        (t.start[0], t.string)
        for t in tokenize.generate_tokens(io.StringIO(source).readline)
        if t.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body[0] if node.body else None
            if (
                isinstance(body, ast.Expr)
                and isinstance(body.value, ast.Constant)
                and isinstance(body.value.value, str)
            ):
                out += [(body.lineno + i, line) for i, line in enumerate(body.value.value.split("\n"))]
    return out


def figures(path: Path) -> list[str]:
    """``file:line: figure`` for every measured figure in a comment or docstring of ``path``."""
    if FIGURES.search(path.read_text(encoding="utf-8")) is None:  # none anywhere: none in its comments either
        return []
    return [
        f"{path}:{line}: {m.group(0)!r}" for line, text in _texts(path) for m in [FIGURES.search(text)] if m is not None
    ]


def test_no_timing_figure_or_machine_in_the_package_s_docstrings_and_comments():
    found = [f for path in sorted(ZOO.rglob("*.py")) for f in figures(path)]
    assert found == [], "measured figures belong in results/ (with their provenance), not in zoo/:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "text",
    [
        '"""Runs 1.4x faster than oneDNN."""',
        "# about 0.4 ms of a 125M int4 step",
        '"""Measured on a 2-core AMD EPYC, load average 1.2."""',
        "# torch 2.14 deprecates it",
        '"""Decodes 28.5 tok/s."""',
        "# measured 0.95x at 2048 tokens",
    ],
)
def test_a_figure_is_caught_naming_its_line(tmp_path, text):
    f = tmp_path / "m.py"
    f.write_text(f"x = 1\n{text}\n" if text.startswith("#") else f"{text}\n")
    [hit] = figures(f)
    assert hit.startswith(f"{f}:{2 if text.startswith('#') else 1}: ")


def test_targets_and_shapes_are_not_figures(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""Target: zoo >= 1.3x timm, at most 0.6x; a 3x3 kernel on 28x28 images; RSS every 20 ms."""\n')
    assert figures(f) == []


_OUTSIDE = r"""
import contextlib, io, os, sys
checkout, prefix = sys.argv[1], sys.prefix
touched = []
def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.remove") and args:
        if isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(args[0]))
            if path.startswith(checkout) and not path.startswith(prefix):
                touched.append(path)
sys.addaudithook(hook)
import zoo, zoo.cli
assert not zoo.__file__.startswith(checkout), zoo.__file__
for argv in (["-h"], ["list", "convnet*"], ["info", "convnet_d3"], ["run", "convnet_d3"], ["bench", "-h"],
             ["train", "--help"], ["eval", "--help"], ["bench", "data-pruning", "--models", "quickstart"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            zoo.cli.main(argv)
        except SystemExit:
            pass
print("TOUCHED", sorted(set(touched)))
"""


@pytest.mark.slow
def test_an_installed_wheel_reads_nothing_of_the_checkout(tmp_path):
    """The wheel, installed elsewhere and run from elsewhere, opens no file of the checkout (its results/, configs/,
    model_cards/): every `zoo` command is the library's."""
    import subprocess
    import sys

    checkout = ZOO.parent
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", str(checkout), "--no-deps", "--no-build-isolation", "-w", str(wheels)]
    assert subprocess.run(build, capture_output=True, text=True, timeout=600).returncode == 0
    [wheel] = wheels.glob("zoo-*.whl")
    install = [*pip, "install", "--no-deps", "--target", str(site), str(wheel)]
    assert subprocess.run(install, capture_output=True, text=True, timeout=600).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-c", _OUTSIDE, str(checkout) + os.sep], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "TOUCHED []"
