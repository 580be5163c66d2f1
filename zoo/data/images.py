"""Image-classification datasets: an ImageNet-layout folder, a Hugging Face ``datasets`` folder, bundled digits.

Every dataset yields ``(PIL.Image, int)``; transforms come from timm (``create_transform``) in the training
engine. :func:`digits` is scikit-learn's bundled copy of the UCI handwritten digits: 1,797 real 8x8 scans with
16 grey levels, no download. Its split is fixed: a seeded stratified 80/20 split (1,437 train, 360 held out).

Labels index the class names a caller passes (the training split's, or the ones a model recorded), so that every
split of a run numbers its classes the same way; a class outside them is a :class:`DataError` that names it.
Images are decoded one at a time, when a sample is read: one that does not decode is a :class:`DataError` that
names the file, or, with ``bad_files="skip"``, is replaced by the next image that decodes (a warning counts them).
"""

import io
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from .errors import DataError
from .labels import as_label, as_labels
from .shards import INDEX_NAME, read_index

__all__ = [
    "BAD_FILES",
    "DIGITS_SPLIT_SEED",
    "DatasetInfo",
    "HFImageDataset",
    "ImageFolderDataset",
    "ListDataset",
    "ShardDataset",
    "build_image_dataset",
    "class_index",
    "digits",
    "undecodable",
]

DIGITS_SPLIT_SEED = 0
BAD_FILES = ("error", "skip")  # what an image that does not decode does: stop the run, or leave the image out

_logger = logging.getLogger(__name__)


class DatasetInfo:
    def __init__(self, name: str, num_classes: int, class_names: list[str] | None = None):
        self.name, self.num_classes, self.class_names = name, num_classes, class_names


def _listed(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def class_index(found: Sequence[str], known: Sequence[str] | None, where: str) -> dict[str, int]:
    """``{class: label}`` for the classes ``found`` in ``where``: their positions in ``known`` (the training
    split's or a model's classes), else their own order. A found class outside ``known`` is a DataError."""
    for names, whose in ((found, where), (known, "the class list given")):
        repeated = sorted({str(c) for c in names or () if names.count(c) > 1})
        if repeated:  # a set made from them would be refused later (train.py, eval.py): refused here, before it
            raise DataError(
                f"{whose} names the class(es) {', '.join(map(repr, repeated[:5]))} twice: a class is one name; give "
                "each class once (the model's label_names, the data's class list)"
            )
    position = {c: i for i, c in enumerate(found if known is None else known)}
    unknown = [c for c in found if c not in position]
    if unknown:
        raise DataError(
            f"{where} has the class(es) {_listed(unknown)}, which the model does not know; its classes are "
            f"{_listed(list(known))}. Remove those classes from the data, or train on data that has them"
        )
    return {c: position[c] for c in found}


def undecodable(what: str, e: Exception) -> DataError:
    """The error for an image that does not decode under ``data.bad_files: error``."""
    return DataError(
        f"cannot decode image {what} ({_reason(e)}): replace or delete it, or set data.bad_files: skip to leave "
        "such images out"
    )


def _reason(e: Exception) -> str:
    if isinstance(e, UnidentifiedImageError):
        return "not an image file PIL can read"
    return f"{type(e).__name__}: {e}"


class _DecodedOnRead(Dataset):
    """Decodes sample ``i`` when it is read (``_load``); an image that does not decode is a DataError naming it,
    or with ``bad_files="skip"`` is replaced by the next sample that decodes, and counted in a warning."""

    transform: Callable | None = None

    def __init__(self, bad_files: str):
        if bad_files not in BAD_FILES:
            raise DataError(f"data.bad_files must be one of {', '.join(BAD_FILES)}, not {bad_files!r}")
        self.bad_files, self.skipped = bad_files, set()

    def _load(self, i: int) -> tuple[Image.Image, int]:
        raise NotImplementedError

    def _describe(self, i: int) -> str:
        raise NotImplementedError

    def __getitem__(self, i):
        n = len(self)
        for k in range(n):
            j = (int(i) + k) % n
            if j in self.skipped:
                continue
            try:
                img, label = self._load(j)
            except DataError:
                raise
            except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
                if self.bad_files == "error":
                    raise undecodable(self._describe(j), e) from e
                self.skipped.add(j)
                _logger.warning(
                    "skipping image %s: cannot decode it (%s); %d image(s) skipped so far",
                    self._describe(j),
                    _reason(e),
                    len(self.skipped),
                )
                continue
            return (self.transform(img) if self.transform else img), label
        raise DataError(f"none of the {n} images decodes (the first: {self._describe(0)})")


class ListDataset(Dataset):
    """In-memory images and labels."""

    def __init__(self, images: Sequence[Image.Image], labels: Sequence[int], transform: Callable | None = None):
        self.images, self.labels, self.transform = list(images), [int(y) for y in labels], transform

    @property
    def targets(self) -> list[int]:
        return self.labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]
        return (self.transform(img) if self.transform else img), self.labels[i]


class ImageFolderDataset(_DecodedOnRead):
    """``folder/<class>/**/*.png`` (torchvision's layout and file types), with labels from ``class_names``."""

    def __init__(self, folder: Path, class_names: Sequence[str] | None = None, bad_files: str = "error"):
        super().__init__(bad_files)
        try:
            found, _ = find_classes(folder)
        except FileNotFoundError:
            raise DataError(f"{folder} has no class folders: put each class's images in {folder}/CLASS/") from None
        self.class_to_idx = class_index(found, class_names, str(folder))
        try:  # a class the model knows may be missing from held-out data; every training class needs images
            self.samples = make_dataset(folder, self.class_to_idx, IMG_EXTENSIONS, allow_empty=bool(class_names))
        except FileNotFoundError as e:
            raise DataError(f"{folder}: {e}. Add images to those class folders or remove them") from None
        if not self.samples:
            raise DataError(f"{folder} holds no images ({', '.join(IMG_EXTENSIONS)}) in its class folders")
        self.classes = list(class_names) if class_names else found
        self.targets = [label for _, label in self.samples]

    def __len__(self):
        return len(self.samples)

    def _describe(self, i: int) -> str:
        return self.samples[i][0]

    def _load(self, i: int) -> tuple[Image.Image, int]:
        path, label = self.samples[i]
        with Image.open(path) as img:
            return img.convert("RGB"), label  # convert reads the whole file: broken ones fail here


class ShardDataset(_DecodedOnRead):
    """The samples of a shard folder by position (see the module docstring), labels from ``class_names``."""

    def __init__(self, folder: str | os.PathLike, class_names: Sequence[str] | None = None, bad_files: str = "error"):
        super().__init__(bad_files)
        self.folder = Path(folder)
        index = read_index(self.folder)
        found = list(index["classes"])
        self.class_to_idx = class_index(found, class_names, str(self.folder))
        self.classes = list(class_names) if class_names else found
        self.files = [self.folder / shard["file"] for shard in index["shards"]]
        for path, shard in zip(self.files, index["shards"]):
            if not path.is_file() or path.stat().st_size != shard["bytes"]:
                raise DataError(f"{path} is missing or not the size {INDEX_NAME} records: write the shards again")
        # (shard, offset, size, label, member name) per sample; labels renumbered to class_names' order
        self.samples = [
            (s, int(offset), int(size), self.class_to_idx[found[int(label)]], name)
            for s, shard in enumerate(index["shards"])
            for name, offset, size, label in shard["samples"]
        ]
        if not self.samples:
            raise DataError(f"{self.folder} holds no samples")
        self.targets = [sample[3] for sample in self.samples]
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def __len__(self):
        return len(self.samples)

    def _describe(self, i: int) -> str:
        shard, _, _, _, name = self.samples[i]
        return f"{self.files[shard]}:{name}"

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # a loader worker: descriptors are its own (pread keeps no shared offset)
            self._fds, self._pid = {}, os.getpid()
        if shard not in self._fds:
            self._fds[shard] = os.open(self.files[shard], os.O_RDONLY)
        return self._fds[shard]

    def _load(self, i: int) -> tuple[Image.Image, int]:
        shard, offset, size, label, _ = self.samples[i]
        data = os.pread(self._fd(shard), size, offset)
        if len(data) != size:
            raise OSError(f"the shard ends {size - len(data)} bytes early")
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB"), label

    def __getstate__(self):
        return {**self.__dict__, "_fds": {}}

    def __del__(self):
        if getattr(self, "_pid", None) == os.getpid():
            for fd in getattr(self, "_fds", {}).values():
                os.close(fd)


def digits(split: str = "train") -> tuple[ListDataset, DatasetInfo]:
    """scikit-learn's bundled 8x8 digits as RGB PIL images (grey levels 0..16 scaled to 0..255).

    ``split``: ``train`` (1,437 images) or ``validation``/``test`` (the 360 held-out images).
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError("the bundled digits need scikit-learn: pip install scikit-learn") from None
    d = load_digits()
    idx = np.arange(len(d.target))
    train_idx, val_idx = train_test_split(idx, test_size=0.2, random_state=DIGITS_SPLIT_SEED, stratify=d.target)
    if split == "train":
        chosen = train_idx
    elif split in ("validation", "val", "test"):
        chosen = val_idx
    else:
        raise DataError(f"digits has the splits train and validation, not {split!r}")
    pixels = np.round(d.images[chosen] * (255.0 / 16.0)).astype(np.uint8)
    images = [Image.fromarray(p, mode="L").convert("RGB") for p in pixels]
    return ListDataset(images, d.target[chosen]), DatasetInfo("digits", 10, [str(i) for i in range(10)])


class HFImageDataset(_DecodedOnRead):
    """One split of a Hugging Face ``datasets`` dataset (saved with ``save_to_disk``) with image and label columns.

    ``label_map`` renumbers the split's labels (its ClassLabel order -> the training split's or a model's).
    """

    def __init__(
        self,
        ds,
        image_key: str | None = None,
        label_key: str | None = None,
        transform: Callable | None = None,
        label_map: Sequence[int] | None = None,
        bad_files: str = "error",
        where: str = "the dataset",
    ):
        super().__init__(bad_files)
        cols = ds.column_names
        self.image_key = image_key or next((c for c in ("image", "img", "pixel_values") if c in cols), None)
        self.label_key = label_key or next((c for c in ("label", "labels", "fine_label") if c in cols), None)
        if self.image_key not in cols or self.label_key not in cols:
            raise DataError(
                f"the dataset has columns {cols}; name its image and label columns with "
                f"data.image_key / data.label_key (or --image-key / --label-key)"
            )
        self.ds, self.transform, self.label_map, self.where = ds, transform, label_map, where

    @property
    def targets(self) -> list[int]:
        labels = as_labels(self.ds[self.label_key], self.where).tolist()
        if self.label_map is None:
            return labels
        bad = next((y for y in labels if not 0 <= y < len(self.label_map)), None)
        if bad is not None:
            raise DataError(f"{self.where} has the label {bad}, outside its {len(self.label_map)} classes")
        return [self.label_map[y] for y in labels]

    def __len__(self):
        return len(self.ds)

    def _describe(self, i: int) -> str:
        return f"row {i} of {self.where}"

    def _load(self, i: int) -> tuple[Image.Image, int]:
        row = self.ds[int(i)]  # datasets decodes the image here
        img = row[self.image_key]
        if not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img, dtype=np.uint8))
        label = as_label(row[self.label_key], self.where, int(i))
        if self.label_map is not None:
            if not 0 <= label < len(self.label_map):
                raise DataError(f"{self._describe(i)} has the label {label}, outside its {len(self.label_map)} classes")
            label = self.label_map[label]
        return img.convert("RGB"), label


def _load_hf_split(path: str, split: str):
    try:
        from datasets import DatasetDict, load_from_disk
    except ImportError:
        raise ImportError("a datasets folder needs the `datasets` package: pip install datasets") from None
    try:
        ds = load_from_disk(path)
    except (ValueError, KeyError, TypeError) as e:  # datasets' own checks of an edited dataset_info.json
        why = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"{path} is not a usable datasets folder (datasets says: {why}): save it again") from None
    if isinstance(ds, DatasetDict):
        names = list(ds.keys())
        aliases = {
            "validation": ("validation", "val", "valid", "test"),
            "val": ("val", "validation", "test"),
            "train": ("train",),
            "test": ("test",),
        }
        for cand in aliases.get(split, (split,)):
            if cand in ds:
                return ds[cand], cand
        raise DataError(
            f"{path} has splits {names}, none of which is {split!r}; pick one with data.val_split / "
            f"data.train_split (or --split)"
        )
    return ds, split


def _hf_dataset(
    root: Path, split: str, image_key, label_key, class_names: Sequence[str] | None, bad_files: str
) -> tuple[HFImageDataset, DatasetInfo]:
    hf, split = _load_hf_split(str(root), split)
    ds = HFImageDataset(hf, image_key, label_key, bad_files=bad_files, where=f"{root} ({split} split)")
    own = list(getattr(hf.features.get(ds.label_key), "names", None) or [])
    if own:  # ClassLabel names: renumber them by the known classes
        index = class_index(own, class_names, f"{root} ({split} split)")
        ds.label_map = [index[c] for c in own]
        names = list(class_names) if class_names else own
        return ds, DatasetInfo(root.name, len(names), names)
    labels = as_labels(hf[ds.label_key], f"{root} ({split} split)")
    if not len(labels):
        raise DataError(f"{root} ({split} split) holds no samples")
    if min(labels) < 0:
        raise DataError(f"{root} ({split} split) has the label {min(labels)}: labels are class indices 0, 1, ...")
    num_classes = int(max(labels)) + 1  # bare integer labels: nothing to renumber
    if class_names:
        if num_classes > len(class_names):
            raise DataError(
                f"{root} ({split} split) has labels up to {num_classes - 1} but the model knows "
                f"{len(class_names)} classes ({_listed(list(class_names))})"
            )
        return ds, DatasetInfo(root.name, len(class_names), list(class_names))
    return ds, DatasetInfo(root.name, num_classes, None)


def build_image_dataset(
    name: str,
    split: str,
    path: str | None = None,
    image_key: str | None = None,
    label_key: str | None = None,
    class_names: Sequence[str] | None = None,
    bad_files: str = "error",
) -> tuple[Dataset, DatasetInfo]:
    """``digits`` | ``image_folder`` (``path/<split>/<class>/*.jpg``, or ``path/<class>/*`` as a single split)
    | ``hf_disk`` (a folder written by ``datasets.save_to_disk``) | ``wds`` (shards written by ``zoo data shard``:
    ``path/<split>/`` or ``path`` as a single split).

    ``class_names``: the classes labels index (the training split's, or a model's); None: the split's own.
    ``bad_files``: ``error`` (an image that does not decode stops with its name) or ``skip``.
    """
    if name == "digits":
        ds, info = digits(split)
        if class_names is not None and list(class_names) != info.class_names:
            index = class_index(info.class_names, class_names, "digits")
            ds.labels = [index[info.class_names[y]] for y in ds.labels]
            info = DatasetInfo(info.name, len(class_names), list(class_names))
        return ds, info
    if path is None:
        raise DataError(f"data.name {name} needs data.path (the dataset folder)")
    root = Path(path)
    if not root.exists():
        raise DataError(f"the dataset folder {root} does not exist: check data.path (or --data)")
    if not root.is_dir() and name in ("image_folder", "hf_disk", "wds"):
        wants = {
            "image_folder": "a folder of class folders (PATH/<class>/*.png, or PATH/train/<class>/...)",
            "hf_disk": "a datasets folder (written by save_to_disk)",
            "wds": "a folder of shards (written by zoo data shard)",
        }[name]
        raise DataError(
            f"data.path {root} is a file, not a dataset folder: {name} reads {wants}; point data.path (or --data) "
            "at the folder"
        )
    if name in ("image_folder", "wds"):
        cands = {"validation": ("validation", "val", "test"), "val": ("val", "validation", "test")}.get(split, (split,))
        folder = next((root / c for c in cands if (root / c).is_dir()), None)
        if folder is None:
            if any((root / c).is_dir() for c in ("train", "val", "validation")):
                raise DataError(f"{root} has no {split!r} folder (looked for {', '.join(cands)})")
            folder = root  # a single folder of class sub-folders (of shards)
        if name == "wds":
            ds = ShardDataset(folder, class_names, bad_files)
        else:
            ds = ImageFolderDataset(folder, class_names, bad_files)
        return ds, DatasetInfo(root.name, len(ds.classes), list(ds.classes))
    if name == "hf_disk":
        return _hf_dataset(root, split, image_key, label_key, class_names, bad_files)
    raise DataError(f"unknown image dataset {name!r}: use digits, image_folder or hf_disk")
