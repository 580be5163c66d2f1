"""The standard benchmark sets in the files their authors distribute: MNIST and Fashion-MNIST (IDX), CIFAR-10 and
CIFAR-100 (pickled python batches), SVHN (MATLAB ``.mat``); read into uint8 arrays, or downloaded into a folder.

Every reader returns ``(images, labels)``: ``images`` uint8 ``(N, H, W, C)`` (C = 1 for the grey sets), ``labels``
int64 ``(N,)``. A file that is missing, truncated, of the wrong kind or inconsistent with its partner is a
:class:`DataError` of one line naming it and saying what to do; nothing is half-read.

* IDX (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-...``, gzip-compressed or not): a big-endian
  header (two zero bytes, a type byte, the number of dimensions, one uint32 size per dimension), then the values.
  The folder may be the one holding the files, or torchvision's root (``MNIST/raw/``, ``FashionMNIST/raw/``).
* CIFAR (``cifar-10-batches-py/``: ``data_batch_1..5``, ``test_batch``, ``batches.meta``; ``cifar-100-python/``:
  ``train``, ``test``, ``meta``, fine labels): python pickles. They are read by an unpickler that can build numpy
  arrays and nothing else: a file asking for any other global is refused by name, so no pickled code ever runs.
* SVHN (``train_32x32.mat``, ``test_32x32.mat``): ``X`` is 32x32x3xN, ``y`` is Nx1 with 10 standing for the digit 0
  (read with scipy.io.loadmat, which reads data only).

:func:`download` fetches a set into a folder from torchvision's own tables (its mirrors, file names and md5 sums)
with torchvision's download utilities, which check the md5 and skip files already complete; MNIST files whose gzip
bytes differ (recompressed, or inflated) are kept when their content is the published set's (IDX headers and
sizes). An archive is extracted into a temporary folder beside its place and renamed into it once whole.

What a file declares is checked before it is believed: an IDX header is read from the (decompressing) stream and
checked (MNIST's: N x 28 x 28 bytes, N at most 100,000) before its values, which are read up to the size it
declares; a CIFAR file larger on disk than the distributed one is refused before it is unpickled. Labels are
integers (:mod:`zoo.data.labels`): ``0.7``, ``"cat"`` or ``True`` is a DataError naming the file and sample.
"""

import contextlib
import gzip
import io
import math
import os
import pickle
import shutil
import socket
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torchvision.datasets as tvd
from torchvision.datasets.utils import check_integrity, download_url, extract_archive

from .errors import DataError
from .labels import as_labels

__all__ = ["SPLIT_FILES", "cifar_class_names", "download", "read_cifar", "read_idx", "read_mnist", "read_split",
           "read_svhn", "safe_unpickle"]  # fmt: skip

# IDX type byte -> big-endian dtype (MNIST and Fashion-MNIST use 0x08, unsigned bytes)
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_PREFIX = {"train": "train", "test": "t10k"}
_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_CIFAR_FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_CIFAR_FILES = {
    ("cifar10", "train"): [f"data_batch_{i}" for i in range(1, 6)],
    ("cifar10", "test"): ["test_batch"],
    ("cifar100", "train"): ["train"],
    ("cifar100", "test"): ["test"],
}
_CIFAR_META = {"cifar10": ("batches.meta", "label_names"), "cifar100": ("meta", "fine_label_names")}
_CIFAR_LABELS = {"cifar10": "labels", "cifar100": "fine_labels"}
_TORCHVISION_CLASS = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10,
                      "cifar100": tvd.CIFAR100, "svhn": tvd.SVHN}  # fmt: skip

# the files of each split, for messages
SPLIT_FILES = {
    "mnist": {"train": "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]",
              "test": "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]"},
    "cifar10": {"train": "cifar-10-batches-py/data_batch_1..5", "test": "cifar-10-batches-py/test_batch"},
    "cifar100": {"train": "cifar-100-python/train", "test": "cifar-100-python/test"},
    "svhn": {"train": "train_32x32.mat", "test": "test_32x32.mat"},
}  # fmt: skip
SPLIT_FILES["fashion_mnist"] = SPLIT_FILES["mnist"]


# ----------------------------------------------------------------------------------------------------------------
# IDX: MNIST, Fashion-MNIST
# ----------------------------------------------------------------------------------------------------------------


_IDX_MAX_BYTES = 1 << 32  # what an IDX header may declare: 4 GiB, far above any set read here (MNIST's: 47 MB)
_MNIST_MAX = 100_000  # the images (labels) an MNIST / Fashion-MNIST split may hold: 60,000 and 10,000 as published
_MNIST_SIZES = {"train": 60_000, "t10k": 10_000}  # the published files' counts (the cache's files are checked by them)
_CHUNK = 1 << 22


def _open_idx(path: Path):
    """``path`` opened for reading, through a decompressing stream when it is gzip (by its magic bytes, whatever its
    name): nothing is inflated before it is read."""
    f = open(path, "rb")
    if f.read(2) != b"\x1f\x8b":
        f.seek(0)
        return f
    f.close()
    return gzip.open(path, "rb")


def _read(f, n: int, path: Path) -> bytes:
    """Up to ``n`` bytes of ``f`` (fewer at its end), read in chunks: no buffer larger than what the file holds."""
    parts, left = [], n
    try:
        while left > 0:
            part = f.read(min(left, _CHUNK))
            if not part:
                break
            parts.append(part)
            left -= len(part)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path} is a damaged gzip file ({e}): download it again") from None
    return b"".join(parts)


def _idx_header(f, path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, payload bytes)`` from the IDX header at ``f``'s start; the sizes are exact integers."""
    head = _read(f, 4, path)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
        raise DataError(
            f"{path} is not an IDX file (bad magic number {head.hex() or 'none'}; IDX files start 0x0000080N): "
            "give the files as distributed"
        )
    dims = _read(f, 4 * head[3], path)
    if len(dims) < 4 * head[3]:
        raise DataError(f"{path} is truncated: it ends inside its header: download it again")
    shape = struct.unpack(f">{head[3]}I", dims)
    dtype = np.dtype(_IDX_TYPES[head[2]])
    return shape, dtype, math.prod(shape) * dtype.itemsize  # python ints: 4 large dimensions do not wrap


def _described(shape: tuple[int, ...], dtype: np.dtype) -> str:
    return f"{' x '.join(map(str, shape)) or 'no'} values of {dtype.newbyteorder('=').name}"


def read_idx(path: str | Path, expect=None) -> np.ndarray:
    """The array in an IDX file (gzip-compressed or not), checked against its header.

    The header is read first, from the (decompressing) stream; ``expect(shape, dtype)`` may refuse it (a DataError)
    before any value is read, and no more than the values it declares (and one byte, to tell a longer file) are."""
    path = Path(path)
    with _open_idx(path) as f:
        shape, dtype, nbytes = _idx_header(f, path)
        if expect is not None:
            expect(shape, dtype)
        if nbytes > _IDX_MAX_BYTES:
            raise DataError(
                f"{path}'s header describes {_described(shape, dtype)} ({nbytes:,} bytes), more than the "
                f"{_IDX_MAX_BYTES:,} an IDX file read here may hold: the file is damaged, download it again"
            )
        if isinstance(f, gzip.GzipFile):
            data = _read(f, nbytes + 1, path)
            held = len(data)
        else:  # the size on disk says it before anything is read
            held = os.fstat(f.fileno()).st_size - f.tell()
            data = _read(f, nbytes, path) if held == nbytes else b""
    if held != nbytes:
        what = "truncated" if held < nbytes else "longer than its header says"
        holds = f"more than {nbytes:,}" if held > nbytes and data else f"{held:,}"
        raise DataError(
            f"{path} is {what}: its header describes {_described(shape, dtype)} ({nbytes:,} bytes) but it holds "
            f"{holds} bytes: download it again"
        )
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))  # a copy: writable


def _mnist_header(path: Path, images: bool, name: str, split: str):
    """``expect`` for :func:`read_idx`: an MNIST (Fashion-MNIST) images file is N x 28 x 28 unsigned bytes, a labels
    file N values, N at most _MNIST_MAX."""

    def expect(shape: tuple[int, ...], dtype: np.dtype) -> None:
        if images:
            ok = len(shape) == 3 and shape[1:] == (28, 28) and dtype == np.uint8 and shape[0] <= _MNIST_MAX
            want = "N x 28 x 28 unsigned bytes"
        else:
            ok = len(shape) == 1 and shape[0] <= _MNIST_MAX
            want = "N labels"
        if not ok:
            raise DataError(
                f"{path}'s header describes {_described(shape, dtype)}, not {want} with N at most {_MNIST_MAX:,} "
                f"({name}'s {split} split holds {_MNIST_SIZES[_MNIST_PREFIX[split]]:,}): the file is damaged or of "
                "another set, download it again"
            )

    return expect


def _idx_file(folders: list[Path], stem: str) -> Path | None:
    """``stem`` (e.g. ``train-images-idx3-ubyte``, or its dotted variant) in the first folder that has it."""
    names = [stem, stem.replace("-idx", ".idx")]
    for folder in folders:
        for name in names:
            for cand in (folder / name, folder / (name + ".gz")):
                if cand.is_file():
                    return cand
    return None


def read_mnist(folder: str | Path, split: str, name: str = "mnist") -> tuple[np.ndarray, np.ndarray]:
    """MNIST's (or Fashion-MNIST's) ``train`` or ``test`` split from its IDX files in ``folder``."""
    folder = Path(folder)
    folders = [folder, folder / "raw", folder / _TORCHVISION_FOLDER.get(name, "MNIST") / "raw"]
    prefix = _MNIST_PREFIX[split]
    images_file = _idx_file(folders, f"{prefix}-images-idx3-ubyte")
    labels_file = _idx_file(folders, f"{prefix}-labels-idx1-ubyte")
    if images_file is None or labels_file is None:
        raise DataError(
            f"{folder} lacks {name}'s {split} split ({SPLIT_FILES[name][split]}): put the four IDX files there, or "
            "give no path to download them"
        )
    counts = []  # both headers are checked, and against each other, before either file's values are read
    for path, images in ((images_file, True), (labels_file, False)):
        with _open_idx(path) as f:
            shape, dtype, _ = _idx_header(f, path)
        _mnist_header(path, images, name, split)(shape, dtype)
        counts.append(shape[0])
    if counts[0] != counts[1]:
        raise DataError(
            f"{labels_file} holds {counts[1]:,} labels but {images_file} holds {counts[0]:,} images: the two "
            "files are not a pair; download them again"
        )
    images = read_idx(images_file, _mnist_header(images_file, True, name, split))
    labels = read_idx(labels_file, _mnist_header(labels_file, False, name, split))
    return images[..., None], as_labels(labels, labels_file)


# ----------------------------------------------------------------------------------------------------------------
# CIFAR: pickled batches, read without running pickled code
# ----------------------------------------------------------------------------------------------------------------


def _latin1_bytes(text: str, encoding: str = "utf-8") -> bytes:
    """What protocol-2 pickles written by Python 3 call (``_codecs.encode(text, "latin1")``) to rebuild bytes; only
    that use is allowed."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
        raise DataError(f"a pickle asked to encode {type(text).__name__} as {encoding!r}: refused (not bytes data)")
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The globals a pickled numpy array names, under the module names numpy 1 and 2 write them with."""
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, whatever module it lives in
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5's _frombuffer
    found = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_bytes}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found[(module, "_reconstruct")] = reconstruct
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        found[(module, "_frombuffer")] = frombuffer
    return found


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays, dicts, lists and strings; any other global the pickle asks for is refused by name."""

    allowed = _numpy_globals()

    def __init__(self, file, where: str):
        super().__init__(file, encoding="latin1")  # python 2 pickles: numpy's raw bytes read as latin-1
        self.where = where

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.where} asks to load {module}.{name} when unpickled, which the zoo refuses (it builds numpy "
                "arrays only): it is not a CIFAR file as distributed; download the dataset again"
            ) from None

    def persistent_load(self, pid):
        raise DataError(f"{self.where} holds a persistent reference, which the zoo refuses: not a CIFAR file")


def safe_unpickle(path: str | Path) -> object:
    """The object in a pickle file holding only numpy arrays and plain containers (never executing code)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(io.BufferedReader(f), str(path)).load()
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 (truncated or foreign files raise many kinds)
        raise DataError(f"{path} is not a readable pickle ({type(e).__name__}: {e}): download it again") from None
    if isinstance(obj, dict):  # python 2 pickles read with bytes keys on some paths: plain str keys
        obj = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    return obj


def _cifar_folder(folder: Path, name: str) -> Path:
    inner = folder / _CIFAR_FOLDER[name]
    return inner if inner.is_dir() else folder


# the rows of each CIFAR file as distributed (a file may hold fewer, never more), and the bytes a row may take on
# disk (3,072 pixel bytes, its label and file name in the pickle); meta files are a few kB
_CIFAR_ROWS = {"data_batch": 10_000, "test_batch": 10_000, "train": 50_000, "test": 10_000}
_ROW_BYTES, _SLACK = 3072 + 256, 1 << 20


def _cifar_rows(path: Path) -> int:
    return _CIFAR_ROWS["data_batch" if path.name.startswith("data_batch") else path.name]


def _check_size(path: Path, most: int, what: str) -> None:
    """A DataError when ``path`` is larger on disk than ``most`` bytes: checked before it is unpickled."""
    size = path.stat().st_size
    if size > most:
        raise DataError(
            f"{path} is {size:,} bytes; {what} are at most {most:,}: it is not a file as distributed, download the "
            "set again"
        )


def _cifar_dict(path: Path, keys: tuple[str, ...]) -> dict:
    obj = safe_unpickle(path)
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}: it is not a CIFAR batch as distributed")
    return obj


def cifar_class_names(folder: str | Path, name: str) -> list[str]:
    """CIFAR-10's label names or CIFAR-100's fine label names, from the set's meta file."""
    root = _cifar_folder(Path(folder), name)
    meta_file, key = _CIFAR_META[name]
    if not (root / meta_file).is_file():
        raise DataError(f"{root} lacks {meta_file}, {name}'s class names: give the folder as distributed")
    _check_size(root / meta_file, _SLACK, f"{name}'s meta files")
    names = [str(n) for n in _cifar_dict(root / meta_file, (key,))[key]]
    if len(names) != NUM_CLASSES[name] or len(set(names)) != len(names):
        raise DataError(
            f"{root / meta_file} names {len(names)} classes ({len(set(names))} distinct); {name} has "
            f"{NUM_CLASSES[name]}: the file is damaged or of another set, download it again"
        )
    return names


def read_cifar(folder: str | Path, split: str, name: str = "cifar10") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10's or CIFAR-100's ``train`` or ``test`` split (CIFAR-100: its 100 fine labels)."""
    root = _cifar_folder(Path(folder), name)
    files = [root / f for f in _CIFAR_FILES[(name, split)]]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(
            f"{folder} lacks {name}'s {split} split ({', '.join(missing)} of {SPLIT_FILES[name][split]}): give the "
            "folder as distributed, or no path to download it"
        )
    for f in files:  # every file's size before any is unpickled: a crafted one allocates nothing
        _check_size(f, _cifar_rows(f) * _ROW_BYTES + _SLACK, f"{name}'s batches")
    images, labels = [], []
    label_key = _CIFAR_LABELS[name]
    for f in files:
        batch = _cifar_dict(f, ("data", label_key))
        data, y = np.asarray(batch["data"]), batch[label_key]
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{f} holds data {data.dtype} {data.shape}, not N x 3072 bytes (32x32 RGB planes)")
        if data.shape[0] > _cifar_rows(f):
            raise DataError(
                f"{f} holds {data.shape[0]:,} rows; {name}'s {f.name} holds {_cifar_rows(f):,} as distributed: it is "
                "not a file as distributed, download the set again"
            )
        if not isinstance(y, (list, tuple, np.ndarray)):
            raise DataError(f"{f}: {label_key} is not a list of labels: it is not a CIFAR batch as distributed")
        y = as_labels(y, f)
        if y.shape != (data.shape[0],):
            raise DataError(f"{f} holds {y.size:,} labels for {data.shape[0]:,} images: download it again")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(y)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


# ----------------------------------------------------------------------------------------------------------------
# SVHN: .mat files
# ----------------------------------------------------------------------------------------------------------------


def read_svhn(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """SVHN's cropped digits (``train_32x32.mat`` / ``test_32x32.mat``); label 10 is the digit 0."""
    try:
        from scipy.io import loadmat  # scipy comes with scikit-learn (zoo[train]); only SVHN needs it
    except ImportError:
        raise ImportError("reading SVHN's .mat files needs scipy: pip install scipy") from None
    path = Path(folder) / f"{split}_32x32.mat"
    if not path.is_file():
        raise DataError(f"{folder} lacks svhn's {split} split ({path.name}): give the folder holding it")
    try:
        mat = loadmat(str(path), variable_names=["X", "y"])
    except Exception as e:  # noqa: BLE001 (scipy raises ValueError, OSError... for damaged files)
        raise DataError(f"{path} is not a readable .mat file ({type(e).__name__}: {e}): download it again") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} lacks the X and y arrays of SVHN's cropped digits")
    x, y = np.asarray(mat["X"]), as_labels(np.asarray(mat["y"]), path)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataError(f"{path}: X is {x.dtype} {x.shape}, not 32 x 32 x 3 x N bytes")
    if y.shape != (x.shape[3],):
        raise DataError(f"{path} holds {y.size:,} labels for {x.shape[3]:,} images")
    _check_labels(y, 1, 10, path)  # SVHN's labels are 1..10, 10 standing for the digit 0
    y[y == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y


# the number of classes of each standard set: its labels are 0 .. n - 1 (SVHN's file: 1 .. 10)
NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100, "svhn": 10}


def _check_labels(labels: np.ndarray, low: int, high: int, where) -> None:
    """DataError naming ``where`` and the first label outside ``low .. high``, read before any sample is used."""
    bad = np.flatnonzero((labels < low) | (labels > high))
    if bad.size:
        raise DataError(
            f"{where} holds label {int(labels[bad[0]])} (sample {int(bad[0]):,}; {bad.size:,} such) outside "
            f"{low}..{high}: the file is damaged or of another set, download it again"
        )


def read_split(name: str, folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, H, W, C), labels int64)`` of ``name``'s ``split`` (``train`` or ``test``) in ``folder``."""
    if name in ("mnist", "fashion_mnist"):
        images, labels = read_mnist(folder, split, name)
    elif name in _CIFAR_FOLDER:
        images, labels = read_cifar(folder, split, name)
    elif name == "svhn":
        return read_svhn(folder, split)  # checked against its own 1..10
    else:
        raise DataError(f"no reader for {name!r}")
    _check_labels(labels, 0, NUM_CLASSES[name] - 1, f"{name}'s {split} split in {folder}")
    return images, labels


# ----------------------------------------------------------------------------------------------------------------
# Downloads: torchvision's tables and utilities
# ----------------------------------------------------------------------------------------------------------------


def _idx_content(root: Path, filename: str) -> str | None:
    """None when ``root`` holds ``filename`` (gzip as published, recompressed, or inflated) with the published
    content: an IDX header of the published set's shape, and exactly the values it declares; else what is wrong."""
    stem = filename.removesuffix(".gz")
    path = next((p for p in (root / filename, root / stem) if p.is_file()), None)
    if path is None:
        return "absent"
    n = _MNIST_SIZES[stem.split("-")[0]]
    images = "-images-" in stem
    try:
        with _open_idx(path) as f:
            shape, dtype, nbytes = _idx_header(f, path)
            if shape != ((n, 28, 28) if images else (n,)) or dtype != np.uint8:
                what = f"{shape[0] if shape else 0:,} {'images' if images else 'labels'}" if shape else "no values"
                return f"{path.name} there holds {what}, not the published {n:,} ({_described(shape, dtype)})"
            held = len(_read(f, nbytes + 1, path))
    except DataError as e:
        return str(e)
    return None if held == nbytes else f"{path.name} there is {'truncated' if held < nbytes else 'too long'}"


def _fetch_mnist(name: str, root: Path, fetching: list[str]) -> None:
    cls = _TORCHVISION_CLASS[name]
    for filename, md5 in cls.resources:
        if check_integrity(str(root / filename), md5):
            continue
        wrong = _idx_content(root, filename)  # recompressed or inflated by the user: its content decides
        if wrong is None:
            continue
        errors = []
        for mirror in cls.mirrors:
            try:
                fetching[:] = [f"{mirror}{filename}"]
                download_url(f"{mirror}{filename}", str(root), filename, md5)
                break
            except Exception as e:  # noqa: BLE001 (URLError, OSError, an md5 mismatch: try the next mirror)
                errors.append(f"{type(e).__name__}: {e}")
        else:
            there = f" ({wrong})" if wrong != "absent" else ""
            raise OSError(f"{filename}{there}: {errors[-1] if errors else 'no mirror'}")


def _cifar_missing(folder: Path, name: str) -> list[str]:
    """The files of ``name``'s distributed folder that ``folder`` lacks (all of them when it is no folder)."""
    wanted = [f for split in ("train", "test") for f in _CIFAR_FILES[(name, split)]] + [_CIFAR_META[name][0]]
    return [f for f in wanted if not (folder / f).is_file()]


def _fetch_cifar(name: str, root: Path, fetching: list[str]) -> None:
    """``root/cifar-10-batches-py`` (``cifar-100-python``) complete: kept; else extracted from the archive (fetched
    when it is not there, verified) into a temporary folder beside it and renamed into place once whole, so an
    interrupted extraction leaves nothing that looks like the set. A folder left incomplete by an older zoo is
    extracted again when the archive is there, else named with what it lacks."""
    cls = _TORCHVISION_CLASS[name]
    target, archive = root / _CIFAR_FOLDER[name], root / cls.filename
    missing = _cifar_missing(target, name)
    if not missing:
        return
    if target.exists() and not check_integrity(str(archive), cls.tgz_md5):
        raise DataError(
            f"the dataset cache {target} lacks {', '.join(missing)} (an extraction cut short): delete {target} and the "
            f"zoo fetches it again, or pass the folder holding {name}'s files (--data-path PATH)"
        )
    fetching[:] = [cls.url]
    download_url(cls.url, str(root), cls.filename, cls.tgz_md5)  # a verified archive there is kept, not fetched
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        extract_archive(str(archive), str(tmp))
        lacking = _cifar_missing(tmp / target.name, name)
        if lacking:
            raise DataError(f"{archive} lacks {', '.join(lacking)}: delete it and the zoo fetches it again")
        if target.exists():  # the incomplete folder goes with the temporary one
            os.replace(target, tmp / "incomplete")
        os.replace(tmp / target.name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


TIMEOUT_ENV = "ZOO_DOWNLOAD_TIMEOUT"  # seconds a dataset download may wait for the server's next bytes (default 60)


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """Every socket opened in the block gives up after ``seconds`` without data (torchvision's downloads set none,
    and a stalled connection would wait forever); the process's default is restored after."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _timeout_seconds() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "60")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise DataError(f"{TIMEOUT_ENV}={raw!r}: give the seconds a download may wait for data, e.g. 60")
    return seconds


def download(name: str, root: str | Path) -> Path:
    """Fetch ``name`` into ``root`` as torchvision would (its mirrors, file names and md5 sums); returns ``root``.

    Files already there and complete are kept. No network (or a mirror's failure) is a DataError of one line that
    says to pass the folder holding the files instead."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cls = _TORCHVISION_CLASS[name]
    fetching: list[str] = []  # the URL being read, for the message
    seconds = _timeout_seconds()
    try:
        with _socket_timeout(seconds):
            if name in ("mnist", "fashion_mnist"):
                _fetch_mnist(name, root, fetching)
            elif name in _CIFAR_FOLDER:
                _fetch_cifar(name, root, fetching)
            elif name == "svhn":
                for split in ("train", "test"):
                    url, filename, md5 = cls.split_list[split]
                    if not check_integrity(str(root / filename), md5):
                        fetching[:] = [url]
                        download_url(url, str(root), filename, md5)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 (urllib, OSError, a timeout, torchvision's md5 RuntimeError)
        why = str(e).splitlines()[0][:320] if str(e) else type(e).__name__
        if "timed out" in why.lower() or isinstance(e, (TimeoutError, socket.timeout)):
            why = f"no data for {seconds:g} s from {fetching[0] if fetching else 'the server'}; {TIMEOUT_ENV} sets the wait"
        elif fetching:
            why += f"; {fetching[0]}"
        raise DataError(
            f"cannot download {name} into {root} ({why}): pass the folder holding its files instead "
            f"(--data-path PATH, data.path in a recipe, or {name}:PATH)"
        ) from None
    return root
