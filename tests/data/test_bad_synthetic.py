"""A synthetic set's folder (``zoo condense --out``) read back as data: ``condense.json`` and the tensors are input
the zoo did not necessarily write. Each case edits one thing in a good set and expects a DataError naming it: class
names reordered, repeated or not matching, a held-out path or preprocessing edited, images of the wrong size,
channels or type, none at all, or not finite.
"""

import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from zoo.condense import condense
from zoo.data import DataError
from zoo.data.synthetic import META_FILE, TENSOR_FILE, load_synthetic


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    for c, colour in (("cat", (250, 0, 0)), ("dog", (0, 250, 0))):
        (root / "images" / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), tuple(max(0, v - 30 * i) for v in colour)).save(root / "images" / c / f"{i}.png")
    condense(str(root / "images"), "random", ipc=1, out=root / "set", image_size=8, progress=False)
    return root / "set"


def _meta(edit):
    def apply(folder):
        meta = json.loads((folder / META_FILE).read_text())
        edit(meta)
        (folder / META_FILE).write_text(json.dumps(meta))

    return apply


def _tensors(edit):
    def apply(folder):
        path = folder / TENSOR_FILE
        with safe_open(str(path), "pt") as f:
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
        edit(tensors)
        save_file(tensors, str(path), metadata=metadata)

    return apply


def _set(section, key, value):
    return _meta(lambda m: m[section].__setitem__(key, value))


def _reordered(m):
    m["source"]["class_names"] = m["source"]["class_names"][::-1]


CASES = [
    ("class names reordered", _meta(_reordered), "source.class_names differ"),
    ("held-out path edited", _set("source", "path", "/somewhere/else"), "source.path differ"),
    ("held-out split edited", _set("source", "val_split", "train"), "source.val_split differ"),
    ("class names repeated", _set("source", "class_names", ["cat", "cat"]), "'cat' twice"),
    ("too few class names", _set("source", "class_names", ["cat"]), "names 1 classes"),
    ("no class names", _set("source", "class_names", None), "names no classes"),
    ("no preprocessing", _meta(lambda m: m.pop("preprocessing")), "no preprocessing section"),
    ("another image size", _set("preprocessing", "image_size", 9), "records 3-channel images of 9x9"),
    ("other channels", _set("preprocessing", "channels", 1), "records 1-channel images"),
    ("a mean too short", _set("preprocessing", "mean", [0.5]), "preprocessing.mean is not 3"),
    ("zero images", _tensors(lambda t: t.update(images=t["images"][:0], labels=t["labels"][:0])), "holds no images"),
    ("integer images", _tensors(lambda t: t.update(images=t["images"].to(torch.uint8))), "torch.uint8 images"),
    ("NaN images", _tensors(lambda t: t["images"].__setitem__(0, float("nan"))), "NaN or infinite"),
    ("a label -1", _tensors(lambda t: t["labels"].__setitem__(0, -1)), "labels run from -1"),
]


@pytest.mark.parametrize("what, edit, message", CASES, ids=[c[0] for c in CASES])
def test_an_edited_synthetic_set_is_refused_by_name(made, tmp_path, what, edit, message):
    folder = tmp_path / "set"
    shutil.copytree(made, folder)
    edit(folder)
    with pytest.raises(DataError, match=message):
        load_synthetic(folder)


def test_the_set_as_written_reads(made):
    data = load_synthetic(made)
    assert data.images.shape == (2, 3, 8, 8) and data.class_names == ["cat", "dog"]


def _unrecorded(folder):
    """The tensor file as an older zoo wrote it: no record of condense.json's source to check edits against."""
    path = folder / TENSOR_FILE
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata={"format": "zoo-synthetic"})


UNRECORDED = [  # an older set (nothing recorded in the tensor file): condense.json's class names against the data's
    ("reversed", _meta(_reordered), r"'dog', 'cat'.* the source's own are 'cat', 'dog'"),
    ("another class", _set("source", "class_names", ["cat", "cow"]), r"'cat', 'cow'.* the source's own are 'cat'"),
    ("none", _set("source", "class_names", None), "names no classes"),
]


def _train_task(folder, tmp_path):
    from zoo.train import tasks
    from zoo.train.config import DataConfig, Recipe, TrainConfig
    from zoo.train.distributed import DistState

    recipe = Recipe(model="convnet_d3", data=DataConfig(name="synthetic", path=str(folder)), train=TrainConfig())
    return tasks.ImageTask(recipe, DistState(), tmp_path / "run")


@pytest.mark.parametrize("what, edit, message", UNRECORDED, ids=[c[0] for c in UNRECORDED])
def test_a_set_without_a_record_must_name_the_sources_classes_in_order(made, tmp_path, what, edit, message):
    """It trained at chance with its held-out labels renumbered by the edited names, silently."""
    folder = tmp_path / "set"
    shutil.copytree(made, folder)
    _unrecorded(folder)
    _train_task(folder, tmp_path).prepare_data()  # as written: the source's names in its order
    edit(folder)
    with pytest.raises(DataError, match=message) as e:
        _train_task(folder, tmp_path).prepare_data()
    assert len(str(e.value).splitlines()) == 1 and not (tmp_path / "run").exists()
