"""Indexes and metadata the zoo reads but did not necessarily write: a shard index (``shards.json``) may name only
the files beside it and labels inside its classes; label columns and class names are checked wherever they come
from. Each case edits one thing in a good index and expects a DataError naming it, before a byte of a shard is read.
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from zoo.data import DataError
from zoo.data.images import ShardDataset, build_image_dataset
from zoo.data.shards import INDEX_NAME, write_shards


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in ("ant", "bee", "cow"):
        (root / c).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    out = tmp_path_factory.mktemp("out")
    return write_shards(root, out / "shards", samples_per_shard=3, progress=False)


def _edited(made, tmp_path, edit) -> "tuple":
    folder = tmp_path / "shards"
    shutil.copytree(made, folder)
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(made / "shard-000000.tar", tmp_path / "elsewhere" / "shard-000000.tar")
    index = json.loads((folder / INDEX_NAME).read_text())
    edit(index, tmp_path)
    (folder / INDEX_NAME).write_text(json.dumps(index))
    return folder


def _set(path, value):
    def edit(index, tmp_path):
        *head, last = path
        node = index
        for key in head:
            node = node[key]
        node[last] = value(tmp_path) if callable(value) else value

    return edit


CASES = [
    ("absolute file", _set(["shards", 0, "file"], lambda t: str(t / "elsewhere" / "shard-000000.tar")), "outside"),
    ("file climbing out", _set(["shards", 0, "file"], "../elsewhere/shard-000000.tar"), "outside its folder"),
    ("file in a sub-folder", _set(["shards", 0, "file"], "sub/shard-000000.tar"), "outside its folder"),
    ("file ..", _set(["shards", 0, "file"], ".."), "outside its folder"),
    ("label -1", _set(["shards", 0, "samples", 0, 3], -1), "label -1"),
    ("label past the classes", _set(["shards", 0, "samples", 0, 3], 3), "label 3"),
    ("label not an integer", _set(["shards", 0, "samples", 0, 3], "bee"), "not an integer"),
    ("label a float", _set(["shards", 0, "samples", 0, 3], 1.5), "not an integer"),
    ("duplicate class names", _set(["classes"], ["ant", "ant", "cow"]), "'ant' twice"),
    ("class names not strings", _set(["classes"], [1, 2, 3]), "no class names"),
    ("negative offset", _set(["shards", 0, "samples", 0, 1], -5), "offset"),
    ("sample not a list", _set(["shards", 0, "samples", 0], {"a": 1}), "not \\[member"),
    ("no shard list", _set(["shards"], "shard-000000.tar"), "no list of shards"),
]


@pytest.mark.parametrize("what, edit, message", CASES, ids=[c[0] for c in CASES])
def test_a_shard_index_is_followed_only_when_whole_and_local(made, tmp_path, monkeypatch, what, edit, message):
    folder = _edited(made, tmp_path, edit)
    opened = []
    real_open = __import__("os").open
    monkeypatch.setattr("zoo.data.images.os.open", lambda p, *a: opened.append(p) or real_open(p, *a))
    with pytest.raises(DataError, match=message) as e:
        ds = ShardDataset(folder)
        [ds[i] for i in range(len(ds))]
    assert INDEX_NAME in str(e.value) and opened == []  # the index is named, and no shard was opened
    with pytest.raises(DataError, match=message):
        build_image_dataset("wds", "train", str(folder))


def test_the_good_index_still_reads(made):
    ds = ShardDataset(made)
    assert len(ds) == 6 and ds.targets == [0, 0, 1, 1, 2, 2]


HF_CASES = [("ClassLabel -1", True, "label -1"), ("bare -1", False, "label -1")]


@pytest.mark.parametrize("what, class_label, message", HF_CASES, ids=[c[0] for c in HF_CASES])
def test_a_datasets_folders_negative_label_is_refused(tmp_path, what, class_label, message):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=["cat", "dog"]) if class_label else datasets.Value("int64"),
        }
    )
    images = [Image.new("RGB", (4, 4), (i * 60, 0, 0)) for i in range(3)]
    datasets.Dataset.from_dict({"image": images, "label": [0, 1, -1]}, features=features).save_to_disk(tmp_path / "d")
    with pytest.raises(DataError, match=message):
        ds, _ = build_image_dataset("hf_disk", "train", str(tmp_path / "d"))
        [ds[i] for i in range(len(ds))]


def _png(path) -> bytes:
    Image.new("RGB", (4, 4), (9, 9, 9)).save(path)
    return path.read_bytes()


PATH_CASES = [
    ("a stream's path, no local folder", lambda t: str(t / "inside" / "a.png"), None, "instead of holding its bytes"),
    ("a path climbing out", lambda t: "../outside.png", "inside", "outside that folder"),
    ("an absolute path elsewhere", lambda t: str(t / "outside.png"), "inside", "outside that folder"),
    ("no bytes, no path", lambda t: None, "inside", "neither bytes nor a file"),
]


@pytest.mark.parametrize("what, path, root, message", PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_stream_rows_never_make_the_loader_read_other_files(tmp_path, what, path, root, message):
    from zoo.data.stream import decode_image

    (tmp_path / "inside").mkdir()
    _png(tmp_path / "inside" / "a.png"), _png(tmp_path / "outside.png")
    with pytest.raises(DataError, match=message):
        decode_image({"bytes": None, "path": path(tmp_path)}, root and (tmp_path / root).resolve())
    assert decode_image({"bytes": None, "path": "a.png"}, (tmp_path / "inside").resolve()).size == (4, 4)


def test_a_streamed_shard_index_is_checked(made, tmp_path):
    from zoo.data.stream import StreamSource

    folder = _edited(made, tmp_path, _set(["shards", 0, "file"], "../elsewhere/shard-000000.tar"))
    with pytest.raises(DataError, match="outside its folder"):
        StreamSource("wds", str(folder)).shard_index()
    assert StreamSource("wds", str(made)).shard_index()["classes"] == ["ant", "bee", "cow"]


LABEL_CASES = [(b"bee", "not an integer"), ("1.5", "not an integer"), (1.5, "not an integer"), (-1, "outside")]


@pytest.mark.parametrize("value, message", LABEL_CASES)
def test_a_streamed_label_is_an_integer_in_range(value, message):
    from zoo.data.stream import ImageBatches

    batches = ImageBatches("png", "cls", [0, 1, 2], None, "error")
    with pytest.raises(DataError, match=message):
        batches.label({"cls": value, "__key__": "000001"})
    assert batches.label({"cls": b"2", "__key__": "000001"}) == 2


HUGE_PATTERNS = [  # under a bound of 1,000 names (cheap even where nothing bounds them: 1e6 names at most)
    ("one huge range", "/data/shard-{0..999999}.tar", "names 1,000,000 shards, more than 1,000"),
    ("ranges that multiply", "/data/{0..999}/shard-{0..999}.tar", "names more than 1,000 shards (its ranges multiply)"),
    ("choices that multiply", "/data/{a,b,c}/shard-{0..499}.tar", "names more than 1,000 shards"),
]


@pytest.mark.parametrize("pattern, fragment", [c[1:] for c in HUGE_PATTERNS], ids=[c[0] for c in HUGE_PATTERNS])
def test_a_huge_shard_pattern_is_refused_before_it_is_expanded(monkeypatch, pattern, fragment):
    from zoo.data import stream

    assert stream.MAX_SHARDS == 100_000
    monkeypatch.setattr(stream, "MAX_SHARDS", 1000)
    with pytest.raises(DataError) as e:
        stream.expand_braces(pattern)
    assert fragment in str(e.value)
    assert len(stream.expand_braces("/data/shard-{000..009}.tar")) == 10
    assert len(stream.expand_braces("/data/{a,b}/shard-{0..499}.tar")) == 1000  # up to the bound


def test_a_local_stream_that_fails_is_not_blamed_on_the_network(tmp_path, monkeypatch):
    import datasets

    from zoo.data.stream import StreamSource

    (tmp_path / "shard-000000.tar").write_bytes(b"cut short")

    def fails(*args, **kwargs):
        raise RuntimeError("unexpected end of data")

    monkeypatch.setattr(datasets, "load_dataset", fails)
    with pytest.raises(DataError) as e:
        StreamSource("wds", str(tmp_path)).open()
    assert "network" not in str(e.value) and "local files" in str(e.value)
