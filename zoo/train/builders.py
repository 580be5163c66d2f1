"""The pieces of a training run, each built from its recipe section: usable on their own, outside ``train()``.

    optimizer = build_optimizer(model, recipe)
    scheduler, min_lr = build_scheduler(optimizer, recipe, total_steps, steps_per_epoch)
    ema = build_ema(model, recipe)
    sparsity = build_sparsity(model, optimizer, recipe, total_steps)
    distiller = build_distiller(recipe, task, model, device)  # the distill: section's frozen teacher

The schedule counts optimizer steps (timm's schedulers stepped per update): warm-up, the decay, then the
cooldown, which holds the minimum learning rate (timm's ``cooldown_epochs``).
"""

import contextlib
import logging
from pathlib import Path

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader

from ..data import text
from ..data.stream import SampleStream, head_items
from ..factory import create_model
from ..hub import download
from ..registry import UnknownModelError, get_entry
from ..run_layout import is_run_folder
from ..weights import CheckpointError
from .config import Recipe
from .distill import DistillConfig, Distiller, DistillError, IndexedDataset
from .sparse import DynamicSparsity
from .tasks import EvalSource, local_tokenizer, recorded_label_names

_logger = logging.getLogger(__name__)

__all__ = [
    "build_distiller",
    "build_ema",
    "build_optimizer",
    "build_scheduler",
    "build_sparsity",
    "build_teacher",
    "schedule_steps",
]


def build_optimizer(model: nn.Module, recipe: Recipe):
    """timm's ``create_optimizer_v2`` with the ``optim:`` section, at the batch-scaled learning rate, and PyTorch's
    fused step where the optimizer has one (SGD, Adam, AdamW, Adagrad: one kernel over every parameter, where the
    default on a CPU loops over them tensor by tensor), else its multi-tensor (``foreach``) step, else its own."""
    o = recipe.optim
    kwargs = {}
    if o.betas is not None:
        kwargs["betas"] = tuple(o.betas)
    if o.eps is not None:
        kwargs["eps"] = o.eps
    args = dict(opt=o.opt, lr=recipe.scaled_lr(), weight_decay=o.weight_decay, momentum=o.momentum,
                layer_decay=o.layer_decay, **kwargs)  # fmt: skip
    for step in ({"fused": True}, {"foreach": True}):
        try:
            return create_optimizer_v2(model, **args, **step)
        except TypeError as e:  # this optimizer takes no such switch: the next
            if "unexpected keyword argument" not in str(e):
                raise
    return create_optimizer_v2(model, **args)


def schedule_steps(recipe: Recipe, total_steps: int, steps_per_epoch: int) -> tuple[int, int]:
    """(warm-up steps, cooldown steps) of the ``sched:`` section, in optimizer steps."""
    s = recipe.sched
    warmup = s.warmup_steps if s.warmup_steps is not None else int(round(s.warmup_epochs * steps_per_epoch))
    cooldown = s.cooldown_steps if s.cooldown_steps is not None else int(round(s.cooldown_epochs * steps_per_epoch))
    return warmup, min(cooldown, max(total_steps - warmup - 1, 0))


def build_scheduler(optimizer, recipe: Recipe, total_steps: int, steps_per_epoch: int):
    """(scheduler, min_lr): warm-up, decay over the steps between warm-up and cooldown, then ``min_lr`` held."""
    s = recipe.sched
    lr = recipe.scaled_lr()
    warmup, cooldown = schedule_steps(recipe, total_steps, steps_per_epoch)
    min_lr = s.min_lr_ratio * lr if s.min_lr_ratio is not None else s.min_lr
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=s.sched,
        num_epochs=max(total_steps - warmup - cooldown, 1),
        warmup_epochs=warmup,
        warmup_lr=s.warmup_lr,
        min_lr=min_lr,
        warmup_prefix=True,
        step_on_epochs=False,
        updates_per_epoch=1,
    )
    return scheduler, min_lr


def build_ema(model: nn.Module, recipe: Recipe) -> ModelEmaV3 | None:
    """timm's ``ModelEmaV3`` of ``model`` when ``ema.enabled``."""
    e = recipe.ema
    if not e.enabled:
        return None
    return ModelEmaV3(model, decay=e.decay, use_warmup=e.warmup, update_after_step=e.update_after_step)


def build_sparsity(model: nn.Module, optimizer, recipe: Recipe, total_steps: int) -> DynamicSparsity | None:
    """Dynamic sparse training of ``model`` when the recipe has a ``sparse:`` section (masks not yet set)."""
    if recipe.sparse is None:
        return None
    return DynamicSparsity(model, optimizer, recipe.sparse, total_steps)


def check_teacher_name(cfg: DistillConfig) -> None:
    """Refuse a teacher that names nothing loadable (before any data is read): a registered name, a folder,
    ``hf-hub:ORG/NAME`` or ``local-dir:PATH``; a weights file goes to ``distill.teacher_weights``."""
    name = cfg.teacher
    if name.startswith(("hf-hub:", "local-dir:")):
        return
    path = Path(name)
    if path.is_file():
        raise DistillError(
            f"distill.teacher {name} is a file: set distill.teacher to the architecture's registered name and "
            f"distill.teacher_weights to {name} (with distill.teacher_kwargs for its arguments), or name the model "
            "or run folder that holds it"
        )
    if path.is_dir():
        return
    if cfg.teacher_weights and not Path(cfg.teacher_weights).is_file():
        raise DistillError(f"distill.teacher_weights {cfg.teacher_weights} does not exist")
    try:
        get_entry(name)
    except UnknownModelError as e:
        raise DistillError(
            f"distill.teacher {name!r} is neither a registered model nor a folder ({e}); name a run folder, a model "
            "folder, hf-hub:ORG/NAME or a registered name"
        ) from None


def build_teacher(cfg: DistillConfig, device: torch.device | str = "cpu", num_classes: int | None = None) -> nn.Module:
    """The ``distill:`` section's teacher with its trained weights, frozen in eval mode: a folder or Hub repo
    rebuilds what its config.json describes; a registered name loads ``teacher_weights`` (which must fit it
    exactly; ``num_classes`` is the student's unless ``teacher_kwargs`` says otherwise) or its pretrained weights."""
    check_teacher_name(cfg)
    kwargs = dict(cfg.teacher_kwargs)
    if cfg.teacher_weights:
        if num_classes is not None and get_entry(cfg.teacher).task == "image-classification":
            kwargs.setdefault("num_classes", num_classes)
        teacher = create_model(cfg.teacher, checkpoint_path=cfg.teacher_weights, **kwargs)
    else:
        try:
            teacher = create_model(cfg.teacher, pretrained=True, **kwargs)
        except CheckpointError as e:
            hint = ""
            if not Path(cfg.teacher).is_dir() and not cfg.teacher.startswith(("hf-hub:", "local-dir:")):
                hint = " (a registered teacher with weights of your own: distill.teacher_weights FILE)"
            raise CheckpointError(f"distill.teacher {cfg.teacher}: {e}{hint}") from None
    return teacher.to(device).eval().requires_grad_(False)


def _teacher_tokenizer(name: str) -> Path | None:
    """The tokenizer.json of a teacher: its folder's (or its run's export/), or its Hub repo's; None without one."""
    if not name.startswith("hf-hub:"):
        return local_tokenizer(name)
    try:
        return Path(download(name[len("hf-hub:") :], "tokenizer.json"))
    except CheckpointError:  # a repo without one (or unreachable): said by the caller
        return None


def _check_same_tokenizer(cfg: DistillConfig, task) -> None:
    """A language-model teacher with a tokenizer (its folder's, its Hub repo's) must share the run's: the logits of
    token id i mean the same word to both."""
    ours = getattr(task, "tokenizer_file", None)
    if ours is None:
        return
    theirs = _teacher_tokenizer(cfg.teacher)
    if theirs is None:
        _logger.warning(
            "distill.teacher %s has no tokenizer.json to compare with this run's (%s): its token ids are taken to "
            "mean the same words as the run's; make sure it was trained with this tokenizer",
            cfg.teacher,
            ours,
        )
        return
    if text.load_tokenizer(theirs).get_vocab() != text.load_tokenizer(ours).get_vocab():
        raise DistillError(
            f"the teacher's tokenizer ({theirs}) differs from this run's ({ours}): their logits would not line up. "
            f"Train with the teacher's: --data.tokenizer {theirs}"
        )


def _show_names(names: list[str], limit: int = 50) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{f', ... (+{len(names) - limit} more)' if len(names) > limit else ''}]"


def _teacher_label_names(cfg: DistillConfig, teacher: nn.Module) -> list[str] | None:
    """The class names the teacher was trained with: its config.json's (a model folder, a run's export/, a Hub
    repo), its run's metrics.json, or the config.json beside ``teacher_weights``; None when nothing records them."""
    name = cfg.teacher
    folder = None if name.startswith("hf-hub:") else Path(name.removeprefix("local-dir:"))
    run_dir = folder if folder is not None and is_run_folder(folder) else None
    weights = cfg.teacher_weights or (str(folder) if folder is not None and folder.is_dir() else None)
    return recorded_label_names(teacher, EvalSource(data="", kind="", run_dir=run_dir, weights=weights))


def _check_same_classes(cfg: DistillConfig, teacher: nn.Module, task) -> None:
    """An image-classification teacher must have been trained on the run's classes, in the same order: its logit i
    is the student's class i. A teacher that records no class names is taken at its word, with a warning."""
    ours = getattr(getattr(task, "info", None), "class_names", None)
    if not ours:
        return  # integer labels without names: nothing to compare
    ours = [str(n) for n in ours]
    theirs = _teacher_label_names(cfg, teacher)
    if theirs is None:
        _logger.warning(
            "distill.teacher %s records no class names (label_names in its config.json or its run's metrics.json): "
            "its %d outputs are taken to be this run's classes %s in this order; make sure it was trained on them",
            cfg.teacher,
            len(ours),
            _show_names(ours),
        )
        return
    if theirs == ours:
        return
    if sorted(theirs) == sorted(ours):
        first = next(i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b)
        how = f"the same classes in another order (position {first}: {theirs[first]!r} vs {ours[first]!r})"
    else:
        how = "other classes"
    raise DistillError(
        f"distill.teacher {cfg.teacher} was trained on the classes {_show_names(theirs)}, this run's data has "
        f"{_show_names(ours)}: {how}. The teacher's logit i must mean the student's class i, or distillation "
        "teaches the wrong labels. Distill from a teacher trained on these classes in this order (or drop distill:)."
    )


def _sample_batch(task, n: int, device, channels_last: bool):
    return task.prepare_batch(head_items(task.train_set, n), device, channels_last)


def build_distiller(
    recipe: Recipe,
    task,
    student: nn.Module,
    device: torch.device,
    channels_last: bool = False,
    amp_ctx=contextlib.nullcontext,
    batch_size: int = 64,
) -> Distiller | None:
    """The recipe's frozen teacher, checked against the student on one training batch (same output shape; a
    teacher that cannot take the student's inputs says so now), with its logits cached when
    ``distill.cache_logits``; None without a ``distill:`` section. ``task`` has prepared its data."""
    cfg = recipe.distill
    if cfg is None:
        return None
    info = getattr(task, "info", None)
    teacher = build_teacher(cfg, device, getattr(info, "num_classes", None))
    if channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    teacher_is_lm = hasattr(teacher, "generate") and not hasattr(teacher, "forward_head")
    if teacher_is_lm != (recipe.task == "text-generation"):
        kind = "a language model" if teacher_is_lm else "an image classifier"
        raise DistillError(f"distill.teacher {cfg.teacher} is {kind}; the run trains a {recipe.task} model")
    if teacher_is_lm:
        _check_same_tokenizer(cfg, task)
    else:
        _check_same_classes(cfg, teacher, task)
    theirs = (getattr(teacher, "pretrained_cfg", None) or {}).get("input_size")
    ours = (getattr(task, "cfg", None) or {}).get("input_size")
    if theirs and ours and tuple(theirs) != tuple(ours):
        _logger.warning(
            "distill.teacher %s was trained at input size %s; it sees the student's %s inputs",
            cfg.teacher,
            tuple(theirs),
            tuple(ours),
        )
    if hasattr(student, "set_distilled_training"):  # DeiT's distillation token: (class, distillation) logits
        student.set_distilled_training(True)
    distiller = Distiller(teacher, cfg)
    inputs = task.model_inputs(_sample_batch(task, 2, device, channels_last))
    was_training = student.training
    try:
        with torch.no_grad(), amp_ctx():
            t = distiller.teacher_logits(inputs)
            s = student.eval()(inputs)
    except (RuntimeError, ValueError) as e:
        raise DistillError(f"distill.teacher {cfg.teacher} cannot take the student's inputs: {e}") from None
    finally:
        student.train(was_training)
    s = s.logits if hasattr(s, "logits") else (s[0] if isinstance(s, (tuple, list)) else s)
    if t.shape[-1] != s.shape[-1]:
        what = "tokens in its vocabulary" if teacher_is_lm else "classes"
        raise DistillError(
            f"distill.teacher {cfg.teacher} predicts {t.shape[-1]} {what}, the student {s.shape[-1]}: the teacher "
            "must be trained on the same classes (the same tokenizer)"
        )
    if cfg.cache_logits:
        if isinstance(task.train_set, SampleStream):
            raise DistillError(
                "distill.cache_logits reads the training set by position, which a stream has not: drop "
                "cache_logits (the teacher then runs each step)"
            )
        loader = DataLoader(IndexedDataset(task.train_set), batch_size=batch_size, shuffle=False)
        batches = (
            (task.model_inputs(task.prepare_batch(items, device, channels_last)), index) for items, index in loader
        )
        distiller.fill_cache(batches, len(task.train_set), amp_ctx)
    return distiller
