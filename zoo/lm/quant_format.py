"""The quantization vocabulary and format of the zoo's LMs: :data:`VOCABULARY` (every ``quantize=`` name the zoo
takes, the zoo's own formats and the other runtimes' types namespaced by backend, as litgpt names its own),
:class:`QuantSpec` (parsing, checking, config.json's ``quantization``) and the plain codes and scales of int8 / int4
weights. Part of :mod:`zoo.lm.quant`, which re-exports every public name and documents the formats.

The vocabulary (one table; every door -- ``create_model``, ``eval.py``, ``zoo run``, ``zoo export``, the bench --
parses ``quantize`` through :func:`lookup`):

==============  =======  ====  =====  ===  =========  ============================================================
name            backend  bits  group  act  zoo twin   what
==============  =======  ====  =====  ===  =========  ============================================================
fp32            zoo      32    -      -    fp32       float32 weights: no quantization
bf16            zoo      16    -      -    bf16       bfloat16 weights
int8            zoo      8     row    (8)  int8       int8 per output row (activation width: the kernels' default)
int8a8/int8a16  zoo      8     row    8/16 int8a8/16  int8, the activation row rounded to int8 / int16
int4            zoo      4     32     (8)  int4       int4 in groups (``group_size``, default 32), asymmetric
int4a8/int4a16  zoo      4     32     8/16 int4a8/16  int4, the activation row rounded to int8 / int16
gguf:f32        gguf     32    -      -    fp32       llama.cpp F32
gguf:f16        gguf     16    -      -    bf16       llama.cpp F16
gguf:q8_0       gguf     8     32     8    int8       llama.cpp Q8_0
gguf:q4_0       gguf     4     32     8    int4       llama.cpp Q4_0 (output and embedding kept Q8_0)
pte:8da8w       pte      8     row    8    int8a8     ExecuTorch/XNNPACK int8 weights, int8 dynamic activations
pte:8da4w       pte      4     32     8    int4a8     ExecuTorch/XNNPACK int4 weights (symmetric), int8 activations
onnx:int8       onnx     8     row    8    -          onnxruntime's dynamic int8 (vision models)
==============  =======  ====  =====  ===  =========  ============================================================

A bare name resolves in the backend that reads it (``"q4_0"`` to ``zoo export --format gguf`` or
``--backend llama.cpp`` is ``gguf:q4_0``, ``"8da4w"`` to pte is ``pte:8da4w``); the old spellings ``bfloat16``,
``int8_weight_only``, ``int4_weight_only`` and ``zoo:NAME`` are aliases."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
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
KERNEL_DTYPE = torch.bfloat16  # what the CPU int8/int4 kernels are fed (see the module docstring's table)


# ------------------------------------------------------------------------------------------------------------------
# The vocabulary
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantName:
    """One ``quantize=`` name: its ``backend`` (``"zoo"``, ``"gguf"``, ``"pte"``, ``"onnx"``), weight ``bits``,
    ``group_size`` (input columns per scale; None: one per output row, or none at all), ``act_bits`` (the width the
    activations are rounded to; None: not quantized, or the zoo kernels' default) and ``zoo`` (the zoo format that
    stores the same weights, ``"fp32"`` for float32; None where there is none)."""

    name: str
    backend: str
    bits: int
    group_size: int | None = None
    act_bits: int | None = None
    zoo: str | None = None

    @property
    def native(self) -> str:
        """The name in its own runtime, without the backend prefix (``"q4_0"``): what files and reports record."""
        return self.name.split(":", 1)[-1]


VOCABULARY: dict[str, QuantName] = {
    q.name: q
    for q in (
        QuantName("fp32", "zoo", 32, zoo="fp32"),
        QuantName("bf16", "zoo", 16, zoo="bf16"),
        QuantName("int8", "zoo", 8, zoo="int8"),
        QuantName("int4", "zoo", 4, DEFAULT_GROUP_SIZE, zoo="int4"),
        QuantName("int8a8", "zoo", 8, None, 8, zoo="int8a8"),
        QuantName("int8a16", "zoo", 8, None, 16, zoo="int8a16"),
        QuantName("int4a8", "zoo", 4, DEFAULT_GROUP_SIZE, 8, zoo="int4a8"),
        QuantName("int4a16", "zoo", 4, DEFAULT_GROUP_SIZE, 16, zoo="int4a16"),
        QuantName("gguf:f32", "gguf", 32, zoo="fp32"),
        QuantName("gguf:f16", "gguf", 16, zoo="bf16"),
        QuantName("gguf:q8_0", "gguf", 8, 32, 8, zoo="int8"),
        QuantName("gguf:q4_0", "gguf", 4, 32, 8, zoo="int4"),
        QuantName("pte:8da8w", "pte", 8, None, 8, zoo="int8a8"),
        QuantName("pte:8da4w", "pte", 4, DEFAULT_GROUP_SIZE, 8, zoo="int4a8"),
        QuantName("onnx:int8", "onnx", 8, None, 8),
    )
}
# the old spellings of zoo formats
ALIASES = {"bfloat16": "bf16", "int8_weight_only": "int8", "int4_weight_only": "int4"}
# what each backend is, and where its names apply (for errors)
BACKENDS = {
    "zoo": ("a zoo format", "create_model(quantize=), eval.py / zoo run on torch, zoo export --format pt2"),
    "gguf": ("a GGUF type", "llama.cpp: zoo export --format gguf, eval.py / zoo run / generate with backend llama.cpp"),
    "pte": ("a pte (ExecuTorch) type", "zoo export --format pte"),
    "onnx": ("an ONNX type", "zoo export --format onnx, vision models"),
}
# the backend whose names each export format takes
EXPORT_BACKENDS = {"pt2": "zoo", "onnx": "onnx", "pte": "pte", "gguf": "gguf"}


def quant_names(backend: str) -> tuple[str, ...]:
    """The names ``backend`` takes, as its own runtime spells them (``("f32", "f16", "q8_0", "q4_0")``)."""
    return tuple(q.native for q in VOCABULARY.values() if q.backend == backend)


def lookup(value: str, backend: str | None = None) -> QuantName:
    """The vocabulary's entry for ``quantize=value`` read by ``backend`` (None: any backend whose name it is); a
    name of another backend, or no name at all, is a ValueError that lists what ``backend`` takes (with the
    closest name)."""
    if not isinstance(value, str):
        raise ValueError(_unknown(value, backend))
    key = value.strip().lower()
    key = ALIASES.get(key.removeprefix("zoo:"), key.removeprefix("zoo:"))
    # a bare name: the reading backend's own first ("int8" to onnx is onnx:int8), then the zoo's, then any other's
    # (whose name it is: said so below)
    order = [f"{backend}:{key}", key] if backend is not None and ":" not in key else [key]
    found = [VOCABULARY[k] for k in order if k in VOCABULARY][:1]
    if not found and ":" not in key:
        found = [VOCABULARY[f"{b}:{key}"] for b in BACKENDS if f"{b}:{key}" in VOCABULARY]
    if len(found) != 1:
        raise ValueError(_unknown(value, backend))
    entry = found[0]
    if backend is not None and entry.backend != backend:
        what, where = BACKENDS[entry.backend]
        twin = None if entry.zoo is None or backend not in BACKENDS else counterpart(entry.zoo, backend)
        twin = VOCABULARY[entry.zoo] if entry.zoo is not None and backend == "zoo" else twin
        hint = f"; did you mean {twin.native!r} (the same weight bits)?" if twin is not None else ""
        raise ValueError(f"quantize={value!r} is {what} ({entry.name}, for {where}); " + _unknown(value, backend, hint))
    return entry


def _unknown(value: Any, backend: str | tuple[str, ...] | None, hint: str | None = None) -> str:
    """The one message for a name ``backend`` (or any of several) does not take: what it takes, and the closest of
    those."""
    backends = list(BACKENDS) if backend is None else [backend] if isinstance(backend, str) else list(backend)
    backend = backends[0] if len(backends) == 1 else None
    names = [n for b in backends for n in quant_names(b)]
    spelled = [q.name for q in VOCABULARY.values() if q.backend in backends and ":" in q.name]
    label = f"{backend} " if backend not in (None, "zoo") else ""
    text = f"{label}quantize must be one of {', '.join(names)} (or none"
    text += f"; also spelled {', '.join(spelled)}), " if spelled else "), "
    text += f"got {value!r}"
    if hint is not None:
        return text + hint
    close = difflib.get_close_matches(str(value).strip().lower(), names + spelled, n=1, cutoff=0.6)
    return text + (f"; did you mean {close[0]!r}?" if close else "")


def quantize_argument(*backends: str):
    """An argparse ``type=`` for ``--quantize``: a name one of ``backends`` takes, returned as given (the command
    checks it against the backend it runs); otherwise the one error, with the closest name."""

    def quantize(value: str) -> str:
        if value.strip().lower() in ("none", ""):
            return value
        for backend in backends:
            with contextlib.suppress(ValueError):
                lookup(value, backend)
                return value
        raise argparse.ArgumentTypeError(_unknown(value, backends))

    return quantize


def counterpart(name: str, backend: str) -> QuantName | None:
    """``backend``'s name storing the weights of the zoo format ``name`` at the same bits (``"int4a8"`` in gguf:
    ``gguf:q4_0``); None where it has none."""
    bits = lookup(name, "zoo").bits
    return next((q for q in VOCABULARY.values() if q.backend == backend and q.bits == bits), None)


# ------------------------------------------------------------------------------------------------------------------
# The format
# ------------------------------------------------------------------------------------------------------------------


class QuantRecordError(ValueError):
    """A checkpoint's ``quantization`` record that is no format (:meth:`QuantSpec.from_checkpoint`)."""


class QuantRecordMismatch(QuantRecordError):
    """A checkpoint whose config.json and weight file record different weights."""


def _recorded(source: Any) -> Any:
    """The ``quantization`` entry of a config.json / safetensors metadata dict, or a config object's attribute."""
    if source is None:
        return None
    return source.get("quantization") if isinstance(source, dict) else getattr(source, "quantization", None)


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
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
            value = None
        elif isinstance(value, str) and lookup(value, "zoo").bits == 32:  # fp32: the float model, as none
            value = None
        if value is None:
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

    @classmethod
    def from_checkpoint(
        cls, config: Any = None, metadata: Any = None, where: str = "the checkpoint"
    ) -> QuantSpec | None:
        """The quantization a checkpoint records -- the one place it is read: its config.json (a dict, or a
        transformers config with a ``quantization`` attribute) and its weight file's safetensors ``metadata`` (a
        dict whose ``quantization`` is JSON text); None when neither records one. A record that is no format is a
        :class:`QuantRecordError` naming the field; two records of different weights a :class:`QuantRecordMismatch`
        (the config.json's activation settings win where they agree)."""
        recorded = cls.from_record(_recorded(config), f"{where} (config.json)")
        in_file = cls.from_record(_recorded(metadata), f"{where} (safetensors metadata)")
        if recorded is not None and in_file is not None and not recorded.same_weights(in_file):
            raise QuantRecordMismatch(
                f"{where}: its config.json records {recorded.describe()} weights but its weight file says "
                f"{in_file.describe()}; one of them was edited or they come from different exports"
            )
        return recorded or in_file

    @classmethod
    def from_record(cls, value: Any, where: str) -> QuantSpec | None:
        """One ``quantization`` record (a dict, or its JSON text) as a spec; None when absent."""
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as e:
                raise QuantRecordError(f"{where}: quantization is not a JSON object ({e})") from e
        if not isinstance(value, dict):
            raise QuantRecordError(
                f'{where}: quantization must be an object such as {{"method": "int8_weight_only"}}, got '
                f"{str(value)[:80]}"
            )
        try:
            return cls._parse(value, None, None)
        except (ValueError, TypeError) as e:
            raise QuantRecordError(f"{where}: quantization: {e}") from e

    @staticmethod
    def _names_act_bits(value: Any) -> bool:
        if isinstance(value, str):
            return lookup(value, "zoo").act_bits is not None
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
            raise ValueError(_unknown(value, "zoo") + " (or a quantization dict)")
        entry = lookup(value, "zoo")
        method = {16: "bf16", 8: "int8_weight_only", 4: "int4_weight_only"}[entry.bits]
        bits = entry.act_bits if entry.act_bits is not None else act_bits
        if method == "int4_weight_only":
            return cls(method, group_size if group_size is not None else entry.group_size, "asymmetric", act_bits=bits)
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
