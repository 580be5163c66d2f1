"""The quantized linear layer (:class:`QuantizedLinear`) and how its products pick a kernel. Part of
:mod:`zoo.lm.quant`, which re-exports every public name and documents the formats and kernels."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn

from ..kernels import gemv
from .quant_format import (
    ACT_BITS,
    ACTIVATIONS,
    DEFAULT_ACT_BITS,
    INT4_GROUP_SIZES,
    KERNEL_DTYPE,
    _check_group,
    dequantize_int4,
    pack_int4,
    quantize_int4,
    quantize_int8,
    unpack_int4,
)

_portable = threading.local()


@contextlib.contextmanager
def portable_kernels():
    """Within this block every :class:`QuantizedLinear` computes the portable product (the dequantized weight in
    the input's dtype, no bf16 rounding of the input): the reference a traced program (which holds that form) is
    compared with."""
    with _switched("on"):
        yield


@contextlib.contextmanager
def _switched(name: str):
    """This thread's switch ``name`` on within the block, as it was after."""
    before = getattr(_portable, name, False)
    setattr(_portable, name, True)
    try:
        yield
    finally:
        setattr(_portable, name, before)


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


def choose_kernel(x: torch.Tensor, in_features: int, act_bits: int, codes_fit: bool = True) -> str:
    """The product a quantized layer -- a projection or the output head -- computes for ``x``: ``"a8"`` (every row
    rounded to int8, Q8_0, and byte products: :mod:`zoo.kernels.gemv`), ``"gemv"`` (one decoded row, the zoo's kernels
    on the float32 row), ``"cpu"`` (PyTorch's CPU kernels on bf16 rows) or ``"portable"`` (the codes in the input's
    dtype inside the product). ``codes_fit``: the layer's codes are in the form the zoo's kernels read. The one
    place the choice is made."""
    # widths that are no multiple of 32 take the portable form: PyTorch's _weight_int8pack_mm gives garbage for
    # some of them (a width of 40 on an AVX-512 CPU), and the zoo's kernels take whole blocks of 32
    if not kernel_path(x) or in_features % 32:
        return "portable"
    if act_bits == 8 and gemv.supports_a8(x, in_features) and codes_fit and gemv.available():
        return "a8"
    if gemv.supports(x, in_features) and codes_fit and gemv.available():
        return "gemv"
    return "cpu"


def int8_head(store: dict, weight: torch.Tensor, x: torch.Tensor, act_bits: int = 16) -> torch.Tensor:
    """``F.linear(x, weight)`` with ``weight`` (the output head of a model with int8/int4 projections) as int8 codes
    per row: a :class:`QuantizedLinear` like the projections (:meth:`QuantizedLinear.from_head`, the same kernel
    choice), kept in ``store`` under ``"_head_int8"`` -- not a submodule: the float weight stays the model's (tied
    to the embedding, saved as float). The codes are made at first use and again whenever the weight (or
    ``act_bits``) changes; a compiled step uses the layer the eager prompt made."""
    layer = store.get("_head_int8")
    if not torch.compiler.is_compiling():
        key = (weight.data_ptr(), 0 if weight.is_inference() else weight._version, weight.dtype, act_bits)
        if layer is None or layer.made_from != key:
            with torch.inference_mode(False), torch.no_grad():
                layer = store["_head_int8"] = QuantizedLinear.from_head(weight, act_bits)
            layer.made_from = key
    elif layer is None:
        return F.linear(x, weight)
    return layer(x)


@contextlib.contextmanager
def kernels_in_export():
    """Within this block a torch.export trace keeps the CPU kernels (the decode step compiled ahead of time for this
    machine, :mod:`zoo.lm.aot_step`), where other exports see the portable form (a program for another runtime)."""
    with _switched("export_kernels"):
        yield


def _tracing() -> bool:
    """True inside torch.export / torch.jit traces (fvcore's counter): they see the portable form; torch.compile keeps
    the kernels, as does an export within :func:`kernels_in_export`."""
    exporting = torch.compiler.is_exporting() and not getattr(_portable, "export_kernels", False)
    return exporting or torch.jit.is_tracing()


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
    ) -> QuantizedLinear:
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

    @classmethod
    @torch.no_grad()
    def from_head(cls, weight: torch.Tensor, act_bits: int = DEFAULT_ACT_BITS) -> QuantizedLinear:
        """The output head ``weight`` ``(vocab, hidden)`` as int8 codes per row (:func:`int8_head`): the same codes,
        scales and kernels as an int8 projection, made without a zero-filled copy first."""
        out_features, in_features = weight.shape
        layer = cls(in_features, out_features, bits=8, device="meta", act_bits=act_bits)
        layer.qweight, layer.scale = quantize_int8(weight.detach())
        layer._kernel["scale8"] = layer.scale.to(KERNEL_DTYPE)  # made here: a compiled step finds it
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

    def kernel_copies(self) -> list[torch.Tensor]:
        """The copies of the codes and scales made for the kernels (repacked tiles, scales in the kernels' dtype),
        none of them saved: what a product reads besides the buffers."""
        return [t for t in pytree.tree_leaves(list(self._kernel.values())) if isinstance(t, torch.Tensor)]

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
        kernel = choose_kernel(x, self.in_features, self.act_bits, self._codes_fit())
        if kernel == "portable":
            if self.bits == 8:  # the codes to the input's dtype inside the product, then the row scale
                y = F.linear(x, self.qweight.to(x.dtype)) * self.scale.to(x.dtype)
                return y if self.bias is None else y + self.bias.to(y.dtype)
            return F.linear(x, self.dequantize(x.dtype), self.bias)
        if kernel == "a8":  # every row to int8 (Q8_0), byte products: zoo.kernels.gemv
            y = self._gemm_a8(x.reshape(-1, self.in_features).float())
        elif kernel == "gemv":  # a decoded token: zoo.kernels.gemv's kernels on the float32 row
            y = self._gemv(x.reshape(1, -1).float())
        else:
            # PyTorch's CPU kernels, fed bfloat16 rows: both are several times faster with a bf16 input than with a
            # float32 one (zoo.lm.quant's docstring), so the input is rounded to bf16
            rows = x.reshape(-1, self.in_features).to(KERNEL_DTYPE).contiguous()
            y = self._int8_cpu(rows) if self.bits == 8 else self._int4_cpu(rows)
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def _codes_fit(self) -> bool:
        """Whether these codes are in the form :mod:`zoo.kernels.gemv`'s kernels read (int4: groups of whole blocks of
        32, float16 scales, the plain codes kept)."""
        return not (self.bits == 4 and (self.group_size % 32 or self.scale.dtype != torch.float16 or self.released))

    def _gemm_a8(self, rows: torch.Tensor) -> torch.Tensor:
        tiles = self._tiles() if rows.shape[0] < 4 else None
        if tiles is not None:  # a decoded token: the repacked copy, the same bits, faster
            return gemv.gemm_a8_tiles(rows, tiles[0], tiles[1], self.out_features, self.group_size or 0)
        if self.bits == 8:
            return gemv.gemm_int8_a8(rows, self.qweight, self.scale)
        return gemv.gemm_int4_a8(rows, self.qweight, self.scale, self.zero, self.group_size)

    def _tiles(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The codes repacked for the one-row 8-bit kernel (:func:`zoo.kernels.gemv.repack_int4` / ``repack_int8``):
        made at the first product of fewer than 4 rows and again when the codes change; never saved (the state dict
        keeps the plain codes). None inside a compiled graph that finds none (the plain codes' kernel, the same bits,
        then runs)."""
        kept = self._kernel.get("tiles")
        if torch.compiler.is_compiling():
            return kept[1] if kept is not None else None
        key = tuple((t.data_ptr(), 0 if t.is_inference() else t._version) for t in (self.qweight, self.scale))
        if kept is None or kept[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                if self.bits == 8:
                    tiles = gemv.repack_int8(self.qweight, self.scale)
                else:
                    tiles = gemv.repack_int4(self.qweight, self.scale, self.zero)
            kept = self._kernel["tiles"] = (key, tiles)
        return kept[1]

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


def _can_share(layers: tuple[nn.Module, ...]) -> bool:
    """Whether ``layers`` can share one product of the one-row 8-bit kernel: quantized layers of one weight format
    and input width at 8-bit activations, no bias, whole tiles of 8 output rows (so the tiles of each stack into
    theirs)."""
    first = layers[0]
    return len(layers) > 1 and all(
        isinstance(m, QuantizedLinear)
        and (m.bits, m.group_size, m.in_features, m.act_bits) == (first.bits, first.group_size, first.in_features, 8)
        and m.activations is None
        and m.bias is None
        and m.out_features % 8 == 0
        and m._codes_fit()
        for m in layers
    )


def _stacked_tiles(layers: tuple[nn.Module, ...]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The repacked weights of ``layers`` stacked as one (the tiles of 8 rows lie one after another), kept with the
    first layer; each layer's own tiles become views into the stack, so the stack costs no memory. Made again when
    any layer's codes changed; inside a compiled graph, the stack the eager pass made (None if none)."""
    kept = layers[0]._kernel.get("stacked")
    ids = tuple(id(m) for m in layers)
    if torch.compiler.is_compiling():
        return kept[2] if kept is not None and kept[0] == ids else None
    own = [m._tiles() for m in layers]
    if kept is None or kept[0] != ids or any(t[0] is not v for t, v in zip(own, kept[1])):
        with torch.inference_mode(False), torch.no_grad():
            stack = (torch.cat([t[0] for t in own]), torch.cat([t[1] for t in own]))
        views, at = [], [0, 0]
        for m, t in zip(layers, own):  # each layer's tiles now read from the stack: the same values, kept once
            view = tuple(s[a : a + x.numel()] for s, a, x in zip(stack, at, t))
            at = [a + x.numel() for a, x in zip(at, t)]
            m._kernel["tiles"] = (m._kernel["tiles"][0], view)
            views.append(view[0])
        kept = layers[0]._kernel["stacked"] = (ids, tuple(views), stack)
    return kept[2]


def shared_products(layers: tuple[nn.Module, ...], x: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """``x``'s products with several quantized layers that read the same input (a layer's query, key and value
    projections; its MLP's gate and up projections) as one call of the one-row 8-bit kernel over their tiles
    stacked (:func:`_stacked_tiles`): the input quantized once and one call instead of one per layer. The same bits
    as each layer's own product, since every output row is computed alone. None where they cannot share one (not
    :func:`_can_share`, not a decoded token of fewer than 4 rows, not the 8-bit kernels' path): the caller then
    runs the layers one by one."""
    if not _can_share(layers) or choose_kernel(x, layers[0].in_features, 8) != "a8":
        return None
    stack = _stacked_tiles(layers)
    rows = x.reshape(-1, layers[0].in_features)
    if stack is None or rows.shape[0] >= 4:
        return None
    widths = [m.out_features for m in layers]
    y = gemv.gemm_a8_tiles(rows.float(), stack[0], stack[1], sum(widths), layers[0].group_size or 0)
    return tuple(part.reshape(*x.shape[:-1], n).to(x.dtype) for part, n in zip(y.split(widths, dim=-1), widths))


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
