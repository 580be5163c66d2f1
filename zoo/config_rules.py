"""What a ``config.json`` that comes with weights may say: an architecture, its preprocessing and labels, and
nothing that steers loading.

A Hub repo or a model folder is data from elsewhere. Its ``pretrained_cfg`` may set the fields of
:data:`CONFIG_CFG_FIELDS` (each value checked), its ``model_args`` the architecture's own arguments (plain numbers,
text, booleans and short lists, sizes within plausible bounds by name); a key that names files, folders, URLs,
devices, dtypes or how weights load is refused by name, with nothing read or built. The factory applies these
rules to every config it reads; a family that reads a folder itself applies :func:`check_model_args` too.

A folder of quantized weights records its format in a top-level ``quantization`` entry (``{"method":
"int8_weight_only", "group_size": null}``, ``{"method": "int4_weight_only", "group_size": 32, "scheme":
"asymmetric"}``, ``{"method": "bf16"}``; see :mod:`zoo.lm.quant`), checked by :func:`check_quantization`: unknown
fields and values are refused by name. :func:`weights_quantization` holds the record against the tensors themselves,
so that quantized codes never load as float weights and a record never stands for weights it does not describe.
"""

import logging
import math
import re
from typing import Any

import torch

from .lm.quant import (
    QuantRecordError,
    QuantRecordMismatch,
    QuantSpec,
    convert_fake_quantized,
    fake_quantized_keys,
    is_quantized_state_dict,
)
from .weights import CheckpointError, CheckpointMismatchError

__all__ = [
    "CONFIG_CFG_FIELDS",
    "LOAD_SWITCHES",
    "check_arg_value",
    "check_model_args",
    "check_quantization",
    "refuse_key",
    "weights_quantization",
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


def check_quantization(value: Any, where: str) -> QuantSpec | None:
    """A config.json's ``quantization`` entry (or the JSON text of a weight file's metadata) as a
    :class:`~zoo.lm.quant.QuantSpec` (:meth:`~zoo.lm.quant.QuantSpec.from_record`); None when absent. A malformed
    entry is a :class:`CheckpointError` naming the field, before anything is built."""
    try:
        return QuantSpec.from_record(value, where)
    except QuantRecordError as e:
        raise CheckpointError(f"{e}. Nothing was built.") from e


def weights_quantization(
    state_dict: dict[str, torch.Tensor], where: str, config: Any = None, metadata: Any = None
) -> tuple[dict[str, torch.Tensor], QuantSpec | None]:
    """The quantization a checkpoint's weights are in, held against what its ``config`` (config.json) and its
    safetensors ``metadata`` record (:meth:`~zoo.lm.quant.QuantSpec.from_checkpoint` reads them); returns
    ``(state_dict, spec)``.

    * A QAT checkpoint (``*.weight_fake_quantizer.scale`` beside float weights, MobileLLM-Pro's int4 layout) is
      converted to int4 codes with its own scales (:func:`zoo.lm.quant.convert_fake_quantized`).
    * Refused, each a :class:`CheckpointMismatchError`: int8/int4 codes (``*.qweight``) that nothing records (the
      format is never guessed); a record of int8/int4 over float weights; a config.json and a file metadata that
      disagree.
    """
    try:
        recorded = QuantSpec.from_checkpoint(config, metadata, where)
    except QuantRecordMismatch as e:
        raise CheckpointMismatchError(f"{e}. Nothing was loaded.") from None
    except QuantRecordError as e:
        raise CheckpointError(f"{e}. Nothing was built.") from e
    if fake_quantized_keys(state_dict):
        if recorded is not None and recorded.method != "int4_weight_only":
            raise CheckpointMismatchError(
                f"{where} holds int4 fake-quantizer scales but records {recorded.describe()} weights. Nothing was "
                "loaded."
            )
        try:
            state_dict, found = convert_fake_quantized(state_dict)
        except ValueError as e:
            raise CheckpointMismatchError(f"{where}: {e}. Nothing was loaded.") from e
        if recorded is not None and recorded.group_size != found.group_size:
            raise CheckpointMismatchError(
                f"{where} records int4 groups of {recorded.group_size} but its fake-quantizer scales are for groups "
                f"of {found.group_size}. Nothing was loaded."
            )
        return state_dict, found
    codes = is_quantized_state_dict(state_dict)
    if codes and (recorded is None or recorded.method == "bf16"):
        names = [k for k in state_dict if k.endswith(".qweight")][:3]
        raise CheckpointMismatchError(
            f"{where} holds quantized weights ({', '.join(names)}, ...: integer codes with their scales) but "
            + ("records bf16 weights" if recorded is not None else "nothing records how they were quantized")
            + ": its config.json's quantization entry (written with the weights) says that. Load the folder "
            "that came with them; the codes are never read as float weights. Nothing was loaded."
        )
    if recorded is not None and recorded.method != "bf16" and not codes:
        raise CheckpointMismatchError(
            f"{where} records {recorded.describe()} weights but holds float weights (no *.qweight codes): the "
            "record does not describe these weights. Load them as float weights (remove the quantization entry) "
            "and quantize after loading (zoo.create_model(..., quantize=...)). Nothing was loaded."
        )
    return state_dict, recorded
