"""CPU benchmark of the zoo's MetaFormer models against timm's implementation, on the same weights.

For every model name (default: ``poolformer_s12``, ``convformer_s18``) this builds ``timm.create_model(name)``
and ``zoo.create_model(name)``, gives timm's model deterministic random weights of realistic scale
(weights ~ N(0, 1/fan_in), norm / scale parameters ~ 1 + 0.1 * N(0, 1), biases ~ 0.05 * N(0, 1)) and loads
the very same tensors into the zoo's model through the zoo's timm-checkpoint converter
(``load_state_dict_checked`` with the MetaFormer ``checkpoint_filter_fn``), which fails if anything does not fit.

What is measured, per model and batch size, in fp32, eval mode, under ``torch.inference_mode``, on CPU:

* Throughput (images/s) of the full forward pass: a few warm-up passes, then the median of N timed passes.
  The two implementations are timed in interleaved rounds (timm, zoo, then zoo, timm, ...), so that machine
  noise hits both equally. The ratio reported is zoo / timm.
* Fidelity: the max abs difference of the ``forward_features`` outputs (B, C, H, W) on the same input, and the
  relative difference (max abs diff / max abs value of timm's features). ``--check`` exits non-zero if any
  relative difference exceeds 1e-4.
* The logits difference, for information only: the classification heads intentionally differ. The zoo follows
  the authors: PoolFormer v1 applies GroupNorm to the full final map and then pools (timm pools first), and
  the ConvFormer/CAFormer ``MlpHead`` LayerNorm uses eps 1e-5 (timm: 1e-6).

Targets: zoo >= 1.3x timm on poolformer_s12 at batch 32, >= 1.0x everywhere else.

Run as ``python -m zoo.bench [options]`` (or ``zoo bench``, which mounts :func:`add_arguments` / :func:`run`).
With ``--family NAME`` or ``--all`` it builds the zoo's model table instead (see :mod:`zoo.table`).
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import timm
import torch
from torch import nn
from tqdm import tqdm

import zoo
from zoo.weights import load_state_dict_checked
from zoo.models.metaformer import checkpoint_filter_fn

DEFAULT_MODELS = ("poolformer_s12", "convformer_s18")
DEFAULT_BATCH_SIZES = (1, 32)
CHECK_TOLERANCE = 1e-4  # max allowed relative difference of forward_features under --check
SEED = 0


@dataclass
class Result:
    model: str
    batch_size: int
    runs: int
    timm_images_per_s: float
    zoo_images_per_s: float
    ratio: float  # zoo / timm throughput
    target_ratio: float
    features_max_abs_diff: float
    features_rel_diff: float
    logits_max_abs_diff: float
    timm_times_s: List[float] = field(repr=False)  # every timed pass, for judging the noise
    zoo_times_s: List[float] = field(repr=False)


def target_ratio(model: str, batch_size: int) -> float:
    """The zoo/timm throughput the zoo aims for (see the module docstring)."""
    return 1.3 if (model, batch_size) == ("poolformer_s12", 32) else 1.0


def head_note(model: str) -> Optional[str]:
    """Why the logits of ``model`` intentionally differ from timm's, or None if the heads match."""
    if model.startswith("poolformer_"):
        return "PoolFormer v1 head: zoo applies GroupNorm to the full map, then pools (authors); timm pools first"
    if model.startswith(("convformer_", "caformer_")):
        return "MlpHead LayerNorm eps: zoo 1e-5 (authors), timm 1e-6"
    return None


def default_runs(batch_size: int) -> int:
    """Timed passes per implementation: 20 at batch 1, scaling down to 5 from batch 16 on."""
    return max(5, round(20 / math.sqrt(batch_size)))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> Dict[str, str]:
    return {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "zoo": zoo.__version__,
        "python": platform.python_version(),
        "threads": str(torch.get_num_threads()),
        "cpu": cpu_model(),
        "load": " ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1/5/15-min load average; other work skews timings)",
    }


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = SEED) -> None:
    """Deterministic random weights of realistic scale, in place (parameters visited in name order)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda item: item[0]):
        noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        if name.endswith("bias"):
            p.copy_(0.05 * noise)
        elif p.ndim <= 1:  # norm weights, layer / residual scales, StarReLU scale
            p.copy_(1.0 + 0.1 * noise)
        else:
            fan_in = p[0].numel()
            p.copy_(noise / math.sqrt(fan_in))


def build_pair(name: str) -> Tuple[nn.Module, nn.Module]:
    """timm's model with random weights and the zoo's model loaded with the same weights, both in eval mode."""
    timm_model = timm.create_model(name)
    randomize_(timm_model)
    zoo_model = zoo.create_model(name)
    load_state_dict_checked(zoo_model, timm_model.state_dict(), "timm", filter_fn=checkpoint_filter_fn)
    return timm_model.eval(), zoo_model.eval()


def time_forward(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@torch.inference_mode()
def bench_one(name: str, timm_model: nn.Module, zoo_model: nn.Module, batch_size: int, img_size: int,
              warmup: int, runs: int, progress: tqdm) -> Result:
    gen = torch.Generator().manual_seed(SEED + batch_size)
    x = torch.randn(batch_size, 3, img_size, img_size, generator=gen)
    models = {"timm": timm_model, "zoo": zoo_model}
    progress.set_description(f"{name} b{batch_size}")

    for _ in range(warmup):
        for model in models.values():
            model(x)
            progress.update()

    times: Dict[str, List[float]] = {"timm": [], "zoo": []}
    for i in range(runs):
        order = ("timm", "zoo") if i % 2 == 0 else ("zoo", "timm")
        for impl in order:
            times[impl].append(time_forward(models[impl], x))
            progress.update()

    feats = {impl: m.forward_features(x) for impl, m in models.items()}
    logits = {impl: models[impl].forward_head(f) for impl, f in feats.items()}
    progress.update(2)

    feat_diff = max_abs_diff(feats["zoo"], feats["timm"])
    timm_ips = batch_size / statistics.median(times["timm"])
    zoo_ips = batch_size / statistics.median(times["zoo"])
    return Result(
        model=name,
        batch_size=batch_size,
        runs=runs,
        timm_images_per_s=timm_ips,
        zoo_images_per_s=zoo_ips,
        ratio=zoo_ips / timm_ips,
        target_ratio=target_ratio(name, batch_size),
        features_max_abs_diff=feat_diff,
        features_rel_diff=feat_diff / feats["timm"].abs().max().item(),
        logits_max_abs_diff=max_abs_diff(logits["zoo"], logits["timm"]),
        timm_times_s=times["timm"],
        zoo_times_s=times["zoo"],
    )


def format_table(results: Sequence[Result]) -> str:
    header = ("model", "batch", "timm img/s", "zoo img/s", "zoo/timm", "target", "feat max|d|", "feat rel",
              "logits max|d|")
    rows = [(r.model, str(r.batch_size), f"{r.timm_images_per_s:.1f}", f"{r.zoo_images_per_s:.1f}",
             f"{r.ratio:.2f}x", f">={r.target_ratio:.1f}x {'ok' if r.ratio >= r.target_ratio else 'MISS'}",
             f"{r.features_max_abs_diff:.2e}", f"{r.features_rel_diff:.2e}", f"{r.logits_max_abs_diff:.2e}")
            for r in results]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    left = {0}  # the model column is left-aligned, numbers right-aligned

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return value


def _csv(kind: type):
    def parse(text: str) -> list:
        try:
            values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if not values:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        return values
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=_csv(str), default=None,
                        help=f"comma-separated model names (default: {','.join(DEFAULT_MODELS)})")
    parser.add_argument("--batch-sizes", type=_csv(_positive_int), default=None,
                        help="comma-separated batch sizes (default: 1,32; model table: 1)")
    table = parser.add_argument_group("model table (instead of the timm comparison)")
    table.add_argument("--family", default=None, help="profile every model of this family")
    table.add_argument("--all", action="store_true", help="profile every registered model")
    table.add_argument("--csv", type=Path, default=None, metavar="PATH", help="write the table as CSV")
    table.add_argument("--plot", type=Path, default=None, metavar="PATH",
                       help="write the top-1 vs MACs / latency picture (PNG)")
    table.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    table.add_argument("--channels-last", action="store_true", help="channels-last inputs and weights")
    parser.add_argument("--img-size", type=_positive_int, default=224, help="input height and width (default: 224)")
    parser.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up passes per implementation (default: 2)")
    parser.add_argument("--runs", type=_positive_int, default=None,
                        help="timed passes per implementation; median is reported "
                             "(default: 20 at batch 1, scaling down to 5 from batch 16 on)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if any forward_features relative difference exceeds {CHECK_TOLERANCE:g}")


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.models_given = args.models is not None
    if args.family or args.all:
        from .table import run_table
        return run_table(args)
    args.models = args.models or list(DEFAULT_MODELS)
    if all(n in zoo.list_models(family="slak") for n in args.models):
        from .bench_slak import DEFAULT_BATCH_SIZES as SLAK_BATCHES, run as run_slak  # peer: the authors' form
        return run_slak(args.models, args.batch_sizes or list(SLAK_BATCHES), args.runs, args.warmup,
                        json_path=args.json)
    args.batch_sizes = args.batch_sizes or list(DEFAULT_BATCH_SIZES)
    if args.models and all(n in zoo.list_models(task="text-generation") for n in args.models):
        from .bench_lm import run as run_lm  # LMs: prefill/decode against transformers' Llama
        return run_lm(args.models, args.runs, max(args.warmup, 1), json_path=args.json)
    if args.models and all(n in zoo.list_models(family="sret") for n in args.models):
        from .bench_sret import run as run_sret  # timm has no SReT: the peer is the authors' forward
        return run_sret(args.models, args.batch_sizes, args.runs, args.warmup)
    unknown = [n for n in args.models if n not in zoo.list_models() or not timm.is_model(n)]
    if unknown:
        print(f"error: not a model of both the zoo and timm: {', '.join(unknown)}", file=sys.stderr)
        return 2
    env = environment()
    print("MetaFormer CPU benchmark: zoo vs timm, same weights (fp32, eval, inference_mode)")
    for key, value in env.items():
        print(f"  {key:<8} {value}")
    print(f"  input    3x{args.img_size}x{args.img_size}, warm-up {args.warmup}, median of N timed passes")
    print(flush=True)

    plan = [(b, args.runs or default_runs(b)) for b in args.batch_sizes]
    total = len(args.models) * sum(2 * (args.warmup + runs) + 2 for _, runs in plan)
    results: List[Result] = []
    with tqdm(total=total, unit="pass", file=sys.stderr, dynamic_ncols=True) as progress:
        for name in args.models:
            progress.set_description(f"{name} build")
            timm_model, zoo_model = build_pair(name)
            for batch_size, runs in plan:
                results.append(bench_one(name, timm_model, zoo_model, batch_size, args.img_size,
                                         args.warmup, runs, progress))

    print(format_table(results))
    notes = {r.model: head_note(r.model) for r in results}
    if any(notes.values()):
        print("\nLogits differ by design (features are the like-for-like comparison):")
        for model, note in notes.items():
            if note:
                print(f"  {model}: {note}")

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"environment": env, "config": {"img_size": args.img_size, "warmup": args.warmup},
                   "results": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")

    if args.check:
        failed = [r for r in results if r.features_rel_diff > CHECK_TOLERANCE]
        for r in failed:
            print(f"CHECK FAILED: {r.model} batch {r.batch_size}: features relative difference "
                  f"{r.features_rel_diff:.2e} > {CHECK_TOLERANCE:g}", file=sys.stderr)
        if failed:
            return 1
        print(f"\ncheck passed: all features relative differences <= {CHECK_TOLERANCE:g}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
