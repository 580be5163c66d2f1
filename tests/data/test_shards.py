"""Image shards (``zoo data shard``): WebDataset's tar layout, read back by position exactly as the folder."""

import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from zoo.data import DataError
from zoo.data.images import ImageFolderDataset, ShardDataset, build_image_dataset
from zoo.data.shards import INDEX_NAME, write_shards


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c, ext in (("ant", "png"), ("bee", "jpg"), ("cow", "png")):
        (root / c).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(root / c / f"{i}.{ext}")
    return root


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory):
    return write_shards(folder, tmp_path_factory.mktemp("out") / "shards", samples_per_shard=5, progress=False)


def test_shards_hold_the_folder_in_webdataset_layout(folder, shards):
    index = json.loads((shards / INDEX_NAME).read_text())
    assert index["classes"] == ["ant", "bee", "cow"] and len(index["shards"]) == 3  # 12 samples, 5 per shard
    with tarfile.open(shards / "shard-000000.tar") as tar:
        names = tar.getnames()
        assert names[:4] == ["00000000.png", "00000000.cls", "00000001.png", "00000001.cls"]
        assert tar.extractfile("00000000.png").read() == (folder / "ant" / "0.png").read_bytes()
        assert tar.extractfile("00000000.cls").read() == b"0"


def test_shards_read_back_every_sample_as_the_folder_does(folder, shards):
    a, b = ImageFolderDataset(folder), ShardDataset(shards)
    assert len(a) == len(b) == 12 and a.targets == b.targets
    for i in range(len(a)):
        (x, y), (u, v) = a[i], b[i]
        assert y == v and np.array_equal(np.asarray(x), np.asarray(u))


def test_labels_follow_the_models_class_order(shards):
    ds = ShardDataset(shards, class_names=["cow", "bee", "ant"])
    assert ds[0][1] == 2 and ds[11][1] == 0
    with pytest.raises(DataError, match="eel"):
        ShardDataset(shards, class_names=["ant", "bee", "eel"])


def test_a_used_output_folder_is_refused_and_nothing_is_left_behind(folder, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not an empty folder"):
        write_shards(folder, tmp_path / "used", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["used"]
    with pytest.raises(DataError, match="not an image folder"):
        write_shards(tmp_path / "missing", tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


def test_a_damaged_shard_folder_is_named(shards, tmp_path):
    with pytest.raises(DataError, match="zoo data shard"):
        ShardDataset(tmp_path)
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in shards.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    (copy / "shard-000001.tar").write_bytes(b"short")
    with pytest.raises(DataError, match="shard-000001.tar is missing or not the size"):
        ShardDataset(copy)


def test_split_folders_become_split_shard_folders(folder, tmp_path):
    root = tmp_path / "splits"
    for split in ("train", "val"):
        for p in folder.rglob("*.*"):
            target = root / split / p.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(p.read_bytes())
    out = write_shards(root, tmp_path / "out", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["train", "val"]
    ds, info = build_image_dataset("wds", "validation", str(out))  # validation -> val, as for an image folder
    assert isinstance(ds, ShardDataset) and len(ds) == 12 and info.class_names == ["ant", "bee", "cow"]


def test_raw_shards_hold_decoded_pixels_and_read_the_same_images(folder, shards, tmp_path):
    raw = write_shards(folder, tmp_path / "raw", samples_per_shard=5, progress=False, store="raw")
    with tarfile.open(raw / "shard-000000.tar") as tar:
        assert tar.getnames()[:2] == ["00000000.ppm", "00000000.cls"]
    a, b = ShardDataset(shards), ShardDataset(raw)
    for i in range(len(a)):
        (x, y), (u, v) = a[i], b[i]
        assert y == v and np.array_equal(np.asarray(x), np.asarray(u))
    with pytest.raises(DataError, match="store must be one of file, raw"):
        write_shards(folder, tmp_path / "other", store="npy")
