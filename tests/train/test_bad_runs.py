"""Runs that must not happen, or not the way they were asked: recipes that train nothing, user errors as one line
and exit status 2, run folders (refusal, --overwrite, the lock), --resume auto on a finished run, leftovers of
killed writes, a full disk, the thread count. Everything runs in-process on tiny digits models."""

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from zoo.train import cli
from zoo.train.checkpoint import load_training_checkpoint

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "configs" / "quickstart_digits.yaml"

# a tiny digits run: 2 optimizer steps of 16 images on a 4-stage model of 8-64 channels, exported
TINY = [
    "--no-progress",
    "--train.steps",
    "2",
    "--train.batch_size",
    "16",
    "--train.threads",
    "1",
    "--model_kwargs.depths",
    "[1,1,1,1]",
    "--model_kwargs.dims",
    "[8,16,32,64]",
    "--train.eval_max_batches",
    "2",
]


def _main(out: Path, *argv: str, config: Path | str = DIGITS) -> int:
    return cli.main(["--config", str(config), "--output_dir", str(out), *TINY, *argv])


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, mtime in ns)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("train.py: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished tiny run (export included); tests that change a run work on a copy."""
    out = tmp_path_factory.mktemp("bad_runs") / "run"
    assert _main(out) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


# ------------------------------------------------------------------------------------------------------------
# user errors: one line, exit status 2, the run folder never made
# ------------------------------------------------------------------------------------------------------------

# (overrides, a fragment of the message); each is refused before any data is read, or (the last rows) before
# a step is trained
OVERRIDE_ROWS = [
    (["--train.steps", "-5"], "train.steps must be at least 1, got -5"),
    (["--train.steps", "0"], "train.steps must be at least 1"),
    (["--train.epochs", "0"], "train.epochs must be at least 1"),
    (["--optim.lr", "-1e-3"], "optim.lr must be greater than 0"),
    (["--optim.lr", "0"], "optim.lr must be greater than 0"),
    (["--optim.weight_decay", "-0.05"], "optim.weight_decay must be 0 or more"),
    (["--optim.betas", "[0.9,1.0]"], "optim.betas must each be in [0, 1)"),
    (["--train.drop_path", "1.0"], "train.drop_path must be in [0, 1)"),
    (["--model_kwargs.drop_path_rate", "2.0"], "model_kwargs.drop_path_rate is a dropout rate"),
    (["--model_kwargs.drop_rate", "-0.1"], "model_kwargs.drop_rate is a dropout rate"),
    (["--model_kwargs.proj_drop", "1"], "model_kwargs.proj_drop"),
    (["--train.log_interval", "0"], "train.log_interval must be at least 1"),
    (["--train.eval_every_epochs", "-1"], "train.eval_every_epochs must be at least 1"),
    (["--checkpoint.every_steps", "-10"], "checkpoint.every_steps must be 0 or more"),
    (["--checkpoint.keep", "-1"], "checkpoint.keep must be 0 or more"),
    (["--sched.warmup_epochs", "-1"], "sched.warmup_epochs must be 0 or more"),
    (["--aug.hflip", "1.5"], "aug.hflip must be in [0, 1]"),
    (["--model", "poolformer_s13"], "Unknown model 'poolformer_s13'"),
    (["--resume", "auto", "--overwrite"], "give one of them"),
    (["--model_kwargs.colour", "3"], "got unexpected argument(s) 'colour'"),
    (["--train.batch_size", "4096"], "fewer than one batch of 4096"),
    (["--data.name", "image_folder", "--data.path", str(DIGITS)], f"data.path {DIGITS} is a file, not a dataset"),
    (["--data.name", "hf_disk", "--data.path", str(DIGITS)], "hf_disk reads a datasets folder"),
    (["--model_kwargs.mlp_hidden", "0"], "(model_kwargs) do not build poolformer_s12: mlp_hidden is a list of one"),
]


@pytest.mark.parametrize("overrides,fragment", OVERRIDE_ROWS, ids=[" ".join(r[0]) for r in OVERRIDE_ROWS])
def test_user_errors_are_one_line_and_exit_2(overrides, fragment, tmp_path, capsys):
    out = tmp_path / "run"
    assert _main(out, *overrides) == 2
    assert fragment in _one_error_line(capsys.readouterr().err)
    assert not out.exists()  # nothing written, not even the folder


# language-model rows: (overrides of configs/quickstart_lm.yaml, a fragment of the message)
LM_ROWS = [
    (["--dist.strategy", "fsdp", "--ema.enabled", "true"], "ema.enabled does not work with sharded parameters"),
    (["--dist.strategy", "fsdp", "--sparse.sparsity", "0.5"], "a sparse: section does not work with sharded"),
    (["--data.val_fraction", "0"], "data.val_fraction must be between 0 and 1"),
    (["--data.bad_files", "ignore"], "data.bad_files must be error or skip"),
    (
        ["--data.seq_len", "512", "--data.vocab_size", "300", "--train.steps", "1"],
        "data.seq_len 512 is longer than mobilellm_125m's context of 256 tokens",
    ),
]


@pytest.mark.parametrize("overrides,fragment", LM_ROWS, ids=[" ".join(r[0]) for r in LM_ROWS])
def test_language_model_recipe_errors(overrides, fragment, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        cli.main(["--config", str(ROOT / "configs" / "quickstart_lm.yaml"), "--output_dir", str(out), *overrides]) == 2
    )
    assert fragment in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


# (recipe text, a fragment of the message)
RECIPE_ROWS = [
    ("- model: poolformer_s12\n- train: {steps: 2}\n", "holds a YAML list, not a mapping"),
    (
        "model: poolformer_s12\ntrain:\n  steps: 2\n  batch_size: 16\n  steps: 3\n",
        "the key 'steps' twice (first on line 3)",
    ),
    ("model: poolformer_s12\nseed: 1\nmodel: poolformer_s24\n", "the key 'model' twice"),
    ("model: poolformer_s12\ntrain: {steps: 2\n", "is not valid YAML"),
    ("model: poolformer_s12\ntrain:\n  epochs: 0\n", "train.epochs must be at least 1"),
]


@pytest.mark.parametrize("text,fragment", RECIPE_ROWS)
def test_bad_recipe_files_are_one_line_and_exit_2(text, fragment, tmp_path, capsys):
    recipe, out = tmp_path / "recipe.yaml", tmp_path / "run"
    recipe.write_text(text)
    assert cli.main(["--config", str(recipe), "--output_dir", str(out), "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert fragment in line and str(recipe) in line
    assert not out.exists()


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    from zoo.train.config import load_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: poolformer_s12\ntrain:\n  <<: {steps: 2, batch_size: 16}\n  steps: 5\n")
    assert load_recipe(str(recipe)).train.steps == 5


def test_data_errors_exit_2(tmp_path, capsys, monkeypatch):
    """zoo.data.errors.DataError (unusable data: a missing path, empty text) is a user error."""
    from zoo.data.errors import DataError
    from zoo.train.tasks import ImageTask

    def no_data(self):
        raise DataError("data.path /srv/empty holds no documents: point it at a text file or a folder of them")

    monkeypatch.setattr(ImageTask, "prepare_data", no_data)
    out = tmp_path / "run"
    assert _main(out) == 2
    assert "/srv/empty holds no documents" in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_full_disk_names_the_file_and_the_free_space(tmp_path, capsys, monkeypatch):
    real_save = torch.save

    def full_disk(obj, f, *a, **k):  # what torch does when the device fills up mid-write
        try:
            f.write(b"PK\x03\x04partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from e

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    assert _main(out, "--export.enabled", "false") == 2
    monkeypatch.setattr(torch, "save", real_save)
    line = _one_error_line(capsys.readouterr().err)
    assert "no space left" in line and str(out / "checkpoints" / "step_2.pt") in line and "free there" in line
    assert not list((out / "checkpoints").glob(".*"))  # the temporary file went with the error


def test_a_full_disk_while_writing_the_weights(tmp_path, capsys, monkeypatch):
    import safetensors.torch

    class SafetensorError(Exception):  # safetensors' own class reports the OS error in its message only
        pass

    def full_disk(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    out = tmp_path / "run"
    assert _main(out, "--export.enabled", "false") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"while writing {out / 'model.safetensors'}" in line and "--resume auto" in line
    assert not list(out.glob("model.safetensors*")) and not (out / "metrics.json").exists()


# ------------------------------------------------------------------------------------------------------------
# run folders: refused unless resumed or overwritten; one writer at a time
# ------------------------------------------------------------------------------------------------------------


def test_a_new_run_into_a_run_folder_is_refused(finished_run, capsys):
    before = _snapshot(finished_run)
    assert _main(finished_run, "--train.steps", "1") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "already holds files" in line and "--resume auto" in line and "--overwrite" in line
    assert _snapshot(finished_run) == before


def test_overwrite_replaces_the_previous_run_cleanly(run_copy, capsys):
    (run_copy / "tokenizer.json").write_text("{}")  # e.g. an earlier language-model run's tokenizer
    (run_copy / "notes.txt").write_text("the user's own file: not a run output, kept")
    shutil.copyfile(run_copy / "checkpoints" / "last.pt", run_copy / "checkpoints" / "step_99.pt")
    (run_copy / "export" / "stale.txt").write_text("from the old run")
    old_log = (run_copy / "log.csv").read_text()
    assert _main(run_copy, "--overwrite", "--train.steps", "1") == 0
    assert not (run_copy / "tokenizer.json").exists() and not (run_copy / "export" / "stale.txt").exists()
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == ["last.pt", "step_1.pt"]
    assert load_training_checkpoint(run_copy / "checkpoints" / "last.pt")["step"] == 1
    rows = (run_copy / "log.csv").read_text().splitlines()[1:]
    assert rows and all(r.startswith("1,") for r in rows) and rows != old_log.splitlines()[1:]
    assert json.loads((run_copy / "metrics.json").read_text())["train_steps"] == 1
    assert (run_copy / "export" / "model.safetensors").is_file()
    assert not (run_copy / ".lock").exists() and (run_copy / "notes.txt").is_file()


# (flags naming a source of the new run, given the run folder R); R is the output folder too, with --overwrite
SOURCE_ROWS = [
    (lambda r: ["--init-from", str(r)], "init_from", "is the run folder"),
    (lambda r: ["--init-from", str(r / "export")], "init_from", "lies inside the run folder"),
    (lambda r: ["--distill.teacher", str(r)], "distill.teacher", "is the run folder"),
    (lambda r: ["--init_checkpoint", str(r / "model.safetensors")], "init_checkpoint", "lies inside"),
]


@pytest.mark.parametrize("flags,key,where", SOURCE_ROWS, ids=[r[1] + " " + r[2] for r in SOURCE_ROWS])
def test_overwrite_refuses_a_run_folder_that_is_a_source(finished_run, flags, key, where, capsys):
    """--overwrite never removes what the new run reads from: refused before anything is touched."""
    before = _snapshot(finished_run)
    assert _main(finished_run, "--overwrite", *flags(finished_run)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{key} " in line and where in line and "--overwrite would remove it before it is read" in line
    assert "Copy it out first" in line
    assert _snapshot(finished_run) == before


def test_overwrite_reads_every_source_before_removing_anything(run_copy, tmp_path, capsys):
    """A source that cannot be loaded fails before --overwrite empties the folder; a copy made first works."""
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    before = _snapshot(run_copy)
    assert _main(run_copy, "--overwrite", "--init-from", str(empty)) == 2
    assert "is not a model folder (it has no config.json)" in _one_error_line(capsys.readouterr().err)
    assert _snapshot(run_copy) == before
    start = tmp_path / "start"
    shutil.copytree(run_copy / "export", start)
    assert _main(run_copy, "--overwrite", "--init-from", str(start), "--train.steps", "1") == 0
    assert yaml.safe_load((run_copy / "args.yaml").read_text())["init_from"] == str(start)


def _no_export(folder: Path) -> tuple[Path, str]:
    shutil.rmtree(folder / "export")
    return folder, "is a training run folder without export/ (it ran with export.enabled false), which init_from"


def _zero_mlp_hidden(folder: Path) -> tuple[Path, str]:
    config = json.loads((folder / "export" / "config.json").read_text())
    config["model_args"]["mlp_hidden"] = 0
    (folder / "export" / "config.json").write_text(json.dumps(config))
    return folder / "export", "(model_args of init_from"


# init_from folders that cannot start a run: (how the finished run's copy is spoilt -> the source, a fragment)
INIT_FROM_ROWS = {"a run without export/": _no_export, "model_args.mlp_hidden 0": _zero_mlp_hidden}


@pytest.mark.parametrize("spoil", INIT_FROM_ROWS)
def test_init_from_folders_that_cannot_start_a_run(run_copy, spoil, tmp_path, capsys):
    source, fragment = INIT_FROM_ROWS[spoil](run_copy)
    out = tmp_path / "new"
    assert _main(out, "--init-from", str(source)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert fragment in line, line
    if spoil == "a run without export/":  # the fix, not pretrained_cfg_overlay
        assert f"zoo publish {run_copy} --repo ORG/NAME --no-push --out-dir {run_copy / 'export'}" in line
        assert "pretrained_cfg_overlay" not in line
    else:
        assert "mlp_hidden is a list of one width per block (4 entries, None: the default), got 0" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ('{"foo": 1}', "poolformer_s12 got unexpected argument(s) 'foo'"),
        ('{"mlp_hidden": 0}', "mlp_hidden is a list of one width per block"),
        ("[1]", "--model-kwargs is a JSON object of argument names and values"),
    ],
)
def test_eval_model_kwargs_errors_are_one_line(kwargs, fragment, capsys):
    from zoo import evaluate

    assert evaluate.main(["--model", "poolformer_s12", "--data", "digits", "--model-kwargs", kwargs]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("eval.py: error:")]
    assert len(lines) == 1 and "Traceback" not in err and fragment in lines[0], err


def test_resume_of_another_runs_checkpoint_into_a_used_folder_is_refused(finished_run, run_copy, tmp_path, capsys):
    """A checkpoint from outside the output folder continues only in an empty or new folder, or with --overwrite."""
    other = finished_run / "checkpoints" / "last.pt"
    before = _snapshot(run_copy)
    assert _main(run_copy, "--resume", str(other)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"--resume {other} is a checkpoint from outside {run_copy}" in line and "--overwrite" in line
    assert _snapshot(run_copy) == before
    inside = run_copy / "checkpoints" / "last.pt"
    assert _main(run_copy, "--resume", str(inside), "--overwrite") == 2  # it would remove the checkpoint
    assert "give one of them" in _one_error_line(capsys.readouterr().err)
    assert _main(run_copy, "--resume", str(other), "--overwrite") == 0
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == ["last.pt", "step_2.pt"]
    new = tmp_path / "new"
    assert _main(new, "--resume", str(other)) == 0 and (new / "metrics.json").is_file()


def test_resume_auto_without_a_checkpoint(run_copy, capsys):
    """A finished run's results without checkpoints are not replaced silently; the files of a run killed before
    its first checkpoint are (they hold nothing to resume)."""
    shutil.rmtree(run_copy / "checkpoints")
    before = _snapshot(run_copy)
    assert _main(run_copy, "--resume", "auto") == 2
    assert "no checkpoint to resume from" in _one_error_line(capsys.readouterr().err)
    assert _snapshot(run_copy) == before
    for name in ("model.safetensors", "metrics.json"):
        (run_copy / name).unlink()
    (run_copy / "tokenizer.json").write_text("{}")
    assert _main(run_copy, "--resume", "auto", "--train.steps", "1") == 0
    assert not (run_copy / "tokenizer.json").exists()
    assert [r.split(",")[0] for r in (run_copy / "log.csv").read_text().splitlines()[1:]] == ["1", "1"]


def test_a_run_folder_being_written_is_refused_naming_the_pid(run_copy, capsys):
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (run_copy / ".lock").write_text(json.dumps({"pid": writer.pid, "host": socket.gethostname()}))
        before = _snapshot(run_copy)
        assert _main(run_copy, "--resume", "auto") == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"pid {writer.pid}" in line and "being written by another run" in line
        assert _snapshot(run_copy) == before  # the lock is still the writer's
    finally:
        writer.kill()
        writer.wait()


def test_a_stale_lock_is_taken_over_and_a_finished_run_left_as_it_is(run_copy, capsys, caplog):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_copy / ".lock").write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))
    # what killed writes leave (the writers' temporary names), and a file that only looks like one
    leftovers = [
        run_copy / "model.safetensors.k2j4h5g6.tmp",
        run_copy / "checkpoints" / ".step_3.pt.tmp.4242",
        run_copy / "checkpoints" / ".last.pt.link.4242",
        run_copy / "export" / ".README.md.a1b2c3.tmp",
    ]
    for p in leftovers:
        p.write_bytes(b"\0" * 1024)
    (run_copy / "notes.tmp").write_text("the user's own file")
    before = _snapshot(run_copy)
    with caplog.at_level(logging.INFO):
        assert _main(run_copy, "--resume", "auto") == 0
    out = capsys.readouterr().out
    assert "finished run (2 optimizer steps)" in out and "nothing was changed" in out
    assert str(run_copy / "metrics.json") in out
    stale = [r.getMessage() for r in caplog.records if "no longer running" in r.getMessage()]
    assert len(stale) == 1 and str(int(gone.stdout)) in stale[0]
    after = _snapshot(run_copy)
    gone_files = {str(p.relative_to(run_copy)) for p in leftovers} | {".lock"}
    assert set(before) - set(after) == gone_files
    assert after == {k: v for k, v in before.items() if k not in gone_files}  # nothing else touched
    assert (run_copy / "notes.tmp").is_file()


def test_a_dangling_symlink_lock_is_named_and_taken_over(run_copy, capsys, caplog):
    """A .lock that is a link to nothing is no run's lock: taken over with one line saying so, not "keeps
    reappearing"."""
    (run_copy / ".lock").symlink_to(run_copy / "gone" / ".lock")
    before = _snapshot(run_copy)
    with caplog.at_level(logging.WARNING):
        assert _main(run_copy, "--resume", "auto") == 0
    assert "nothing was changed" in capsys.readouterr().out
    said = [r.getMessage() for r in caplog.records if ".lock" in r.getMessage()]
    assert len(said) == 1 and "is a symbolic link to" in said[0] and "which does not exist" in said[0], said
    assert not (run_copy / ".lock").is_symlink() and _snapshot(run_copy) == before


def test_resume_after_a_kill_in_the_final_evaluation_logs_it_once(run_copy):
    """Killed after the final checkpoint, before metrics.json: resuming finishes the run with one final row."""
    (run_copy / "metrics.json").unlink()
    assert _main(run_copy, "--resume", "auto") == 0
    rows = (run_copy / "log.csv").read_text().splitlines()[1:]
    val = [r for r in rows if ",val," in r]
    assert len(val) == 1 and val[0].startswith("2,"), rows
    assert (run_copy / "metrics.json").is_file()


def test_resume_refuses_another_tokenizer_setting(tmp_path):
    """A language-model run keeps its tokenizer on resume: a new data.vocab_size is refused, not ignored."""
    from zoo.train.checkpoint import save_training_checkpoint
    from zoo.train.config import RecipeError, load_recipe, recipe_to_dict
    from zoo.train.run_folder import read_checkpoint as _read_checkpoint

    lm = ROOT / "configs" / "quickstart_lm.yaml"
    saved = load_recipe(str(lm), ["--output_dir", str(tmp_path)])
    state = {"model": {}, "recipe": recipe_to_dict(saved), "rng": [], "data_position": {}}
    save_training_checkpoint(state, tmp_path / "checkpoints", 5)
    now = load_recipe(str(lm), ["--output_dir", str(tmp_path), "--data.vocab_size", "512"])
    with pytest.raises(RecipeError, match=r"data\.vocab_size=2048, this recipe has 512"):
        _read_checkpoint(now, "auto", tmp_path / "checkpoints", True)
    assert _read_checkpoint(saved, "auto", tmp_path / "checkpoints", True)["step"] == 5


def test_resume_refuses_another_optimizer_and_names_a_changed_batch_or_schedule(tmp_path, capsys):
    """Another optimizer cannot take the saved one's state: refused in one line naming both (not a KeyError deep
    in the optimizer). A new batch size or schedule is the user's to change: resumed, each said in one line."""
    from zoo.train.checkpoint import save_training_checkpoint
    from zoo.train.config import RecipeError, load_recipe, recipe_to_dict
    from zoo.train.run_folder import read_checkpoint as _read_checkpoint

    saved = load_recipe(str(DIGITS), ["--output_dir", str(tmp_path)])
    state = {"model": {}, "recipe": recipe_to_dict(saved), "rng": [], "data_position": {}}
    save_training_checkpoint(state, tmp_path / "checkpoints", 3)
    now = load_recipe(str(DIGITS), ["--output_dir", str(tmp_path), "--optim.opt", "sgd"])
    with pytest.raises(RecipeError, match=r"optim\.opt='adamw', this recipe has 'sgd'"):
        _read_checkpoint(now, "auto", tmp_path / "checkpoints", True)
    capsys.readouterr()
    assert _read_checkpoint(saved, "auto", tmp_path / "checkpoints", True)["step"] == 3
    assert capsys.readouterr().err == ""  # the same settings: nothing to say
    bs = saved.train.batch_size
    now = load_recipe(
        str(DIGITS), ["--output_dir", str(tmp_path), "--train.batch_size", str(bs * 2), "--sched.min_lr", "0.5"]
    )
    assert _read_checkpoint(now, "auto", tmp_path / "checkpoints", True)["step"] == 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert f"train.batch_size is {bs * 2} now (the checkpoint's run had {bs})" in err[0]
    assert "sched.min_lr is 0.5 now" in err[1]


def test_resume_on_an_image_folder_whose_class_was_renamed_is_refused(image_folder, tmp_path, capsys):
    """Renaming a class folder keeps the sample count and shifts the labels after it: the checkpoint records the
    class names, and a resume on other names is refused in one line naming the first label that moved."""
    data = tmp_path / "pngs"
    shutil.copytree(image_folder, data)
    out = tmp_path / "run"
    argv = ("--data.name", "image_folder", "--data.path", str(data))
    assert _main(out, *argv) == 0
    ckpt = load_training_checkpoint(out / "checkpoints" / "last.pt")
    names = sorted(p.name for p in (data / "train").iterdir())
    assert ckpt["train_data"]["classes"] == names
    for split in ("train", "val"):  # the first class renamed so that it sorts last: every label moves
        (data / split / names[0]).rename(data / split / "zz_renamed")
    capsys.readouterr()
    before = _snapshot(out)
    assert _main(out, *argv, "--resume", "auto", "--train.steps", "4") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "cannot resume" in line and f"(label 0: {names[0]!r})" in line and f"(label 0: {names[1]!r})" in line
    assert _snapshot(out) == before  # nothing written


# ------------------------------------------------------------------------------------------------------------
# language-model runs: a quantized start, tokenizers
# ------------------------------------------------------------------------------------------------------------

LM = ROOT / "configs" / "quickstart_lm.yaml"
# a tiny language-model run: 1 step of 4 sequences of 32 tokens, a 300-token vocabulary, one 32-wide layer
TINY_LM = [
    "--no-progress",
    "--train.steps",
    "1",
    "--train.batch_size",
    "4",
    "--data.seq_len",
    "32",
    "--data.vocab_size",
    "300",
    "--model_kwargs.hidden_size",
    "32",
    "--model_kwargs.intermediate_size",
    "64",
    "--model_kwargs.num_hidden_layers",
    "1",
    "--model_kwargs.num_attention_heads",
    "2",
    "--model_kwargs.num_key_value_heads",
    "1",
    "--model_kwargs.max_position_embeddings",
    "32",
    "--train.eval_every_steps",
    "0",
    "--train.eval_max_batches",
    "1",
    "--checkpoint.every_steps",
    "0",
    "--sched.warmup_steps",
    "0",
    "--train.threads",
    "1",
]


def _lm(out: Path, *argv: str) -> int:
    return cli.main(["--config", str(LM), "--output_dir", str(out), *TINY_LM, *argv])


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """One finished tiny language-model run (export and tokenizer included)."""
    out = tmp_path_factory.mktemp("bad_lm_runs") / "run"
    assert _lm(out) == 0
    return out


@pytest.mark.parametrize("fmt", ["int8", "int4", "bf16"])
def test_init_from_a_quantized_folder_trains_its_dequantized_weights(lm_run, fmt, tmp_path, caplog):
    """A quantized folder's codes would stay frozen and write a run eval.py cannot load: the run trains their
    float32 dequantization, says so, and writes float weights that evaluate."""
    import safetensors.torch

    import zoo
    from zoo.evaluate import evaluate_model
    from zoo.models.mobilellm import save_pretrained

    folder = save_pretrained(zoo.create_model(str(lm_run / "export"), quantize=fmt), tmp_path / fmt)
    shutil.copyfile(lm_run / "tokenizer.json", folder / "tokenizer.json")
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert _lm(out, "--init-from", str(folder)) == 0
    said = [r.getMessage() for r in caplog.records if "dequantization" in r.getMessage()]
    assert len(said) == 1 and f"init_from {folder} holds {fmt}" in said[0], said
    weights = safetensors.torch.load_file(str(out / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values()), {k: t.dtype for k, t in weights.items()}
    assert "quantization" not in json.loads((out / "export" / "config.json").read_text())
    row = evaluate_model("mobilellm_125m", "pydoc", checkpoint=str(out), max_batches=1, profile=False)
    assert "quantization" not in row and row["perplexity"] > 0


def _bad_tokenizer(path: Path) -> Path:
    path.write_text('{"version": "1.0", "model": ')  # cut short
    return path


def _tokenizer_from_data(lm_run, tmp_path, monkeypatch):
    return ["--data.tokenizer", str(_bad_tokenizer(tmp_path / "bad.json"))], "data.tokenizer: "


def _tokenizer_from_init_from(lm_run, tmp_path, monkeypatch):
    folder = tmp_path / "start"
    shutil.copytree(lm_run / "export", folder)
    _bad_tokenizer(folder / "tokenizer.json")
    return ["--init-from", str(folder)], f"the tokenizer of init_from {folder}: "


def _tokenizer_from_the_hub(lm_run, tmp_path, monkeypatch):
    """hf-hub:ORG/NAME with a damaged tokenizer.json (the Hub's config and files served from a folder)."""
    from zoo import factory
    from zoo.train.tasks import base, lm

    monkeypatch.setattr(
        base, "resolve_weight_source", lambda name, *a, **k: factory.resolve_weight_source(str(lm_run / "export"))
    )
    monkeypatch.setattr(lm, "download", lambda repo, name, *a, **k: str(_bad_tokenizer(tmp_path / name)))
    return ["--init-from", "hf-hub:someone/tiny-lm"], "the tokenizer of init_from hf-hub:someone/tiny-lm: "


TOKENIZER_ROWS = {
    "data.tokenizer": _tokenizer_from_data,
    "init_from folder": _tokenizer_from_init_from,
    "hf-hub init_from": _tokenizer_from_the_hub,
}


@pytest.mark.parametrize("source", TOKENIZER_ROWS)
def test_a_tokenizer_that_does_not_load_is_one_line(lm_run, source, tmp_path, monkeypatch, capsys):
    flags, fragment = TOKENIZER_ROWS[source](lm_run, tmp_path, monkeypatch)
    out = tmp_path / "run"
    assert _lm(out, *flags) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert fragment in line and "is not a usable tokenizer.json (the tokenizers library says: " in line, line
    assert not out.exists()  # the tokenizer is read before it is copied into the run folder


def test_resuming_with_a_damaged_run_tokenizer_is_one_line(lm_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(lm_run, out)
    (out / "metrics.json").unlink()  # killed in the final evaluation: resuming reads the run's tokenizer
    _bad_tokenizer(out / "tokenizer.json")
    assert _lm(out, "--resume", "auto") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{out / 'tokenizer.json'} is not a usable tokenizer.json" in line and "It is this run's tokenizer" in line


# ------------------------------------------------------------------------------------------------------------
# threads
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cores,load,local,want", [(2, 0.1, 1, 2), (2, 1.4, 1, 1), (2, 3.0, 1, 1), (16, 3.6, 2, 6)])
def test_threads_follow_the_free_cores(cores, load, local, want, monkeypatch, caplog):
    from zoo.train.distributed import DistState
    from zoo.train.run_setup import _pick_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    with caplog.at_level(logging.INFO):
        assert _pick_threads(DistState()) == want
    assert any(f"using {want} thread(s) per process" in r.getMessage() for r in caplog.records)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice stands
    assert _pick_threads(DistState()) is None


@pytest.mark.parametrize("tf32,deterministic", [(True, False), (False, False), (True, True)])
def test_a_cuda_run_sets_the_float32_products_as_timms_train_py(tf32, deterministic):
    """train.tf32 on a CUDA device: TF32 in cuBLAS's products and cuDNN's convolutions alike (PyTorch's default has
    it in the convolutions only, where timm's 1x1 layers are), cuDNN autotuning unless deterministic; a CPU run
    leaves the settings as they were. (The flags are plain settings: no GPU is needed to read them back.)"""
    from zoo.train.run_setup import cuda_precision

    flags = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = flags[0].allow_tf32, flags[1].allow_tf32, flags[1].benchmark
    try:
        flags[0].allow_tf32, flags[1].allow_tf32, flags[1].benchmark = (not tf32, not tf32, deterministic)
        cuda_precision(torch.device("cpu"), tf32, deterministic)
        assert (flags[0].allow_tf32, flags[1].allow_tf32, flags[1].benchmark) == (not tf32, not tf32, deterministic)
        cuda_precision(torch.device("cuda", 0), tf32, deterministic)
        assert (flags[0].allow_tf32, flags[1].allow_tf32, flags[1].benchmark) == (tf32, tf32, not deterministic)
    finally:
        flags[0].allow_tf32, flags[1].allow_tf32, flags[1].benchmark = saved


def test_a_resumed_run_keeps_the_thread_count_it_started_with(tmp_path):
    """Bit-identical resume: without train.threads, the count recorded in args.yaml wins over today's free cores."""
    from types import SimpleNamespace

    from zoo.train.config import load_recipe, save_recipe
    from zoo.train.loop import _Run

    recipe = load_recipe(str(DIGITS), ["--output_dir", str(tmp_path)])
    assert recipe.train.threads is None
    before = torch.get_num_threads()
    recorded = 1 if before != 1 else 2
    save_recipe(recipe, tmp_path / "args.yaml", extra={"threads": recorded})
    try:
        _Run.keep_threads(SimpleNamespace(r=recipe, run_dir=tmp_path, main=False))
        assert torch.get_num_threads() == recorded
    finally:
        torch.set_num_threads(before)


def test_ctrl_c_is_one_line_naming_the_checkpoint_to_resume_from(tmp_path, capsys, monkeypatch):
    """Ctrl-C during training: no traceback, exit 130, the last complete checkpoint named and resumable; before
    the first checkpoint, the line says there is nothing to resume."""
    from zoo.train import run_setup

    real_save, saves = run_setup.save_training_checkpoint, []

    def save_then_interrupt(*args, **kwargs):
        saves.append(real_save(*args, **kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr(run_setup, "save_training_checkpoint", save_then_interrupt)
    out = tmp_path / "run"
    assert _main(out, "--train.steps", "3", "--checkpoint.every_steps", "1") == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("train.py: interrupted")]
    assert len(lines) == 1 and str(out / "checkpoints" / "last.pt") in lines[0] and "--resume auto" in lines[0]
    assert len(saves) == 1 and (out / "checkpoints" / "step_1.pt").is_file()
    assert load_training_checkpoint(out / "checkpoints" / "last.pt")["data_position"]["step_in_epoch"] >= 1
    monkeypatch.setattr(run_setup, "save_training_checkpoint", real_save)
    assert _main(out, "--train.steps", "3", "--checkpoint.every_steps", "1", "--resume", "auto") == 0

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "train", interrupt)
    assert _main(tmp_path / "other") == 130
    assert "train.py: interrupted; it stopped before its first checkpoint" in capsys.readouterr().err
