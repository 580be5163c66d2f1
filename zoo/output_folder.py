"""Output folders of the commands that write one (``zoo export``, ``zoo prune``): which folders they may write, and
writing one whole.

A command writes into a folder that is new or empty, or that holds only a previous output of the same command
(then replaced whole), and never into the folder it reads from. The folder is written beside the target, in a
hidden temporary folder of the same parent, and swapped in with one rename, so that a reader sees the old output or
the new one, never a mix; a kill leaves the target as it was, and the leftover temporary folder is removed by the
next write beside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

__all__ = ["OutputFolderError", "check_output_folder", "write_folder"]

T = TypeVar("T")


class OutputFolderError(ValueError):
    """An output folder the command may not write: the message names it, says why and what to do."""


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_folder(
    out: str | os.PathLike,
    command: str,
    *,
    sources: Iterable[str | os.PathLike | None] = (),
    previous: Callable[[Path], bool] = lambda folder: False,
    what: str = "output",
) -> Path:
    """The absolute path of ``out`` if ``command`` may write it: a new folder (its parent writable), an empty one,
    or one ``previous(folder)`` recognises as the command's own earlier output; never a file, an unwritable place,
    a folder the ``sources`` lie in, or a folder holding other files. Raises :class:`OutputFolderError`."""
    folder = Path(os.path.abspath(os.fspath(out)))
    for source in sources:
        if source is None:
            continue
        src = Path(os.path.abspath(os.fspath(source)))
        if _within(src, folder) or _within(src.resolve(), folder.resolve()):
            raise OutputFolderError(
                f"--out {out} is where {command} reads {src} from: writing it would replace the source; "
                "give a new or empty folder"
            )
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"--out {out} is a file, not a folder; give a new or empty folder")
    parent = folder.parent
    if not parent.is_dir():
        # mkdir -p of the missing parents happens at write time; the first existing ancestor must be writable
        parent = next((p for p in folder.parents if p.exists()), Path("/"))
        if not parent.is_dir():
            raise OutputFolderError(
                f"--out {out}: {parent} is a file, so no folder can be made under it; give a folder path whose parents are folders"
            )
    if not os.access(parent, os.W_OK | os.X_OK) or (folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK)):
        place = folder if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK) else parent
        raise OutputFolderError(f"--out {out}: {place} is not writable; give a folder you can write")
    try:  # the test that counts (root passes os.access everywhere): a folder can be made where it will be
        tempfile.TemporaryDirectory(dir=folder if folder.is_dir() else parent, prefix=".zoo-probe-").cleanup()
    except OSError as e:
        raise OutputFolderError(
            f"cannot write the output folder {folder}: {e.strerror or e}; give a folder you can write"
        ) from None
    if folder.is_dir():
        entries = [p.name for p in folder.iterdir()]
        if entries and not previous(folder):
            shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
            raise OutputFolderError(
                f"--out {out} holds other files ({shown}) and is not a previous {command} {what}, which would be "
                "replaced whole; give a new or empty folder"
            )
    return folder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(parent: Path, name: str) -> None:
    """Temporary folders of writes of ``name`` in ``parent`` whose process is gone (killed mid-write)."""
    for leftover in parent.glob(f".{name}.*-*"):
        kind, _, rest = leftover.name[len(name) + 2 :].partition("-")
        pid = rest.split("-", 1)[0]
        if kind in ("writing", "old") and pid.isdigit() and not _pid_alive(int(pid)) and leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def write_folder(folder: Path, write: Callable[[Path], T]) -> T:
    """``write(tmp)`` fills a temporary folder beside ``folder``, which then replaces ``folder`` in one rename (an
    old ``folder`` moved aside first and removed after). A failed ``write`` leaves ``folder`` as it was. Where
    ``folder`` is the working directory (``--out .``), which cannot be renamed under the shell, its entries are
    replaced one by one instead, the last written file of ``write`` last."""
    folder = Path(os.path.abspath(folder))
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(folder.parent, folder.name)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.writing-{os.getpid()}-"))
    except OSError as e:
        raise OutputFolderError(
            f"cannot write the output folder {folder}: {e.strerror or e} in {folder.parent}; give a folder you can "
            "write"
        ) from None
    try:
        result = write(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; an output folder gets the usual mode
        if folder.is_dir() and _within(Path.cwd(), folder):
            _replace_entries(folder, tmp)
        elif folder.is_dir():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-{os.getpid()}-"))
            os.replace(folder, old / "previous")
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_entries(folder: Path, tmp: Path) -> None:
    """``folder``'s entries replaced by ``tmp``'s (the folder itself stays: it is the working directory)."""
    for entry in list(folder.iterdir()):
        if not (tmp / entry.name).exists():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    names = sorted(p.name for p in tmp.iterdir())
    for name in sorted(names, key=lambda n: n in ("export.json", "prune.json")):  # the record last
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp / name, target)
