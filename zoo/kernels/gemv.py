"""Matrix products for decoding on an AVX2 CPU: float32, int8 and int4 weights, activations rounded to int16 or int8.

A decoded token multiplies one activation row by every weight matrix of the model once, so its speed is how fast
the CPU streams and converts the weights. PyTorch's kernels for that case are made for other shapes or CPUs.
``zoo bench quant-kernels`` times every kernel here beside PyTorch's on the products of one decoded token, on the
machine it runs on (compare within one run only); the figures this design was checked against, with their machine
and run, are in ``results/notes/code_figures.md``.

Numerics:

* ``gemv_f32``: the float32 product (four chains of eight lanes of partial sums, then their sum). Two paths
  (:data:`F32_PATHS`, :func:`f32_paths`): ``avx2``, and ``avx512`` (AVX-512F) with the four chains two to a 512-bit
  register, every lane the same ``fma`` in the same order: the same bits.
* ``gemv_int8`` / ``gemv_int4``: the activation row is rounded to int16 per block of 32 columns (``x = d * xq``,
  ``d`` = block absolute max / 32767, relative error below 2e-5 of the block's largest value), then the weights'
  integer codes are multiplied with it by ``vpmaddwd`` (exact in int32) and each block's sum is scaled in float32:
  ``y[n] = scale[n] * sum_b d_b * sum_c q[n, c] xq[c]`` (int8), and for int4 ``w = (u - 8) * scale_g + zero_g``,
  ``y[n] = sum_g scale_g sum_b d_b sum_c u xq + sum_g (zero_g - 8 scale_g) * sum_{c in g} x_c``. This is closer to
  the float product of the dequantized weights than the bf16-rounded rows PyTorch's integer kernels are fed.
  These are the kernels of ``act_bits=16`` (:mod:`zoo.lm.quant`), and the fallback of ``act_bits=8``.
* ``gemm_int8_a8`` / ``gemm_int4_a8`` (``act_bits=8``, any number of rows): each row is rounded to int8 per block of
  32 columns as llama.cpp's Q8_0 does it (:func:`quantize_q8_0`: ``d`` = block absolute max / 127, ``q = round(x /
  d)`` to nearest even, ``|q| <= 127``; a block below float32's smallest normal number is zero codes with ``d = 0``;
  error at most ``d / 2`` per value, relative 1/254 of the block's largest value), then multiplied with the weight
  codes byte by byte, every block's sum exact in int32: int8 ``y[n] = scale[n] * sum_b d_b * sum_c q[n, c] xq[c]``;
  int4 ``y[n] = sum_b scale_g d_b sum_c (u - 8) xq + sum_g zero_g * sum_{c in g} x_c`` (the zero point meets the
  float row, so only the centred part ``(u - 8) * scale`` sees the rounding). A row length that is no multiple of
  32 is refused (the layers keep the portable product for such widths; every registered model's widths are
  multiples of 32). Three instruction paths give the block sums: ``avx2`` (``vpmaddubsw`` + ``vpmaddwd``; the
  unsigned-by-signed byte multiply takes ``|w|`` and the activation with ``w``'s sign, as llama.cpp does, so no pair
  sum saturates), ``avxvnni`` (``vpdpbusd`` on 256 bits) and ``avx512vnni`` (AVX-512's ``vpdpbusd``: on 512 bits,
  two blocks per register, for fewer than 4 rows from the plain codes; in a prompt and in the decode tiles two tiles
  of eight output rows per register, tile ``t``'s in the low half and ``t + 1``'s in the high, the float code then
  on sixteen lanes; int4 one row: two blocks per 256 bits, the row laid out to match the nibbles). Each is
  compiled with function-level target attributes into the one build and chosen at run time from what the CPU
  reports (``__builtin_cpu_supports``) and measured on it: :func:`cpu_isas` names the paths this CPU runs; where it
  runs more than one, :func:`calibrate` times each at the first product (one row from the repacked tiles, and a
  64-row GEMM, both through a 1536x576 projection at int8 and int4, one thread; about 0.1 s per path; and the
  float32 one-row product's paths through the same projection) and keeps the fastest for a decoded token, for a
  prompt and for the float32 product in a file beside the built kernels, keyed by the CPU's name;
  :func:`kernel_choice` says what was chosen and why, :func:`kernel_path` the path for a number of rows, and
  ``ZOO_GEMV_ISA=avx2|avxvnni|avx512vnni`` forces one, and the float32 product's width with it (refused with one
  line where the CPU lacks it; read at the first product). Integer sums are exact and every path hands them to the
  same float code, so the paths give identical bits and the choice changes speed only. The choice differs between
  CPUs, and on one CPU between a decoded token and a prompt (on a CPU with both VNNI widths the 256-bit path has won
  the one-row product and the 512-bit one the prompt: ``results/notes/code_figures.md``). Several rows are one small
  GEMM: all rows are quantized once and output rows are split across threads in tiles of 8. From 4 rows, each
  thread repacks each of its tiles into the decode tiles' layout below, once for all rows (int8 codes as ``w + 128``:
  AVX2 restores the signed codes, VNNI takes ``128 * sum xq`` off each block), and 8 activation rows at a time meet its
  codes block by block, one output row per lane; each activation row's outputs then come from the decode tiles' float
  code.

Fewer rows (a decoded token) read a copy of the codes repacked once per layer (:func:`repack_int4` /
:func:`repack_int8`, kept beside the plain codes by the layer, never saved): tiles of 8 output rows in which one
32-byte chunk holds four codes of each of the 8 rows, so one byte product with four activation bytes broadcast adds
to all 8 rows' block sums, with no sum across lanes per row (:func:`gemm_a8_tiles`); its float code repeats the
plain kernels' order (a block's term in accumulator ``block % 8`` for whole groups of eight, the tail in one running
sum by ``fma``), so both give the same bits.

The kernels are C++ (``zoo/kernels/gemv.cpp``, ``gemv_a8.h`` and ``simd.h``, shipped with the package), built by
``torch.utils.cpp_extension`` with the system's C++ compiler at first use (about 15 s; cached in torch's extension
folder, keyed by the source and the torch built against) and registered as the operators
``zoo_gemv::f32`` / ``f32_2`` / ``f32_3`` (one row, two or three weights: :func:`gemv_f32_many`) / ``int8`` /
``int4`` / ``int8_a8`` / ``int4_a8`` / ``q8_0`` / ``attend`` (one token's attention,
:func:`attend_one`; the eager model's one-token attention calls it too, so eager and compiled decoding attend
with the same bits), with shape functions so that ``torch.compile`` calls them from a compiled graph;
:class:`OneRowProducts` hands a compiled graph's float32 one-row products to ``zoo_gemv::f32``. :func:`available`
says whether they can run here: an AVX2 CPU (``torch.backends.cpu.get_cpu_capability()``), a compiler, and
``ZOO_GEMV`` not set to ``0``. Where not, callers keep PyTorch's kernels; a failed build warns once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass

from ..platform.machine import cpu_model
from .build import build_or_warn, built_once

__all__ = [
    "ISAS",
    "KernelChoice",
    "OneRowProducts",
    "attend_one",
    "available",
    "build_folder",
    "calibrate",
    "chosen",
    "cpu_isas",
    "cpu_key",
    "f32_paths",
    "gemm_int4_a8",
    "gemm_a8_tiles",
    "gemm_int8_a8",
    "gemv_f32",
    "gemv_f32_many",
    "gemv_int4",
    "gemv_int8",
    "kernel_choice",
    "kernel_path",
    "measure_paths",
    "quantize_q8_0",
    "repack_int4",
    "repack_int8",
    "supports",
    "supports_a8",
]

# the kernels' C++ source ships with the package beside this file (gemv.cpp, which includes gemv_a8.h and simd.h);
# the build is keyed by the content of all three
SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))
SOURCE_PATH = os.path.join(SOURCE_DIR, "gemv.cpp")
SOURCE_FILES = ("gemv.cpp", "gemv_a8.h", "simd.h")
_TEXTS = {}
for _name in SOURCE_FILES:
    with open(os.path.join(SOURCE_DIR, _name), encoding="utf-8") as _f:
        _TEXTS[_name] = _f.read()
_SOURCE = "".join(_TEXTS.values())

# AVX2 with FMA and F16C (fp16 scales); OpenMP, or at::parallel_for runs on one thread; ATen's vectors in AVX2.
# -ffp-contract=off: a multiply and an add are fused only where the source says so (an fma intrinsic, std::fma), so
# a function built for another target (the 512-bit paths) cannot round its scalar code differently
_FLAGS = [
    "-O3", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off", "-fopenmp", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"
]  # fmt: skip
_state: dict = {}
_lock = threading.Lock()


def available() -> bool:
    """Whether the kernels run here (built at the first call): an AVX2 CPU, a C++ compiler, ``ZOO_GEMV`` not
    ``0``. A build that fails warns once and leaves PyTorch's kernels in use."""
    return built_once(_state, _lock, _build)


def _build() -> bool:
    folder = build_or_warn(
        "zoo_gemv", SOURCE_DIR, SOURCE_FILES, _FLAGS, "ZOO_GEMV", "CPU matrix-vector kernels",
        "decoding uses PyTorch's kernels (slower)",
    )  # fmt: skip
    if folder is None:
        return False
    _state["folder"] = folder
    _state["mask"] = int(torch.ops.zoo_gemv.cpu_isas())  # read once, here: never an operator call inside a trace
    _register_shapes()
    return True


def _register_shapes() -> None:
    def one_row(x: torch.Tensor, weight: torch.Tensor, *rest) -> torch.Tensor:
        return x.new_empty((1, weight.shape[0]))

    for name in ("f32", "int8", "int4"):
        torch.library.register_fake(f"zoo_gemv::{name}")(one_row)

    def rows_of_each(x: torch.Tensor, *weights_and_path) -> tuple[torch.Tensor, ...]:
        return tuple(x.new_empty((1, w.shape[0])) for w in weights_and_path[:-1])

    for name in ("f32_2", "f32_3"):
        torch.library.register_fake(f"zoo_gemv::{name}")(rows_of_each)

    def rows_out(x: torch.Tensor, weight: torch.Tensor, *rest) -> torch.Tensor:
        return x.new_empty((x.shape[0], weight.shape[0]))

    for name in ("int8_a8", "int4_a8"):
        torch.library.register_fake(f"zoo_gemv::{name}")(rows_out)

    @torch.library.register_fake("zoo_gemv::a8_tiles")
    def _(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, n: int, group_size: int, isa: int):
        return x.new_empty((x.shape[0], n))

    @torch.library.register_fake("zoo_gemv::q8_0")
    def _(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.new_empty(x.shape, dtype=torch.int8), x.new_empty((x.shape[0], x.shape[1] // 32))

    @torch.library.register_fake("zoo_gemv::attend")
    def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        return q.new_empty((1, 1, q.shape[1] * q.shape[3]))


def supports(x: torch.Tensor, in_features: int) -> bool:
    """Whether ``x`` is one float row on the CPU (float32, or bf16 / fp16 the caller casts to float32) of a width
    the integer kernels take (a multiple of 32)."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and x.numel() == in_features
        and in_features % 32 == 0
    )


def gemv_f32(x: torch.Tensor, weight: torch.Tensor, path: str | None = None) -> torch.Tensor:
    """``x (1, K) @ weight (N, K).T`` in float32; ``path`` one of :func:`f32_paths` (default: the one chosen here,
    :func:`kernel_choice`). Every path gives the same bits."""
    return torch.ops.zoo_gemv.f32(x.reshape(1, -1), weight, _f32_index(path))


def gemv_f32_many(x: torch.Tensor, weights: list[torch.Tensor], path: str | None = None) -> list[torch.Tensor]:
    """``x (1, K)``'s products with several float32 weights ``(N_i, K)``: each as :func:`gemv_f32` gives it, two or
    three at a time in one call that splits all their rows across the threads (a layer's query, key and value: one
    call and one fork and join, not three)."""
    x, ys, index = x.reshape(1, -1), [], _f32_index(path)
    for at in range(0, len(weights), 3):
        chunk = weights[at : at + 3]
        op = {1: torch.ops.zoo_gemv.f32, 2: torch.ops.zoo_gemv.f32_2, 3: torch.ops.zoo_gemv.f32_3}[len(chunk)]
        y = op(x, *chunk, index)
        ys.extend([y] if len(chunk) == 1 else y)
    return ys


def gemv_int8(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x (1, K) @ (q * scale[:, None]).T`` for int8 codes ``q (N, K)`` and float32 row scales ``scale (N,)``."""
    return torch.ops.zoo_gemv.int8(x.reshape(1, -1), q, scale)


def gemv_int4(
    x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int
) -> torch.Tensor:
    """``x (1, K)`` times the int4 weight of :mod:`zoo.lm.quant`'s plain layout: ``codes (N, K / 2)`` uint8
    (even column in the low nibble), ``scale`` / ``zero`` float16 ``(N, K / group_size)``, ``w = (u - 8) * scale +
    zero``; ``group_size`` a multiple of 32."""
    return torch.ops.zoo_gemv.int4(x.reshape(1, -1), codes, scale, zero, group_size)


def attend_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """One query token's attention ``q (1, H, 1, D)`` over keys/values ``(1, KV, S, D)`` (``KV`` dividing ``H``;
    float32) at the positions ``mask`` (``S`` booleans, any shape) marks, as ``(1, 1, H * D)``: what
    ``F.scaled_dot_product_attention`` gives with that boolean mask (a row that sees nothing sees everything), with
    the work of the seen positions only. A static cache of 256 slots holding 40 tokens costs 40 positions. The query
    heads that share a key-value head meet each span of 32 positions together, so a thread reads each key and value
    row once: in a decoded token the cache comes from memory (the weights streamed since evicted it)."""
    return torch.ops.zoo_gemv.attend(q, k, v, mask.reshape(-1), scale)


# ------------------------------------------------------------------------------------------------------------------
# 8-bit activations (act_bits=8)
# ------------------------------------------------------------------------------------------------------------------

ISAS = ("avx2", "avxvnni", "avx512vnni")  # the instruction paths of the 8-bit kernels, narrowest first
_ISA_NAMES = {"avx2": "AVX2", "avxvnni": "AVX-VNNI", "avx512vnni": "AVX-512 VNNI"}
PROMPT_ROWS = 4  # from this many rows the small GEMM runs (a prompt); fewer read the repacked tiles (a decoded token)
CALIBRATION_FILE = "paths.json"  # beside the built kernels: {CPU key: the measured choice}
F32_PATHS = ("avx2", "avx512")  # the float32 one-row product on 256-bit registers or on 512 (AVX-512F)
_F32_BITS = {"avx2": 1, "avx512": 8}  # their bits in the kernels' CPU mask (zoo_gemv::cpu_isas)


@dataclasses.dataclass(frozen=True)
class KernelChoice:
    """The paths the 8-bit activation kernels take on this CPU, and why: ``decode`` for one to three rows (the
    repacked tiles of a decoded token), ``prompt`` for :data:`PROMPT_ROWS` rows and more (the small GEMM);
    ``ms`` the calibration's times per path (``{"decode": {path: ms}, "prompt": {...}, "f32": {...}}``, empty
    when nothing was measured); ``f32`` the float32 one-row product's path (:data:`F32_PATHS`)."""

    decode: str
    prompt: str
    why: str
    ms: dict = dataclasses.field(default_factory=dict)
    f32: str = "avx2"

    def __str__(self) -> str:
        return f"decode {self.decode}, prompt {self.prompt}, float32 {self.f32}: {self.why}"


def _cpu_mask() -> int:
    return _state["mask"] if available() else 0


def cpu_isas() -> tuple[str, ...]:
    """The paths of the 8-bit activation kernels this CPU runs (what it reports, through the compiler's
    ``__builtin_cpu_supports``), narrowest first; empty where the kernels are not built."""
    mask = _cpu_mask()
    return tuple(name for i, name in enumerate(ISAS) if mask >> i & 1)


def f32_paths() -> tuple[str, ...]:
    """The paths of the float32 one-row product this CPU runs (:data:`F32_PATHS`: ``avx2``, and ``avx512`` where it
    reports AVX-512F); empty where the kernels are not built."""
    mask = _cpu_mask()
    return tuple(name for name in F32_PATHS if mask & _F32_BITS[name])


def _forced(found: tuple[str, ...]) -> str | None:
    """``ZOO_GEMV_ISA`` checked against what this CPU runs (a one-line ``ValueError`` where it cannot), or None."""
    forced = os.environ.get("ZOO_GEMV_ISA", "").strip().lower()
    if not forced:
        return None
    if forced not in ISAS:
        raise ValueError(f"ZOO_GEMV_ISA={forced!r} is not a kernel path: use one of {', '.join(ISAS)}, or unset it")
    if forced not in found:
        runs = ", ".join(found) or "none of them"
        raise ValueError(
            f"ZOO_GEMV_ISA={forced}: this CPU does not report {_ISA_NAMES[forced]} (it runs {runs}); unset "
            "ZOO_GEMV_ISA or name a path it runs"
        )
    return forced


def kernel_choice() -> KernelChoice | None:
    """What the kernels run here, and why: ``ZOO_GEMV_ISA`` when set (its width for the float32 product too:
    ``avx512vnni`` takes the 512-bit one); the only paths when the CPU runs one of each; else the fastest path for
    a decoded token, for a prompt and for the float32 product as measured on this CPU (:func:`calibrate`, at the
    first call, kept beside the built kernels under the CPU's name). None where the kernels do not run."""
    found = cpu_isas()
    if not found:
        return None
    wide = f32_paths()
    forced = _forced(found)
    if forced:
        return KernelChoice(
            forced, forced, f"ZOO_GEMV_ISA={forced}", f32="avx512" if forced == "avx512vnni" else "avx2"
        )
    if len(found) == 1 and len(wide) == 1:
        return KernelChoice(found[0], found[0], f"the only path this CPU reports ({_ISA_NAMES[found[0]]})")
    return calibrate()


def kernel_path(rows: int = 1) -> str | None:
    """The path the 8-bit activation kernels take for ``rows`` rows (:func:`kernel_choice`: ``ZOO_GEMV_ISA``, the
    only path, or the one measured fastest here); None where the kernels do not run."""
    choice = kernel_choice()
    if choice is None:
        return None
    return choice.decode if rows < PROMPT_ROWS else choice.prompt


def _cpu_key(found: tuple[str, ...]) -> str:
    return f"{cpu_model()} ({', '.join(found)})"


def cpu_key() -> str:
    """This CPU as the calibration and the prebuilt decode steps (:mod:`zoo.lm.aot_step`) know it: its name and
    the kernel paths it reports."""
    return _cpu_key(cpu_isas())


def build_folder() -> str | None:
    """The folder of the built kernels (None where they are not built)."""
    return _state["folder"] if available() else None


def calibrate(refresh: bool = False) -> KernelChoice:
    """The fastest path on this CPU for a decoded token, for a prompt and for the float32 product: read from the
    calibration file beside the built kernels (keyed by the CPU's name and the paths it reports), else measured
    (:func:`measure_paths`, about 0.1 s per path) and written there; ``refresh`` measures again. Every path gives
    the same bits, so the choice changes speed only."""
    found, wide = cpu_isas(), f32_paths()
    key = _cpu_key(found)
    path = os.path.join(_state["folder"], CALIBRATION_FILE)
    known = _state.get("calibrated")  # this process's answer: the file is read once
    if not refresh and known is not None and known[0] == (key, path):
        return known[1]
    choice = _calibrate(found, wide, key, path, refresh)
    _state["calibrated"] = ((key, path), choice)
    return choice


def _calibrate(found: tuple[str, ...], wide: tuple[str, ...], key: str, path: str, refresh: bool) -> KernelChoice:
    kept = {}
    runs = {"decode": found, "prompt": found, "f32": wide}
    with _lock:
        try:
            with open(path, encoding="utf-8") as f:
                kept = json.load(f)
            ms = kept[key]
            if not refresh and all(set(ms.get(k, ())) == set(p) for k, p in runs.items()):
                return _fastest(ms, f"measured on this CPU ({key}), kept in {path}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            kept = kept if isinstance(kept, dict) else {}  # no file, another CPU's, or unreadable: measured anew
        ms = measure_paths(found, f32=wide)
        kept[key] = ms
        try:  # whole or not at all, for a process beside this one
            tmp = f"{path}.{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(kept, f, indent=1)
            os.replace(tmp, path)
        except OSError:  # a read-only build folder: measured again by the next process
            pass
    return _fastest(ms, f"measured on this CPU ({key}) at the first product")


def _fastest(ms: dict, why: str) -> KernelChoice:
    decode, prompt, f32 = (min(ms[k], key=ms[k].get) for k in ("decode", "prompt", "f32"))
    times = "; ".join(f"{k} " + ", ".join(f"{p} {t:.3f}" for p, t in ms[k].items()) for k in ms)
    return KernelChoice(decode, prompt, f"{why}; ms per path: {times}", ms, f32)


def measure_paths(paths: tuple[str, ...], rounds: int = 5, f32: tuple[str, ...] = ()) -> dict[str, dict[str, float]]:
    """Milliseconds per path, the best of ``rounds`` interleaved rounds: ``decode`` one row through a
    ``mobilellm_125m`` MLP projection (1536 x 576) from the repacked tiles at int8 and int4 (g32), ``prompt`` 64
    rows through the same weights by the small GEMM, ``f32`` (for the float32 paths ``f32``) one row through the
    projection in float32. Random values: the time does not depend on them."""
    g = torch.Generator().manual_seed(0)
    n, k = 1536, 576
    q = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g)
    scale = torch.rand(n, generator=g) + 0.5
    codes = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=g)
    s4, z4 = (torch.rand(n, k // 32, generator=g).half() for _ in range(2))
    t8, t4 = repack_int8(q, scale), repack_int4(codes, s4, z4)
    one, many = torch.randn(1, k, generator=g), torch.randn(64, k, generator=g)
    wf = torch.randn(n, k, generator=g)
    ops = torch.ops.zoo_gemv

    def decode(i: int) -> None:
        for _ in range(20):
            ops.a8_tiles(one, *t8, n, 0, i)
            ops.a8_tiles(one, *t4, n, 32, i)

    def prompt(i: int) -> None:
        ops.int8_a8(many, q, scale, i)
        ops.int4_a8(many, codes, s4, z4, 32, i)

    def f32_row(i: int) -> None:
        for _ in range(20):
            ops.f32(one, wf, i)

    kinds = (
        ("decode", decode, 20, paths, ISAS),
        ("prompt", prompt, 1, paths, ISAS),
        ("f32", f32_row, 20, f32, F32_PATHS),
    )
    kinds = tuple(kind for kind in kinds if kind[3])
    best = {kind: dict.fromkeys(run, float("inf")) for kind, _, _, run, _ in kinds}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for _ in range(rounds):
                for kind, timed, calls, run, names in kinds:
                    for p in run:
                        start = time.perf_counter()
                        timed(names.index(p))
                        best[kind][p] = min(best[kind][p], (time.perf_counter() - start) * 1e3 / calls)
    finally:
        torch.set_num_threads(threads)
    return best


def _isa(isa: str | None, rows: int = 1) -> int:
    """The path's index for the operators: ``isa`` when named (checked), else :func:`kernel_path` for ``rows``
    rows, decided once per process (at the first product)."""
    return _chosen(rows >= PROMPT_ROWS) if isa is None else _named(isa, "kernel path", ISAS, cpu_isas())


def _named(path: str, what: str, names: tuple[str, ...], runs: tuple[str, ...]) -> int:
    """A path named by the caller as the operators' index, refused in one line where this CPU does not run it."""
    if path not in runs:
        raise ValueError(f"{what} {path!r} does not run on this CPU (it runs {', '.join(runs) or 'none'})")
    return names.index(path)


def chosen() -> KernelChoice:
    """:func:`kernel_choice`, kept for the process (decided at its first product, or here). An export calls it
    first, so that no timing runs inside the trace."""
    choice = _state.get("choice")
    if choice is None:
        choice = kernel_choice()
        if choice is None:
            raise RuntimeError("the zoo's CPU kernels do not run on this machine (no AVX2 build)")
        _state["choice"] = choice
    return choice


@torch._dynamo.assume_constant_result  # inside a compiled graph: run as plain Python, its result a constant
def _chosen(prompt: bool) -> int:
    """The index of the chosen path for a prompt or a decoded token (:func:`kernel_choice`, kept for the process)."""
    choice = chosen()
    return ISAS.index(choice.prompt if prompt else choice.decode)


@torch._dynamo.assume_constant_result
def _chosen_f32() -> int:
    """The index of the chosen float32 path (:data:`F32_PATHS`)."""
    return F32_PATHS.index(chosen().f32)


def _f32_index(path: str | None) -> int:
    """The float32 path's index for the operators: ``path`` when named (checked), else the chosen one."""
    return _chosen_f32() if path is None else _named(path, "float32 path", F32_PATHS, f32_paths())


def supports_a8(x: torch.Tensor, in_features: int) -> bool:
    """Whether the 8-bit activation kernels take rows ``x`` (float on the CPU, any number of rows) of width
    ``in_features``: a multiple of 32 (the Q8_0 block; other widths are refused by the kernels)."""
    return (
        x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16, torch.float16) and in_features % 32 == 0
    )


def quantize_q8_0(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``x (M, K)`` (float32, ``K`` a multiple of 32) as the kernels quantize them: int8 codes ``(M, K)`` and
    one float32 scale per block of 32, ``(M, K / 32)``; ``d = amax / 127``, ``q = round(x / d)`` (ties to even); a
    block whose largest magnitude is below float32's smallest normal number is zero codes with ``d = 0``."""
    available()
    return torch.ops.zoo_gemv.q8_0(x)


def gemm_int8_a8(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, isa: str | None = None) -> torch.Tensor:
    """``x (M, K) @ (q * scale[:, None]).T`` with ``x`` quantized to int8 per block of 32 (Q8_0) and integer
    products; ``isa`` picks a path (default :func:`kernel_path`). Float32 ``(M, N)``."""
    return torch.ops.zoo_gemv.int8_a8(x.reshape(-1, q.shape[1]), q, scale, _isa(isa, PROMPT_ROWS))


def gemm_int4_a8(
    x: torch.Tensor,
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int,
    isa: str | None = None,
) -> torch.Tensor:
    """``x (M, K)`` times the int4 weight of :func:`gemv_int4`'s layout, with ``x`` quantized to int8 per block
    of 32 (Q8_0); float32 ``(M, N)``."""
    return torch.ops.zoo_gemv.int4_a8(
        x.reshape(-1, 2 * codes.shape[1]), codes, scale, zero, group_size, _isa(isa, PROMPT_ROWS)
    )


# Decode from repacked weights: tiles of 8 output rows whose codes interleave so that one byte product adds to the
# eight rows' block sums at once (the layout is described beside the kernels in gemv.cpp). A run-time copy
# made once per layer; the plain codes stay the state dict.


def _tiles(t: torch.Tensor) -> torch.Tensor:
    """``t (N, ...)`` padded with zeros to whole tiles of 8 rows, as ``(T, 8, ...)``."""
    pad = -t.shape[0] % 8
    if pad:
        t = torch.cat([t, t.new_zeros((pad, *t.shape[1:]))])
    return t.reshape(-1, 8, *t.shape[1:])


def repack_int4(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The int4 weight of :func:`gemv_int4`'s layout as :func:`gemm_a8_tiles` reads it: ``(packed uint8, scales
    float16)``. Per tile and block of 32 columns, four 32-byte chunks; lane ``j`` of chunk ``i`` holds row ``j``'s
    columns ``8i..8i+3`` in its low nibbles and ``8i+4..8i+7`` in its high ones; per tile and group, the eight rows'
    scales then their zero points."""
    u = torch.stack([codes & 15, codes >> 4], dim=-1).reshape(codes.shape[0], -1)  # (N, K) codes 0..15
    n, k = u.shape
    t = _tiles(u).reshape(-1, 8, k // 32, 4, 2, 4)  # (tile, row, block, chunk, half, byte)
    packed = (t[:, :, :, :, 0] | (t[:, :, :, :, 1] << 4)).permute(0, 2, 3, 1, 4).contiguous()
    sz = torch.stack([_tiles(scale.to(torch.float16)), _tiles(zero.to(torch.float16))], dim=2)  # (tile, 8, 2, G)
    return packed.reshape(-1), sz.permute(0, 3, 2, 1).contiguous().reshape(-1)


def repack_int8(q: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Int8 codes ``q (N, K)`` and row scales as :func:`gemm_a8_tiles` reads them: per tile and block of 32
    columns, eight 32-byte chunks, lane ``j`` of chunk ``i`` holding row ``j``'s columns ``4i..4i+3`` as ``w + 128``
    (unsigned); the scales float32, padded to whole tiles."""
    n, k = q.shape
    u = (_tiles(q).to(torch.int16) + 128).to(torch.uint8).reshape(-1, 8, k // 32, 8, 4)
    return u.permute(0, 2, 3, 1, 4).contiguous().reshape(-1), _tiles(scale.float()).reshape(-1)


def gemm_a8_tiles(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    n: int,
    group_size: int = 0,
    isa: str | None = None,
) -> torch.Tensor:
    """``x (M, K)`` times ``n`` output rows repacked by :func:`repack_int4` (``group_size`` its groups) or
    :func:`repack_int8` (``group_size`` 0), ``x`` quantized to int8 per block of 32 (Q8_0): the same bits as
    :func:`gemm_int4_a8` / :func:`gemm_int8_a8`, faster for a few rows (a decoded token). Float32 ``(M, n)``."""
    return torch.ops.zoo_gemv.a8_tiles(x, packed, scale, n, group_size, _isa(isa, 1))


class OneRowProducts(CustomGraphPass):
    """An Inductor post-grad pass: every float32 product of one row with a weight's transpose on the CPU
    (``mm(x (1, K), permute(w, [1, 0]))``, and ``addmm`` with a bias) becomes :func:`gemv_f32`. Used by the
    compiled decode step (``torch.compile(..., options={"post_grad_custom_post_pass": OneRowProducts()})``)."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        aten = torch.ops.aten
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target not in (aten.mm.default, aten.addmm.default):
                continue
            bias, (x, wt) = (None, node.args) if node.target is aten.mm.default else (node.args[0], node.args[1:3])
            if node.kwargs or not isinstance(wt, torch.fx.Node) or wt.target is not aten.permute.default:
                continue
            w = wt.args[0]
            xv, wv = x.meta.get("val"), getattr(w, "meta", {}).get("val")
            if (
                xv is None
                or wv is None
                or list(wt.args[1]) != [1, 0]
                or xv.dim() != 2
                or xv.shape[0] != 1
                or wv.dim() != 2
                or xv.device.type != "cpu"
                or xv.dtype != torch.float32
                or wv.dtype != torch.float32
            ):
                continue
            with graph.inserting_before(node):
                y = graph.call_function(torch.ops.zoo_gemv.f32.default, (x, w, _chosen_f32()))
                y.meta = dict(node.meta)
                if bias is not None:
                    y = graph.call_function(aten.add.Tensor, (y, bias))
                    y.meta = dict(node.meta)
            node.replace_all_uses_with(y)
            graph.erase_node(node)
        graph.eliminate_dead_code()

    def uuid(self) -> str:
        return hashlib.sha256((_SOURCE + f"OneRowProducts 2, path {_chosen_f32()}").encode()).hexdigest()
