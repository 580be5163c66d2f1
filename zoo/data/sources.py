"""One resolver for every data name the zoo reads: a name (and an optional path) -> a :class:`DataSource` -> splits.

train.py (``data.name`` + ``data.path``), eval.py (``--data`` + ``--data-path``), ``zoo condense`` (the same two
options) and the condensation bench all ask :func:`resolve` what a data name means, so one spelling works in all of
them:

=====================================================  ==============================================================
``digits`` / ``pydoc``                                 bundled: scikit-learn's 8x8 digits, CPython's pydoc topics
``mnist`` ``fashion_mnist`` ``cifar10`` ``cifar100``   the benchmark sets in their distributed files
``svhn``                                               (:mod:`zoo.data.standard`); the folder holding them is the
                                                       path (``mnist:PATH``, or ``--data-path`` / ``data.path``);
                                                       no path: the zoo's cache (``$ZOO_CACHE/datasets/NAME``,
                                                       default ``~/.cache/zoo/datasets/NAME``), downloaded there
                                                       from torchvision's mirrors on first use
``image_folder:PATH`` ``hf_disk:PATH`` ``wds:PATH``    a kind named with its path (``KIND:PATH``, or the path apart)
``text:PATH`` ``hf_stream:NAME_OR_PATH``
``synthetic:PATH``                                     a ``zoo condense`` folder
a bare path                                            detected: a ``datasets`` folder, shards (an indexed folder,
                                                       tar files, a URL or a brace pattern), CIFAR / SVHN files,
                                                       text files, else an image folder
=====================================================  ==============================================================

A :class:`DataSource` carries what downstream code needs besides the pixels: channels, native size, class names,
the normalisation constants the condensation authors use (VICO-UoE/DatasetCondensation ``utils.get_dataset``),
whether horizontal flips suit the data (not for digits, whose mirror images are other glyphs), its splits (the
benchmark sets have ``train`` and ``test``; ``validation`` reads ``test``), and whether it is read as a stream.

A split may be sliced as in Hugging Face ``datasets``: ``train[:2000]``, ``test[1000:1500]`` read those samples
only (a quick run on a few thousand MNIST images: ``data.train_split: "train[:2000]"``, ``--split "test[:500]"``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from . import standard
from .errors import DataError
from .images import DatasetInfo, build_image_dataset, class_index
from .shards import INDEX_NAME, SPLITS, is_shard_folder

__all__ = [
    "BENCHMARKS",
    "IMAGE_KINDS",
    "KINDS",
    "TEXT_KINDS",
    "ArrayImageDataset",
    "Benchmark",
    "DataSource",
    "add_data_path_argument",
    "cache_dir",
    "is_stream",
    "parse_split",
    "resolve",
]

CACHE_ENV = "ZOO_CACHE"


@dataclass(frozen=True)
class Benchmark:
    """What is fixed about a benchmark set: its pixels' shape, its authors' normalisation, flips, class names
    (None: read from the set's own meta file), sizes of the train and test splits."""

    title: str
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool
    class_names: tuple[str, ...] | None
    sizes: tuple[int, int]


_DIGITS = tuple(str(i) for i in range(10))
# mean/std: VICO-UoE/DatasetCondensation utils.get_dataset (CIFAR-100's from its later revision; the first one
# used CIFAR-10's); flips: the authors' scripts flip CIFAR and Fashion-MNIST, never digits
BENCHMARKS: dict[str, Benchmark] = {
    "mnist": Benchmark("MNIST", 1, 28, (0.1307,), (0.3081,), False, _DIGITS, (60_000, 10_000)),
    "fashion_mnist": Benchmark(
        "Fashion-MNIST", 1, 28, (0.2861,), (0.3530,), True,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (60_000, 10_000),
    ),
    "cifar10": Benchmark("CIFAR-10", 3, 32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), True, None,
                         (50_000, 10_000)),
    "cifar100": Benchmark("CIFAR-100", 3, 32, (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), True, None,
                          (50_000, 10_000)),
    "svhn": Benchmark("SVHN", 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), False, _DIGITS,
                      (73_257, 26_032)),
}  # fmt: skip

IMAGE_KINDS = ("digits", *BENCHMARKS, "image_folder", "hf_disk", "wds", "hf_stream", "synthetic")
TEXT_KINDS = ("pydoc", "text", "hf_disk", "hf_stream", "wds")
KINDS = tuple(dict.fromkeys(IMAGE_KINDS + TEXT_KINDS))
_HELD_OUT = ("test", "validation", "val", "valid")
_SLICE = re.compile(r"^(?P<name>[^\[\]]+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def cache_dir() -> Path:
    """Where downloaded datasets go: ``$ZOO_CACHE/datasets``, else ``$XDG_CACHE_HOME/zoo/datasets``, else
    ``~/.cache/zoo/datasets``."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "zoo")
    return Path(root).expanduser() / "datasets"


def parse_split(split: str) -> tuple[str, slice | None]:
    """``"train[:2000]"`` -> ``("train", slice(None, 2000))``; a plain name -> ``(name, None)``."""
    m = _SLICE.match(split.strip())
    if m is None:
        if "[" in split or "]" in split:
            raise DataError(f"split {split!r}: write a slice as NAME[START:STOP], e.g. train[:2000]")
        name, part = split, None
    else:
        if any(len(m[k].lstrip("-")) > 18 for k in ("start", "stop")):  # int() of 4,300+ digits is a traceback
            raise DataError(
                f"split {split[:60]!r}{'...' if len(split) > 60 else ''}: a slice's start or stop has more than 18 "
                "digits, more samples than any dataset holds: give the samples to read, e.g. train[:2000]"
            )
        start, stop = (int(v) if v else None for v in (m["start"], m["stop"]))
        name, part = m["name"], slice(start, stop)
    # a split names a part of the data (a subfolder, a datasets split), never another place on disk
    if not _SPLIT_NAME.fullmatch(name) or name in (".", ".."):
        raise DataError(
            f"split {split!r}: a split is a name (train, validation, test, optionally sliced: test[:1000]), not a "
            "path; point --data-path (data.path) at the data instead"
        )
    return name, part


def is_stream(name: str, path: str | None) -> bool:
    """Whether ``data.name`` / ``data.path`` is read as a stream: ``hf_stream``, or ``wds`` given a URL, a pattern or
    a folder of tar files without the index ``zoo data shard`` writes (an indexed folder is read by position)."""
    if name == "hf_stream":
        return True
    if name != "wds" or path is None:
        return False
    p = Path(path)
    if "://" in path or not p.exists():
        return True
    if p.is_dir():  # tar files without the index zoo data shard writes
        indexed = (p / INDEX_NAME).is_file() or any((p / s / INDEX_NAME).is_file() for s in ("train", "val"))
        return not indexed and any(p.glob("*.tar"))
    return p.suffix == ".tar"


class ArrayImageDataset(Dataset):
    """uint8 images ``(N, H, W, C)`` and their labels, read as PIL images: RGB (grey repeated), or with
    ``grey=True`` single-channel ``L`` images for one-channel data."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, grey: bool = False):
        self.images, self.labels = images, labels
        self.mode = "L" if grey and images.shape[-1] == 1 else "RGB"
        self.transform = None

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        pixels = self.images[i]
        img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert(self.mode)
        return (self.transform(img) if self.transform else img), int(self.labels[i])


class _Sliced(Dataset):
    """Some samples of a map-style dataset, by position (a sliced split)."""

    def __init__(self, base: Dataset, index: range):
        self.base, self.index = base, index

    @property
    def targets(self) -> list[int]:
        targets = self.base.targets
        return [targets[i] for i in self.index]

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        return self.base[self.index[i]]


def _benchmark_split(kind: str, split: str) -> str:
    if split == "train":
        return "train"
    if split in _HELD_OUT:
        return "test"
    raise DataError(f"{kind} has the splits train and test (validation reads test), not {split!r}")


@dataclass(frozen=True)
class DataSource:
    """What a data name resolves to: ``kind`` (one of :data:`KINDS`) and ``path`` (None: bundled data, or a
    benchmark set in the zoo's cache). Open a split with :meth:`open` (images as PIL, for the training engine) or
    :meth:`arrays` (a benchmark set's uint8 pixels, for tensors built at once)."""

    kind: str
    path: str | None = None

    @property
    def benchmark(self) -> Benchmark | None:
        return BENCHMARKS.get(self.kind)

    @property
    def name(self) -> str:
        """What a run calls the data: the kind for bundled and benchmark sets, else the folder's name."""
        if self.kind in ("digits", *BENCHMARKS) or self.path is None:
            return self.kind
        return Path(self.path.rstrip("/")).name or self.path

    @property
    def spec(self) -> str:
        """The one-string spelling that resolves to this source again (``mnist:/data/mnist``, ``digits``)."""
        return f"{self.kind}:{self.path}" if self.path else self.kind

    @property
    def channels(self) -> int:
        return self.benchmark.channels if self.benchmark else 3

    @property
    def native_size(self) -> int | None:
        """The images' edge as stored (None: it varies, or is the data's own)."""
        return self.benchmark.size if self.benchmark else (8 if self.kind == "digits" else None)

    @property
    def mean(self) -> tuple[float, ...] | None:
        """The authors' normalisation mean (None: none is fixed; use the data's or the model's)."""
        return self.benchmark.mean if self.benchmark else None

    @property
    def std(self) -> tuple[float, ...] | None:
        return self.benchmark.std if self.benchmark else None

    @property
    def hflip(self) -> bool | None:
        """Whether horizontal flips suit the data (None: not known; the caller's default)."""
        if self.kind == "digits":
            return False
        return self.benchmark.hflip if self.benchmark else None

    @property
    def stream(self) -> bool:
        return is_stream(self.kind, self.path)

    @property
    def val_split(self) -> str:
        """The held-out split a run evaluates on: ``test`` for the benchmark sets, else ``validation``."""
        return "test" if self.benchmark else "validation"

    @cached_property
    def class_names(self) -> list[str] | None:
        """The class names, when the data fixes them (a benchmark's, CIFAR's meta file's, digits'); else None
        (an image folder's classes are its split's)."""
        if self.kind == "digits":
            return list(_DIGITS)
        if self.benchmark is None:
            return None
        if self.benchmark.class_names is not None:
            return list(self.benchmark.class_names)
        return standard.cifar_class_names(self.folder(), self.kind)

    def folder(self) -> Path:
        """A benchmark set's folder: its path, else the zoo's cache, downloaded into on first use."""
        if self.benchmark is None:
            raise DataError(f"{self.kind} is not a benchmark set")
        if self.path is not None:
            root = Path(self.path).expanduser()
            if not root.is_dir():
                raise DataError(f"{self.kind}: {root} is not a folder: give the folder holding the set's files")
            return root
        root = cache_dir() / self.kind
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # ZOO_CACHE (or a folder under it) names a file, or cannot be made
            raise DataError(
                f"the dataset cache {root} cannot be made ({e.strerror or e}): set {CACHE_ENV} to a writable folder "
                f"(datasets go to ${CACHE_ENV}/datasets), or pass the folder holding {self.kind}'s files "
                f"(--data-path PATH, data.path in a recipe, or {self.kind}:PATH)"
            ) from None
        return standard.download(self.kind, root)

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """A benchmark set's ``split`` (``train``; ``test`` or ``validation``; sliceable) as ``(uint8 images
        (N, H, W, C), int64 labels)``."""
        if self.benchmark is None:
            raise DataError(f"{self.spec} is not a benchmark set ({', '.join(BENCHMARKS)}): open() reads it")
        name, part = parse_split(split)
        images, labels = standard.read_split(self.kind, self.folder(), _benchmark_split(self.kind, name))
        if part is not None:
            images, labels = images[part], labels[part]
            if not len(labels):
                raise DataError(f"{self.kind} split {split!r} holds no samples")
        return images, labels

    def open(
        self,
        split: str,
        class_names: Sequence[str] | None = None,
        bad_files: str = "error",
        image_key: str | None = None,
        label_key: str | None = None,
        grey: bool = False,
    ) -> tuple[Dataset, DatasetInfo]:
        """One split as a map-style dataset of ``(PIL image, label)`` and its :class:`DatasetInfo`.

        ``class_names``: the classes labels index (the training split's or a model's; a class outside them is a
        DataError); ``grey``: one-channel data as ``L`` images (else RGB, what the zoo's image models take).
        """
        if self.kind not in IMAGE_KINDS or self.kind == "synthetic" or self.stream:
            raise DataError(f"{self.spec} is not an image dataset read by split here (kind {self.kind})")
        name, part = parse_split(split)
        if self.benchmark is None:
            ds, info = build_image_dataset(self.kind, name, self.path, image_key, label_key, class_names, bad_files)
            if self.kind == "digits":
                info = DatasetInfo("digits", info.num_classes, info.class_names)
            if part is not None:
                ds = _Sliced(ds, range(len(ds))[part])
                if not len(ds):
                    raise DataError(f"{self.spec} split {split!r} holds no samples")
            return ds, info
        images, labels = self.arrays(split)
        own = self.class_names
        if class_names is not None and list(class_names) != own:
            index = class_index(own, class_names, self.kind)
            labels = np.asarray([index[own[y]] for y in range(len(own))], dtype=np.int64)[labels]
            own = list(class_names)
        return ArrayImageDataset(images, labels, grey), DatasetInfo(self.kind, len(own), own)


def _detect(data: str) -> str:
    """The kind of a bare path (or URL, or shard pattern)."""
    p = Path(data).expanduser()
    if "://" in data or any(c in data for c in "{*?["):
        return "wds"  # shards by URL or pattern: streamed
    if not p.exists():
        raise DataError(
            f"no dataset {data!r}: no such file or folder (or name one: {', '.join(('digits', *BENCHMARKS))} with "
            "the folder of its files as NAME:PATH or a separate path; pydoc; hf_stream:NAME for a stream)"
        )
    if p.is_file():
        return "wds" if p.suffix == ".tar" else "text"
    if any((p / f).is_file() for f in ("dataset_dict.json", "dataset_info.json", "state.json")):
        return "hf_disk"
    if any(is_shard_folder(d) for d in (p, *(p / s for s in SPLITS))) or is_stream("wds", str(p)):
        return "wds"
    if (p / "cifar-10-batches-py").is_dir() or (p / "batches.meta").is_file():
        return "cifar10"
    if (p / "cifar-100-python").is_dir() or ((p / "meta").is_file() and (p / "train").is_file()):
        return "cifar100"
    if (p / "train_32x32.mat").is_file() or (p / "test_32x32.mat").is_file():
        return "svhn"
    if any("idx3-ubyte" in f.name for f in p.iterdir()):
        raise DataError(
            f"{p} holds IDX files: name the set, mnist:{p} or fashion_mnist:{p} (--data NAME --data-path {p})"
        )
    if any(f.suffix.lower() in (".txt", ".md", ".rst") for f in p.iterdir() if f.is_file()):
        return "text"
    return "image_folder"


def add_data_path_argument(parser) -> None:
    """``--data-path`` (also spelled ``--data.path``, as in recipes): the folder of ``--data``'s files, for every
    command that takes ``--data``."""
    parser.add_argument(
        "--data-path",
        "--data.path",
        dest="data_path",
        default=None,
        metavar="PATH",
        help="the folder of --data's files, e.g. --data mnist --data-path ../shared/datasets/mnist",
    )


def resolve(data: str, path: str | os.PathLike | None = None) -> DataSource:
    """The :class:`DataSource` that ``data`` names: a kind (``mnist``, ``image_folder``...), ``KIND:PATH``, or a
    bare path whose kind is detected. ``path``: the path given apart (``data.path``, ``--data-path``); naming two
    different places is a DataError."""
    data = str(data)
    path = None if path is None or str(path) == "" else str(path)
    kind, inline = data, None
    head, sep, tail = data.partition(":")
    if sep and head in KINDS:
        kind, inline = head, tail or None
    if inline is not None:
        if path is not None and Path(path).expanduser() != Path(inline).expanduser():
            raise DataError(f"{data} and the path {path} name two places: give the path once")
        path = inline
    if kind in ("digits", "pydoc") and path is not None:  # bundled with the install: a path would go unread
        raise DataError(
            f"{kind} ships with the install and reads no path ({path} given): drop the path, or name the data that "
            f"lives there (image_folder:{path}, text:{path}, mnist:{path}, ...)"
        )
    if kind in KINDS:
        return DataSource(kind, path)
    if path is not None:
        raise DataError(f"unknown data name {data!r}: one of {', '.join(KINDS)} (the path {path} goes with it)")
    return DataSource(_detect(data), data)
