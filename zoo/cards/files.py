"""The generated files (every card, the cards index, the table page): rendered in memory, written atomically when
they changed (:func:`write_all`), or compared with what is on disk (:func:`check`)."""

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

from .card import render_card
from .rows import collect, ordered
from .table import CARDS_DIR, TABLE_PAGE, render_cards_index, render_readme_table, replace_readme_table
from .text import GENERATED

PathLike = Union[str, "os.PathLike[str]"]


def render_all(rows: Sequence[dict[str, Any]], readme: str | None = None) -> dict[str, str]:
    """Every generated file, relative path -> content. ``readme`` is the current text of the table page to update
    (with ``None`` the page is left out); a page without exactly one marker block raises ``ValueError``."""
    files = {f"{CARDS_DIR}/{row['name']}.md": render_card(row) for row in ordered(rows)}
    files[f"{CARDS_DIR}/README.md"] = render_cards_index(rows)
    if readme is not None:
        files[TABLE_PAGE] = replace_readme_table(readme, render_readme_table(rows))
    return files


# ------------------------------------------------------------------------------------------------------------------
# Files


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _stale_cards(root: Path, expected: dict[str, str]) -> list[str]:
    """Generated cards (they carry the GENERATED line) of models that are no longer registered."""
    stale = []
    for path in sorted((root / CARDS_DIR).glob("*.md")):
        rel = f"{CARDS_DIR}/{path.name}"
        if rel not in expected and GENERATED in (_read(path) or ""):
            stale.append(rel)
    return stale


def write_all(root: PathLike = ".", rows: Sequence[dict[str, Any]] | None = None) -> list[str]:
    """Write every card, the cards index and the model table under ``root``; returns the files that changed.

    ``rows`` (from :func:`collect`) default to every registered model, profiled now. Files whose content is
    already right are not touched; cards of models no longer registered are removed.
    """
    root = Path(root)
    readme = _read(root / TABLE_PAGE)
    if readme is None:
        raise FileNotFoundError(f"no {TABLE_PAGE} under {root}")
    # render everything first: a table page without its markers fails here, before anything is written
    expected = render_all(collect() if rows is None else rows, readme)
    changed = []
    for rel, text in expected.items():
        if _read(root / rel) != text:
            _atomic_write(root / rel, text)
            changed.append(rel)
    for rel in _stale_cards(root, expected):
        (root / rel).unlink()
        changed.append(rel)
    return sorted(changed)


def check(root: PathLike = ".", rows: Sequence[dict[str, Any]] | None = None) -> list[str]:
    """Regenerate in memory; the files under ``root`` whose content differs (or that are missing or stale).

    An empty list means the cards and the model table are in sync with the code. ``root`` needs the table page
    (with the table markers) and ``model_cards/``; ``rows`` as in :func:`write_all`.
    """
    root = Path(root)
    rows = collect() if rows is None else rows
    expected = render_all(rows)
    differ = [rel for rel, text in expected.items() if _read(root / rel) != text]
    readme = _read(root / TABLE_PAGE)
    try:
        if readme is None or replace_readme_table(readme, render_readme_table(rows)) != readme:
            differ.append(TABLE_PAGE)
    except ValueError:  # markers missing or duplicated
        differ.append(TABLE_PAGE)
    return sorted(differ + _stale_cards(root, expected))
