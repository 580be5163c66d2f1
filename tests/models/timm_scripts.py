"""timm's own ``train.py`` and ``validate.py``, found on this machine and run unchanged in a child process.

The scripts live in timm's repository (https://github.com/huggingface/pytorch-image-models), not in its wheel or its
sdist, so nothing fetches them: :func:`scripts_dir` takes the folder ``$ZOO_TIMM_SCRIPTS`` names, else
``$ZOO_TEST_CACHE/timm-scripts/TIMM_VERSION/`` (default ``~/.cache/zoo/tests``), and says what to put there when
neither holds both files (the tests then skip with that reason). Copy them from the repository at the tag of the
installed timm (``git -C pytorch-image-models show vVERSION:train.py``); they are never part of this repository.

Run as a script, this module starts one of them as a user would, on one of two builds::

    python tests/models/timm_scripts.py timm SCRIPT [ARGS...]  # plain timm: the zoo is never imported
    python tests/models/timm_scripts.py zoo SCRIPT [ARGS...]   # after ``import zoo``; a timm ``--model`` is the zoo's

``zoo``: importing the zoo adds its vision models to timm's registry (the names timm lacks); a name timm owns
(``caformer_s18``) is pointed at the zoo's builder for this process only (``timm_suite_plugin.point_timm_at_zoo``),
so that the script trains or validates the zoo's build of it.
"""

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SCRIPTS_ENV = "ZOO_TIMM_SCRIPTS"
CACHE_ENV = "ZOO_TEST_CACHE"
SCRIPTS = ("train.py", "validate.py")


def _cache_folder(version: str) -> Path:
    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "zoo" / "tests") / "timm-scripts" / version


def scripts_dir() -> tuple[Path | None, str]:
    """The folder holding timm's ``train.py`` and ``validate.py``, or None and why (what to put where)."""
    import timm

    given = os.environ.get(SCRIPTS_ENV)
    folder = Path(given).expanduser() if given else _cache_folder(timm.__version__)
    missing = [name for name in SCRIPTS if not (folder / name).is_file()]
    if not missing:
        return folder, ""
    where = f"{SCRIPTS_ENV}={given}" if given else f"{folder} (or set {SCRIPTS_ENV}=FOLDER)"
    return None, (
        f"timm's {' and '.join(missing)} not found in {where}: they ship in timm's repository, not its wheel or "
        f"sdist; copy them from https://github.com/huggingface/pytorch-image-models at v{timm.__version__}"
    )


def run(build: str, script: str, *args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python tests/models/timm_scripts.py BUILD SCRIPT ARGS`` in ``cwd``, one thread; raises with its output on
    failure."""
    folder, why = scripts_dir()
    if folder is None:
        raise FileNotFoundError(why)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHONPATH"))}
    env.update(PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parents[1])]), OMP_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1")  # fmt: skip
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, str(Path(__file__).resolve()), build, str(folder / script), *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{build} {script} {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done


def validation_loss(output: str) -> float:
    """The running mean loss validate.py logs at its last batch (``Loss: 1.0986 (1.0987)``)."""
    found = re.findall(r"Loss:\s+\S+\s+\(\s*([0-9.]+)\)", output)
    if not found:
        raise AssertionError(f"validate.py logged no loss:\n{output[-2000:]}")
    return float(found[-1])


def results(path: Path) -> dict:
    """The JSON ``--results-file`` validate.py writes (``--results-format json``)."""
    return json.loads(path.read_text())


def _main(argv: list[str]) -> None:
    build, script, *args = argv
    if build not in ("timm", "zoo"):
        raise SystemExit(f"usage: timm_scripts.py timm|zoo SCRIPT [ARGS...]; got build {build!r}")
    if build == "zoo":
        import timm
        from timm_suite_plugin import point_timm_at_zoo

        import zoo

        model = args[args.index("--model") + 1] if "--model" in args else None
        if model in zoo.list_models() and timm.models.is_model(model):
            point_timm_at_zoo(model)
        print(f"timm_scripts: --model {model} is built by {type(timm.create_model(model, device='meta')).__module__}")
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    _main(sys.argv[1:])
