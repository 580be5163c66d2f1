"""Reading, checking and writing weights: the one place that touches weight files.

Loading never unpickles arbitrary objects: safetensors, or ``torch.load(weights_only=True)``. A checkpoint is
converted (the family's ``checkpoint_filter_fn``) and checked against the model *before* anything is copied, so
a checkpoint that does not fit raises :class:`CheckpointMismatchError` and leaves the model untouched.
"""

import hashlib
import logging
import os
import pickle
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "ChecksumError",
    "load_checkpoint",
    "load_state_dict_checked",
    "read_state_dict",
    "save_state_dict",
    "sha256_file",
]

_logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model", "module")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (missing, corrupt, or not a safe format)."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint whose keys or shapes do not fit the model; nothing was loaded."""


class ChecksumError(CheckpointError):
    """A downloaded file whose sha256 is not the one recorded for it; it was not read, and nothing was deleted."""


def read_state_dict(path: str | os.PathLike, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` dict from a safetensors/``.pth``/``.pth.tar``/``.bin`` file or a folder.

    ``{"model" | "state_dict": ...}`` wrappers and a ``module.`` prefix (DDP) are removed; with ``use_ema`` a
    ``model_ema``/``state_dict_ema`` entry is preferred when present.
    """
    path = Path(path)
    if path.is_dir():
        found = [path / f for f in _WEIGHT_FILES if (path / f).is_file()]
        if not found:
            raise CheckpointError(f"{path} is a folder without weights (looked for {', '.join(_WEIGHT_FILES)})")
        path = found[0]
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({e}); it may be truncated or corrupt. "
                "Download or export it again."
            ) from e
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(
                f"{path} holds objects other than tensors and plain containers; the zoo does not unpickle arbitrary "
                f"code. Re-save it as a state dict (or safetensors) from a trusted environment. ({e})"
            ) from e
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
            raise CheckpointError(
                f"{path} could not be read as a PyTorch checkpoint ({e}); it may be truncated or corrupt."
            ) from e
    state_dict = _unwrap(obj, use_ema=use_ema)
    if not state_dict or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path} does not contain a state dict of tensors")
    return state_dict


def _unwrap(obj: Any, use_ema: bool = False) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        if use_ema:
            for k in ("model_ema", "state_dict_ema"):
                if isinstance(obj.get(k), dict):
                    return _unwrap(obj[k])
        for k in _WRAPPER_KEYS:
            if isinstance(obj.get(k), dict):
                return _unwrap(obj[k])
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and all(k.startswith("module.") for k in tensors):
            tensors = {k[len("module.") :]: v for k, v in tensors.items()}
        return tensors
    return {}


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_checkpoint(
    model: nn.Module,
    path: str | os.PathLike | dict[str, torch.Tensor],
    filter_fn: Callable | None = None,
    strict: bool = True,
    use_ema: bool = False,
) -> dict[str, list]:
    """Load a checkpoint file (any origin the model's family converts) or a state dict into ``model``.

    When ``filter_fn`` is None the family's ``checkpoint_filter_fn`` (from the model's module) is used.
    """
    if filter_fn is None:
        filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if isinstance(path, dict):
        state_dict, where = dict(path), "the given state_dict"
    else:
        state_dict, where = read_state_dict(path, use_ema=use_ema), str(path)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return load_state_dict_checked(
        model, state_dict, where, cfg=cfg, filter_fn=filter_fn, strict=strict, adapt_classifier=False
    )


def load_state_dict_checked(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    where: str,
    cfg: dict[str, Any] | None = None,
    filter_fn: Callable | None = None,
    strict: bool = True,
    adapt_classifier: bool = True,
) -> dict[str, list]:
    """Convert, adapt (classifier, input channels), check, then load. Raises before copying anything."""
    cfg = cfg or {}
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    target = model.state_dict()
    reinit = []

    first_conv = cfg.get("first_conv")
    for name in [first_conv] if isinstance(first_conv, str) else list(first_conv or ()):
        w, t = state_dict.get(name + ".weight"), target.get(name + ".weight")
        if w is not None and t is not None and w.ndim == 4 and w.shape[1] != t.shape[1] and w.shape[0] == t.shape[0]:
            from timm.models import adapt_input_conv

            state_dict[name + ".weight"] = adapt_input_conv(t.shape[1], w)

    classifier = cfg.get("classifier")
    if adapt_classifier and classifier:
        for name in [classifier] if isinstance(classifier, str) else list(classifier):
            keys = [name + ".weight", name + ".bias"]
            if any(k in state_dict and (k not in target or target[k].shape != state_dict[k].shape) for k in keys):
                for k in keys:
                    state_dict.pop(k, None)
                reinit += [k for k in keys if k in target]
                _logger.info("%s: classifier %s does not match the checkpoint's; it keeps its fresh init", where, name)

    missing = [k for k in target if k not in state_dict and k not in reinit]
    unexpected = [k for k in state_dict if k not in target]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(target[k].shape)}"
        for k in state_dict
        if k in target and state_dict[k].shape != target[k].shape
    ]
    if mismatched or (strict and (missing or unexpected)):

        def show(items):
            return ", ".join(items[:8]) + (f" ... (+{len(items) - 8} more)" if len(items) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {show(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {show(mismatched)}")
        arch = cfg.get("architecture") or type(model).__name__
        raise CheckpointMismatchError(
            f"{where} does not fit {arch}; nothing was loaded.\n  "
            + "\n  ".join(parts)
            + "\n  Check that the checkpoint is for this architecture (and num_classes / in_chans)."
        )
    model.load_state_dict({k: v for k, v in state_dict.items() if k in target}, strict=False)
    return {"missing_keys": missing, "unexpected_keys": unexpected, "reinitialized": reinit}


def save_state_dict(
    model_or_state_dict: nn.Module | dict[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write weights as safetensors, atomically (temp file + rename). Shared tensors are stored once each key."""
    from safetensors.torch import save_file

    sd = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict
    seen, tensors = set(), {}
    for k, v in sd.items():
        v = v.detach().cpu().contiguous()
        ptr = (v.data_ptr(), v.numel())
        tensors[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt", **(metadata or {})})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
