"""``model.save_pretrained(folder)`` and ``model.push_to_hub(repo)`` on every zoo model.

The names are transformers' and huggingface_hub's. What they do is :mod:`zoo.publish`'s (a folder with the weights,
``config.json`` and a model card, which ``zoo.create_model(folder, pretrained=True)`` and
``zoo.create_model("hf-hub:" + repo, pretrained=True)`` load); that module sits above the models, so it registers
its two functions here when it is imported (``import zoo`` imports it).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["HubMixin", "register_hub_functions", "write_file"]

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
    """``save_pretrained`` / ``push_to_hub`` for a zoo model (mixed into the vision backbones and the decoders).

    One signature for every family: ``save_pretrained(folder, *, format="auto", model_name=None, **kwargs)``. A
    family changes what is written through two hooks, never by overriding the method: its module's
    ``save_pretrained(model, folder, format=..., model_name=...)`` writes its own weights and ``config.json``
    (:mod:`zoo.publish` calls it), and :meth:`_save_plain` (a language model's checkpoint folder without a card).
    """

    def save_pretrained(
        self, save_directory: str | os.PathLike, *, format: str = "auto", model_name: str | None = None, **kwargs
    ) -> Path:
        """Write a folder that ``zoo.create_model(save_directory, pretrained=True)`` loads: ``model.safetensors``,
        ``config.json`` (the architecture and the arguments it was built with) and a model card ``README.md``.

        Args:
            save_directory: the folder to write.
            format: how the weights and ``config.json`` are written. ``"auto"`` for every model (timm's schema for
                an image classifier, the family's own format for a language model); a language model also takes its
                family's names (MobileLLM: ``"transformers"``, a ``LlamaForCausalLM`` folder, or ``"zoo"``; the
                Recursive LMs: ``"zoo"``).
            model_name: the registry name written into ``config.json`` (default: the one the model was built as).
            **kwargs: :func:`zoo.publish.export_pretrained`'s (``metrics``, ``recipe``, ``data_config``,
                ``tokenizer_file``, ...); ``latency_runs`` (the card's CPU latency) defaults to 0 here: not measured.

        A family with a checkpoint folder of its own (MobileLLM: weights, ``config.json`` and
        ``generation_config.json``, no card) writes it when no keyword argument beyond ``format`` and
        ``model_name`` is given (:meth:`_save_plain`); otherwise the folder is the publishable one, with its card.
        """
        if not kwargs:
            folder = self._save_plain(save_directory, format=format, model_name=model_name)
            if folder is not None:
                return folder
        kwargs.setdefault("latency_runs", 0)
        save = _function("save", "save_pretrained")
        return save(self, save_directory, format=format, model_name=model_name, **kwargs)

    def _save_plain(self, save_directory: str | os.PathLike, *, format: str, model_name: str | None) -> Path | None:
        """The family's checkpoint folder without a card, written by :meth:`save_pretrained` when it is given nothing
        to publish; None (the default): the family has none, and the publishable folder is written instead."""
        return None

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Write the folder :meth:`save_pretrained` writes and upload it to the Hub repo ``repo_id`` (created when
        missing); the repo's URL. Keyword arguments are :func:`zoo.publish.push_to_hub`'s (``format``, ``private``,
        ``token``, ``commit_message``, ``metrics``, ...)."""
        kwargs.setdefault("latency_runs", 0)
        return _function("push", "push_to_hub")(self, repo_id, **kwargs)


def write_file(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``path`` whole or not at all, never through a link: a new file beside it (the umask's mode), then
    ``os.replace``, which replaces a symbolic link at ``path`` itself and leaves what it pointed to (a Hub cache
    blob, a DVC or git-annex store file) as it was. For every small file a save writes next to its weights."""
    path = Path(path)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
