"""The checkout's maintainer tools (``tools/*.py``: the results tables, the command tables), loaded by path for the
tests: they are scripts of the checkout, not modules of the installed package."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load(name: str) -> ModuleType:
    """``tools/NAME.py`` as a module (loaded once per test process)."""
    key = f"zoo_tools_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, TOOLS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
