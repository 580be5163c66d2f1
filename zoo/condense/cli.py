"""``zoo condense``: condense a dataset into a synthetic-set folder from the command line.

On many processes: ``torchrun --nproc-per-node N -m zoo condense ...`` (the same arguments; gloo on the CPU, one
GPU per process on CUDA). The method's work is split across the processes where it allows it and the set equals
the one-process set for the same seed (:mod:`zoo.condense.distributed` says what each method splits); rank 0
prints, shows the progress bars, writes the folder and its checkpoints, and runs ``--eval-runs``.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import yaml

from ..data.errors import DataError
from ..data.sources import add_data_path_argument, resolve
from . import distributed
from .core import METHODS, CondenseError, condense, load_real_split
from .evaluate import EvalSettings, evaluate_set
from .presets import PRESETS, default_preset, estimate_seconds, method_options
from .student import StudentSettings, evaluate_with_teacher

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--data",
        default="digits",
        help="digits | mnist | fashion_mnist | cifar10 | cifar100 | svhn (their files' folder: --data-path, or "
        "NAME:PATH; no path: downloaded into the zoo's cache) | an image folder (root/<class>/*) | a datasets folder",
    )
    add_data_path_argument(p)
    p.add_argument("--method", default="dm", help=f"one of {', '.join(sorted(METHODS))}")
    p.add_argument("--ipc", type=int, default=10, help="images per class (default 10)")
    p.add_argument("--out", default=None, help="the folder to write (default runs/condensed/METHOD_ipcN)")
    p.add_argument(
        "--preset",
        choices=["auto", *PRESETS],
        default="auto",
        help="iteration counts by name: cpu (minutes on a CPU), paper (the authors' counts, for a GPU), quick (a "
        "smoke run); auto (default): paper on CUDA, cpu otherwise",
    )
    p.add_argument("--iterations", type=int, default=None, help="optimisation steps (default: the preset's)")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="edge the images are condensed at (default: the benchmark "
        "set's own, 28 for mnist / fashion_mnist and 32 for cifar / svhn; 32 for other data)",
    )
    p.add_argument("--teacher", default=None, help="rded, sre2l, herding, kcenter: a trained run or model folder")
    p.add_argument("--model", default=None, help="the matching network (default convnet_d3)")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option (repeatable), e.g. lr_img=0.5",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from the last state saved in --out")
    p.add_argument("--save-every", type=int, default=100, help="save the resumable state every N iterations")
    p.add_argument("--overwrite", action="store_true", help="replace an --out folder that is not a synthetic set")
    p.add_argument(
        "--eval-runs",
        type=int,
        default=0,
        help="then train N ConvNet-3s on the set with the authors' evaluation for the data (rded / sre2l: their "
        "student recipe, relabelled by the teacher); print held-out top-1",
    )
    p.add_argument("--eval-epochs", type=int, default=300, help="epochs of each evaluation run (default 300)")
    p.add_argument("--list-options", action="store_true", help="print the method's options and defaults, then exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _options(args) -> dict:
    options = {}
    for item in args.option:
        if "=" not in item:
            raise CondenseError(f"--option takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        options[key.strip()] = yaml.safe_load(value)
    for key in ("iterations", "teacher", "model"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    return options


def run(args: argparse.Namespace) -> int:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun
        if args.list_options:
            return _run(args) if int(os.environ.get("RANK", "0")) == 0 else 0
        try:
            state = distributed.init(args.device)
        except RuntimeError as e:
            print(f"zoo condense: error: {e}", file=sys.stderr)
            return 2
        try:
            return _run(args, str(state.device), state.is_main, state.world_size)
        finally:
            distributed.finish()
    return _run(args)


def _run(args: argparse.Namespace, device: str | None = None, main: bool = True, processes: int = 1) -> int:
    try:
        if args.method not in METHODS:
            raise CondenseError(f"unknown method {args.method!r}: choose from {', '.join(sorted(METHODS))}")
        if args.list_options:
            for k, v in METHODS[args.method].defaults.items():
                print(f"{k} = {v!r}")
            return 0
        try:
            source = resolve(args.data, args.data_path)
        except DataError as e:
            raise CondenseError(str(e)) from None
        device = device or args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        preset = default_preset(device.split(":")[0]) if args.preset == "auto" else args.preset
        image_size = args.image_size or PRESETS[preset].image_size or (source.native_size if source.benchmark else 32)
        options = {**method_options(preset, args.method, args.ipc), **_options(args)}
        out = Path(args.out or f"runs/condensed/{args.method}_ipc{args.ipc}")
        if main:
            print(_start_line(args.method, source, args.ipc, preset, options, image_size), flush=True)
            if processes > 1:
                print(f"zoo condense: {processes} processes, sharing out {_split(args.method)}", flush=True)
        t0 = time.perf_counter()
        synset = condense(
            source.spec, args.method, args.ipc, out, seed=args.seed, image_size=image_size, device=device,
            resume=args.resume, save_every=args.save_every, progress=main and not args.no_progress,
            overwrite=args.overwrite, **options,
        )  # fmt: skip
    except CondenseError as e:
        if main:  # the same error on every process: rank 0 says it
            print(f"zoo condense: error: {e}", file=sys.stderr)
        return 2
    if not main:
        return 0
    distributed.finish()  # the evaluation runs on rank 0 alone
    m = synset.meta
    print(
        f"wrote {out}: {len(synset)} images ({m['ipc']} per class, {len(synset.class_names)} classes), "
        f"{synset.stored_values:,} stored values, {time.perf_counter() - t0:.1f} s, peak memory "
        f"{m['peak_memory_mb']:.0f} MB"
    )
    if args.eval_runs:
        test = load_real_split(m["source"], m["preprocessing"])
        name = str(m["source"].get("name", ""))
        if METHODS[args.method].needs_teacher:
            what = "students relabelled by the teacher"
            accs = evaluate_with_teacher(synset, test, m["model"] or args.teacher, StudentSettings.for_data(test),
                                         runs=args.eval_runs, seed=args.seed, progress=not args.no_progress)  # fmt: skip
        else:
            settings = EvalSettings.for_data(name, args.method, epochs=args.eval_epochs)
            what = "ConvNet-3, " + (f"DSA {settings.dsa_strategy}" if settings.dsa else settings.dc_aug or "no aug.")
            accs = evaluate_set(synset, test, settings, runs=args.eval_runs, seed=args.seed,
                                progress=not args.no_progress)  # fmt: skip
        mean = sum(accs) / len(accs)
        std = (sum((a - mean) ** 2 for a in accs) / max(len(accs) - 1, 1)) ** 0.5
        print(f"held-out top-1 ({test.source['split']}, {what}, {args.eval_runs} runs): {mean:.2f} +- {std:.2f}")
    return 0


def _split(method: str) -> str:
    cls = METHODS[method]
    if cls.shards:
        return {"classes": "the classes", "batches": "the batches"}.get(cls.shards, cls.shards)
    if "num_experts" in cls.defaults:
        return "the expert buffer (the distillation runs whole on every process)"
    return "nothing: every process runs the method whole (rank 0 writes)"


def _start_line(method: str, source, ipc: int, preset: str, options: dict, image_size: int) -> str:
    """What is about to run, under which preset, and roughly for how long."""
    cls = METHODS[method]
    iterations = int(options.get("iterations", cls.defaults.get("iterations", 0)) or 0)
    paper = int(cls.defaults.get("iterations", 0) or 0)
    what = f"{iterations:,} iterations" + (f" (the paper's: {paper:,})" if paper and paper != iterations else "")
    if not paper:
        what = "no iterations (selection from the real images)"
    eta = estimate_seconds(method, ipc, iterations, image_size)
    when = f", about {_duration(eta)} on a 2-core CPU" if eta and preset != "paper" else ""
    return f"zoo condense: {method} on {source.spec}, ipc {ipc}, preset {preset}: {what}{when}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
