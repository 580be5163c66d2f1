"""CPU benchmark of the zoo's SLaK inference form against a plain rendition of the authors' formulation.

The peer is :mod:`zoo.bench.reference.slak`: the authors' three-branch large kernel (``F.conv2d`` depthwise with
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

    zoo bench slak --models slak_tiny [--batch-sizes 1,8] [--runs N] [--impls auto,conv,matmul,train-form]
"""

from collections.abc import Callable, Sequence

import torch

from ..factory import create_model
from ..models.slak import checkpoint_filter_fn
from ..registry import model_info
from ..weights import load_state_dict_checked
from .harness import Row, default_runs, median, output_diff, peer_row, time_interleaved
from .reference.slak import make_authors_state_dict, reference_forward

PEER = "authors"
DEFAULT_MODELS = ("slak_tiny",)
DEFAULT_BATCH_SIZES = (1, 8)
TARGET = {1: 2.0}
TOLERANCE = 1e-4
IMPLS = ("auto", "conv", "matmul", "train-form")


def gemm_rate(m: int = 3136, k: int = 499, n: int = 1996, runs: int = 10) -> float:
    """fp32 GFLOP/s of ``torch.mm`` on a (m x k) @ (k x n) product (a slak_tiny stage-1-like pointwise shape)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
    times = time_interleaved({"mm": lambda: torch.mm(a, b)}, runs, warmup=2)
    return 2 * m * k * n / median(times["mm"]) / 1e9


def build(name: str, impls: Sequence[str]) -> dict[str, Callable]:
    """``{label: forward}``: the authors' formulation, then the zoo's models on the same weights."""
    state_dict = make_authors_state_dict(name, seed=0)
    out: dict[str, Callable] = {PEER: lambda x: reference_forward(state_dict, x)}
    for impl in impls:
        model = create_model(name) if impl == "train-form" else create_model(name, deploy=True, large_kernel_impl=impl)
        load_state_dict_checked(model, dict(state_dict), "the authors' layout", filter_fn=checkpoint_filter_fn)
        out["zoo" if impl == "auto" else f"zoo-{impl}"] = model.eval()
    return out


def compare(
    name: str,
    batch_sizes: Sequence[int],
    runs: int | None = None,
    warmup: int = 1,
    impls: Sequence[str] = ("auto",),
    gemm_gflops: float | None = None,
) -> list[Row]:
    """Each zoo form against the authors' formulation: throughput, GFLOP/s against the GEMM rate, differences."""
    fns = build(name, list(dict.fromkeys(["auto", *impls])))
    macs = model_info(name)["reference"]["macs"]  # dense fvcore MACs per image at 224
    size = model_info(name)["pretrained_cfg"]["input_size"][-1]
    gemm_gflops = gemm_gflops or gemm_rate()
    rows = []
    for bs in batch_sizes:
        n = runs or default_runs(bs, base=10, floor=3)
        x = torch.randn(bs, 3, size, size, generator=torch.Generator().manual_seed(bs))
        times = time_interleaved(
            {k: (lambda fn=fn, x=x: fn(x)) for k, fn in fns.items()}, n, warmup, desc=f"{name} b{bs}"
        )
        with torch.inference_mode():
            outputs = {k: fn(x) for k, fn in fns.items()}
        for key in [k for k in fns if k != PEER]:
            seconds = median(times[key])
            gflops = 2 * macs * bs / seconds / 1e9
            rows.append(
                peer_row(
                    name,
                    f"batch {bs}",
                    PEER,
                    key,
                    "img/s",
                    times[PEER],
                    times[key],
                    n,
                    TARGET.get(bs) if key == "zoo" else None,
                    work=bs,
                    **output_diff(outputs[key], outputs[PEER]),
                    extra={"latency ms": seconds * 1e3, "GFLOP/s": gflops, "of GEMM": f"{gflops / gemm_gflops:.0%}"},
                )
            )
    return rows
