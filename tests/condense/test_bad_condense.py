"""``zoo condense`` given what a careful adversarial user gives it: an --out that is, holds or lies inside its data,
a finished set or a resumable state of other settings, arguments out of range, a teacher of other classes. Each is
one line on stderr and exit status 2 (or a CondenseError), and nothing of the user's is touched.

Tiny data throughout: three classes of three 8x8 images, DM for one or two iterations at 8x8.
"""

import json
import logging

import pytest
import torch
from PIL import Image
from torch import nn

from zoo.cli import main as zoo_main
from zoo.condense import CondenseError, load_real
from zoo.condense.teacher import load_teacher

CLASSES = {"cat": (250, 10, 10), "dog": (10, 250, 10), "eel": (10, 10, 250)}
DM = ["--method", "dm", "--image-size", "8", "--iterations", "1", "--option", "batch_real=2", "--no-progress"]


def _folder(root, per_class=3, small=None):
    for c, colour in CLASSES.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(1 if c == small else per_class):
            Image.new("RGB", (8, 8), tuple(max(0, v - 20 * i) for v in colour)).save(root / c / f"{i}.png")
    return root


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _condense(capsys, *args):
    rc = zoo_main(["condense", *args])
    err = capsys.readouterr().err.strip()
    return rc, err


# (what, arguments with {data} and {out}, the folder to create as --out's parent layout, message)
OUT_CASES = [
    ("--out is --data, --overwrite", ["--data", "{d}", "--out", "{d}", "--overwrite"], "is the --data folder"),
    ("--out is --data", ["--data", "{d}", "--out", "{d}"], "is the --data folder"),
    ("--out inside --data", ["--data", "{d}", "--out", "{d}/set"], "lies inside the --data folder"),
    ("--out inside --data, --overwrite", ["--data", "{d}", "--out", "{d}/cat", "--overwrite"], "lies inside"),
    ("--out holds --data, --overwrite", ["--data", "{d}", "--out", "{t}", "--overwrite"], "contains the --data"),
]


@pytest.mark.parametrize("what, args, message", OUT_CASES, ids=[c[0] for c in OUT_CASES])
def test_an_output_never_replaces_its_own_data(tmp_path, capsys, what, args, message):
    data = _folder(tmp_path / "images")
    before = _files(tmp_path)
    args = [a.format(d=data, t=tmp_path) for a in args]
    rc, err = _condense(capsys, *DM, "--ipc", "1", *args)
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err
    assert _files(tmp_path) == before  # nothing added, nothing removed


BAD_ARGS = [
    ("negative iterations", ["--iterations", "-5"], "--iterations must be 0 or more"),
    ("negative save-every", ["--save-every", "-1"], "--save-every must be 1 or more"),
    ("huge ipc", ["--ipc", "1000000000"], "more than any class of the data holds"),
    ("ipc beyond the largest class", ["--ipc", "4"], "more than any class of the data holds (the largest has 3)"),
    ("a word for a number", ["--option", "lr_img=abc"], "lr_img takes a number"),
    ("a language model", ["--model", "mobilellm_125m"], "is a text-generation model"),
    ("no such model", ["--model", "nonet_9"], "is not a zoo model"),
    ("no such device", ["--device", "tpu9"], "--device"),
    ("--out is a file", ["--out", "{t}/file.txt"], "is a file"),
]
if not torch.cuda.is_available():
    BAD_ARGS.append(("cuda without CUDA", ["--device", "cuda"], "finds no CUDA device"))


@pytest.mark.parametrize("what, args, message", BAD_ARGS, ids=[c[0] for c in BAD_ARGS])
def test_bad_arguments_are_one_line_and_status_2(tmp_path, capsys, what, args, message):
    data = _folder(tmp_path / "images")
    (tmp_path / "file.txt").write_text("mine")
    args = [a.format(t=tmp_path) for a in args]
    rc, err = _condense(capsys, *DM, "--ipc", "1", "--data", str(data), "--out", str(tmp_path / "set"), *args)
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "set" / "condense.json").exists() and (tmp_path / "file.txt").read_text() == "mine"


def test_an_ipc_beyond_a_small_class_is_said(tmp_path, capsys, caplog):
    data = _folder(tmp_path / "images", small="eel")
    with caplog.at_level(logging.WARNING):
        rc, err = _condense(capsys, *DM, "--ipc", "2", "--data", str(data), "--out", str(tmp_path / "set"))
    assert rc == 0, err
    assert "class 'eel' has 1 image(s), fewer than ipc=2" in caplog.text


# (what, the second run's arguments, message): the first run made the set with DM, ipc 1, seed 0, lr_img 1.0
AGAIN_CASES = [
    ("another option", ["--ipc", "1", "--option", "lr_img=0.5"], "options.lr_img 1.0 -> 0.5"),
    ("another seed", ["--ipc", "1", "--seed", "3"], "seed 0 -> 3"),
    ("another ipc", ["--ipc", "2"], "ipc 1 -> 2"),
    ("another image size", ["--ipc", "1", "--image-size", "9"], "image_size 8 -> 9"),
    ("another method", ["--ipc", "1", "--method", "random", "--iterations", "0"], "method 'dm' -> 'random'"),
    ("resume, another seed", ["--ipc", "1", "--seed", "3", "--resume"], "--resume: the state"),
    ("resume, another ipc", ["--ipc", "2", "--resume"], "ipc 1 -> 2"),
    ("resume, another option", ["--ipc", "1", "--option", "lr_img=0.5", "--resume"], "options.lr_img 1.0 -> 0.5"),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    data = _folder(root / "images")
    rc = zoo_main(["condense", *DM, "--ipc", "1", "--data", str(data), "--out", str(root / "set")])
    assert rc == 0
    return root


@pytest.mark.parametrize("what, args, message", AGAIN_CASES, ids=[c[0] for c in AGAIN_CASES])
def test_a_finished_set_or_state_of_other_settings_is_kept(finished, capsys, what, args, message):
    out = finished / "set"
    before = (out / "condense.json").read_bytes(), (out / "synthetic.safetensors").read_bytes()
    rc, err = _condense(capsys, *DM, "--data", str(finished / "images"), "--out", str(out), *args)
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err
    assert before == ((out / "condense.json").read_bytes(), (out / "synthetic.safetensors").read_bytes())


def test_the_same_settings_and_overwrite_still_run(finished, capsys, tmp_path):
    import shutil

    out = tmp_path / "set"
    shutil.copytree(finished / "set", out)
    data = str(finished / "images")
    assert _condense(capsys, *DM, "--ipc", "1", "--data", data, "--out", str(out))[0] == 0
    assert _condense(capsys, *DM, "--ipc", "1", "--data", data, "--out", str(out), "--resume")[0] == 0
    assert _condense(capsys, *DM, "--ipc", "1", "--data", data, "--out", str(out), "--seed", "4", "--overwrite")[0] == 0
    assert json.loads((out / "condense.json").read_text())["seed"] == 4


class _Fixed(nn.Module):
    def __init__(self, names):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        if names is not None:
            self.pretrained_cfg = {"label_names": names}

    def forward(self, x):
        return self.lin(x.mean((2, 3)))


TEACHERS = [
    ("the same classes in another order", ["dog", "cat", "eel"], "another order (its class 0 is 'dog'"),
    ("other classes", ["cat", "dog", "fox"], "other classes ('fox'"),
]


@pytest.mark.parametrize("what, names, message", TEACHERS, ids=[c[0] for c in TEACHERS])
def test_a_teacher_is_checked_by_its_class_names(tmp_path, what, names, message):
    real = load_real(str(_folder(tmp_path / "images")), image_size=8)
    with pytest.raises(CondenseError, match=message.replace("(", "\\(")):
        load_teacher(_Fixed(names), real)
    assert load_teacher(_Fixed(["cat", "dog", "eel"]), real).num_classes() == 3
    assert load_teacher(_Fixed(None), real).num_classes() == 3  # nothing recorded: the count is checked


def test_teacher_advice_names_this_commands_options(tmp_path, capsys):
    data = _folder(tmp_path / "images")
    (tmp_path / "weights.pt").write_bytes(b"x")
    rc, err = _condense(capsys, "--method", "rded", "--ipc", "1", "--image-size", "8", "--no-progress", "--data",
                        str(data), "--out", str(tmp_path / "set"), "--teacher", str(tmp_path / "weights.pt"))  # fmt: skip
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "distill." not in err and "--option teacher_weights" in err and "--teacher" in err, err


def test_non_finite_images_are_blamed_on_the_data(tmp_path):
    data = _folder(tmp_path / "images")
    with pytest.raises(CondenseError, match="hold NaN or infinite values once normalised"):
        load_real(str(data), image_size=8, mean=(0.0, 0.0, 0.0), std=(0.0, 0.0, 0.0))


def test_ctrl_c_is_one_line_and_the_saved_state_resumes(tmp_path, capsys, monkeypatch):
    """Ctrl-C during zoo condense: no traceback, exit 130, the saved state named and kept for --resume; before the
    first state, the line says nothing was saved."""
    from zoo.condense import core

    data, out = _folder(tmp_path / "images"), tmp_path / "set"
    real_save = core.save_training_checkpoint

    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(core, "save_training_checkpoint", save_then_interrupt)
    run = [*DM[:4], "--iterations", "3", *DM[6:], "--save-every", "1", "--ipc", "1", "--data", str(data)]
    rc, err = _condense(capsys, *run, "--out", str(out))
    assert rc == 130 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("zoo condense: interrupted; the last state saved in") and "--resume" in err
    assert (out / core.STATE_DIR / "step_1.pt").is_file()
    monkeypatch.setattr(core, "save_training_checkpoint", real_save)
    rc, err = _condense(capsys, *run, "--out", str(out), "--resume")
    assert rc == 0, err

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(core, "run_method", interrupt)
    rc, err = _condense(capsys, *run, "--out", str(tmp_path / "other"))
    assert rc == 130 and err == (
        "zoo condense: interrupted; no state was saved yet (one is saved every --save-every iterations): run the "
        "same command to start over"
    )


def test_class_names_that_clean_to_one_folder_get_a_folder_each():
    """``images/<class>/``: two names that clean to one folder name (``cat/dog``, ``cat?dog``) would overwrite each
    other's previews; each gets its label after it, and no suffixed name meets a class that has it as its own."""
    from zoo.condense.core import _class_dirs

    names = ["cat/dog", "cat?dog", "cat_dog_1", "..", "", "plain"]
    dirs = _class_dirs(names)
    assert len(set(dirs)) == len(names)
    assert dirs[:2] == ["cat_dog_0", "cat_dog_1"] and dirs[-1] == "plain"
    assert all(d and "/" not in d and d not in (".", "..") for d in dirs)
