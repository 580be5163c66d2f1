"""The one timing harness every comparison uses.

* :func:`time_interleaved` times the candidates in rounds whose order alternates (A, B, then B, A, ...), so that
  load from other work on a shared machine hits all of them alike, after warm-up passes; medians are reported.
* :func:`default_runs` is the one run-count rule: 20 timed passes at batch 1, scaling down with the square root
  of the batch to at least 5 (``base`` and ``floor`` shift it for slow comparisons).
* :class:`Row` is the one result type (a candidate against its peer on one model and setting) and
  :func:`format_rows` the one table; :func:`environment` describes the machine the figures come from.
* :func:`provenance` heads a results file (``results/*.json``: date, commit, machine, CPU, cores, threads, the
  peers' library versions, load); :func:`save_results` writes one atomically and :func:`merge_rows` keeps an
  earlier run's rows that a new run did not measure again (each with its own provenance).
"""

import contextlib
import datetime
import fcntl
import functools
import importlib.metadata
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn
from tqdm import tqdm

from .._version import __version__
from ..data.text import write_atomic
from ..platform.machine import cpu_model

__all__ = [
    "Phases",
    "Row",
    "default_runs",
    "environment",
    "format_rows",
    "library_versions",
    "merge_rows",
    "one_writer",
    "peer_row",
    "print_header",
    "report",
    "provenance",
    "randomize_",
    "results_lock",
    "save_results",
    "time_interleaved",
    "write_json",
]

SEED = 0


@dataclass
class Row:
    """One figure: ``candidate`` against ``peer`` on ``model`` in one ``setting`` (e.g. ``batch 32``)."""

    model: str
    setting: str
    peer: str
    candidate: str
    unit: str  # of the rates: img/s, tok/s
    peer_rate: float
    rate: float
    runs: int
    target: float | None = None  # the ratio the zoo aims for, if any
    max_abs_diff: float | None = None  # outputs against the peer's, on the same input
    rel_diff: float | None = None  # max_abs_diff / max |peer output|
    extra: dict[str, Any] = field(default_factory=dict)  # comparison-specific figures, printed as columns
    times_s: dict[str, list[float]] = field(default_factory=dict, repr=False)  # every timed pass

    @property
    def ratio(self) -> float:
        return self.rate / self.peer_rate

    @property
    def meets_target(self) -> bool:
        return self.target is None or self.ratio >= self.target


def peer_row(
    model: str,
    setting: str,
    peer: str,
    candidate: str,
    unit: str,
    peer_side: float | dict[str, list[float]],
    side: float | dict[str, list[float]],
    runs: int,
    target: float | None = None,
    *,
    work: float = 1,
    per: float = 1,
    phase: str = "total",
    max_abs_diff: float | None = None,
    rel_diff: float | None = None,
    extra: dict[str, Any] | None = None,
    times_s: dict[str, list[float]] | None = None,
) -> Row:
    """``candidate`` against ``peer``: a side is its rate (a float, as measured) or its timed passes
    (:func:`time_interleaved`'s ``{phase: seconds}``), whose rate is ``work / median seconds of phase`` (``/ per``:
    per worker). ``times_s`` defaults to the timed sides' passes of ``phase`` (peer first)."""
    timed = {name: s for name, s in ((peer, peer_side), (candidate, side)) if not isinstance(s, (int, float))}
    if times_s is None:
        times_s = {name: s[phase] for name, s in timed.items()} if len(timed) == 2 else {}
    return Row(
        model,
        setting,
        peer,
        candidate,
        unit,
        _rate(peer_side, work, per, phase),
        _rate(side, work, per, phase),
        runs,
        target,
        max_abs_diff,
        rel_diff,
        extra={} if extra is None else extra,
        times_s=times_s,
    )


def _rate(side: float | dict[str, list[float]], work: float, per: float, phase: str) -> float:
    if isinstance(side, (int, float)):
        return side
    rate = work / median(side, phase)
    return rate / per if per != 1 else rate


def default_runs(batch_size: int, base: int = 20, floor: int = 5) -> int:
    """Timed passes per candidate: ``base`` at batch 1, ``base / sqrt(batch)`` beyond, at least ``floor``."""
    return max(floor, round(base / math.sqrt(batch_size)))


class Phases(dict):
    """What a candidate that times its own phases returns: ``Phases(prefill=seconds, decode=seconds)``."""


def _seconds(fn: Callable[[], Any]) -> dict[str, float]:
    start = time.perf_counter()
    result = fn()
    total = time.perf_counter() - start
    return dict(result) if isinstance(result, Phases) else {"total": total}


def time_interleaved(
    fns: dict[str, Callable[[], Any]], runs: int, warmup: int = 1, desc: str = "", grad: bool = False
) -> dict[str, dict[str, list[float]]]:
    """``{label: {phase: [seconds per round]}}`` of every candidate over ``runs`` rounds of alternating order.

    A candidate is timed as a whole (phase ``"total"``) unless it returns :class:`Phases`, its own phase
    timings (e.g. ``Phases(prefill=s, decode=s)``). ``warmup`` untimed passes of each come first. They run under
    ``torch.inference_mode`` unless ``grad`` (training steps).
    """
    labels = list(fns)
    with contextlib.nullcontext() if grad else torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        times: dict[str, dict[str, list[float]]] = {label: {} for label in labels}
        rounds = tqdm(range(runs), desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True, disable=not desc)
        for i in rounds:
            for label in labels if i % 2 == 0 else labels[::-1]:
                for phase, seconds in _seconds(fns[label]).items():
                    times[label].setdefault(phase, []).append(seconds)
    return times


def median(times: dict[str, list[float]], phase: str = "total") -> float:
    return statistics.median(times[phase])


def output_diff(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """``max_abs_diff`` and ``rel_diff`` (relative to the peer's output scale) of two outputs."""
    diff = (out.float() - ref.float()).abs().max().item()
    return {"max_abs_diff": diff, "rel_diff": diff / max(ref.float().abs().max().item(), 1e-30)}


def environment(**extra: str) -> dict[str, str]:
    """Versions, threads, CPU and the machine's load at the start (other work skews timings); with ``device`` a
    CUDA device (``cuda``, ``cuda:1``), also the GPU's name and the CUDA version torch was built with."""
    device = extra.get("device", "cpu")
    gpu = {}
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = {"gpu": torch.cuda.get_device_name(torch.device(device)), "cuda": str(torch.version.cuda)}
    return {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "zoo": __version__,
        "python": platform.python_version(),
        "threads": str(torch.get_num_threads()),
        "cpu": cpu_model(),
        "load": " ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1/5/15-min load average)",
        **gpu,
        **extra,
    }


# the libraries the figures depend on: the zoo's own stack and the peers it is timed against
LIBRARIES = ("torch", "timm", "transformers", "onnxruntime", "llama_cpp_python", "executorch", "numpy")


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """``{distribution: version}`` of those of ``names`` that are installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _commit() -> str:
    """The zoo checkout's short commit, ``+`` when its tracked files differ from it, where the package runs from its
    own checkout (an editable install); else the package version (an installed wheel: a git repository that merely
    holds the environment is another project's, not the zoo's)."""
    folder = Path(__file__).parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                             check=False, cwd=folder).stdout.strip()  # fmt: skip
        own = bool(top) and Path(top).resolve() == folder.parent.parent.resolve()
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=False, cwd=folder).stdout.strip() if own else ""  # fmt: skip
        if head:
            dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "."], capture_output=True,
                                   check=False, cwd=folder.parent).returncode  # fmt: skip
            return head + ("+" if dirty == 1 else "")
    except OSError:
        pass
    return f"zoo {__version__}"


def provenance(machine: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Date, commit, machine, CPU, cores, threads, library versions and load at the start, for a results file's
    head (``machine``: how to describe it; default: the architecture and torch's thread count; ``device``: where
    the run computed, its GPU named when it is a CUDA device). A checkout whose package files differ from its commit
    says so with a ``+`` after the commit."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "machine": machine or f"{platform.machine()}, {torch.get_num_threads()} threads",
        **environment(**({} if device == "cpu" else {"device": device})),
        "cores": str(os.cpu_count() or 1),
        "versions": library_versions(),
    }


def save_results(path: Path, doc: dict[str, Any]) -> None:
    """Write a results file atomically (a temporary file beside it, then renamed); a write that fails (a full disk)
    leaves the file as it was and no temporary file."""
    write_atomic(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


@contextlib.contextmanager
def results_lock(path: Path):
    """One writer at a time in ``path``'s folder: an exclusive ``flock`` on the folder itself (nothing is left
    beside the files), held from reading a results file to writing it back, so that two runs merging rows into one
    file keep each other's rows."""
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and the lock with it


def one_writer(write: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """A ``write_results(path, ...)`` (read, merge, write back) run under :func:`results_lock`."""

    @functools.wraps(write)
    def locked(path: Path, *args: Any, **kwargs: Any) -> dict[str, Any]:
        with results_lock(path):
            return write(path, *args, **kwargs)

    return locked


def load_results(path: Path) -> dict[str, Any]:
    """A results file's content, ``{}`` when there is none yet.

    :raises ValueError: the file is not a JSON object."""
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON ({e}); move it away or fix it") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path} holds no results object; move it away or fix it")
    return doc


# each results file's kind, known by its sections: a run writes only into a file of its own kind (or a new one)
_KIND_SECTIONS = {
    "train": ("train_step",),  # results/train_throughput.json (zoo bench train)
    "formats": ("quality", "pte", "unit"),  # results/lm_decode.json (zoo bench formats)
    "compress": ("prune_latency",),  # results/compress.json
}
RESULTS_KINDS = ("train", "deployed", "formats")


def results_kind(doc: dict[str, Any]) -> str | None:
    """The kind of a results document: ``train``, ``formats``, ``compress`` or ``deployed`` (its ``runs`` hold
    ``rows``); None for an empty one."""
    for kind, sections in _KIND_SECTIONS.items():
        if any(s in doc for s in sections):
            return kind
    runs = doc.get("runs")
    if isinstance(runs, list) and runs:
        return "formats" if any(isinstance(r, dict) and "formats" in r for r in runs) else "deployed"
    return None


def check_results_file(path: Path, kind: str) -> None:
    """ValueError, before anything is measured, when ``path`` holds results of another kind than ``kind`` (a run
    merges into its own kind's file; it never rewrites another's), or is no results object, or is a symbolic link
    (the file is replaced whole when written: the link would go and what it points to stay as it was)."""
    if path.is_symlink():
        raise ValueError(
            f"--out {path} is a symbolic link to {os.readlink(path)}: name the file it points to (a results file is "
            "replaced whole when written, which would replace the link and leave that file as it was)"
        )
    found = results_kind(load_results(path))
    if found not in (None, kind):
        raise ValueError(
            f"{path} holds {found} results; --out of a --{kind} run takes a {kind} results file (or a new one), "
            "nothing was measured"
        )


def merge_rows(
    old_rows: Sequence[dict[str, Any]],
    old_head: dict[str, Any],
    new_rows: Sequence[dict[str, Any]],
    key: Callable[[dict[str, Any]], Any],
) -> list[dict[str, Any]]:
    """The earlier run's rows with those whose ``key`` the new run measured replaced in place, then the new run's
    other rows. A kept row carries the run that measured it: its own ``provenance``, else ``old_head`` (the
    earlier file's ``provenance`` and ``command``)."""
    fresh = {key(r): r for r in new_rows}
    out, placed = [], set()
    for r in old_rows:
        k = key(r)
        if k in fresh:
            if k not in placed:
                out.append(fresh[k])
                placed.add(k)
        else:
            out.append(r if "provenance" in r or not old_head else {**r, **old_head})
    return out + [r for k, r in fresh.items() if k not in placed]


def merge_run(
    path: Path,
    rows: Sequence[dict[str, Any]],
    prov: dict[str, Any],
    command: str,
    key: Callable[[dict[str, Any]], Any],
) -> None:
    """Merge one run's ``rows`` into the ``rows`` of the results file at ``path``, under its lock: each new row
    carries the run's ``provenance`` and ``command``; an earlier row with the same ``key`` is replaced, the others
    keep their own run's (:func:`merge_rows`); the file's head becomes this run's."""
    with results_lock(path):
        old = load_results(path)
        head = {k: old[k] for k in ("provenance", "command") if k in old}
        new = [dict(r, provenance=prov, command=command) for r in rows]
        merged = merge_rows(old.get("rows", []), head, new, key)
        save_results(path, {"provenance": prov, "command": command, "rows": merged})


def command_line(default: str, argv: Sequence[str] | None = None) -> str:
    """The command that produced a results file: ``default`` followed by ``argv`` (default: this process's)."""
    return " ".join([default, shlex.join(list(sys.argv[1:] if argv is None else argv))]).strip()


def print_header(title: str, env: dict[str, str], notes: Sequence[str] = ()) -> None:
    print(title)
    for key, value in env.items():
        print(f"  {key:<12} {value}")
    for note in notes:
        print(f"  {note}")
    print(flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.2e}" if (value != 0 and abs(value) < 1e-2) else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_rows(rows: Sequence[Row]) -> str:
    """The one results table: model, setting, peer and candidate rates, ratio against target, differences, extras."""
    extras = list(dict.fromkeys(k for r in rows for k in r.extra))
    header = ["model", "setting", "peer", "peer rate", "candidate", "rate", "ratio", "target", "max|d|", "rel", *extras]
    table = []
    for r in rows:
        digits = 1 if round(r.target or 0, 1) == r.target else 2
        target = "-" if r.target is None else f">={r.target:.{digits}f}x {'ok' if r.meets_target else 'MISS'}"
        diff = ["-" if v is None else f"{v:.2e}" for v in (r.max_abs_diff, r.rel_diff)]
        table.append(
            [
                r.model,
                r.setting,
                r.peer,
                f"{r.peer_rate:,.2f} {r.unit}",
                r.candidate,
                f"{r.rate:,.2f} {r.unit}",
                f"{r.ratio:.2f}x",
                target,
                *diff,
                *(_fmt(r.extra[k]) if k in r.extra else "-" for k in extras),
            ]
        )
    widths = [max(len(line[i]) for line in (header, *table)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in (0, 1, 2, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, table)])


def report(rows: Sequence[Row], notes: Sequence[str], json_path: Path | None, env: dict[str, str], **config) -> None:
    """The table, its notes, and the JSON file when one was asked for."""
    print(format_rows(rows))
    for note in notes:
        print(note)
    write_json(json_path, env, rows, **config)


def write_json(path: Path | None, env: dict[str, str], rows: Sequence[Row], **config: Any) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    results = [{**asdict(r), "ratio": r.ratio} for r in rows]
    path.write_text(json.dumps({"environment": env, "config": config, "results": results}, indent=2) + "\n")
    print(f"wrote {path}")


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = SEED) -> nn.Module:
    """Deterministic random weights of realistic scale, in place, parameters visited in name order: matrices
    ``N(0, 1/fan_in)``, embeddings ``N(0, 0.2^2)``, biases ``0.05 N(0, 1)``, other vectors (norm weights, scales)
    ``1 + 0.1 N(0, 1)``. Returns the model."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda item: item[0]):
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if name.endswith("bias"):
            p.copy_(0.05 * noise)
        elif p.ndim <= 1:
            p.copy_(1.0 + 0.1 * noise)
        elif "embed" in name and p.ndim == 2:
            p.copy_(0.2 * noise)
        else:
            p.copy_(noise / math.sqrt(p[0].numel()))
    return model
