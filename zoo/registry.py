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
    "UnknownTagError",
    "check_known_keys",
    "get_entry",
    "get_pretrained_cfg",
    "list_families",
    "list_models",
    "list_pretrained",
    "model_info",
    "reference_table",
    "register_model",
    "split_name_tag",
    "unregister_model",
]


class UnknownModelError(ValueError):
    """Raised for a model name the registry does not know; the message lists the closest names."""


class UnknownTagError(UnknownModelError):
    """Raised for ``name.tag`` where the registered ``name`` has no pretrained cfg ``tag``; the message lists its
    tags."""


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
    # every pretrained cfg by its tag (timm's ``name.tag``; "" for an untagged cfg), the default one first; a
    # builder's module gives them as ``default_cfgs["name"]`` and ``default_cfgs["name.tag"]``
    pretrained_cfgs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the class the builder makes, where the family names it (``FAMILY["model_class"]``): what code above the
    # models reads about a family without building one (e.g. the transformers classes of the language models)
    model_class: type | None = None

    def __post_init__(self) -> None:
        if not self.pretrained_cfgs:
            self.pretrained_cfgs = {self.pretrained_cfg.get("tag") or "": self.pretrained_cfg}

    @property
    def has_weights(self) -> bool:
        return _has_weights(self.pretrained_cfg)

    @property
    def tags(self) -> list[str]:
        """The tags of the cfgs that name weights, the default first (``name.tag`` for each)."""
        return [tag for tag, cfg in self.pretrained_cfgs.items() if tag and _has_weights(cfg)]

    def cfg_for(self, tag: str | None) -> dict[str, Any]:
        """The pretrained cfg of ``tag`` (None or "": the default); an unknown tag is refused naming the known."""
        if not tag:
            return self.pretrained_cfg
        if tag in self.pretrained_cfgs:
            return self.pretrained_cfgs[tag]
        known = [t for t in self.pretrained_cfgs if t]
        close = difflib.get_close_matches(tag, known, n=1, cutoff=0.5)
        hint = f" Did you mean {self.name}.{close[0]}?" if close else ""
        raise UnknownTagError(
            f"{self.name} has no pretrained tag {tag!r}; its tags: "
            f"{', '.join(f'{self.name}.{t}' for t in known) or 'none (no pretrained weights are registered)'}."
            f"{hint}"
        )


def _has_weights(cfg: dict[str, Any]) -> bool:
    return bool(cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file"))


def _weights_tag(name: str, cfg: dict[str, Any]) -> str:
    """The tag of a cfg that names none: the tag of a timm-style Hub repo (``ORG/NAME.TAG``); else, for other Hub
    repos, the publisher and the label set in timm's scheme (``ORG_in1k`` for 1000 classes: sail-sg's ImageNet-1k
    weights in ``sail/dl`` are ``sail_in1k``, as timm tags its copies of them; the organisation alone otherwise);
    "" for a cfg without weights or with weights elsewhere (a URL, a file: the untagged default)."""
    repo = cfg.get("hf_hub_id")
    if not repo or "/" not in repo:
        return ""
    org, repo_name = repo.split("/", 1)
    if repo_name.startswith(name + ".") and _TAG.fullmatch(repo_name[len(name) + 1 :]):
        return repo_name[len(name) + 1 :]
    publisher = re.sub(r"[^a-z0-9]+", "_", org.lower()).strip("_")
    return f"{publisher}_in1k" if cfg.get("num_classes") == 1000 else publisher


_entries: dict[str, ModelEntry] = {}
# what a registered name may be: a path never matches (no '/', no leading '.' or '~'), see _looks_like_path
_NAME = re.compile(r"[a-z][a-z0-9_.]*")
# what a pretrained tag may be (timm's: ``sail_in1k``, ``in22k_ft_in1k``)
_TAG = re.compile(r"[a-z0-9][a-z0-9_]*")


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

    The builder's module provides ``FAMILY`` (dict with ``name``, ``task`` and optionally ``model_class``, the
    class its builders make), ``default_cfgs`` (name -> pretrained cfg dict with timm's ``PretrainedCfg`` fields)
    and optionally ``reference_figures`` (name -> figures), ``checkpoint_filter_fn(state_dict, model)`` (other
    origins' keys -> the zoo's) and ``checkpoint_model_args(config, state_dict)`` (architecture arguments a
    checkpoint folder describes; default: timm's ``config.json`` schema), all keyed by the registered name.
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
    cfgs = _tagged_cfgs(name, mod)
    _entries[name] = ModelEntry(
        name=name,
        fn=fn,
        family=family["name"],
        task=family["task"],
        pretrained_cfg=next(iter(cfgs.values())),
        pretrained_cfgs=cfgs,
        reference=dict(getattr(mod, "reference_figures", {}).get(name, {})),
        filter_fn=getattr(mod, "checkpoint_filter_fn", None),
        model_args_fn=getattr(mod, "checkpoint_model_args", None),
        model_class=family.get("model_class"),
    )
    return fn


def _tagged_cfgs(name: str, mod) -> dict[str, dict[str, Any]]:
    """``{tag: cfg}`` of ``name`` from its family module's ``default_cfgs`` (``name`` and ``name.TAG`` keys, the
    untagged key's cfg first), each cfg with its ``architecture`` and ``tag``; one untagged cfg when the family
    gives none. A key that is another builder's name (``mobilellm_1.5b`` beside a ``mobilellm_1``) is no tag."""
    default_cfgs = getattr(mod, "default_cfgs", {})
    cfgs: dict[str, dict[str, Any]] = {}
    keys = [
        k
        for k in default_cfgs
        if k == name or (k.startswith(name + ".") and k not in _entries and not hasattr(mod, k.replace(".", "_")))
    ]
    for key in sorted(keys, key=lambda k: k != name):
        cfg = dict(default_cfgs[key])
        tag = key[len(name) + 1 :] if key != name else cfg.get("tag") or _weights_tag(name, cfg)
        if tag and not _TAG.fullmatch(tag):
            raise ValueError(f"pretrained tag {tag!r} of {name}: a tag is lowercase letters, digits and underscores")
        if tag in cfgs:
            raise ValueError(f"{name} has two pretrained cfgs tagged {tag!r}")
        cfg.setdefault("architecture", name)
        if tag:
            cfg["tag"] = tag
        cfgs[tag] = cfg
    return cfgs or {"": {"architecture": name}}


def split_name_tag(name: str) -> tuple[str, str]:
    """``("caformer_s18", "sail_in1k")`` from ``"caformer_s18.sail_in1k"``: the longest registered name before a
    dot (registered names may hold dots, ``mobilellm_1.5b``), and the tag after it; ``(name, "")`` otherwise."""
    if name in _entries:
        return name, ""
    for i in range(len(name) - 1, 0, -1):
        if name[i] == "." and name[:i] in _entries:
            return name[:i], name[i + 1 :]
    return name, ""


def get_pretrained_cfg(name: str) -> dict[str, Any]:
    """The pretrained cfg of a registered ``name`` or ``name.tag`` (a copy); an unknown tag names the known ones."""
    arch, tag = split_name_tag(name)
    return dict(get_entry(arch).cfg_for(tag))


def unregister_model(name: str) -> None:
    """Remove ``name`` from the table (a family registered at run time, e.g. by a test, going away)."""
    _entries.pop(name, None)


def get_entry(name: str) -> ModelEntry:
    """The entry of a registered name (``name.tag`` gives its name's entry once the tag is checked)."""
    try:
        return _entries[name]
    except KeyError:
        pass
    arch, tag = split_name_tag(name)
    if tag:
        _entries[arch].cfg_for(tag)  # an unknown tag is refused with the known ones
        return _entries[arch]
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


def list_pretrained(pattern: str = "*", include_tags: bool = False) -> list[str]:
    """Registered names with weights matching ``pattern``; with ``include_tags``, every ``name.tag`` with weights
    (timm's ``list_pretrained``), the pattern matched against it."""
    if not include_tags:
        return list_models(pattern, pretrained=True)
    tagged = [f"{n}.{t}" for n in list_models() for t in _entries[n].tags]
    return sorted(n for n in tagged if fnmatch.fnmatch(n, pattern))


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
    """Family, task, paper, reference params/MACs/top-1, the pretrained cfg of a registered model (of its tag for
    ``name.tag``) and its pretrained tags."""
    entry = get_entry(name)
    cfg = get_pretrained_cfg(name)
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
        "tags": entry.tags,
        "pretrained_cfg": cfg,
    }
