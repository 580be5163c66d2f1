"""``zoo condense``: condense a dataset into a synthetic-set folder from the command line."""

import argparse
import sys
import time
from pathlib import Path

import yaml

from ..data.errors import DataError
from ..data.sources import resolve
from .core import METHODS, CondenseError, condense, load_real_split
from .evaluate import EvalSettings, evaluate_set

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--data",
        default="digits",
        help="digits | mnist | fashion_mnist | cifar10 | cifar100 | svhn (their files' folder: --data-path, or "
        "NAME:PATH; no path: downloaded into the zoo's cache) | an image folder (root/<class>/*) | a datasets folder",
    )
    p.add_argument(
        "--data-path",
        "--data.path",
        dest="data_path",
        default=None,
        metavar="PATH",
        help="the folder of --data's files, e.g. --data mnist --data-path ../shared/datasets/mnist",
    )
    p.add_argument("--method", default="dm", help=f"one of {', '.join(sorted(METHODS))}")
    p.add_argument("--ipc", type=int, default=10, help="images per class (default 10)")
    p.add_argument("--out", default=None, help="the folder to write (default runs/condensed/METHOD_ipcN)")
    p.add_argument("--iterations", type=int, default=None, help="optimisation steps (default: the method's)")
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
    p.add_argument("--eval-runs", type=int, default=0, help="then train N ConvNet-3s on the set; print held-out top-1")
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
        image_size = args.image_size or (source.native_size if source.benchmark else 32)
        out = Path(args.out or f"runs/condensed/{args.method}_ipc{args.ipc}")
        t0 = time.perf_counter()
        synset = condense(
            source.spec, args.method, args.ipc, out, seed=args.seed, image_size=image_size, device=args.device,
            resume=args.resume, save_every=args.save_every, progress=not args.no_progress, overwrite=args.overwrite,
            **_options(args),
        )  # fmt: skip
    except CondenseError as e:
        print(f"zoo condense: error: {e}", file=sys.stderr)
        return 2
    m = synset.meta
    print(
        f"wrote {out}: {len(synset)} images ({m['ipc']} per class, {len(synset.class_names)} classes), "
        f"{synset.stored_values:,} stored values, {time.perf_counter() - t0:.1f} s, peak memory "
        f"{m['peak_memory_mb']:.0f} MB"
    )
    if args.eval_runs:
        test = load_real_split(m["source"], m["preprocessing"])
        accs = evaluate_set(synset, test, EvalSettings(epochs=args.eval_epochs), runs=args.eval_runs, seed=args.seed,
                            progress=not args.no_progress)  # fmt: skip
        mean = sum(accs) / len(accs)
        std = (sum((a - mean) ** 2 for a in accs) / max(len(accs) - 1, 1)) ** 0.5
        print(f"held-out top-1 ({test.source['split']}, ConvNet-3, {args.eval_runs} runs): {mean:.2f} +- {std:.2f}")
    return 0
