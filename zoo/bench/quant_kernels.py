"""The weight-only kernels behind :mod:`zoo.lm.quant`, timed on this machine: ``zoo bench quant-kernels``.

One decoded token of ``mobilellm_125m`` at batch 1 is a chain of matrix-vector products: per layer q/o ``576 x 576``,
k/v ``192 x 576``, gate/up ``1536 x 576``, down ``576 x 1536``, 30 layers, then the ``32000 x 576`` output head.
Every candidate runs all of them once per round (random weights of the real shapes, a fresh input vector per
product); rounds interleave the candidates, and the table gives each one's median. Candidates: float32 and
bfloat16 ``F.linear`` and the zoo's one-row float32 kernel (:mod:`zoo.kernels.gemv`); the zoo's int8 / int4 layers
fed one float32 row (the zoo's decoding path: ``zoo_gemv`` where it runs, else the bf16 path below) and their
portable form (codes converted inside ``F.linear``); the 8-bit activation kernels (``act_bits=8``: the row rounded
to int8 per block of 32) alone on every instruction path this CPU runs (``avx2``, ``avxvnni``, ``avx512vnni``), on
the plain codes and on the codes repacked in tiles of 8 output rows (``zoo_gemv::a8_tiles``, the layer's one-row
path), and through the layer, beside the int16 ones (``act_bits=16``); ``aten._weight_int8pack_mm`` and the CPU int4 tinygemm kernel
``aten._weight_int4pack_mm_for_cpu`` called directly (the zoo's path for prompts); torchao's
``Int8WeightOnlyConfig`` and ``Int4OpaqueTensor`` (the same kernels behind tensor subclasses); int4 dequantized
per call; int8 dynamic activations with ``torch._int_mm`` (not weight-only: for reference). ``--decode`` adds
whole-model greedy decoding of ``mobilellm_125m`` (random weights) in each format.

Time only on a quiet machine (``uptime`` load below 1); ``--threads`` (default 2) sets torch's threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..factory import create_model
from ..kernels import gemv
from ..lm.quant import QuantizedLinear, portable_kernels, quantize_int8, quantize_model
from .harness import cpu_model, randomize_

__all__ = ["SHAPES", "candidates", "time_decode", "time_matvecs"]

D, FFN, KV, VOCAB, LAYERS = 576, 1536, 192, 32000, 30
SHAPES = [(D, D), (KV, D), (KV, D), (D, D), (FFN, D), (FFN, D), (D, FFN)] * LAYERS + [(VOCAB, D)]


def _linear(weight: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.weight.data = weight
    return layer


def _torchao_int8(weight: torch.Tensor, dtype: torch.dtype) -> Callable:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_  # optional, heavy: imported when timed

    layer = _linear(weight.to(dtype))
    quantize_(layer, Int8WeightOnlyConfig())
    return layer


def _torchao_int4(weight: torch.Tensor, dtype: torch.dtype, group_size: int) -> Callable:
    from torchao.prototype.quantization.int4 import Int4OpaqueTensor  # optional, heavy: imported when timed

    layer = _linear(weight.to(dtype))
    layer.weight = nn.Parameter(Int4OpaqueTensor.from_hp(weight.to(dtype), [1, group_size]), requires_grad=False)
    return layer


def _int8pack(weight: torch.Tensor, dtype: torch.dtype) -> Callable:
    q, scale = quantize_int8(weight)
    scale = scale.to(dtype)
    return lambda x: torch._weight_int8pack_mm(x, q, scale)


def _int_mm(weight: torch.Tensor) -> Callable:
    q, scale = quantize_int8(weight)
    qt = q.t()

    def run(x: torch.Tensor) -> torch.Tensor:
        x_scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / 127
        xq = F.pad(torch.round(x / x_scale).to(torch.int8), (0, 0, 0, 16))  # _int_mm wants more than 16 rows
        return torch._int_mm(xq, qt)[: x.shape[0]].float() * x_scale * scale

    return run


def _dequantized_int4(weight: torch.Tensor, group_size: int) -> Callable:
    layer = QuantizedLinear.from_float(_linear(weight), bits=4, group_size=group_size)
    return lambda x: F.linear(x, layer.dequantize(x.dtype))


def _gemv_int8(layer: QuantizedLinear) -> Callable:
    return lambda x: gemv.gemv_int8(x, layer.qweight, layer.scale)


def _gemv_int4(layer: QuantizedLinear) -> Callable:
    return lambda x: gemv.gemv_int4(x, layer.qweight, layer.scale, layer.zero, layer.group_size)


def _gemm_a8(layer: QuantizedLinear, isa: str) -> Callable:
    if layer.bits == 8:
        return lambda x: gemv.gemm_int8_a8(x, layer.qweight, layer.scale, isa)
    return lambda x: gemv.gemm_int4_a8(x, layer.qweight, layer.scale, layer.zero, layer.group_size, isa)


def _tiles(layer: QuantizedLinear, isa: str) -> Callable:
    if layer.bits == 8:
        packed, scale = gemv.repack_int8(layer.qweight, layer.scale)
    else:
        packed, scale = gemv.repack_int4(layer.qweight, layer.scale, layer.zero)
    n, g = layer.out_features, layer.group_size or 0
    return lambda x: gemv.gemm_a8_tiles(x, packed, scale, n, g, isa)


def _portable(layer: QuantizedLinear) -> Callable:
    def run(x: torch.Tensor) -> torch.Tensor:
        with portable_kernels():
            return layer(x)

    return run


def candidates(torchao: bool = True) -> dict[str, tuple[Callable[[torch.Tensor], Callable], torch.dtype]]:
    """name -> (build a callable from a float32 weight, input dtype)."""
    bf16, fp32 = torch.bfloat16, torch.float32
    zoo8 = lambda w: QuantizedLinear.from_float(_linear(w), bits=8, act_bits=16)  # noqa: E731
    zoo8a8 = lambda w: QuantizedLinear.from_float(_linear(w), bits=8, act_bits=8)  # noqa: E731
    out = {
        "fp32 F.linear": (lambda w: _linear(w), fp32),
        "bf16 F.linear": (lambda w: _linear(w.to(bf16)), bf16),
        **{
            f"zoo fp32 one row (zoo_gemv::f32 {path})": (lambda w, path=path: lambda x: gemv.gemv_f32(x, w, path), fp32)
            for path in gemv.f32_paths()
        },
        "zoo_gemv::int8 (the kernel alone)": (lambda w: _gemv_int8(zoo8(w)), fp32),
        "zoo int8 layer forward, one fp32 row (zoo_gemv::int8)": (zoo8, fp32),
        **{
            f"zoo_gemv::int8_a8 {isa} (the kernel alone)": (lambda w, isa=isa: _gemm_a8(zoo8a8(w), isa), fp32)
            for isa in gemv.cpu_isas()
        },
        **{
            f"zoo_gemv::a8_tiles int8 {isa} (repacked codes, the kernel alone)": (
                lambda w, isa=isa: _tiles(zoo8a8(w), isa),
                fp32,
            )
            for isa in gemv.cpu_isas()
        },
        "zoo int8 layer forward act_bits=8, one fp32 row": (zoo8a8, fp32),
        "zoo int8 portable (F.linear(x, q.to(x.dtype)) * scale)": (lambda w: _portable(zoo8(w)), fp32),
        "aten _weight_int8pack_mm, fp32 input": (lambda w: _int8pack(w, fp32), fp32),
        "aten _weight_int8pack_mm, bf16 input": (lambda w: _int8pack(w, bf16), bf16),
        "int8 dynamic activations, torch._int_mm (not weight-only)": (_int_mm, fp32),
    }
    if torchao:
        out["torchao Int8WeightOnlyConfig, fp32 input"] = (lambda w: _torchao_int8(w, fp32), fp32)
        out["torchao Int8WeightOnlyConfig, bf16 input"] = (lambda w: _torchao_int8(w, bf16), bf16)
    for g in (32, 64):
        zoo4 = lambda w, g=g: QuantizedLinear.from_float(_linear(w), bits=4, group_size=g, act_bits=16)  # noqa: E731
        zoo4a8 = lambda w, g=g: QuantizedLinear.from_float(_linear(w), bits=4, group_size=g, act_bits=8)  # noqa: E731
        out[f"zoo_gemv::int4 g{g} (the kernel alone)"] = (lambda w, make=zoo4: _gemv_int4(make(w)), fp32)
        out[f"zoo int4 g{g} layer forward, one fp32 row (zoo_gemv::int4)"] = (zoo4, fp32)
        for isa in gemv.cpu_isas():
            out[f"zoo_gemv::int4_a8 g{g} {isa} (the kernel alone)"] = (
                lambda w, make=zoo4a8, isa=isa: _gemm_a8(make(w), isa),
                fp32,
            )
            out[f"zoo_gemv::a8_tiles int4 g{g} {isa} (repacked codes, the kernel alone)"] = (
                lambda w, make=zoo4a8, isa=isa: _tiles(make(w), isa),
                fp32,
            )
        out[f"zoo int4 g{g} layer forward act_bits=8, one fp32 row"] = (zoo4a8, fp32)
        out[f"aten _weight_int4pack_mm_for_cpu g{g}, bf16 input"] = (lambda w, make=zoo4: make(w)._int4_cpu, bf16)
        if torchao:
            out[f"torchao Int4OpaqueTensor g{g}, fp32 input"] = (lambda w, g=g: _torchao_int4(w, fp32, g), fp32)
            out[f"torchao Int4OpaqueTensor g{g}, bf16 input"] = (lambda w, g=g: _torchao_int4(w, bf16, g), bf16)
    out["int4 g32 dequantized per call, fp32 input"] = (lambda w: _dequantized_int4(w, 32), fp32)
    if not gemv.available():  # no AVX2 or no compiler: the zoo's own kernels are not there to time
        out = {
            k: v for k, v in out.items() if not k.startswith(("zoo fp32 one row", "zoo_gemv")) and "act_bits" not in k
        }
    return out


@torch.inference_mode()
def time_matvecs(names: list[str] | None = None, rounds: int = 7, torchao: bool = True) -> dict[str, float]:
    """Median milliseconds of one token's matrix-vector products per candidate (interleaved rounds)."""
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(n, k, generator=gen) / k**0.5 for n, k in SHAPES]
    table = candidates(torchao)
    chosen = {n: table[n] for n in (names or table)}
    built, inputs = {}, {}
    for name, (build, dtype) in chosen.items():
        try:
            built[name] = [build(w) for w in weights]
        except Exception as e:  # a candidate this install cannot run is reported, not fatal
            print(f"{name}: not available ({type(e).__name__}: {str(e)[:120]})", file=sys.stderr)
            continue
        inputs[name] = [torch.randn(1, k, generator=gen).to(dtype) for _, k in SHAPES]
        for f, x in zip(built[name], inputs[name]):  # warm-up (packs int4 weights)
            f(x)
    times: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(rounds):
        for name, fns in built.items():
            start = time.perf_counter()
            for f, x in zip(fns, inputs[name]):
                f(x)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


@torch.inference_mode()
def time_decode(formats=(None, "bf16", "int8", "int4"), prompt: int = 16, new_tokens: int = 16) -> dict[str, float]:
    """Milliseconds per decoded token of ``mobilellm_125m`` (random weights, greedy, batch 1) in each format."""
    base = randomize_(create_model("mobilellm_125m")).eval()
    ids = torch.randint(0, 32000, (1, prompt), generator=torch.Generator().manual_seed(0))
    out = {}
    for fmt in formats:
        # the same float weights, then quantized
        model = base if fmt is None else quantize_model(_copy_float(base), fmt).eval()
        model.generate(ids, max_new_tokens=2)  # warm-up
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=1)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=new_tokens + 1)
        total = time.perf_counter() - start
        out[fmt or "fp32"] = (total - prefill) / new_tokens * 1e3
    return out


def _copy_float(model: nn.Module) -> nn.Module:
    fresh = create_model("mobilellm_125m")
    fresh.load_state_dict(model.state_dict())
    return fresh


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``zoo bench quant-kernels``: the weight-only kernels of one decoded token, timed on this machine."""
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--no-torchao", action="store_true", help="leave torchao's candidates out")
    p.add_argument("--decode", action="store_true", help="also time whole-model decoding in each format")


def run(args: argparse.Namespace) -> int:
    """Time the candidates (and, with ``--decode``, whole-model decoding) and print the tables."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {args.threads} threads, load average {load:.2f}, {cpu_model()}")
    if gemv.available():
        print(f"8-bit activation kernels: {gemv.kernel_choice()}")
    print("| candidate | ms per token (mobilellm_125m matvecs) |\n|---|---|")
    for name, ms in time_matvecs(rounds=args.rounds, torchao=not args.no_torchao).items():
        print(f"| {name} | {ms:.1f} |")
    if args.decode:
        print("\n| format | ms per decoded token (mobilellm_125m, batch 1) |\n|---|---|")
        for fmt, ms in time_decode().items():
            print(f"| {fmt} | {ms:.1f} |")
    return 0
