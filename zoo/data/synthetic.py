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
from safetensors.torch import load_file
from torch.utils.data import Dataset

from .errors import DataError

__all__ = ["META_FILE", "TENSOR_FILE", "SyntheticData", "SyntheticDataset", "load_synthetic"]

TENSOR_FILE = "synthetic.safetensors"
META_FILE = "condense.json"


@dataclass
class SyntheticData:
    images: torch.Tensor  # (N, C, H, W) float32, normalised
    labels: torch.Tensor  # (N,) int64
    soft_labels: torch.Tensor | None
    meta: dict[str, Any]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # bases, hallucinator weights

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["source"]["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_synthetic(path: str | Path) -> SyntheticData:
    """Read a synthetic-set folder; a missing or inconsistent file is a :class:`DataError` that names it."""
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
    except Exception as e:  # truncated or foreign files
        raise DataError(f"{root} holds an unreadable synthetic set ({type(e).__name__}: {e})") from None
    images, labels = tensors.pop("images", None), tensors.pop("labels", None)
    if images is None or labels is None or images.ndim != 4 or labels.shape != (images.shape[0],):
        raise DataError(f"{tensor_path} lacks images (N, C, H, W) with one label each")
    classes = meta.get("source", {}).get("class_names")
    if not classes or int(labels.max()) >= len(classes) or int(labels.min()) < 0:
        raise DataError(f"{meta_path} names {len(classes or [])} classes; the labels run to {int(labels.max())}")
    soft = tensors.pop("soft_labels", None)
    if soft is not None and soft.shape != (images.shape[0], len(classes)):
        raise DataError(f"{tensor_path}: soft_labels {tuple(soft.shape)} do not match {images.shape[0]} images")
    return SyntheticData(images.float(), labels.long(), soft, meta, tensors)


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
