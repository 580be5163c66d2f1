"""Caches are verified, not trusted by name: a GGUF cache entry of the llama.cpp backend records what it was made
from and is written again when it holds another model's weights, is cut short, unreadable or older than this
format; weights edited in any way (``.data`` too) are never decoded from an older file; a ZOO_CACHE that cannot be
written is one line naming it.
"""

import os
import shutil

import llama_cpp  # noqa: F401  (the export extra, part of dev)
import pytest
import torch
from small_lms import PROMPTS, seeded_small_lm

from zoo import cli
from zoo.export import llama_backend

LLAMA = "llama.cpp"

pytestmark = pytest.mark.usefixtures("one_thread", "gguf_cache")  # tests/conftest.py, tests/export/conftest.py


@pytest.fixture(scope="module")
def models():
    a = seeded_small_lm()
    torch.manual_seed(1)
    b = seeded_small_lm()
    with torch.no_grad():
        for p in b.parameters():
            p.mul_(-1.0)  # another model of the same shapes: other tokens
    return a, b


def _entry(model, quantize="f32"):
    weights = llama_backend.weights_hash(model)
    return llama_backend.gguf_path(model, weights, quantize), llama_backend.made_from(weights, quantize)


def _another_models_file(a, b, path):
    llama_backend.open_session(b, "f32")
    shutil.copy(_entry(b)[0], path)


def _cut_short(a, b, path):
    llama_backend.open_session(a, "f32")
    llama_backend.release(a)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(a, b, path):
    path.write_bytes(b"not a gguf file at all" * 10)


def _no_record(a, b, path):
    weights = llama_backend.weights_hash(a)
    spec = llama_backend.ExportSpec(name="x", task=llama_backend.TEXT, format="gguf", quantize="f32",
                                    options={"vocabulary": False})  # fmt: skip
    folder = path.parent / "plain"
    folder.mkdir()
    llama_backend.gguf_file.write(a, folder, spec)  # the same weights, without the record of what made it
    shutil.move(folder / llama_backend.gguf_file.FILE_NAME, path)
    assert llama_backend.entry_made_from(path) is None and weights


ENTRIES = [
    ("another model's GGUF under the name", _another_models_file),
    ("an entry cut short", _cut_short),
    ("not a GGUF", _garbage),
    ("an entry that records nothing", _no_record),
]


@pytest.mark.parametrize("what, damage", ENTRIES, ids=[e[0] for e in ENTRIES])
def test_a_cache_entry_is_checked_and_written_again(models, what, damage, caplog):
    a, b = models
    llama_backend.release(a), llama_backend.release(b)
    path, want = _entry(a)
    path.parent.mkdir(parents=True, exist_ok=True)
    damage(a, b, path)
    expected = a.generate(PROMPTS, max_new_tokens=8)
    got = a.generate(PROMPTS, max_new_tokens=8, backend=LLAMA, quantize="f32")
    assert torch.equal(got, expected)  # model A's tokens, not B's, and no "Failed to load model from file"
    assert llama_backend.entry_made_from(path) == want
    assert "writing it again" in caplog.text and str(path) in caplog.text
    llama_backend.release(a)


def test_a_good_entry_is_not_written_again(models):
    a, _ = models
    llama_backend.release(a)
    a.generate(PROMPTS, max_new_tokens=2, backend=LLAMA)
    path, want = _entry(a)
    stamp = path.stat().st_mtime_ns
    llama_backend.release(a)
    a.generate(PROMPTS, max_new_tokens=2, backend=LLAMA)
    assert path.stat().st_mtime_ns == stamp and llama_backend.entry_made_from(path) == want


EDITS = [
    ("p.data.mul_", lambda p: p.data.mul_(0.5)),
    ("p.data.copy_", lambda p: p.data.copy_(torch.flip(p.data, [0]))),
    ("p.data[0] = ...", lambda p: p.data.__setitem__(0, p.data[0] + 1.0)),
]


@pytest.mark.parametrize("what, edit", EDITS, ids=[e[0] for e in EDITS])
def test_weights_edited_through_data_are_never_decoded_from_an_older_file(what, edit):
    model = seeded_small_lm()
    before = model.generate(PROMPTS, max_new_tokens=8, backend=LLAMA)
    assert torch.equal(before, model.generate(PROMPTS, max_new_tokens=8))
    for name, p in model.named_parameters():
        if "embed_tokens" in name or "lm_head" in name:
            edit(p)
    want = model.generate(PROMPTS, max_new_tokens=8)
    assert not torch.equal(want, before)  # the edit changes the tokens
    assert torch.equal(model.generate(PROMPTS, max_new_tokens=8, backend=LLAMA), want)


def _a_file(tmp):
    (tmp / "f").write_text("mine")
    return tmp / "f"


CACHES = [  # the command line's one line once (it builds the full-size model, a second or two)
    ("ZOO_CACHE a file", _a_file, True),
    ("ZOO_CACHE under a file", lambda tmp: _a_file(tmp) / "sub", False),
]


@pytest.mark.parametrize("what, where, command_line", CACHES, ids=[c[0] for c in CACHES])
def test_a_cache_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys, what, where, command_line):
    monkeypatch.setenv("ZOO_CACHE", str(where(tmp_path)))
    model = seeded_small_lm()
    with pytest.raises(ValueError, match="cannot be written .*set ZOO_CACHE to a writable folder"):
        model.generate(PROMPTS, max_new_tokens=2, backend=LLAMA)
    if command_line:
        assert cli.main(["run", "mobilellm_125m", "--backend", LLAMA, "--max-new-tokens", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert "set ZOO_CACHE to a writable folder" in err and len(err.splitlines()) == 1, err
    assert (tmp_path / "f").read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_cache_folder_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "ro" / "gguf").mkdir(parents=True)
    os.chmod(tmp_path / "ro" / "gguf", 0o500)
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "ro"))
    with pytest.raises(ValueError, match="cannot be written"):
        seeded_small_lm().generate(PROMPTS, max_new_tokens=2, backend=LLAMA)
