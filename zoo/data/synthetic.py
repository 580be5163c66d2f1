"""A condensed (synthetic) training set on disk, as ``zoo condense`` writes it, and the dataset that reads it.

The folder::

    synthetic.safetensors   images (float32, N x C x H x W, normalised with the recorded mean/std), labels (int64),
                            soft_labels (float32 N x classes, where the method makes them), and for factorization
                            the bases and hallucinator weights that generate the images (``bases``, ``hal.*``)
    condense.json           method, ipc, options, seed, the source data (name, path, splits, size, fingerprint,
                            class names), preprocessing (image size, mean, std, interpolation), wall time, memory
    images/<class>/*.png    the images for looking at them and for any other tool
    README.md, grid.png     a card with a grid picture

``train.py`` reads it as ``data.name: synthetic`` with ``data.path: DIR``; the held-out split is the real one that
``condense.json`` names, preprocessed as the set was.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.utils.data import Dataset

from .errors import DataError
from .sources import DataSource

__all__ = [
    "META_FILE",
    "RECORDED_META",
    "TENSOR_FILE",
    "SyntheticData",
    "SyntheticDataset",
    "check_class_order",
    "load_synthetic",
]

TENSOR_FILE = "synthetic.safetensors"
META_FILE = "condense.json"
RECORDED_META = ("source", "preprocessing")  # condense.json's sections the tensor file records too (checked at load)


@dataclass
class SyntheticData:
    images: torch.Tensor  # (N, C, H, W) float32, normalised
    labels: torch.Tensor  # (N,) int64
    soft_labels: torch.Tensor | None
    meta: dict[str, Any]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # bases, hallucinator weights
    recorded: bool = False  # the tensor file records condense.json's source (class names): edits are caught

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["source"]["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_synthetic(path: str | Path) -> SyntheticData:
    """Read a synthetic-set folder; a missing or inconsistent file is a :class:`DataError` that names it.

    ``condense.json`` is input the zoo did not necessarily write: its class names must be unique strings that the
    labels index, its preprocessing must describe the images (channels, size, mean/std), and where the tensor file
    records the source and preprocessing (sets written by this version) the two must agree, so that an edited
    ``class_names`` (a reordering trains on wrong labels) or held-out path is refused by name."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder: data.path of data.name synthetic is a `zoo condense --out` folder")
    meta_path, tensor_path = root / META_FILE, root / TENSOR_FILE
    for p in (meta_path, tensor_path):
        if not p.is_file():
            raise DataError(f"{root} has no {p.name}: it is not a synthetic set (write one with zoo condense)")
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(tensor_path))
        with safe_open(str(tensor_path), "pt") as f:
            recorded = f.metadata() or {}
    except Exception as e:  # truncated or foreign files
        raise DataError(f"{root} holds an unreadable synthetic set ({type(e).__name__}: {e})") from None
    again = "condense the set again (zoo condense), or restore the file"
    if not isinstance(meta, dict) or not isinstance(meta.get("source"), dict):
        raise DataError(f"{meta_path} has no source section: {again}")
    images, labels = tensors.pop("images", None), tensors.pop("labels", None)
    if images is None or labels is None or images.ndim != 4 or labels.shape != (images.shape[0],):
        raise DataError(f"{tensor_path} lacks images (N, C, H, W) with one label each")
    if images.shape[0] == 0:
        raise DataError(f"{tensor_path} holds no images: {again}")
    if not images.is_floating_point() or labels.is_floating_point() or labels.dtype == torch.bool:
        raise DataError(
            f"{tensor_path} holds {images.dtype} images and {labels.dtype} labels; a synthetic set's images are "
            f"normalised floats and its labels integers: {again}"
        )
    classes = meta["source"].get("class_names")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{meta_path} names no classes (source.class_names, a list of strings): {again}")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise DataError(f"{meta_path} names the class(es) {', '.join(map(repr, repeated[:5]))} twice: {again}")
    if int(labels.max()) >= len(classes) or int(labels.min()) < 0:
        raise DataError(
            f"{meta_path} names {len(classes)} classes; the labels run from {int(labels.min())} to {int(labels.max())}"
        )
    _check_preprocessing(meta, meta_path, images, again)
    for key in RECORDED_META:
        if key in recorded and json.loads(recorded[key]) != meta.get(key):
            theirs, ours = json.loads(recorded[key]) or {}, meta.get(key) or {}
            keys = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            raise DataError(
                f"{meta_path}: {', '.join(f'{key}.{k}' for k in keys[:4])} differ(s) from what {TENSOR_FILE} records "
                f"(the file was edited after the set was made): {again}"
            )
    if not bool(torch.isfinite(images).all()):
        raise DataError(f"{tensor_path} holds NaN or infinite image values: {again}")
    soft = tensors.pop("soft_labels", None)
    if soft is not None and soft.shape != (images.shape[0], len(classes)):
        raise DataError(f"{tensor_path}: soft_labels {tuple(soft.shape)} do not match {images.shape[0]} images")
    return SyntheticData(images.float(), labels.long(), soft, meta, tensors, "source" in recorded)


def check_class_order(data: SyntheticData, source: DataSource, where: str | Path) -> None:
    """A DataError when a set whose tensor file records no source (written by an older zoo) names classes in
    condense.json that are not its source data's own, in the data's order.

    Its labels were numbered by the source's classes as read then; the held-out split is numbered by condense.json's
    names, so a reordered (or otherwise edited) list would evaluate every class against another one, at chance.
    Sets written now record the names in the tensor file (:func:`load_synthetic` compares the two), and a
    recorded order, even one that is not the data's own, is kept: it is the order the labels were made in."""
    if data.recorded:
        return
    names = data.class_names
    own = source.class_names
    if own is None:  # an image folder's, a datasets folder's: those of the split the set was made from
        _, info = source.open(str(data.meta["source"].get("split") or "train"))
        own = list(info.class_names) if info.class_names else [str(i) for i in range(info.num_classes)]
    if list(own) != names:
        shown = ", ".join(map(repr, names[:10])) + (", ..." if len(names) > 10 else "")
        theirs = ", ".join(map(repr, own[:10])) + (", ..." if len(own) > 10 else "")
        raise DataError(
            f"{Path(where) / META_FILE} names the classes {shown} but the source's own are {theirs}, and "
            f"{TENSOR_FILE} records no class names to confirm the edit (a set written by an older zoo): its labels "
            "follow the source's order, so the held-out split would be read against the wrong classes. Restore "
            "condense.json's source.class_names, or condense the set again (zoo condense)"
        )


def _check_preprocessing(meta: dict, meta_path: Path, images: torch.Tensor, again: str) -> None:
    """condense.json's preprocessing describes the images: their channels and size, a mean and std per channel."""
    pre = meta.get("preprocessing")
    if not isinstance(pre, dict):
        raise DataError(f"{meta_path} has no preprocessing section (image_size, channels, mean, std): {again}")
    n, c, h, w = images.shape
    size, channels = pre.get("image_size"), pre.get("channels", 3)
    if size != h or size != w or channels != c:
        raise DataError(
            f"{meta_path} records {channels}-channel images of {size}x{size}; the set holds {c}x{h}x{w}: {again}"
        )
    for key in ("mean", "std"):
        values = pre.get(key)
        if not isinstance(values, list) or len(values) != c or not all(isinstance(v, (int, float)) for v in values):
            raise DataError(f"{meta_path}: preprocessing.{key} is not {c} number(s): {again}")
    if not all(v > 0 for v in pre["std"]):
        raise DataError(f"{meta_path}: preprocessing.std must be positive: {again}")


class SyntheticDataset(Dataset):
    """``(image tensor, label)`` pairs of a synthetic set; ``transform`` takes and returns one (C, H, W) tensor."""

    def __init__(self, data: SyntheticData, transform: Callable | None = None):
        self.data, self.transform = data, transform

    @property
    def targets(self) -> list[int]:
        return self.data.labels.tolist()

    def __len__(self):
        return self.data.images.shape[0]

    def __getitem__(self, i):
        x = self.data.images[i]
        return (self.transform(x) if self.transform is not None else x), int(self.data.labels[i])
