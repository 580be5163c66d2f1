"""The zoo's model table: names -> builder, pretrained cfg, family/task tags, reference figures, checkpoint hooks.

Shaped like timm's ``_registry.py`` and, like it, it knows no family: a family file registers its builders with
:func:`register_model`, which reads the family module's ``FAMILY``, ``default_cfgs``, ``reference_figures``,
``checkpoint_filter_fn`` and ``checkpoint_model_args``. Building and loading weights is :mod:`zoo.factory`'s job.
"""

import difflib
import fnmatch
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .layers.args import check_known_keys

__all__ = [
    "ModelEntry",
    "UnknownModelError",
    "check_known_keys",
    "get_entry",
    "list_families",
    "list_models",
    "list_pretrained",
    "model_info",
    "reference_table",
    "register_model",
    "unregister_model",
]


class UnknownModelError(ValueError):
    """Raised for a model name the registry does not know; the message lists the closest names."""


@dataclass
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    family: str
    task: str
    pretrained_cfg: dict[str, Any]
    reference: dict[str, Any] = field(default_factory=dict)
    # the family's checkpoint conversion: (state_dict, model) -> state_dict in the model's key names
    filter_fn: Callable[[dict[str, Any], nn.Module], dict[str, Any]] | None = None
    # the architecture arguments a checkpoint implies: (config.json dict or None, state_dict) -> kwargs
    model_args_fn: Callable[[dict[str, Any] | None, dict[str, Any]], dict[str, Any]] | None = None
    # whether timm's registry owned this name before the zoo registered its models there (set by the factory)
    timm_owns_name: bool = False

    @property
    def has_weights(self) -> bool:
        cfg = self.pretrained_cfg
        return bool(cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file"))


_entries: dict[str, ModelEntry] = {}
# what a registered name may be: a path never matches (no '/', no leading '.' or '~'), see _looks_like_path
_NAME = re.compile(r"[a-z][a-z0-9_.]*")


def reference_table(rows) -> dict[str, dict[str, Any]]:
    """``{name: {params, macs, gmacs, top1}}`` from ``(name, params, macs, top1)`` rows (gmacs derived)."""
    return {
        name: dict(params=params, macs=macs, gmacs=round(macs / 1e9, 2), top1=top1) for name, params, macs, top1 in rows
    }


def register_model(
    fn: Callable[..., nn.Module] | None = None, *, name: str | None = None
) -> Callable[..., nn.Module] | Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its function name, or under ``name`` when given.

    ``@register_model`` registers ``def caformer_s18(...)`` as ``caformer_s18``. A registered name that is not a
    Python identifier (the authors' size names, ``mobilellm_1.5b``) is given explicitly, the builder keeping a plain
    function name::

        @register_model(name="mobilellm_1.5b")
        def mobilellm_1_5b(pretrained=False, **kwargs): ...

    The builder's module provides ``FAMILY`` (dict with ``name`` and ``task``), ``default_cfgs`` (name ->
    pretrained cfg dict with timm's ``PretrainedCfg`` fields) and optionally ``reference_figures`` (name ->
    figures), ``checkpoint_filter_fn(state_dict, model)`` (other origins' keys -> the zoo's) and
    ``checkpoint_model_args(config, state_dict)`` (architecture arguments a checkpoint folder describes; default:
    timm's ``config.json`` schema), all keyed by the registered name.
    """
    if fn is None:
        return lambda f: register_model(f, name=name)
    name = fn.__name__ if name is None else name
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"model name {name!r} ({fn.__module__}.{fn.__name__}): a registered name is lowercase letters, digits, "
            "dots and underscores, starting with a letter"
        )
    if name in _entries:
        raise ValueError(
            f"model name {name!r} is registered twice ({_entries[name].fn.__module__} and {fn.__module__})"
        )
    mod = sys.modules[fn.__module__]
    family = mod.FAMILY
    cfg = dict(getattr(mod, "default_cfgs", {}).get(name, {}))
    cfg.setdefault("architecture", name)
    _entries[name] = ModelEntry(
        name=name,
        fn=fn,
        family=family["name"],
        task=family["task"],
        pretrained_cfg=cfg,
        reference=dict(getattr(mod, "reference_figures", {}).get(name, {})),
        filter_fn=getattr(mod, "checkpoint_filter_fn", None),
        model_args_fn=getattr(mod, "checkpoint_model_args", None),
    )
    return fn


def unregister_model(name: str) -> None:
    """Remove ``name`` from the table (a family registered at run time, e.g. by a test, going away)."""
    _entries.pop(name, None)


def get_entry(name: str) -> ModelEntry:
    try:
        return _entries[name]
    except KeyError:
        pass
    if _looks_like_path(name):
        _refuse_path(name)
    close = difflib.get_close_matches(name, list(_entries), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"Unknown model {name!r}.{hint} `zoo list` (or zoo.list_models()) shows every name.")


# what a path has and a registered name never does (names are lowercase words, digits, dots and underscores)
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".tar", ".json")


def _looks_like_path(name: str) -> bool:
    if "/" in name or "\\" in name or name.startswith(("~", ".")) or name.lower().endswith(_WEIGHT_SUFFIXES):
        return True
    return Path(name).exists()  # a file in the working folder (asked on the error path only)


def _refuse_path(name: str) -> None:
    """A name that is a path: say what is (or is not) there rather than "Unknown model"."""
    path = Path(name).expanduser()
    if not path.exists():
        raise UnknownModelError(
            f"{name} does not exist (no file or folder at {path.absolute()}): a path must name a model folder "
            "(config.json beside the weights, or a training run's folder); registered names have no '/' "
            "(`zoo list` shows them)."
        )
    if path.is_file():
        raise UnknownModelError(
            f"{name} is a file, not a model folder or a registered name: load it into its architecture, "
            f"zoo.create_model(NAME, pretrained=True, pretrained_cfg_overlay={{'file': {name!r}}}) (zoo run / zoo "
            "export: NAME --weights FILE), or give the folder that holds it with its config.json."
        )


def list_models(
    pattern: str = "*", family: str | None = None, pretrained: bool = False, task: str | None = None
) -> list[str]:
    """Registered names matching a shell-style ``pattern``, optionally one ``family`` / ``task``, with weights."""
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


def list_pretrained(pattern: str = "*") -> list[str]:
    return list_models(pattern, pretrained=True)


def list_families() -> list[str]:
    return sorted({e.family for e in _entries.values()})


_CONVENTIONS = {
    "image-classification": "params: sum(p.numel()) of the authors' model; MACs: fvcore total at 1x3x224x224 "
    "(one multiply-add = 1); top-1: the paper's ImageNet-1k figure",
    "text-generation": "params: unique parameters of the authors' model (tied embeddings counted once); MACs per "
    "token: zoo.profile of an LM (prefill and decode); commonsense_avg: the authors' zero-shot "
    "average where published",
}


def model_info(name: str) -> dict[str, Any]:
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
            # a family's own reference table may say how its figures were taken (another input size)
            "convention": ref.get("convention") or _CONVENTIONS.get(entry.task, _CONVENTIONS["image-classification"]),
            **(
                {
                    "dense_vs_nonzero": "params/macs count every weight (dense, zeros included); nonzero_params/"
                    "nonzero_macs count only the non-zero weights of the sparse model"
                }
                if "nonzero_params" in ref
                else {}
            ),
        },
        "timm_owns_name": entry.timm_owns_name,
        "pretrained_cfg": cfg,
    }
