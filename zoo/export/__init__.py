"""Deployment artefacts of zoo models: ``torch.export`` programs, ONNX files, the language models' compiled
prefill + cached decode, and GGUF files for llama.cpp. :func:`export` writes one with the files a deployment
needs beside it; ``zoo export`` is the command. Importing it registers ``generate(..., backend="llama.cpp")``
(:mod:`zoo.export.llama_backend`).

``zoo.export`` is this package *and* callable as :func:`export` (as ``zoo.profile`` is): ``zoo.export(model,
"onnx")`` and ``from zoo.export import ExportError`` both work.
"""

import sys
import types

from . import llama_backend  # noqa: F401  (registers generate(..., backend="llama.cpp"))
from .core import FORMATS, ExportError, ExportResult, ExportSpec, export, load_source

__all__ = ["FORMATS", "ExportError", "ExportResult", "ExportSpec", "export", "load_source"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs) -> ExportResult:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
