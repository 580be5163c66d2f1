"""timm's own ``tests/test_models.py``, for the installed timm, and a run of it on the zoo's models.

The file comes from the timm sdist on the package index (``pip download --no-binary :all: --no-deps timm==VERSION``),
fetched once into the tests' cache (``$ZOO_TEST_CACHE/timm-tests/VERSION/``, default ``~/.cache/zoo/tests``) and
never into the repository. Only what the run needs is extracted: ``tests/test_models.py``, the ``tests/__init__.py``
and ``tests/conftest.py`` beside it, and the sdist's ``pyproject.toml`` (its pytest markers). ``ZOO_TIMM_SDIST`` may
name an sdist already on disk (an offline machine). When the index cannot be reached :class:`SuiteUnavailable` says
why, and the caller skips with that reason.

:func:`run_suite` runs that file, unchanged, in a pytest subprocess with ``tests/models/timm_suite_plugin.py`` loaded
(the zoo imported first, timm's own entries of the names it owns pointed at the zoo's builders, every item but those of
the named models deselected) and returns the junit XML's outcome per test.
"""

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import timm

TESTS = Path(__file__).resolve().parent
CACHE_ENV = "ZOO_TEST_CACHE"
SDIST_ENV = "ZOO_TIMM_SDIST"
MODELS_ENV = "ZOO_TIMM_MODELS"  # read by timm_suite_plugin: the models whose items are kept
# what the run needs from the sdist (relative to its top folder); the first two must be there
SUITE_FILES = ("tests/test_models.py", "pyproject.toml", "tests/__init__.py", "tests/conftest.py")
_REQUIRED = SUITE_FILES[:2]
_COMPLETE = ".complete"  # written last: a folder without it is a half-written one


class SuiteUnavailable(RuntimeError):
    """timm's test file could not be fetched (the index is unreachable, or has no sdist of this version)."""


def cache_root() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "zoo" / "tests"


def suite_dir(version: str | None = None) -> Path:
    """The folder holding timm's ``tests/test_models.py`` and ``pyproject.toml`` for ``version`` (default: the
    installed timm), fetched and extracted on first use; several processes may ask at once (a file lock)."""
    version = version or timm.__version__
    if not re.fullmatch(r"[0-9A-Za-z.+!_-]+", version):
        raise SuiteUnavailable(f"timm {version!r} is not a released version: there is no sdist of it to test with")
    folder = cache_root() / "timm-tests" / version
    if (folder / _COMPLETE).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / _COMPLETE).is_file():
            with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{version}-") as tmp:
                staged = Path(tmp) / "suite"
                _extract(_sdist(version, Path(tmp)), staged, version)
                (staged / _COMPLETE).write_text(f"timm {version} sdist\n")
                shutil.rmtree(folder, ignore_errors=True)
                staged.rename(folder)
    return folder


def _sdist(version: str, tmp: Path) -> Path:
    """The sdist of timm ``version``: ``$ZOO_TIMM_SDIST`` if set, else downloaded from the index into ``tmp``."""
    given = os.environ.get(SDIST_ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_file() or not path.name.startswith(f"timm-{version}.tar"):
            raise SuiteUnavailable(f"{SDIST_ENV}={given} is not the sdist of the installed timm {version}")
        return path
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--no-cache-dir"]
    cmd += ["--timeout", "30", "--retries", "1", "-d", str(tmp / "dl"), f"timm=={version}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_pip_env())
    except subprocess.TimeoutExpired:
        raise SuiteUnavailable(
            f"`pip download timm=={version}` took over 10 minutes; the index is unreachable"
        ) from None
    found = sorted((tmp / "dl").glob(f"timm-{version}.tar*"))
    if done.returncode != 0 or not found:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        why = " / ".join(lines[-2:])[-400:] or f"exit status {done.returncode}"
        raise SuiteUnavailable(f"could not fetch the timm {version} sdist with pip download: {why}")
    return found[0]


def _pip_env() -> dict[str, str]:
    # a test run's pip must not read the run's pytest settings nor ask questions
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _extract(sdist: Path, dest: Path, version: str) -> None:
    """Only :data:`SUITE_FILES` from the sdist, each a regular file inside its top folder."""
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        members = {}
        for member in tar.getmembers():
            top, _, rest = member.name.partition("/")
            if top == f"timm-{version}" and rest in SUITE_FILES and member.isfile():
                members[rest] = member
        missing = [name for name in _REQUIRED if name not in members]
        if missing:
            raise RuntimeError(
                f"{sdist.name} has no {', '.join(missing)}: timm's layout changed, update tests/models/timm_suite.py"
            )
        for rest, member in members.items():
            target = dest / rest
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)


@dataclass
class SuiteResult:
    """One run's outcome: ``outcomes`` maps each test id (``test_model_forward[identityformer_s12-1]``) to
    ``passed`` / ``failed`` / ``error`` / ``skipped``, ``messages`` the first line of each failure's message."""

    outcomes: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    returncode: int = 0
    output: str = ""
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("passed", "failed", "error", "skipped"), 0)
        for outcome in self.outcomes.values():
            counts[outcome] += 1
        return counts


def run_suite(models: list[str], junit: Path, timeout: int = 1800, extra_args: tuple[str, ...] = ()) -> SuiteResult:
    """timm's ``tests/test_models.py`` on ``models`` (zoo vision model names) in a pytest subprocess, one thread.

    Raises :class:`SuiteUnavailable` when timm's test file cannot be had."""
    folder = suite_dir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHONPATH"))}
    env.update(
        {MODELS_ENV: ",".join(models), "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parents[1])])},
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TIMEOUT="900",  # timm's test file reads it for its per-test timeouts (a loaded 2-core machine is slow)
        PYTHONDONTWRITEBYTECODE="1",
    )
    cmd = [sys.executable, "-m", "pytest", "tests/test_models.py", "-c", str(folder / "pyproject.toml")]
    cmd += ["--rootdir", str(folder), "-p", "timm_suite_plugin", "-p", "no:cacheprovider", "-p", "no:xdist"]
    cmd += ["-p", "no:randomly", "-q", "-rN", "--no-header", "-o", "addopts=", f"--junitxml={junit}", *extra_args]
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    result = SuiteResult(returncode=done.returncode, output=done.stdout + done.stderr)
    if not junit.is_file():
        raise RuntimeError(f"timm's suite wrote no junit XML (exit status {done.returncode}):\n{result.output[-3000:]}")
    _read_junit(junit, result)
    return result


def _read_junit(path: Path, result: SuiteResult) -> None:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    result.seconds = sum(float(s.get("time", 0)) for s in suites)
    for case in root.iter("testcase"):
        name = case.get("name")
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "failed" if tag == "failure" else tag
                message = node.get("message") or (node.text or "")
                break
        if outcome == "error" and name in result.outcomes:  # a teardown error after the call's own outcome
            name = f"{name}[teardown]"
        result.outcomes[name] = outcome
        if message:
            result.messages[name] = _first_line(message)


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return (lines[0] if lines else "")[:300]


def model_of(test_id: str, models) -> str | None:
    """The architecture (one of ``models``) that a test id's ``model_name`` parameter names, its ``.tag`` dropped."""
    params = test_id.partition("[")[2].rstrip("]")
    for param in params.split("-"):
        if param.partition(".")[0] in models:
            return param.partition(".")[0]
    return None


def test_name_of(test_id: str) -> str:
    return test_id.partition("[")[0]
