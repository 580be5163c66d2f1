"""Loader benchmark: images/s per loader worker from an image folder against the same images as shards.

    zoo bench loader [--images 10000] [--size 64] [--workers 1] [--runs 3]

A generated set (``--images`` random RGB JPEGs of ``--size`` pixels in 10 class folders; written once into
``--root``, default a temporary folder) is read through a ``torch.utils.data.DataLoader`` with ``--workers``
workers, batch 64, the training engine's decode (PIL, RGB) and a tensor conversion, from the folder
(:class:`zoo.data.images.ImageFolderDataset`) and from its shards (:class:`zoo.data.images.ShardDataset`,
``zoo data shard``, once with the image files' bytes and once ``--store raw``: decoded pixels), and the file
shards streamed (:class:`zoo.data.stream.SampleStream`, as ``data.name: wds`` with a pattern reads them), in
interleaved rounds (folder, shards, then shards, folder, ...). Each round reads every image once, in a shuffled
order (the sampler's, or the stream's buffer); the median round gives images/s, divided by the worker count.

Target: shards >= 1.5x the folder's images/s per worker.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from ..data.images import ImageFolderDataset, ShardDataset
from ..data.shards import STORES, is_shard_folder, write_shards
from ..data.stream import ImageBatches, SampleStream, StreamSource
from .harness import Row, environment, format_rows, peer_row, print_header, time_interleaved

TARGET = 1.5
CLASSES = 10


def generate_images(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` random JPEGs of ``size`` x ``size`` in ``CLASSES`` class folders (kept when already there)."""
    done = folder / ".complete"
    if done.is_file():
        return folder
    rng = np.random.default_rng(seed)
    for i in tqdm(range(count), desc=f"generating {count} images", unit="img", file=sys.stderr):
        cls = folder / f"class_{i % CLASSES:02d}"
        cls.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(cls / f"{i:06d}.jpg", quality=90)
    done.touch()
    return folder


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def _reader(dataset, workers: int, seed: int):
    dataset.transform = _to_tensor
    loader = DataLoader(
        dataset,
        batch_size=64,
        sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)),
        num_workers=workers,
        persistent_workers=workers > 0,
    )

    def read_all() -> int:
        return sum(len(labels) for _, labels in loader)

    return read_all


def _tensor_of(img: Image.Image, epoch: int, position: int) -> torch.Tensor:
    return _to_tensor(img)


def _stream_reader(shards: Path, images: int, workers: int):
    """The same shards streamed (``data.name: wds`` by pattern): read in order through ``datasets``, a shuffle
    buffer of 1000, every ``workers``-th batch of 64 decoded by each worker."""
    stream = SampleStream(StreamSource("wds", str(shards / "shard-*.tar")), lambda rows: rows,
                          ImageBatches("jpg", "cls", None, _tensor_of, "error"), images, 0)  # fmt: skip
    stream.configure(micro=64, rank=0, world=1, micro_per_epoch=images // 64)
    loader = DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=workers > 0)

    def read_all() -> int:
        return sum(len(labels) for _, labels in loader)

    return read_all


def compare(root: Path, images: int, size: int, workers: int, runs: int, warmup: int = 1) -> list[Row]:
    """Images/s per worker of the folder against its shards as files (``--store file``), as pixels (``raw``), and
    the file shards streamed."""
    folder = generate_images(root / "folder", images, size)
    readers = {"image folder": _reader(ImageFolderDataset(folder), workers, 0)}
    for store in STORES:
        shards = root / f"shards-{store}"
        if not is_shard_folder(shards):
            write_shards(folder, shards, store=store)
        readers[f"shards ({store})"] = _reader(ShardDataset(shards), workers, 0)
    readers["shards (file), streamed"] = _stream_reader(root / "shards-file", images, workers)
    times = time_interleaved(readers, runs, warmup, desc="reading")
    per_worker = max(workers, 1)
    return [
        peer_row(
            f"{images} images {size}px",
            f"{workers} worker(s)",
            "image folder",
            label,
            "img/s/worker",
            times["image folder"],
            times[label],
            runs,
            TARGET,
            work=images,
            per=per_worker,
        )
        for label in readers
        if label != "image folder"
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``zoo bench loader``: images/s per loader worker, image folder against shards."""
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers (default 1)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--root", type=Path, default=None, help="where the generated set is kept (default: temp)")


def run(args: argparse.Namespace) -> int:
    """Generate the set (once), read it every way in interleaved rounds, print the table."""
    print_header("Loader: image folder vs shards, same images", environment())
    with tempfile.TemporaryDirectory(prefix="zoo-bench-data-") as tmp:
        rows = compare(args.root or Path(tmp), args.images, args.size, args.workers, args.runs)
    print(format_rows(rows))
    return 0
