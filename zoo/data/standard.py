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
with torchvision's download utilities, which check the md5 and skip files already complete.
"""

import contextlib
import gzip
import io
import os
import pickle
import socket
import zlib
from pathlib import Path

import numpy as np
import torchvision.datasets as tvd
from torchvision.datasets.utils import check_integrity, download_and_extract_archive, download_url

from .errors import DataError

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


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it is gzip (by its magic bytes, whatever its name)."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path} is a damaged gzip file ({e}): download it again") from None


def read_idx(path: str | Path) -> np.ndarray:
    """The array in an IDX file (gzip-compressed or not), checked against its header."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataError(
            f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'none'}; IDX files start 0x0000080N): "
            "give the files as distributed"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated: it ends inside its header: download it again")
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: its header describes {'x'.join(map(str, shape))} values ({expected:,} bytes) but "
            f"it holds {len(data):,} bytes: download it again"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))  # a copy: writable


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
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_file} holds {images.dtype} of shape {images.shape}, not N x H x W bytes")
    if labels.ndim != 1:
        raise DataError(f"{labels_file} holds an array of shape {labels.shape}, not one label per image")
    if len(labels) != len(images):
        raise DataError(
            f"{labels_file} holds {len(labels):,} labels but {images_file} holds {len(images):,} images: the two "
            "files are not a pair; download them again"
        )
    return images[..., None], labels.astype(np.int64)


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
    images, labels = [], []
    label_key = _CIFAR_LABELS[name]
    for f in files:
        batch = _cifar_dict(f, ("data", label_key))
        data, y = np.asarray(batch["data"]), np.asarray(batch[label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{f} holds data {data.dtype} {data.shape}, not N x 3072 bytes (32x32 RGB planes)")
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
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
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


def _fetch_mnist(name: str, root: Path, fetching: list[str]) -> None:
    cls = _TORCHVISION_CLASS[name]
    for filename, md5 in cls.resources:
        if check_integrity(str(root / filename), md5):
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
            raise OSError(f"{filename}: {errors[-1] if errors else 'no mirror'}")


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
                if not (root / _CIFAR_FOLDER[name]).is_dir():
                    fetching[:] = [cls.url]
                    download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
            elif name == "svhn":
                for split in ("train", "test"):
                    url, filename, md5 = cls.split_list[split]
                    if not check_integrity(str(root / filename), md5):
                        fetching[:] = [url]
                        download_url(url, str(root), filename, md5)
    except Exception as e:  # noqa: BLE001 (urllib, OSError, a timeout, torchvision's md5 RuntimeError)
        why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        if "timed out" in why.lower() or isinstance(e, (TimeoutError, socket.timeout)):
            why = f"no data for {seconds:g} s from {fetching[0] if fetching else 'the server'}; {TIMEOUT_ENV} sets the wait"
        elif fetching:
            why += f"; {fetching[0]}"
        raise DataError(
            f"cannot download {name} into {root} ({why}): pass the folder holding its files instead "
            f"(--data-path PATH, data.path in a recipe, or {name}:PATH)"
        ) from None
    return root
