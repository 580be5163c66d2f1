"""Image-classification datasets: an ImageNet-layout folder, a Hugging Face ``datasets`` folder, bundled digits.

Every dataset yields ``(PIL.Image, int)``; transforms come from timm (``create_transform``) in the training
engine. :func:`digits` is scikit-learn's bundled copy of the UCI handwritten digits: 1,797 real 8x8 scans with
16 grey levels, no download. Its split is fixed: a seeded stratified 80/20 split (1,437 train, 360 held out).
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["DIGITS_SPLIT_SEED", "DatasetInfo", "HFImageDataset", "ListDataset", "build_image_dataset", "digits"]

DIGITS_SPLIT_SEED = 0


class DatasetInfo:
    def __init__(self, name: str, num_classes: int, class_names: list[str] | None = None):
        self.name, self.num_classes, self.class_names = name, num_classes, class_names


class ListDataset(Dataset):
    """In-memory images and labels."""

    def __init__(self, images: Sequence[Image.Image], labels: Sequence[int], transform: Callable | None = None):
        self.images, self.labels, self.transform = list(images), [int(y) for y in labels], transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]
        return (self.transform(img) if self.transform else img), self.labels[i]


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
        raise ValueError(f"digits has the splits train and validation, not {split!r}")
    pixels = np.round(d.images[chosen] * (255.0 / 16.0)).astype(np.uint8)
    images = [Image.fromarray(p, mode="L").convert("RGB") for p in pixels]
    return ListDataset(images, d.target[chosen]), DatasetInfo("digits", 10, [str(i) for i in range(10)])


class HFImageDataset(Dataset):
    """One split of a Hugging Face ``datasets`` dataset (saved with ``save_to_disk``) with image and label columns."""

    def __init__(
        self, ds, image_key: str | None = None, label_key: str | None = None, transform: Callable | None = None
    ):
        cols = ds.column_names
        self.image_key = image_key or next((c for c in ("image", "img", "pixel_values") if c in cols), None)
        self.label_key = label_key or next((c for c in ("label", "labels", "fine_label") if c in cols), None)
        if self.image_key not in cols or self.label_key not in cols:
            raise ValueError(
                f"the dataset has columns {cols}; name its image and label columns with "
                f"data.image_key / data.label_key (or --image-key / --label-key)"
            )
        self.ds, self.transform = ds, transform

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        row = self.ds[int(i)]
        img = row[self.image_key]
        if not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img, dtype=np.uint8))
        img = img.convert("RGB")
        return (self.transform(img) if self.transform else img), int(row[self.label_key])


def _load_hf_split(path: str, split: str):
    try:
        from datasets import DatasetDict, load_from_disk
    except ImportError:
        raise ImportError("a datasets folder needs the `datasets` package: pip install datasets") from None
    ds = load_from_disk(path)
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
                return ds[cand]
        raise ValueError(
            f"{path} has splits {names}, none of which is {split!r}; pick one with data.val_split / "
            f"data.train_split (or --split)"
        )
    return ds


def build_image_dataset(
    name: str, split: str, path: str | None = None, image_key: str | None = None, label_key: str | None = None
) -> tuple[Dataset, DatasetInfo]:
    """``digits`` | ``image_folder`` (``path/<split>/<class>/*.jpg``, or ``path/<class>/*`` as a single split)
    | ``hf_disk`` (a folder written by ``datasets.save_to_disk``)."""
    if name == "digits":
        return digits(split)
    if path is None:
        raise ValueError(f"data.name {name} needs data.path (the dataset folder)")
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    if name == "image_folder":
        from torchvision.datasets import ImageFolder

        cands = {"validation": ("validation", "val", "test"), "val": ("val", "validation", "test")}.get(split, (split,))
        folder = next((root / c for c in cands if (root / c).is_dir()), None)
        if folder is None:
            if any((root / c).is_dir() for c in ("train", "val", "validation")):
                raise ValueError(f"{root} has no {split!r} folder (looked for {', '.join(cands)})")
            folder = root  # a single folder of class sub-folders
        ds = ImageFolder(str(folder))
        return ds, DatasetInfo(root.name, len(ds.classes), list(ds.classes))
    if name == "hf_disk":
        hf = _load_hf_split(str(root), split)
        ds = HFImageDataset(hf, image_key, label_key)
        feat = hf.features.get(ds.label_key)
        names = list(getattr(feat, "names", None) or [])
        num_classes = len(names) if names else int(max(hf[ds.label_key])) + 1
        return ds, DatasetInfo(root.name, num_classes, names or None)
    raise ValueError(f"unknown image dataset {name!r}: use digits, image_folder or hf_disk")
