"""Efficient data: dataset condensation (distillation) and coreset selection.

    >>> from zoo.condense import condense
    >>> synset = condense("digits", method="dm", ipc=10, out="runs/condensed/dm_ipc10")

One file per method behind one interface (:class:`zoo.condense.core.Method`); :mod:`zoo.condense.core` holds the
real data as tensors, the synthetic set and its folder, and the resumable loop; :mod:`zoo.condense.evaluate` the
field's evaluation protocol (ConvNet-3, DSA, SGD).
"""

from . import dc, dm, factorization, mtt, rded, selection, sre2l  # noqa: F401  (register the methods)
from .core import METHODS, CondenseError, Method, RealData, SyntheticSet, condense, load_real, load_real_split
from .evaluate import EvalSettings, accuracy, evaluate_set, train_network
from .student import evaluate_with_teacher

__all__ = [
    "METHODS",
    "CondenseError",
    "EvalSettings",
    "Method",
    "RealData",
    "SyntheticSet",
    "accuracy",
    "condense",
    "evaluate_set",
    "evaluate_with_teacher",
    "load_real",
    "load_real_split",
    "train_network",
]
