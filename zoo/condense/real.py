"""Real data as tensors: the labelled split a condensation method matches (:class:`RealData`, every image
preprocessed and normalised once, kept per class), read through the one data resolver (:func:`load_real`), and the
held-out split of the data a synthetic set was made from (:func:`load_real_split`)."""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data import create_transform
from tqdm import tqdm

from ..data.errors import DataError
from ..data.sources import IMAGE_KINDS, ArrayImageDataset, DataSource, resolve
from . import distributed
from .errors import CondenseError

__all__ = ["RealData", "image_source", "load_real", "load_real_split"]


@dataclass
class RealData:
    """A labelled split, every image preprocessed to ``(C, H, W)`` and normalised with ``preprocessing``'s
    mean/std; ``by_class[c]`` holds the indices of class ``c``."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    source: dict[str, Any]
    preprocessing: dict[str, Any]
    by_class: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self):
        repeated = sorted({str(c) for c in self.class_names if self.class_names.count(c) > 1})
        if repeated:  # the set would be written, then refused by train.py: refused before any work
            raise CondenseError(
                f"the class names given name {', '.join(map(repr, repeated[:5]))} twice: a class is one name; give "
                "each class once"
            )
        if not self.by_class:
            self.by_class = [torch.nonzero(self.labels == c).flatten() for c in range(self.num_classes)]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def class_images(self, c: int, n: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` random images of class ``c`` (all of them, shuffled, when ``n`` is None or larger)."""
        idx = self.by_class[c]
        perm = torch.randperm(len(idx), generator=generator)
        return self.images[idx[perm[:n] if n is not None else perm]]

    def class_batch(
        self, c: int, n: int | None, generator: torch.Generator | None = None, gather: bool = True
    ) -> torch.Tensor | None:
        """The batch :meth:`class_images` draws, from the same generator draw, for a use that does not see the
        order (a mean, a mean loss): the class's images as one cached tensor when ``n`` covers the class, without a
        gather. ``gather=False`` only advances ``generator`` (a process's classes that another computes)."""
        idx = self.by_class[c]
        perm = torch.randperm(len(idx), generator=generator)
        if not gather:
            return None
        if n is None or n >= len(idx):
            cache = self.__dict__.setdefault("_whole_class", {})
            if c not in cache:
                cache[c] = self.images[idx]
            return cache[c]
        return self.images[idx[perm[:n]]]

    def to(self, device) -> "RealData":
        return RealData(
            self.images.to(device), self.labels.to(device), self.class_names, self.source, self.preprocessing,
            [i.to(device) for i in self.by_class],
        )  # fmt: skip


def image_source(data: "str | DataSource", path: str | None = None) -> DataSource:
    """The data ``data`` (and ``path``) names, through the one resolver (:func:`zoo.data.sources.resolve`): a
    benchmark set (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``svhn``, with its folder as ``path`` or
    ``NAME:PATH``), ``digits``, ``hf_disk:PATH`` / ``image_folder:PATH``, or a folder whose kind is detected. The one
    place condensation resolves its data and refuses what is not labelled images; a :class:`DataSource` (resolved
    already, by ``zoo condense``) is only checked."""
    if isinstance(data, DataSource):
        src = data
    else:
        try:
            src = resolve(data, path)
        except DataError as e:
            raise CondenseError(str(e)) from None
    if src.kind not in IMAGE_KINDS or src.kind == "synthetic" or src.stream:
        raise CondenseError(
            f"{data if isinstance(data, str) else src.spec} is {src.kind} data: condensation reads labelled images (digits, mnist, fashion_mnist, cifar10, "
            "cifar100, svhn, an image folder or a datasets folder)"
        )
    return src


def _fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.numpy().astype(np.int64).tobytes())
    return "sha256:" + h.hexdigest()


def _to_tensors(dataset, transform) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    quiet = len(dataset) < 5000 or not distributed.is_main()
    for i in tqdm(range(len(dataset)), desc="reading images", leave=False, disable=quiet):
        img, y = dataset[i]
        xs.append(transform(img))
        ys.append(int(y))
    if not xs:
        raise CondenseError("the dataset has no images")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def _pixels(src, data: str, split: str, image_size: int, interpolation: str, class_names, c: int):
    """The split's images as float pixels in [0, 1] (NCHW, ``c`` channels, ``image_size``), labels, class names."""
    try:
        dataset, info = src.open(split, class_names=class_names, grey=c == 1)
        names = list(info.class_names) if info.class_names else [str(i) for i in range(info.num_classes)]
        if getattr(dataset, "targets", None) is None:
            raise CondenseError(f"{data} ({split}) has no labels: condensation needs a labelled dataset")
        if isinstance(dataset, ArrayImageDataset) and image_size == src.native_size:  # no per-image transform
            # NCHW in memory (a permuted view would carry channels-last strides into every network)
            raw = torch.from_numpy(dataset.images).permute(0, 3, 1, 2)
            raw = raw.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
            raw = raw.expand(-1, c, -1, -1).contiguous() if raw.shape[1] != c else raw
            labels = torch.from_numpy(dataset.labels).long()
        else:
            tf = create_transform((c, image_size, image_size), is_training=False, interpolation=interpolation,
                                  mean=(0.0,) * c, std=(1.0,) * c, crop_pct=1.0)  # fmt: skip
            raw, labels = _to_tensors(dataset, tf)
    except DataError as e:
        raise CondenseError(str(e)) from None
    return raw, labels, names


def _provenance(src, split: str, val_split: str | None, images, labels, names: list[str]) -> dict:
    """Where a real split came from, as a synthetic set's ``condense.json`` records it."""
    where = src.path if src.benchmark is None else (src.path or str(src.folder()))
    return {
        "name": src.name,
        "kind": src.kind,
        "path": str(Path(where).resolve()) if where else None,
        "split": split,
        "val_split": val_split or src.val_split,
        "size": int(labels.numel()),
        "fingerprint": _fingerprint(images, labels),
        "class_names": names,
    }


def load_real(
    data: "str | DataSource" = "digits",
    split: str = "train",
    image_size: int = 32,
    interpolation: str = "bicubic",
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    class_names: list[str] | None = None,
    val_split: str | None = None,
    path: str | None = None,
    channels: int | None = None,
) -> RealData:
    """One split of ``data`` as normalised tensors at ``image_size``.

    ``data`` (+ ``path``): what :func:`zoo.data.sources.resolve` reads (or its result, a ``DataSource``), e.g. ``"mnist"`` with ``path`` the folder of
    its IDX files (or ``"mnist:PATH"``). A benchmark set at its native size is built straight from its arrays
    (60,000 MNIST images in about a second); at another size, and for other data, every image is resized and
    centre-cropped (timm's eval transform with ``crop_pct=1``, which train.py uses for the held-out split of a
    synthetic set). ``split`` may be sliced: ``train[:5000]``.

    ``channels``: None keeps the data's own (1 for MNIST and Fashion-MNIST, as the authors condense them; 3 else);
    3 repeats a grey set's channel. ``mean``/``std``: None takes a benchmark set's published constants (the
    authors'), else the split's own per-channel statistics. ``val_split``: the held-out split recorded for
    :func:`load_real_split` (None: the data's, ``test`` for the benchmark sets).
    """
    if not isinstance(image_size, int) or image_size < 8:
        raise CondenseError(f"image_size must be an int >= 8, got {image_size!r}")
    src = image_source(data, path)
    c = channels or src.channels
    if c not in (1, 3) or (c == 1 and src.channels != 1):
        raise CondenseError(f"{src.spec} has {src.channels}-channel images: channels must be {src.channels} or 3")
    if (mean is None or std is None) and src.mean is not None:  # the authors' constants (a grey one, repeated)
        mean, std = src.mean * (c // len(src.mean)), src.std * (c // len(src.std))
    raw, labels, names = _pixels(src, data, split, image_size, interpolation, class_names, c)
    if mean is None or std is None:
        mean = tuple(round(float(v), 6) for v in raw.mean(dim=(0, 2, 3)))
        std = tuple(round(float(v), 6) for v in raw.std(dim=(0, 2, 3)).clamp_min(1e-3))
    if len(mean) != c or len(std) != c:
        raise CondenseError(f"mean/std have {len(mean)}/{len(std)} values for {c}-channel images")
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    images = raw.sub_(m).div_(s)
    bad = int((~torch.isfinite(images.flatten(1)).all(1)).sum())
    if bad:
        raise CondenseError(
            f"{bad} image(s) of {src.spec} ({split}) hold NaN or infinite values once normalised (mean {list(mean)}, "
            f"std {list(std)}): fix the data or its mean/std"
        )
    source = _provenance(src, split, val_split, images, labels, names)
    pre = {
        "image_size": image_size,
        "channels": c,
        "interpolation": interpolation,
        "mean": list(mean),
        "std": list(std),
    }
    return RealData(images, labels, names, source, pre)


def load_real_split(source: dict[str, Any], preprocessing: dict[str, Any], split: str | None = None) -> RealData:
    """The split ``split`` (default: the held-out one) of the data a synthetic set was made from, preprocessed as
    the set was (size, channels, mean/std)."""
    return load_real(
        source["kind"],
        split or source.get("val_split", "validation"),
        preprocessing["image_size"],
        preprocessing["interpolation"],
        tuple(preprocessing["mean"]),
        tuple(preprocessing["std"]),
        class_names=list(source["class_names"]),
        path=source.get("path"),
        channels=preprocessing.get("channels", 3),
    )
