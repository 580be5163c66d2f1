"""create_model: one build path for every family, and the one place that decides where weights come from.

1. :func:`resolve_weight_source` reads the name: a registered name; ``hf-hub:ORG/NAME`` (the repo's ``config.json``
   names the architecture and its arguments); or a local folder the zoo or timm wrote (``config.json`` beside the
   weights; ``local-dir:PATH`` or a plain path; a training run's folder stands for its ``export/``).
2. :func:`zoo.weight_record.read_weights` reads what the weights the pretrained cfg names hold (``state_dict``,
   ``file`` -- a file or a folder --, ``hf_hub_id``; and ``checkpoint_path=``): the state dict, the ``config.json``
   that describes it, the architecture it names (another's is refused) and the arguments it records, for vision and
   language models alike.
3. The family's builder builds the architecture: registry defaults, then what the checkpoint describes, then the
   caller's arguments (the caller wins).
4. The weights are converted (the family's ``checkpoint_filter_fn``), checked against the model, then copied; a
   checkpoint that does not fit raises before anything is loaded.
5. A language model's load, and only a language model's, goes through :mod:`zoo.lm_loading`: the
   ``generation_config.json`` beside its weights (transformers' file) becomes ``model.generation_config``, its
   values checked before anything is built; ``quantize="bf16" | "int8" | "int4"`` (:mod:`zoo.lm.quant`) quantizes
   the model after its float weights are loaded. Weights already quantized (a folder whose config.json records
   ``quantization``, a QAT checkpoint with fake-quantizer scales) are loaded into a model quantized the same way,
   never cast to float; asking for another format than theirs is refused.

A ``config.json`` that came with weights (a Hub repo's, a folder's) may describe an architecture and nothing else:
the pretrained-cfg fields of preprocessing, labels and provenance (:data:`CONFIG_CFG_FIELDS`) and the
architecture's own arguments, with plausible sizes. A key that names files, folders, URLs, devices or how weights
load is refused by name before anything is read or built, as is any other pretrained-cfg field. Its sizes are
bounded per value there and per model here: the model it describes is first built on the meta device (no memory,
milliseconds) and its parameters counted; above ``max_params`` (:data:`MAX_PARAMS` unless raised) nothing is built.

``pretrained=True`` weights adapt to the model as timm's do (a classifier of another size keeps its fresh init,
a first conv of other input channels is adapted); ``checkpoint_path=`` loads a checkpoint of *this* model and
must fit exactly. That is the one difference between the two, and it is deliberate.
"""

import dataclasses
import logging
import math
import os
import sys
import types
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import DefaultCfg, PretrainedCfg
from timm.models import _registry as timm_registry
from timm.models._features import FeatureDictNet, FeatureGetterNet, FeatureHookNet, FeatureListNet
from timm.models._features_fx import FeatureGraphNet
from torch import nn

from . import models  # noqa: F401  (importing the families registers them)
from .config_rules import CONFIG_CFG_FIELDS, LOAD_SWITCHES, config_overlay
from .hub import CONFIG_NAME, WEIGHTS_NAME, read_config_file, read_hub_config
from .layers import check_head_args
from .lm.quant import QuantSpec
from .lm_loading import read_lm_weights
from .registry import ModelEntry, get_entry, list_models, split_name_tag
from .run_layout import export_folder, is_run_folder
from .weight_record import Weights, model_folder, read_weights
from .weights import CheckpointError, load_state_dict_checked

__all__ = [
    "CONFIG_CFG_FIELDS",
    "FeatureGetter",
    "WeightSource",
    "create_model",
    "load_pretrained",
    "register_in_timm",
    "resolve_weight_source",
    "timm_default_cfg",
    "wrap_features",
]

_logger = logging.getLogger(__name__)

# arguments that steer building and loading, not the architecture
_FEATURE_KWARGS = ("features_only", "out_indices", "feature_cls", "norm", "feature_cfg")
# weight-location keys of a pretrained cfg: consumed here, never part of the model's cfg
_SOURCE_KEYS = ("file", "state_dict", "hf_hub_sha256")
_LOCAL_PREFIX = "local-dir:"
_HUB_PREFIX = "hf-hub:"
# parameters (and buffers) a model that a folder's or a Hub repo's config.json describes may have, unless the caller
# raises it (create_model's max_params=, else this environment variable): the largest registered model has 1.7e9
MAX_PARAMS = 2_500_000_000
MAX_PARAMS_ENV = "ZOO_MAX_PARAMS"


@dataclass
class WeightSource:
    """What a model name resolves to: the registered architecture, where its weights are, what describes them."""

    name: str
    cfg_overlay: dict[str, Any]
    config: dict[str, Any] | None = None  # the config.json describing the weights, when already read
    pretrained: bool = False  # the name itself names weights (a Hub repo or a folder)


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


def resolve_weight_source(model_name: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> WeightSource:
    """A registered name, ``hf-hub:ORG/NAME`` or a model folder -> the architecture and where its weights are."""
    name = os.fspath(model_name)
    if name.startswith(_HUB_PREFIX):
        repo_id = name[len(_HUB_PREFIX) :]
        config = read_hub_config(repo_id, cache_dir)
        overlay = config_overlay(config, f"{name}/{CONFIG_NAME}")
        overlay.update(hf_hub_id=repo_id, hf_hub_filename=WEIGHTS_NAME, source="hf-hub")
        if config.get("hf_hub_sha256"):
            overlay["hf_hub_sha256"] = config["hf_hub_sha256"]
        return WeightSource(_architecture(config, name), overlay, config, pretrained=True)
    local = name[len(_LOCAL_PREFIX) :] if name.startswith(_LOCAL_PREFIX) else None
    if local is not None or (not _is_registered(name) and Path(name).is_dir()):
        if local is not None and not Path(local).exists():
            raise CheckpointError(f"{name}: {local} does not exist (no folder at {Path(local).absolute()})")
        folder = model_folder(Path(local if local is not None else name))
        if folder is None:
            path = Path(local or name)
            if is_run_folder(path):  # a training run that has not written its export/ (yet)
                raise CheckpointError(
                    f"{path} is a training run without export/ (its model folder): write it with `zoo publish "
                    f"{path} --repo ORG/NAME --no-push --out-dir {export_folder(path)}`, then load the run folder"
                )
            raise CheckpointError(
                f"{local or name} is not a model folder: it has no {CONFIG_NAME} (nor does its "
                "export/); pass a registered name with pretrained_cfg_overlay={'file': PATH}"
            )
        config = read_config_file(folder / CONFIG_NAME, str(folder / CONFIG_NAME))
        overlay = {**config_overlay(config, str(folder / CONFIG_NAME)), "file": str(folder), "source": "local-dir"}
        return WeightSource(_architecture(config, str(folder)), overlay, config, pretrained=True)
    return WeightSource(name, {})


def _is_registered(name: str) -> bool:
    return name in list_models()


def _model_cfg(entry: ModelEntry, pretrained_cfg: Any, overlay: dict[str, Any] | None, tag: str = "") -> dict[str, Any]:
    """The cfg a build uses: an explicit ``pretrained_cfg`` (dict or timm's ``PretrainedCfg``) replaces the
    registered one (timm's rule), a string names one of the registered tags (as ``name.tag`` does, which it
    overrides); then the overlay."""
    if isinstance(pretrained_cfg, dict):
        cfg = dict(pretrained_cfg)
    elif hasattr(pretrained_cfg, "to_dict"):
        cfg = pretrained_cfg.to_dict()
    elif isinstance(pretrained_cfg, str) or pretrained_cfg is None:
        cfg = dict(entry.cfg_for(pretrained_cfg or tag))
    else:
        raise TypeError(
            f"pretrained_cfg must be a tag ({', '.join(entry.tags) or 'none registered'}), a dict or timm's "
            f"PretrainedCfg; got {type(pretrained_cfg).__name__}"
        )
    cfg.update(overlay or {})
    cfg.setdefault("architecture", entry.name)
    return cfg


def create_model(
    model_name: str | os.PathLike,
    pretrained: bool | str | os.PathLike = False,
    num_classes: int | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model, timm-style, with weights from one resolved source.

    Args:
        model_name: a registered name (``zoo.list_models()``), ``hf-hub:ORG/NAME`` (a Hub repo with a zoo/timm
            ``config.json``), or a model folder the zoo wrote (``local-dir:PATH`` or the path; a training run's
            folder loads its ``export/``). A repo or folder rebuilds the architecture its config.json describes;
            that config.json may describe an architecture only (see the module's docstring).
        pretrained: ``True``: load the weights ``pretrained_cfg_overlay={"file": PATH}`` names (a file or a
            folder) when given, else the Hub repo in the model's pretrained cfg (``HF_ENDPOINT`` picks the
            endpoint); implied by a repo or folder name. A tag (``pretrained="sail_in1k"``, as ``NAME.sail_in1k``)
            loads that tag's weights; a path (a file or a folder, ``str`` or ``os.PathLike``) loads those weights
            as the overlay's ``file`` does. A tag that is not registered or a path that does not exist is an
            error, never a download of other weights.
        num_classes: classifier size; pretrained weights with another size keep the new classifier's init.
        checkpoint_path: a checkpoint of this very model (any supported origin) loaded after building; it must fit.
        **kwargs: model arguments (``in_chans``, ``drop_path_rate``, ...), ``features_only`` / ``out_indices`` /
            ``feature_cls`` (timm's), ``pretrained_cfg``, ``pretrained_strict``, ``cache_dir``, and two checks
            to switch off on purpose: ``allow_architecture_mismatch=True`` loads weights whose file (safetensors
            metadata or config.json) names another architecture of the same layout; ``allow_nonfinite=True``
            loads weights holding NaN or inf. Language models take ``quantize`` too: ``"bf16"``, ``"int8"``,
            ``"int4"`` (groups of 32) or a ``quantization`` dict such as ``{"method": "int4_weight_only",
            "group_size": 64, "scheme": "asymmetric"}`` (:mod:`zoo.lm.quant`); weights that are already
            quantized load as they are, in the format their folder records. ``max_params``: the most parameters
            (buffers included) a model described by a folder's or Hub repo's config.json may have, counted on the
            meta device before anything is built (default: the ``ZOO_MAX_PARAMS`` environment variable, else
            2.5e9); the caller's own arguments are not bounded.
    """
    if not isinstance(model_name, (str, os.PathLike)):
        raise TypeError(f"model_name must be a str, got {type(model_name).__name__}")
    if pretrained_cfg_overlay is not None and not isinstance(pretrained_cfg_overlay, dict):
        raise TypeError("pretrained_cfg_overlay must be a dict, e.g. {'file': 'path/to/weights.safetensors'}")
    if num_classes is not None:
        check_head_args(num_classes)
        kwargs["num_classes"] = num_classes
    options = _LoadOptions.pop_from(kwargs)
    source = resolve_weight_source(model_name, options.cache_dir)
    arch, tag = split_name_tag(source.name)  # ``name.tag``: that tag's pretrained cfg (and weights)
    source = dataclasses.replace(source, name=arch)
    entry = get_entry(arch)
    pretrained, tag, named = _pretrained_arg(pretrained, entry, tag, source, pretrained_cfg_overlay, kwargs)
    if named:
        pretrained_cfg_overlay = {**(pretrained_cfg_overlay or {}), **named}
    if options.quantize is not None and entry.task != "text-generation":
        raise ValueError(
            f"quantize= is for the language models; {source.name} is a {entry.task} model (export it with "
            "zoo export --format onnx --quantize int8 for int8 weights)"
        )
    cfg = _model_cfg(
        entry, kwargs.pop("pretrained_cfg", None), {**source.cfg_overlay, **(pretrained_cfg_overlay or {})}, tag
    )
    # every weight file is read (and refused if unreadable or another architecture's) before anything is built
    weights = _read(cfg, entry, options, source.config) if (pretrained or source.pretrained) else None
    checkpoint = _read(checkpoint_path, entry, options) if checkpoint_path else None
    # only a language model's weights carry a generation config and quantized codes
    lm = read_lm_weights(weights, checkpoint, options.quantize) if entry.task == "text-generation" else None
    args, from_config = _recorded_args(weights, checkpoint)
    model_cfg = {k: v for k, v in cfg.items() if k not in _SOURCE_KEYS}
    if from_config:  # a config.json (a folder's, a Hub repo's) decided sizes: counted before anything is allocated
        _check_model_size(entry, model_cfg, args, kwargs, from_config, options.max_params)
    model = _build(entry, model_cfg, args, kwargs, from_config)
    if lm is not None:
        lm.before_load(model)
    # pretrained weights adapt (classifier, input channels); a checkpoint_path must fit as it is
    _load_weights(model, entry, options, ((weights, cfg, True), (checkpoint, model_cfg, False)))
    if lm is not None:
        lm.after_load(model)
    if options.features.pop("features_only", False):
        model = wrap_features(model, source.name, **options.features)
    return model


def _pretrained_arg(
    pretrained: Any,
    entry: ModelEntry,
    tag: str,
    source: WeightSource,
    overlay: dict[str, Any] | None,
    kwargs: dict[str, Any],
) -> tuple[bool, str, dict[str, Any]]:
    """``create_model``'s ``pretrained=`` read as ``(load weights, tag, cfg overlay naming a file)``.

    ``True`` / ``False`` (or None) as in timm; a registered tag of the model (``pretrained="sail_in1k"`` is
    ``NAME.sail_in1k`` with ``pretrained=True``); a file or a folder (``os.PathLike`` or a string naming an existing
    path), read as ``pretrained_cfg_overlay={"file": PATH}`` is. Anything else is refused before anything is read, so
    that a value the zoo cannot honour never falls back to other weights (a mistyped path is not the Hub's)."""
    if pretrained is None or isinstance(pretrained, bool):
        return bool(pretrained), tag, {}
    if not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(
            f"pretrained must be True/False, a pretrained tag of {entry.name} or a path to weights (file or folder), "
            f"got {type(pretrained).__name__}"
        )
    value = os.fspath(pretrained)
    named_tags = [t for t in entry.pretrained_cfgs if t]
    if isinstance(pretrained, str) and value in named_tags:
        if tag and tag != value:
            raise ValueError(
                f"two pretrained tags for {entry.name}: {tag!r} in the name and pretrained={value!r}; give one"
            )
        chosen = kwargs.get("pretrained_cfg")
        if isinstance(chosen, str) and chosen not in ("", value):
            raise ValueError(f"pretrained={value!r} and pretrained_cfg={chosen!r} name two tags; give one")
        if source.pretrained:
            raise ValueError(
                f"{source.cfg_overlay.get('file') or source.cfg_overlay.get('hf_hub_id')} already names weights; "
                f"pretrained={value!r} (a tag of the registered cfgs) does not apply to it: pass pretrained=True"
            )
        return True, value, {}
    path = Path(value)
    if not value or not path.exists():
        tags = ", ".join(repr(t) for t in named_tags) or "none (no pretrained weights are registered)"
        raise CheckpointError(
            f"pretrained={value!r} is neither an existing file or folder (nothing at {path.absolute()}) nor a "
            f"pretrained tag of {entry.name} (its tags: {tags}); pass the path of the weights, a tag, or True for "
            "the registered weights. Nothing was downloaded."
        )
    if source.pretrained:
        where = source.cfg_overlay.get("file") or source.cfg_overlay.get("hf_hub_id")
        raise ValueError(
            f"the model name already names weights ({where}) and pretrained={value!r} names others; give one of them"
        )
    given = sorted(k for k in _SOURCE_KEYS + ("hf_hub_id",) if (overlay or {}).get(k) is not None)
    if given:
        raise ValueError(
            f"pretrained={value!r} and pretrained_cfg_overlay[{given[0]!r}] both name weights; give one of them"
        )
    return True, tag, {"file": value}


def _read(source: Any, entry: ModelEntry, options: "_LoadOptions", config: dict[str, Any] | None = None) -> Weights:
    """What a source holds, for ``entry``: :func:`zoo.weight_record.read_weights` with the caller's switches."""
    allow = options.switches["allow_architecture_mismatch"]
    return read_weights(source, options.cache_dir, config, entry=entry, allow_architecture_mismatch=allow)


def _recorded_args(*sources: Weights | None) -> tuple[dict[str, Any], dict[str, str]]:
    """The architecture arguments the weights record (later sources win), and the file each one came from."""
    args, from_config = {}, {}
    for found in sources:
        if found is not None:
            args.update(found.args)
            from_config.update(dict.fromkeys(found.args, found.described_by))
    return args, from_config


def _load_weights(
    model: nn.Module,
    entry: ModelEntry,
    options: "_LoadOptions",
    sources: tuple[tuple[Weights | None, dict[str, Any], bool], ...],
) -> None:
    """Each found source's state dict into ``model`` (checked key by key), with its cfg and whether it adapts."""
    for found, found_cfg, adapt in sources:
        if found is not None:
            load_state_dict_checked(
                model,
                found.state_dict,
                found.where,
                cfg=found_cfg,
                filter_fn=entry.filter_fn,
                strict=options.strict,
                adapt_classifier=adapt,
                architecture=found.architecture,
                **options.switches,
            )


@dataclass
class _LoadOptions:
    """The loading switches ``create_model`` takes out of its keyword arguments (the rest go to the builder)."""

    cache_dir: str | os.PathLike | None
    strict: bool
    switches: dict[str, bool]
    features: dict[str, Any]
    quantize: QuantSpec | None
    max_params: int

    @classmethod
    def pop_from(cls, kwargs: dict[str, Any]) -> "_LoadOptions":
        return cls(
            cache_dir=kwargs.pop("cache_dir", None),
            strict=kwargs.pop("pretrained_strict", True),
            switches={k: bool(kwargs.pop(k, False)) for k in LOAD_SWITCHES},
            # timm's feature switch ``norm`` is a bool; a string is an architecture argument (ConvNet-D's
            # ``norm="batchnorm"``)
            features={
                k: kwargs.pop(k)
                for k in _FEATURE_KWARGS
                if k in kwargs and not (k == "norm" and isinstance(kwargs[k], str))
            },
            quantize=QuantSpec.parse(kwargs.pop("quantize", None)),
            max_params=_max_params(kwargs.pop("max_params", None)),
        )


def _max_params(value: Any) -> int:
    """``max_params=``, else ``ZOO_MAX_PARAMS``, else :data:`MAX_PARAMS`; a positive whole number."""
    where = "max_params"
    if value is None:
        text = os.environ.get(MAX_PARAMS_ENV, "").strip()
        if not text:
            return MAX_PARAMS
        where = MAX_PARAMS_ENV
        try:
            value = float(text)
        except ValueError:
            value = text
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{where} must be a positive whole number of parameters, e.g. 5e9; got {value!r}")
    return value


def _count_params(model: nn.Module) -> int:
    """Parameters and buffers, each tensor once (tied weights share one)."""
    seen = {id(t): t.numel() for t in (*model.parameters(), *model.buffers())}
    return sum(seen.values())


def _check_model_size(
    entry: ModelEntry,
    cfg: dict[str, Any],
    args: dict[str, Any],
    kwargs: dict[str, Any],
    from_config: dict[str, str],
    limit: int,
) -> None:
    """Refuse a model whose config.json makes it larger than ``limit`` parameters: built on the meta device (shapes
    only, nothing allocated) and counted, before the real build."""
    # a caller's device= would take the build off the meta device: counted on meta all the same
    on_meta = {**kwargs, "device": "meta"} if "device" in kwargs else kwargs
    with torch.device("meta"):
        n = _count_params(_build(entry, cfg, args, on_meta, from_config))
    if n <= limit:
        return
    where = next(iter(dict.fromkeys(from_config.values())))
    described = ", ".join(f"{k}={v}" for k, v in args.items())
    size = f"{n * 4 / 1024**3:.1f} GiB" if n * 4 >= 1024**3 / 10 else f"{n * 4 / 1024**2:.1f} MiB"
    raise CheckpointError(
        f"{where} describes a {entry.name} of {n:,} parameters ({described[:300]}), more than max_params="
        f"{limit:,}; nothing was built (it would take {size} in float32). A config.json that "
        f"came with weights is checked against this bound; if you trust it, pass create_model(..., max_params=N) "
        f"or set {MAX_PARAMS_ENV}=N."
    )


def _build(
    entry: ModelEntry, cfg: dict[str, Any], args: dict[str, Any], kwargs: dict[str, Any], from_config: dict[str, str]
) -> nn.Module:
    """The family's builder on the checkpoint's arguments and the caller's (who wins), recorded as the model's
    ``model_args``. An argument the architecture does not take is named with the config.json it came from
    (builders check keys before building)."""
    try:
        model = entry.fn(pretrained=False, pretrained_cfg=cfg, **{**args, **kwargs})
    except TypeError as e:
        named = [k for k in args if k not in kwargs and repr(k) in str(e)]
        if not named:
            raise
        raise CheckpointError(
            f"{from_config[named[0]]} sets model_args.{named[0]}, which {entry.name} does not take: a config.json "
            f"may give only the architecture's own arguments. Nothing was built. ({e})"
        ) from e
    model.model_args = {**args, **kwargs}  # what rebuilds it (model.save_pretrained writes them to config.json)
    return model


class FeatureGetter(FeatureGetterNet):
    """timm's getter wrapper (``forward_intermediates``; the zoo's default for ``features_only=True``) with the
    model's ``set_grad_checkpointing``, as detection and segmentation pipelines call it on a backbone."""

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)


def _feature_class(feature_cls: str | type | None) -> type:
    """timm's feature wrapper for a ``feature_cls`` name ('getter' by default: ``forward_intermediates``)."""
    if feature_cls is None or isinstance(feature_cls, type):
        return FeatureGetter if feature_cls in (None, FeatureGetterNet) else feature_cls
    classes = {
        "getter": FeatureGetter,
        "hook": FeatureHookNet,
        "dict": FeatureDictNet,
        "list": FeatureListNet,
        "fx": FeatureGraphNet,
    }
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
    stages = [i % num_stages for i in out_indices]
    if len(set(stages)) < len(stages) or stages != sorted(stages):
        # the maps come out one per stage in stage order, so feature_info would describe other maps than returned
        raise ValueError(
            f"out_indices={tuple(out_indices)} names a stage twice or out of order: {name} returns one map per stage, "
            f"in stage order; give each stage once, in increasing order, e.g. out_indices={tuple(sorted(set(stages)))}"
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
    """``features_only=True``: the model behind timm's feature wrapper (``feature_cls``, or ``feature_cfg``'s:
    getter, the default, with ``set_grad_checkpointing``; fx; hook, dict, list)."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"{name} has no feature_info: features_only=True is for the vision backbones")
    out_indices = _check_out_indices(out_indices, len(info), name)
    cfg = dict(feature_cfg or {})
    cls = _feature_class(cfg.pop("feature_cls", None) if feature_cls is None else feature_cls)
    if issubclass(cls, FeatureGetterNet):
        for key in ("flatten_sequential", "no_rewrite", "feature_cls"):  # the other wrappers' options (timm's rule)
            cfg.pop(key, None)
        wrapped = cls(model, out_indices=out_indices, norm=norm, **cfg)
    elif issubclass(cls, FeatureGraphNet):  # torch.fx: the graph of forward_features, cut at the stages' outputs
        if norm:
            raise ValueError("norm=True applies to feature_cls='getter' only (timm's rule)")
        indices = out_indices if not isinstance(out_indices, int) else tuple(range(len(info) - out_indices, len(info)))
        cfg.pop("flatten_sequential", None)
        cfg.setdefault("output_fmt", getattr(model, "stage_output_fmt", "NCHW"))
        wrapped = cls(model, out_indices=tuple(i % len(info) for i in indices), **cfg)
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


# timm's ``register_model`` files an entry point under its module and takes the pretrained cfgs from that module's
# ``default_cfgs``: the zoo's entry points live in a module of their own, so that zoo.factory's namespace (and its
# ``__all__``, which timm extends with each name) stays the factory's
_TIMM_MODULE = types.ModuleType("zoo.timm_models", "The zoo's vision models in timm's registry (zoo.factory).")
_TIMM_MODULE.default_cfgs = {}
_TIMM_MODULE.__all__ = []
sys.modules.setdefault(_TIMM_MODULE.__name__, _TIMM_MODULE)
_PRETRAINED_CFG_FIELDS = {f.name for f in dataclasses.fields(PretrainedCfg)}


def timm_default_cfg(entry: ModelEntry) -> DefaultCfg:
    """A registered model's pretrained cfgs as timm's registry holds them: one ``PretrainedCfg`` per tag (the zoo's
    fields that timm's dataclass lacks left out), the default tag first."""
    cfgs = {
        tag: PretrainedCfg(**{k: v for k, v in cfg.items() if k in _PRETRAINED_CFG_FIELDS})
        for tag, cfg in entry.pretrained_cfgs.items()
    }
    return DefaultCfg(tags=deque(cfgs), cfgs=cfgs, is_pretrained=any(c.has_weights for c in cfgs.values()))


def _timm_entrypoint(name: str):
    """A timm entry point for a zoo model: ``timm.create_model(name, ...)`` builds it through this factory
    (``name.tag`` arrives as ``pretrained_cfg="tag"``, which :func:`create_model` takes as timm does)."""

    def entrypoint(pretrained: bool = False, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if v is not None}  # timm passes its unset options as None
        return create_model(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = _TIMM_MODULE.__name__
    entrypoint.__doc__ = f"zoo's {name} (zoo.create_model)"
    return entrypoint


def register_in_timm() -> None:
    """Register the zoo's vision models, with their pretrained cfgs and tags, in timm's registry under the names
    timm does not own; idempotent."""
    for name in list_models(task="image-classification"):
        entry = get_entry(name)
        if name in _timm_checked:
            continue
        _timm_checked.add(name)
        entry.timm_owns_name = timm.models.is_model(name)
        if not entry.timm_owns_name:
            entrypoint = _timm_entrypoint(name)
            setattr(_TIMM_MODULE, name, entrypoint)
            _TIMM_MODULE.default_cfgs[name] = timm_default_cfg(entry)
            timm_registry.register_model(entrypoint)


_timm_checked: set = set()
register_in_timm()


def load_pretrained(
    model: nn.Module,
    cfg: dict[str, Any] | None = None,
    filter_fn=None,
    strict: bool = True,
    cache_dir: str | os.PathLike | None = None,
    allow_architecture_mismatch: bool = False,
    allow_nonfinite: bool = False,
) -> dict[str, list]:
    """Load the weights a pretrained cfg names (default: the model's own) into a built ``model``, checked first
    (see :func:`zoo.weights.load_state_dict_checked` for the checks and the two switches)."""
    cfg = dict(cfg if cfg is not None else getattr(model, "pretrained_cfg", None) or {})
    weights = read_weights(cfg, cache_dir)
    return load_state_dict_checked(
        model,
        weights.state_dict,
        weights.where,
        cfg=cfg,
        filter_fn=filter_fn,
        strict=strict,
        architecture=weights.architecture,
        allow_architecture_mismatch=allow_architecture_mismatch,
        allow_nonfinite=allow_nonfinite,
    )
