"""Training recipes: YAML files loaded into typed dataclasses.

A recipe has top-level keys (``model``, ``model_kwargs``, ``task``, ``seed``, ``output_dir``, ...) and sections
(``data``, ``aug``, ``optim``, ``sched``, ``train``, ``ema``, ``checkpoint``, ``dist``, ``export``, ``sparse``,
``distill``, ``data_pruning``).
Unknown keys, keys written twice and values out of their bounds (a step count below 1, a negative learning rate,
a dropout rate of 1) are errors found when the recipe loads, before any data or model is built; unknown keys name
the closest valid key. Command-line overrides are ``--key value`` for top-level keys and ``--section.key value``
inside a section (``--model_kwargs.dims [16,32,64,128]`` reaches into the dict); values are parsed as YAML, so
``--optim.betas [0.9,0.95]`` and ``--ema.enabled true`` work.

Batch sizes are *global*: ``train.batch_size`` samples (sequences for LMs) per optimizer step, whatever the
number of processes and accumulation steps, so a recipe gives the same run on one process or many. With
``optim.lr_base_size`` set, ``optim.lr`` is the learning rate at that batch size and is scaled to
``train.batch_size`` by ``optim.lr_scale`` (``linear``: lr * batch / base, ``sqrt``: lr * sqrt(batch / base)).
"""

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.sources import is_stream
from ..run_layout import ARGS
from .data_pruning import DataPruningConfig
from .distill import DistillConfig
from .sparse import SparseConfig

__all__ = [
    "AugConfig",
    "CheckpointConfig",
    "DataConfig",
    "DistConfig",
    "EmaConfig",
    "ExportConfig",
    "OptimConfig",
    "Recipe",
    "RecipeError",
    "SchedConfig",
    "TrainConfig",
    "apply_overrides",
    "load_recipe",
    "recipe_to_dict",
    "load_run_args",
    "load_run_recipe",
    "recipe_from_dict",
    "save_recipe",
]

TASKS = ("image-classification", "text-generation")


class RecipeError(ValueError):
    """A recipe (YAML file or override) that cannot be used; the message says which key and what to do."""


@dataclass
class DataConfig:
    # image-classification: digits | image_folder | wds (zoo data shard's folder, or shards by URL/pattern: streamed)
    # | hf_disk | hf_stream (a Hub or local dataset, streamed) | synthetic (zoo condense);
    # text-generation: pydoc | text | hf_disk | hf_stream | wds (tar shards of .txt members, streamed)
    name: str = "digits"
    path: str | None = None  # image folder root, datasets folder (load_from_disk), text file/folder, stream source
    train_split: str = "train"
    val_split: str = "validation"  # for image folders: the first of val/validation that exists
    image_key: str | None = None  # hf_disk columns; None: first of image/img, label/labels, text
    label_key: str | None = None
    text_key: str | None = None
    num_workers: int = 0
    # streams (hf_stream, wds by URL or pattern): see zoo.data.stream
    config: str | None = None  # hf_stream: the dataset's configuration (load_dataset's name)
    val_path: str | None = None  # wds: the held-out shards (URL, pattern or folder)
    train_samples: int | None = None  # samples an epoch reads (text: token rows); None: the size the data records
    val_samples: int = 10_000  # held-out samples read once from the stream (text: documents)
    shuffle_buffer: int = 1000  # samples shuffled together (and the shard order, per epoch); 0 or 1: stream order
    num_classes: int | None = None  # integer labels without class names (a stream that records none)
    bad_files: str = "error"  # an image that does not decode: error (stop, naming the file) | skip (counted)
    # image preprocessing; None falls back to the model's pretrained cfg (resolve_data_config)
    image_size: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    eval_batch_size: int | None = None
    # language modelling
    seq_len: int = 256
    tokenizer: str | None = None  # tokenizer.json, or a model folder holding one; None: train BPE
    vocab_size: int = 2048  # for a tokenizer trained on the fly
    val_fraction: float = 0.1  # documents held out (text without a validation split)


@dataclass
class AugConfig:
    auto_augment: str | None = None  # e.g. rand-m9-mstd0.5-inc1 (RandAugment, as in the MetaFormer recipes)
    scale: list[float] | None = None  # RandomResizedCrop scale; None: timm's (0.08, 1.0)
    ratio: list[float] | None = None
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter: float | None = 0.4
    train_interpolation: str = "random"
    re_prob: float = 0.0  # random erasing
    re_mode: str = "pixel"
    re_count: int = 1
    mixup: float = 0.0  # mixup alpha
    cutmix: float = 0.0  # cutmix alpha
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    label_smoothing: float = 0.0
    # data.name synthetic (tensors): differentiable siamese augmentation ops, e.g. color_crop_cutout_scale_rotate
    # (zoo.data.dsa); the PIL transforms above do not apply to tensors
    dsa: str | None = None


@dataclass
class OptimConfig:
    opt: str = "adamw"  # any timm create_optimizer_v2 name
    lr: float = 1e-3
    lr_base_size: int | None = None  # batch size at which `lr` was given; None: use lr as is
    lr_scale: str = "linear"  # linear | sqrt
    weight_decay: float = 0.05
    momentum: float = 0.9
    betas: list[float] | None = None
    eps: float | None = None
    layer_decay: float | None = None
    clip_grad: float | None = None
    clip_mode: str = "norm"  # norm | value | agc


@dataclass
class SchedConfig:
    sched: str = "cosine"  # any timm create_scheduler_v2 name
    warmup_epochs: float = 0.0  # image classification (converted to optimizer steps)
    warmup_steps: int | None = None  # overrides warmup_epochs; LMs count in steps
    warmup_lr: float = 1e-6
    min_lr: float = 0.0
    min_lr_ratio: float | None = None  # min_lr = ratio * peak lr (MobileLLM: cosine to 10%)
    cooldown_epochs: float = 0.0  # after the decay, hold min_lr this long (timm's cooldown; images)
    cooldown_steps: int | None = None  # overrides cooldown_epochs; LMs count in steps


@dataclass
class TrainConfig:
    epochs: int = 300  # image classification
    steps: int | None = None  # optimizer steps; LMs train by steps, images stop early if set
    batch_size: int = 128  # global samples per optimizer step
    grad_accum: int = 1  # micro-batches per optimizer step (per process)
    amp: str = "none"  # none | bf16 | fp16 (CUDA; bf16 also on CPU)
    channels_last: bool = False  # CUDA only
    grad_checkpointing: bool = False
    drop_path: float | None = None  # passed to the model as drop_path_rate
    device: str = "auto"  # auto | cpu | cuda
    compile: bool = False
    log_interval: int = 10  # optimizer steps between log rows
    eval_every_epochs: int = 1  # image classification: held-out evaluation every N epochs
    eval_every_steps: int | None = None  # LMs: held-out evaluation every N steps (None or 0: at the end only)
    eval_max_batches: int | None = None
    threads: int | None = None  # torch.set_num_threads; None: the cores free now (affinity minus 1-minute load)
    deterministic: bool = False  # torch.use_deterministic_algorithms
    tf32: bool = True  # CUDA: TF32 in cuBLAS's and cuDNN's float32 products, cuDNN autotuning (timm's train.py)


@dataclass
class EmaConfig:
    enabled: bool = False
    decay: float = 0.9999
    warmup: bool = False
    update_after_step: int = 0


@dataclass
class CheckpointConfig:
    every_steps: int | None = None  # None or 0: only at the end of every epoch and of the run
    keep: int = 2  # step_<N>.pt files kept besides last.pt


@dataclass
class DistConfig:
    strategy: str = "ddp"  # ddp | fsdp (language models)
    backend: str | None = None  # None: nccl on CUDA, gloo on CPU


@dataclass
class ExportConfig:
    enabled: bool = True  # write the publishable folder at the end
    dir: str | None = None  # default RUN_DIR/export
    push_to_hub: str | None = None  # ORG/NAME: upload with zoo.hub.publish_run
    private: bool = False
    license: str | None = None


@dataclass
class Recipe:
    model: str = ""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    task: str = "image-classification"
    pretrained: bool = False  # start from the model's registered weights
    init_checkpoint: str | None = None  # start from these weights
    init_from: str | None = None  # start from a model folder's architecture and weights (--init-from DIR)
    seed: int = 0
    output_dir: str | None = None  # RUN_DIR; default runs/<recipe file stem>
    notes: str = ""  # the authors' settings and how they were scaled
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    sparse: SparseConfig | None = None  # dynamic sparse training (zoo.train.sparse.SparseConfig fields)
    distill: DistillConfig | None = None  # knowledge distillation from a teacher (zoo.train.distill)
    data_pruning: DataPruningConfig | None = None  # train on part of the data each epoch (zoo.train.data_pruning)

    def scaled_lr(self) -> float:
        """``optim.lr`` scaled from ``optim.lr_base_size`` to ``train.batch_size``."""
        o = self.optim
        if not o.lr_base_size:
            return o.lr
        ratio = self.train.batch_size / o.lr_base_size
        return o.lr * (math.sqrt(ratio) if o.lr_scale == "sqrt" else ratio)


def _kind(value: Any) -> str:
    """What a YAML document holds, in YAML's words."""
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Recipe)
    return {name: tp for name, tp in hints.items() if dataclasses.is_dataclass(tp)}


def _closest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.4)
    return f" Did you mean {close[0]!r}?" if close else f" Valid keys: {', '.join(sorted(valid))}."


def _check_type(where: str, value: Any, tp: Any) -> Any:
    """Light type check/coercion of one YAML value against a dataclass field type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # Optional[X], X | None
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(where, value, inner[0]) if len(inner) == 1 else value
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise RecipeError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where} must be a string, got {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise RecipeError(f"{where} must be a list, e.g. [0.9, 0.95], got {value!r}")
        return [_check_type(f"{where}[{i}]", v, args[0]) if args else v for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    return value


def _build_section(cls: type, name: str, values: Any):
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise RecipeError(f"section {name!r} must be a mapping of keys to values, got {values!r}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise RecipeError(f"unknown key {name}.{key}.{_closest(key, list(hints))}")
        kwargs[key] = _check_type(f"{name}.{key}", value, hints[key])
    return cls(**kwargs)


def _build_sparse(values: Any) -> SparseConfig | None:
    """The ``sparse:`` section, checked with the rest of the recipe (before any data or model is built)."""
    if values is None:
        return None
    if not isinstance(values, dict):
        raise RecipeError(f"section 'sparse' must be a mapping of keys to values, got {values!r}")
    try:
        return SparseConfig.from_dict(values)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"sparse: {e}") from None


def _build_checked(cls: type, name: str, values: Any):
    """An optional section whose config checks itself (``distill:``, ``data_pruning:``): built and checked with the
    rest of the recipe (the teacher itself is built by the run); None when absent."""
    if values is None:
        return None
    cfg = _build_section(cls, name, values)
    try:
        cfg.check()
    except ValueError as e:
        raise RecipeError(str(e)) from None
    return cfg


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    """Build a :class:`Recipe` from a plain dict (a parsed YAML file), checking every key."""
    if not isinstance(raw, dict):
        raise RecipeError(f"a recipe is a YAML mapping of keys to values, got {_kind(raw)}")
    hints = typing.get_type_hints(Recipe)
    sections = _section_types()
    kwargs = {}
    for key, value in raw.items():
        if key not in hints:
            raise RecipeError(f"unknown key {key!r}.{_closest(key, list(hints))}")
        if key in sections:
            kwargs[key] = _build_section(sections[key], key, value)
        elif key == "sparse":
            kwargs[key] = _build_sparse(value)
        elif key == "distill":
            kwargs[key] = _build_checked(DistillConfig, key, value)
        elif key == "data_pruning":
            kwargs[key] = _build_checked(DataPruningConfig, key, value)
        else:
            kwargs[key] = _check_type(key, value, hints[key])
    recipe = Recipe(**kwargs)
    validate(recipe)
    return recipe


# Bounds of numeric keys (None, where a key allows it, is always fine). 0 turns off the periodic evaluation and
# checkpoints; every other count must be at least 1.
_AT_LEAST_ONE = (
    "train.epochs",
    "train.steps",
    "train.batch_size",
    "train.grad_accum",
    "train.log_interval",
    "train.eval_every_epochs",
    "train.eval_max_batches",
    "train.threads",
    "optim.lr_base_size",
    "data.seq_len",
    "data.vocab_size",
    "data.eval_batch_size",
    "data.train_samples",
    "data.val_samples",
    "data.num_classes",
    "data.image_size",
    "aug.re_count",
)
_POSITIVE = ("optim.lr", "optim.eps", "optim.layer_decay")
_NON_NEGATIVE = (
    "optim.weight_decay",
    "optim.momentum",
    "optim.clip_grad",
    "sched.warmup_epochs",
    "sched.warmup_steps",
    "sched.warmup_lr",
    "sched.min_lr",
    "sched.cooldown_epochs",
    "sched.cooldown_steps",
    "train.eval_every_steps",
    "checkpoint.every_steps",
    "checkpoint.keep",
    "ema.update_after_step",
    "data.num_workers",
    "data.shuffle_buffer",
    "aug.mixup",
    "aug.cutmix",
)
_PROBABILITIES = (  # [0, 1]
    "aug.hflip",
    "aug.vflip",
    "aug.re_prob",
    "aug.mixup_prob",
    "aug.mixup_switch_prob",
    "sched.min_lr_ratio",
    "ema.decay",
)
_RATES = ("train.drop_path", "aug.label_smoothing")  # [0, 1): a rate of 1 drops everything


def _value(recipe: Recipe, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(recipe, section), name)


def _check_bounds(recipe: Recipe) -> None:
    for keys, ok, bound in (
        (_AT_LEAST_ONE, lambda v: v >= 1, "at least 1"),
        (_POSITIVE, lambda v: v > 0, "greater than 0"),
        (_NON_NEGATIVE, lambda v: v >= 0, "0 or more"),
        (_PROBABILITIES, lambda v: 0 <= v <= 1, "in [0, 1]"),
        (_RATES, lambda v: 0 <= v < 1, "in [0, 1)"),
    ):
        for key in keys:
            value = _value(recipe, key)
            if value is not None and not ok(value):
                raise RecipeError(f"{key} must be {bound}, got {value!r}")
    betas = recipe.optim.betas or []
    if any(not 0 <= b < 1 for b in betas):
        raise RecipeError(f"optim.betas must each be in [0, 1), got {betas!r}")
    for key, value in recipe.model_kwargs.items():  # drop_rate, drop_path_rate, proj_drop, head_dropout...
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if "drop" in key.lower() and is_number and not 0 <= value < 1:
            raise RecipeError(f"model_kwargs.{key} is a dropout rate and must be in [0, 1), got {value!r}")
    if not 0 < recipe.data.val_fraction < 1:
        raise RecipeError(f"data.val_fraction must be between 0 and 1, got {recipe.data.val_fraction!r}")


def check_prunable_data(recipe: Recipe) -> None:
    """The one place that decides a recipe's data can be pruned: ``data_pruning`` picks samples by index, which a
    stream (:func:`zoo.data.sources.is_stream`: ``hf_stream``, or unindexed ``wds`` shards) cannot give. Checked when
    the recipe is read, before any data is."""
    d = recipe.data
    if recipe.data_pruning is not None and is_stream(d.name, d.path):
        where = f" ({d.path})" if d.path else ""
        raise RecipeError(
            f"data_pruning picks samples by index and data.name {d.name}{where} streams data of unknown length: use "
            "a dataset on disk (a folder of images or shards, hf_disk, a text file), or drop the data_pruning: section"
        )


def validate(recipe: Recipe):
    """Check a recipe as a whole, before any data or model is built (``recipe_from_dict`` calls it)."""
    if not recipe.model:
        raise RecipeError("the recipe names no model: set `model:` to a registered name (zoo.list_models())")
    if recipe.task not in TASKS:
        raise RecipeError(f"task must be one of {', '.join(TASKS)}, got {recipe.task!r}")
    if recipe.data.bad_files not in ("error", "skip"):
        raise RecipeError(f"data.bad_files must be error or skip, got {recipe.data.bad_files!r}")
    _check_bounds(recipe)
    t = recipe.train
    if t.amp not in ("none", "bf16", "fp16"):
        raise RecipeError(f"train.amp must be none, bf16 or fp16, got {t.amp!r}")
    if recipe.optim.lr_scale not in ("linear", "sqrt"):
        raise RecipeError(f"optim.lr_scale must be linear or sqrt, got {recipe.optim.lr_scale!r}")
    if recipe.dist.strategy not in ("ddp", "fsdp"):
        raise RecipeError(f"dist.strategy must be ddp or fsdp, got {recipe.dist.strategy!r}")
    if recipe.dist.strategy == "fsdp" and recipe.task != "text-generation":
        raise RecipeError("dist.strategy fsdp is offered for language models; use ddp for vision models")
    if recipe.dist.strategy == "fsdp" and (recipe.ema.enabled or recipe.sparse is not None):
        part = "ema.enabled" if recipe.ema.enabled else "a sparse: section"
        raise RecipeError(f"{part} does not work with sharded parameters (dist.strategy fsdp): use dist.strategy ddp")
    if recipe.task == "text-generation" and not t.steps:
        raise RecipeError("language-model recipes train by steps: set train.steps")
    if recipe.distill is not None and recipe.distill.cache_logits:
        _check_cacheable(recipe)
    check_prunable_data(recipe)
    dp = recipe.data_pruning
    if dp is not None and dp.method == "el2n" and not t.steps and dp.score_epochs >= t.epochs:
        raise RecipeError(
            f"data_pruning.score_epochs {dp.score_epochs} leaves none of train.epochs {t.epochs} to prune: el2n "
            "scores the samples after that many full-data epochs; lower it or train longer"
        )


# augmentation settings under which a training sample gives the same input every epoch (cache_logits needs it)
_FIXED_AUG = {
    "aug.auto_augment": (None,),
    "aug.scale": ([1.0, 1.0],),
    "aug.ratio": ([1.0, 1.0],),
    "aug.hflip": (0.0,),
    "aug.vflip": (0.0,),
    "aug.color_jitter": (None, 0.0),
    "aug.re_prob": (0.0,),
    "aug.mixup": (0.0,),
    "aug.cutmix": (0.0,),
}


def _check_cacheable(recipe: Recipe) -> None:
    """``distill.cache_logits`` keeps one set of teacher logits per sample: refused where augmentation draws a new
    input every epoch (image recipes; a language model's rows are fixed)."""
    if recipe.task != "image-classification":
        return
    random = [f"{k}={_value(recipe, k)!r}" for k, fixed in _FIXED_AUG.items() if _value(recipe, k) not in fixed]
    if recipe.aug.train_interpolation == "random":
        random.append("aug.train_interpolation='random'")
    if random:
        raise RecipeError(
            "distill.cache_logits keeps one set of teacher logits per sample, but this recipe augments at random "
            f"({', '.join(random)}): a cached target would not match the input the student sees. Set "
            "distill.cache_logits false, or turn the augmentation off (aug.scale [1, 1], aug.ratio [1, 1], "
            "aug.hflip 0, aug.color_jitter null, aug.train_interpolation bicubic, no auto_augment/re_prob/mixup/cutmix)"
        )


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with a key written twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # keys brought in by '<<' may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    line = first.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: SafeLoader refuses it below
                    continue
                if line != key_node.start_mark.line + 1:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found the key {key!r} twice (first on line {line}); keep one of them",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: the problem and where."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem and e.problem_mark is not None:
        return f"{e.problem} (line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1})"
    return " ".join(str(e).split())


def _parse_value(text: str) -> Any:
    try:
        return _yaml_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--key value`` / ``--section.key value`` / ``--key=value`` pairs to a raw recipe dict."""
    if not isinstance(raw, dict):
        raise RecipeError(f"a recipe is a YAML mapping of keys to values (model: ..., train: ...), got {_kind(raw)}")
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    hints = typing.get_type_hints(Recipe)
    sections = _section_types()
    items = list(overrides)
    i = 0
    while i < len(items):
        token = items[i]
        if not token.startswith("--"):
            raise RecipeError(f"expected an override like --train.epochs 10, got {token!r}")
        key = token[2:]
        if "=" in key:
            key, text = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise RecipeError(f"override {token} needs a value, e.g. {token} 10")
            text = items[i + 1]
            i += 2
        key = key.replace("-", "_") if "." not in key else key
        value = _parse_value(text)
        parts = key.split(".")
        top = parts[0]
        if top not in hints:
            raise RecipeError(f"unknown override --{key}.{_closest(top, list(hints))}")
        if len(parts) == 1:
            if top in sections:
                raise RecipeError(
                    f"--{top} is a section; override one of its keys, e.g. --{top}."
                    f"{dataclasses.fields(sections[top])[0].name} VALUE"
                )
            raw[top] = value
        elif len(parts) == 2 and (top in sections or top in ("model_kwargs", "sparse", "distill", "data_pruning")):
            fields = sections.get(top) or {"distill": DistillConfig, "data_pruning": DataPruningConfig}.get(top)
            if fields is not None and parts[1] not in typing.get_type_hints(fields):
                valid = list(typing.get_type_hints(fields))
                raise RecipeError(f"unknown override --{key}.{_closest(parts[1], valid)}")
            sub = dict(raw.get(top) or {})
            sub[parts[1]] = value
            raw[top] = sub
        else:
            raise RecipeError(f"override --{key} goes too deep; use --section.key VALUE")
    return raw


def load_recipe(path: str | None = None, overrides: Sequence[str] = (), base: dict[str, Any] | None = None) -> Recipe:
    """Load a YAML recipe (or ``base`` dict), apply overrides, check every key; ``output_dir`` defaults to
    ``runs/<file stem>``."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise RecipeError(f"recipe {p} does not exist; the recipes shipped with zoo are in configs/")
        try:
            raw = _yaml_load(p.read_text())
        except yaml.YAMLError as e:
            raise RecipeError(f"recipe {p} is not valid YAML: {_yaml_problem(e)}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise RecipeError(
                f"recipe {p} holds a YAML {_kind(raw)}, not a mapping of keys to values "
                "(model: ..., train: ...); see configs/ for examples"
            )
    else:
        raw = dict(base or {})
    raw = apply_overrides(raw, overrides)
    if path is not None and not raw.get("output_dir"):
        raw["output_dir"] = str(Path("runs") / Path(path).stem)
    try:
        return recipe_from_dict(raw)
    except RecipeError as e:
        where = f"{path}: " if path else ""
        raise RecipeError(f"{where}{e}") from None


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    d = dataclasses.asdict(recipe)
    d["sparse"] = recipe.sparse.to_dict() if recipe.sparse is not None else None
    d["distill"] = dataclasses.asdict(recipe.distill) if recipe.distill is not None else None
    d["data_pruning"] = dataclasses.asdict(recipe.data_pruning) if recipe.data_pruning is not None else None
    return d


def save_recipe(recipe: Recipe, path: Path, extra: dict[str, Any] | None = None):
    """Write the resolved recipe as YAML (``RUN_DIR/args.yaml``); ``extra`` adds resolved values (e.g. the lr)."""
    d = recipe_to_dict(recipe)
    if extra:
        d["resolved"] = extra
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(d, sort_keys=False))
    tmp.replace(path)


def load_run_recipe(run_dir: Path) -> Recipe:
    """The recipe a run was started with (its ``args.yaml``)."""
    return load_run_args(run_dir)[0]


def load_run_args(run_dir: Path) -> tuple[Recipe, dict[str, Any]]:
    """The recipe a run was started with and the values it resolved (``args.yaml``'s ``resolved:``)."""
    p = Path(run_dir) / ARGS
    if not p.is_file():
        raise RecipeError(f"{run_dir} has no args.yaml: is it a training run folder?")
    try:
        raw = _yaml_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{p} is not valid YAML: {_yaml_problem(e)}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{p} holds a YAML {_kind(raw)}, not a recipe: is it a training run folder?")
    resolved = raw.pop("resolved", None) or {}
    return recipe_from_dict(raw), resolved
