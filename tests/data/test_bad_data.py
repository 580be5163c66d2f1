"""Users' data that is wrong in the ways issue 13 found: class folders that differ between splits or from what a
model knows, images that do not decode, paths that do not exist, text with no text, batches larger than the data,
a single class; and the language model's special tokens, which come from its tokenizer.

The image data are 8x8 PNGs of one colour per class (cat red, dog green, eel blue) and the "model" reads the
colour, so it is right on every image exactly when each split numbers its classes as the model does.
"""

import gzip
import json
import logging
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from zoo.cli import main as zoo_main
from zoo.condense import CondenseError, RealData, condense, load_real
from zoo.data import text
from zoo.data.errors import DataError
from zoo.data.images import build_image_dataset
from zoo.data.sources import resolve
from zoo.evaluate import evaluate_model
from zoo.evaluate import main as eval_main
from zoo.train import tasks
from zoo.train.config import DataConfig, Recipe, RecipeError, TrainConfig
from zoo.train.distributed import DistState

COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "eel": (0, 0, 255)}
TINY_LM = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}


def _images(folder: Path, classes, per_class: int = 2) -> Path:
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), COLOURS.get(c, (90, 90, 90))).save(folder / c / f"{i}.png")
    return folder


def _splits(root: Path, train=("cat", "dog", "eel"), val=("cat", "eel")) -> Path:
    _images(root / "train", train)
    _images(root / "val", val)
    return root


class ColourModel(nn.Module):
    """Class k's logit is the image's mean in colour channel k: right on every image _images draws."""

    def __init__(self, num_classes: int = 3, label_names=None):
        super().__init__()
        self.num_classes = num_classes
        self.pretrained_cfg = {"input_size": (3, 8, 8), "crop_pct": 1.0, "interpolation": "bilinear"}
        self.pretrained_cfg.update(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        if label_names:
            self.pretrained_cfg["label_names"] = list(label_names)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        logits = x.mean((2, 3)) * self.scale
        return torch.cat([logits, logits.new_zeros(x.shape[0], self.num_classes - 3)], 1)


def _image_task(tmp_path, path, batch_size: int = 2, **data) -> tasks.ImageTask:
    recipe = Recipe(
        model="colour",
        data=DataConfig(name=data.pop("name", "image_folder"), path=str(path), **data),
        train=TrainConfig(batch_size=batch_size),
    )
    return tasks.ImageTask(recipe, DistState(), tmp_path / "run")


def _top1(task, model) -> float:
    return task.evaluate(model, 4, torch.device("cpu"))["top1"]


# ------------------------------------------------------------------------------------------------------------
# item 2: every split numbers its classes as the training split (or the model) does


def test_a_validation_split_missing_a_class_keeps_the_training_numbering(tmp_path, monkeypatch):
    task = _image_task(tmp_path, _splits(tmp_path / "pets"))
    task.prepare_data()
    assert task.info.class_names == ["cat", "dog", "eel"]
    assert [task.val_base[i][1] for i in range(len(task.val_base))] == [0, 0, 2, 2]  # eel stays 2, not 1
    monkeypatch.setattr(tasks.base, "create_model", lambda name, **kwargs: ColourModel(kwargs["num_classes"]))
    model = task.build_model()
    assert _top1(task, model) == 100.0  # 50% when val/ numbered cat, eel as 0, 1


def test_a_validation_class_the_training_split_lacks_is_named(tmp_path):
    task = _image_task(tmp_path, _splits(tmp_path / "pets", val=("cat", "cow")))
    with pytest.raises(DataError, match=r"val has the class\(es\) cow, .* its classes are cat, dog, eel"):
        task.prepare_data()


def _run_with_names(folder: Path, names) -> dict:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"num_classes": len(names), "label_names": names}))
    return {"run_dir": folder}


def _export_with_names(folder: Path, names) -> dict:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"pretrained_cfg": {"label_names": names}}))
    return {"weights": str(folder / "model.safetensors")}


RECORDS = {  # where eval.py finds the classes a model was trained on
    "pretrained_cfg": lambda tmp, names: ({}, names),
    "run metrics.json": lambda tmp, names: (_run_with_names(tmp / "run", names), None),
    "config.json beside the weights": lambda tmp, names: (_export_with_names(tmp / "export", names), None),
}


@pytest.mark.parametrize("record", RECORDS)
def test_eval_numbers_classes_as_the_model_recorded_them(tmp_path, record):
    data = _images(tmp_path / "pets", ["cat", "eel"])
    where, in_cfg = RECORDS[record](tmp_path, ["cat", "dog", "eel"])
    model = ColourModel(3, in_cfg)
    task = tasks.ImageTask(Recipe(model="colour"), DistState(), tmp_path)
    task.prepare_eval_data(model, tasks.EvalSource(data=str(data), kind="image_folder", **where))
    assert _top1(task, model) == 100.0


def test_a_digits_model_on_a_pet_folder_is_refused(tmp_path):
    data = _images(tmp_path / "pets", ["cat", "dog"])
    run = _run_with_names(tmp_path / "run", [str(i) for i in range(10)])
    task = tasks.ImageTask(Recipe(model="colour"), DistState(), tmp_path)
    with pytest.raises(DataError, match=r"class\(es\) cat, dog, which the model does not know; .* 0, 1, 2"):
        task.prepare_eval_data(ColourModel(10), tasks.EvalSource(data=str(data), kind="image_folder", **run))


def test_a_model_without_class_names_is_warned_about(tmp_path, caplog):
    data = _images(tmp_path / "pets", ["cat", "eel"])
    task = tasks.ImageTask(Recipe(model="colour"), DistState(), tmp_path)
    with caplog.at_level(logging.WARNING):
        task.prepare_eval_data(ColourModel(3), tasks.EvalSource(data=str(data), kind="image_folder", model_name="m"))
    assert "m records no class names" in caplog.text and "(cat, eel)" in caplog.text


def test_datasets_folder_class_labels_follow_the_training_split(tmp_path):
    datasets = pytest.importorskip("datasets")

    def split(names, rows):
        feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
        imgs = [Image.new("RGB", (8, 8), COLOURS[c]) for c in rows]
        return datasets.Dataset.from_dict({"image": imgs, "label": [names.index(c) for c in rows]}, features=feats)

    root = tmp_path / "pets-hf"
    datasets.DatasetDict(
        {"train": split(["cat", "dog", "eel"], ["cat", "dog", "eel"]), "validation": split(["cat", "eel"], ["eel"])}
    ).save_to_disk(str(root))
    _, info = build_image_dataset("hf_disk", "train", str(root))
    val, _ = build_image_dataset("hf_disk", "validation", str(root), class_names=info.class_names)
    assert val[0][1] == 2  # the validation split's ClassLabel 1 (eel) is the training split's 2
    with pytest.raises(DataError, match=r"validation split\) has the class\(es\) eel"):
        build_image_dataset("hf_disk", "validation", str(root), class_names=["cat", "dog"])


# ------------------------------------------------------------------------------------------------------------
# item 6: an image that does not decode is named, or skipped when the recipe says so


def _truncate(f: Path):
    Image.effect_noise((32, 32), 60).convert("RGB").save(f)
    f.write_bytes(f.read_bytes()[:200])


BROKEN = {  # how a file is broken -> what the message says about it
    "not an image": (lambda f: f.write_bytes(b"<html>404</html>"), "not an image file PIL can read"),
    "empty": (lambda f: f.write_bytes(b""), "not an image file PIL can read"),
    "truncated": (_truncate, "OSError: image file is truncated"),
}


@pytest.mark.parametrize("how", BROKEN)
def test_an_image_that_does_not_decode_is_named(tmp_path, how):
    breaks, reason = BROKEN[how]
    root = _images(tmp_path / "pets", ["cat", "dog"])
    bad = root / "dog" / "0.png"
    breaks(bad)
    ds, _ = build_image_dataset("image_folder", "train", str(root))
    assert ds[0][1] == 0  # read lazily: the good images before it still load
    with pytest.raises(DataError, match=rf"cannot decode image {bad} \({reason}.*data.bad_files: skip"):
        ds[2]


def test_the_recipe_can_skip_images_that_do_not_decode(tmp_path, caplog):
    root = _images(tmp_path / "pets", ["cat", "dog"])
    (root / "dog" / "0.png").write_bytes(b"not a png")
    task = _image_task(tmp_path, root)
    task.recipe.data.bad_files = "skip"  # DataConfig.bad_files: error | skip
    task.prepare_data()
    with caplog.at_level(logging.WARNING):
        img, label = task.train_base[2]
        assert label == 1 and task.train_base[2][1] == 1  # dog/1.png stands in; warned once
    assert caplog.text.count("skipping image") == 1 and "1 image(s) skipped so far" in caplog.text
    task.recipe.data.bad_files = "ignore"
    with pytest.raises(RecipeError, match="data.bad_files must be one of error, skip"):
        task.prepare_data()


# ------------------------------------------------------------------------------------------------------------
# item 10: data that cannot train is a DataError from prepare_data, before a model is built


def _text_folder(root: Path, docs) -> Path:
    root.mkdir(parents=True)
    for i, doc in enumerate(docs):
        (root / f"{i}.txt").write_text(doc)
    return root


def _loose_images(root: Path) -> Path:
    root.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "0.png")
    return root


def _empty_class(root: Path) -> Path:
    (_images(root, ["cat"]) / "dog").mkdir()
    return root


SENTENCES = [f"Document {i} says that the quick brown fox jumps over the lazy dog {i} times." for i in range(12)]

UNUSABLE = [  # (task, the data, train.batch_size) -> a fragment of the DataError
    ("image", lambda tmp: tmp / "nowhere", 2, "dataset folder .*nowhere does not exist: check data.path"),
    ("image", lambda tmp: _splits(tmp / "pets"), 64, "6 images, fewer than one batch of 64: lower train.batch_size"),
    ("image", lambda tmp: _loose_images(tmp / "flat"), 2, "flat has no class folders: put each class's images"),
    ("image", lambda tmp: _empty_class(tmp / "pets"), 2, "no valid file for the classes dog.*Add images"),
    ("text", lambda tmp: tmp / "nowhere.txt", 2, "text data .*nowhere.txt does not exist"),
    ("text", lambda tmp: _text_folder(tmp / "blank", ["", "  \n"]), 2, r"holds no text \(2 file\(s\), all empty"),
    ("text", lambda tmp: _text_folder(tmp / "none", []), 2, r"holds no text files \(.txt"),
    ("text", lambda tmp: _text_folder(tmp / "one", SENTENCES[:1]), 2, "1 document.* cannot be split"),
    ("text", lambda tmp: _text_folder(tmp / "docs", SENTENCES), 4096, "fewer than one batch of 4096"),
]


@pytest.mark.parametrize("kind, make, batch_size, match", UNUSABLE, ids=[f"{r[0]}: {r[3]}" for r in UNUSABLE])
def test_unusable_data_is_a_data_error(tmp_path, kind, make, batch_size, match):
    """prepare_data refuses it before a model is built, and leaves nothing in the run folder."""
    path = make(tmp_path)
    recipe = Recipe(model="m", train=TrainConfig(batch_size=batch_size))
    if kind == "image":
        recipe.data = DataConfig(name="image_folder", path=str(path))
        task = tasks.ImageTask(recipe, DistState(), tmp_path / "run")
    else:
        recipe.data = DataConfig(name="text", path=str(path), seq_len=16, vocab_size=300, val_fraction=0.5)
        task = tasks.LMTask(recipe, DistState(), tmp_path / "run")
    with pytest.raises(DataError, match=match):
        task.prepare_data()
    assert not list((tmp_path / "run").glob("*"))  # the text rows: no tokenizer.json left behind


def test_eval_py_names_a_missing_data_path(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        evaluate_model("poolformer_s12", str(tmp_path / "nowhere"), model_kwargs={"dims": [8, 16, 32, 64]})


# ------------------------------------------------------------------------------------------------------------
# item 12: one class trains to "100%": say so


def test_a_single_class_training_split_is_warned_about(tmp_path, caplog):
    task = _image_task(tmp_path, _splits(tmp_path / "pets", train=("cat",), val=("cat",)))
    with caplog.at_level(logging.WARNING):
        task.prepare_data()
    assert caplog.text.count("has a single class ('cat')") == 1
    caplog.clear()
    _image_task(tmp_path, _splits(tmp_path / "more")).prepare_data()
    assert "single class" not in caplog.text


# ------------------------------------------------------------------------------------------------------------
# items 11 and 14: the tokenizer is written whole, and the model declares its special tokens


def test_tokenizer_json_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "tokenizer.json"
    path.write_text("the previous tokenizer")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        text.train_bpe_tokenizer(SENTENCES, 300, path)
    assert path.read_text() == "the previous tokenizer" and os.listdir(tmp_path) == ["tokenizer.json"]
    monkeypatch.undo()
    tok = text.train_bpe_tokenizer(SENTENCES, 300, path)
    assert text.load_tokenizer(path).get_vocab_size() == tok.get_vocab_size()


def _word_level(tokens):
    from tokenizers import Tokenizer, models

    return Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=tokens[-1]))


SPECIAL = [  # tokenizer -> the ids a model config must declare
    (lambda: text.train_bpe_tokenizer(SENTENCES, 300), {"bos_token_id": None, "eos_token_id": 0, "pad_token_id": None}),
    (
        lambda: _word_level(["<pad>", "<s>", "</s>", "a", "<unk>"]),
        {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0},
    ),
]


@pytest.mark.parametrize("make, ids", SPECIAL)
def test_special_token_ids_come_from_the_tokenizer(make, ids):
    assert text.special_token_ids(make()) == ids


def test_the_language_models_config_declares_its_tokenizers_special_tokens(tmp_path):
    recipe = Recipe(model="mobilellm_125m", task="text-generation", model_kwargs=dict(TINY_LM))
    recipe.data = DataConfig(name="text", path=str(_text_folder(tmp_path / "docs", SENTENCES)), seq_len=8)
    recipe.data.vocab_size, recipe.data.val_fraction = 300, 0.5
    recipe.train.batch_size = 2
    task = tasks.LMTask(recipe, DistState(), tmp_path / "run")
    task.prepare_data()
    model = task.build_model()
    eos = task.tokenizer.token_to_id(text.EOS_TOKEN)
    assert eos == 0 and task.tokenizer.id_to_token(1) == "!"  # DecoderConfig's default bos 1 would be "!"
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (None, eos, None)
    assert {k: task.export_kwargs()[k] for k in ("bos_token_id", "eos_token_id")} == {
        "bos_token_id": None,
        "eos_token_id": 0,
    }


@pytest.mark.parametrize("name", ["pydoc", "text"])
def test_a_text_splits_slice_takes_part_of_its_documents(tmp_path, name):
    """``train[:N]`` / ``validation[:N]`` on text data: the first N documents of the split (it was ignored)."""
    path = None
    if name == "text":
        (tmp_path / "docs").mkdir()
        for i in range(40):
            (tmp_path / "docs" / f"{i:02d}.txt").write_text(f"document {i} " * 20)
        path = str(tmp_path / "docs")
    recipe = Recipe(model="m", train=TrainConfig(batch_size=2))
    recipe.data = DataConfig(name=name, path=path, seq_len=16, vocab_size=300, val_fraction=0.5)
    task = tasks.LMTask(recipe, DistState(), tmp_path / "run")
    source = resolve(name, path)
    train, held_out = task._documents(source)
    recipe.data.train_split, recipe.data.val_split = "train[:3]", "validation[1:3]"
    part_train, part_held_out = task._documents(source)
    assert part_train == train[:3] and part_held_out == held_out[1:3]
    recipe.data.train_split = "train[5:5]"
    with pytest.raises(DataError, match="leaves none"):
        task._documents(source)


# ------------------------------------------------------------------------------------------------------------
# issue 48 (low rows about data): files crafted to mislead the readers are refused in one line, before the work,
# by what they declare (an IDX header, a CIFAR batch's size on disk), and a label is an integer or nothing


def _idx_bytes(array: np.ndarray, type_byte: int = 0x08, dims=None) -> bytes:
    """An IDX file: two zero bytes, the type byte, the dimensions (``dims``: declared apart from the values)."""
    dims = array.shape if dims is None else dims
    return bytes([0, 0, type_byte, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + array.tobytes()


def _mnist(folder: Path, n: int = 12, images: bytes | None = None, labels: bytes | None = None) -> Path:
    """MNIST's four IDX files (gzip), ``images`` / ``labels`` replacing the training split's."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        x = _idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        y = _idx_bytes((np.arange(n) % 10).astype(np.uint8))
        if prefix == "train":
            x, y = images or x, labels or y
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(x, 1))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(y, 1))
    return folder


def _cifar(folder: Path, labels=None, names=None, pad_to: int = 0) -> Path:
    """cifar-10-batches-py/ with 4 rows a batch; ``labels`` for data_batch_1; ``pad_to``: data_batch_1 grown (a sparse
    tail after the pickle, which the unpickler never reaches) to that many bytes on disk."""
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        y = list(labels) if labels is not None and i == 0 else [(i + k) % 10 for k in range(4)]
        batch = {"data": rng.integers(0, 256, (len(y), 3072), dtype=np.uint8), "labels": y}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    with open(root / "data_batch_1", "r+b") as f:
        f.truncate(max(pad_to, f.seek(0, 2)))
    names = names or ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": names}, protocol=2))
    return folder


def _svhn(folder: Path, y) -> Path:
    from scipy.io import savemat

    folder.mkdir()
    x = np.zeros((32, 32, 3, len(y)), dtype=np.uint8)
    savemat(folder / "train_32x32.mat", {"X": x, "y": np.asarray(y).reshape(-1, 1)})
    savemat(folder / "test_32x32.mat", {"X": x, "y": np.ones((len(y), 1), np.uint8)})
    return folder


def _hf_labels(folder: Path, labels) -> Path:
    datasets = pytest.importorskip("datasets")
    imgs = [Image.new("RGB", (8, 8), (9, 9, 9)) for _ in labels]
    datasets.Dataset.from_dict({"image": imgs, "label": list(labels)}).save_to_disk(str(folder))
    return folder


_BOMB = 3_000_000  # images an MNIST header declares over a few MB of zeros: 2.35 GB if it were believed


CRAFTED = [  # (what, make(tmp) -> the data spec `zoo condense --data` reads, a fragment of the one line)
    ("IDX dimensions whose product wraps",
     lambda t: f"mnist:{_mnist(t / 'm', images=_idx_bytes(np.zeros(0, np.uint8), dims=(65536,) * 4))}",
     r"header describes 65536 x 65536 x 65536 x 65536 .*not N x 28 x 28"),
    ("a gzip declaring 3,000,000 images",
     lambda t: f"mnist:{_mnist(t / 'm', images=_idx_bytes(np.zeros(2**20, np.uint8), dims=(_BOMB, 28, 28)))}",
     r"header describes 3000000 x 28 x 28 .*at most 100,000"),
    ("an IDX labels file longer than its header",
     lambda t: f"mnist:{_mnist(t / 'm', labels=_idx_bytes(np.zeros(13, np.uint8), dims=(12,)))}",
     "longer than its header says"),
    ("IDX labels of floats 0.7",
     lambda t: f"mnist:{_mnist(t / 'm', labels=_idx_bytes(np.full(12, 0.7, '>f4'), 0x0D))}",
     r"train-labels-idx1-ubyte.gz holds the label 0.7 \(sample 0\).*not an integer"),
    ("a CIFAR batch of 1 GB on disk", lambda t: str(_cifar(t / 'c', pad_to=10**9)),
     r"data_batch_1 is 1,000,000,000 bytes; cifar10's batches are at most"),
    ("CIFAR labels 0.7", lambda t: str(_cifar(t / 'c', labels=[1, 0.7, 2, 3])),
     r"data_batch_1 holds the label 0.7 \(sample 1\)"),
    ("CIFAR labels 'cat'", lambda t: str(_cifar(t / 'c', labels=[1, 2, "cat", 3])),
     r"data_batch_1 holds the label 'cat' \(sample 2\)"),
    ("CIFAR labels True", lambda t: str(_cifar(t / 'c', labels=[1, 2, 3, True])),
     r"data_batch_1 holds the label True \(sample 3\)"),
    ("CIFAR meta naming a class twice", lambda t: str(_cifar(t / 'c', names=["cat"] * 2 + list("abcdefgh"))),
     r"batches.meta names 10 classes \(9 distinct\)"),
    ("SVHN labels 0.7", lambda t: str(_svhn(t / 's', [1.0, 0.7, 2.0])), r"train_32x32.mat holds the label 0.7"),
    ("datasets labels 0.7", lambda t: str(_hf_labels(t / 'hf', [0.0, 0.7, 1.0])),
     r"holds the label 0.7 \(sample 1\)"),
    ("datasets labels 'cat'", lambda t: str(_hf_labels(t / 'hf', ["cat", "dog", "cat"])),
     r"holds the label 'cat' \(sample 0\)"),
]  # fmt: skip


@pytest.mark.parametrize("what, make, message", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_files_are_one_line_and_status_2_before_the_work(tmp_path, capsys, what, make, message):
    spec = make(tmp_path)
    capsys.readouterr()  # what making the files printed (datasets' progress bars)
    out = tmp_path / "set"
    rc = zoo_main(["condense", "--data", spec, "--method", "random", "--ipc", "1", "--image-size", "8", "--out",
                   str(out), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert not out.exists()


def test_a_declared_huge_idx_file_is_refused_from_its_header_alone(tmp_path):
    """The gzip bomb: 64 MB of zeros behind a header declaring 3,000,000 images. Only the header is inflated (the
    whole file was, before its header was read); a generic IDX file's declared size is an exact integer."""
    import tracemalloc

    from zoo.data.standard import read_idx, read_mnist

    folder = _mnist(tmp_path / "m", images=_idx_bytes(np.zeros(64 << 20, np.uint8), dims=(_BOMB, 28, 28)))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="header describes 3000000 x 28 x 28"):
            read_mnist(folder, "train")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak:,} bytes allocated to refuse a header"
    wraps = tmp_path / "wraps.idx"
    wraps.write_bytes(_idx_bytes(np.zeros(0, np.uint8), dims=(65536,) * 4))  # 2**64 values: 0 in int64
    with pytest.raises(DataError, match=r"\(18,446,744,073,709,551,616 bytes\), more than"):
        read_idx(wraps)


def test_a_cifar_batch_of_more_rows_than_distributed_is_refused(tmp_path, monkeypatch):
    from zoo.data import standard

    folder = _cifar(tmp_path / "c")
    monkeypatch.setitem(standard._CIFAR_ROWS, "data_batch", 3)  # the generated batches hold 4
    with pytest.raises(DataError, match=r"data_batch_1 holds 4 rows; cifar10's data_batch_1 holds 3 as distributed"):
        resolve("cifar10", folder).arrays("train")


HUGE_SLICES = [  # a split whose numbers no dataset has: one line, not Python's int-conversion traceback
    ("a stop of 5,000 digits", "train[:" + "9" * 5000 + "]"),
    ("a start of 19 digits", "test[" + "1" * 19 + ":]"),
    ("a negative stop of 4,301 digits", "train[:-" + "9" * 4301 + "]"),
]


@pytest.mark.parametrize("what, split", HUGE_SLICES, ids=[s[0] for s in HUGE_SLICES])
def test_a_slice_of_more_than_18_digits_is_refused(tmp_path, capsys, what, split):
    from zoo.data.sources import parse_split

    with pytest.raises(DataError, match=r"more than 18 digits.*e\.g\. train\[:2000\]") as e:
        parse_split(split)
    assert len(str(e.value)) < 400  # the number is not echoed whole
    assert parse_split("train[:" + "9" * 18 + "]") == ("train", slice(None, 10**18 - 1))
    rc = eval_main(["--model", "poolformer_s12", "--model-kwargs", '{"dims": [8, 16, 32, 64]}', "--data", "digits",
                    "--split", split, "--no-profile"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "more than 18 digits" in err, err


def _hf_named(folder: Path, names) -> Path:
    """A datasets folder whose ClassLabel names were edited to ``names`` after it was saved."""
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog", "eel"])})
    imgs = [Image.new("RGB", (8, 8), COLOURS[c]) for c in ("cat", "dog", "eel")]
    datasets.Dataset.from_dict({"image": imgs, "label": [0, 1, 2]}, features=feats).save_to_disk(str(folder))
    info = json.loads((folder / "dataset_info.json").read_text())
    info["features"]["label"]["names"] = list(names)
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


DUPLICATES = [  # (what, read(tmp) reading class names that repeat one, a fragment of the DataError)
    ("condensing with a class list naming 'cat' twice",
     lambda t: load_real(str(_images(t / "pets", COLOURS)), image_size=8,
                        class_names=["cat", "dog", "eel", "cat"]),
     "names the class(es) 'cat' twice"),
    ("eval of a model whose label_names repeat 'cat'",
     lambda t: build_image_dataset("image_folder", "train", str(_images(t / "pets", ["cat"])), class_names=["cat"] * 2),
     "names the class(es) 'cat' twice"),
    ("condense() given real data whose class names repeat 'cat'",
     lambda t: condense(RealData(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]), ["cat", "cat"], {}, {}), "random", 1,
                        t / "set", progress=False),
     "name 'cat' twice"),
    ("a datasets folder whose ClassLabel names repeat 'cat'",
     lambda t: build_image_dataset("hf_disk", "train", str(_hf_named(t / "hf", ["cat", "cat", "eel"]))),
     "label names are duplicated"),
]  # fmt: skip


@pytest.mark.parametrize("what, read, message", DUPLICATES, ids=[d[0] for d in DUPLICATES])
def test_class_names_that_repeat_are_refused_when_read(tmp_path, what, read, message):
    """A class list with a name twice is refused where it is read (it made a set that train.py then refused)."""
    with pytest.raises((DataError, CondenseError), match=re.escape(message)) as e:
        read(tmp_path)
    assert len(str(e.value).splitlines()) == 1
