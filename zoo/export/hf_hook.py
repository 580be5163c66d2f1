"""Registers the zoo's language models with transformers' Auto classes once transformers' Auto API is loaded.

``import zoo`` must stay light and must work without transformers: importing transformers' Auto classes and
``PreTrainedModel`` costs about 1.3 s, more than ``import zoo`` should add for users who never touch transformers.
So :func:`install` (run by ``import zoo``) registers at once only when ``transformers.models.auto`` is already
loaded; otherwise it puts a finder on ``sys.meta_path`` that watches the imports of ``transformers`` modules and,
when the outermost one has finished and the Auto API (``configuration_auto``, which ``AutoConfig``,
``AutoModelForCausalLM``, ``AutoTokenizer`` and ``pipeline`` all load) is loaded, removes itself and imports
:mod:`zoo.export.hf_auto`, which registers. Waiting for the outermost import matters: transformers loads its Auto
modules while other modules of it are half-initialised, and registering then would import from those.

The finder only wraps the loaders of ``transformers`` modules (a subclass of the same source loader, so resources,
sources and tracebacks are unchanged) and costs nothing when transformers is not installed. A failure to register
(an older transformers, a model type another package took) is logged, never raised into the user's import.
``zoo.export.hf_auto.register()`` registers by hand. :mod:`zoo.export.hf_auto` is imported by name here because it
*is* the heavy optional import; nothing below this module imports it.
"""

import importlib
import importlib.abc
import importlib.machinery
import logging
import sys
import threading

__all__ = ["install", "installed"]

_logger = logging.getLogger(__name__)

_CLASSES_MODULE = __name__.rsplit(".", 1)[0] + ".hf_auto"
_AUTO_API = "transformers.models.auto.configuration_auto"
_lock = threading.RLock()
_depth = threading.local()  # per thread: transformers modules being executed
_state = {"done": False}


def _is_transformers(name: str) -> bool:
    return name == "transformers" or name.startswith("transformers.")


def _register() -> None:
    """Import :mod:`zoo.export.hf_auto` (which registers), once; log why it could not."""
    with _lock:
        if _state["done"]:
            return
        _state["done"] = True
        _uninstall()
    try:
        importlib.import_module(_CLASSES_MODULE)
    except ImportError as e:  # e.g. transformers < 5
        _logger.info("zoo's language models are not registered with transformers' Auto classes: %s", e)
    except Exception as e:  # noqa: BLE001 - never break the user's import of transformers
        _logger.warning(
            "zoo could not register its language models with transformers' Auto classes (%s: %s); "
            "call zoo.export.hf_auto.register() to see the error",
            type(e).__name__,
            e,
        )


class _WatchingLoader(importlib.machinery.SourceFileLoader):
    """transformers' own source loader, counting the modules being executed; the outermost one's end may
    register the zoo's classes."""

    def exec_module(self, module) -> None:
        _depth.value = getattr(_depth, "value", 0) + 1
        try:
            super().exec_module(module)
        finally:
            _depth.value -= 1
        if _depth.value == 0 and _AUTO_API in sys.modules and not _state["done"]:
            _register()


class _TransformersFinder(importlib.abc.MetaPathFinder):
    """Finds ``transformers`` modules with the other finders and gives their specs a :class:`_WatchingLoader`."""

    def find_spec(self, name, path, target=None):
        if not _is_transformers(name) or _state["done"]:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if type(spec.loader) is importlib.machinery.SourceFileLoader:
            spec.loader = _WatchingLoader(spec.loader.name, spec.loader.path)
        return spec


def _uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TransformersFinder)]


def installed() -> bool:
    """True while the finder waits for transformers' Auto API."""
    return any(isinstance(f, _TransformersFinder) for f in sys.meta_path)


def install() -> None:
    """Register now if transformers' Auto API is loaded, else when it is (see the module doc). Idempotent."""
    with _lock:
        if _state["done"] or installed():
            return
        if _AUTO_API not in sys.modules:
            sys.meta_path.insert(0, _TransformersFinder())
            return
    _register()
