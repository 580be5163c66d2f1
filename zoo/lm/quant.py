"""Weight-only quantization of the decoder LMs: bfloat16, int8 and int4 weights with CPU kernels chosen by measurement.

Formats (``zoo.create_model(NAME, quantize=...)``; a folder records its format in config.json's ``quantization``):

* ``"bf16"`` = ``{"method": "bf16"}``: every parameter in bfloat16 (``model.to(torch.bfloat16)``); activations and
  the KV cache follow.
* ``"int8"`` = ``{"method": "int8_weight_only", "group_size": null}``: each projection weight as int8 codes ``q`` in
  [-127, 127] with one float32 scale per output row, ``w = q * scale`` (symmetric, absolute max / 127).
* ``"int4"`` = ``{"method": "int4_weight_only", "group_size": 32, "scheme": "asymmetric"}``: 4-bit codes ``u`` in
  0..15 in groups of ``group_size`` input columns, ``w = (u - 8) * scale + zero`` with a float16 ``scale`` and
  ``zero`` per group (llama.cpp's Q4_1 with the code centred). ``"asymmetric"`` spreads the 16 levels from the group's
  minimum to its maximum; ``"symmetric"`` has ``zero = 0`` and ``scale`` = absolute max / 7.5 (torchao's symmetric
  int4, the form of MobileLLM-Pro's QAT checkpoints, whose own scales :func:`convert_fake_quantized` keeps).
  ``group_size`` must divide every projection's input width: 32 and 64 divide all registered shapes (576-wide
  layers included); 128 and 256 do not divide 576 and are refused for those models with the sizes that fit.

What is quantized: the seven projections of every decoder layer (``q/k/v/o_proj``, ``gate/up/down_proj``), swapped
for :class:`QuantizedLinear`. The token embedding and the output head -- the same matrix in every registered zoo LM
(tied) -- stay in the model's float dtype, as do the norms, MoR routers, LoRA deltas and an untied ``lm_head``: the
tie stays one tensor, the head keeps full precision (llama.cpp keeps the output matrix above 4 bits for the same
reason), and an embedding lookup reads one row per token, so its size costs memory but not time. ``"bf16"`` casts
everything, the embedding included.

Kernels, measured on this machine's CPU (AMD EPYC, AVX-512 with bf16, 2 threads, torch 2.14.1, torchao 0.18): the
matrix-vector products of one decoded token of ``mobilellm_125m`` (30 layers x seven projections + the 32000 x 576
output head), batch 1, median of 7 rounds; ``zoo/bench/quant_kernels.py`` reproduces the table.

========================================================  ==================
candidate                                                  ms per token
========================================================  ==================
float32 ``F.linear``                                       42.2
bfloat16 ``F.linear``                                      23.9
int8 codes cast inside ``F.linear``, float32 / bf16 input  114.5 / 45.7
``aten._weight_int8pack_mm``, float32 / bf16 input         53.3 / **8.7**
torchao ``Int8WeightOnlyConfig``, float32 / bf16 input     113.5 / 49.2
int4 g32 ``aten._weight_int4pack_mm_for_cpu``, f32 / bf16  119.1 / **7.0**
torchao ``Int4OpaqueTensor`` g32, float32 / bf16 input     120.9 / 9.3
int4 g64 kernel / torchao, bf16 input                      7.0 / 9.1
int4 g32 dequantized per call, float32 input               515.7
int8 dynamic activations, ``torch._int_mm`` (reference)    26.6
========================================================  ==================

Both integer kernels win only when fed bfloat16 rows (a float32 input is 5-15x slower: the kernels convert it
per call); torchao's configurations reach the same kernels through tensor subclasses and lose 1-2 ms per token to
the dispatch, so the zoo calls the kernels itself.

The zoo's paths on CPU (inference): one row (a decoded token) goes to :mod:`zoo.lm.gemv`'s kernels where
they run (an AVX2 CPU with a C++ compiler; that module's docstring has their timings), closer to the float
product (the row is rounded to int16 per block of 32, not to bf16). Other rows are rounded to bfloat16; int8 runs
``aten._weight_int8pack_mm`` and int4 the CPU tinygemm kernel ``aten._weight_int4pack_mm_for_cpu`` directly (the
kernel torchao's ``Int4OpaqueTensor`` wraps, without the tensor-subclass dispatch). Its packed form depends on the
CPU's instruction set (blocks of 64 rows with AVX-512, 32 with AVX2), so it is made at the first CPU forward and
never saved; where the one-row kernels run, they read the plain codes, which then stay beside it. A
``torch.compile``'d step calls the same kernels. Other devices, autograd through the input, and ``torch.export``
/ TorchScript traces use the portable form: dequantize, then ``F.linear`` (in a trace, the codes are graph
constants and the program runs anywhere).

Activation width (``act_bits``, config.json ``quantization["act_bits"]``; formats ``"int8a8"``, ``"int8a16"``,
``"int4a8"``, ``"int4a16"``; ``quantize_model(..., act_bits=)``, :func:`set_act_bits`): with ``8`` (the default,
:data:`DEFAULT_ACT_BITS`; a config without the field means it) every CPU product of a quantized layer -- a decoded
token, a prompt, the eager and the compiled step, and the int8 output head -- rounds its rows to int8 per block of
32 (llama.cpp's Q8_0) and multiplies bytes (:func:`zoo.lm.gemv.gemm_int8_a8` / ``gemm_int4_a8``); with ``16``
one row goes to the int16 kernels and several rows to PyTorch's kernels on bf16 rows, as above. The default is
chosen by quality on the quickstart LM (held-out pydoc perplexity, 256-token windows; fp32 119.109): int8a16
+0.012%, int8a8 +0.015%, int4a16 +0.091%, int4a8 +0.095% (bounds: 0.5% at int8, 1% at int4); greedy agreement with
fp32 over 256 tokens int8 0.97 at both widths, int4 0.47 (a16) and 0.36 (a8). The weights are the same at both
widths: ``act_bits`` is a run-time choice (:meth:`QuantSpec.same_weights`).

State dict of a :class:`QuantizedLinear` (plain layout, the same on every machine): ``qweight`` (int8 ``(out, in)``;
int4: uint8 ``(out, in / 2)``, two codes per byte, the even column in the low nibble), ``scale`` (int8: float32
``(out,)``; int4: float16 ``(out, in / group_size)``), ``zero`` (int4 only, like ``scale``) and ``bias`` when the
layer has one. Integer tensors are declared as integer buffers, so a checkpoint loader can tell a quantized tensor
from a float one and refuse to cast one into the other.
"""

import contextlib
import dataclasses
import re
import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import gemv

__all__ = [
    "METHODS",
    "ACT_BITS",
    "DEFAULT_ACT_BITS",
    "QuantSpec",
    "QuantizedLinear",
    "convert_fake_quantized",
    "dequantize_model",
    "dequantize_int4",
    "fake_quantized_keys",
    "int8_head",
    "kernel_path",
    "is_quantized_state_dict",
    "model_quantization",
    "pack_int4",
    "portable_kernels",
    "quantize_int4",
    "quantize_int8",
    "quantize_model",
    "quantized_layer_names",
    "set_act_bits",
    "unpack_int4",
]

# the methods and what ``quantize=`` shorthands stand for
METHODS = ("bf16", "int8_weight_only", "int4_weight_only")
_SHORT = {"bf16": "bf16", "bfloat16": "bf16", "int8": "int8_weight_only", "int4": "int4_weight_only"}
INT4_GROUP_SIZES = (32, 64, 128, 256)  # what the CPU int4 kernel takes
DEFAULT_GROUP_SIZE = 32
SCHEMES = ("asymmetric", "symmetric")
ACTIVATIONS = (None, "int8_dynamic")
_FIELDS = {"method", "group_size", "scheme", "activations", "act_bits"}
ACT_BITS = (8, 16)  # the activation row of the CPU kernels: int8 (Q8_0) or int16 per block of 32
DEFAULT_ACT_BITS = 8  # within the quality bound on the quickstart LM (module docstring)
_WITH_ACT = re.compile(r"(int8|int4)a(8|16)")
KERNEL_DTYPE = torch.bfloat16  # what the CPU int8/int4 kernels are fed (see the module docstring's table)


_portable = threading.local()


@contextlib.contextmanager
def portable_kernels():
    """Within this block every :class:`QuantizedLinear` computes the portable product (the dequantized weight in
    the input's dtype, no bf16 rounding of the input): the reference a traced program (which holds that form) is
    compared with."""
    before = getattr(_portable, "on", False)
    _portable.on = True
    try:
        yield
    finally:
        _portable.on = before


def kernel_path(x: torch.Tensor) -> bool:
    """Whether a product with ``x`` takes the CPU integer kernels: CPU inference outside export traces and
    :func:`portable_kernels` (autograd through the input and other devices take the portable form)."""
    return (
        x.device.type == "cpu"
        and not _tracing()
        and not getattr(_portable, "on", False)
        and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and not (x.requires_grad and torch.is_grad_enabled())
    )


def int8_head(store: dict, weight: torch.Tensor, x: torch.Tensor, act_bits: int = 16) -> torch.Tensor:
    """``F.linear(x, weight)`` with ``weight`` (the output head of a model with int8/int4 projections) as int8 codes
    per row, through ``aten._weight_int8pack_mm`` on bf16 rows (see the module docstring). The codes are made from
    the float weight at first use and again whenever it changes (kept in ``store`` under ``"_head_int8"``); the
    float weight stays the model's (tied to the embedding, saved as float). A compiled step uses the codes the
    eager prompt made. ``act_bits`` 8: the rows rounded to int8 per block of 32, :func:`zoo.lm.gemv.gemm_int8_a8`."""
    kept = store.get("_head_int8")
    if not torch.compiler.is_compiling():
        key = (weight.data_ptr(), weight._version, weight.dtype)
        if kept is None or kept[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                q, scale = quantize_int8(weight.detach())
                kept = store["_head_int8"] = (key, q, scale.to(KERNEL_DTYPE), scale.float())
    elif kept is None:
        return F.linear(x, weight)
    if act_bits == 8 and gemv.supports_a8(x, x.shape[-1]) and gemv.available():
        rows = x.reshape(-1, x.shape[-1]).float()
        return gemv.gemm_int8_a8(rows, kept[1], kept[3]).reshape(*x.shape[:-1], -1).to(x.dtype)
    if gemv.supports(x, x.shape[-1]) and gemv.available():
        return gemv.gemv_int8(x.reshape(1, -1).float(), kept[1], kept[3]).reshape(*x.shape[:-1], -1).to(x.dtype)
    rows = x.reshape(-1, x.shape[-1]).to(KERNEL_DTYPE).contiguous()
    return torch._weight_int8pack_mm(rows, kept[1], kept[2]).reshape(*x.shape[:-1], -1).to(x.dtype)


def _tracing() -> bool:
    """True inside torch.export / torch.jit traces (fvcore's counter): they see the portable form; torch.compile keeps the kernels."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


# ------------------------------------------------------------------------------------------------------------------
# The format
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantSpec:
    """One quantization format: ``method`` (:data:`METHODS`), ``group_size`` (int4: input columns per scale),
    ``scheme`` (int4: ``"asymmetric"`` or ``"symmetric"``) and ``activations`` (``None``, or ``"int8_dynamic"``:
    the input of every quantized projection rounded to int8 per token, asymmetric, as MobileLLM-Pro's CPU QAT
    trained it; emulated in float, a numerical match rather than a speed-up) and ``act_bits`` (int8 / int4: the
    width the CPU kernels round the activation row to, per block of 32: ``8`` (llama.cpp's Q8_0, byte products)
    or ``16``; None means :data:`DEFAULT_ACT_BITS`; a run-time choice, the stored weights are the same)."""

    method: str
    group_size: int | None = None
    scheme: str | None = None
    activations: str | None = None
    act_bits: int | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"quantization method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method == "bf16":
            if self.act_bits is not None:
                raise ValueError(
                    f"bf16 weights take no act_bits (the kernels' activation width), got {self.act_bits!r}"
                )
        else:
            if self.act_bits is None:
                object.__setattr__(self, "act_bits", DEFAULT_ACT_BITS)
            if isinstance(self.act_bits, bool) or self.act_bits not in ACT_BITS:
                raise ValueError(f"quantization act_bits must be 8 or 16, got {self.act_bits!r}")
        if self.activations not in ACTIVATIONS:
            raise ValueError(f"quantization activations must be null or 'int8_dynamic', got {self.activations!r}")
        if self.method == "int4_weight_only":
            g = self.group_size
            if not isinstance(g, int) or isinstance(g, bool) or g not in INT4_GROUP_SIZES:
                raise ValueError(
                    f"int4 group_size must be one of {', '.join(map(str, INT4_GROUP_SIZES))} (what the CPU kernel "
                    f"takes), got {g!r}"
                )
            if self.scheme not in SCHEMES:
                raise ValueError(f"int4 scheme must be 'asymmetric' or 'symmetric', got {self.scheme!r}")
        else:
            if self.group_size is not None:
                what = "int8 weights have one scale per output row" if self.method != "bf16" else "bf16 has no groups"
                raise ValueError(f"{what}: group_size must be null, got {self.group_size!r}")
            if self.scheme not in (None, "symmetric"):
                raise ValueError(f"{self.method} has no scheme to choose (int8 is symmetric), got {self.scheme!r}")
            if self.method == "bf16" and self.activations is not None:
                raise ValueError("bf16 weights take no activation quantization")

    @classmethod
    def parse(cls, value: Any, group_size: int | None = None, act_bits: int | None = None) -> "QuantSpec | None":
        """A spec from ``quantize=``: None / ``"none"``, ``"bf16"``, ``"int8"``, ``"int4"`` (``group_size``, default
        32), ``"int8a8"``, ``"int8a16"``, ``"int4a8"``, ``"int4a16"`` (the activation width named), a method name, a
        config.json ``quantization`` dict, or a spec. ``act_bits`` (8 or 16) sets the activation width of a format
        that does not name one; one that names another is refused."""
        if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
            if group_size is not None:
                raise ValueError("group_size is for int4 quantization; give quantize='int4' with it")
            if act_bits is not None:
                raise ValueError("act_bits is for int8 / int4 quantization; give quantize='int8' or 'int4' with it")
            return None
        spec = cls._parse(value, group_size, act_bits)
        if act_bits is not None and spec.act_bits != act_bits:
            if spec.method == "bf16":
                raise ValueError("act_bits is for int8 / int4 quantization, not bf16")
            if cls._names_act_bits(value):
                raise ValueError(
                    f"quantize={value!r} names act_bits {spec.act_bits}, and act_bits={act_bits!r} was given too: "
                    "give one"
                )
            spec = dataclasses.replace(spec, act_bits=act_bits)
        return spec

    @staticmethod
    def _names_act_bits(value: Any) -> bool:
        if isinstance(value, str):
            return _WITH_ACT.fullmatch(value.lower()) is not None
        if isinstance(value, dict):
            return value.get("act_bits") is not None
        return False

    @classmethod
    def _parse(cls, value: Any, group_size: int | None, act_bits: int | None) -> "QuantSpec":
        if isinstance(value, QuantSpec):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - _FIELDS)
            if unknown:
                raise ValueError(f"quantization has unknown field(s) {unknown}; it takes {sorted(_FIELDS)}")
            data = dict(value)
            if "method" not in data:
                raise ValueError("quantization names no method")
            data["method"] = _SHORT.get(data["method"], data["method"])
            if data["method"] == "int8_weight_only" and data.get("scheme") == "symmetric":
                data["scheme"] = None
            return cls(**data)
        if isinstance(value, torch.dtype):
            if value == torch.bfloat16:
                return cls("bf16")
            raise ValueError(f"quantize takes torch.bfloat16 as a dtype, got {value}")
        if not isinstance(value, str):
            raise ValueError(f"quantize must be 'bf16', 'int8', 'int4' or a quantization dict, got {value!r}")
        named = _WITH_ACT.fullmatch(value.lower())
        bits = int(named.group(2)) if named else act_bits
        method = _SHORT.get(named.group(1) if named else value.lower(), value.lower())
        if method == "int4_weight_only":
            return cls(
                method, group_size if group_size is not None else DEFAULT_GROUP_SIZE, "asymmetric", act_bits=bits
            )
        if method not in METHODS:
            raise ValueError(
                f"quantize must be one of 'bf16', 'int8', 'int4', 'int8a8', 'int8a16', 'int4a8', 'int4a16' (or none), "
                f"got {value!r}"
            )
        return cls(method, group_size, act_bits=None if method == "bf16" else bits)

    @property
    def bits(self) -> int:
        return {"bf16": 16, "int8_weight_only": 8, "int4_weight_only": 4}[self.method]

    @property
    def short(self) -> str:
        return {"bf16": "bf16", "int8_weight_only": "int8", "int4_weight_only": "int4"}[self.method]

    def same_weights(self, other: "QuantSpec | None") -> bool:
        """True when ``other`` stores the same weights (activation emulation is a run-time choice)."""
        return other is not None and (self.method, self.group_size, self.scheme) == (
            other.method,
            other.group_size,
            other.scheme,
        )

    def to_dict(self) -> dict[str, Any]:
        """The config.json ``quantization`` entry."""
        out: dict[str, Any] = {"method": self.method}
        if self.method != "bf16":
            out["group_size"] = self.group_size
        if self.scheme is not None:
            out["scheme"] = self.scheme
        if self.activations is not None:
            out["activations"] = self.activations
        if self.act_bits is not None:
            out["act_bits"] = self.act_bits
        return out

    def describe(self) -> str:
        if self.method == "int4_weight_only":
            return f"int4 ({self.scheme}, groups of {self.group_size})"
        return {"bf16": "bf16", "int8_weight_only": "int8 (per output row)"}[self.method]


# ------------------------------------------------------------------------------------------------------------------
# Codes and scales (plain layout)
# ------------------------------------------------------------------------------------------------------------------


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q int8 (out, in), scale float32 (out,))`` with ``w ~ q * scale``, symmetric per output row."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def _check_group(in_features: int, group_size: int, what: str = "this layer") -> None:
    if in_features % group_size:
        fits = [g for g in INT4_GROUP_SIZES if in_features % g == 0]
        hint = f"use group_size {' or '.join(map(str, fits))}" if fits else "no int4 group size divides it"
        raise ValueError(
            f"int4 group_size {group_size} does not divide the input width {in_features} of {what}: {hint}"
        )


def quantize_int4(
    weight: torch.Tensor,
    group_size: int,
    scheme: str = "asymmetric",
    scale: torch.Tensor | None = None,
    zero: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(codes uint8 (out, in) in 0..15, scale float16 (out, G), zero float16 (out, G))``, ``G = in / group_size``,
    with ``w ~ (u - 8) * scale + zero`` per group.

    ``asymmetric``: the 16 levels span the group's minimum to maximum; ``symmetric``: ``zero = 0`` and ``scale`` =
    absolute max / 7.5. Given ``scale`` (and ``zero``), those are kept (rounded to float16) and only the codes are
    computed: a QAT checkpoint's own scales.
    """
    out_features, in_features = weight.shape
    _check_group(in_features, group_size)
    w = weight.detach().float().reshape(out_features, in_features // group_size, group_size)
    tiny = 2.0**-24  # float16's smallest step: a constant group keeps a usable scale
    if scale is None:
        if scheme == "asymmetric":
            lo, hi = w.amin(dim=2), w.amax(dim=2)
            scale = ((hi - lo) / 15.0).clamp(min=tiny)
            zero = lo + 8.0 * scale
        elif scheme == "symmetric":
            scale = (w.abs().amax(dim=2) / 7.5).clamp(min=tiny)
            zero = torch.zeros_like(scale)
        else:
            raise ValueError(f"int4 scheme must be 'asymmetric' or 'symmetric', got {scheme!r}")
    else:
        scale = scale.detach().float().reshape(out_features, -1)
        zero = torch.zeros_like(scale) if zero is None else zero.detach().float().reshape(out_features, -1)
        if scale.shape[1] != in_features // group_size or zero.shape != scale.shape:
            raise ValueError(
                f"scales of shape {tuple(scale.shape)} do not fit a {out_features} x {in_features} weight in groups "
                f"of {group_size}"
            )
    scale16, zero16 = scale.to(torch.float16), zero.to(torch.float16)
    s, z = scale16.float()[..., None], zero16.float()[..., None]
    codes = torch.round((w - z) / s + 8.0).clamp_(0, 15).to(torch.uint8)
    return codes.reshape(out_features, in_features), scale16, zero16


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes ``(out, in)`` in 0..15 -> ``(out, in / 2)`` bytes, the even column in the low nibble."""
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pack_int4`: ``(out, in / 2)`` bytes -> uint8 codes ``(out, in)``."""
    return torch.stack([packed & 15, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


def dequantize_int4(
    qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The float weight ``(out, in)`` of packed int4 codes, their scales and zero points."""
    codes = unpack_int4(qweight)
    group_size = codes.shape[1] // scale.shape[1]
    w = (codes.float() - 8.0).reshape(codes.shape[0], scale.shape[1], group_size)
    w = w * scale.float()[..., None] + zero.float()[..., None]
    return w.reshape(codes.shape).to(dtype)


# ------------------------------------------------------------------------------------------------------------------
# The layer
# ------------------------------------------------------------------------------------------------------------------


class QuantizedLinear(nn.Module):
    """A linear layer with int8 or int4 weights (weight-only: the input and output stay float).

    Build one with :meth:`from_float` (quantizes an ``nn.Linear``) or the constructor (zero codes, to load a state
    dict into). ``bits`` 8: ``qweight`` int8 ``(out, in)``, ``scale`` float32 ``(out,)``; ``bits`` 4: ``qweight``
    uint8 ``(out, in / 2)``, ``scale`` and ``zero`` float16 ``(out, in / group_size)``. See the module docstring for
    the formulas and kernels.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        bits: int = 8,
        group_size: int | None = None,
        activations: str | None = None,
        device=None,
        dtype: torch.dtype = torch.float32,
        act_bits: int = DEFAULT_ACT_BITS,
    ):
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"QuantizedLinear takes bits 8 or 4, got {bits!r}")
        if act_bits not in ACT_BITS:
            raise ValueError(f"QuantizedLinear takes act_bits 8 or 16, got {act_bits!r}")
        self.act_bits = act_bits
        if activations not in ACTIVATIONS:
            raise ValueError(f"activations must be None or 'int8_dynamic', got {activations!r}")
        self.in_features, self.out_features, self.bits = in_features, out_features, bits
        self.activations = activations
        if bits == 8:
            if group_size is not None:
                raise ValueError("int8 weights have one scale per output row: group_size must be None")
            self.group_size = None
            self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
            self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32, device=device))
            self.zero = None
        else:
            if group_size not in INT4_GROUP_SIZES:
                raise ValueError(f"int4 group_size must be one of {INT4_GROUP_SIZES}, got {group_size!r}")
            _check_group(in_features, group_size)
            self.group_size = group_size
            groups = in_features // group_size
            # code 8 with zero 0 is the weight 0
            codes = torch.full((out_features, in_features // 2), 0x88, dtype=torch.uint8, device=device)
            self.register_buffer("qweight", codes)
            self.register_buffer("scale", torch.ones(out_features, groups, dtype=torch.float16, device=device))
            self.register_buffer("zero", torch.zeros(out_features, groups, dtype=torch.float16, device=device))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self._kernel: dict[Any, torch.Tensor] = {}  # the int4 CPU kernel's packed weight and scales, made lazily

    # -- building -------------------------------------------------------------------------------------------------
    @classmethod
    @torch.no_grad()
    def from_float(
        cls,
        linear: nn.Linear,
        bits: int = 8,
        group_size: int | None = None,
        scheme: str = "asymmetric",
        activations: str | None = None,
        scale: torch.Tensor | None = None,
        zero: torch.Tensor | None = None,
        act_bits: int = DEFAULT_ACT_BITS,
    ) -> "QuantizedLinear":
        """``linear`` quantized (int8 per output row, or int4 in groups of ``group_size`` with ``scheme``; given
        int4 ``scale``/``zero`` are kept, as :func:`quantize_int4` says). The bias stays float."""
        weight = linear.weight
        out_features, in_features = weight.shape
        if bits == 4:
            _check_group(in_features, group_size, f"a {out_features} x {in_features} linear layer")
        layer = cls(
            in_features,
            out_features,
            bias=linear.bias is not None,
            bits=bits,
            group_size=group_size if bits == 4 else None,
            activations=activations,
            device=weight.device,
            dtype=weight.dtype,
            act_bits=act_bits,
        )
        if bits == 8:
            q, s = quantize_int8(weight)
            layer.qweight.copy_(q)
            layer.scale.copy_(s)
        else:
            codes, s, z = quantize_int4(weight, group_size, scheme, scale, zero)
            layer.qweight.copy_(pack_int4(codes))
            layer.scale.copy_(s)
            layer.zero.copy_(z)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias)
        return layer

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight ``(out, in)`` these codes stand for."""
        if self.bits == 8:
            return (self.qweight.float() * self.scale.float()[:, None]).to(dtype)
        return dequantize_int4(self.codes(), self.scale, self.zero, dtype)

    # -- state ----------------------------------------------------------------------------------------------------
    # Once the int4 kernel's packed copy exists and is checked to be a known rearrangement of the codes, the plain
    # codes are released (``qweight`` holds an empty tensor) and rebuilt from the packed copy whenever they are read:
    # for the state dict, a move, a load or the portable path. Memory then holds the int4 codes once.

    @property
    def released(self) -> bool:
        return self.bits == 4 and self.qweight.numel() == 0

    def codes(self) -> torch.Tensor:
        """The plain packed codes ``(out, in / 2)`` (int8: the codes), rebuilt if they were released."""
        if not self.released:
            return self.qweight
        codes = _kernel_unpack(self._kernel["weight"], self._kernel["block"], self.in_features)
        return pack_int4(codes[: self.out_features])

    def _restore(self) -> None:
        if self.released:
            self.qweight = self.codes()
        self._kernel = {}

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.released:
            destination[prefix + "qweight"] = self.codes()

    def _apply(self, fn, recurse=True):
        self._restore()  # moved or cast: packed again lazily, from the plain codes
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):
        self._restore()
        return super()._load_from_state_dict(*args, **kwargs)

    @property
    def weight_numel(self) -> int:
        """The number of weights this layer stands for (``out * in``)."""
        return self.in_features * self.out_features

    # -- forward --------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activations == "int8_dynamic":
            x = _fake_quantize_tokens(x)
        # widths that are no multiple of 32 take the portable form: PyTorch's _weight_int8pack_mm gives garbage for
        # some of them (a width of 40 on an AVX-512 CPU, torch 2.15), and the zoo's kernels take whole blocks of 32
        if kernel_path(x) and self.in_features % 32 == 0:
            if self.act_bits == 8 and self._rows_a8(x):  # every row to int8 (Q8_0), byte products: zoo.lm.gemv
                y = self._gemm_a8(x.reshape(-1, self.in_features).float())
            elif self._one_row(x):  # a decoded token: zoo.lm.gemv's kernels on the float32 row
                y = self._gemv(x.reshape(1, -1).float())
            else:
                # PyTorch's CPU kernels, fed bfloat16 rows: both are 5-15x faster with a bf16 input than with a
                # float32 one (module docstring), so the input is rounded to bf16
                rows = x.reshape(-1, self.in_features).to(KERNEL_DTYPE).contiguous()
                y = self._int8_cpu(rows) if self.bits == 8 else self._int4_cpu(rows)
            y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
            return y if self.bias is None else y + self.bias.to(y.dtype)
        if self.bits == 8:  # the portable form: codes to the input's dtype inside the product, then the row scale
            y = F.linear(x, self.qweight.to(x.dtype)) * self.scale.to(x.dtype)
            return y if self.bias is None else y + self.bias.to(y.dtype)
        return F.linear(x, self.dequantize(x.dtype), self.bias)

    def _one_row(self, x: torch.Tensor) -> bool:
        """Whether ``x`` is one row that :mod:`zoo.lm.gemv`'s kernels take with these codes."""
        if not gemv.supports(x, self.in_features):
            return False
        if self.bits == 4 and (self.group_size % 32 or self.scale.dtype != torch.float16 or self.released):
            return False
        return gemv.available()

    def _rows_a8(self, x: torch.Tensor) -> bool:
        """Whether rows ``x`` go to :mod:`zoo.lm.gemv`'s 8-bit activation kernels with these codes."""
        if not gemv.supports_a8(x, self.in_features):
            return False
        if self.bits == 4 and (self.group_size % 32 or self.scale.dtype != torch.float16 or self.released):
            return False
        return gemv.available()

    def _gemm_a8(self, rows: torch.Tensor) -> torch.Tensor:
        if self.bits == 8:
            return gemv.gemm_int8_a8(rows, self.qweight, self.scale)
        return gemv.gemm_int4_a8(rows, self.qweight, self.scale, self.zero, self.group_size)

    def _gemv(self, row: torch.Tensor) -> torch.Tensor:
        if self.bits == 8:
            return gemv.gemv_int8(row, self.qweight, self.scale)
        return gemv.gemv_int4(row, self.qweight, self.scale, self.zero, self.group_size)

    def _int8_cpu(self, rows: torch.Tensor) -> torch.Tensor:
        scale = self._kernel.get("scale8")
        if scale is None:
            with torch.inference_mode(False), torch.no_grad():
                scale = self._kernel["scale8"] = self.scale.to(KERNEL_DTYPE)
        return torch._weight_int8pack_mm(rows, self.qweight, scale)

    def _int4_cpu(self, rows: torch.Tensor) -> torch.Tensor:
        packed, scales = self._packed(rows.dtype)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, packed, self.group_size, scales)
        return y[:, : self.out_features] if y.shape[1] != self.out_features else y  # rows padded to whole blocks

    def _packed(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernel's packed codes and its ``(groups, out, 2)`` scale/zero table in ``dtype``, made once."""
        packed = self._kernel.get("weight")
        scales = self._kernel.get(dtype)
        if packed is not None and scales is not None:
            return packed, scales
        # plain tensors even when first made under inference_mode, so that a later forward with grad may use them
        with torch.inference_mode(False), torch.no_grad():
            # whole blocks of 64 rows (the kernel's AVX-512 block; AVX2's is 32), padded with zero weights
            pad = -self.out_features % 64
            if packed is None:
                codes = unpack_int4(self.qweight)
                if pad:
                    codes = F.pad(codes, (0, 0, 0, pad), value=8)
                packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
                self._kernel["weight"] = packed
                block = _kernel_block(packed, codes)
                if block is not None and not gemv.available():  # read back from the packing: codes released
                    self._kernel["block"] = block
                    self.qweight = codes.new_empty(0)
            scale, zero = self.scale.to(dtype), self.zero.to(dtype)
            if pad:
                scale, zero = F.pad(scale, (0, 0, 0, pad), value=1.0), F.pad(zero, (0, 0, 0, pad))
            scales = torch.stack([scale.t(), zero.t()], dim=-1).contiguous()
            self._kernel[dtype] = scales
        return packed, scales

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.bits == 4 else ""
        act = f", activations={self.activations}" if self.activations else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"bits={self.bits}{group}, act_bits={self.act_bits}{act}"
        )


def _kernel_unpack(packed: torch.Tensor, block: int, in_features: int) -> torch.Tensor:
    """Codes ``(rows, in)`` from the CPU int4 kernel's packing of whole ``block``-row blocks: for every column, byte
    ``j`` of a block holds row ``j`` in its low nibble and row ``j + block / 2`` in its high nibble (PyTorch's
    ``weight_to_int4pack_kernel``: blocks of 64 rows with AVX-512, 32 with AVX2)."""
    p = packed.reshape(-1, in_features, block // 2)
    codes = torch.cat([p & 15, p >> 4], dim=2)  # (blocks, in, block)
    return codes.permute(0, 2, 1).reshape(-1, in_features)


def _kernel_block(packed: torch.Tensor, codes: torch.Tensor) -> int | None:
    """The block size for which :func:`_kernel_unpack` gives ``codes`` back from ``packed``; None when no known
    layout does (then the plain codes are kept)."""
    rows, in_features = codes.shape
    for block in (64, 32):
        if rows % block == 0 and packed.numel() * 2 == codes.numel():
            if torch.equal(_kernel_unpack(packed, block, in_features), codes):
                return block
    return None


def _fake_quantize_tokens(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to int8 per token (last dimension), asymmetric min/max, and back to its dtype."""
    xf = x.float()
    lo = xf.amin(dim=-1, keepdim=True).clamp(max=0.0)
    hi = xf.amax(dim=-1, keepdim=True).clamp(min=0.0)
    scale = ((hi - lo) / 255.0).clamp(min=torch.finfo(torch.float32).eps)
    zero_point = torch.round(-128.0 - lo / scale)
    q = torch.round(xf / scale + zero_point).clamp_(-128, 127)
    return ((q - zero_point) * scale).to(x.dtype)


# ------------------------------------------------------------------------------------------------------------------
# Whole models
# ------------------------------------------------------------------------------------------------------------------


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(
            f"quantize_model takes a zoo decoder LM (model.model.layers), got {type(model).__name__}; the vision "
            "models are quantized on export (zoo export --format onnx --quantize int8)"
        )
    return layers


def quantized_layer_names(model: nn.Module) -> list[str]:
    """The qualified names of the linear layers :func:`quantize_model` swaps (every ``nn.Linear`` of every decoder
    layer: the attention and MLP projections)."""
    layers = _decoder_layers(model)
    prefix = next(n for n, m in model.named_modules() if m is layers)
    return [
        f"{prefix}.{i}.{name}"
        for i, layer in enumerate(layers)
        for name, m in layer.named_modules()
        if isinstance(m, (nn.Linear, QuantizedLinear))
    ]


def model_quantization(model: nn.Module) -> QuantSpec | None:
    """The format a model was quantized to by :func:`quantize_model` (None: float weights). A model whose float
    parameters are all bfloat16 counts as ``bf16`` however it got there."""
    spec = getattr(model, "quantization", None)
    if isinstance(spec, QuantSpec):
        return spec
    floats = [p for p in model.parameters() if p.is_floating_point()]
    if floats and all(p.dtype == torch.bfloat16 for p in floats):
        return QuantSpec("bf16")
    return None


@torch.no_grad()
def quantize_model(
    model: nn.Module, quantize: Any, group_size: int | None = None, act_bits: int | None = None, empty: bool = False
) -> nn.Module:
    """Quantize a zoo decoder LM in place and return it: ``"bf16"``, ``"int8"`` or ``"int4"`` (``group_size``,
    default 32), ``"int8a8"`` / ``"int8a16"`` / ``"int4a8"`` / ``"int4a16"``, or a :class:`QuantSpec` /
    config.json ``quantization`` dict; ``act_bits`` (8 or 16, default :data:`DEFAULT_ACT_BITS`) is the width the
    CPU kernels round activations to (:func:`set_act_bits` changes it later).

    int8/int4 swap every decoder layer's projections for :class:`QuantizedLinear` (embedding, head, norms,
    routers and LoRA deltas stay float); bf16 casts the whole model. ``empty=True`` builds the quantized layers
    without computing codes (zero weights, to load a quantized state dict into). The format is recorded as
    ``model.quantization``; a model already quantized is refused (quantizing codes again compounds the error).
    """
    spec = QuantSpec.parse(quantize, group_size, act_bits)
    if spec is None:
        return model
    done = model_quantization(model)
    if done is not None:
        raise ValueError(
            f"this model is already quantized ({done.describe()}); quantize its float weights instead (build or "
            "load it without quantize, then quantize once)"
        )
    if spec.method == "bf16":
        model.to(torch.bfloat16)
    else:
        layers = _decoder_layers(model)
        bits = spec.bits
        g = spec.group_size
        for i, layer in enumerate(layers):
            for parent_name, parent in list(layer.named_modules()):
                for name, child in list(parent.named_children()):
                    if not isinstance(child, nn.Linear):
                        continue
                    where = f"layer {i} {parent_name + '.' if parent_name else ''}{name}"
                    if bits == 4:
                        _check_group(child.in_features, g, where)
                    if empty:
                        q = QuantizedLinear(
                            child.in_features,
                            child.out_features,
                            bias=child.bias is not None,
                            bits=bits,
                            group_size=g,
                            activations=spec.activations,
                            device=child.weight.device,
                            dtype=child.weight.dtype,
                            act_bits=spec.act_bits,
                        )
                    else:
                        q = QuantizedLinear.from_float(
                            child, bits, g, spec.scheme or "asymmetric", spec.activations, act_bits=spec.act_bits
                        )
                    setattr(parent, name, q)
    model.quantization = spec
    return model


def set_act_bits(model: nn.Module, act_bits: int) -> nn.Module:
    """Set the activation width (8 or 16) of an int8 / int4 model's CPU kernels in place and return the model: the
    weights stay as they are; a compiled decode step made before is dropped (it holds the old kernels)."""
    spec = model_quantization(model)
    if spec is None or spec.method == "bf16":
        raise ValueError(f"act_bits is for int8 / int4 models; this one is {spec.short if spec else 'float'}")
    spec = dataclasses.replace(spec, act_bits=act_bits)  # checked here
    for m in model.modules():
        if isinstance(m, QuantizedLinear):
            m.act_bits = spec.act_bits
    model.quantization = spec
    model.__dict__.pop("_compiled_step", None)
    return model


@torch.no_grad()
def dequantize_model(model: nn.Module) -> nn.Module:
    """Undo :func:`quantize_model` in place and return the model: :class:`QuantizedLinear` layers become float32
    ``nn.Linear`` layers holding the weights their codes stand for, a bf16 model becomes float32, and
    ``model.quantization`` goes (a float model is returned unchanged)."""
    spec = model_quantization(model)
    if spec is None:
        return model
    if spec.method == "bf16":
        model.float()
    else:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, QuantizedLinear):
                    linear = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                    linear.weight.copy_(child.dequantize(torch.float32))
                    if child.bias is not None:
                        linear.bias.copy_(child.bias.float())
                    setattr(parent, name, linear.to(child.scale.device))
    if "quantization" in vars(model):
        del model.quantization
    return model


# ------------------------------------------------------------------------------------------------------------------
# State dicts
# ------------------------------------------------------------------------------------------------------------------

_QUANT_SUFFIXES = (".qweight", ".scale", ".zero")
FAKE_QUANT_SCALE = ".weight_fake_quantizer.scale"
FAKE_QUANT_ZERO = ".weight_fake_quantizer.zero_point"


def is_quantized_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """True when ``state_dict`` holds :class:`QuantizedLinear` codes (``*.qweight``)."""
    return any(k.endswith(".qweight") for k in state_dict)


def fake_quantized_keys(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """The layers (key prefixes) of a QAT checkpoint that carry ``weight_fake_quantizer.scale`` tensors."""
    return [k[: -len(FAKE_QUANT_SCALE)] for k in state_dict if k.endswith(FAKE_QUANT_SCALE)]


def convert_fake_quantized(
    state_dict: dict[str, torch.Tensor], bits: int = 4
) -> tuple[dict[str, torch.Tensor], QuantSpec | None]:
    """A QAT checkpoint (torchao's fake-quantized linears: ``P.weight`` with ``P.weight_fake_quantizer.scale``
    ``(out, in / group_size)`` and optionally ``.zero_point``) -> the zoo's int4 state dict (``P.qweight``,
    ``P.scale``, ``P.zero``) and its spec, with the checkpoint's own scales and zero points honoured:
    ``q = clamp(round(w / scale) + zero_point, -8, 7)`` stands for ``(q - zero_point) * scale``, i.e. code
    ``u = q + 8`` with ``zero = -zero_point * scale``.

    Refused: layers of different group sizes, and weights that do not sit on their int4 grid (a code outside
    [-8, 7], or a weight further than half a step from ``(q - zero_point) * scale``): such a checkpoint is not
    int4 under its scales. Returns ``(state_dict, None)`` unchanged when there are no fake-quantizer tensors.
    """
    prefixes = fake_quantized_keys(state_dict)
    if not prefixes:
        return state_dict, None
    if bits != 4:
        raise ValueError("only int4 fake-quantized checkpoints are converted")
    out = dict(state_dict)
    group_sizes = set()
    for prefix in prefixes:
        weight = out.pop(prefix + ".weight", None)
        if weight is None:
            raise ValueError(f"{prefix}{FAKE_QUANT_SCALE} has no {prefix}.weight beside it")
        scale = out.pop(prefix + FAKE_QUANT_SCALE).float()
        zero_point = out.pop(prefix + FAKE_QUANT_ZERO, None)
        out_features, in_features = weight.shape
        scale = scale.reshape(out_features, -1)
        if in_features % scale.shape[1]:
            raise ValueError(f"{prefix}: {scale.shape[1]} scales per row do not divide {in_features} columns")
        group_size = in_features // scale.shape[1]
        group_sizes.add(group_size)
        zp = torch.zeros_like(scale) if zero_point is None else zero_point.float().reshape(out_features, -1)
        w = weight.float().reshape(out_features, scale.shape[1], group_size)
        q_raw = torch.round(w / scale[..., None]) + zp[..., None]
        if q_raw.min() < -8 or q_raw.max() > 7:
            raise ValueError(
                f"{prefix}.weight is not int4 under its fake-quantizer scales (codes from {int(q_raw.min())} to "
                f"{int(q_raw.max())}, int4 holds -8..7)"
            )
        err = (w - (q_raw - zp[..., None]) * scale[..., None]).abs() / scale[..., None]
        if err.max() > 0.5 + 1e-3:
            raise ValueError(f"{prefix}.weight does not sit on its int4 grid (an error of {err.max():.2f} steps)")
        codes, s16, z16 = quantize_int4(weight, group_size, "symmetric", scale, -zp * scale)
        out[prefix + ".qweight"] = pack_int4(codes)
        out[prefix + ".scale"] = s16
        out[prefix + ".zero"] = z16
    if len(group_sizes) != 1:
        raise ValueError(f"the fake-quantized layers use different group sizes {sorted(group_sizes)}")
    (group_size,) = group_sizes
    if group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"group size {group_size} of the fake-quantized layers is not one of {INT4_GROUP_SIZES}")
    return out, QuantSpec("int4_weight_only", group_size, "symmetric")
