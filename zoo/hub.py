"""Reading, checking and writing weights; Hub downloads and publishing.

Loading never unpickles arbitrary objects: safetensors, or ``torch.load(weights_only=True)``. A checkpoint is
converted (the family's ``checkpoint_filter_fn``) and checked against the model *before* anything is copied, so
a checkpoint that does not fit raises :class:`CheckpointMismatchError` and leaves the model untouched.

Downloads go through ``huggingface_hub`` (its cache, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``cache_dir``) and are
verified before they are read: against the sha256 the publisher recorded (``hf_hub_sha256`` in the pretrained cfg;
``config.json`` of a zoo-published repo carries it), else against the sha256 the Hub gives as the file's ETag.

Publishing (:func:`export_pretrained`, :func:`publish_run`, :func:`push_to_hub`, ``zoo publish``) writes
``model.safetensors``, ``config.json`` (timm's schema for vision models, the model's own config for language
models) and a model card (``README.md``), then uploads the folder with ``HfApi.upload_folder``.
"""
import copy
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import socket
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import urlparse

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "ChecksumError",
    "PublishError",
    "download",
    "export_pretrained",
    "export_run",
    "load_checkpoint",
    "load_pretrained",
    "load_state_dict_checked",
    "publish_run",
    "push_to_hub",
    "read_state_dict",
    "resolve_hub_model",
    "save_state_dict",
    "sha256_file",
    "upload_folder",
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


class PublishError(RuntimeError):
    """Exporting or uploading to the Hub failed; the message says why and what to do."""


def read_state_dict(path: Union[str, os.PathLike], use_ema: bool = False) -> Dict[str, torch.Tensor]:
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
            raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it may be truncated or corrupt. "
                                  "Download or export it again.") from e
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(
                f"{path} holds objects other than tensors and plain containers; the zoo does not unpickle arbitrary "
                f"code. Re-save it as a state dict (or safetensors) from a trusted environment. ({e})") from e
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
            raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint ({e}); "
                                  "it may be truncated or corrupt.") from e
    state_dict = _unwrap(obj, use_ema=use_ema)
    if not state_dict or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path} does not contain a state dict of tensors")
    return state_dict


def _unwrap(obj: Any, use_ema: bool = False) -> Dict[str, torch.Tensor]:
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
            tensors = {k[len("module."):]: v for k, v in tensors.items()}
        return tensors
    return {}


def _source(cfg: Dict[str, Any]) -> Tuple[str, Any]:
    if cfg.get("state_dict") is not None:
        return "state_dict", cfg["state_dict"]
    if cfg.get("file"):
        return "file", cfg["file"]
    if cfg.get("hf_hub_id"):
        return "hf-hub", (cfg["hf_hub_id"], cfg.get("hf_hub_filename") or "model.safetensors")
    if cfg.get("url"):
        return "url", cfg["url"]
    return "", None


def _endpoint_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Quick TCP check of the Hub endpoint (skipped behind a proxy, where the client must decide)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Union[str, os.PathLike], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _offline_mode() -> bool:
    """``HF_HUB_OFFLINE``: huggingface_hub's setting (read when it was imported) or the environment now."""
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _cached_etag(path: str) -> Optional[str]:
    """The ETag a cached Hub file was stored under (huggingface_hub names blobs after it), if it is a sha256."""
    blob = Path(os.path.realpath(path))
    if blob.parent.name == "blobs" and _SHA256.fullmatch(blob.name):
        return blob.name
    return None


def _verify_sha256(path: str, expected: Optional[str], where: str, source: str) -> None:
    if not expected:
        return
    expected = str(expected).lower()
    if not _SHA256.fullmatch(expected):
        raise CheckpointError(f"{where}: the recorded sha256 {expected!r} ({source}) is not a 64-digit hex digest")
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"{where} failed its checksum: sha256 {actual}, but {source} says {expected}. Nothing was loaded, and "
            f"nothing was deleted; the file is at {path}. If the publisher has replaced it on purpose, delete that "
            f"file (or the repo's folder in the cache) to download it again; otherwise tell the publisher.")


def download(repo_id: str, filename: str, *, sha256: Optional[str] = None,
             cache_dir: Optional[Union[str, os.PathLike]] = None, revision: Optional[str] = None) -> str:
    """Fetch ``filename`` from Hub repo ``repo_id`` into the Hugging Face cache and verify it; returns its path.

    ``HF_ENDPOINT`` picks the Hub, ``cache_dir`` the cache (default: huggingface_hub's), ``HF_HUB_OFFLINE=1``
    uses the cache only. When the endpoint cannot be reached the cached copy is used if there is one; otherwise
    the error says so at once (the client alone would retry for ~25 s first). The file's sha256 must equal
    ``sha256`` when given, else the sha256 the Hub gave as its ETag (LFS files): a mismatch raises
    :class:`ChecksumError` and deletes nothing.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = constants.ENDPOINT
    cache = str(cache_dir or constants.HF_HUB_CACHE)
    where = f"hf-hub:{repo_id}/{filename}"
    offline_mode = _offline_mode()
    offline = offline_mode or not _endpoint_reachable(endpoint)
    try:
        path = hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=offline)
    except LocalEntryNotFoundError as e:  # (a subclass of EntryNotFoundError: caught first)
        if offline_mode:
            raise CheckpointError(
                f"offline mode is on (HF_HUB_OFFLINE=1) and {where} is not in the local cache {cache}. Unset "
                f"HF_HUB_OFFLINE to download it from {endpoint}, or pass cache_dir= for a cache that holds it.") from e
        raise CheckpointError(
            f"could not reach the Hub at {endpoint} to fetch {where}, and it is not in the local cache {cache}. "
            f"Connect, set HF_ENDPOINT to a reachable Hub or mirror (HF_HUB_OFFLINE=1 uses cached files only), "
            f"or pass pretrained_cfg_overlay={{'file': PATH}}.") from e
    except RevisionNotFoundError as e:
        raise CheckpointError(f"the Hub at {endpoint} has no revision {revision or 'main'!r} of {repo_id}") from e
    except RepositoryNotFoundError as e:
        raise CheckpointError(
            f"the Hub has no {filename} in {repo_id}: there is no repo {repo_id} at {endpoint} (if it is private "
            f"or gated, log in with `hf auth login` or set HF_TOKEN)") from e
    except EntryNotFoundError as e:
        raise CheckpointError(f"the Hub has no {filename} in {repo_id} (the repo exists at {endpoint})") from e
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        raise CheckpointError(f"the Hub at {endpoint} refused {where} (HTTP {status}): {str(e).splitlines()[0]}") from e
    if sha256:
        _verify_sha256(path, sha256, where, "the sha256 recorded for it (hf_hub_sha256)")
    else:
        _verify_sha256(path, _cached_etag(path), where, "the Hub's ETag for it")
    return path


def load_pretrained(model: nn.Module, cfg: Dict[str, Any], filter_fn: Optional[Callable] = None,
                    strict: bool = True, cache_dir: Optional[Union[str, os.PathLike]] = None) -> Dict[str, list]:
    """Load the weights named by a pretrained cfg (``state_dict``, ``file``, ``hf_hub_id`` or ``url``).

    Hub weights are verified (``hf_hub_sha256`` in ``cfg``, else the Hub's ETag) before they are read;
    ``cache_dir`` picks the Hugging Face cache.
    """
    kind, loc = _source(cfg)
    if kind == "state_dict":
        state_dict, where = dict(loc), "the given state_dict"
    elif kind == "file":
        state_dict, where = read_state_dict(loc), str(loc)
    elif kind == "hf-hub":
        path = download(*loc, sha256=cfg.get("hf_hub_sha256"), cache_dir=cache_dir)
        state_dict, where = read_state_dict(path), f"hf-hub:{loc[0]}/{loc[1]}"
    elif kind == "url":
        raise CheckpointError(f"{cfg.get('architecture')}: weights at {loc} must be downloaded by hand and passed "
                              f"with pretrained_cfg_overlay={{'file': PATH}}")
    else:
        raise CheckpointError(f"no pretrained weights are known for {cfg.get('architecture', 'this model')}; "
                              "use pretrained=False, or pass pretrained_cfg_overlay={'file': PATH}")
    return load_state_dict_checked(model, state_dict, where, cfg=cfg, filter_fn=filter_fn, strict=strict)


def load_checkpoint(model: nn.Module, path: Union[str, os.PathLike, Dict[str, torch.Tensor]],
                    filter_fn: Optional[Callable] = None, strict: bool = True, use_ema: bool = False) -> Dict[str, list]:
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
    return load_state_dict_checked(model, state_dict, where, cfg=cfg, filter_fn=filter_fn, strict=strict,
                                   adapt_classifier=False)


def load_state_dict_checked(model: nn.Module, state_dict: Dict[str, torch.Tensor], where: str,
                            cfg: Optional[Dict[str, Any]] = None, filter_fn: Optional[Callable] = None,
                            strict: bool = True, adapt_classifier: bool = True) -> Dict[str, list]:
    """Convert, adapt (classifier, input channels), check, then load. Raises before copying anything."""
    cfg = cfg or {}
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    target = model.state_dict()
    reinit = []

    first_conv = cfg.get("first_conv")
    for name in ([first_conv] if isinstance(first_conv, str) else list(first_conv or ())):
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
    mismatched = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(target[k].shape)}"
                  for k in state_dict if k in target and state_dict[k].shape != target[k].shape]
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
            f"{where} does not fit {arch}; nothing was loaded.\n  " + "\n  ".join(parts) +
            "\n  Check that the checkpoint is for this architecture (and num_classes / in_chans).")
    model.load_state_dict({k: v for k, v in state_dict.items() if k in target}, strict=False)
    return {"missing_keys": missing, "unexpected_keys": unexpected, "reinitialized": reinit}


def save_state_dict(model_or_state_dict: Union[nn.Module, Dict[str, torch.Tensor]], path: Union[str, os.PathLike],
                    metadata: Optional[Dict[str, str]] = None) -> Path:
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


def resolve_hub_model(repo_id: str, cache_dir: Optional[Union[str, os.PathLike]] = None
                      ) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
    """Read a Hub repo's ``config.json`` (zoo or timm format) -> (architecture, pretrained cfg overlay, model args).

    The overlay names the repo's ``model.safetensors`` and carries its recorded sha256 (``hf_hub_sha256``);
    the model args rebuild the published architecture (``num_classes``, ``in_chans``, sizes, ...).
    """
    from timm.models import PretrainedCfg

    from .registry import list_models
    cfg_path = download(repo_id, "config.json", cache_dir=cache_dir)
    try:
        with open(cfg_path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"hf-hub:{repo_id}/config.json is not valid JSON ({e})") from e
    arch = config.get("architecture") if isinstance(config, dict) else None
    if not arch:
        raise CheckpointError(f"hf-hub:{repo_id}/config.json names no 'architecture'; it was not written by the zoo "
                              "or timm")
    if arch not in list_models():
        raise CheckpointError(f"hf-hub:{repo_id} holds a {arch!r} model, which the zoo does not register "
                              "(`zoo list` shows the names it knows; a newer zoo may add it)")
    known = {f.name for f in dataclasses.fields(PretrainedCfg)}
    # the registered cfg's provenance fields describe other weights: cleared unless the repo's config sets them
    overlay: Dict[str, Any] = {"notes": None, "tag": None, "description": None, "url": None}
    overlay.update({k: v for k, v in (config.get("pretrained_cfg") or {}).items() if k in known})
    overlay.update(hf_hub_id=repo_id, hf_hub_filename=WEIGHTS_NAME, source="hf-hub")
    if "num_classes" in config:
        overlay["num_classes"] = config["num_classes"]
    if config.get("hf_hub_sha256"):
        overlay["hf_hub_sha256"] = config["hf_hub_sha256"]
    model_args = dict(config.get("model_args") or {})
    return arch, overlay, model_args


# ------------------------------------------------------------------------------------------------------------------
# Publishing: export a model (weights, config.json, model card) and upload it
# ------------------------------------------------------------------------------------------------------------------

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
PUBLISHED_CARDS_DIR = Path("model_cards") / "published"
_AUTO = "auto"
# training-only options and build-time switches: not part of the architecture (timm leaves drop rates out too)
_TRAINING_ONLY_ARGS = ("drop_rate", "drop_path_rate", "drop_block_rate", "pretrained", "checkpoint_path",
                       "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict", "cache_dir", "features_only",
                       "out_indices", "feature_cls", "norm")
_TASK_NAMES = {"image-classification": "Image Classification", "text-generation": "Text Generation"}
# metrics.json key -> (metric type, display name); other numeric keys are reported under their own name
_METRICS = {"top1": ("accuracy", "top-1"), "top5": ("accuracy", "top-5"), "perplexity": ("perplexity", "perplexity"),
            "loss": ("loss", "loss")}
_NOT_METRICS = {"params", "macs", "flops", "dataset", "split", "num_samples", "samples", "step", "epoch",
                # what train.py's metrics.json records about the run and the data, not results
                "train_steps", "train_seconds", "num_classes", "vocab_size", "tokens", "train_tokens", "val_tokens",
                "unigram_perplexity", "seq_len", "label_names"}


def _unwrap_model(model: nn.Module) -> nn.Module:
    """The module itself, out of DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _architecture_args(model_kwargs: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    args = {}
    for k, v in (model_kwargs or {}).items():
        if k in _TRAINING_ONLY_ARGS or k.endswith("_drop_rate"):
            continue
        args[k] = list(v) if isinstance(v, tuple) else v
    return args


def _json_default(value):
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _config_dict(config) -> Optional[Dict[str, Any]]:
    """A model's ``config`` (dataclass, dict, or object with ``to_dict``) as a plain dict."""
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return dict(config)
    if callable(getattr(config, "to_dict", None)):
        return dict(config.to_dict())
    return None


def _vision_config(model: nn.Module, model_name: str, model_args: Dict[str, Any],
                   data_config: Optional[Dict[str, Any]], out_dir: Path) -> Dict[str, Any]:
    """timm's config.json for the model as it is now (timm writes it), with the architecture's registry cfg."""
    from timm.models._hub import save_config_for_hf

    if not isinstance(getattr(model, "pretrained_cfg", None), dict) or not hasattr(model, "num_classes"):
        raise PublishError(f"{type(model).__name__} has no timm pretrained_cfg / num_classes; build it with "
                           f"zoo.create_model({model_name!r}, ...) (features_only models cannot be published)")
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".config.", suffix=".json")
    os.close(fd)
    try:
        save_config_for_hf(model, tmp, model_args=model_args, data_config=data_config)
        with open(tmp) as f:
            config = json.load(f)
    except ValueError as e:  # an argument that disagrees with the model or is not serializable
        raise PublishError(f"cannot describe {model_name} in config.json: {e}") from e
    finally:
        os.unlink(tmp)
    config["architecture"] = model_name
    cfg = config.setdefault("pretrained_cfg", {})
    for k in ("notes", "tag", "description", "hf_hub_id", "hf_hub_filename", "url", "file", "source"):
        cfg.pop(k, None)  # these described the architecture's registered weights, not these
    return config


def _profile_summary(model: nn.Module, task: str, input_size: Optional[Tuple[int, ...]],
                     latency_runs: int) -> Dict[str, Any]:
    """Params always; MACs and CPU latency (batch 1) from zoo.profile where the model can be profiled."""
    from .profile import count_params, profile
    summary: Dict[str, Any] = {"params": int(count_params(model)["params"])}
    if task != "image-classification":
        return summary
    was_training = model.training
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    subject = model if on_cpu else copy.deepcopy(model).cpu()
    try:
        prof = profile(subject, input_size=input_size, latency=latency_runs > 0, runs=max(latency_runs, 1),
                       warmup=1 if latency_runs else 0)
        summary.update(macs=int(prof.macs), input_size=list(prof.input_size[1:]), threads=torch.get_num_threads())
        if prof.latency:
            summary.update(latency_ms=float(prof.latency[0]["median_ms"]), latency_device="cpu")
    except (RuntimeError, ValueError, TypeError, AssertionError, NotImplementedError) as e:
        # profiling is informative only: the card then leaves MACs and latency out
        _logger.warning("profiling %s failed (%s); the model card leaves MACs and latency out", type(model).__name__, e)
    finally:
        model.train(was_training)
    return summary


def _metric_results(metrics: Dict[str, Any], task: str, dataset: Optional[str]):
    from huggingface_hub import EvalResult
    results = []
    if not dataset:
        return results
    for key, value in metrics.items():
        if key in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        metric_type, metric_name = _METRICS.get(key, (key, key))
        results.append(EvalResult(
            task_type=task, task_name=_TASK_NAMES.get(task, task), dataset_type=dataset, dataset_name=dataset,
            dataset_split=metrics.get("split"), metric_type=metric_type, metric_name=metric_name,
            metric_value=float(value)))
    return results


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_published_card(*, repo_id: Optional[str], model_name: str, task: str, family: str,
                          license: Optional[str], dataset: Optional[str], metrics: Dict[str, Any],
                          recipe_text: Optional[str], summary: Dict[str, Any], weights: Dict[str, Any],
                          model_args: Dict[str, Any], tokenizer: bool = False) -> str:
    """The model card (README.md) of a published model: front matter with ModelCardData / EvalResult, then markdown."""
    from huggingface_hub import ModelCard, ModelCardData

    title = repo_id or model_name
    eval_results = _metric_results(metrics, task, dataset)
    data = ModelCardData(
        model_name=title.split("/")[-1], license=license, library_name="zoo", pipeline_tag=task,
        tags=[t for t in (task, "zoo", family, "timm" if task == "image-classification" else None,
                          "safetensors") if t],
        datasets=[dataset] if dataset else None,
        metrics=sorted({r.metric_type for r in eval_results}) or None,
        eval_results=eval_results or None,
    )
    name = f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder"
    what = f"`{model_name}` ({family} family, {task.replace('-', ' ')})"
    what += f" trained on `{dataset}` with the zoo's training engine." if dataset else "."
    args_text = f"`{json.dumps(model_args, sort_keys=True)}`" if model_args else "registry defaults"
    details = [("Architecture", f"`{model_name}`"), ("Model arguments", args_text),
               ("Params", f"{summary['params']:,}")]
    if summary.get("macs") is not None:
        size = " x ".join(str(s) for s in summary["input_size"])
        macs = f"{summary['macs'] / 1e6:,.2f} M (fvcore, one multiply-add = 1; FLOPs = 2 x MACs)"
        details.append((f"MACs @ {size}", macs))
    if summary.get("latency_ms") is not None:
        latency = f"{summary['latency_ms']:.2f} ms median on CPU, {summary['threads']} threads, at publishing time"
        details.append(("Latency (batch 1)", latency))
    if metrics.get("params") is not None and metrics["params"] != summary["params"]:
        details.append(("Params (metrics.json)", f"{metrics['params']:,}"))
    details += [("License", license or "-"),
                ("Weights", f"`{weights['file']}`, {weights['size']:,} bytes"),
                ("sha256", f"`{weights['sha256']}`")]
    lines = [f"# {title}", "", what, "", "## Model details", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in details]
    if eval_results:
        intro = f"Held-out evaluation on `{dataset}` after training (`metrics.json` of the run):"
        lines += ["", "## Evaluation", "", intro, "", "| metric | value |", "|---|---:|"]
        lines += [f"| {r.metric_name} | {_fmt(r.metric_value)} |" for r in eval_results]
    lines += ["", "## Usage", "", "```python", "import zoo", "",
              f'model = zoo.create_model("{name}", pretrained=True).eval()']
    if task == "image-classification":
        lines += ["", "import timm",
                  "config = timm.data.resolve_data_config({}, model=model)  # input size, mean/std of training",
                  "transform = timm.data.create_transform(**config)"]
    elif tokenizer:
        lines += ["", "from huggingface_hub import hf_hub_download", "from tokenizers import Tokenizer",
                  f'tokenizer = Tokenizer.from_file(hf_hub_download("{repo_id or "ORG/NAME"}", "tokenizer.json"))']
    check = (f"`create_model` checks the downloaded `{weights['file']}` against the sha256 recorded in "
             "`config.json` (`hf_hub_sha256`) before reading it; by hand: `sha256sum model.safetensors`.")
    lines += ["```", "", check]
    if recipe_text:
        lines += ["", "## Training recipe", "", "The resolved recipe of the run (`args.yaml`):", "", "```yaml",
                  recipe_text.rstrip("\n"), "```"]
    content = f"---\n{data.to_yaml().strip()}\n---\n\n" + "\n".join(lines) + "\n"
    ModelCard(content)  # parses the front matter back: malformed metadata fails here, not on the Hub
    return content


def _recipe_text(recipe: Union[None, str, os.PathLike, Dict[str, Any]]) -> Optional[str]:
    import yaml
    if recipe is None:
        return None
    if isinstance(recipe, dict):
        return yaml.safe_dump(recipe, sort_keys=False, default_flow_style=False)
    if isinstance(recipe, Path) or (isinstance(recipe, str) and "\n" not in recipe
                                    and recipe.endswith((".yaml", ".yml"))):
        return Path(recipe).read_text()
    return str(recipe)


def export_pretrained(model: nn.Module, out_dir: Union[str, os.PathLike], *, model_name: Optional[str] = None,
                      model_kwargs: Optional[Dict[str, Any]] = None, metrics: Optional[Dict[str, Any]] = None,
                      recipe: Union[None, str, os.PathLike, Dict[str, Any]] = None, dataset: Optional[str] = None,
                      tokenizer_file: Optional[Union[str, os.PathLike]] = None, repo_id: Optional[str] = None,
                      data_config: Optional[Dict[str, Any]] = None, license: Optional[str] = None,
                      latency_runs: int = 10) -> Path:
    """Write a publishable folder: ``model.safetensors``, ``config.json`` and the model card ``README.md``.

    Args:
        model: a zoo model (DDP / compiled wrappers are removed).
        out_dir: the folder to write (created; files of the same names are replaced).
        model_name: its registry name (default: ``model.pretrained_cfg["architecture"]``).
        model_kwargs: the arguments it was built with (``zoo.create_model(model_name, **model_kwargs)``); they
            become ``model_args`` in config.json, without training-only options such as drop rates.
        metrics: held-out results (``metrics.json`` of a run): ``top1``/``top5``/``loss``/``perplexity``, ``dataset``.
        recipe: the training recipe (dict, YAML text or a path to ``args.yaml``), quoted in the card.
        dataset: the training data set's name (default: ``metrics["dataset"]``).
        tokenizer_file: copied next to the weights (language models).
        repo_id: the Hub repo the folder is for (the card's title and usage line).
        data_config: preprocessing the model was trained with (timm keys ``input_size``, ``interpolation``,
            ``mean``, ``std``, ``crop_pct``, ``crop_mode``); recorded in config.json's ``pretrained_cfg``.
        license: the weights' license (default: the architecture's, from ``zoo.model_info``).
        latency_runs: timed CPU passes for the card's latency figure (0: not measured).

    config.json follows timm's schema for vision models (``architecture``, ``num_classes``, ``num_features``,
    ``pretrained_cfg``, ``model_args``). For other models, a family file that defines
    ``save_pretrained(model, out_dir, model_name=...)`` writes its own Hub format (weights and config.json, e.g. a
    transformers Llama folder); otherwise config.json is the model's own ``config`` (a dataclass or dict with
    Hugging Face key names). Either way it carries ``architecture`` and ``model_args`` (what
    ``zoo.create_model("hf-hub:...")`` rebuilds from) and ``hf_hub_sha256``, the weights' sha256 that loading checks.
    """
    from . import __version__
    from .registry import get_entry

    model = _unwrap_model(model)
    if model_name is None:
        model_name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        if not model_name:
            raise PublishError("model_name is needed: the model carries no pretrained_cfg['architecture']")
    entry = get_entry(model_name)  # UnknownModelError (with close names) for a name the registry lacks
    metrics = dict(metrics or {})
    dataset = dataset or metrics.get("dataset")
    model_args = _architecture_args(model_kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    family_saver = getattr(sys.modules.get(type(model).__module__), "save_pretrained", None)
    if entry.task == "image-classification":
        save_state_dict(model, out / WEIGHTS_NAME, metadata={"architecture": model_name})
        config = _vision_config(model, model_name, model_args, data_config, out)
        input_size = tuple(config["pretrained_cfg"].get("input_size") or ()) or None
    elif callable(family_saver):
        # the family writes its own Hub format (e.g. a transformers-loadable Llama folder where the model is one)
        family_saver(model, out, model_name=model_name)
        config = json.loads((out / CONFIG_NAME).read_text())
        config.update(architecture=model_name, model_args=model_args)
        input_size = None
    else:
        save_state_dict(model, out / WEIGHTS_NAME, metadata={"architecture": model_name})
        config = _config_dict(getattr(model, "config", None)) or {}
        config.update(architecture=model_name, model_args=model_args)
        input_size = None
    weights_path = out / WEIGHTS_NAME
    weights = {"file": WEIGHTS_NAME, "size": weights_path.stat().st_size, "sha256": sha256_file(weights_path)}
    config["hf_hub_sha256"] = weights["sha256"]
    config["zoo"] = {"version": __version__, "family": entry.family, "task": entry.task}
    _write_text(out / CONFIG_NAME, json.dumps(config, indent=2, default=_json_default) + "\n")

    if tokenizer_file is not None:
        tokenizer_file = Path(tokenizer_file)
        if not tokenizer_file.is_file():
            raise PublishError(f"tokenizer file {tokenizer_file} does not exist")
        shutil.copyfile(tokenizer_file, out / tokenizer_file.name)

    summary = _profile_summary(model, entry.task, input_size, latency_runs)
    card = render_published_card(
        repo_id=repo_id, model_name=model_name, task=entry.task, family=entry.family,
        license=license or entry.pretrained_cfg.get("license"), dataset=dataset, metrics=metrics,
        recipe_text=_recipe_text(recipe), summary=summary, weights=weights, model_args=model_args,
        tokenizer=tokenizer_file is not None)
    _write_text(out / CARD_NAME, card)
    _logger.info("exported %s to %s (sha256 %s)", model_name, out, weights["sha256"])
    return out


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _exported_files(folder: Path) -> List[str]:
    missing = [n for n in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME) if not (folder / n).is_file()]
    if missing:
        raise PublishError(f"{folder} is not an exported model folder: {', '.join(missing)} missing")
    with open(folder / CONFIG_NAME) as f:
        config = json.load(f)
    if config.get("hf_hub_sha256") and sha256_file(folder / WEIGHTS_NAME) != config["hf_hub_sha256"]:
        raise PublishError(f"{folder / WEIGHTS_NAME} no longer matches the sha256 in {folder / CONFIG_NAME}; "
                           "export the folder again")
    extra = [p.name for p in sorted(folder.glob("tokenizer*.json"))]
    extra += [n for n in ("generation_config.json",) if (folder / n).is_file()]
    return [WEIGHTS_NAME, CONFIG_NAME, CARD_NAME] + extra


def _read_run(run_dir: Path) -> Tuple[Dict[str, Any], str, Dict[str, Any]]:
    import yaml
    if not run_dir.is_dir():
        raise PublishError(f"run folder {run_dir} does not exist")
    missing = [n for n in ("args.yaml", WEIGHTS_NAME) if not (run_dir / n).is_file()]
    if missing:
        raise PublishError(f"{run_dir} is not a finished training run: {', '.join(missing)} missing (train.py writes "
                           "args.yaml at the start and model.safetensors at the end)")
    recipe_text = (run_dir / "args.yaml").read_text()
    try:
        args = yaml.safe_load(recipe_text)
    except yaml.YAMLError as e:
        raise PublishError(f"{run_dir / 'args.yaml'} is not valid YAML: {e}") from e
    if not isinstance(args, dict) or not isinstance(args.get("model"), str):
        raise PublishError(f"{run_dir / 'args.yaml'} names no model (a top-level `model:` registry name)")
    metrics = {}
    if (run_dir / "metrics.json").is_file():
        try:
            metrics = json.loads((run_dir / "metrics.json").read_text())
        except ValueError as e:
            raise PublishError(f"{run_dir / 'metrics.json'} is not valid JSON: {e}") from e
    else:
        _logger.warning("%s has no metrics.json: the model card will carry no evaluation results", run_dir)
    return args, recipe_text, metrics


def _data_config(args: Dict[str, Any], in_chans: int) -> Dict[str, Any]:
    """Preprocessing of a run, from ``args.yaml`` (``data:`` section first, then top level), in timm's keys."""
    data = args.get("data") if isinstance(args.get("data"), dict) else {}
    config: Dict[str, Any] = {}
    for src in (args, data):
        for key in ("input_size", "img_size", "image_size"):
            size = src.get(key)
            if size is None:
                continue
            size = [size, size] if isinstance(size, int) else list(size)
            config["input_size"] = tuple(size if len(size) == 3 else [in_chans, *size[-2:]])
        for key in ("mean", "std"):
            if src.get(key) is not None:
                config[key] = tuple(src[key]) if isinstance(src[key], (list, tuple)) else (src[key],)
        for key in ("interpolation", "crop_pct", "crop_mode"):
            if src.get(key) is not None:
                config[key] = src[key]
    return config


def export_run(run_dir: Union[str, os.PathLike], out_dir: Optional[Union[str, os.PathLike]] = None, *,
               repo_id: Optional[str] = None, license: Optional[str] = None, latency_runs: int = 10) -> Path:
    """Export a training run folder (``args.yaml``, ``model.safetensors``, ``metrics.json``, ``tokenizer.json``)
    with :func:`export_pretrained`; default ``out_dir``: ``RUN_DIR/publish``. The run's weights are loaded into
    a freshly built model first, so weights that do not fit the recipe's architecture are refused here."""
    from .registry import create_model, get_entry

    run_dir = Path(run_dir)
    args, recipe_text, metrics = _read_run(run_dir)
    name, model_kwargs = args["model"], dict(args.get("model_kwargs") or {})
    task = get_entry(name).task
    tokenizer = run_dir / "tokenizer.json"
    # train.py sizes the head from the data and the embeddings from the tokenizer when the recipe leaves them
    # out; metrics.json records both
    if task == "image-classification" and "num_classes" not in model_kwargs and metrics.get("num_classes"):
        model_kwargs["num_classes"] = int(metrics["num_classes"])
    if task == "text-generation" and "vocab_size" not in model_kwargs:
        if metrics.get("vocab_size"):
            model_kwargs["vocab_size"] = int(metrics["vocab_size"])
        elif tokenizer.is_file():
            from tokenizers import Tokenizer
            model_kwargs["vocab_size"] = Tokenizer.from_file(str(tokenizer)).get_vocab_size()
    model = create_model(name, **_architecture_args(model_kwargs))
    load_checkpoint(model, run_dir / WEIGHTS_NAME)
    if metrics.get("label_names") and isinstance(getattr(model, "pretrained_cfg", None), dict):
        model.pretrained_cfg = {**model.pretrained_cfg, "label_names": list(metrics["label_names"]),
                                "num_classes": getattr(model, "num_classes", len(metrics["label_names"]))}
    data = args.get("data") if isinstance(args.get("data"), dict) else {}
    dataset = metrics.get("dataset") or data.get("name") or data.get("dataset")
    in_chans = getattr(model, "in_chans", None) or model_kwargs.get("in_chans", 3)
    data_config = _data_config(args, in_chans) if task == "image-classification" else None
    return export_pretrained(
        model, Path(out_dir) if out_dir is not None else run_dir / "publish", model_name=name,
        model_kwargs=model_kwargs, metrics=metrics, recipe=recipe_text, dataset=dataset,
        tokenizer_file=tokenizer if tokenizer.is_file() else None, repo_id=repo_id, data_config=data_config,
        license=license, latency_runs=latency_runs)


def _check_repo_id(repo_id: str) -> None:
    if not isinstance(repo_id, str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id) or ".." in repo_id:
        raise PublishError(f"repo id {repo_id!r} is not of the form ORG/NAME (letters, digits, '-', '_', '.')")


def _scrub(text: str, token: Optional[str]) -> str:
    return text.replace(token, "***") if token else text


def upload_folder(folder: Union[str, os.PathLike], repo_id: str, *, private: bool = False,
                  token: Optional[str] = None, commit_message: Optional[str] = None) -> str:
    """Create ``repo_id`` if needed and upload an exported folder with ``HfApi.upload_folder``; the repo's URL.

    Errors name the endpoint and what to do; the token never appears in them.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    _check_repo_id(repo_id)
    files = _exported_files(folder)
    endpoint = constants.ENDPOINT
    if _offline_mode():
        raise PublishError(f"offline mode is on (HF_HUB_OFFLINE=1): nothing was uploaded to {endpoint}. Unset "
                           f"HF_HUB_OFFLINE and publish again; the exported folder is {folder}")
    if not _endpoint_reachable(endpoint):
        raise PublishError(f"could not reach the Hub at {endpoint}: nothing was uploaded. Connect, or set "
                           f"HF_ENDPOINT to a reachable Hub; the exported folder is {folder}")
    api = HfApi(endpoint=endpoint, token=token)
    step = f"creating {repo_id}"
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        step = f"uploading {len(files)} files to {repo_id}"
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, allow_patterns=files,
                                 commit_message=commit_message or f"Upload {repo_id} with zoo")
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise PublishError(
                f"the Hub at {endpoint} refused {step} (HTTP {status}): the token is missing, invalid or has no "
                f"write access to {repo_id.split('/')[0]}. Pass a write token (token=..., --token-env VAR, "
                f"HF_TOKEN or `hf auth login`).") from None
        detail = _scrub(str(e).splitlines()[0] if str(e) else type(e).__name__, token)
        raise PublishError(f"the Hub at {endpoint} failed {step} (HTTP {status}): {detail}") from None
    except Exception as e:  # transport errors (the client's httpx), raised as they are
        if isinstance(e, OSError) or type(e).__module__.split(".")[0].startswith("httpx"):
            raise PublishError(f"lost the connection to the Hub at {endpoint} while {step}: "
                               f"{_scrub(str(e), token)}. Check the network or HF_ENDPOINT and publish again "
                               f"(uploads of files already there are skipped).") from None
        raise
    _logger.info("published %s (commit %s)", repo_id, info.oid)
    return str(url)


def _cards_dir(cards_dir) -> Optional[Path]:
    if cards_dir == _AUTO:  # a checkout of the zoo (or any folder with model_cards/): model_cards/published/
        return Path.cwd() / PUBLISHED_CARDS_DIR if (Path.cwd() / "model_cards").is_dir() else None
    return None if cards_dir is None else Path(cards_dir)


def _save_published_card(folder: Path, repo_id: str, cards_dir) -> Optional[Path]:
    target = _cards_dir(cards_dir)
    if target is None:
        return None
    target.mkdir(parents=True, exist_ok=True)
    path = target / (repo_id.replace("/", "--") + ".md")
    _write_text(path, (folder / CARD_NAME).read_text())
    return path


def publish_run(run_dir: Union[str, os.PathLike], repo_id: str, *, private: bool = False,
                token: Optional[str] = None, out_dir: Optional[Union[str, os.PathLike]] = None,
                cards_dir: Union[None, str, os.PathLike] = _AUTO, license: Optional[str] = None,
                latency_runs: int = 10) -> str:
    """Export a training run (:func:`export_run`) and upload it to ``repo_id``; returns the repo's URL.

    The card is also written to ``cards_dir/ORG--NAME.md`` (default: ``model_cards/published/`` when the current
    folder has ``model_cards/``, as a checkout of the zoo does; ``None``: not written).
    """
    _check_repo_id(repo_id)
    folder = export_run(run_dir, out_dir, repo_id=repo_id, license=license, latency_runs=latency_runs)
    url = upload_folder(folder, repo_id, private=private, token=token,
                        commit_message=f"Upload {repo_id} from run {Path(run_dir).name}")
    _save_published_card(folder, repo_id, cards_dir)
    return url


def push_to_hub(model: nn.Module, repo_id: str, *, model_name: Optional[str] = None,
                model_kwargs: Optional[Dict[str, Any]] = None, metrics: Optional[Dict[str, Any]] = None,
                recipe: Union[None, str, os.PathLike, Dict[str, Any]] = None, dataset: Optional[str] = None,
                tokenizer_file: Optional[Union[str, os.PathLike]] = None,
                data_config: Optional[Dict[str, Any]] = None, license: Optional[str] = None,
                private: bool = False, token: Optional[str] = None, out_dir: Optional[Union[str, os.PathLike]] = None,
                cards_dir: Union[None, str, os.PathLike] = _AUTO, commit_message: Optional[str] = None,
                latency_runs: int = 10) -> str:
    """Publish any zoo model: :func:`export_pretrained` (into ``out_dir``, default a temporary folder), then upload
    to ``repo_id``; returns the repo's URL. ``zoo.create_model("hf-hub:" + repo_id, pretrained=True)`` loads it.

    Pass ``model_kwargs`` when the model was built with arguments beyond ``num_classes`` / ``in_chans`` (sizes,
    depths, ...): they are what rebuilds it. ``cards_dir`` as in :func:`publish_run`.
    """
    _check_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="zoo-publish-") as tmp:
        folder = export_pretrained(
            model, out_dir if out_dir is not None else tmp, model_name=model_name, model_kwargs=model_kwargs,
            metrics=metrics, recipe=recipe, dataset=dataset, tokenizer_file=tokenizer_file, repo_id=repo_id,
            data_config=data_config, license=license, latency_runs=latency_runs)
        url = upload_folder(folder, repo_id, private=private, token=token, commit_message=commit_message)
        _save_published_card(folder, repo_id, cards_dir)
    return url


# ------------------------------------------------------------------------------------------------------------------
# Command line: ``zoo publish RUN_DIR --repo ORG/NAME``


def add_publish_arguments(parser) -> None:
    parser.add_argument("run_dir", help="a training run folder (args.yaml, model.safetensors, metrics.json)")
    parser.add_argument("--repo", required=True, help="the Hub repo, ORG/NAME (created if it does not exist)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--token-env", default=None, metavar="VAR",
                        help="read the write token from environment variable VAR (default: HF_TOKEN or the "
                             "token of `hf auth login`)")
    parser.add_argument("--out-dir", default=None, help="where to write the exported folder (default RUN_DIR/publish)")
    parser.add_argument("--cards-dir", default=_AUTO,
                        help="where to copy the model card (default: model_cards/published if ./model_cards exists)")
    parser.add_argument("--license", default=None, help="the weights' license (default: the architecture's)")
    parser.add_argument("--latency-runs", type=int, default=10,
                        help="timed CPU passes for the card's latency figure (0: leave latency out)")
    parser.add_argument("--no-push", action="store_true", help="export only; upload nothing")


def publish_command(args) -> int:
    token = None
    try:
        if args.token_env:
            token = os.environ.get(args.token_env)
            if not token:
                raise PublishError(f"environment variable {args.token_env} (--token-env) is not set or empty")
        _check_repo_id(args.repo)
        folder = export_run(args.run_dir, args.out_dir, repo_id=args.repo, license=args.license,
                            latency_runs=args.latency_runs)
        print(f"exported {folder}: {', '.join(_exported_files(folder))}")
        print(f"  sha256 of {WEIGHTS_NAME}: {sha256_file(folder / WEIGHTS_NAME)}")
        if args.no_push:
            return 0
        url = upload_folder(folder, args.repo, private=args.private, token=token,
                            commit_message=f"Upload {args.repo} from run {Path(args.run_dir).name}")
        card = _save_published_card(folder, args.repo, args.cards_dir)
        print(f"published {url}" + (" (private)" if args.private else ""))
        if card is not None:
            print(f"  model card also written to {card}")
        print(f'  load it with zoo.create_model("hf-hub:{args.repo}", pretrained=True)')
        return 0
    except (PublishError, CheckpointError, ValueError, TypeError) as e:
        print(f"zoo publish: error: {_scrub(str(e), token)}", file=sys.stderr)
        return 2
