"""What a ``config.json`` that comes with weights may say: an architecture, its preprocessing and labels, and
nothing that steers loading.

A Hub repo or a model folder is data from elsewhere. Its ``pretrained_cfg`` may set the fields of
:data:`CONFIG_CFG_FIELDS` (each value checked), its ``model_args`` the architecture's own arguments (plain numbers,
text, booleans and short lists, sizes within plausible bounds by name); a key that names files, folders, URLs,
devices, dtypes or how weights load is refused by name, with nothing read or built. The factory applies these
rules to every config it reads (:func:`config_overlay` for the whole file); a family that reads a folder itself
applies :func:`check_model_args` too. A language model's ``quantization`` record is :mod:`zoo.lm_loading`'s.
"""

import logging
import math
import re
from typing import Any

from .weights import CheckpointError

__all__ = [
    "CONFIG_CFG_FIELDS",
    "LOAD_SWITCHES",
    "check_arg_value",
    "check_model_args",
    "config_overlay",
    "refuse_key",
]

_logger = logging.getLogger(__name__)

# the caller's switches for loading, never an architecture's: create_model takes them out of its kwargs
LOAD_SWITCHES = ("allow_architecture_mismatch", "allow_nonfinite")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,199}")  # a module name (first_conv, classifier)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


def _ints(n: int, high: int):
    return lambda v: isinstance(v, list) and len(v) == n and all(_is_int(x) and 1 <= x <= high for x in v)


def _floats(positive: bool = False):
    return lambda v: (
        isinstance(v, list) and 1 <= len(v) <= 1024 and all(_is_number(x) and (x > 0 or not positive) for x in v)
    )


def _text(v, limit: int = 10_000) -> bool:
    return isinstance(v, str) and len(v) <= limit


def _texts(v) -> bool:
    return _text(v) or (isinstance(v, list) and len(v) <= 100 and all(_text(x) for x in v))


def _module_names(v) -> bool:
    names = v if isinstance(v, list) else [v]
    return 1 <= len(names) <= 16 and all(isinstance(n, str) and _NAME.fullmatch(n) for n in names)


def _labels(v) -> bool:
    if isinstance(v, dict):
        v = [x for kv in v.items() for x in kv]
    return isinstance(v, list) and len(v) <= 200_000 and all(_text(x, 1000) for x in v)


# timm's PretrainedCfg fields a config.json may set (each with what its value must be): preprocessing, the input
# sizes, labels and the head's/first conv's names, and provenance text. Not the weight location fields (url, file,
# state_dict, hf_hub_id, hf_hub_filename, source), which are the caller's or the factory's to set.
CONFIG_CFG_FIELDS: dict[str, tuple[Any, str]] = {
    "input_size": (_ints(3, 8192), "[channels, height, width], ints in 1..8192"),
    "test_input_size": (_ints(3, 8192), "[channels, height, width], ints in 1..8192"),
    "min_input_size": (_ints(3, 8192), "[channels, height, width], ints in 1..8192"),
    "fixed_input_size": (lambda v: isinstance(v, bool), "true or false"),
    "interpolation": (
        lambda v: v in ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos", "random"),
        "one of torchvision's interpolation names",
    ),
    "crop_pct": (lambda v: _is_number(v) and 0 < v <= 2, "a number in (0, 2]"),
    "test_crop_pct": (lambda v: _is_number(v) and 0 < v <= 2, "a number in (0, 2]"),
    "crop_mode": (lambda v: v in ("center", "squash", "border"), "'center', 'squash' or 'border'"),
    "mean": (_floats(), "a list of 1..1024 finite numbers"),
    "std": (_floats(positive=True), "a list of 1..1024 positive numbers"),
    "num_classes": (lambda v: _is_int(v) and 0 <= v <= 100_000, "an int in 0..100000"),
    "label_offset": (lambda v: _is_int(v) and 0 <= v <= 1000, "an int in 0..1000"),
    "label_names": (_labels, "a list of at most 200000 names"),
    "label_descriptions": (_labels, "names and their descriptions"),
    "pool_size": (_ints(2, 8192), "[height, width], ints in 1..8192"),
    "test_pool_size": (_ints(2, 8192), "[height, width], ints in 1..8192"),
    "first_conv": (_module_names, "a module name or a list of them"),
    "classifier": (_module_names, "a module name or a list of them"),
    "custom_load": (lambda v: v is False, "false (the zoo loads every model the same way)"),
    "license": (_text, "text"),
    "origin_url": (_text, "text (where the code is; nothing is read from it)"),
    "paper_name": (_text, "text"),
    "paper_ids": (_texts, "text"),
    "tag": (_texts, "text"),
    "description": (_texts, "text"),
    "notes": (_texts, "text"),
}

# model arguments that choose files, folders, URLs, devices, dtypes or how weights load, never an architecture's
_LOADING_ARGS = frozenset(
    {
        "pretrained",
        "pretrained_cfg",
        "pretrained_cfg_overlay",
        "pretrained_strict",
        "pretrained_filter_fn",
        "checkpoint_path",
        "cache_dir",
        "file",
        "state_dict",
        "hf_hub_id",
        "hf_hub_filename",
        "hf_hub_sha256",
        "url",
        "source",
        "revision",
        "token",
        "device",
        "dtype",
        "torch_dtype",
        "features_only",
        "out_indices",
        "feature_cls",
        "feature_cfg",
        "norm",
        "output_stride",
        "use_ema",
        "strict",
        "trust_remote_code",
        "auto_map",
        "kwargs_filter",
    }
)
# words that mark an argument name as one of those (cache_dir, weights_path, model_url, map_device, ...)
_LOADING_WORDS = frozenset(
    {"path", "paths", "file", "files", "dir", "dirs", "folder", "url", "urls", "uri", "device", "devices"}
    | {"dtype", "cache", "hub", "pretrained", "checkpoint", "download", "load", "save", "remote", "mmap"}
)
# training-only options, implementation switches and the loading checks' switches: the caller's to choose, skipped
# when a config.json has them (a run's recorded model kwargs may hold them)
_CALLER_ARGS = (
    "drop_rate",
    "drop_path_rate",
    "drop_block_rate",
    "head_dropout",
    "onednn_linear",
    "large_kernel_impl",
    "quantize",  # a folder's weights say how they are quantized in its ``quantization`` entry, never here
    *LOAD_SWITCHES,
)
# plausible sizes by argument name (first match): (name pattern, lowest, highest); ints or lists of ints only
_SIZE_LIMITS = tuple(
    (re.compile(pattern), low, high)
    for pattern, low, high in (
        (r"num_classes", 0, 100_000),
        (r"vocab_size", 1, 1 << 20),
        (r"max_position_embeddings|sliding_window|\w*_(len|length)", 1, 1 << 20),
        (r"intermediate_size", 1, 1 << 17),
        (r"depths?|\w*layers|recursive_num|\w*recursions?", 0, 1024),
        (r"\w*heads", 1, 1024),
        (r"in_chans|\w*channels", 1, 1024),
        (r"img_size|image_size|input_size|pool_size|\w*kernel_size", 1, 8192),
        (r"\w*(dim|dims|size|width|hidden|features|rank)", 0, 1 << 15),
    )
)
_MAX_LIST, _MAX_TEXT = 4096, 256


def refuse_key(where: str, key: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"{where} sets {key}, which {why}. A config.json that comes with weights may describe an architecture "
        "(its arguments, preprocessing and labels) and nothing else: never files, folders, URLs, devices or how "
        "weights load. Nothing was read or built; remove the key from the config.json."
    )


def _size_limits(name: str) -> tuple[int, int] | None:
    return next(((low, high) for pattern, low, high in _SIZE_LIMITS if pattern.fullmatch(name)), None)


def check_arg_value(where: str, key: str, name: str, value: Any, depth: int = 0) -> None:
    """Plain data only (numbers, text, booleans, lists of them), and sizes in plausible bounds by ``name``."""
    if value is None:
        return
    if isinstance(value, (list, tuple)):
        if depth >= 2 or len(value) > _MAX_LIST:
            raise refuse_key(
                where, key, f"is not an architecture argument (a list nested deeper or longer than {_MAX_LIST})"
            )
        for item in value:
            check_arg_value(where, key, name, item, depth + 1)
        return
    limits = _size_limits(name)
    if limits is not None:
        low, high = limits
        if not _is_int(value) or not low <= value <= high:
            raise CheckpointError(
                f"{where}: {key}={str(value)[:80]} is not a plausible size (an int in {low}..{high}); the config.json "
                "is corrupt or was not written for this model. Nothing was built."
            )
    elif isinstance(value, str):
        if len(value) > _MAX_TEXT:
            raise refuse_key(where, key, f"is not an architecture argument (text over {_MAX_TEXT} characters)")
    elif not isinstance(value, bool):
        if not _is_number(value):
            kind = "an object" if isinstance(value, dict) else type(value).__name__
            raise refuse_key(where, key, f"is not an architecture argument (its value is {kind}, not numbers or text)")
        if abs(value) >= (1 << 31 if _is_int(value) else 1e12):
            raise CheckpointError(f"{where}: {key}={str(value)[:80]} is out of range for an architecture argument.")


def check_model_args(args: dict[str, Any], where: str, section: str = "model_args") -> dict[str, Any]:
    """The architecture arguments of a config.json, checked; its training-only options and switches skipped."""
    checked = {}
    for name, value in args.items():
        key = f"{section}.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w{0,99}", name):
            raise refuse_key(where, key[:120], "is not an argument name")
        if name in _CALLER_ARGS or name.endswith(("_drop_rate", "_dropout")):
            _logger.debug("%s: %s is the caller's choice; not taken from the config.json", where, key)
            continue
        if name in _LOADING_ARGS or _LOADING_WORDS.intersection(name.lower().split("_")):
            raise refuse_key(where, key, "names files, folders, URLs, devices or how weights load")
        check_arg_value(where, key, name, value)
        checked[name] = value
    return checked


# the provenance fields of the registered cfg describe other weights: cleared unless the config.json sets them
_CLEARED_FIELDS = {"notes": None, "tag": None, "description": None, "url": None}


def config_overlay(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The pretrained-cfg fields a ``config.json`` records (:data:`CONFIG_CFG_FIELDS` only, each checked); any
    other field is refused by name. The registered cfg's provenance fields are cleared (they describe other
    weights). Its ``model_args`` are checked here too: a config is refused whole, before any weights are read."""
    check_model_args(config.get("model_args") or {}, where)
    overlay: dict[str, Any] = dict(_CLEARED_FIELDS)
    for key, value in (config.get("pretrained_cfg") or {}).items():
        if key == "architecture" and value == config.get("architecture"):
            continue  # an older timm's copy of the top-level name
        if key not in CONFIG_CFG_FIELDS:
            raise refuse_key(where, f"pretrained_cfg.{key}"[:120], "is not a preprocessing, label or provenance field")
        if value is None:
            continue  # unset: the architecture's own value stands
        check, expected = CONFIG_CFG_FIELDS[key]
        if not check(value):
            raise CheckpointError(
                f"{where}: pretrained_cfg.{key} must be {expected}, got {str(value)[:80]}. Nothing was built."
            )
        overlay[key] = value
    if config.get("num_classes") is not None:
        check_arg_value(where, "num_classes", "num_classes", config["num_classes"])
        overlay["num_classes"] = config["num_classes"]
    return overlay
