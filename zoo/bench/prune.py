"""Dense against pruned: CPU (or CUDA) throughput of a model and of its copy pruned to half its MACs (``zoo.prune``),
side by side in interleaved rounds (:mod:`zoo.bench.harness`), at batch 1 and 32.

    zoo bench prune                                      # poolformer_s12, convformer_s18, slak_tiny
    zoo bench prune --models convformer_s18 --batch-sizes 1,32,128 --device cuda --json out.json

The issue's target: batch-32 latency of the pruned model at most 0.6x the dense model's (rate >= 1.67x). Weights are
deterministic random ones of realistic scale (:func:`~zoo.bench.harness.randomize_`): the widths, not the values,
decide the speed. SLaK runs in its inference form (``deploy=True``: the fused large kernels). MACs are counted at
the input size timed; widths are rounded to multiples of ``--round-to`` (8).

``--out results/compress.json`` writes the run as that file's ``prune_latency`` section (:func:`write_results`;
the batch sizes must include 1 and 32): the rows of the models it measured replace theirs, the file's other sections
stay.
"""

import argparse
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..compress import IMPORTANCES, prune
from ..factory import create_model
from ..layers.args import add_device
from ..profile import count_params
from .harness import (
    Row,
    check_results_file,
    default_runs,
    environment,
    format_rows,
    load_results,
    median,
    merge_rows,
    one_writer,
    peer_row,
    print_header,
    provenance,
    randomize_,
    save_results,
    time_interleaved,
    write_json,
)
from .options import recorded_command, usage_error

__all__ = ["MODELS", "prune_rows", "result_rows", "write_results"]

# name -> builder arguments of the form that is timed
MODELS: dict[str, dict] = {"poolformer_s12": {}, "convformer_s18": {}, "slak_tiny": {"deploy": True}}
BATCH32_TARGET = 1 / 0.6  # pruned at <= 0.6x the dense latency


def prune_rows(
    models: Sequence[str] = tuple(MODELS),
    batch_sizes: Sequence[int] = (1, 32),
    target_macs: float = 0.5,
    round_to: int | None = 8,
    importance: str = "magnitude",
    input_size: Sequence[int] = (3, 224, 224),
    runs: int | None = None,
    warmup: int = 2,
    device: str = "cpu",
    model_kwargs: dict | None = None,
) -> list[Row]:
    """One row per model and batch size: the dense model (peer) against its pruned copy (candidate);
    ``model_kwargs`` are added to every model's arguments (e.g. fewer blocks for a quick check)."""
    rows = []
    for name in models:
        dense = randomize_(create_model(name, **{**MODELS.get(name, {}), **(model_kwargs or {})})).eval()
        example = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0))
        pruned = prune(
            copy.deepcopy(dense),
            target_macs=target_macs,
            example_inputs=example,
            round_to=round_to,
            importance=importance,
        ).eval()
        report = pruned.prune_report
        dense, pruned = dense.to(device), pruned.to(device)
        for batch in batch_sizes:
            x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(1)).to(device)
            sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

            def run(model, x=x, sync=sync):
                model(x)
                sync()

            n = runs or default_runs(batch)
            times = time_interleaved(
                {"dense": lambda m=dense: run(m), "pruned": lambda m=pruned: run(m)}, n, warmup, desc=f"{name} b{batch}"
            )
            med = {k: median(v) for k, v in times.items()}
            rows.append(
                peer_row(
                    name,
                    f"batch {batch}",
                    "dense",
                    f"pruned {report.macs_after / report.macs_before:.0%} MACs",
                    "img/s",
                    times["dense"],
                    times["pruned"],
                    n,
                    BATCH32_TARGET if batch >= 32 else None,
                    work=batch,
                    extra={
                        "dense ms": 1e3 * med["dense"],
                        "pruned ms": 1e3 * med["pruned"],
                        "latency x": med["pruned"] / med["dense"],
                        "params M": f"{count_params(dense)['params'] / 1e6:.1f}->{report.params_after / 1e6:.1f}",
                        "GMACs": f"{report.macs_before / 1e9:.2f}->{report.macs_after / 1e9:.2f}",
                    },
                    times_s={k: v["total"] for k, v in times.items()},
                )
            )
    return rows


def _pair(text: str) -> list[float]:
    before, after = text.split("->")
    return [float(before), float(after)]


def result_rows(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """One row per model as ``results/compress.json``'s ``prune_latency`` holds it: params (M) and GMACs, and
    img/s at each batch size, as [dense, pruned] pairs; the batch-32 latency ratio (pruned / dense)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        form = " (inference form)" if MODELS.get(r.model, {}).get("deploy") else ""
        row = out.setdefault(
            r.model,
            {"model": r.model + form, "params_m": _pair(r.extra["params M"]), "gmacs": _pair(r.extra["GMACs"])},
        )
        batch = int(r.setting.removeprefix("batch "))
        row[f"batch{batch}_img_s"] = [round(r.peer_rate, 1), round(r.rate, 1)]
        if batch == 32:
            row["batch32_latency_ratio"] = round(r.extra["latency x"], 2)
    return list(out.values())


@one_writer
def write_results(path: Path, rows: list[dict[str, Any]], command: str, settings: str) -> dict[str, Any]:
    """Merge one run's :func:`result_rows` into ``path``'s ``prune_latency`` (rows of the same model replaced, the
    others kept with their run's provenance; the file's other sections kept) and write it atomically."""
    doc = load_results(path)
    old = doc.get("prune_latency", {})
    head = {k: old[k] for k in ("provenance", "command", "settings") if k in old}
    merged = merge_rows(old.get("rows", []), head, rows, lambda r: r["model"])
    doc["prune_latency"] = {"command": command, "provenance": provenance(), "settings": settings, "rows": merged}
    save_results(path, doc)
    return doc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``zoo bench prune``: dense against pruned to half the MACs, at batch 1 and 32."""
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated names (default: %(default)s)")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated (default: %(default)s)")
    parser.add_argument("--target-macs", type=float, default=0.5, help="fraction of the dense MACs (default 0.5)")
    parser.add_argument("--round-to", type=int, default=8, help="kept widths are multiples of this (0: exact)")
    parser.add_argument("--importance", default="magnitude", choices=list(IMPORTANCES))
    parser.add_argument("--input-size", default="3,224,224", help="C,H,W (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=None, help="timed rounds (default: 20 at batch 1, fewer beyond)")
    parser.add_argument("--warmup", type=int, default=2)
    add_device(parser)
    parser.add_argument("--json", type=Path, default=None, help="write the rows and the environment here")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PATH",
        help="merge the run into this results file as its prune_latency section (results/compress.json)",
    )


def run(args: argparse.Namespace) -> int:
    """Time every model dense and pruned; ``--out`` merges the run into ``results/compress.json``."""
    models = [m for m in args.models.split(",") if m]
    try:
        batches = [int(b) for b in args.batch_sizes.split(",")]
        size = tuple(int(s) for s in args.input_size.split(","))
    except ValueError:
        usage_error(args, "--batch-sizes and --input-size take comma-separated integers (e.g. 1,32 and 3,224,224)")
    if args.out is not None and not {1, 32} <= set(batches):
        usage_error(
            args, f"--out: the results file holds batch 1 and batch 32; --batch-sizes {args.batch_sizes} lacks one"
        )
    if args.out is not None:
        try:
            check_results_file(args.out, "compress")
        except ValueError as e:
            usage_error(args, str(e))
    env = environment(device=args.device)
    print_header(
        "dense vs pruned (zoo.prune to half the MACs), interleaved rounds",
        env,
        [f"target: batch >= 32 latency <= 0.6x dense; input {args.input_size}; round_to {args.round_to}"],
    )
    rows = prune_rows(
        models,
        batches,
        args.target_macs,
        args.round_to or None,
        args.importance,
        size,
        args.runs,
        args.warmup,
        args.device,
    )
    print(format_rows(rows))
    write_json(args.json, env, rows, models=models, batch_sizes=batches, target_macs=args.target_macs)
    if args.out is not None:
        settings = (
            f"{size[1]}x{size[2]}, fp32{'' if args.device == 'cpu' else ', ' + args.device}; dense against "
            f"zoo.prune(target_macs={args.target_macs:g}) with widths rounded to {args.round_to or 1}, interleaved "
            "rounds; each pair is [dense, pruned]"
        )
        write_results(args.out, result_rows(rows), recorded_command(args), settings)
    return 0
