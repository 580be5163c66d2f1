"""Honest params, MACs, latency and memory of a model.

Conventions (also stated in every :class:`Profile`):

* **MACs** come from fvcore's ``FlopCountAnalysis``, which counts one multiply-add as one "flop": that number is
  MACs, the unit of the MetaFormer and SLaK tables. ``FLOPs = 2 x MACs``. fvcore's own handles cover conv,
  linear, matmul, bmm, einsum and the ATen norms; the zoo adds handles so that nothing that costs arithmetic
  goes uncounted: ``scaled_dot_product_attention`` (fvcore counts it as zero), broadcast matmuls (fvcore
  drops the broadcast batch), ``baddbmm``, pooling (one per input element, fvcore's convention for adaptive
  pooling), the norm kernels the zoo calls directly (fvcore's 5 or 4 per element), reductions, and
  element-wise ops and activations (one per output element, fvcore's element-wise convention). The ops left uncounted are listed; a matmul, conv or attention op left
  uncounted is an error.
* **Cross-check**: the ops both tools count (conv, matmul/linear, attention run on the math backend) are also
  counted with ``torch.utils.flop_counter.FlopCounterMode`` (which counts 2 per multiply-add).
* **Params**: unique parameters (tied or shared weights once), split into trainable and frozen; non-zero
  parameters (for sparse models); non-embedding parameters where the model has embeddings.
* **Dense vs non-zero**: ``params`` and ``macs`` count every weight (dense). ``nonzero_params`` counts non-zero
  entries and ``nonzero_macs`` scales each conv/linear layer's MACs by the density of its weight, measured on
  the actual weights (the convention of sparse-model papers such as SLaK's); for a dense model they equal the
  dense figures.
* **Latency**: warm-up passes, then the median of N timed passes (CUDA events with synchronisation on GPU);
  throughput = batch / median. **Peak memory**: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the
  increase of the process RSS during one forward after a warm-up forward and a heap trim, so that it does not
  depend on what ran before (a latency loop), sampled every millisecond (named as such).
"""

import contextlib
import ctypes
import math
import os
import platform
import statistics
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .factory import create_model
from .lm.quant import QuantizedLinear

__all__ = [
    "Profile",
    "count_macs",
    "count_nonzero_macs",
    "count_params",
    "cross_check_flop_counter",
    "measure_latency",
    "measure_peak_memory",
    "profile",
    "profile_lm",
]

# ops that do matrix arithmetic: leaving one uncounted would make the total meaningless
_MUST_COUNT = ("matmul", "mm", "bmm", "conv", "linear", "einsum", "attention", "addmm")
# ops counted by both fvcore (with the zoo's handles) and FlopCounterMode, as fvcore's by_operator() names them
_SHARED_OPS = ("conv", "linear", "addmm", "mm", "matmul", "bmm", "baddbmm", "einsum", "scaled_dot_product_attention")


def _shape(v) -> list[int] | None:
    return v.type().sizes() if v.isCompleteTensor() else None


def _numel(shape) -> int:
    return math.prod(shape) if shape else 1


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """softmax(q k^T) v: Nq*Nk*d for q k^T plus Nq*Nk*dv for the weighted sum, per batch and head."""
    q, k, v = (_shape(t) for t in inputs[:3])
    return _numel(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])


def _matmul_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """(..., M, K) @ (..., K, N) with broadcasting: numel(output) * K."""
    a = _shape(inputs[0])
    return _numel(_shape(outputs[0])) * a[-1]


def _baddbmm_macs(inputs: list[Any], outputs: list[Any]) -> int:
    return _numel(_shape(outputs[0])) * _shape(inputs[1])[-1]


def _elementwise(scale: int = 1) -> Callable:
    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        return scale * _numel(_shape(outputs[0]))

    return handle


def _over_input(scale: int) -> Callable:
    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        return scale * _numel(_shape(inputs[0]))

    return handle


def _native_norm(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore's norm convention: 5 per element with an affine weight, 4 without."""
    has_affine = len(inputs) > 1 and _shape(inputs[1]) is not None
    return _numel(_shape(inputs[0])) * (5 if has_affine else 4)


_ELEMENTWISE_OPS = (
    "add",
    "add_",
    "sub",
    "sub_",
    "mul",
    "mul_",
    "div",
    "div_",
    "addcmul",
    "addcmul_",
    "lerp",
    "lerp_",
    "pow",
    "pow_",
    "square",
    "square_",
    "sqrt",
    "rsqrt",
    "exp",
    "neg",
    "abs",
    "clamp",
    "clamp_min",
    "relu",
    "relu_",
    "gelu",
    "gelu_",
    "silu",
    "silu_",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
    "where",
    "maximum",
    "minimum",
    "reciprocal",
    "erf",
    "hardtanh",
    "hardswish",
    "leaky_relu",
    "softplus",
)

_ZOO_HANDLES: dict[str, Callable] = {
    "aten::scaled_dot_product_attention": _sdpa_macs,
    "aten::matmul": _matmul_macs,
    "aten::baddbmm": _baddbmm_macs,
    "aten::avg_pool1d": _over_input(1),
    "aten::avg_pool2d": _over_input(1),
    "aten::avg_pool3d": _over_input(1),
    "aten::max_pool1d": _over_input(1),
    "aten::max_pool2d": _over_input(1),
    "aten::max_pool3d": _over_input(1),
    "aten::adaptive_avg_pool1d": _over_input(1),
    "aten::adaptive_max_pool2d": _over_input(1),
    "aten::native_group_norm": _native_norm,
    "aten::native_layer_norm": _native_norm,
    "aten::rms_norm": _native_norm,
    "aten::mean": _over_input(1),
    "aten::sum": _over_input(1),
    "aten::var_mean": _over_input(2),
    "aten::var": _over_input(2),
    "aten::std": _over_input(2),
    "aten::linalg_vector_norm": _over_input(1),
    "aten::scatter_add": lambda inputs, outputs: _numel(_shape(inputs[3])),  # one add per scattered element
    **{f"aten::{op}": _elementwise(1) for op in _ELEMENTWISE_OPS},
}

CONVENTIONS = {
    "macs": "fvcore FlopCountAnalysis total, one multiply-add = 1 MAC, batch included; zoo handles for "
    "scaled_dot_product_attention, broadcast matmul, baddbmm, pooling (1 per input element), "
    "native norms (fvcore's 5/4 per element), reductions and element-wise ops (1 per output element)",
    "flops": "2 x macs",
    "params": "unique parameters (tied/shared weights once); nonzero_params counts non-zero entries",
    "nonzero_macs": "macs with each leaf layer holding a 2-D/4-D weight (conv, linear) scaled by that weight's "
    "density (non-zero fraction), measured on the actual weights; dense figures are params/macs",
    "latency": "warm-up passes, then the median of timed passes; throughput = batch / median",
    "peak_memory": "CUDA: torch.cuda.max_memory_allocated during one forward; CPU: increase of process RSS "
    "during one forward after a warm-up forward and a heap trim, sampled every 1 ms",
}


@dataclass
class Profile:
    name: str
    input_size: tuple[int, ...]
    device: str
    params: int
    trainable_params: int
    frozen_params: int
    nonzero_params: int
    non_embedding_params: int | None
    macs: int
    flops: int
    nonzero_macs: int | None = None
    macs_by_operator: dict[str, int] = field(default_factory=dict)
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    flop_counter_check: dict[str, Any] | None = None
    latency: list[dict[str, Any]] = field(default_factory=list)
    peak_memory: dict[str, Any] | None = None
    module_table: str | None = None
    lm: dict[str, Any] | None = None  # language models: per-token costs (see profile_lm)
    conventions: dict[str, str] = field(default_factory=lambda: dict(CONVENTIONS))
    tools: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(model: nn.Module) -> dict[str, int | None]:
    """Unique parameter counts: total, trainable, frozen, non-zero and non-embedding (None without embeddings).

    A quantized layer's weights (integer codes, :class:`zoo.lm.quant.QuantizedLinear`) count as the frozen
    parameters they stand for, so a quantized model counts what its float form counts."""
    unique = {id(p): p for p in model.parameters()}.values()
    quantized = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    trainable = sum(p.numel() for p in unique if p.requires_grad)
    frozen = sum(p.numel() for p in unique if not p.requires_grad) + sum(m.weight_numel for m in quantized)
    nonzero = sum(int(torch.count_nonzero(p)) for p in unique if p.device.type != "meta")
    nonzero += sum(int(torch.count_nonzero(m.dequantize())) for m in quantized if m.qweight.device.type != "meta")
    embeddings = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Embedding)}
    non_embedding = trainable + frozen - sum(w.numel() for w in embeddings.values()) if embeddings else None
    return dict(
        params=trainable + frozen, trainable=trainable, frozen=frozen, nonzero=nonzero, non_embedding=non_embedding
    )


@contextlib.contextmanager
def _quiet_fvcore():
    """fvcore traces with ``torch.jit``, whose deprecation notice is not the user's concern: silenced here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        yield


def _analysis(model: nn.Module, inputs: tuple[torch.Tensor, ...]):
    """fvcore's analysis with the zoo's handles, already run."""
    with _quiet_fvcore():
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, inputs).set_op_handle(**_ZOO_HANDLES)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analysis.total()
    return analysis


def _macs_table(analysis, max_depth: int = 3) -> str:
    """fvcore's per-module table; its ``#flops`` column holds what fvcore counts, which is MACs here: named so."""
    with _quiet_fvcore():
        from fvcore.nn import flop_count_table

        table = flop_count_table(analysis, max_depth=max_depth)
    return table.replace("#flops", "#macs ")


def count_macs(model: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[int, dict[str, int]]:
    """(MACs, uncounted ops) of one forward, via fvcore with the zoo's handles."""
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    analysis = _analysis(model, inputs)
    return int(analysis.total()), _check_uncounted(analysis)


_ZERO_COST_OPS = {
    "aten::numel",
    "aten::size",
    "aten::dim",
    "aten::len",
    "aten::item",
    "aten::detach",
    "aten::empty_like",
    "aten::zeros_like",
    "aten::ones_like",
    "aten::copy_",
    "aten::clone",
    "aten::contiguous",
    "aten::dropout",
    "aten::alias",
    "aten::lift_fresh",
    "aten::scalar_tensor",
    # index bookkeeping and gathers: data movement, no multiply-adds
    "aten::randperm",
    "aten::argsort",
    "aten::index_select",
    "aten::gather",
    "aten::embedding",
    # token routing (recursive LMs): choosing and placing tokens, no multiply-adds
    "aten::topk",
    "aten::sort",
    "aten::scatter",
    "aten::argmax",
}


def count_nonzero_macs(model: nn.Module, analysis) -> int:
    """MACs of an fvcore ``analysis`` of ``model`` with every leaf layer holding a 2-D/4-D ``weight`` (conv,
    linear) counted at its weight's density: ``sum(layer_macs * nnz / numel)`` plus everything else in full."""
    by_module = analysis.by_module()
    saved = 0.0
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if (
            name not in by_module
            or next(module.children(), None) is not None
            or not isinstance(weight, torch.Tensor)
            or weight.ndim not in (2, 4)
            or weight.device.type == "meta"
            or weight.numel() == 0
        ):
            continue
        density = int(torch.count_nonzero(weight)) / weight.numel()
        saved += by_module[name] * (1.0 - density)
    return int(round(analysis.total() - saved))


def _check_uncounted(analysis) -> dict[str, int]:
    """Ops fvcore had no handle for, minus those that move or describe data without arithmetic."""
    skipped = {op: n for op, n in analysis.unsupported_ops().items() if op not in _ZERO_COST_OPS}
    heavy = [op for op in skipped if any(word in op for word in _MUST_COUNT)]
    if heavy:
        raise RuntimeError(f"fvcore left arithmetic-heavy ops uncounted: {heavy}; add handles in zoo/profile.py")
    return skipped


def cross_check_flop_counter(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], fvcore_by_operator: dict[str, int]
) -> dict[str, Any]:
    """Compare fvcore's count of the shared ops with ``FlopCounterMode`` (attention on the math backend)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(*inputs)
    torch_macs = counter.get_total_flops() // 2
    fvcore_macs = sum(v for k, v in fvcore_by_operator.items() if k in _SHARED_OPS)
    rel = abs(fvcore_macs - torch_macs) / max(torch_macs, 1)
    return dict(
        fvcore_macs=int(fvcore_macs),
        flop_counter_macs=int(torch_macs),
        rel_diff=rel,
        ops="conv, linear/addmm/mm/matmul/bmm/baddbmm, einsum, attention (math backend)",
    )


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: nn.Module,
    input_size: Sequence[int],
    batch_sizes: Sequence[int] = (1,),
    device: str | torch.device = "cpu",
    runs: int = 10,
    warmup: int = 2,
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Median latency and throughput of ``model`` (already on ``device``, eval mode) per batch size."""
    device = torch.device(device)
    results = []
    for bs in batch_sizes:
        x = torch.randn(bs, *input_size, device=device, dtype=dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        times = []
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            _sync(device)
            for _ in range(runs):
                if device.type == "cuda":
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    model(x)
                    end.record()
                    end.synchronize()
                    times.append(start.elapsed_time(end) / 1e3)
                else:
                    t0 = time.perf_counter()
                    model(x)
                    times.append(time.perf_counter() - t0)
                if progress:
                    progress(f"batch {bs}")
        median = statistics.median(times)
        results.append(
            dict(
                batch_size=bs,
                median_ms=median * 1e3,
                min_ms=min(times) * 1e3,
                throughput=bs / median,
                runs=runs,
                warmup=warmup,
            )
        )
    return results


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource  # Unix only (the lifetime peak: a coarse fallback)

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss(fn: Callable[[], object]) -> int:
    """Increase of the process RSS while ``fn`` runs (sampled every millisecond)."""
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], _rss_bytes()) - base


def measure_peak_memory(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Peak memory of one inference forward: CUDA max allocated, or sampled CPU RSS increase."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        base = torch.cuda.memory_allocated(x.device)
        with torch.inference_mode():
            model(x)
        torch.cuda.synchronize(x.device)
        peak = torch.cuda.max_memory_allocated(x.device)
        return dict(bytes=int(peak - base), method="torch.cuda.max_memory_allocated minus allocated before")

    def forward():
        with torch.inference_mode():
            model(x)

    # The same state whatever ran before (a latency loop, another model): one warm-up forward for the one-time
    # allocations (kernel caches, position tables), then the heap's free memory returned to the system, so the
    # RSS increase is the forward's own working set and not what the allocator happened to keep.
    forward()
    trim_heap()
    return dict(
        bytes=int(peak_rss(forward)),
        method="CPU process RSS increase during one forward after a warm-up and a heap trim (sampled, 1 ms)",
    )


def trim_heap() -> None:
    """glibc's ``malloc_trim(0)``: free heap pages go back to the system (nothing to do elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _is_language_model(model: nn.Module) -> bool:
    return callable(getattr(model, "new_cache", None)) and hasattr(getattr(model, "config", None), "vocab_size")


class _DecodeStep(nn.Module):
    """One cached decode step of an LM after ``past`` tokens (the cache is rewound before every call)."""

    def __init__(self, model: nn.Module, past: int):
        super().__init__()
        self.model, self.past = model, past
        self.cache = model.new_cache(1, past + 1)
        self.cache.lengths = [past] * self.cache.num_slots

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.cache.lengths = [self.past] * self.cache.num_slots
        if hasattr(self.cache, "seen"):  # a routed cache counts the tokens seen apart from slot lengths
            self.cache.seen = self.past
        return self.model(ids, past_key_values=self.cache).logits


def profile_lm(model: nn.Module, seq_len: int = 512) -> dict[str, Any]:
    """Per-token costs of a decoder LM (a model with ``config.vocab_size`` and ``new_cache``), batch 1.

    ``macs_per_token_prefill``: fvcore MACs of a ``seq_len``-token forward divided by ``seq_len`` (the fused
    causal attention kernel is counted as full ``T x T``, the counter's convention for SDPA);
    ``macs_per_token_decode``: one new token with ``seq_len`` tokens already cached; ``kv_cache_bytes_per_token``
    in the model's dtype (every layer run's keys and values); params with tied weights once.
    """
    if not _is_language_model(model):
        raise TypeError(f"{type(model).__name__} is not a decoder LM (needs config.vocab_size and new_cache)")
    model.eval()
    counts = count_params(model)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, seq_len), generator=gen)
    step = _DecodeStep(model, seq_len)
    with torch.no_grad():
        step(ids[:, -1:])  # builds the RoPE tables once, outside the counted passes
        prefill = _analysis(model, (ids,))
        prefill_uncounted = _check_uncounted(prefill)
        decode = _analysis(step, (ids[:, -1:],))
        decode_uncounted = _check_uncounted(decode)
    return dict(
        seq_len=seq_len,
        params=counts["params"],
        non_embedding_params=counts["non_embedding"],
        macs_prefill=int(prefill.total()),
        macs_per_token_prefill=int(prefill.total()) // seq_len,
        macs_per_token_decode=int(decode.total()),
        kv_cache_bytes_per_token=int(model.kv_cache_bytes_per_token()),
        uncounted_ops={**prefill_uncounted, **decode_uncounted},
        convention="fvcore + zoo handles, 1 multiply-add = 1 MAC; SDPA counted as full T x T at prefill; "
        "decode = one token after seq_len cached tokens; KV bytes = keys + values of every layer run",
    )


def _default_input(model: nn.Module, language_model: bool) -> tuple[int, ...]:
    """224x224 images; 512 tokens for an LM, fewer where its context is shorter (room for one decode step)."""
    if not language_model:
        return (3, 224, 224)
    context = getattr(model.config, "max_position_embeddings", None) or 513
    return (min(512, context - 1),)


def _model_and_name(model_or_name: str | nn.Module) -> tuple[str, nn.Module]:
    if isinstance(model_or_name, str):
        return model_or_name, create_model(model_or_name)
    model = model_or_name
    return (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__), model


def _counting_input(model: nn.Module, input_size: tuple[int, ...], batch_size: int, language_model: bool):
    """The input MACs are counted on: a prefill of ``input_size = (tokens,)`` token ids for an LM, else images."""
    if not language_model:
        return torch.randn(batch_size, *input_size)
    x = torch.randint(0, model.config.vocab_size, (batch_size, *input_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # one token at the last position: position tables are built outside the count
        model(x[:1, :1], position_ids=torch.tensor([[input_size[0] - 1]]))
    return x


def _count_ops(model: nn.Module, x: torch.Tensor, breakdown: bool, cross_check: bool) -> dict[str, Any]:
    """The :class:`Profile` fields of the MAC count: totals, per operator, uncounted ops, table, cross-check."""
    with torch.no_grad():
        analysis = _analysis(model, (x,))
        macs = int(analysis.total())
        nonzero_macs = count_nonzero_macs(model, analysis)
        by_op = {k: int(v) for k, v in analysis.by_operator().items()}
        uncounted = _check_uncounted(analysis)
        table = None
        if breakdown:
            table = _macs_table(analysis)
    check = cross_check_flop_counter(model, (x,), by_op) if cross_check else None
    return dict(
        macs=macs,
        flops=2 * macs,
        nonzero_macs=nonzero_macs,
        macs_by_operator=by_op,
        uncounted_ops=uncounted,
        flop_counter_check=check,
        module_table=table,
    )


def _time_and_measure(
    model: nn.Module,
    input_size: tuple[int, ...],
    batch_size: int,
    device: torch.device,
    *,
    latency: bool,
    batch_sizes: Sequence[int] | None,
    runs: int,
    warmup: int,
    channels_last: bool,
    compile: bool,
    memory: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Latency rows and peak memory on ``device`` (an empty list and None where not asked for)."""
    timings, peak = [], None
    if latency or memory:
        model = model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        runner = torch.compile(model) if compile else model
        if latency:
            timings = measure_latency(
                runner,
                input_size,
                batch_sizes or [batch_size],
                device=device,
                runs=runs,
                warmup=warmup,
                channels_last=channels_last,
            )
            for t in timings:
                t.update(channels_last=channels_last, compiled=compile)
        if memory:
            peak = measure_peak_memory(runner, torch.randn(batch_size, *input_size, device=device))
    return timings, peak


def _tool_versions(device: torch.device) -> dict[str, str]:
    import timm

    with _quiet_fvcore():
        import fvcore

    tools = {
        "fvcore": getattr(fvcore, "__version__", "unknown"),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "threads": str(torch.get_num_threads()),
    }
    if device.type == "cuda":
        tools["device"] = torch.cuda.get_device_name(device)
    return tools


def profile(
    model_or_name: str | nn.Module,
    input_size: Sequence[int] | None = None,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    latency: bool = False,
    batch_sizes: Sequence[int] | None = None,
    runs: int = 10,
    warmup: int = 2,
    channels_last: bool = False,
    compile: bool = False,
    memory: bool = False,
    breakdown: bool = False,
    cross_check: bool = False,
) -> Profile:
    """Profile a model or registered name at ``input_size`` (C, H, W; default: the model's cfg).

    MACs are counted at ``batch_size``. ``latency`` times ``batch_sizes`` (default: ``[batch_size]``) on
    ``device``; ``memory`` records the peak of one forward; ``breakdown`` adds fvcore's per-module table;
    ``cross_check`` compares against ``FlopCounterMode`` on the ops both count.
    """
    name, model = _model_and_name(model_or_name)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    language_model = _is_language_model(model)
    input_size = tuple(input_size or cfg.get("input_size") or _default_input(model, language_model))
    model.eval()
    counts = count_params(model)
    if language_model and (latency or memory):
        raise ValueError("latency/memory of language models: use `zoo bench lm --models NAME` (prefill and decode)")
    x = _counting_input(model, input_size, batch_size, language_model)
    counted = _count_ops(model, x, breakdown, cross_check)

    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for but CUDA is not available here; use device='cpu'")
    timings, peak = _time_and_measure(
        model,
        input_size,
        batch_size,
        device,
        latency=latency,
        batch_sizes=batch_sizes,
        runs=runs,
        warmup=warmup,
        channels_last=channels_last,
        compile=compile,
        memory=memory,
    )
    tools = _tool_versions(device)
    return Profile(
        lm=profile_lm(model, seq_len=input_size[0]) if language_model else None,
        name=name,
        input_size=(batch_size, *input_size),
        device=str(device),
        params=counts["params"],
        trainable_params=counts["trainable"],
        frozen_params=counts["frozen"],
        nonzero_params=counts["nonzero"],
        non_embedding_params=counts["non_embedding"],
        latency=timings,
        peak_memory=peak,
        tools=tools,
        **counted,
    )


class _CallableModule(types.ModuleType):
    """``zoo.profile`` is this module *and* callable as :func:`profile`: ``zoo.profile("caformer_s18")`` and
    ``from zoo.profile import count_macs`` both work, and neither name hides the other."""

    def __call__(self, *args, **kwargs) -> Profile:
        return profile(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
