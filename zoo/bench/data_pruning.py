"""``zoo bench data-pruning``: full-data training against InfoBatch and the static pruning baselines.

Every model is trained by ``train.py``'s loop (:func:`zoo.train.loop.train`) on the same recipe and seeds, once on
the full data and once per pruning method (``data_pruning:``, :mod:`zoo.train.data_pruning`); the table gives the
held-out top-1 (a language model's perplexity) as mean ± std over the seeds, the sample-steps (samples trained on,
forward and backward), the wall time of the whole run and the saving against the full run. The static baselines
cost what InfoBatch cost: per seed, ``random`` keeps the share of the samples that makes its sample-steps
InfoBatch's, and ``el2n`` (full data for ``score_epochs`` epochs, then its subset) likewise.

Models: ``convnet_d3`` (ConvNet-3 at the data's size, SGD as the dataset-distillation protocol, no augmentation),
``quickstart`` (the PoolFormer of ``configs/quickstart_digits.yaml`` at 32 px) and ``lm`` (the language model of
``configs/quickstart_lm.yaml``; ``--configs DIR`` names the recipes' folder, by default ``./configs``; ``--epochs`` sets
its steps to that many passes over its rows)::

    zoo bench data-pruning --data mnist --data-path ../shared/datasets/mnist --models convnet_d3,quickstart \\
        --train-split "train[:4000]" --epochs 8 --seeds 0,1,2 --json results/data_pruning/mnist.json
    zoo bench data-pruning --models lm --epochs 6 --seeds 0
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from ..train.config import RecipeError, load_recipe
from ..train.distributed import DistState
from ..train.loop import train
from ..train.tasks import build_task
from .harness import provenance as harness_provenance
from .options import add_common, add_configs, recipe_path

__all__ = ["add_arguments", "run"]

METHODS = ("full", "infobatch", "random", "el2n")
MODELS = ("convnet_d3", "quickstart", "lm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``zoo bench data-pruning``: full-data training against InfoBatch and the static baselines."""
    add_common(parser, f"comma-separated: {', '.join(MODELS)} (default: convnet_d3)", batch_sizes=False, timing=False)
    add_configs(parser, "--models quickstart (quickstart_digits.yaml) and lm (quickstart_lm.yaml)")
    parser.add_argument("--data", default="digits", help="images (digits, mnist, fashion_mnist, ...)")
    parser.add_argument(
        "--data-path",
        dest="data_path",
        default=None,
        metavar="PATH",
        help="the folder of --data's files, e.g. --data mnist --data-path ../shared/datasets/mnist",
    )
    parser.add_argument("--train-split", default="train", help='the training split, e.g. "train[:4000]"')
    parser.add_argument("--val-split", default=None, help="the held-out split (default: the data's)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of every run (default 8)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--methods", default=",".join(METHODS[1:]), help="infobatch,random,el2n")
    parser.add_argument("--ratio", type=float, default=0.5, help="InfoBatch's ratio (default 0.5)")
    parser.add_argument("--delta", type=float, default=0.875, help="InfoBatch's delta (default 0.875)")
    parser.add_argument("--score-epochs", type=int, default=1, help="el2n's full-data epochs (default 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="global batch (default: the model's)")


# ----------------------------------------------------------------------------------------------------------------
# recipes
# ----------------------------------------------------------------------------------------------------------------


def _image_recipe(args, model: str) -> dict[str, Any]:
    data: dict[str, Any] = {"name": args.data, "path": args.data_path, "train_split": args.train_split}
    if args.val_split:
        data["val_split"] = args.val_split
    grey = args.data in ("mnist", "fashion_mnist", "kmnist", "emnist")  # one channel (digits load as RGB scans)
    if model == "convnet_d3":
        size = 28 if args.data in ("mnist", "fashion_mnist") else 32
        raw = {
            "model": "convnet_d3",
            "model_kwargs": {"img_size": size, **({"in_chans": 1} if grey else {})},
            "task": "image-classification",
            "data": {**data, "image_size": size, "crop_pct": 1.0, "interpolation": "bilinear"},
            "aug": {
                "scale": [1.0, 1.0],
                "ratio": [1.0, 1.0],
                "hflip": 0.0,
                "color_jitter": None,
                "train_interpolation": "bilinear",
            },  # fmt: skip
            "optim": {"opt": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
            "sched": {"sched": "cosine", "min_lr": 1e-4},
            "train": {"batch_size": args.batch_size or 128},
        }
    else:
        raw = yaml.safe_load(recipe_path(args.configs, "quickstart_digits", "--models quickstart").read_text())
        raw["data"] = {**raw["data"], **data}
        if grey:
            raw["model_kwargs"] = {**raw["model_kwargs"], "in_chans": 1}
        if args.batch_size:
            raw["train"]["batch_size"] = args.batch_size
    raw["train"] = {**raw["train"], "epochs": args.epochs, "eval_every_epochs": args.epochs, "log_interval": 1000}
    return raw


def _lm_recipe(args) -> dict[str, Any]:
    raw = yaml.safe_load(recipe_path(args.configs, "quickstart_lm", "--models lm").read_text())
    if args.batch_size:
        raw["train"]["batch_size"] = args.batch_size
    raw["train"] = {**raw["train"], "eval_every_steps": 0, "log_interval": 1000}
    return raw


def _finish(raw: dict[str, Any], out: Path, seed: int, threads: int, pruning: dict[str, Any] | None):
    raw = {**raw, "seed": seed, "output_dir": str(out)}
    raw["train"] = {**raw["train"], "threads": threads}
    raw["checkpoint"] = {"every_steps": 0, "keep": 1}
    raw["export"] = {"enabled": False}
    if pruning is not None:
        raw["data_pruning"] = pruning
    return load_recipe(base=raw)


# ----------------------------------------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------------------------------------


def _check_recipes(args, models: list[str], methods: list[str], threads: int) -> None:
    """Every run's recipe read before the first run trains: a bad --ratio, --delta or --score-epochs is a
    RecipeError at once, not after the full-data runs (the static methods' ratios, derived later, are in range)."""
    for model in models:
        raw = _lm_recipe(args) if model == "lm" else _image_recipe(args, model)
        for method in methods:
            cfg: dict[str, Any] = {"method": method, "ratio": args.ratio if method == "infobatch" else 0.5}
            if method == "infobatch":
                cfg["delta"] = args.delta
            if method == "el2n":
                cfg["score_epochs"] = args.score_epochs
            _finish(raw, Path(tempfile.gettempdir()) / "zoo-pruning-check", 0, threads, cfg)


def _train(raw: dict[str, Any], seed: int, threads: int, pruning: dict[str, Any] | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="zoo-pruning-") as tmp:
        recipe = _finish(raw, Path(tmp) / "run", seed, threads, pruning)
        t0 = time.perf_counter()
        summary = train(recipe, progress=False)
        wall = time.perf_counter() - t0
    m = summary["metrics"]
    batch = recipe.train.batch_size
    pr = m.get("data_pruning") or {
        "sample_steps": m["train_steps"] * batch,
        "full_sample_steps": m["train_steps"] * batch,
        "saving": 0.0,
    }
    return {
        "seed": seed,
        "top1": m.get("top1"),
        "perplexity": m.get("perplexity"),
        "sample_steps": pr["sample_steps"],
        "full_sample_steps": pr["full_sample_steps"],
        "train_steps": m["train_steps"],
        "wall_s": round(wall, 2),
        "pruning": m.get("data_pruning"),
    }


def _static_ratio(method: str, infobatch: dict[str, Any], epochs: int, score_epochs: int) -> float:
    """The static method's ratio that costs what InfoBatch's run cost (its share of the full sample-steps)."""
    share = infobatch["sample_steps"] / infobatch["full_sample_steps"]
    if method == "el2n":  # score_epochs on everything, then the subset
        later = epochs - score_epochs
        share = (share * epochs - score_epochs) / later if later > 0 else 1.0
    return min(0.99, max(0.0, 1.0 - share))


def _lm_epochs_steps(raw: dict[str, Any], epochs: int) -> int:
    """Optimizer steps of ``epochs`` passes over the quickstart LM's training rows."""
    with tempfile.TemporaryDirectory(prefix="zoo-pruning-") as tmp:
        recipe = load_recipe(base={**raw, "output_dir": tmp})
        task = build_task(recipe, DistState(), Path(tmp))
        task.prepare_data()
        rows = len(task.train_set)
    return epochs * (rows // recipe.train.batch_size)


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _rows(runs: dict[str, list[dict[str, Any]]], metric: str) -> list[dict[str, Any]]:
    full = runs["full"]
    full_steps = statistics.fmean(r["sample_steps"] for r in full)
    full_wall = statistics.fmean(r["wall_s"] for r in full)
    rows = []
    for method, rs in runs.items():
        mean, std = _stats([r[metric] for r in rs])
        steps = statistics.fmean(r["sample_steps"] for r in rs)
        wall = statistics.fmean(r["wall_s"] for r in rs)
        rows.append({
            "method": method,
            metric: round(mean, 3),
            f"{metric}_std": round(std, 3),
            "sample_steps": round(steps),
            "sample_step_saving": round(1 - steps / full_steps, 4),
            "wall_s": round(wall, 1),
            "wall_saving": round(1 - wall / full_wall, 4),
            "seeds": [r["seed"] for r in rs],
        })  # fmt: skip
    return rows


def _targets(rows: list[dict[str, Any]], metric: str) -> list[str]:
    by = {r["method"]: r for r in rows}
    full, ib = by.get("full"), by.get("infobatch")
    if full is None or ib is None:
        return []
    if metric == "top1":
        gap = ib["top1"] - full["top1"]
        ok = gap >= -max(full["top1_std"], 0.2)
        notes = [
            f"infobatch top-1 {gap:+.2f} points vs full (spread {full['top1_std']:.2f}): {'met' if ok else 'MISSED'}"
        ]
    else:
        rel = ib[metric] / full[metric] - 1
        notes = [
            f"infobatch perplexity {rel:+.2%} vs full (target within 1%): {'met' if abs(rel) <= 0.01 else 'MISSED'}"
        ]
    notes.append(f"infobatch sample-steps {ib['sample_step_saving']:.1%} fewer (target 30%): "
                 f"{'met' if ib['sample_step_saving'] >= 0.30 else 'MISSED'}")  # fmt: skip
    notes.append(f"infobatch wall time {ib['wall_saving']:.1%} less (target 25%): "
                 f"{'met' if ib['wall_saving'] >= 0.25 else 'MISSED'}")  # fmt: skip
    if "random" in by and metric == "top1":
        loss = ib["top1"] - by["random"]["top1"]
        notes.append(f"random subset at InfoBatch's cost: {-loss:+.2f} points vs infobatch "
                     f"({'loses' if loss > 0 else 'does NOT lose'} accuracy)")  # fmt: skip
    return notes


def provenance() -> dict[str, str]:
    """Date, commit, machine (its cores), versions and load, for the results file's head."""
    return harness_provenance(f"{platform.machine()}, {os.cpu_count()} cores")


def _format(rows: list[dict[str, Any]], metric: str) -> str:
    head = f"{'method':<10} {metric:>16} {'sample-steps':>13} {'saved':>7} {'wall s':>8} {'saved':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        value = f"{r[metric]:.2f} ± {r[metric + '_std']:.2f}"
        lines.append(f"{r['method']:<10} {value:>16} {r['sample_steps']:>13,} {r['sample_step_saving']:>7.1%} "
                     f"{r['wall_s']:>8.1f} {r['wall_saving']:>7.1%}")  # fmt: skip
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    except ValueError:
        print(f"zoo bench: error: --seeds takes comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    methods = [m.strip() for m in str(args.methods).split(",") if m.strip()]
    models = list(args.models or ["convnet_d3"])
    bad = [m for m in methods if m not in METHODS[1:]] + [m for m in models if m not in MODELS]
    if bad or not seeds or args.epochs < 1:
        what = f"unknown: {', '.join(bad)}" if bad else "give --seeds and --epochs of at least 1"
        print(f"zoo bench: error: data-pruning {what} (models: {', '.join(MODELS)}; methods: "
              f"{', '.join(METHODS[1:])})", file=sys.stderr)  # fmt: skip
        return 2
    if "infobatch" not in methods and any(m in methods for m in ("random", "el2n")):
        methods.insert(0, "infobatch")  # the baselines' cost is InfoBatch's
    threads = args.threads or 1
    try:
        _check_recipes(args, models, methods, threads)
    except RecipeError as e:
        print(f"zoo bench: error: {e}", file=sys.stderr)
        return 2
    env = provenance()
    print("data pruning: full data against InfoBatch and static baselines (train.py's loop)")
    for key, value in env.items():
        print(f"  {key:<12} {value}")
    print(flush=True)
    results: dict[str, Any] = {"provenance": env, "settings": {}, "tables": []}
    results["settings"] = {
        "data": args.data, "data_path": args.data_path, "train_split": args.train_split, "epochs": args.epochs,
        "seeds": seeds, "ratio": args.ratio, "delta": args.delta, "score_epochs": args.score_epochs,
        "threads": threads, "methods": methods,
    }  # fmt: skip
    for model in models:
        metric = "perplexity" if model == "lm" else "top1"
        try:
            if model == "lm":
                raw = _lm_recipe(args)
                raw["train"]["steps"] = _lm_epochs_steps(raw, args.epochs)
            else:
                raw = _image_recipe(args, model)
            runs: dict[str, list[dict[str, Any]]] = {"full": []}
            for seed in seeds:
                runs["full"].append(_train(raw, seed, threads, None))
                _progress(model, "full", runs["full"][-1], metric)
                ib = None
                for method in methods:
                    cfg: dict[str, Any] = {"method": method}
                    if method == "infobatch":
                        cfg.update(ratio=args.ratio, delta=args.delta)
                    else:
                        cfg.update(ratio=_static_ratio(method, ib, args.epochs, args.score_epochs))
                        if method == "el2n":
                            cfg["score_epochs"] = args.score_epochs
                    result = _train(raw, seed, threads, cfg)
                    result["ratio"] = round(cfg["ratio"], 4)
                    runs.setdefault(method, []).append(result)
                    ib = result if method == "infobatch" else ib
                    _progress(model, method, result, metric)
        except RecipeError as e:
            print(f"zoo bench: error: {e}", file=sys.stderr)
            return 2
        rows = _rows(runs, metric)
        notes = _targets(rows, metric)
        where = "quickstart LM (pydoc)" if model == "lm" else f"{model} on {args.data} {args.train_split}"
        print(f"\n{where}, {args.epochs} epochs, seeds {','.join(map(str, seeds))}")
        print(_format(rows, metric))
        for note in notes:
            print(f"  {note}")
        print(flush=True)
        results["tables"].append({"model": model, "metric": metric, "rows": rows, "targets": notes, "runs": runs})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(args.json)
        print(f"written: {args.json}")
    return 0


def _progress(model: str, method: str, r: dict[str, Any], metric: str) -> None:
    value = r[metric]
    shown = "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"
    print(f"  {model} {method:<9} seed {r['seed']}: {metric} {shown}, {r['sample_steps']:,} sample-steps, "
          f"{r['wall_s']:.1f} s", flush=True)  # fmt: skip
