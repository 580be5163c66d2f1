"""The one data resolver (zoo.data.sources) and the benchmark readers (zoo.data.standard).

The readers are checked on small files generated here in the distributed formats (IDX gzip or not, CIFAR's pickled
batches, SVHN's .mat): their shapes, labels and class names, and one clear line for truncated files, a bad magic
number, a labels file that does not match its images, a folder lacking a split, a pickle that asks for code, and a
download without a network (a closed port on 127.0.0.1: nothing leaves the machine). The complete MNIST and
Fashion-MNIST in ../shared/datasets then go through load_real, train.py, eval.py and zoo condense on slices.
"""

import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd

from zoo.cli import main as zoo_main
from zoo.condense.core import condense, load_real, load_real_split
from zoo.data.errors import DataError
from zoo.data.sources import BENCHMARKS, resolve
from zoo.data.standard import read_idx, read_mnist, safe_unpickle
from zoo.data.synthetic import load_synthetic
from zoo.evaluate import evaluate_model
from zoo.evaluate import main as eval_main
from zoo.train.cli import main as train_main

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="../shared/datasets is absent")
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _idx(array: np.ndarray) -> bytes:
    """An IDX file's bytes: two zero bytes, type 0x08 (unsigned bytes), the dimensions, the values."""
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_mnist(folder: Path, n_train=20, n_test=10, compress=True, splits=("train", "t10k")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        if prefix not in splits:
            continue
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            data = _idx(array)
            if compress:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


def _write_cifar(folder: Path, hundred: bool = False, per_file: int = 4) -> Path:
    """CIFAR-10's cifar-10-batches-py/ (or CIFAR-100's cifar-100-python/) as distributed: pickles, protocol 2."""
    root = folder / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    classes = 100 if hundred else 10

    def batch(n, start):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [(start + i) % classes for i in range(n)]
        key = "fine_labels" if hundred else "labels"
        extra = {"coarse_labels": [y // 5 for y in labels]} if hundred else {}
        return {"batch_label": "generated", "data": data, key: labels, "filenames": [f"{i}.png" for i in range(n)],
                **extra}  # fmt: skip

    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        (root / name).write_bytes(pickle.dumps(batch(per_file, i), protocol=2))
    meta = {"fine_label_names": [f"class{i:02d}" for i in range(100)], "coarse_label_names": ["c"] * 20}
    if not hundred:
        meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                "truck"], "num_cases_per_batch": per_file}  # fmt: skip
    (root / ("meta" if hundred else "batches.meta")).write_bytes(pickle.dumps(meta, protocol=2))
    return folder


# ------------------------------------------------------------------------------------------------------------------
# the readers, on generated files
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_read_gzip_or_not(tmp_path, compress):
    folder = _write_mnist(tmp_path / "m", compress=compress)
    images, labels = read_mnist(folder, "train")
    assert images.shape == (20, 28, 28, 1) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert labels.tolist() == [i % 10 for i in range(20)]
    raw = gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes()) if compress else None
    if raw is not None:
        assert np.array_equal(images[..., 0], np.frombuffer(raw, np.uint8, offset=16).reshape(20, 28, 28))
    test, _ = resolve("mnist", folder).arrays("validation")  # the held-out split is test
    assert test.shape == (10, 28, 28, 1)


def test_bad_idx_files_are_one_clear_line(tmp_path):
    folder = _write_mnist(tmp_path / "m", compress=False)
    images = folder / "train-images-idx3-ubyte"
    data = images.read_bytes()
    images.write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError, match="is truncated") as e:
        read_idx(images)
    assert len(str(e.value).splitlines()) == 1
    images.write_bytes(b"\x50\x4b\x03\x04" + data[4:])  # a zip file's magic
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(images)
    images.write_bytes(data)
    labels = folder / "train-labels-idx1-ubyte"
    labels.write_bytes(_idx(np.zeros(19, np.uint8)))
    with pytest.raises(DataError, match="19 labels but .* 20 images"):
        read_mnist(folder, "train")
    gz = tmp_path / "g" / "t10k-images-idx3-ubyte.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(data)[:-30])
    with pytest.raises(DataError, match="damaged gzip"):
        read_idx(gz)


def test_a_folder_lacking_a_split_is_one_line_and_status_2(tmp_path, capsys):
    folder = _write_mnist(tmp_path / "m", splits=("train",))
    with pytest.raises(DataError, match="lacks mnist's test split"):
        resolve("mnist", folder).arrays("test")
    rc = eval_main(["--model", "poolformer_s12", "--model-kwargs", '{"dims": [8, 16, 32, 64]}', "--data", "mnist",
                    "--data-path", str(folder), "--no-profile"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "lacks mnist's test split" in err, err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = zoo_main(["condense", "--data", f"fashion_mnist:{empty}", "--method", "random", "--ipc", "1",
                   "--out", str(tmp_path / "o"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "lacks fashion_mnist's train split" in err, err


def test_cifar_batches_and_meta(tmp_path):
    ten = resolve("cifar10", _write_cifar(tmp_path / "c10"))
    images, labels = ten.arrays("train")
    assert images.shape == (20, 32, 32, 3) and labels.tolist()[:6] == [0, 1, 2, 3, 1, 2]
    raw = pickle.loads((tmp_path / "c10/cifar-10-batches-py/data_batch_1").read_bytes())["data"]
    assert np.array_equal(images[0, :, :, 1], raw[0, 1024:2048].reshape(32, 32))  # planes -> H x W x C
    assert ten.class_names[:3] == ["airplane", "automobile", "bird"] and ten.arrays("test")[0].shape[0] == 4
    hundred = resolve(str(_write_cifar(tmp_path / "c100", hundred=True)))  # a bare folder: detected
    assert hundred.kind == "cifar100" and len(hundred.class_names) == 100
    ds, info = hundred.open("train")
    assert len(ds) == 4 and info.num_classes == 100 and ds.targets == [0, 1, 2, 3]  # fine labels
    img, label = ds[1]
    assert img.size == (32, 32) and img.mode == "RGB" and label == 1


def test_a_pickle_asking_for_code_is_refused_unrun(tmp_path):
    trace = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(trace),)

    folder = _write_cifar(tmp_path / "c10")
    batch = folder / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({"data": Payload(), "labels": [0]}, protocol=2))
    with pytest.raises(DataError, match=r"asks to load (posix|os|nt)\.mkdir") as e:
        resolve("cifar10", folder).arrays("test")
    assert not trace.exists() and len(str(e.value).splitlines()) == 1
    arrays = tmp_path / "a.pkl"
    arrays.write_bytes(pickle.dumps({"x": np.arange(6, dtype=np.uint8).reshape(2, 3)}, protocol=5))
    assert safe_unpickle(arrays)["x"].tolist() == [[0, 1, 2], [3, 4, 5]]  # numpy arrays alone pass


def test_svhn_mat_files(tmp_path):
    from scipy.io import savemat

    folder = tmp_path / "svhn"
    folder.mkdir()
    rng = np.random.default_rng(2)
    x = {split: rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8) for split, n in (("train", 6), ("test", 3))}
    for split, xs in x.items():
        y = np.array([[10], [1], [2], [3], [4], [5]][: xs.shape[3]], dtype=np.uint8)
        savemat(folder / f"{split}_32x32.mat", {"X": xs, "y": y})
    source = resolve(str(folder))
    assert source.kind == "svhn" and not source.hflip and source.channels == 3
    images, labels = source.arrays("train")
    assert images.shape == (6, 32, 32, 3) and labels.tolist() == [0, 1, 2, 3, 4, 5]  # 10 is the digit 0
    assert np.array_equal(images[2], x["train"][..., 2])
    real = load_real("svhn", "test", 32, path=str(folder))
    assert real.images.shape == (3, 3, 32, 32) and real.preprocessing["mean"] == [0.4377, 0.4438, 0.4728]


# ------------------------------------------------------------------------------------------------------------------
# the resolver
# ------------------------------------------------------------------------------------------------------------------


def test_every_spelling_resolves(tmp_path):
    folder = _write_mnist(tmp_path / "m")
    assert resolve("mnist", folder) == resolve(f"mnist:{folder}")
    with pytest.raises(DataError, match="name two places"):
        resolve(f"mnist:{folder}", tmp_path / "other")
    assert resolve("digits").kind == "digits" and resolve("pydoc").kind == "pydoc"
    assert resolve("hf_stream:org/name").path == "org/name" and resolve("hf_stream:org/name").stream
    assert resolve("https://host/s-{000..009}.tar").kind == "wds"
    (tmp_path / "notes.txt").write_text("text")
    assert resolve(str(tmp_path / "notes.txt")).kind == "text"
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    assert resolve(str(tmp_path / "imgs")).kind == "image_folder"
    assert resolve("image_folder", tmp_path / "imgs") == resolve(f"image_folder:{tmp_path / 'imgs'}")
    with pytest.raises(DataError, match="holds IDX files: name the set"):
        resolve(str(folder))
    with pytest.raises(DataError, match="no dataset .*no such file or folder"):
        resolve(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="splits train and test"):
        resolve("mnist", folder).arrays("extra")


def test_sources_carry_what_downstream_code_needs():
    mnist, fashion = resolve("mnist"), resolve("fashion_mnist")
    assert (mnist.channels, mnist.native_size, mnist.mean, mnist.std, mnist.hflip) == (1, 28, (0.1307,), (0.3081,),
                                                                                       False)  # fmt: skip
    assert mnist.class_names == [str(i) for i in range(10)] and mnist.val_split == "test"
    assert (fashion.mean, fashion.std, fashion.hflip) == ((0.2861,), (0.3530,), True)
    assert tuple(fashion.class_names) == FASHION == tuple(tvd.FashionMNIST.classes)
    assert BENCHMARKS["cifar10"].std == (0.2023, 0.1994, 0.2010) and BENCHMARKS["cifar100"].hflip
    assert BENCHMARKS["cifar100"].mean == (0.5071, 0.4866, 0.4409) and BENCHMARKS["svhn"].channels == 3
    digits = resolve("digits")
    assert digits.channels == 3 and digits.hflip is False and digits.val_split == "validation"


def test_no_network_no_path_is_one_line_saying_pass_a_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tvd.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # a closed port: refused at once
    with pytest.raises(DataError, match=r"cannot download mnist .*--data-path PATH") as e:
        resolve("mnist").arrays("train")
    assert len(str(e.value).splitlines()) == 1
    rc = zoo_main(["condense", "--data", "mnist", "--method", "random", "--ipc", "1", "--out", str(tmp_path / "o"),
                   "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "pass the folder holding its files" in err, err


def test_a_stalled_download_times_out_naming_the_url(tmp_path, monkeypatch):
    """A server that accepts the connection and sends nothing: the download gives up after ZOO_DOWNLOAD_TIMEOUT
    seconds in one line naming the URL and the way round it (it waited forever)."""
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in range(4)], daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/"
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ZOO_DOWNLOAD_TIMEOUT", "0.5")
    monkeypatch.setattr(tvd.MNIST, "mirrors", [url])
    start = time.monotonic()
    try:
        with pytest.raises(DataError, match=r"no data for 0\.5 s from http://127\.0\.0\.1:\d+/train-images") as e:
            resolve("mnist").arrays("train")
    finally:
        server.close()
    assert time.monotonic() - start < 30 and "--data-path PATH" in str(e.value)
    assert len(str(e.value).splitlines()) == 1


# ------------------------------------------------------------------------------------------------------------------
# the shared MNIST and Fashion-MNIST, through load_real, zoo condense, train.py and eval.py
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # about 4 s: the whole of MNIST and Fashion-MNIST read (outside the 4-minute default run)
@needs_shared
def test_shared_mnist_loads_grey_at_its_own_size():
    real = load_real("mnist", image_size=28, path=str(SHARED / "mnist"))
    assert real.images.shape == (60_000, 1, 28, 28) and real.preprocessing["channels"] == 1
    assert real.preprocessing["mean"] == [0.1307] and abs(float(real.images.mean())) < 0.01
    counts = torch.bincount(real.labels).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test = load_real_split(real.source, real.preprocessing)
    assert test.images.shape == (10_000, 1, 28, 28) and test.source["split"] == "test"
    fashion = load_real(f"fashion_mnist:{SHARED / 'fashion_mnist'}", "test[:2000]", image_size=32)
    assert fashion.images.shape == (2000, 1, 32, 32) and fashion.class_names == list(FASHION)
    assert (
        load_real("fashion_mnist", "test", 28, path=str(SHARED / "fashion_mnist")).labels.bincount().tolist()
        == [1000] * 10
    )


@needs_shared
def test_zoo_condense_on_shared_mnist(tmp_path):
    out = tmp_path / "set"
    rc = zoo_main(["condense", "--data", "mnist", "--data-path", str(SHARED / "mnist"), "--method", "random",
                   "--ipc", "2", "--out", str(out), "--no-progress"])  # fmt: skip
    syn = load_synthetic(out)
    assert rc == 0 and syn.images.shape == (20, 1, 28, 28)  # grey, at MNIST's own size
    src = syn.meta["source"]
    assert (src["kind"], src["val_split"], syn.meta["preprocessing"]["channels"]) == ("mnist", "test", 1)


@needs_shared
def test_train_py_and_eval_py_on_a_slice_of_shared_mnist(tmp_path):
    run = tmp_path / "run"
    rc = train_main(["--config", str(ROOT / "configs/quickstart_digits.yaml"), "--output_dir", str(run),
                     "--no-progress", "--data.name", "mnist", "--data.path", str(SHARED / "mnist"),
                     "--data.train_split", "train[:128]", "--data.val_split", "test[:64]", "--data.image_size", "32",
                     "--train.steps", "2", "--train.batch_size", "32", "--export.enabled", "false",
                     "--train.threads", "1"])  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert rc == 0 and metrics["dataset"] == "mnist" and metrics["split"] == "test[:64]" and metrics["samples"] == 64
    assert metrics["label_names"] == [str(i) for i in range(10)]
    row = evaluate_model("poolformer_s12", "mnist", checkpoint=str(run), data_path=str(SHARED / "mnist"),
                         split="test[64:96]", profile=False)  # fmt: skip
    assert row["dataset"] == "mnist" and row["split"] == "test[64:96]" and row["samples"] == 32


@needs_shared
def test_train_py_on_a_grey_synthetic_set(tmp_path):
    """A set condensed from MNIST keeps one channel: train.py builds a one-channel ConvNet and evaluates it on the
    real held-out split the set names, grey and normalised as the set was."""
    real = load_real("mnist", "train[:300]", 28, path=str(SHARED / "mnist"), val_split="test[:100]")
    condense(real, "random", 2, tmp_path / "set", progress=False)
    run = tmp_path / "run"
    rc = train_main(["--config", str(ROOT / "configs/condensed_digits.yaml"), "--data.path", str(tmp_path / "set"),
                     "--output_dir", str(run), "--no-progress", "--train.epochs", "2", "--train.eval_every_epochs",
                     "2", "--export.enabled", "false", "--train.threads", "1"])  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert rc == 0 and metrics["split"] == "test[:100]" and metrics["samples"] == 100
    args = (run / "args.yaml").read_text()
    assert "in_chans: 1" in args and "img_size: 28" in args
    row = evaluate_model("convnet_d3", f"mnist:{SHARED / 'mnist'}", checkpoint=str(run), split="test[:100]",
                         profile=False)  # fmt: skip
    assert row["samples"] == 100 and row["input_size"] == [1, 28, 28]
    assert row["top1"] == pytest.approx(metrics["top1"])  # the same grey images, normalised as the set was


def _bad_mnist_label(folder: Path) -> str:
    _write_mnist(folder, compress=False)
    labels = (np.arange(20) % 10).astype(np.uint8)
    labels[7] = 10
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx(labels))
    return f"mnist:{folder}"


def _bad_cifar_label(folder: Path) -> Path:
    _write_cifar(folder)
    f = folder / "cifar-10-batches-py" / "data_batch_2"
    batch = pickle.loads(f.read_bytes())
    batch["labels"][1] = 12
    f.write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def _bad_cifar_meta(folder: Path) -> Path:
    _write_cifar(folder)
    (folder / "cifar-10-batches-py" / "batches.meta").write_bytes(
        pickle.dumps({"label_names": ["cat", "dog", "bird"]}, protocol=2)
    )
    return folder


def _bad_svhn_label(folder: Path) -> Path:
    from scipy.io import savemat

    folder.mkdir()
    x = np.zeros((32, 32, 3, 3), dtype=np.uint8)
    savemat(folder / "train_32x32.mat", {"X": x, "y": np.array([[1], [11], [2]], dtype=np.uint8)})
    savemat(folder / "test_32x32.mat", {"X": x, "y": np.array([[1], [2], [3]], dtype=np.uint8)})
    return folder


@pytest.mark.parametrize(
    "make, match",
    [
        (_bad_mnist_label, r"label 10 \(sample 7"),
        (_bad_cifar_label, r"label 12 \(sample 5"),
        (_bad_cifar_meta, "names 3 classes"),
        (_bad_svhn_label, r"label 11 \(sample 1"),
    ],
)
def test_labels_and_class_lists_are_checked_when_read(tmp_path, make, match):
    """A label outside the set's classes, or a meta file naming another number of classes, is a DataError naming
    the file when the split is read (train.py and eval.py crashed later without naming it; zoo condense dropped
    the samples)."""
    source = resolve(str(make(tmp_path / "set")))
    with pytest.raises(DataError, match=match):
        source.arrays("train")
        source.class_names  # noqa: B018  (read on first use)


@pytest.mark.parametrize("split", ["../other/train[:2]", "/etc", "train/../../x", ".."])
def test_a_split_is_a_name_never_a_path(split):
    from zoo.data.sources import parse_split

    with pytest.raises(DataError, match="not a path"):
        parse_split(split)
    assert parse_split("test[:1000]") == ("test", slice(None, 1000))


@pytest.mark.parametrize("data", ["digits", "pydoc"])
def test_bundled_data_given_a_path_is_refused(data, tmp_path):
    """digits and pydoc ship with the install: a --data-path beside them went unread, silently."""
    with pytest.raises(DataError, match="ships with the install and reads no path"):
        resolve(data, str(tmp_path))
    assert resolve(data).path is None


# ------------------------------------------------------------------------------------------------------------------
# the zoo's dataset cache: extracted whole or not at all, files judged by their content
# ------------------------------------------------------------------------------------------------------------------


def _cifar_archive(tmp: Path, monkeypatch) -> Path:
    """A cifar-10-python.tar.gz of generated batches, made the published archive (its md5 patched in)."""
    import hashlib
    import tarfile

    made = _write_cifar(tmp / "made")
    archive = tmp / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(made / "cifar-10-batches-py", "cifar-10-batches-py")
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    return archive


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """ZOO_CACHE in tmp_path; every mirror a closed port on 127.0.0.1 (refused at once)."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tvd.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    for cls in (tvd.MNIST, tvd.FashionMNIST):
        monkeypatch.setattr(cls, "mirrors", ["http://127.0.0.1:9/"])
    return tmp_path / "cache" / "datasets"


def test_a_partly_extracted_cache_folder_is_named_or_extracted_again(tmp_path, monkeypatch, offline_cache):
    """An extraction cut short left a folder that later reads failed on, saying to give a path that was never given."""
    import shutil

    partial = offline_cache / "cifar10" / "cifar-10-batches-py"
    shutil.copytree(_write_cifar(tmp_path / "full") / "cifar-10-batches-py", partial)
    for name in ("data_batch_4", "data_batch_5", "test_batch"):
        (partial / name).unlink()
    with pytest.raises(DataError, match=r"lacks data_batch_4, data_batch_5, test_batch .*delete .*fetches it again"):
        resolve("cifar10").arrays("train")
    archive = _cifar_archive(tmp_path, monkeypatch)
    shutil.copy(archive, offline_cache / "cifar10")  # the archive is there: extracted again, whole
    images, _ = resolve("cifar10").arrays("train")
    assert images.shape == (20, 32, 32, 3) and sorted(p.name for p in (offline_cache / "cifar10").iterdir()) == [
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
    ]


def test_an_interrupted_extraction_leaves_no_folder(tmp_path, monkeypatch, offline_cache):
    from zoo.data import standard

    (offline_cache / "cifar10").mkdir(parents=True)
    archive = _cifar_archive(tmp_path, monkeypatch)
    (offline_cache / "cifar10" / archive.name).write_bytes(archive.read_bytes())
    extract = standard.extract_archive

    def interrupted(src, dst):
        extract(src, dst)
        (Path(dst) / "cifar-10-batches-py" / "test_batch").unlink()  # as if cut short here
        raise KeyboardInterrupt

    monkeypatch.setattr(standard, "extract_archive", interrupted)
    with pytest.raises(KeyboardInterrupt):
        resolve("cifar10").arrays("test")
    assert [p.name for p in (offline_cache / "cifar10").iterdir()] == [archive.name]  # nothing half-made
    monkeypatch.setattr(standard, "extract_archive", extract)
    assert resolve("cifar10").arrays("test")[0].shape == (4, 32, 32, 3)


@needs_shared
def test_complete_mnist_files_recompressed_in_the_cache_are_used(offline_cache):
    """The shared files are MNIST's, gzip-compressed anew (their .gz bytes are not the published ones): in the cache
    they were a "download failure"; their content is checked instead (IDX headers and sizes of the published set)."""
    import shutil

    shutil.copytree(SHARED / "mnist", offline_cache / "mnist")
    images, labels = resolve("mnist").arrays("test")
    assert images.shape == (10_000, 28, 28, 1) and np.bincount(labels)[0] == 980
    (offline_cache / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.zeros(9, np.uint8))))
    with pytest.raises(DataError, match=r"cannot download mnist .*t10k-labels-idx1-ubyte.gz there holds 9 labels, not"):
        resolve("mnist").arrays("test")
