"""What differs between image classification and language modelling, behind one interface (:class:`Task`).

The loop (:mod:`zoo.train.loop`) and ``eval.py`` (:mod:`zoo.evaluate`) drive either task the same way and never
ask which one it is:

* data: ``prepare_data()`` (a training run's splits) or ``prepare_eval_data(model, source)`` (held-out data named
  by :class:`EvalSource`, eval.py's arguments); ``train_set``, ``set_epoch``, ``total_steps``;
* the model: ``build_model()`` with the arguments the data decides (``num_classes``, ``vocab_size``), and
  ``complete_model_kwargs(kwargs, run_dir, weights)`` to rebuild a finished run's model;
* a step: ``build_mixup()``, ``build_loss(mixup)``, ``prepare_batch``, ``forward_loss`` (with a
  :class:`~zoo.train.distill.Distiller`, the distillation loss too), ``model_inputs`` (what the model is fed);
* evaluation: ``evaluate(model, ...)`` and ``eval_description()`` (dataset, split, preprocessing);
* the run's outputs: ``run_metrics()``, ``extra_files()`` (the tokenizer), ``export_kwargs()``, ``profile(model)``.

One module per task (:mod:`.image`, :mod:`.lm`) on the shared base (:mod:`.base`).
"""

from pathlib import Path

from torch import nn

from ...registry import UnknownModelError, get_entry
from ..config import Recipe
from ..distributed import DistState
from .base import EvalSource, SeededTransformDataset, Task
from .image import ImageTask, recorded_label_names
from .lm import LMTask, find_tokenizer, local_tokenizer

__all__ = [
    "EvalSource",
    "ImageTask",
    "LMTask",
    "SeededTransformDataset",
    "TASKS",
    "Task",
    "build_task",
    "find_tokenizer",
    "local_tokenizer",
    "recorded_label_names",
    "task_class",
    "task_of_model",
]

TASKS: dict[str, type[Task]] = {ImageTask.name: ImageTask, LMTask.name: LMTask}


def task_class(name: str) -> type[Task]:
    """The :class:`Task` of a recipe's ``task:`` (or a registered model's task tag)."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}: one of {', '.join(TASKS)}") from None


def task_of_model(model: nn.Module, name: str) -> type[Task]:
    """The task of a model met outside a training run: its registered architecture's (an hf-hub model names the
    architecture in its pretrained cfg), else what its interface says."""
    if hasattr(model, "generate") and not hasattr(model, "forward_head"):
        return LMTask
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or name
    try:
        return task_class(get_entry(arch).task)
    except UnknownModelError:  # a model outside the registry: timm's image classifiers
        return ImageTask


def build_task(recipe: Recipe, dstate: DistState, run_dir: Path) -> Task:
    return task_class(recipe.task)(recipe, dstate, run_dir)
