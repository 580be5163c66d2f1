"""Image shards in WebDataset's layout, written from an image folder (``zoo data shard``); read by position by
:class:`zoo.data.images.ShardDataset`.

A shard is a tar file whose consecutive members share a key: ``000042.png`` (the image file's bytes, as they were)
and ``000042.cls`` (the class index as text), which the ``webdataset`` package and timm's WebDataset reader read as
they are. The shard folder also holds ``shards.json``: the class names, and per shard its file and size and,
per sample, where the image's bytes start in the tar and how many there are. With that index a sample is one
``pread`` from a shard opened once per process, so the shards are a map-style dataset: the training engine's global
batch sampler splits them across DDP ranks and loader workers without repeats and resumes at the recorded position
exactly as it does for an image folder, while a worker reads a few large files instead of opening one per image.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from tqdm import tqdm

from .errors import DataError

__all__ = [
    "INDEX_NAME",
    "SPLITS",
    "STORES",
    "check_index",
    "is_shard_folder",
    "parse_index",
    "read_index",
    "write_shards",
]

INDEX_NAME = "shards.json"
FORMAT = "zoo-image-shards/1"


def is_shard_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / INDEX_NAME).is_file()


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # the same folder gives the same bytes
    return info, io.BytesIO(data)


def _image_bytes(image_path: str, store: str) -> tuple[str, bytes]:
    """(member suffix, bytes): the file as it is, or (``store="raw"``) its RGB pixels as a binary PPM, which PIL
    and webdataset read without decoding anything (larger files, far less work per sample)."""
    if store == "file":
        return Path(image_path).suffix.lower(), Path(image_path).read_bytes()
    buffer = io.BytesIO()
    try:
        with Image.open(image_path) as img:
            img.convert("RGB").save(buffer, format="PPM")
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image {image_path} ({e}): replace or delete it before sharding") from None
    return ".ppm", buffer.getvalue()


def _write_shard(path: Path, samples: Sequence[tuple[str, int]], first_key: int, store: str) -> dict:
    names, labels = [], []
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for k, (image_path, label) in enumerate(samples):
            key = f"{first_key + k:08d}"
            suffix, data = _image_bytes(image_path, store)
            names.append(key + suffix)
            labels.append(label)
            tar.addfile(*_member(names[-1], data))
            tar.addfile(*_member(key + ".cls", str(label).encode()))
    with tarfile.open(path, "r") as tar:  # where each image's bytes start, as a reader of the tar sees them
        members = {m.name: m for m in tar.getmembers()}
    entries = [[name, members[name].offset_data, members[name].size, label] for name, label in zip(names, labels)]
    return {"file": path.name, "bytes": path.stat().st_size, "samples": entries}


SPLITS = ("train", "val", "validation", "test")
STORES = ("file", "raw")


def write_shards(
    folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    samples_per_shard: int = 1000,
    progress: bool = True,
    store: str = "file",
) -> Path:
    """Shards of an image folder in ``out_dir``: ``folder/CLASS/*.png`` (torchvision's layout and file types) gives
    one shard folder; ``folder/SPLIT/CLASS/*`` (train, val, validation, test) gives ``out_dir/SPLIT`` for each.

    ``out_dir`` must be new or empty; it is written beside itself and renamed into place, so an interrupted run
    leaves nothing behind. Samples keep the folder's order (classes sorted, files sorted); shuffling is the
    training sampler's job. ``store``: ``"file"`` keeps each image file's bytes, ``"raw"`` stores decoded RGB
    pixels (PPM) so that reading needs no decoding. Returns ``out_dir``.
    """
    folder, out = Path(folder), Path(out_dir)
    if samples_per_shard < 1:
        raise DataError(f"samples_per_shard must be at least 1, got {samples_per_shard}")
    if store not in STORES:
        raise DataError(f"store must be one of {', '.join(STORES)}, got {store!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not an empty folder: choose a new --out folder")
    splits = [s for s in SPLITS if (folder / s).is_dir()]
    sources = [(folder / s, s) for s in splits] or [(folder, "")]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for source, split in sources:
            _write_split(source, tmp / split, samples_per_shard, progress, store)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_split(folder: Path, out: Path, samples_per_shard: int, progress: bool, store: str) -> None:
    try:
        classes, class_to_idx = find_classes(folder)
        samples = make_dataset(folder, class_to_idx, IMG_EXTENSIONS)
    except FileNotFoundError as e:
        raise DataError(f"{folder} is not an image folder ({e}); put each class's images in {folder}/CLASS/") from None
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    starts = range(0, len(samples), samples_per_shard)
    for i, start in enumerate(tqdm(starts, desc=f"sharding {folder}", unit="shard", disable=not progress)):
        chunk = samples[start : start + samples_per_shard]
        shards.append(_write_shard(out / f"shard-{i:06d}.tar", chunk, start, store))
    index = {"format": FORMAT, "source": str(folder), "classes": classes, "shards": shards}
    (out / INDEX_NAME).write_text(json.dumps(index) + "\n")


def read_index(folder: Path) -> dict:
    """A shard folder's ``shards.json``, checked to be one (a DataError says what to do otherwise)."""
    path = folder / INDEX_NAME
    try:
        raw = path.read_text()
    except FileNotFoundError:
        raise DataError(
            f"{folder} has no {INDEX_NAME}: write shards with `zoo data shard IMAGE_FOLDER --out DIR`"
        ) from None
    return parse_index(raw, path)


def parse_index(raw: str | bytes, where) -> dict:
    """The text of a ``shards.json`` (read from ``where``, a path or URL) as a checked index: JSON, a zoo index,
    and :func:`check_index`'s rules; a DataError says what to do otherwise."""
    try:
        index = json.loads(raw)
    except ValueError as e:
        raise DataError(f"{where} is not JSON ({e}): write the shards again") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{where} is not a zoo shard index (format {FORMAT}): write the shards again")
    check_index(index, where)
    return index


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_index(index: dict, path: str | os.PathLike) -> None:
    """A DataError naming the first thing in the shard index at ``path`` that a reader must not follow: a shard
    file that is not a plain name beside the index (absolute, ``..``, a sub-folder), class names that are not
    unique strings, a label that is not an integer in the classes' range, an offset or size that is not a
    non-negative integer. Nothing is read before the whole index passes."""
    again = "write the shards again with `zoo data shard`"
    classes, shards = index.get("classes"), index.get("shards")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise DataError(f"{path} records no class names (a list of strings): {again}")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise DataError(f"{path} names the class(es) {', '.join(map(repr, repeated[:5]))} twice: {again}")
    if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
        raise DataError(f"{path} has no list of shards: {again}")
    for shard in shards:
        name = shard.get("file")
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
            raise DataError(
                f"{path} names a shard file {str(name)[:80]!r} outside its folder; an index may name only the files "
                "beside it. Nothing was read."
            )
        if not _is_int(shard.get("bytes")) or shard["bytes"] < 0 or not isinstance(shard.get("samples"), list):
            raise DataError(f"{path}: the entry of {name} lacks its size (bytes) or its samples: {again}")
        for entry in shard["samples"]:
            if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str)):
                raise DataError(f"{path}: a sample of {name} is not [member, offset, size, label]: {again}")
            member, offset, size, label = entry
            if not (_is_int(offset) and _is_int(size) and offset >= 0 and size >= 0):
                raise DataError(f"{path}: sample {member[:80]!r} of {name} has no valid offset and size: {again}")
            if not _is_int(label) or not 0 <= label < len(classes):
                shown = label if _is_int(label) else repr(str(label)[:40])
                raise DataError(
                    f"{path}: sample {member[:80]!r} of {name} has the label {shown}, "
                    f"not an integer 0..{len(classes) - 1} (the index's {len(classes)} classes): {again}"
                )


def add_arguments(parser) -> None:
    """``zoo data shard FOLDER --out DIR``'s arguments."""
    parser.add_argument("folder", help="an image folder: FOLDER/CLASS/*.png, or FOLDER/SPLIT/CLASS/* for each split")
    parser.add_argument("--out", required=True, help="the shard folder to write (new or empty)")
    parser.add_argument("--samples-per-shard", type=int, default=1000, help="images per tar shard (default 1000)")
    parser.add_argument(
        "--store",
        choices=STORES,
        default="file",
        help="file: each image file's bytes (default); raw: decoded RGB pixels (PPM), larger, no decoding to read",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    """``zoo data shard``: 0, or 2 with one line on stderr for a user error."""
    try:
        out = write_shards(args.folder, args.out, args.samples_per_shard, not args.no_progress, args.store)
    except (DataError, OSError) as e:
        print(f"zoo data shard: error: {e}", file=sys.stderr)
        return 2
    splits = sorted(p.parent.name for p in out.glob(f"*/{INDEX_NAME}")) or ["(one split)"]
    count = sum(len(read_index(p.parent)["shards"]) for p in out.glob(f"**/{INDEX_NAME}"))
    print(f"wrote {count} shard(s) to {out}: {', '.join(splits)}; train on them with data.name: wds, data.path: {out}")
    return 0
