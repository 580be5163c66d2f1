"""Streaming training data: a Hugging Face dataset in streaming mode (``data.name: hf_stream``) or WebDataset tar
shards named by a URL or a file pattern (``data.name: wds``, ``data.path: https://host/shard-{000000..000099}.tar``),
read through ``datasets``' streaming loaders: nothing is downloaded ahead, the samples arrive as the run reads them.

The order is fixed by the run's seed and the epoch: ``datasets`` shuffles the shard order and a buffer of samples
(``data.shuffle_buffer``); DDP rank ``r`` of ``world`` takes every ``world``-th unit (sample, or packed token row)
from the ``r``-th, so the ranks' parts are equal and disjoint however the shards are sized. A rank's part is read as
micro-batches; loader worker ``w`` of ``W`` builds every ``W``-th of them (decoding and augmenting only those), so
the loader, taking one batch from each worker in turn, yields the rank's micro-batches in order, none twice. Every
worker of every rank thus reads the whole stream's bytes and decodes only its own share: cheap for local shards,
``world x W`` downloads for remote ones (a local copy or a cache in front of the URLs then pays). An
epoch is ``num_samples`` samples (``data.train_samples``, or the size the data records); a resumed run skips the
micro-batches its checkpoint had consumed (read, not decoded) and continues bit-identically. A rank whose part
runs out before the epoch ends reads it again, in a new order, with a warning: ``data.train_samples`` is then
larger than the data.

Whether a name and path are read as a stream is decided by the one resolver, :mod:`zoo.data.sources`
(:func:`~zoo.data.sources.is_stream`, re-exported here).
"""

from __future__ import annotations

import glob
import io
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import IterableDataset, default_collate, get_worker_info

from . import text
from .errors import DataError
from .images import DatasetInfo, class_index, undecodable
from .labels import as_label
from .shards import INDEX_NAME, parse_index
from .sources import is_stream

__all__ = [
    "STREAM_KINDS",
    "ImageBatches",
    "ImageStream",
    "StreamedImages",
    "SampleStream",
    "StreamSource",
    "TokenRows",
    "expand_braces",
    "head_items",
    "held_out_images",
    "image_stream",
    "is_stream",
    "stream_documents",
    "stream_name",
    "text_stream",
]

STREAM_KINDS = ("hf_stream", "wds")
IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp", "ppm")
LABEL_COLUMNS = ("label", "labels", "cls", "fine_label")
TEXT_COLUMNS = ("text", "txt", "content")
_READ_ROWS = 64  # rows fetched from ``datasets`` at a time
MAX_SHARDS = 100_000  # shards one brace range may name
_ROOT = "__root__"  # a row's key: the local folder its image paths may name (None: none)

_logger = logging.getLogger(__name__)
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_CHOICE = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """WebDataset's shard patterns, left brace first: ``shard-{000000..000009}.tar`` (zero-padded as written) and
    ``{a,b}``; at most :data:`MAX_SHARDS` names in all (ranges one after another multiply), refused before more
    are made."""
    names = []
    for name in _expand(pattern):
        names.append(name)
        if len(names) > MAX_SHARDS:
            raise DataError(
                f"the shard pattern {pattern[:200]} names more than {MAX_SHARDS:,} shards (its ranges multiply): "
                "check the ranges"
            )
    return names


def _expand(pattern: str) -> Iterator[str]:
    found = [m for m in (_RANGE.search(pattern), _CHOICE.search(pattern)) if m]
    if not found:
        yield pattern
        return
    m = min(found, key=lambda m: m.start())
    head, tail = pattern[: m.start()], pattern[m.end() :]
    if m.re is _CHOICE:
        for choice in m.group(1).split(","):
            yield from _expand(head + choice + tail)
        return
    lo, hi = m.group(1), m.group(2)
    if int(hi) < int(lo):
        raise DataError(f"the shard range {m.group(0)} in {pattern} runs backwards")
    if int(hi) - int(lo) + 1 > MAX_SHARDS:
        raise DataError(
            f"the shard range {m.group(0)} in {pattern[:200]} names {int(hi) - int(lo) + 1:,} shards, more than "
            f"{MAX_SHARDS:,}: check the range"
        )
    width = len(lo) if lo.startswith("0") else 0
    for i in range(int(lo), int(hi) + 1):
        yield from _expand(f"{head}{i:0{width}d}{tail}")


def _is_url(path: str) -> bool:
    return "://" in path


def _shard_files(path: str) -> list[str]:
    """The tar files of a ``wds`` stream: a folder's ``*.tar``, or the brace-expanded pattern (local globs too)."""
    if not _is_url(path) and Path(path).is_dir():
        files = sorted(str(f) for f in Path(path).glob("*.tar"))
    elif _is_url(path):
        files = expand_braces(path)
    else:
        files = sorted({f for p in expand_braces(path) for f in glob.glob(p)})
    if not files:
        raise DataError(f"data.path {path} names no tar shards: give a folder of .tar files, a pattern or URLs")
    return files


@dataclass(frozen=True)
class StreamSource:
    """Where a stream reads: ``kind`` hf_stream (a Hub dataset name or a local folder/files ``datasets`` reads,
    ``config`` its configuration) or wds (tar shards: a folder, a pattern or URLs); ``split`` for hf_stream."""

    kind: str
    path: str
    split: str = "train"
    config: str | None = None

    def describe(self) -> str:
        return f"{self.path} ({self.split} split)" if self.kind == "hf_stream" else self.path

    def open(self, decode_images: bool = True):
        """The ``datasets.IterableDataset``; images left as bytes unless ``decode_images``."""
        try:
            import datasets
        except ImportError:
            raise ImportError("streaming data needs the `datasets` package: pip install datasets") from None
        try:
            if self.kind == "wds":
                files = _shard_files(self.path)
                ds = datasets.load_dataset("webdataset", data_files={"train": files}, split="train", streaming=True)
            else:
                ds = datasets.load_dataset(self.path, self.config, split=self.split, streaming=True)
        except DataError:
            raise
        except ImportError as e:
            raise ImportError(f"{e}: reading {self.path} needs it (pip install 'fsspec[http]' for URLs)") from None
        except (ValueError, KeyError) as e:
            raise DataError(f"cannot stream {self.describe()}: {e}. Check data.path and data.train_split") from None
        except Exception as e:  # noqa: BLE001 (datasets and fsspec raise many kinds for an unreachable source)
            if not _is_url(self.path):
                raise DataError(
                    f"cannot read {self.describe()} ({type(e).__name__}: {str(e)[:200]}): check the local files (a "
                    "shard cut short or damaged: write it again)"
                ) from None
            raise DataError(
                f"cannot reach {self.describe()} ({type(e).__name__}: {e}): check the path or URL, the network "
                "(HF_ENDPOINT for a Hub mirror), or copy the data to a local folder"
            ) from None
        if not decode_images and ds.features:
            for name, feature in ds.features.items():
                if isinstance(feature, datasets.Image):
                    ds = ds.cast_column(name, datasets.Image(decode=False))
        return ds

    def rows(self, decode_images: bool = False, limit: int | None = None) -> Iterator[dict]:
        """Rows in the stream's own order (no shuffle), at most ``limit``."""
        return itertools.islice(_rows(self.open(decode_images), self.local_root()), limit)

    def local_root(self) -> Path | None:
        """The folder whose files an image value's ``path`` may name: a local ``datasets`` folder read as a
        stream; None for everything else (shards and remote data hold their images' bytes)."""
        if self.kind == "hf_stream" and not _is_url(self.path) and Path(self.path).is_dir():
            return Path(self.path).resolve()
        return None

    def recorded_size(self, ds, index: dict | None) -> int | None:
        """The sample count the data records: its shard index's, or (``ds``, the opened stream) its card's."""
        if index is not None:
            return sum(len(s["samples"]) for s in index["shards"])
        splits = ds.info.splits if self.kind == "hf_stream" else None
        return int(splits[self.split].num_examples) if splits and self.split in splits else None

    def shard_index(self) -> dict | None:
        """The ``shards.json`` beside a wds stream's shards (local or at the URLs' folder), else None."""
        if self.kind != "wds":
            return None
        first = _shard_files(self.path)[0]
        where = first.rsplit("/", 1)[0] + "/" + INDEX_NAME
        try:
            if _is_url(first):
                import fsspec

                with fsspec.open(where, "rb") as f:
                    raw = f.read()
            else:
                raw = Path(where).read_bytes()
        except Exception:  # noqa: BLE001 (no index there: the labels are taken as they are)
            return None
        return parse_index(raw, where)


def _rows(ds, root: Path | None = None) -> Iterator[dict]:
    """A ``datasets.IterableDataset``'s rows, read with ``iter`` (which does not split by loader worker: the
    stream does that itself, by micro-batch). ``root``: the local folder an image's ``path`` may name (kept in
    the row as ``__root__``)."""
    for batch in ds.iter(batch_size=_READ_ROWS):
        keys = list(batch)
        for i in range(len(batch[keys[0]])):
            yield {**{k: batch[k][i] for k in keys}, _ROOT: root}


def pick_column(columns: Sequence[str], given: str | None, candidates: Sequence[str], what: str, key: str) -> str:
    """``given`` if the data has it, else the first of ``candidates`` it has; a DataError naming the columns."""
    found = given if given in columns else next((c for c in candidates if c in columns and not given), None)
    if found is None:
        raise DataError(f"the data has the columns {list(columns)}; name its {what} column with data.{key}")
    return found


def decode_image(value: Any, root: Path | None = None) -> Image.Image:
    """An image column's value (PIL, ``{"bytes", "path"}`` or bytes) as an RGB PIL image. A value without bytes
    is read from its ``path`` only inside ``root`` (a local dataset's folder); a stream's rows never make the
    loader read other files."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict):
        value = value.get("bytes") or _local_image(value.get("path"), root)
    with Image.open(io.BytesIO(value)) as img:
        return img.convert("RGB")


def _local_image(path: Any, root: Path | None) -> bytes:
    """The bytes of the file an image value names, which must lie inside ``root``."""
    if not isinstance(path, str) or not path:
        raise DataError("an image value of the stream holds neither bytes nor a file: check data.image_key")
    if root is None:
        raise DataError(
            f"an image value of the stream names the file {path[:120]!r} instead of holding its bytes; a stream's "
            "images are read from the stream only (files are read for a local datasets folder, inside it)"
        )
    file = (root / path).resolve()
    if not file.is_relative_to(root):
        raise DataError(
            f"an image value of {root} names the file {path[:120]!r}, outside that folder: a dataset's images are "
            "read only from inside its folder"
        )
    return file.read_bytes()


class SampleStream(IterableDataset):
    """Micro-batches of one rank's part of a stream, in the stream's order, whichever loader worker builds them.

    ``units(rows)`` turns the stream's rows into training units (images' rows as they are, text into packed token
    rows); ``make_batch(units, epoch, positions)`` decodes, augments and collates a micro-batch, ``positions``
    being each unit's place in the epoch across all ranks (what seeds its augmentation).
    """

    def __init__(
        self,
        source: StreamSource,
        units: Callable[[Iterable[dict]], Iterator[Any]],
        make_batch: Callable[[list, int, list[int]], Any],
        num_samples: int,
        seed: int,
        shuffle_buffer: int = 1000,
    ):
        self.source, self.units, self.make_batch = source, units, make_batch
        self.num_samples, self.seed, self.shuffle_buffer = num_samples, seed, shuffle_buffer
        self.micro, self.rank, self.world, self.micro_per_epoch = 1, 0, 1, num_samples
        self.epoch, self.start = 0, 0

    def configure(self, micro: int, rank: int, world: int, micro_per_epoch: int) -> None:
        self.micro, self.rank, self.world, self.micro_per_epoch = micro, rank, world, micro_per_epoch

    def set_position(self, epoch: int, start_micro: int = 0) -> None:
        """Where the next iteration starts: ``start_micro`` micro-batches of ``epoch`` already consumed."""
        self.epoch, self.start = epoch, start_micro

    def _rank_units(self, read: int) -> Iterator[Any]:
        """This rank's units for the epoch's ``read``-th pass over the data."""
        ds = self.source.open(decode_images=False)
        if self.shuffle_buffer > 1:
            ds = ds.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
        ds.set_epoch(self.epoch + read * 100_003)
        return itertools.islice(self.units(_rows(ds, self.source.local_root())), self.rank, None, self.world)

    def _micro_batches(self) -> Iterator[list]:
        """The rank's micro-batches of the epoch, reading the data again when it runs out."""
        for read in itertools.count():
            got, units = 0, self._rank_units(read)
            while len(chunk := list(itertools.islice(units, self.micro))) == self.micro:
                got += 1
                yield chunk
            if got == 0:
                raise DataError(
                    f"{self.source.describe()} gives process {self.rank} fewer than {self.micro} samples: use more "
                    "data or a smaller train.batch_size"
                )
            if self.rank == 0 and _is_first_worker():
                _logger.warning(
                    "%s ran out after %d batches of %d in epoch %d: reading it again (data.train_samples %d is more "
                    "than the data holds)",
                    self.source.describe(),
                    got,
                    self.micro,
                    self.epoch,
                    self.num_samples,
                )

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batches = itertools.islice(self._micro_batches(), self.micro_per_epoch)
        for j, chunk in enumerate(batches):
            if j < self.start or (j - self.start) % workers != worker:
                continue  # another worker's (or already trained on): read, not decoded
            positions = [(j * self.micro + k) * self.world + self.rank for k in range(len(chunk))]
            yield self.make_batch(chunk, self.epoch, positions)

    def head(self, n: int) -> Any:
        """The first ``n`` samples of epoch 0 in this process, as one collated batch (for one-batch set-ups)."""
        units = list(itertools.islice(self.units(self.source.rows(decode_images=False)), n))
        return self.make_batch(units, 0, list(range(len(units))))


def _is_first_worker() -> bool:
    info = get_worker_info()
    return info is None or info.id == 0


def head_items(dataset, n: int) -> Any:
    """The first ``n`` samples of a training set as one collated batch: a map-style dataset's items 0..n-1, a
    stream's first samples."""
    if isinstance(dataset, SampleStream):
        return dataset.head(n)
    return default_collate([dataset[i] for i in range(min(len(dataset), n))])


def stack_rows(units: list, epoch: int, positions: list[int]) -> torch.Tensor:
    """``make_batch`` for token rows: stacked as they are."""
    return torch.stack(units)


class ImageBatches:
    """``make_batch`` for image rows: decode, renumber the label (``label_map``), augment with ``transform(img,
    epoch, position)``, collate. An image that does not decode is a DataError naming it, or with ``bad_files:
    skip`` its place in the batch goes to another image of the batch (counted in a warning)."""

    def __init__(self, image_key: str, label_key: str, label_map: Sequence[int] | None, transform, bad_files: str):
        self.image_key, self.label_key, self.label_map = image_key, label_key, label_map
        self.transform, self.bad_files, self.skipped = transform, bad_files, 0

    def label(self, row: dict) -> int:
        value = row[self.label_key]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        try:  # text (a shard's .cls file) is a number written out; else an integer (labels.as_label's rule)
            label = int(value) if isinstance(value, str) else as_label(value, _row_name(row))
        except (TypeError, ValueError):  # DataError is a ValueError: one message for both
            raise DataError(
                f"the label {str(value)[:40]!r} of {_row_name(row)} is not an integer class index: write the shards "
                "again (zoo data shard), or name the label column with data.label_key"
            ) from None
        if self.label_map is not None:
            if not 0 <= label < len(self.label_map):
                raise DataError(f"label {label} of {_row_name(row)} is outside the {len(self.label_map)} classes")
            label = self.label_map[label]
        return label

    def sample(self, row: dict, epoch: int, position: int) -> tuple[Any, int]:
        label = self.label(row)
        img = decode_image(row[self.image_key], row.get(_ROOT))
        return (self.transform(img, epoch, position) if self.transform else img), label

    def __call__(self, rows: list[dict], epoch: int, positions: list[int]) -> Any:
        samples = []
        for row, position in zip(rows, positions):
            try:
                samples.append(self.sample(row, epoch, position))
            except DataError:
                raise
            except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
                if self.bad_files == "error":
                    raise undecodable(_row_name(row), e) from None
                self.skipped += 1
                _logger.warning("skipping image %s (%s); %d skipped so far", _row_name(row), e, self.skipped)
        if not samples:
            raise DataError(f"no image of a batch decodes (the first: {_row_name(rows[0])})")
        samples += [samples[k % len(samples)] for k in range(len(rows) - len(samples))]
        return default_collate(samples)


def _row_name(row: dict) -> str:
    if "__key__" in row:
        return f"{row.get('__url__', '')}:{row['__key__']}"
    return "a row of the stream"


class TokenRows:
    """``units`` for text: the documents of ``text_key`` tokenized (each followed by the end-of-text token) into
    one token stream, cut into rows of ``seq_len + 1`` that overlap by one token, as
    :func:`zoo.data.text.pack_tokens` cuts a whole corpus."""

    def __init__(self, tokenizer_file: str | Path, text_key: str, seq_len: int):
        self.tokenizer_file, self.text_key, self.seq_len = str(tokenizer_file), text_key, seq_len

    def __call__(self, rows: Iterable[dict]) -> Iterator[torch.Tensor]:
        tokenizer = text.load_tokenizer(self.tokenizer_file)
        buffer = torch.empty(0, dtype=torch.long)
        rows = iter(rows)
        while chunk := [r[self.text_key] for r in itertools.islice(rows, _READ_ROWS)]:
            buffer = torch.cat([buffer, text.encode_documents(tokenizer, [t for t in chunk if t and t.strip()])])
            n = (len(buffer) - 1) // self.seq_len
            for k in range(n):
                yield buffer[k * self.seq_len : (k + 1) * self.seq_len + 1]
            buffer = buffer[n * self.seq_len :]


class StreamedImages(torch.utils.data.Dataset):
    """Rows read once from a stream (the held-out split), kept as bytes and decoded when read."""

    def __init__(self, rows: list[dict], image_key: str, label_key: str, label_map: Sequence[int] | None):
        self.batches = ImageBatches(image_key, label_key, label_map, None, "error")
        self.rows, self.transform = rows, None

    @property
    def targets(self) -> list[int]:
        return [self.batches.label(r) for r in self.rows]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        try:
            img, label = self.batches.sample(row, 0, i)
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 (PIL's many errors for a broken file)
            raise DataError(f"cannot decode image {_row_name(row)} ({type(e).__name__}: {e})") from None
        return (self.transform(img) if self.transform else img), label


@dataclass
class ImageStream:
    """An image stream's training source and how its rows read (columns, class names, label renumbering), and its
    held-out rows."""

    train: StreamSource
    image_key: str
    label_key: str
    info: DatasetInfo
    label_map: list[int] | None
    num_samples: int
    val: StreamedImages


def stream_name(source: StreamSource) -> str:
    """What a run calls the data: a dataset's name, or the folder holding the shards (above a split folder)."""
    if source.kind == "hf_stream":
        return Path(source.path.rstrip("/")).name
    parts = [p for p in _shard_files(source.path)[0].split("/")[:-1] if p]
    while len(parts) > 1 and parts[-1] in ("train", "val", "validation", "test"):
        parts.pop()
    return parts[-1] if parts else source.path


def _sources(name: str, path: str, train_split: str, val_split: str, config, val_path) -> tuple:
    if name == "hf_stream":
        return StreamSource(name, path, train_split, config), StreamSource(name, path, val_split, config)
    if val_path is None:
        raise DataError(f"streamed shards ({path}) need data.val_path: the held-out shards (a URL, pattern or folder)")
    return StreamSource(name, path), StreamSource(name, val_path)


def _class_names(ds, label_key: str, index: dict | None) -> list[str] | None:
    """The dataset's ClassLabel names, else the shard index's classes."""
    names = getattr((ds.features or {}).get(label_key), "names", None)
    if names:
        return list(names)
    return list(index["classes"]) if index else None


def _first_row(source: StreamSource, ds) -> dict:
    row = next(_rows(ds), None)
    if row is None:
        raise DataError(f"{source.describe()} holds no samples")
    return {k: v for k, v in row.items() if k != _ROOT}


def image_stream(d) -> ImageStream:
    """The stream ``d`` (a recipe's ``data`` section) names, for image classification; class names from the
    dataset's ClassLabel or the shards' index, else ``d.num_classes`` integer labels."""
    train, val = _sources(d.name, d.path, d.train_split, d.val_split, d.config, d.val_path)
    ds = train.open(decode_images=False)
    columns = list(ds.features or _first_row(train, ds))
    image_key = pick_column(columns, d.image_key, IMAGE_COLUMNS, "image", "image_key")
    label_key = pick_column(columns, d.label_key, LABEL_COLUMNS, "label", "label_key")
    index = train.shard_index()  # read once: class names and size
    names = _class_names(ds, label_key, index)
    if names is None and d.num_classes is None:
        raise DataError(
            f"{train.describe()} records no class names: set data.num_classes (its labels are 0..num_classes-1)"
        )
    info = DatasetInfo(stream_name(train), len(names) if names else d.num_classes, names)
    num_samples = d.train_samples or train.recorded_size(ds, index)
    if num_samples is None:
        raise DataError(f"{train.describe()} does not record its size: set data.train_samples (samples per epoch)")
    held_out, _ = held_out_images(val, image_key, label_key, names, d.val_samples, info.num_classes)
    return ImageStream(train, image_key, label_key, info, list(range(info.num_classes)), num_samples, held_out)


def held_out_images(
    source: StreamSource,
    image_key: str | None,
    label_key: str | None,
    class_names: Sequence[str] | None,
    limit: int,
    num_classes: int | None = None,
) -> tuple[StreamedImages, DatasetInfo]:
    """The first ``limit`` rows of a stream, labelled by ``class_names`` (a model's or the training split's; a
    class outside them is a DataError), else by the stream's own names or ``num_classes`` integer labels."""
    ds = source.open(decode_images=False)
    columns = list(ds.features or _first_row(source, ds))
    image_key = pick_column(columns, image_key, IMAGE_COLUMNS, "image", "image_key")
    label_key = pick_column(columns, label_key, LABEL_COLUMNS, "label", "label_key")
    own = _class_names(ds, label_key, source.shard_index())
    names = list(class_names) if class_names else own
    if names and own:  # the split's classes renumbered by the known ones
        index = class_index(own, names, source.describe())
        label_map = [index[c] for c in own]
    else:  # bare integer labels (an identity, so that a label outside the classes is named)
        count = len(names) if names else num_classes
        if count is None:
            raise DataError(f"{source.describe()} records no class names: give the number of classes")
        label_map = list(range(count))
    rows = list(itertools.islice(_rows(ds, source.local_root()), limit))
    if not rows:
        raise DataError(f"{source.describe()} holds no samples")
    info = DatasetInfo(stream_name(source), len(label_map) if not names else len(names), names)
    return StreamedImages(rows, image_key, label_key, label_map), info


def stream_documents(source: StreamSource, text_key: str | None, limit: int) -> list[str]:
    """The first ``limit`` documents of a text stream (``text_key``, else the first text column it has)."""
    ds = source.open()
    key = pick_column(list(ds.features or _first_row(source, ds)), text_key, TEXT_COLUMNS, "text", "text_key")
    docs = [r[key] for r in itertools.islice(_rows(ds), limit) if r.get(key) and r[key].strip()]
    if not docs:
        raise DataError(f"{source.describe()} holds no text in its {key!r} column")
    return docs


def text_stream(d, tokenizer_docs: int) -> tuple[StreamSource, str, list[str], list[str]]:
    """(training source, text column, its first ``tokenizer_docs`` documents, the held-out documents) of the text
    stream ``d`` names (a recipe's ``data`` section)."""
    train, val = _sources(d.name, d.path, d.train_split, d.val_split, d.config, d.val_path)
    ds = train.open()
    key = pick_column(list(ds.features or _first_row(train, ds)), d.text_key, TEXT_COLUMNS, "text", "text_key")
    return train, key, stream_documents(train, key, tokenizer_docs), stream_documents(val, key, d.val_samples)
