"""The zoo's model registry: names -> builder, pretrained cfg, family/task tags and reference figures.

Shaped like timm's registry. Family files register their builders with :func:`register_model`; vision builders
call :func:`build_vision_model`, which reuses timm's ``build_model_with_cfg`` with the zoo's own pretrained cfg,
then loads weights through the zoo's checked loader and wraps ``features_only`` models with timm's
``FeatureGetterNet``. After ``import zoo``, every zoo vision model whose name timm does not own is also
registered in timm's registry, so ``timm.create_model(name)`` builds it; names timm owns are left alone.
"""
import dataclasses
import difflib
import fnmatch
import inspect
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from torch import nn

from .layers import check_head_args

__all__ = [
    "ModelEntry",
    "UnknownModelError",
    "build_vision_model",
    "create_model",
    "get_entry",
    "list_families",
    "list_models",
    "list_pretrained",
    "model_info",
    "reference_table",
    "register_model",
]


class UnknownModelError(ValueError):
    """Raised for a model name the registry does not know; the message lists the closest names."""


@dataclass
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    family: str
    task: str
    pretrained_cfg: Dict[str, Any]
    reference: Dict[str, Any] = field(default_factory=dict)

    @property
    def has_weights(self) -> bool:
        cfg = self.pretrained_cfg
        return bool(cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file"))


_entries: Dict[str, ModelEntry] = {}


def reference_table(rows) -> Dict[str, Dict[str, Any]]:
    """``{name: {params, macs, gmacs, top1}}`` from ``(name, params, macs, top1)`` rows (gmacs derived)."""
    return {name: dict(params=params, macs=macs, gmacs=round(macs / 1e9, 2), top1=top1)
            for name, params, macs, top1 in rows}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name.

    The builder's module provides ``FAMILY`` (dict with ``name`` and ``task``), ``default_cfgs`` (name ->
    pretrained cfg dict with timm's ``PretrainedCfg`` fields) and optionally ``reference_figures``.
    """
    mod = sys.modules[fn.__module__]
    name = fn.__name__
    if name in _entries:
        raise ValueError(f"model name {name!r} is registered twice ({_entries[name].fn.__module__} and {fn.__module__})")
    family = getattr(mod, "FAMILY")
    cfg = dict(getattr(mod, "default_cfgs", {}).get(name, {}))
    cfg.setdefault("architecture", name)
    _entries[name] = ModelEntry(
        name=name, fn=fn, family=family["name"], task=family["task"], pretrained_cfg=cfg,
        reference=dict(getattr(mod, "reference_figures", {}).get(name, {})),
    )
    return fn


def get_entry(name: str) -> ModelEntry:
    _ensure_models_imported()
    try:
        return _entries[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(name, list(_entries), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"Unknown model {name!r}.{hint} `zoo list` (or zoo.list_models()) shows every name.")


def list_models(pattern: str = "*", family: Optional[str] = None, pretrained: bool = False,
                task: Optional[str] = None) -> List[str]:
    """Registered names matching a shell-style ``pattern``, optionally one ``family`` / ``task``, with weights."""
    _ensure_models_imported()
    if family is not None and family not in list_families():
        raise ValueError(f"unknown family {family!r}; known: {', '.join(list_families())}")
    names = []
    for name, entry in _entries.items():
        if not fnmatch.fnmatch(name, pattern):
            continue
        if family is not None and entry.family != family:
            continue
        if task is not None and entry.task != task:
            continue
        if pretrained and not entry.has_weights:
            continue
        names.append(name)
    return sorted(names)


def list_pretrained(pattern: str = "*") -> List[str]:
    return list_models(pattern, pretrained=True)


def list_families() -> List[str]:
    _ensure_models_imported()
    return sorted({e.family for e in _entries.values()})


_CONVENTIONS = {
    "image-classification": "params: sum(p.numel()) of the authors' model; MACs: fvcore total at 1x3x224x224 "
                            "(one multiply-add = 1); top-1: the paper's ImageNet-1k figure",
    "text-generation": "params: unique parameters of the authors' model (tied embeddings counted once); MACs per "
                       "token: zoo.profile of an LM (prefill and decode); commonsense_avg: the authors' zero-shot "
                       "average where published",
}


def model_info(name: str) -> Dict[str, Any]:
    """Family, task, paper, reference params/MACs/top-1 and the default pretrained cfg of a registered model."""
    entry = get_entry(name)
    cfg = dict(entry.pretrained_cfg)
    ref = dict(entry.reference)
    return {
        "name": name,
        "family": entry.family,
        "task": entry.task,
        "paper": cfg.get("paper_name"),
        "paper_ids": cfg.get("paper_ids"),
        "code": cfg.get("origin_url"),
        "license": cfg.get("license"),
        "reference": {
            "params": ref.get("params"),
            "macs": ref.get("macs"),
            "gmacs": ref.get("gmacs"),
            "top1": ref.get("top1"),
            **{k: v for k, v in ref.items() if k not in ("params", "macs", "gmacs", "top1")},
            "convention": _CONVENTIONS.get(entry.task, _CONVENTIONS["image-classification"]),
            **({"dense_vs_nonzero": "params/macs count every weight (dense, zeros included); nonzero_params/"
                                    "nonzero_macs count only the non-zero weights of the sparse model"}
               if "nonzero_params" in ref else {}),
        },
        "timm_owns_name": _timm_owns(name),
        "pretrained_cfg": cfg,
    }


# ------------------------------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------------------------------

_BUILD_KWARGS = {"features_only", "out_indices", "feature_cls", "pretrained_cfg", "pretrained_cfg_overlay",
                 "checkpoint_path", "pretrained_strict", "cache_dir", "output_stride", "norm"}


def create_model(
    model_name: str,
    pretrained: bool = False,
    num_classes: Optional[int] = None,
    pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
    checkpoint_path: Optional[str] = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model, timm-style.

    Args:
        model_name: a registered name (``zoo.list_models()``), or ``hf-hub:ORG/NAME`` for a Hub repo holding a
            zoo/timm-format ``config.json`` and weights.
        pretrained: load weights: from ``pretrained_cfg_overlay={"file": PATH}`` when given, else from the
            Hub repo named in the model's pretrained cfg (``HF_ENDPOINT`` picks the endpoint).
        num_classes: classifier size; a different size than the weights' drops their classifier.
        checkpoint_path: load this checkpoint after building (any supported origin); the classifier must fit.
        **kwargs: model arguments (``in_chans``, ``drop_path_rate``, ``features_only``, ``out_indices``, ...).
    """
    if not isinstance(model_name, str):
        raise TypeError(f"model_name must be a str, got {type(model_name).__name__}")
    if model_name.startswith("hf-hub:"):
        from .hub import resolve_hub_model
        model_name, hub_overlay, hub_args = resolve_hub_model(model_name[len("hf-hub:"):],
                                                              cache_dir=kwargs.get("cache_dir"))
        pretrained_cfg_overlay = {**hub_overlay, **(pretrained_cfg_overlay or {})}
        kwargs = {**hub_args, **kwargs}  # the published architecture's arguments; the caller's win
        pretrained = True
    entry = get_entry(model_name)
    if num_classes is not None:
        check_head_args(num_classes)
        kwargs["num_classes"] = num_classes
    if pretrained_cfg_overlay is not None and not isinstance(pretrained_cfg_overlay, dict):
        raise TypeError("pretrained_cfg_overlay must be a dict, e.g. {'file': 'path/to/weights.safetensors'}")
    return entry.fn(pretrained=pretrained, pretrained_cfg_overlay=pretrained_cfg_overlay,
                    checkpoint_path=checkpoint_path, **kwargs)


def check_known_keys(kwargs, accepted, what: str, accepted_label: str = "Accepted"):
    """TypeError naming every key of ``kwargs`` that ``accepted`` lacks, each with the closest accepted key."""
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, sorted(accepted), n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(f"{what} got unexpected argument(s) {', '.join(hints)}. "
                        f"{accepted_label}: {', '.join(sorted(accepted))}")


def _check_kwargs(model_cls: type, variant: str, kwargs: Dict[str, Any]):
    params = inspect.signature(model_cls.__init__).parameters
    accepted = {n for n, p in params.items() if n != "self" and p.kind != p.VAR_KEYWORD}
    check_known_keys(kwargs, accepted | _BUILD_KWARGS, variant)


def build_vision_model(
    model_cls: type,
    variant: str,
    pretrained: bool = False,
    pretrained_filter_fn: Optional[Callable] = None,
    pretrained_cfg: Optional[Any] = None,
    pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
    checkpoint_path: Optional[str] = None,
    **kwargs,
) -> nn.Module:
    """Build ``model_cls`` for ``variant`` with timm's ``build_model_with_cfg`` and the zoo's pretrained cfg.

    Weights go through :func:`zoo.hub.load_weights` (safe formats only, checked before anything is copied);
    ``features_only=True`` returns timm's ``FeatureGetterNet`` over ``forward_intermediates``.
    """
    from timm.models import build_model_with_cfg
    from timm.models._features import FeatureGetterNet

    _check_kwargs(model_cls, variant, kwargs)
    features_only = kwargs.pop("features_only", False)
    out_indices = kwargs.pop("out_indices", None)
    feature_norm = kwargs.pop("norm", False)
    kwargs.pop("feature_cls", None)
    cache_dir = kwargs.pop("cache_dir", None)
    strict = kwargs.pop("pretrained_strict", True)
    if kwargs.pop("output_stride", None) not in (None, 32):
        raise ValueError(f"{variant} supports only output_stride=32")

    entry = _entries.get(variant)
    cfg = dict(entry.pretrained_cfg) if entry is not None else {}
    if isinstance(pretrained_cfg, dict):  # an explicit cfg replaces the registered one
        cfg = dict(pretrained_cfg)
    elif dataclasses.is_dataclass(pretrained_cfg):
        cfg = pretrained_cfg.to_dict()
    cfg.update(pretrained_cfg_overlay or {})
    cfg.setdefault("architecture", variant)
    # weight sources kept out of the model's cfg; hf_hub_sha256 (the zoo's checksum) is no timm PretrainedCfg field
    weights_cfg = {k: cfg.pop(k) for k in ("file", "state_dict", "hf_hub_sha256") if k in cfg}

    model = build_model_with_cfg(model_cls, variant, pretrained=False, pretrained_cfg=cfg, **kwargs)
    if pretrained:
        from .hub import load_pretrained
        load_pretrained(model, {**cfg, **weights_cfg}, filter_fn=pretrained_filter_fn, strict=strict,
                        cache_dir=cache_dir)
    if checkpoint_path:
        from .hub import load_checkpoint
        load_checkpoint(model, checkpoint_path, filter_fn=pretrained_filter_fn, strict=strict)

    if features_only:
        num_stages = len(getattr(model, "feature_info"))
        if out_indices is None:
            out_indices = tuple(range(num_stages))
        for i in out_indices if not isinstance(out_indices, int) else ():
            if not isinstance(i, int) or not -num_stages <= i < num_stages:
                raise ValueError(f"out_indices={tuple(out_indices)} is out of range: {variant} has {num_stages} "
                                 f"feature stages (valid indices 0..{num_stages - 1})")
        if isinstance(out_indices, int) and not 0 < out_indices <= num_stages:
            raise ValueError(f"out_indices={out_indices} asks for the last {out_indices} stages; "
                             f"{variant} has {num_stages}")
        model = FeatureGetterNet(model, out_indices=out_indices, norm=feature_norm)
        model.pretrained_cfg = model.default_cfg = cfg
    return model


# ------------------------------------------------------------------------------------------------------------------
# timm registry integration
# ------------------------------------------------------------------------------------------------------------------

_timm_owned: Dict[str, bool] = {}


def _timm_owns(name: str) -> bool:
    return _timm_owned.get(name, False)


def _register_in_timm():
    """Register zoo vision models into timm's registry under names timm does not already own."""
    import timm
    from timm.models import _registry as timm_registry

    for name, entry in _entries.items():
        if entry.task != "image-classification" or name in _timm_owned:
            continue
        owned = timm.models.is_model(name)
        _timm_owned[name] = owned
        if not owned:
            timm_registry.register_model(entry.fn)


_imported = False


def _ensure_models_imported():
    global _imported
    if not _imported:
        _imported = True
        from . import models  # noqa: F401  (registers every family)
        _register_in_timm()
