"""Labels as read from users' files: a label is an integer class index (a python or numpy integer, or a float that
is a whole number, as MATLAB files store them). A float with a fraction (``0.7``), a string (``"cat"``), a bool or
anything else is a :class:`DataError` naming the file, the sample and the value; nothing is truncated silently."""

import numbers
from collections.abc import Sequence

import numpy as np

from .errors import DataError

__all__ = ["as_label", "as_labels"]

_FIX = "a label is an integer class index (0, 1, ...): the file is damaged or of another kind"


def _refuse(value: object, where: object, sample: int | None) -> DataError:
    at = f" (sample {sample:,})" if sample is not None else ""
    if isinstance(value, np.floating):
        shown = str(value)  # float32's 0.7 as 0.7
    else:
        shown = repr(value.item() if isinstance(value, np.generic) else value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return DataError(f"{where} holds the label {shown}{at}, which is not an integer: {_FIX}")


def as_label(value: object, where: object, sample: int | None = None) -> int:
    """``value`` as an int label, or a DataError naming ``where`` (and ``sample``) and the value."""
    if isinstance(value, (bool, np.bool_)):
        raise _refuse(value, where, sample)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and np.isfinite(value) and float(value).is_integer():
        return int(value)
    raise _refuse(value, where, sample)


def as_labels(values: "np.ndarray | Sequence", where: object) -> np.ndarray:
    """``values`` (an array or a sequence of labels) as int64 labels, or a DataError naming ``where``, the first
    sample that is not an integer and its value."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        array = values.reshape(-1)
        if array.dtype.kind in "iu":
            return array.astype(np.int64)
        if array.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(array) | (array != np.round(array)))
            if not bad.size:
                return array.astype(np.int64)
            raise _refuse(array[bad[0]], where, int(bad[0]))
        if array.size:  # bools, strings, bytes: no label
            raise _refuse(array[0], where, 0)
        return np.zeros(0, np.int64)
    flat = np.asarray(values, dtype=object).reshape(-1) if isinstance(values, np.ndarray) else list(values)
    return np.fromiter((as_label(v, where, i) for i, v in enumerate(flat)), np.int64, len(flat))
