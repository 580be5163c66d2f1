"""Deployment artefacts of zoo models: ``torch.export`` programs, ONNX files, the language models' compiled
prefill + cached decode, and GGUF files for llama.cpp. :func:`export` writes one with the files a deployment
needs beside it; ``zoo export`` is the command."""

from .core import FORMATS, ExportError, ExportResult, ExportSpec, export, load_source

__all__ = ["FORMATS", "ExportError", "ExportResult", "ExportSpec", "export", "load_source"]
