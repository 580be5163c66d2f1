"""A training run's folder, named once: what ``train.py`` writes into it, and what every reader of a run looks for
(``create_model`` and ``zoo export`` of a run folder, ``zoo publish``, ``eval.py --checkpoint``, the benchmarks).

A run folder is one that holds :data:`ARGS`; its model folder (``config.json``, weights, card) is :data:`EXPORT`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ARGS",
    "CHECKPOINTS",
    "EXPORT",
    "LOG",
    "METRICS",
    "OUTPUTS",
    "PUBLISH",
    "TENSORBOARD",
    "TOKENIZER",
    "WEIGHTS",
    "export_folder",
    "is_run_folder",
]

ARGS = "args.yaml"  # the recipe the run trained with (a resume reads it back)
LOG = "log.csv"
METRICS = "metrics.json"  # held-out results, the profile, the class names
WEIGHTS = "model.safetensors"  # the final weights (the EMA's where the run keeps one)
TOKENIZER = "tokenizer.json"  # a language-model run's tokenizer
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tb"
EXPORT = "export"  # the publishable model folder
PUBLISH = "publish"  # zoo publish's folder
# everything a run may write into its folder: --overwrite removes these and nothing else
OUTPUTS = (ARGS, LOG, METRICS, WEIGHTS, TOKENIZER, CHECKPOINTS, TENSORBOARD, EXPORT, PUBLISH)


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a training run's folder (it holds :data:`ARGS`)."""
    return (Path(path) / ARGS).is_file()


def export_folder(run_dir: str | os.PathLike) -> Path:
    """The run's model folder (``train.py`` writes it at the end; ``zoo publish`` writes it again on request)."""
    return Path(run_dir) / EXPORT
