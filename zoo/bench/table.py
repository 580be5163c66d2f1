"""The zoo's model table: params, MACs, latency/throughput on this machine and the paper's top-1, per model.

``zoo bench table --family metaformer --csv out.csv`` (or ``--all``) builds it with :func:`zoo.profile` model by
model, prints it as it goes (with a progress bar), writes CSV and, with ``--plot``, the trade-off picture.
"""

import argparse
import csv
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..layers.args import add_device
from ..profile import profile
from ..registry import list_models, model_info
from .options import add_common
from .plot import plot_tradeoffs

__all__ = ["COLUMNS", "add_arguments", "collect_rows", "format_rows", "run", "run_table", "write_csv"]

COLUMNS = [
    "model",
    "family",
    "series",
    "params",
    "gmacs",
    "top1",
    "batch_size",
    "latency_ms",
    "images_per_s",
    "input_size",
    "device",
    "threads",
    "torch",
]


def series_of(name: str) -> str:
    """Model series within a family: the first word of the name (``caformer_s18`` -> ``caformer``)."""
    return name.split("_", 1)[0]


def collect_rows(
    names: Sequence[str],
    batch_sizes: Sequence[int] = (1,),
    device: str = "cpu",
    runs: int = 10,
    warmup: int = 2,
    channels_last: bool = False,
    show: bool = True,
) -> list[dict[str, Any]]:
    """Profile every model (MACs at batch 1, latency per batch size) and return one row per (model, batch)."""

    rows: list[dict[str, Any]] = []
    bar = tqdm(names, unit="model", file=sys.stderr, dynamic_ncols=True, disable=not show)
    for name in bar:
        bar.set_description(name)
        result = profile(
            name,
            latency=True,
            batch_sizes=batch_sizes,
            device=device,
            runs=runs,
            warmup=warmup,
            channels_last=channels_last,
        )
        info = model_info(name)
        for timing in result.latency:
            row = dict(
                model=name,
                family=info["family"],
                series=series_of(name),
                params=result.params,
                gmacs=round(result.macs / 1e9, 3),
                top1=info["reference"].get("top1"),
                batch_size=timing["batch_size"],
                latency_ms=round(timing["median_ms"], 2),
                images_per_s=round(timing["throughput"], 1),
                input_size="x".join(str(s) for s in result.input_size[1:]),
                device=result.device,
                threads=torch.get_num_threads(),
                torch=torch.__version__,
            )
            rows.append(row)
            bar.write(format_rows([row], header=len(rows) == 1))
    return rows


def format_rows(rows: Sequence[dict[str, Any]], header: bool = True) -> str:
    cols = [
        ("model", 20),
        ("params", 12),
        ("gmacs", 8),
        ("top1", 6),
        ("batch_size", 6),
        ("latency_ms", 11),
        ("images_per_s", 13),
    ]
    titles = {
        "gmacs": "GMACs",
        "top1": "top-1",
        "batch_size": "batch",
        "latency_ms": "latency ms",
        "images_per_s": "img/s",
    }
    lines = []
    if header:
        lines.append("".join(titles.get(c, c).rjust(w) if c != "model" else c.ljust(w) for c, w in cols))
    for row in rows:
        cells = []
        for c, w in cols:
            v = row[c]
            text = f"{v:,}" if c == "params" else ("-" if v is None else str(v))
            cells.append(text.ljust(w) if c == "model" else text.rjust(w))
        lines.append("".join(cells))
    return "\n".join(lines)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write the rows as CSV atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``zoo bench table``: the model table of a family (``--family``) or of every model (``--all``, the default)."""
    add_common(parser, "only these of the family's models (comma-separated)")
    parser.add_argument("--family", default=None, help="profile every model of this family")
    parser.add_argument("--all", action="store_true", help="profile every registered model (without --family)")
    parser.add_argument("--csv", type=Path, default=None, metavar="PATH", help="write the table as CSV")
    parser.add_argument("--plot", type=Path, default=None, metavar="PATH", help="the top-1 vs cost picture (PNG)")
    add_device(parser)
    parser.add_argument("--channels-last", action="store_true", help="channels-last inputs and weights")


def run(args: argparse.Namespace) -> int:
    """``zoo bench table``: build, print, and write the model table (and plot)."""
    args.models_given = args.models is not None
    return run_table(args)


def run_table(args) -> int:
    """Build, print, and write the model table (and plot) of ``args.family`` (None: every model)."""

    names = list_models(family=args.family, task="image-classification")  # LMs: zoo bench lm --models NAME
    if args.models_given:
        names = [n for n in names if n in args.models]
    print(
        f"model table: {len(names)} models, {args.device}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; MACs via fvcore at batch 1; latency = median of {args.runs or 10} runs",
        flush=True,
    )
    rows = collect_rows(
        names,
        batch_sizes=args.batch_sizes or [1],
        device=args.device,
        runs=args.runs or 10,
        warmup=args.warmup,
        channels_last=args.channels_last,
    )
    if args.csv:
        print(f"wrote {write_csv(rows, args.csv)}")
    if args.plot:
        print(f"wrote {plot_tradeoffs(rows, args.plot)}")
    return 0
