"""CPU benchmark of the zoo's SLaK inference form against a plain rendition of the authors' formulation.

The peer is :mod:`zoo.reference.slak`: the authors' three-branch large kernel (``F.conv2d`` depthwise with
per-axis padding, then BatchNorm, for each of the K x 5, 5 x K and 5 x 5 branches), LayerNorms and Linear layers
exactly as in their ``models/SLaK.py``, on a random state dict in their key layout with realistic scales. The zoo
model is ``create_model(name, deploy=True)`` loaded from that very state dict (the loader fuses the BNs and the
5 x 5 kernel), i.e. two depthwise convs with bias per block on channels-last memory, run as ``large_kernel_impl``
says (default ``auto``: oneDNN's depthwise conv on CPU). ``--impls`` adds the
other zoo paths (``conv``, ``matmul``) and the zoo's training form (``train-form``) to the comparison.

Both run in fp32, eval, under ``torch.inference_mode``; timing rounds alternate between the implementations (the
machine may be shared), each figure is the median of N passes. Also printed: the machine's fp32 GEMM rate
(``torch.mm`` on a pointwise-layer shape, median) and the GFLOP/s each implementation achieves on the model's
dense fvcore count (2 FLOPs per MAC). Target: zoo >= 2x the authors' formulation at batch 1, outputs within
1e-4 of the output scale.

    python -m zoo.bench_slak [--models slak_tiny] [--batch-sizes 1,8] [--runs N] [--impls auto,conv,matmul]
    zoo bench --models slak_tiny          # the same, through the zoo command
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

DEFAULT_MODELS = ("slak_tiny",)
DEFAULT_BATCH_SIZES = (1, 8)
TARGET = {1: 2.0}
TOLERANCE = 1e-4


def gemm_rate(m: int = 3136, k: int = 499, n: int = 1996, runs: int = 10) -> float:
    """fp32 GFLOP/s of ``torch.mm`` on a (m x k) @ (k x n) product (a slak_tiny stage-1-like pointwise shape)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
    for _ in range(2):
        torch.mm(a, b)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / statistics.median(times) / 1e9


def build(name: str, impls: Sequence[str]) -> Dict[str, Callable]:
    """``{label: forward}``: the authors' formulation, then the zoo's models on the same weights."""
    import zoo
    from zoo.weights import load_state_dict_checked
    from zoo.models.slak import checkpoint_filter_fn
    from zoo.reference.slak import make_authors_state_dict, reference_forward

    state_dict = make_authors_state_dict(name, seed=0)
    out: Dict[str, Callable] = {"authors": lambda x: reference_forward(state_dict, x)}
    for impl in impls:
        if impl == "train-form":
            model = zoo.create_model(name)
        else:
            model = zoo.create_model(name, deploy=True, large_kernel_impl=impl)
        load_state_dict_checked(model, dict(state_dict), "the authors' layout", filter_fn=checkpoint_filter_fn)
        out["zoo" if impl == "auto" else f"zoo-{impl}"] = model.eval()
    return out


def run_one(name: str, batch_sizes: Sequence[int], runs: Optional[int], warmup: int, impls: Sequence[str],
            gemm_gflops: float) -> List[Dict]:
    import zoo

    fns = build(name, impls)
    macs = zoo.model_info(name)["reference"]["macs"]  # dense fvcore MACs per image at 224
    size = zoo.model_info(name)["pretrained_cfg"]["input_size"][-1]
    rows = []
    for bs in batch_sizes:
        n = runs or max(3, round(10 / bs ** 0.5))
        x = torch.randn(bs, 3, size, size, generator=torch.Generator().manual_seed(bs))
        times: Dict[str, List[float]] = {k: [] for k in fns}
        keys = list(fns)
        with torch.inference_mode():
            for _ in range(warmup):
                for fn in fns.values():
                    fn(x)
            for i in tqdm(range(n), desc=f"{name} b{bs}", file=sys.stderr, leave=False):
                for key in (keys if i % 2 == 0 else keys[::-1]):
                    start = time.perf_counter()
                    fns[key](x)
                    times[key].append(time.perf_counter() - start)
            outputs = {k: fn(x) for k, fn in fns.items()}
        ref = outputs["authors"]
        base = statistics.median(times["authors"])
        for key in keys:
            median = statistics.median(times[key])
            diff = (outputs[key] - ref).abs().max().item()
            rows.append(dict(model=name, impl=key, batch=bs, runs=n, latency_ms=median * 1e3, images_per_s=bs / median,
                             ratio=base / median, target=TARGET.get(bs) if key == "zoo" else None,
                             gflops=2 * macs * bs / median / 1e9, gemm_fraction=2 * macs * bs / median / 1e9 / gemm_gflops,
                             max_abs_diff=diff, rel_diff=diff / ref.abs().max().item(), times_s=times[key]))
    return rows


def format_rows(rows: Sequence[Dict]) -> str:
    head = (f"{'model':<13}{'impl':<15}{'batch':>5}{'latency ms':>12}{'img/s':>9}{'vs authors':>12}{'target':>11}"
            f"{'GFLOP/s':>9}{'of GEMM':>9}{'max|d|':>10}{'rel':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        target = "" if r["target"] is None else f">={r['target']:.1f}x " + ("ok" if r["ratio"] >= r["target"] else "MISS")
        lines.append(f"{r['model']:<13}{r['impl']:<15}{r['batch']:>5}{r['latency_ms']:>12.1f}{r['images_per_s']:>9.2f}"
                     f"{r['ratio']:>11.2f}x{target:>11}{r['gflops']:>9.1f}{r['gemm_fraction']:>8.0%} "
                     f"{r['max_abs_diff']:>10.2e}{r['rel_diff']:>10.2e}")
    return "\n".join(lines)


def run(models: Sequence[str], batch_sizes: Sequence[int], runs: Optional[int] = None, warmup: int = 2,
        impls: Sequence[str] = ("auto",), json_path: Optional[Path] = None) -> int:
    import os
    impls = list(dict.fromkeys(["auto", *impls]))
    bad = [i for i in impls if i not in ("auto", "conv", "matmul", "train-form")]
    if bad:
        print(f"error: unknown --impls {bad}; choose from auto, conv, matmul, train-form", file=sys.stderr)
        return 2
    gemm = gemm_rate()
    print(f"SLaK CPU benchmark: zoo inference form vs a plain rendition of the authors' formulation, same weights "
          f"(fp32, eval, torch {torch.__version__}, {torch.get_num_threads()} threads, load "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())})", flush=True)
    print(f"machine fp32 GEMM rate (torch.mm 3136x499 @ 499x1996, median): {gemm:.1f} GFLOP/s", flush=True)
    rows = [row for name in models for row in run_one(name, batch_sizes, runs, warmup, impls, gemm)]
    print(format_rows(rows))
    gemm_after = gemm_rate()
    print(f"GEMM rate again after the runs: {gemm_after:.1f} GFLOP/s (a large change means the machine was busy)")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"gemm_gflops": [gemm, gemm_after], "rows": rows}, indent=2) + "\n")
        print(f"wrote {json_path}")
    return 0 if all(r["rel_diff"] <= TOLERANCE for r in rows) else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench_slak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)))
    parser.add_argument("--runs", type=int, default=None, help="timed passes per implementation (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--impls", default="auto", help="zoo paths to time: auto, conv, matmul, train-form")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    return run(args.models.split(","), [int(b) for b in args.batch_sizes.split(",")], args.runs, args.warmup,
               args.impls.split(","), args.json)


if __name__ == "__main__":
    sys.exit(main())
