"""Training checkpoints: atomic writes, integrity checks, safe loading, a full disk named.

A checkpoint is one ``torch.save`` dict of tensors, numbers, strings, lists and dicts only (so it loads with
``torch.load(weights_only=True)``): model, optimizer, scheduler, grad scaler, EMA, sparsity state, RNG states
(python, numpy, torch, CUDA), the data position and the recipe. It carries a sha256 digest of its own contents;
a file whose digest does not match (flipped bytes, a truncated copy) is refused with a message naming it.

Writes go to a temporary file in the same folder, are flushed to disk, then renamed over the target
(``os.replace``), so a run killed mid-write leaves the previous checkpoint in place; the temporary files such a
kill leaves behind are removed when the next run into the folder starts
(:func:`zoo.train.run_folder.remove_temp_files`, beside the run's lock). A write that finds the disk full raises
:class:`DiskFullError`, naming the file and the space left.
"""

import contextlib
import errno
import hashlib
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointCorruptError",
    "DiskFullError",
    "capture_rng_state",
    "disk_full_message",
    "find_checkpoints",
    "latest_good_checkpoint",
    "load_training_checkpoint",
    "naming_full_disk",
    "restore_rng_state",
    "save_training_checkpoint",
    "write_text_atomic",
]

_logger = logging.getLogger(__name__)
FORMAT = "zoo-train-checkpoint"
VERSION = 1


class CheckpointCorruptError(RuntimeError):
    """A checkpoint that is partial, corrupt or not a zoo training checkpoint."""


class DiskFullError(OSError):
    """No space left on the device while writing one of a run's files; the message names the file and the space
    left."""

    def __str__(self) -> str:
        return self.strerror


def _free_space(path: Path) -> str:
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown space"
    return f"{free / 2**20:.1f} MiB" if free < 2**30 else f"{free / 2**30:.2f} GiB"


def disk_full_message(path: Path) -> str:
    """What to tell a user whose disk filled up while ``path`` was written."""
    return (
        f"no space left on the device while writing {path} ({_free_space(path)} free there): free some space "
        "(or set output_dir on another disk), then continue with --resume auto"
    )


def _is_disk_full(e: BaseException | None) -> bool:
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if f"(os error {errno.ENOSPC})" in str(e):  # safetensors' writer reports the OS error in its message
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def naming_full_disk(path: Path):
    """Turn a full disk met while writing ``path`` (torch and safetensors report it in their own ways) into a
    :class:`DiskFullError` that names ``path`` and the free space; other errors pass through unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:  # re-raised unless the disk is full (torch wraps that in a RuntimeError)
        if not _is_disk_full(e):
            raise
        raise DiskFullError(errno.ENOSPC, disk_full_message(path), str(path)) from e


def _digest_update(h, obj: Any):
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for k in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            h.update(repr(k).encode())
            _digest_update(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d" % len(obj))
        for v in obj:
            _digest_update(h, v)
    else:
        h.update(repr(obj).encode())


def state_digest(state: dict[str, Any]) -> str:
    h = hashlib.sha256()
    _digest_update(h, {k: v for k, v in state.items() if k != "sha256"})
    return h.hexdigest()


def capture_rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]):
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: dict[str, Any], path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with naming_full_disk(path), open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save_training_checkpoint(state: dict[str, Any], ckpt_dir: Path, step: int, keep: int = 2) -> Path:
    """Write ``step_<step>.pt`` and ``last.pt`` atomically; keep the newest ``keep`` step files."""
    ckpt_dir = Path(ckpt_dir)
    state = dict(state, format=FORMAT, version=VERSION, step=int(step))
    state["sha256"] = state_digest(state)
    step_path = ckpt_dir / f"step_{step}.pt"
    _atomic_save(state, step_path)
    last = ckpt_dir / "last.pt"
    tmp = ckpt_dir / f".last.pt.link.{os.getpid()}"
    try:  # last.pt is a second name for the same file, swapped in atomically
        tmp.unlink(missing_ok=True)
        os.link(step_path, tmp)
        os.replace(tmp, last)
    except OSError:
        tmp.unlink(missing_ok=True)
        _atomic_save(state, last)
    old = find_checkpoints(ckpt_dir)
    for p in old[:-keep] if keep > 0 else old:
        if p != step_path:
            p.unlink(missing_ok=True)
    return step_path


def find_checkpoints(ckpt_dir: Path) -> list[Path]:
    """``step_<N>.pt`` files, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    found = []
    for p in ckpt_dir.glob("step_*.pt"):
        m = re.fullmatch(r"step_(\d+)\.pt", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def _read(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip, a pickle with code in it, a file that is not a checkpoint
        raise CheckpointCorruptError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointCorruptError(f"{path} is not a zoo training checkpoint")
    if state.get("sha256") != state_digest(state):
        raise CheckpointCorruptError(
            f"checkpoint {path} is corrupt: its contents do not match the sha256 digest written with it"
        )
    return state


def latest_good_checkpoint(ckpt_dir: Path, exclude: Path | None = None) -> Path | None:
    """The newest ``step_<N>.pt`` that reads back and passes its digest check."""
    for p in reversed(find_checkpoints(ckpt_dir)):
        if exclude is not None and p.resolve() == Path(exclude).resolve():
            continue
        try:
            _read(p)
            return p
        except CheckpointCorruptError:
            continue
    return None


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """Read and verify a training checkpoint; a bad one raises :class:`CheckpointCorruptError` naming the file
    and, when there is one, the newest good checkpoint beside it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return _read(path)
    except CheckpointCorruptError as e:
        good = latest_good_checkpoint(path.parent, exclude=path)
        hint = (
            f" The newest good checkpoint is {good}: resume from it with --resume {good}."
            if good
            else " No good checkpoint was found beside it."
        )
        raise CheckpointCorruptError(f"{e}; refusing to resume from it.{hint}") from None


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file whole or not at all (a temporary file renamed over ``path``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with naming_full_disk(path):
            tmp.write_text(text, newline="")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
