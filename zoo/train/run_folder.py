"""The run folder: claiming it for one run, its lock, the checks of what the run reads to start, and resuming.

A run folder belongs to one run: a new run refuses a folder that holds files unless it resumes or overwrites
(:meth:`RunFolder.claim`), and the run holds ``RUN_DIR/.lock`` (:class:`RunLock`) while it writes. The recipe's
sources (``init_from``, a teacher, start weights, a tokenizer) are checked before anything in the folder is
touched (:func:`check_sources_outside_run`), and a checkpoint to resume from is checked against the recipe
(:func:`read_checkpoint`). ``metrics.json`` is written last: a folder with it, the weights and the final checkpoint
holds a finished run (:meth:`RunFolder.is_complete`).

One process writes a run folder at a time: it holds ``RUN_DIR/.lock``, which names its pid and host; a lock whose
process is gone is taken over. What killed writes leave behind is removed when the next run into the folder starts
(:func:`remove_temp_files`).
"""

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from ..factory import resolve_weight_source
from ..registry import get_entry
from ..run_layout import ARGS, METRICS, OUTPUTS, WEIGHTS, export_folder, is_run_folder
from .builders import check_teacher_name
from .checkpoint import find_checkpoints, latest_good_checkpoint, load_training_checkpoint
from .config import Recipe, RecipeError, load_run_args, recipe_to_dict
from .distill import DistillError
from .distributed import DistState, on_main

__all__ = [
    "RunFolder",
    "RunFolderError",
    "RunLock",
    "check_model_name",
    "check_sources",
    "check_sources_outside_run",
    "checkpoint_from_elsewhere",
    "clear_run_outputs",
    "describe_data",
    "read_checkpoint",
    "remove_temp_files",
    "train_data_record",
]

_logger = logging.getLogger(__name__)


class RunFolderError(RuntimeError):
    """A run folder that cannot be written as asked: it holds another run, or another process is writing it."""


# The temporary names of the run's atomic writers (zoo.train.checkpoint, zoo.weights.save_state_dict, save_recipe,
# write_text_atomic, zoo.data.text's tokenizer, zoo.publish), by folder; files matching them outlive only a
# writer that was killed.
_TEMP_PATTERNS = {
    ".": ("model.safetensors.*.tmp", "args.yaml.tmp", ".*.tmp.*"),
    "checkpoints": (".step_*.pt.tmp.*", ".last.pt.tmp.*", ".last.pt.link.*"),
    "export": ("model.safetensors.*.tmp", ".*.tmp"),
}


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Remove what killed writes left in ``run_dir`` (only the run's own writers' temporary names); the paths."""
    removed = []
    for sub, patterns in _TEMP_PATTERNS.items():
        folder = Path(run_dir) / sub
        for pattern in patterns:
            for p in folder.glob(pattern):
                if p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
    if removed:
        _logger.info("removed %d temporary file(s) left by a killed write: %s", len(removed), removed)
    return removed


def clear_run_outputs(run_dir: Path) -> list[str]:
    """Remove a previous run's files (:data:`zoo.run_layout.OUTPUTS` and temporary files) from ``run_dir``; their names."""
    run_dir = Path(run_dir)
    remove_temp_files(run_dir)
    removed = []
    for name in OUTPUTS:
        p = run_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(name)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """``RUN_DIR/.lock`` while a run writes its folder: created atomically (``O_EXCL``) with the writer's pid and
    host. A second run is refused with a message naming them; a lock left by a process that is gone (same host,
    pid not running) is taken over with one log line."""

    name = ".lock"

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / self.name
        self.held = False

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(3):  # a stale lock is removed, then created anew
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._remove_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise RunFolderError(f"{self.path} keeps reappearing: is another run starting in {self.path.parent}?")

    def _owner(self) -> dict[str, Any]:
        try:
            owner = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            owner = None
        if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
            raise RunFolderError(
                f"{self.path} is a lock file that names no process; if no run is writing {self.path.parent}, "
                "remove the file and start again"
            )
        return owner

    def _remove_if_stale(self) -> None:
        if self.path.is_symlink() and not self.path.exists():  # O_EXCL fails on it, and it reads as no file
            _logger.warning(
                "%s is a symbolic link to %s, which does not exist: no run holds it (a run's lock is a file naming "
                "its pid), taking it over",
                self.path,
                os.readlink(self.path),
            )
            self.path.unlink(missing_ok=True)
            return
        owner = self._owner()
        if not owner:  # released meanwhile
            return
        pid, host = owner["pid"], owner.get("host")
        if host == socket.gethostname() and not _pid_alive(pid):
            _logger.warning("%s was left by pid %d, which is no longer running: taking it over", self.path, pid)
            self.path.unlink(missing_ok=True)
            return
        raise RunFolderError(
            f"{self.path.parent} is being written by another run (pid {pid} on {host}; lock file {self.path}): "
            "wait for it to end or use another --output_dir"
            + ("" if host == socket.gethostname() else "; if that run is gone, remove the lock file")
        )

    def release(self) -> None:
        """Remove the lock if this process still holds it."""
        if not self.held:
            return
        self.held = False
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass


def check_model_name(name: str) -> None:
    """An unknown registry name fails before any data is read (Hub names and model folders resolve later)."""
    if not name.startswith(("hf-hub:", "local-dir:")) and not Path(name).is_dir():
        get_entry(name)


def check_sources(r: Recipe) -> None:
    """``init_from`` and the teacher name something loadable, checked before any data is read."""
    if r.init_from and not r.init_from.startswith(("hf-hub:", "local-dir:")) and not Path(r.init_from).is_dir():
        raise RecipeError(
            f"init_from {r.init_from} is not a folder: give a model folder (zoo publish / zoo prune --out), a "
            "training run folder, or hf-hub:ORG/NAME"
        )
    if r.distill is not None:
        try:
            check_teacher_name(r.distill)
        except DistillError as e:
            raise RecipeError(str(e)) from None


def run_dir_of(r: Recipe) -> Path:
    return Path(r.output_dir or "runs/run")


def run_export_dir(r: Recipe, run_dir: Path) -> Path:
    """Where a run writes its model folder: ``export.dir``, else the run folder's own (:data:`EXPORT`)."""
    return Path(r.export.dir) if r.export.dir else export_folder(run_dir)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (links resolved)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def checkpoint_from_elsewhere(resume: str, r: Recipe) -> bool:
    """Whether ``--resume PATH`` names a checkpoint outside the recipe's run folder (another run's)."""
    return resume != "auto" and not _inside(Path(resume), run_dir_of(r))


def _local_path(source: str | None) -> Path | None:
    """The file or folder a source names on this machine (``local-dir:`` stripped); None for a Hub repo, a
    registered name or nothing."""
    if not source or source.startswith("hf-hub:"):
        return None
    path = Path(source.removeprefix("local-dir:"))
    return path if path.exists() else None


def _sources(r: Recipe) -> list[tuple[str, str | None]]:
    """The recipe's keys that name something the run reads to start (weights, a teacher, a tokenizer)."""
    found = [("init_from", r.init_from), ("init_checkpoint", r.init_checkpoint), ("data.tokenizer", r.data.tokenizer)]
    if r.distill is not None:
        found += [("distill.teacher", r.distill.teacher), ("distill.teacher_weights", r.distill.teacher_weights)]
    return found


def check_sources_outside_run(r: Recipe, overwrite: bool) -> None:
    """A source of the run (init_from, its teacher, start weights, tokenizer) that is the run folder or lies
    inside it is refused before anything there is touched: the run writes (and ``--overwrite`` first removes)
    what the folder holds. Folder sources are read now, so that one that cannot be loaded fails before
    ``--overwrite`` removes anything."""
    run_dir = run_dir_of(r)
    for key, source in _sources(r):
        path = _local_path(source)
        if path is None:
            continue
        if _inside(path, run_dir):
            where = "is the run folder" if path.resolve() == run_dir.resolve() else "lies inside the run folder"
            fate = "--overwrite would remove it before it is read" if overwrite else "the run would write over it"
            raise RecipeError(
                f"{key} {source} {where} output_dir {run_dir}: {fate}. Copy it out first (e.g. cp -r {path} "
                f"{path.resolve().parent / (path.resolve().name + '_source')}) and name the copy, or use another "
                "--output_dir"
            )
        if key in ("init_from", "distill.teacher") and path.is_dir():
            _check_model_folder(key, source, path)


def _check_model_folder(key: str, source: str, path: Path) -> None:
    """A folder source is a model folder (config.json) or a run folder with its export; read it now."""
    if not (path / "config.json").is_file():
        if not is_run_folder(path):
            raise RecipeError(
                f"{key} {source} is not a model folder (it has no config.json): name a model folder (zoo publish, "
                "zoo prune --out, save_pretrained), a training run folder, or hf-hub:ORG/NAME"
            )
        if not (export_folder(path) / "config.json").is_file():
            raise RecipeError(
                f"{key} {source} is a training run folder without export/ (it ran with export.enabled false), "
                f"which {key} reads the model from: write its export with `zoo publish {path} --repo ORG/NAME "
                f"--no-push --out-dir {path / 'export'}`, then run again"
            )
    resolve_weight_source(source)  # config.json names a model the zoo builds (CheckpointError: a user error)


def _names(held: list[str]) -> str:
    return ", ".join(held[:6]) + (", ..." if len(held) > 6 else "")


class RunFolder:
    """A run's folder (``output_dir``) and checkpoints folder, claimed for the run by rank 0 and released at its end."""

    def __init__(self, recipe: Recipe, dstate: DistState):
        self.r, self.dstate = recipe, dstate
        self.run_dir = run_dir_of(recipe)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.lock = RunLock(self.run_dir)
        self.made_run_dir = False

    def claim(self, resume: str | None, overwrite: bool) -> None:
        """Rank 0 locks the run folder, refuses one that holds another run (unless resuming or overwriting) and
        removes what killed writes left; every rank learns the outcome."""
        run_dir = self.run_dir

        def claim():
            self.made_run_dir = not run_dir.exists()
            self.lock.acquire()
            held = sorted(p.name for p in run_dir.iterdir() if p.name != RunLock.name)
            if held and overwrite:
                _logger.warning("--overwrite: removing the previous run's %s", ", ".join(clear_run_outputs(run_dir)))
            elif held and resume and checkpoint_from_elsewhere(resume, self.r):
                raise RunFolderError(
                    f"--resume {resume} is a checkpoint from outside {run_dir}, which already holds files "
                    f"({_names(held)}): continue that checkpoint's run in its own folder (--resume auto there), "
                    "in an empty or new --output_dir, or replace what this folder holds with --overwrite"
                )
            elif held and resume == "auto" and not self.has_checkpoint():
                if (run_dir / WEIGHTS).exists() or (run_dir / METRICS).exists():
                    raise RunFolderError(
                        f"{run_dir} holds a finished run's results but no checkpoint to resume from; start anew "
                        "with --overwrite (its files are removed) or use another --output_dir"
                    )
                removed = clear_run_outputs(run_dir)  # a run killed before its first checkpoint: nothing to keep
                if removed:
                    _logger.info("no checkpoint in %s: removing %s of a run that saved none", self.ckpt_dir, removed)
            elif held and not resume:
                raise RunFolderError(
                    f"{run_dir} already holds files ({_names(held)}): "
                    "continue that run with --resume auto, replace it with --overwrite, or use another --output_dir"
                )
            remove_temp_files(run_dir)

        on_main(self.dstate, claim)

    def has_checkpoint(self) -> bool:
        return (self.ckpt_dir / "last.pt").is_file() or bool(find_checkpoints(self.ckpt_dir))

    def release(self) -> None:
        """Give the lock back; a run folder this run created and left empty (it failed early) is removed."""
        self.lock.release()
        if self.made_run_dir:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                self.run_dir.rmdir()

    def is_complete(self, ckpt: dict[str, Any]) -> bool:
        """Whether the folder holds this recipe's finished run: the final checkpoint, weights and metrics.json."""
        if not all((self.run_dir / n).is_file() for n in (WEIGHTS, METRICS, ARGS)):
            return False
        try:
            saved, resolved = load_run_args(self.run_dir)
        except RecipeError:
            return False
        same_recipe = dataclasses.replace(saved, output_dir=self.r.output_dir) == self.r  # the folder may have moved
        if ckpt.get("data_pruning") is not None:  # a pruned run's steps are known as it goes: its last epoch ended
            ended = int(ckpt["data_position"]["epoch"]) * int(resolved.get("steps_per_epoch") or 0)
            return same_recipe and ended >= int(resolved.get("total_steps") or 0) > 0
        return same_recipe and int(ckpt["step"]) == resolved.get("total_steps")

    def complete_summary(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        """The summary of a finished run found in the folder; nothing is written."""
        run_dir = self.run_dir
        paths = {n: str(run_dir / f) for n, f in (("weights", WEIGHTS), ("metrics", METRICS))}
        export = run_export_dir(self.r, run_dir)
        if self.r.export.enabled and export.is_dir():
            paths["export"] = str(export)
        metrics = json.loads((run_dir / METRICS).read_text())
        return {
            "run_dir": str(run_dir),
            "steps": int(ckpt["step"]),
            "metrics": metrics,
            "paths": paths,
            "complete": True,
        }


# Recipe keys a resumed run must share with its checkpoint: the model, and what made its training data (and a
# language model's tokenizer, which the run folder keeps).
_RESUME_KEYS = ("model", "model_kwargs", "task", "init_from")
_RESUME_DATA_KEYS = ("name", "train_split", "seq_len", "vocab_size", "val_fraction")
_RESUME_OPTIM_KEYS = ("opt",)  # another optimizer cannot take the saved one's state
# settings a resumed run may change, each said in one line: the batch (the data position is kept in samples'
# steps), the image size, the schedule
_RESUME_NOTICE = (("train", "batch_size"), ("train", "grad_accum"), ("data", "image_size"), ("sched", None))


def read_checkpoint(r: Recipe, resume: str | None, ckpt_dir: Path, main: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (``"auto"``: the last complete one), checked against the recipe."""
    if not resume:
        return None
    path = ckpt_dir / "last.pt" if resume == "auto" else Path(resume)
    if resume == "auto" and not path.is_file():  # killed between writing step_<N>.pt and linking last.pt
        path = latest_good_checkpoint(ckpt_dir) or path
    if resume == "auto" and not path.is_file():
        if main:
            print(f"no checkpoint in {ckpt_dir}: starting a new run", file=sys.stderr)
        return None
    ckpt = load_training_checkpoint(path)
    saved = ckpt.get("recipe", {})
    data = saved.get("data") or {}
    pairs = [(key, saved.get(key), getattr(r, key)) for key in _RESUME_KEYS]
    pairs += [(f"data.{key}", data.get(key), getattr(r.data, key)) for key in _RESUME_DATA_KEYS]
    optim = saved.get("optim") or {}
    pairs += [(f"optim.{key}", optim.get(key), getattr(r.optim, key)) for key in _RESUME_OPTIM_KEYS]
    # which samples each epoch trains on: a changed, added or removed data_pruning section is another run
    pruning = dataclasses.asdict(r.data_pruning) if r.data_pruning is not None else None
    if "data_pruning" in saved or pruning is not None:
        pairs += _section_pairs("data_pruning", saved.get("data_pruning"), pruning)
    for key, was, now in pairs:
        if was != now:
            raise RecipeError(
                f"checkpoint {path} was written by a run with {key}={was!r}, this recipe has {now!r}: resume "
                "with the run's value, or start a new run (--overwrite, or another --output_dir)"
            )
    if main:
        for line in resume_notices(saved, recipe_to_dict(r)):
            print(f"resuming {path}: {line}", file=sys.stderr)
    return ckpt


def resume_notices(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """One line for each setting a resume may change that differs from the checkpoint's run's recipe."""
    lines = []
    for section, key in _RESUME_NOTICE:
        was, new = saved.get(section) or {}, now.get(section) or {}
        for k in sorted({*was, *new}) if key is None else [key]:
            if k in was and was.get(k) != new.get(k):
                lines.append(f"{section}.{k} is {new.get(k)!r} now (the checkpoint's run had {was.get(k)!r})")
    return lines


def _section_pairs(name: str, was: dict | None, now: dict | None) -> list[tuple[str, Any, Any]]:
    """``(name.key, was, now)`` for each key of a recipe section (``(name, was, now)`` where either has none)."""
    if was is None or now is None:
        return [(name, was, now)]
    return [(f"{name}.{key}", was.get(key), now.get(key)) for key in sorted({*was, *now})]


def train_data_record(train_set, samples: int, classes: list[str] | None = None) -> dict[str, Any]:
    """What a resumed run must find again: the training samples, the class names in label order (a renamed class
    folder shifts every label after it), and the shards of a shard folder read by position (found through the
    wrappers' ``dataset`` or ``base``)."""
    record, ds = {"samples": int(samples)}, train_set
    if classes:
        record["classes"] = [str(c) for c in classes]
    for _ in range(8):
        if isinstance(getattr(ds, "files", None), list) and isinstance(getattr(ds, "samples", None), list):
            per_shard = [0] * len(ds.files)
            for sample in ds.samples:  # (shard, offset, size, label, member)
                per_shard[sample[0]] += 1
            record["shards"] = per_shard
            break
        ds = getattr(ds, "dataset", None) or getattr(ds, "base", None)
    return record


def describe_data(record: dict[str, Any], other: dict[str, Any]) -> str:
    """``record``'s counts; where both hold as many samples and shards, the first shard that differs."""
    shards, theirs = record.get("shards"), other.get("shards")
    text = f"{record.get('samples', 0):,} samples" + (f" in {len(shards):,} shards" if shards is not None else "")
    if shards and theirs and len(shards) == len(theirs) and record.get("samples") == other.get("samples"):
        i = next((i for i, (a, b) in enumerate(zip(shards, theirs)) if a != b), None)
        if i is not None:
            text += f" (shard {i}: {shards[i]} samples)"
    classes, others = record.get("classes"), other.get("classes")
    if classes is not None and classes != others:
        text += f" of {len(classes):,} classes"
        i = next((i for i, (a, b) in enumerate(zip(classes, others or [])) if a != b), None)
        if i is not None:
            text += f" (label {i}: {classes[i]!r})"
    return text
