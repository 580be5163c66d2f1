"""The quantization format of the zoo's LMs: :class:`QuantSpec` (parsing, checking, config.json's
``quantization``) and the plain codes and scales of int8 / int4 weights. Part of :mod:`zoo.lm.quant`, which
re-exports every public name and documents the formats."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import torch

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
    def parse(cls, value: Any, group_size: int | None = None, act_bits: int | None = None) -> QuantSpec | None:
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
    def _parse(cls, value: Any, group_size: int | None, act_bits: int | None) -> QuantSpec:
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

    def same_weights(self, other: QuantSpec | None) -> bool:
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
