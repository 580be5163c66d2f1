"""Users' data that is wrong in the ways issue 13 found: class folders that differ between splits or from what a
model knows, images that do not decode, paths that do not exist, text with no text, batches larger than the data,
a single class; and the language model's special tokens, which come from its tokenizer.

The image data are 8x8 PNGs of one colour per class (cat red, dog green, eel blue) and the "model" reads the
colour, so it is right on every image exactly when each split numbers its classes as the model does.
"""

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from zoo.data import text
from zoo.data.errors import DataError
from zoo.data.images import build_image_dataset
from zoo.data.sources import resolve
from zoo.evaluate import evaluate_model
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
