"""What a weight source holds, read once: :func:`read_weights` returns the :class:`Weights` record that
``create_model`` acts on, for vision and language models alike.

A source is a pretrained cfg's (``state_dict``; ``file``, a file or a folder; ``hf_hub_id``, downloaded and
verified) or a path (``checkpoint_path=``). The record holds the state dict, where it came from, the
``config.json`` that describes it (a folder's, one beside a Hub-layout weight file, the Hub repo's), the
architecture its file names and its safetensors metadata; given the registry entry it is for, the weights of
another architecture are refused and the architecture arguments they record are read and checked
(:mod:`zoo.config_rules`). Nothing else is read: a file that came with the weights (a language model's
``generation_config.json``) is fetched only when :meth:`Weights.beside` is asked for it (:mod:`zoo.lm_loading`).
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config_rules import check_arg_value, check_model_args, config_overlay
from .hub import CONFIG_NAME, WEIGHTS_NAME, download, read_config_file, read_hub_config
from .registry import ModelEntry
from .run_layout import export_folder, is_run_folder
from .weights import FOLDER_WEIGHTS, CheckpointError, check_architecture, read_weight_files

__all__ = ["Weights", "model_folder", "read_weights"]


@dataclass
class Weights:
    """A state dict read from its source, where it came from, and what describes it."""

    state_dict: dict[str, torch.Tensor]
    where: str
    config: dict[str, Any] | None = None  # the config.json that describes the weights
    config_where: str | None = None  # where the config.json came from, for messages
    architecture: str | None = None  # what the weight file names itself (safetensors metadata)
    metadata: dict[str, str] | None = None  # the weight file's safetensors metadata (its quantization record)
    args: dict[str, Any] = field(default_factory=dict)  # the architecture arguments recorded (given an entry)
    folder: Path | None = None  # the folder the weights came in (files beside them)
    repo: str | None = None  # the Hub repo they came from
    cache_dir: str | os.PathLike | None = None

    @property
    def described_by(self) -> str:
        """The file that recorded :attr:`args`, for messages."""
        return self.config_where or self.where

    def beside(self, name: str) -> Path | None:
        """The file ``name`` that came with the weights (in their folder, or in their Hub repo: downloaded); None
        when there is none."""
        if self.folder is not None:
            path = self.folder / name
            return path if path.is_file() else None
        if self.repo is not None:
            try:
                return Path(download(self.repo, name, cache_dir=self.cache_dir))
            except CheckpointError:  # most repos of bare weights have none
                return None
        return None


def read_weights(
    source: dict[str, Any] | str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    config: dict[str, Any] | None = None,
    entry: ModelEntry | None = None,
    allow_architecture_mismatch: bool = False,
) -> Weights:
    """The weights a source holds: a pretrained cfg's ``state_dict``, ``file`` (file or folder) or ``hf_hub_id``
    (verified), or a path. ``config`` is the ``config.json`` already read for a Hub repo (else it is downloaded when
    the repo has one). With ``entry``, weights whose file or config.json names another architecture are refused
    (unless ``allow_architecture_mismatch``) and ``args`` holds the architecture arguments they record."""
    if isinstance(source, dict):
        weights = _read_cfg(source, cache_dir, config)
    else:
        weights = _read_local(source)
    if entry is not None:
        for named in (weights.architecture, (weights.config or {}).get("architecture")):
            check_architecture(named, entry.name, weights.where, allow_architecture_mismatch)
        weights.args = _recorded_args(entry, weights)
    return weights


def model_folder(path: Path) -> Path | None:
    """The folder holding ``config.json`` for a model folder or a training run folder (its ``export/``)."""
    if (path / CONFIG_NAME).is_file():
        return path
    if is_run_folder(path) and (export_folder(path) / CONFIG_NAME).is_file():
        return export_folder(path)
    return None


def _read_cfg(cfg: dict[str, Any], cache_dir: str | os.PathLike | None, config: dict[str, Any] | None) -> Weights:
    arch = cfg.get("architecture", "this model")
    if cfg.get("state_dict") is not None:
        return Weights(dict(cfg["state_dict"]), "the given state_dict")
    if cfg.get("file"):
        return _read_local(cfg["file"])
    if cfg.get("hf_hub_id"):
        repo, filename = cfg["hf_hub_id"], cfg.get("hf_hub_filename") or WEIGHTS_NAME
        path = Path(download(repo, filename, sha256=cfg.get("hf_hub_sha256"), cache_dir=cache_dir))
        if config is None:
            try:
                config = read_hub_config(repo, cache_dir)
            except CheckpointError:  # a repo of bare weights: the registered architecture describes them
                config = None
        state_dict, meta = read_weight_files(path)
        where, config_where = f"hf-hub:{repo}/{filename}", f"hf-hub:{repo}/{CONFIG_NAME}"
        arch_named = meta.get("architecture")
        return Weights(state_dict, where, config, config_where, arch_named, meta, repo=repo, cache_dir=cache_dir)
    if cfg.get("url"):
        raise CheckpointError(
            f"{arch}: weights at {cfg['url']} must be downloaded by hand and passed "
            f"with pretrained_cfg_overlay={{'file': PATH}}"
        )
    raise CheckpointError(
        f"no pretrained weights are known for {arch}; use pretrained=False, "
        "or pass pretrained_cfg_overlay={'file': PATH}"
    )


def _read_local(location: str | os.PathLike) -> Weights:
    """A local file or folder; a folder's ``config.json`` (or one beside a Hub-layout weight file) describes it."""
    path = Path(location)
    if path.is_dir():
        path = folder = model_folder(path) or path
    else:
        folder = path.parent if path.name in FOLDER_WEIGHTS else None
    config_path = folder / CONFIG_NAME if folder is not None else None
    config = read_config_file(config_path, str(config_path)) if config_path and config_path.is_file() else None
    state_dict, meta = read_weight_files(path)
    config_where = str(config_path) if config else None
    return Weights(state_dict, str(location), config, config_where, meta.get("architecture"), meta, folder=folder)


def _recorded_args(entry: ModelEntry, weights: Weights) -> dict[str, Any]:
    """The architecture arguments the weights' ``config.json`` (or the weights themselves) describe, checked: a
    key that is not an architecture's (files, folders, URLs, devices, loading) is refused by name, sizes must be
    plausible, and training-only options are the caller's (skipped)."""
    config = weights.config or {}
    where = weights.described_by
    config_overlay(config, where)  # the whole config.json is checked, however its folder or repo was reached
    args = check_model_args(config.get("model_args") or {}, where)
    if entry.model_args_fn is not None:
        return check_model_args(dict(entry.model_args_fn(weights.config, weights.state_dict)), where, "config")
    if config.get("architecture") not in (None, entry.name):
        return {}  # a folder of another architecture (loaded on purpose): its arguments do not apply
    if config.get("num_classes") is not None:
        check_arg_value(where, "num_classes", "num_classes", config["num_classes"])
        args.setdefault("num_classes", config["num_classes"])
    return args
