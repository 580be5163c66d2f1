"""Image shards in WebDataset's layout, written from an image folder (``zoo data shard``) and read by position.

A shard is a tar file whose consecutive members share a key: ``000042.png`` (the image file's bytes, as they were)
and ``000042.cls`` (the class index as text), which the ``webdataset`` package and timm's WebDataset reader read as
they are. The shard folder also holds ``shards.json``: the class names, and per shard its file, size and sha256
and, per sample, where the image's bytes start in the tar and how many there are. With that index a sample is one
``pread`` from a shard opened once per process, so the shards are a map-style dataset: the training engine's global
batch sampler splits them across DDP ranks and loader workers without repeats and resumes at the recorded position
exactly as it does for an image folder, while a worker reads a few large files instead of opening one per image.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from tqdm import tqdm

from .errors import DataError
from .images import _DecodedOnRead, class_index

__all__ = ["INDEX_NAME", "ShardDataset", "is_shard_folder", "write_shards"]

INDEX_NAME = "shards.json"
FORMAT = "zoo-image-shards/1"


def is_shard_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / INDEX_NAME).is_file()


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # the same folder gives the same bytes
    return info, io.BytesIO(data)


def _write_shard(path: Path, samples: Sequence[tuple[str, int]], first_key: int) -> dict:
    names, labels = [], []
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for k, (image_path, label) in enumerate(samples):
            key = f"{first_key + k:08d}"
            names.append(key + Path(image_path).suffix.lower())
            labels.append(label)
            tar.addfile(*_member(names[-1], Path(image_path).read_bytes()))
            tar.addfile(*_member(key + ".cls", str(label).encode()))
    with tarfile.open(path, "r") as tar:  # where each image's bytes start, as a reader of the tar sees them
        members = {m.name: m for m in tar.getmembers()}
    entries = [[name, members[name].offset_data, members[name].size, label] for name, label in zip(names, labels)]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": digest, "samples": entries}


def write_shards(
    folder: str | os.PathLike, out_dir: str | os.PathLike, samples_per_shard: int = 1000, progress: bool = True
) -> Path:
    """Shards of an image folder (``folder/CLASS/*.png``, torchvision's layout and file types) in ``out_dir``.

    ``out_dir`` must be new or empty; it is written beside itself and renamed into place, so an interrupted run
    leaves nothing behind. Samples keep the folder's order (classes sorted, files sorted); shuffling is the
    training sampler's job. Returns ``out_dir``.
    """
    folder, out = Path(folder), Path(out_dir)
    if samples_per_shard < 1:
        raise DataError(f"samples_per_shard must be at least 1, got {samples_per_shard}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not an empty folder: choose a new --out folder")
    try:
        classes, class_to_idx = find_classes(folder)
        samples = make_dataset(folder, class_to_idx, IMG_EXTENSIONS)
    except FileNotFoundError as e:
        raise DataError(f"{folder} is not an image folder ({e}); put each class's images in {folder}/CLASS/") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shards = []
        starts = range(0, len(samples), samples_per_shard)
        for i, start in enumerate(tqdm(starts, desc=f"sharding {folder}", unit="shard", disable=not progress)):
            chunk = samples[start : start + samples_per_shard]
            shards.append(_write_shard(tmp / f"shard-{i:06d}.tar", chunk, start))
        index = {"format": FORMAT, "source": str(folder), "classes": classes, "shards": shards}
        (tmp / INDEX_NAME).write_text(json.dumps(index) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class ShardDataset(_DecodedOnRead):
    """The samples of a shard folder by position (see the module docstring), labels from ``class_names``."""

    def __init__(self, folder: str | os.PathLike, class_names: Sequence[str] | None = None, bad_files: str = "error"):
        super().__init__(bad_files)
        self.folder = Path(folder)
        index = _read_index(self.folder)
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


def _read_index(folder: Path) -> dict:
    path = folder / INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{folder} has no {INDEX_NAME}: write shards with `zoo data shard IMAGE_FOLDER --out DIR`"
        ) from None
    except ValueError as e:
        raise DataError(f"{path} is not JSON ({e}): write the shards again") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{path} is not a zoo shard index (format {FORMAT}): write the shards again")
    return index
