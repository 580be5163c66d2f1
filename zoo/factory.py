"""create_model: one build path for every family, and the one place that decides where weights come from.

1. :func:`resolve_source` reads the name: a registered name; ``hf-hub:ORG/NAME`` (the repo's ``config.json``
   names the architecture and its arguments); or a local folder the zoo or timm wrote (``config.json`` beside the
   weights; ``local-dir:PATH`` or a plain path; a training run's folder stands for its ``export/``).
2. :func:`read_weights` reads the weights the pretrained cfg names (``state_dict``, ``file`` -- a file or a folder
   --, ``hf_hub_id``), with the ``config.json`` that describes them, for vision and language models alike.
3. The family's builder builds the architecture: registry defaults, then what the checkpoint describes, then the
   caller's arguments (the caller wins).
4. The weights are converted (the family's ``checkpoint_filter_fn``), checked against the model, then copied; a
   checkpoint that does not fit raises before anything is loaded.

``pretrained=True`` weights adapt to the model as timm's do (a classifier of another size keeps its fresh init,
a first conv of other input channels is adapted); ``checkpoint_path=`` loads a checkpoint of *this* model and
must fit exactly. That is the one difference between the two, and it is deliberate.
"""

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import PretrainedCfg
from timm.models import _registry as timm_registry
from timm.models._features import FeatureDictNet, FeatureGetterNet, FeatureHookNet, FeatureListNet
from torch import nn

from . import models  # noqa: F401  (importing the families registers them)
from .hub import CONFIG_NAME, WEIGHTS_NAME, download, read_hub_config
from .layers import check_head_args
from .registry import ModelEntry, get_entry, list_models
from .weights import CheckpointError, load_state_dict_checked, read_state_dict

__all__ = [
    "Source",
    "Weights",
    "create_model",
    "load_pretrained",
    "read_weights",
    "register_in_timm",
    "resolve_source",
    "wrap_features",
]

# arguments that steer building and loading, not the architecture
_FEATURE_KWARGS = ("features_only", "out_indices", "feature_cls", "norm", "feature_cfg")
# weight-location keys of a pretrained cfg: consumed here, never part of the model's cfg
_SOURCE_KEYS = ("file", "state_dict", "hf_hub_sha256")
_LOCAL_PREFIX = "local-dir:"
_HUB_PREFIX = "hf-hub:"
# the weight files a folder may hold, in order of preference (sharded safetensors through their index)
_FOLDER_WEIGHTS = (WEIGHTS_NAME, "model.safetensors.index.json", "pytorch_model.bin", "model.pth")


@dataclass
class Source:
    """What a model name resolves to: the registered architecture, where its weights are, what describes them."""

    name: str
    cfg_overlay: dict[str, Any]
    config: dict[str, Any] | None = None  # the config.json describing the weights, when already read
    pretrained: bool = False  # the name itself names weights (a Hub repo or a folder)


@dataclass
class Weights:
    """A state dict read from its source, where it came from, and the ``config.json`` that describes it."""

    state_dict: dict[str, torch.Tensor]
    where: str
    config: dict[str, Any] | None = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return data


def _model_folder(path: Path) -> Path | None:
    """The folder holding ``config.json`` for a model folder or a training run folder (its ``export/``)."""
    if (path / CONFIG_NAME).is_file():
        return path
    if (path / "args.yaml").is_file() and (path / "export" / CONFIG_NAME).is_file():
        return path / "export"
    return None


def _architecture(config: dict[str, Any], where: str) -> str:
    arch = config.get("architecture")
    if not arch:
        raise CheckpointError(f"{where}/{CONFIG_NAME} names no 'architecture'; it was not written by the zoo or timm")
    if arch not in list_models():
        raise CheckpointError(
            f"{where} holds a {arch!r} model, which the zoo does not register "
            "(`zoo list` shows the names it knows; a newer zoo may add it)"
        )
    return arch


def _config_overlay(config: dict[str, Any]) -> dict[str, Any]:
    """The pretrained-cfg fields a published ``config.json`` records (preprocessing, labels), timm's names only;
    the registered cfg's provenance fields are cleared, since they describe other weights."""
    known = {f.name for f in dataclasses.fields(PretrainedCfg)} - {"file", "state_dict", "hf_hub_id", "url"}
    overlay: dict[str, Any] = {"notes": None, "tag": None, "description": None, "url": None}
    overlay.update({k: v for k, v in (config.get("pretrained_cfg") or {}).items() if k in known})
    if "num_classes" in config:
        overlay["num_classes"] = config["num_classes"]
    return overlay


def resolve_source(model_name: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Source:
    """A registered name, ``hf-hub:ORG/NAME`` or a model folder -> the architecture and where its weights are."""
    name = os.fspath(model_name)
    if name.startswith(_HUB_PREFIX):
        repo_id = name[len(_HUB_PREFIX) :]
        config = read_hub_config(repo_id, cache_dir)
        overlay = {**_config_overlay(config), "hf_hub_id": repo_id, "hf_hub_filename": WEIGHTS_NAME, "source": "hf-hub"}
        if config.get("hf_hub_sha256"):
            overlay["hf_hub_sha256"] = config["hf_hub_sha256"]
        return Source(_architecture(config, name), overlay, config, pretrained=True)
    local = name[len(_LOCAL_PREFIX) :] if name.startswith(_LOCAL_PREFIX) else None
    if local is not None or (not _is_registered(name) and Path(name).is_dir()):
        folder = _model_folder(Path(local if local is not None else name))
        if folder is None:
            raise CheckpointError(
                f"{local or name} is not a model folder: it has no {CONFIG_NAME} (nor does its "
                "export/); pass a registered name with pretrained_cfg_overlay={'file': PATH}"
            )
        config = _read_json(folder / CONFIG_NAME)
        overlay = {**_config_overlay(config), "file": str(folder), "source": "local-dir"}
        return Source(_architecture(config, str(folder)), overlay, config, pretrained=True)
    return Source(name, {})


def _is_registered(name: str) -> bool:
    return name in list_models()


def _folder_weights(folder: Path) -> Path:
    for candidate in _FOLDER_WEIGHTS:
        if (folder / candidate).is_file():
            return folder / candidate
    raise CheckpointError(f"{folder} is a folder without weights (looked for {', '.join(_FOLDER_WEIGHTS)})")


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    """A weight file, or every shard a ``model.safetensors.index.json`` lists."""
    if path.name.endswith(".index.json"):
        shards = sorted(set(_read_json(path).get("weight_map", {}).values()))
        if not shards:
            raise CheckpointError(f"{path} lists no weight files")
        state_dict = {}
        for shard in shards:
            state_dict.update(read_state_dict(path.parent / shard))
        return state_dict
    return read_state_dict(path)


def _read_local(location: str | os.PathLike) -> Weights:
    """A local file or folder; a folder's ``config.json`` (or one beside a Hub-layout weight file) describes it."""
    path = Path(location)
    if path.is_dir():
        folder = _model_folder(path) or path
        config_path, path = folder / CONFIG_NAME, _folder_weights(folder)
    else:
        config_path = path.parent / CONFIG_NAME if path.name in _FOLDER_WEIGHTS else None
    config = _read_json(config_path) if config_path is not None and config_path.is_file() else None
    return Weights(_read_file(path), str(location), config)


def read_weights(
    cfg: dict[str, Any], cache_dir: str | os.PathLike | None = None, config: dict[str, Any] | None = None
) -> Weights:
    """The weights a pretrained cfg names: ``state_dict``, ``file`` (file or folder) or ``hf_hub_id`` (verified).

    ``config`` is the ``config.json`` already read for a Hub repo (else it is downloaded when the repo has one).
    """
    arch = cfg.get("architecture", "this model")
    if cfg.get("state_dict") is not None:
        return Weights(dict(cfg["state_dict"]), "the given state_dict")
    if cfg.get("file"):
        return _read_local(cfg["file"])
    if cfg.get("hf_hub_id"):
        repo, filename = cfg["hf_hub_id"], cfg.get("hf_hub_filename") or WEIGHTS_NAME
        path = download(repo, filename, sha256=cfg.get("hf_hub_sha256"), cache_dir=cache_dir)
        if config is None:
            try:
                config = read_hub_config(repo, cache_dir)
            except CheckpointError:  # a repo of bare weights: the registered architecture describes them
                config = None
        return Weights(_read_file(Path(path)), f"hf-hub:{repo}/{filename}", config)
    if cfg.get("url"):
        raise CheckpointError(
            f"{arch}: weights at {cfg['url']} must be downloaded by hand and passed "
            f"with pretrained_cfg_overlay={{'file': PATH}}"
        )
    raise CheckpointError(
        f"no pretrained weights are known for {arch}; use pretrained=False, "
        "or pass pretrained_cfg_overlay={'file': PATH}"
    )


def checkpoint_args(entry: ModelEntry, weights: Weights) -> dict[str, Any]:
    """The architecture arguments the weights' ``config.json`` (or the weights themselves) describe."""
    if entry.model_args_fn is not None:
        return dict(entry.model_args_fn(weights.config, weights.state_dict))
    config = weights.config or {}
    if config.get("architecture") not in (None, entry.name):
        return {}  # a folder of another architecture: its arguments do not apply
    args = dict(config.get("model_args") or {})
    if "num_classes" in config:
        args.setdefault("num_classes", config["num_classes"])
    return args


def _model_cfg(entry: ModelEntry, pretrained_cfg: Any, overlay: dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(pretrained_cfg, dict):  # an explicit cfg replaces the registered one (timm's rule)
        cfg = dict(pretrained_cfg)
    elif hasattr(pretrained_cfg, "to_dict"):
        cfg = pretrained_cfg.to_dict()
    else:
        cfg = dict(entry.pretrained_cfg)
    cfg.update(overlay or {})
    cfg.setdefault("architecture", entry.name)
    return cfg


def create_model(
    model_name: str | os.PathLike,
    pretrained: bool = False,
    num_classes: int | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model, timm-style, with weights from one resolved source.

    Args:
        model_name: a registered name (``zoo.list_models()``), ``hf-hub:ORG/NAME`` (a Hub repo with a zoo/timm
            ``config.json``), or a model folder the zoo wrote (``local-dir:PATH`` or the path; a training run's
            folder loads its ``export/``). A repo or folder rebuilds the architecture its config.json describes.
        pretrained: load weights: ``pretrained_cfg_overlay={"file": PATH}`` (a file or a folder) when given, else
            the Hub repo in the model's pretrained cfg (``HF_ENDPOINT`` picks the endpoint). Implied by a repo or
            folder name.
        num_classes: classifier size; pretrained weights with another size keep the new classifier's init.
        checkpoint_path: a checkpoint of this very model (any supported origin) loaded after building; it must fit.
        **kwargs: model arguments (``in_chans``, ``drop_path_rate``, ...), ``features_only`` / ``out_indices`` /
            ``feature_cls`` (timm's), ``pretrained_cfg``, ``pretrained_strict``, ``cache_dir``.
    """
    if not isinstance(model_name, (str, os.PathLike)):
        raise TypeError(f"model_name must be a str, got {type(model_name).__name__}")
    if pretrained_cfg_overlay is not None and not isinstance(pretrained_cfg_overlay, dict):
        raise TypeError("pretrained_cfg_overlay must be a dict, e.g. {'file': 'path/to/weights.safetensors'}")
    if num_classes is not None:
        check_head_args(num_classes)
        kwargs["num_classes"] = num_classes
    cache_dir = kwargs.pop("cache_dir", None)
    strict = kwargs.pop("pretrained_strict", True)
    features = {k: kwargs.pop(k) for k in _FEATURE_KWARGS if k in kwargs}
    source = resolve_source(model_name, cache_dir)
    entry = get_entry(source.name)
    cfg = _model_cfg(
        entry, kwargs.pop("pretrained_cfg", None), {**source.cfg_overlay, **(pretrained_cfg_overlay or {})}
    )

    # every weight file is read (and refused if unreadable) before anything is built
    weights = read_weights(cfg, cache_dir, source.config) if (pretrained or source.pretrained) else None
    checkpoint = _read_local(checkpoint_path) if checkpoint_path else None
    args = {}
    for found in (weights, checkpoint):
        if found is not None:
            args.update(checkpoint_args(entry, found))
    model_cfg = {k: v for k, v in cfg.items() if k not in _SOURCE_KEYS}
    model = entry.fn(pretrained=False, pretrained_cfg=model_cfg, **{**args, **kwargs})
    if weights is not None:
        load_state_dict_checked(
            model, weights.state_dict, weights.where, cfg=cfg, filter_fn=entry.filter_fn, strict=strict
        )
    if checkpoint is not None:
        load_state_dict_checked(
            model,
            checkpoint.state_dict,
            checkpoint.where,
            cfg=model_cfg,
            filter_fn=entry.filter_fn,
            strict=strict,
            adapt_classifier=False,
        )
    if features.pop("features_only", False):
        model = wrap_features(model, source.name, **features)
    return model


def _feature_class(feature_cls: str | type | None) -> type:
    """timm's feature wrapper for a ``feature_cls`` name ('getter' by default: ``forward_intermediates``)."""
    if feature_cls is None or isinstance(feature_cls, type):
        return feature_cls or FeatureGetterNet
    classes = {"getter": FeatureGetterNet, "hook": FeatureHookNet, "dict": FeatureDictNet, "list": FeatureListNet}
    key = str(feature_cls).lower()
    if key not in classes:
        raise ValueError(f"feature_cls={feature_cls!r} is not one of {', '.join(classes)} (timm's feature wrappers)")
    return classes[key]


def _check_out_indices(out_indices, num_stages: int, name: str):
    if out_indices is None:
        return tuple(range(num_stages))
    if isinstance(out_indices, int):
        if not 0 < out_indices <= num_stages:
            raise ValueError(
                f"out_indices={out_indices} asks for the last {out_indices} stages; {name} has {num_stages}"
            )
        return out_indices
    for i in out_indices:
        if not isinstance(i, int) or not -num_stages <= i < num_stages:
            raise ValueError(
                f"out_indices={tuple(out_indices)} is out of range: {name} has {num_stages} feature "
                f"stages (valid indices 0..{num_stages - 1})"
            )
    return tuple(out_indices)


def wrap_features(
    model: nn.Module,
    name: str,
    out_indices=None,
    feature_cls=None,
    norm: bool = False,
    feature_cfg: dict[str, Any] | None = None,
) -> nn.Module:
    """``features_only=True``: the model behind timm's feature wrapper (``feature_cls``: getter, hook, dict, list)."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"{name} has no feature_info: features_only=True is for the vision backbones")
    out_indices = _check_out_indices(out_indices, len(info), name)
    cls = _feature_class(feature_cls)
    cfg = dict(feature_cfg or {})
    if issubclass(cls, FeatureGetterNet):
        wrapped = cls(model, out_indices=out_indices, norm=norm, **cfg)
    else:
        if norm:
            raise ValueError("norm=True applies to feature_cls='getter' only (timm's rule)")
        indices = out_indices if not isinstance(out_indices, int) else tuple(range(len(info) - out_indices, len(info)))
        if issubclass(cls, (FeatureDictNet, FeatureHookNet)):
            cfg.setdefault("flatten_sequential", True)
        # the stages' own layout (MetaFormer's stages run channels-last): recorded, as timm does, in output_fmt
        cfg.setdefault("output_fmt", getattr(model, "stage_output_fmt", "NCHW"))
        unsupported = f"feature_cls={feature_cls!r} cannot wrap {name}: use feature_cls='getter' (the default)"
        # timm's list/dict/hook wrappers run the model's top-level modules in order, in place of forward_features
        containers = [n for n, c in model.named_children() if isinstance(c, (nn.ModuleList, nn.ModuleDict))]
        if containers:
            raise ValueError(
                f"{unsupported}; the list/dict/hook wrappers run the top-level modules in order, and "
                f"{', '.join(containers)} is a container that {name}'s forward_features steps through"
            )
        try:
            wrapped = cls(model, out_indices=tuple(i % len(info) for i in indices), **cfg)
        except (AssertionError, KeyError, ValueError, RuntimeError) as e:
            raise ValueError(f"{unsupported} ({e})") from e
    wrapped.pretrained_cfg = wrapped.default_cfg = model.pretrained_cfg
    return wrapped


def _timm_entrypoint(name: str):
    """A timm entry point for a zoo model: ``timm.create_model(name, ...)`` builds it through this factory."""

    def entrypoint(pretrained: bool = False, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if v is not None}  # timm passes its unset options as None
        return create_model(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"zoo's {name} (zoo.create_model)"
    return entrypoint


def register_in_timm() -> None:
    """Register the zoo's vision models in timm's registry under the names timm does not own; idempotent."""
    for name in list_models(task="image-classification"):
        entry = get_entry(name)
        if name in _timm_checked:
            continue
        _timm_checked.add(name)
        entry.timm_owns_name = timm.models.is_model(name)
        if not entry.timm_owns_name:
            timm_registry.register_model(_timm_entrypoint(name))


_timm_checked: set = set()
register_in_timm()


def load_pretrained(
    model: nn.Module,
    cfg: dict[str, Any] | None = None,
    filter_fn=None,
    strict: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, list]:
    """Load the weights a pretrained cfg names (default: the model's own) into a built ``model``, checked first."""
    cfg = dict(cfg if cfg is not None else getattr(model, "pretrained_cfg", None) or {})
    weights = read_weights(cfg, cache_dir)
    return load_state_dict_checked(
        model, weights.state_dict, weights.where, cfg=cfg, filter_fn=filter_fn, strict=strict
    )
