"""Reading, checking and writing weights: the one place that touches weight files.

Loading never unpickles arbitrary objects: safetensors, or ``torch.load(weights_only=True)`` with one type allowed
besides tensors and plain containers, ``argparse.Namespace`` (the ``args`` timm's ``train.py`` records in its
checkpoints, as timm's own loader allows it). A file is recognised
by its first bytes, not its name, so a Git LFS pointer, a saved web page or a JSON file is named for what it is. A
checkpoint is converted (the family's ``checkpoint_filter_fn``) and checked against the model *before* anything is
copied -- the architecture its file names, keys, shapes, integer tensors where the model has float ones, NaN/inf
values -- so a checkpoint that does not fit raises :class:`CheckpointMismatchError` and leaves the model untouched.
"""

import argparse
import hashlib
import json
import logging
import os
import pickle
import secrets
import struct
import sys
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
    "FOLDER_WEIGHTS",
    "check_architecture",
    "checkpoint_architecture",
    "load_checkpoint",
    "load_state_dict_checked",
    "read_metadata",
    "read_state_dict",
    "read_weight_files",
    "save_state_dict",
    "sha256_file",
]

_logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model", "module")
_EMA_KEYS = ("state_dict_ema", "model_ema")  # timm's train.py writes the first, ConvNeXt-style code the second
# what torch.load may build besides tensors and plain containers: timm's training checkpoints record their ``args``
_SAFE_GLOBALS = [argparse.Namespace]
# wrappers' prefixes on every key: DDP's ``module.``, torch.compile's ``_orig_mod.`` (timm's clean_state_dict)
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth")
# the weight files a model folder may hold, in order of preference (sharded safetensors through their index)
FOLDER_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "model.pth")
_MAX_INDEX_BYTES = 16 << 20  # an index lists tensor names: a few MiB for the largest models


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (missing, corrupt, or not a safe format)."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint whose keys or shapes do not fit the model; nothing was loaded."""


class ChecksumError(CheckpointError):
    """A downloaded file whose sha256 is not the one recorded for it; it was not read, and nothing was deleted."""


_SNIFF_BYTES = 4096
_SAFETENSORS_MAX_HEADER = 100_000_000  # the format's own limit on its JSON header
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def _kind(path: Path) -> str:
    """What a file holds, from its first bytes: safetensors, torch (zip or pickle), or what else it is."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head:
        return "empty"
    # an 8-byte little-endian header length, then the JSON header (a truncated file still reads as one)
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= _SAFETENSORS_MAX_HEADER:
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[257:262] == b"ustar":  # torch.save's zip (or its oldest tar)
        return "torch"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # pickle protocol 2-5
        return "torch"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x89HDF\r\n"):
        return "hdf5"
    if head.startswith(b"\x93NUMPY"):
        return "numpy"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        # a multi-byte character cut by the sniff window is still text
        text = head[: e.start].decode("utf-8") if len(head) == _SNIFF_BYTES and e.start >= len(head) - 3 else None
    if text is None or any(c < " " and c not in "\t\n\r\f" for c in text):
        return "unknown"
    lead = text.lstrip("\ufeff \t\r\n").lower()
    if lead.startswith(_LFS_POINTER.decode()):
        return "lfs"
    if lead.startswith(("<!doctype html", "<html", "<head", "<body")) or "<html" in lead[:1024]:
        return "html"
    if lead.startswith(("{", "[")):
        return "index" if '"weight_map"' in lead else "json"
    return "text"


def _not_weights(path: Path, kind: str) -> CheckpointError:
    """The error for a file that is not weights, saying what it is and what to do."""
    again = "Download or export it again."
    what = {
        "empty": f"is empty (0 bytes): a download or save that did not finish. {again}",
        "lfs": "is a Git LFS pointer, not the weights it stands for: run `git lfs pull` in the repository it "
        "came from (or download the file itself from the Hub).",
        "html": "is a web page (HTML), not weights: the download failed and saved an error, login or redirect "
        "page instead. Download it again, checking the address and your access to it.",
        "index": "is the index of a sharded checkpoint (JSON), not weights: load the folder that holds it and its "
        "shards.",
        "json": "is a JSON file, not weights (a config.json?): pass the weight file (model.safetensors, .pth, "
        ".bin) or the folder that holds both.",
        "gzip": "is gzip-compressed: decompress it first (the weight file inside is what loads).",
        "hdf5": "is an HDF5 file (Keras/TensorFlow weights), which the zoo does not read: use safetensors or a "
        "PyTorch state dict.",
        "numpy": "is a NumPy array file, not a state dict: save the weights as safetensors or with torch.save.",
        "text": "is a text file, not weights.",
    }.get(
        kind,
        f"is not a weight file: neither safetensors nor a PyTorch checkpoint (zip or pickle). Check that "
        f"it is the file you meant. {again}",
    )
    return CheckpointError(f"{path} {what}")


def _weight_file(path: Path) -> Path:
    """``path`` itself, or the weight file a folder holds; an error naming it when there is none."""
    if path.is_dir():
        found = [path / f for f in _WEIGHT_FILES if (path / f).is_file()]
        if not found:
            raise CheckpointError(f"{path} is a folder without weights (looked for {', '.join(_WEIGHT_FILES)})")
        path = found[0]
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():  # a FIFO, a device (/dev/zero), a socket: reading it could block or never end
        raise CheckpointError(
            f"checkpoint {path} is not a regular file (a pipe, device or socket): weights are read from a file or "
            "a folder holding one; save them to a file and pass its path"
        )
    return path


def read_state_dict(path: str | os.PathLike, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` dict from a safetensors/``.pth``/``.pth.tar``/``.bin`` file or a folder.

    The format comes from the file's first bytes (safetensors content loads whatever its suffix); anything else
    (an LFS pointer, a web page, JSON, an empty or unknown file) is a :class:`CheckpointError` saying what it is.
    A training checkpoint's weights are taken as timm's ``load_state_dict`` takes them: with ``use_ema`` (the
    default, as in timm) its ``state_dict_ema`` or ``model_ema`` entry when it has one, else its ``state_dict``,
    ``model`` or ``module`` entry; a ``module.`` (DDP) or ``_orig_mod.`` (torch.compile) prefix is removed. timm's
    ``train.py`` files (``last.pth.tar``, ``model_best.pth.tar``) load so, their ``args`` (an
    ``argparse.Namespace``, the one type allowed besides tensors and plain containers), optimizer state and
    metrics left aside.
    """
    path = _weight_file(Path(path))
    kind = _kind(path)
    if kind == "safetensors":
        obj = _load_safetensors(path)
    elif kind == "torch":
        obj = _load_torch(path)
    else:
        raise _not_weights(path, kind)
    state_dict = _unwrap(obj, use_ema=use_ema)
    if not state_dict or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path} does not contain a state dict of tensors")
    return state_dict


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({e}); it may be truncated or corrupt. "
            "Download or export it again."
        ) from e


def _load_torch(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" not in str(e):  # not a refused object: a broken pickle stream
            raise CheckpointError(
                f"{path} could not be read as a PyTorch checkpoint; it may be truncated or corrupt."
            ) from e
        raise CheckpointError(
            f"{path} holds objects other than tensors, plain containers and argparse.Namespace; the zoo does not "
            f"unpickle arbitrary code. Re-save it as a state dict (or safetensors) from a trusted environment. ({e})"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]}); it may be "
            "truncated or corrupt."
        ) from e


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata a safetensors file (or a folder's) records, e.g. ``{"architecture": ...}``; ``{}`` for other
    formats or a file without any."""
    path = _weight_file(Path(path))
    if _kind(path) != "safetensors":
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({e}); it may be truncated or corrupt."
        ) from e


def read_weight_files(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The weights of a model folder (the first of :data:`FOLDER_WEIGHTS` it holds) or a file, with the safetensors
    metadata they record. A ``model.safetensors.index.json`` loads every shard it lists, files beside it and nowhere
    else (the metadata is the first shard's)."""
    path = Path(path)
    if path.is_dir():
        found = next((path / f for f in FOLDER_WEIGHTS if (path / f).is_file()), None)
        if found is None:
            raise CheckpointError(f"{path} is a folder without weights (looked for {', '.join(FOLDER_WEIGHTS)})")
        path = found
    if not path.name.endswith(".index.json"):
        return read_state_dict(path), read_metadata(path)
    shards = _index_shards(path)
    state_dict = {}
    for shard in shards:
        state_dict.update(read_state_dict(path.parent / shard))
    return state_dict, read_metadata(path.parent / shards[0])


def _index_shards(path: Path) -> list[str]:
    """The shard files a sharded checkpoint's index lists, each a file name beside it; a CheckpointError else."""
    try:
        if path.stat().st_size > _MAX_INDEX_BYTES:
            raise CheckpointError(f"{path} is over {_MAX_INDEX_BYTES >> 20} MiB, which no index is; not read")
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({type(e).__name__}: {str(e)[:200]})") from e
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    listed = list(weight_map.values()) if isinstance(weight_map, dict) else []
    if not listed:
        raise CheckpointError(f"{path} lists no weight files")
    for shard in listed:
        if not isinstance(shard, str) or shard in ("", ".", "..") or Path(shard).name != shard:
            raise CheckpointError(
                f"{path} lists a shard {str(shard)[:80]!r} outside its folder; an index may name only the "
                "files beside it. Nothing was read."
            )
    return sorted(set(listed))


def _unwrap(obj: Any, use_ema: bool = True) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for k in (*(_EMA_KEYS if use_ema else ()), *_WRAPPER_KEYS):
            if isinstance(obj.get(k), dict):
                return _unwrap(obj[k])
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        for prefix in _WRAPPER_PREFIXES * 2:  # either order: torch.compile around DDP, or DDP around it
            if tensors and all(k.startswith(prefix) for k in tensors):
                tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
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
    use_ema: bool = True,
    allow_architecture_mismatch: bool = False,
    allow_nonfinite: bool = False,
) -> dict[str, list]:
    """Load a checkpoint file (any origin the model's family converts) or a state dict into ``model``.

    When ``filter_fn`` is None the family's ``checkpoint_filter_fn`` (from the model's module) is used. As with
    timm's ``load_checkpoint``, a training checkpoint's EMA weights are loaded when it has them; ``use_ema=False``
    takes its plain ``state_dict`` (:func:`read_state_dict`). A file
    whose safetensors metadata names another architecture is refused unless ``allow_architecture_mismatch``; see
    :func:`load_state_dict_checked` for the other checks.
    """
    if filter_fn is None:
        filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if isinstance(path, dict):
        state_dict, where, architecture = dict(path), "the given state_dict", None
    else:
        state_dict, where = read_state_dict(path, use_ema=use_ema), str(path)
        architecture = checkpoint_architecture(path)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return load_state_dict_checked(
        model,
        state_dict,
        where,
        cfg=cfg,
        filter_fn=filter_fn,
        strict=strict,
        adapt_classifier=False,
        architecture=architecture,
        allow_architecture_mismatch=allow_architecture_mismatch,
        allow_nonfinite=allow_nonfinite,
    )


def checkpoint_architecture(path: str | os.PathLike) -> str | None:
    """The architecture a checkpoint names: its safetensors metadata, else the ``config.json`` of its folder (or
    beside a file of a Hub-layout folder); None when neither names one."""
    path = Path(path)
    architecture = read_metadata(path).get("architecture")
    config = path / "config.json" if path.is_dir() else path.with_name("config.json")
    if architecture or not (path.is_dir() or path.name in _WEIGHT_FILES) or not config.is_file():
        return architecture
    try:
        found = json.loads(config.read_text(encoding="utf-8")).get("architecture")
    except (OSError, ValueError, RecursionError, AttributeError) as e:
        raise CheckpointError(f"{config} is not a readable config.json ({type(e).__name__}: {str(e)[:200]})") from e
    return found if isinstance(found, str) else None


def _show(items: list[str], limit: int = 8) -> str:
    return ", ".join(items[:limit]) + (f" ... (+{len(items) - limit} more)" if len(items) > limit else "")


def check_architecture(checkpoint: str | None, model: str | None, where: str, allow: bool = False) -> None:
    """Refuse weights whose file names another architecture than the model's (same shapes load silently else)."""
    if allow or not checkpoint or not model or checkpoint == model:
        return
    raise CheckpointMismatchError(
        f"{where} holds weights for {checkpoint}, not {model}; nothing was loaded. Build {checkpoint} to use them "
        f"(zoo.create_model({checkpoint!r}, ...)), or pass allow_architecture_mismatch=True if you know the two "
        "share a layout and mean to load one into the other."
    )


def _check_values(
    state_dict: dict[str, torch.Tensor], target: dict[str, torch.Tensor], where: str, arch: str, allow_nonfinite: bool
) -> None:
    """Integer tensors for floating-point weights (a quantized file without its scales) and NaN/inf values."""
    integer = [
        f"{k} ({str(v.dtype).replace('torch.', '')})"
        for k, v in state_dict.items()
        if k in target and target[k].is_floating_point() and not (v.is_floating_point() or v.is_complex())
    ]
    if integer:
        raise CheckpointMismatchError(
            f"{where} has {len(integer)} integer tensor(s) where {arch} has floating-point weights: "
            f"{_show(integer)}; nothing was loaded. A quantized checkpoint needs its scales: dequantize it to "
            "floating point first."
        )
    # the reverse: float values where the model holds integer codes (quantized layers) would be cast silently
    floats = [
        f"{k} ({str(v.dtype).replace('torch.', '')})"
        for k, v in state_dict.items()
        if k in target and not target[k].is_floating_point() and v.is_floating_point()
    ]
    if floats:
        raise CheckpointMismatchError(
            f"{where} has {len(floats)} floating-point tensor(s) where {arch} holds integer codes (quantized "
            f"weights): {_show(floats)}; nothing was loaded. Load float weights into the float model and quantize "
            "it after loading."
        )
    _check_integer_range(state_dict, target, where, arch)
    if allow_nonfinite:
        return
    nonfinite = [k for k, v in state_dict.items() if k in target and v.is_floating_point() and not v.isfinite().all()]
    if nonfinite:
        raise CheckpointMismatchError(
            f"{where} has {len(nonfinite)} tensor(s) holding NaN or inf: {_show(nonfinite)}; nothing was loaded. "
            "The weights are corrupt or come from a diverged run; pass allow_nonfinite=True to load them anyway."
        )


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _check_integer_range(
    state_dict: dict[str, torch.Tensor], target: dict[str, torch.Tensor], where: str, arch: str
) -> None:
    """Integer tensors for the model's integer ones: copying into a narrower dtype wraps (int16 300 becomes int8
    44), so the values must fit the model's dtype; 8-bit tensors (quantized layers' codes: int8, or uint8 holding
    two 4-bit codes) must come in that very dtype."""
    bad = []
    for k, v in state_dict.items():
        t = target.get(k)
        if t is None or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            continue
        if v.is_floating_point() or v.is_complex() or v.dtype == t.dtype:
            continue  # floats are refused above; the same dtype copies exactly
        info = torch.iinfo(t.dtype)
        lo, hi = (int(v.min()), int(v.max())) if v.numel() else (0, 0)
        fits = info.min <= lo and hi <= info.max
        if fits and info.bits > 8:
            continue
        values = f"values {lo}..{hi}" + ("" if fits else f", outside {info.min}..{info.max}")
        bad.append(f"{k} ({_dtype(v)}, {values}; the model holds {_dtype(t)})")
    if bad:
        raise CheckpointMismatchError(
            f"{where} has {len(bad)} integer tensor(s) that do not fit {arch}'s integer tensors: {_show(bad)}; "
            "nothing was loaded. Copied as they are, values outside the model's dtype would wrap around (int16 300 "
            "becomes int8 44). 8-bit tensors are a quantized layer's codes (int8; uint8 for int4, two codes per "
            "byte) and must be stored in that dtype with values its bit width holds: the weights were not written "
            "for this quantization (the folder's config.json records it). Quantize the float weights again, or "
            "load the folder the codes came with."
        )


def _quantization_hint(missing: list[str], unexpected: list[str]) -> list[str]:
    """What a key mismatch means when one side has quantized layers (``P.qweight`` + scales) and the other float
    ``P.weight``: quantized weights for a float model, or float weights for a quantized one."""
    codes_in_file = {k[: -len(".qweight")] for k in unexpected if k.endswith(".qweight")}
    codes_in_model = {k[: -len(".qweight")] for k in missing if k.endswith(".qweight")}
    if codes_in_file & {k[: -len(".weight")] for k in missing if k.endswith(".weight")}:
        return [
            "The checkpoint holds quantized layers (integer codes with scales) where this model has float weights: "
            "load the folder it came with (its config.json records the quantization), or build the model with "
            "the same quantize=. Quantized codes are never read as float weights."
        ]
    if codes_in_model & {k[: -len(".weight")] for k in unexpected if k.endswith(".weight")}:
        return [
            "The checkpoint holds float weights where this model has quantized layers: load them into the float "
            "model and quantize after loading (zoo.create_model(..., quantize=...) does both)."
        ]
    return []


def _adapt_input_convs(state_dict: dict[str, torch.Tensor], target: dict[str, torch.Tensor], first_conv) -> None:
    """Checkpoint input convs with another number of input channels than the model's, adapted (timm's
    ``adapt_input_conv``) in ``state_dict``."""
    for name in [first_conv] if isinstance(first_conv, str) else list(first_conv or ()):
        w, t = state_dict.get(name + ".weight"), target.get(name + ".weight")
        if w is not None and t is not None and w.ndim == 4 and w.shape[1] != t.shape[1] and w.shape[0] == t.shape[0]:
            from timm.models import adapt_input_conv

            state_dict[name + ".weight"] = adapt_input_conv(t.shape[1], w)


def _classifier_names(classifier) -> list[str]:
    return [classifier] if isinstance(classifier, str) else list(classifier or ())


def _headless_prefix(classifier: str, target: dict[str, torch.Tensor]) -> str | None:
    """The widest module prefix around ``classifier`` under which the model holds no tensor at all (``head.fc.``
    for CAFormer's ``head.fc.fc2`` when ``num_classes=0`` made the whole MLP head an ``nn.Identity``); None when
    the model has the classifier itself."""
    parts = classifier.split(".")
    found = None
    for depth in range(len(parts), 0, -1):
        prefix = ".".join(parts[:depth]) + "."
        if any(k.startswith(prefix) for k in target):
            break
        found = prefix
    return found


def _drop_other_classifier(
    state_dict: dict[str, torch.Tensor], target: dict[str, torch.Tensor], classifier, where: str
) -> list[str]:
    """Remove from ``state_dict`` the classifiers that do not fit the model's, as timm adapts pretrained weights:
    another number of classes (the model's classifier keeps its fresh init; returned), or none at all
    (``num_classes=0``: the checkpoint's keys under the classifier's modules that the model lacks are dropped, every
    other key stays checked)."""
    reinit = []
    for name in _classifier_names(classifier):
        prefix = _headless_prefix(name, target)
        if prefix is not None:
            dropped = [k for k in state_dict if k.startswith(prefix)]
            for k in dropped:
                del state_dict[k]
            if dropped:
                _logger.info(
                    "%s: the model has no classifier; %d checkpoint key(s) under %s dropped",
                    where,
                    len(dropped),
                    prefix,
                )
            continue
        keys = [name + ".weight", name + ".bias"]
        if any(k in state_dict and (k not in target or target[k].shape != state_dict[k].shape) for k in keys):
            for k in keys:
                state_dict.pop(k, None)
            reinit += [k for k in keys if k in target]
            _logger.info("%s: classifier %s does not match the checkpoint's; it keeps its fresh init", where, name)
    return reinit


def _check_keys(
    state_dict: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    missing: list[str],
    unexpected: list[str],
    where: str,
    arch: str,
    strict: bool,
) -> None:
    """Shape mismatches, and (``strict``) missing or unexpected keys."""
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(target[k].shape)}"
        for k in state_dict
        if k in target and state_dict[k].shape != target[k].shape
    ]
    if mismatched or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_show(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {_show(mismatched)}")
        parts += _quantization_hint(missing, unexpected)
        raise CheckpointMismatchError(
            f"{where} does not fit {arch}; nothing was loaded.\n  "
            + "\n  ".join(parts)
            + "\n  Check that the checkpoint is for this architecture (and num_classes / in_chans)."
        )


def load_state_dict_checked(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    where: str,
    cfg: dict[str, Any] | None = None,
    filter_fn: Callable | None = None,
    strict: bool = True,
    adapt_classifier: bool = True,
    architecture: str | None = None,
    allow_architecture_mismatch: bool = False,
    allow_nonfinite: bool = False,
) -> dict[str, list]:
    """Convert, adapt (classifier, input channels), check, then load. Raises before copying anything.

    Checked, each a :class:`CheckpointMismatchError`: ``architecture`` (what the checkpoint's file names itself)
    against the model's (``allow_architecture_mismatch=True`` loads another architecture's weights of the same
    layout); keys and shapes (``strict=False`` tolerates missing/unexpected keys; quantized layers against float ones are
    named as such); integer tensors where the model has floating-point ones and the reverse (a quantized layer's
    codes); NaN/inf values (``allow_nonfinite=True`` accepts them).
    """
    cfg = cfg or {}
    arch = cfg.get("architecture") or (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    check_architecture(architecture, arch, where, allow_architecture_mismatch)
    arch = arch or type(model).__name__
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    target = model.state_dict()
    _adapt_input_convs(state_dict, target, cfg.get("first_conv"))
    reinit = _drop_other_classifier(state_dict, target, cfg.get("classifier"), where) if adapt_classifier else []
    missing = [k for k in target if k not in state_dict and k not in reinit]
    unexpected = [k for k in state_dict if k not in target]
    _check_keys(state_dict, target, missing, unexpected, where, arch, strict)
    _check_values(state_dict, target, where, arch, allow_nonfinite)
    loadable = {k: v for k, v in state_dict.items() if k in target}
    if any(t.is_meta for t in target.values()):
        _assign_to_meta_model(model, loadable, target, where)
    else:
        model.load_state_dict(loadable, strict=False)
    return {"missing_keys": missing, "unexpected_keys": unexpected, "reinitialized": reinit}


def _assign_to_meta_model(
    model: nn.Module, state_dict: dict[str, torch.Tensor], target: dict[str, torch.Tensor], where: str
) -> None:
    """Weights into a model built on the meta device (``create_model(..., device="meta")``): the checkpoint's
    tensors become the model's (``load_state_dict(assign=True)``, each cast to the dtype the model was built in),
    with no second copy; the model lives where the weights were read. What the checkpoint does not hold is made
    there too: a fresh classifier is initialised as a fresh build's is (its modules' ``reset_parameters`` and the
    model's ``_init_weights``), non-persistent buffers by ``init_non_persistent_buffers`` (timm's protocol)."""
    cast = {
        k: v.to(dtype=target[k].dtype) if v.is_floating_point() and target[k].is_floating_point() else v
        for k, v in state_dict.items()
    }
    device = next((v.device for v in cast.values() if not v.is_meta), torch.device("cpu"))
    model.load_state_dict(cast, strict=False, assign=True)
    left = _meta_tensors(model)
    if not left:
        return
    _materialize(model, left, device)
    still = _meta_tensors(model)
    if still:
        raise CheckpointMismatchError(
            f"{where} was loaded into a model built on the meta device, but {len(still)} tensor(s) it does not hold "
            f"cannot be initialised outside a real build: {_show(sorted(still))}. Build the model on a real device "
            "(device='cpu' or an accelerator) to load these weights."
        )


def _meta_tensors(model: nn.Module) -> dict[str, tuple[nn.Module, str, bool]]:
    """``{qualified name: (owner module, attribute, is_parameter)}`` of the tensors still on the meta device."""
    found = {}
    for module_name, module in model.named_modules():
        for kind, tensors in ((True, module._parameters), (False, module._buffers)):
            for attr, t in tensors.items():
                if t is not None and t.is_meta:
                    found[f"{module_name}.{attr}" if module_name else attr] = (module, attr, kind)
    return found


def _materialize(model: nn.Module, left: dict[str, tuple[nn.Module, str, bool]], device: torch.device) -> None:
    """The meta tensors in ``left`` made on ``device`` and initialised: a module whose own tensors were all left is
    re-initialised whole; a module's non-persistent buffers through its ``init_non_persistent_buffers``. Anything
    else is left on the meta device (the caller refuses it)."""
    by_module: dict[int, tuple[nn.Module, list[tuple[str, bool]]]] = {}
    for module, attr, is_param in left.values():
        by_module.setdefault(id(module), (module, []))[1].append((attr, is_param))
    init_fn = getattr(model, "_init_weights", None)
    with torch.no_grad():
        for module, attrs in by_module.values():
            own = [a for a, t in (*module._parameters.items(), *module._buffers.items()) if t is not None]
            persistent = [a for a, p in attrs if p or a not in module._non_persistent_buffers_set]
            whole = len(attrs) == len(own)
            resettable = callable(getattr(module, "reset_parameters", None))
            if persistent and not (whole and resettable):
                continue  # part of a module's weights: nothing here knows how its build made them
            if not persistent and not callable(getattr(module, "init_non_persistent_buffers", None)):
                continue
            for attr, is_param in attrs:
                t = module._parameters[attr] if is_param else module._buffers[attr]
                fresh = torch.empty_like(t, device=device)
                if is_param:
                    module._parameters[attr] = nn.Parameter(fresh, requires_grad=t.requires_grad)
                else:
                    module._buffers[attr] = fresh
            if persistent:
                module.reset_parameters()
                if callable(init_fn):
                    init_fn(module)
            else:
                module.init_non_persistent_buffers()


def save_state_dict(
    model_or_state_dict: nn.Module | dict[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write weights as safetensors, atomically (temp file + rename). Shared tensors are stored once each key.

    The file gets the mode any new file gets under the umask, and its metadata is written in sorted key order,
    so identical weights and metadata give identical bytes (and sha256).
    """
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
    tmp = _new_temp_file(path)
    mode = os.stat(tmp).st_mode & 0o777  # what the umask gives a new file
    try:
        save_file(tensors, tmp, metadata={"format": "pt", **(metadata or {})})
        os.chmod(tmp, mode)  # save_file replaces the file with one of mode 0600
        _sort_metadata(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _new_temp_file(path: Path) -> str:
    """A new empty ``<name>.<random>.tmp`` beside ``path``, created with the umask's mode (mkstemp's is 0600)."""
    while True:
        tmp = str(path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp"))
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def _sort_metadata(path: str) -> None:
    """Rewrite a safetensors header with its ``__metadata__`` keys sorted (safetensors writes them in hash order).

    Only the order changes, so the header keeps its length (it is padded with spaces, as the format allows)."""
    with open(path, "r+b") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        if len(header.get("__metadata__") or {}) < 2:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > length:  # cannot happen for a reordering; never corrupt the file over it
            return
        f.seek(8)
        f.write(text.ljust(length, b" "))
