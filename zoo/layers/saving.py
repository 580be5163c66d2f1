"""``model.save_pretrained(folder)`` and ``model.push_to_hub(repo)`` on every zoo model.

The names are transformers' and huggingface_hub's. What they do is :mod:`zoo.publish`'s (a folder with the weights,
``config.json`` and a model card, which ``zoo.create_model(folder, pretrained=True)`` and
``zoo.create_model("hf-hub:" + repo, pretrained=True)`` load); that module sits above the models, so it registers
its two functions here when it is imported (``import zoo`` imports it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["HubMixin", "register_hub_functions"]

_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def register_hub_functions(save: Callable[..., Path], push: Callable[..., str]) -> None:
    """Set what :meth:`HubMixin.save_pretrained` and :meth:`HubMixin.push_to_hub` call: ``save(model, folder,
    **kwargs)`` and ``push(model, repo_id, **kwargs)``."""
    _FUNCTIONS.update(save=save, push=push)


def _function(name: str, method: str) -> Callable[..., Any]:
    if name not in _FUNCTIONS:
        raise RuntimeError(f"model.{method} needs zoo.publish: run `import zoo` first")
    return _FUNCTIONS[name]


class HubMixin:
    """``save_pretrained`` / ``push_to_hub`` for a zoo model (mixed into the vision backbones and the decoders)."""

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> Path:
        """Write a folder that ``zoo.create_model(save_directory, pretrained=True)`` loads: ``model.safetensors``,
        ``config.json`` (the architecture and the arguments it was built with) and a model card ``README.md``.

        Keyword arguments are :func:`zoo.publish.export_pretrained`'s (``metrics``, ``recipe``, ``data_config``,
        ``tokenizer_file``, ...); ``latency_runs`` (the card's CPU latency) defaults to 0 here: not measured.
        """
        kwargs.setdefault("latency_runs", 0)
        return _function("save", "save_pretrained")(self, save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Write the folder :meth:`save_pretrained` writes and upload it to the Hub repo ``repo_id`` (created when
        missing); the repo's URL. Keyword arguments are :func:`zoo.publish.push_to_hub`'s (``private``, ``token``,
        ``commit_message``, ``metrics``, ...)."""
        kwargs.setdefault("latency_runs", 0)
        return _function("push", "push_to_hub")(self, repo_id, **kwargs)
