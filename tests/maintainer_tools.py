"""The checkout's maintainer tools (``tools/*.py``: the results tables, the command tables) and examples
(``examples/*.py``), loaded by path for the tests: they are scripts of the checkout, not modules of the installed
package."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load(name: str, folder: str = "tools") -> ModuleType:
    """``FOLDER/NAME.py`` of the checkout (``tools`` or ``examples``) as a module, loaded once per test process."""
    key = f"zoo_{folder}_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO / folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
