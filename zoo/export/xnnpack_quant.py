"""The weights of a quantized ``pte`` (``quantize="8da4w"`` / ``"8da8w"``): XNNPACK's dynamically quantized linear
layers, as ExecuTorch deploys Llama on phones.

:func:`quantize_for_xnnpack` stores the decoder projections as int4 in groups of ``group_size`` (default 32; ``0``:
one scale per output row) / int8 per row as torchao's ``IntxUnpackedToInt8Tensor``, run by XNNPACK's kernels with
int8 dynamic activations (per token); the output head as int8, the embedding as int8 rows (:class:`Int8Embedding`).
A model the zoo quantized with the same bits (int8, or symmetric int4 such as MobileLLM-Pro's QAT weights) is stored
on its own grid, not quantized again. :func:`stack_linears` runs a layer's query/key/value projections as one
product, for float and quantized weights alike.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..lm.quant import (
    QuantizedLinear,
    lookup,
    model_quantization,
    quant_names,
    quantize_int8,
    quantized_layer_names,
    unpack_int4,
)
from .core import ExportError

__all__ = ["DEFAULT_GROUP_SIZE", "QUANTIZE", "Int8Embedding", "quantize_for_xnnpack", "stack_linears"]

# quantize= (executorch): int8 dynamic activations (per token, asymmetric) with int4 weights in groups, or int8
# weights per output row -- the XNNPACK kernels ExecuTorch runs Llama with on phones
QUANTIZE = quant_names("pte")  # the vocabulary's pte names (zoo.lm.quant_format)
DEFAULT_GROUP_SIZE = 32


def _intx(codes: torch.Tensor, scale: torch.Tensor, bits: int, group_size: int, activations: bool) -> torch.Tensor:
    """torchao's ``IntxUnpackedToInt8Tensor`` (what ExecuTorch lowers to XNNPACK's quantized kernels) of integer
    ``codes`` ``(out, in)`` and float32 ``scale`` ``(out, in / group_size)``, zero points 0."""
    from torchao.quantization import IntxUnpackedToInt8Tensor
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        IntxUnpackedToInt8TensorActivationQuantization as Act,
    )

    return IntxUnpackedToInt8Tensor(
        codes.to(torch.int8),
        scale.float(),
        torch.zeros(scale.shape, dtype=torch.int8),
        getattr(torch, f"int{bits}"),
        (1, group_size),
        torch.float32,
        Act.INT8_ASYM_PER_TOKEN if activations else None,
    )


def _intx_from_float(weight: torch.Tensor, bits: int, group_size: int, activations: bool) -> torch.Tensor:
    """``weight`` quantized symmetrically: ``scale`` = absolute max of the group / (2 ** (bits - 1) - 0.5), codes
    rounded and clamped to the signed range (torchao's symmetric rule)."""
    w = weight.detach().float()
    out_features, in_features = w.shape
    groups = w.reshape(out_features, in_features // group_size, group_size)
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    scale = (groups.abs().amax(dim=2) / ((high - low) / 2)).clamp(min=torch.finfo(torch.float32).eps)
    codes = torch.round(groups / scale[..., None]).clamp_(low, high).reshape(out_features, in_features)
    return _intx(codes, scale, bits, group_size, activations)


def _intx_from_zoo(layer: QuantizedLinear) -> torch.Tensor | None:
    """A zoo-quantized layer's own codes and scales (no re-quantization): int8 per row, or symmetric int4 (zero
    points 0, e.g. MobileLLM-Pro's QAT weights); None for asymmetric int4, which XNNPACK's kernels do not take."""
    if layer.bits == 8:
        return _intx(layer.qweight, layer.scale[:, None], 8, layer.in_features, True)
    if bool((layer.zero != 0).any()):
        return None
    codes = unpack_int4(layer.codes()).to(torch.int16) - 8
    return _intx(codes, layer.scale.float(), 4, layer.group_size, True)


def stack_linears(linears: list[nn.Linear]) -> nn.Linear:
    """One linear layer whose output rows are ``linears``' in turn (float32, or torchao's quantized weights of one
    kind: the codes, scales and zero points stacked, each row keeps its own): what :class:`StaticDecoder` runs a
    layer's query/key/value projections as. The same values as the layers apart, in one product."""
    weights = [layer.weight.detach() for layer in linears]
    kinds = {(type(w), getattr(w, "block_size", None), getattr(w, "target_dtype", None)) for w in weights}
    if len(kinds) > 1:
        raise ExportError(f"cannot stack linear layers of different kinds of weights: {sorted(map(str, kinds))}")
    if hasattr(weights[0], "qdata"):
        first = weights[0]
        data = {name: torch.cat([getattr(w, name) for w in weights]) for name in first.tensor_data_names}
        attributes = [getattr(first, name) for name in first.tensor_attribute_names]
        weight = type(first)(*data.values(), *attributes)
    else:
        weight = torch.cat(weights)
    biases = [layer.bias for layer in linears]
    stacked = nn.Linear(weights[0].shape[1], sum(w.shape[0] for w in weights), bias=biases[0] is not None)
    stacked.weight = nn.Parameter(weight, requires_grad=False)
    if stacked.bias is not None:
        stacked.bias = nn.Parameter(torch.cat([b.detach() for b in biases]), requires_grad=False)
    return stacked


class Int8Embedding(nn.Module):
    """A token embedding stored as int8 codes with one float32 scale per row (symmetric, absolute max / 127): the
    lookup reads the int8 rows and scales them, in ops every ExecuTorch runtime has (no quantized-kernel library)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        codes, scale = quantize_int8(weight)
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale[:, None])

    @property
    def weight(self) -> torch.Tensor:  # what a float embedding's weight is taken for: its dtype and device
        return self.scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.codes).float() * F.embedding(ids, self.scale)


@torch.no_grad()
def quantize_for_xnnpack(model: nn.Module, quantize: str, group_size: int = DEFAULT_GROUP_SIZE) -> nn.Module:
    """A copy of a zoo LM with the weights an ExecuTorch ``pte`` stores for ``quantize``:

    * ``"8da4w"``: every decoder projection int4 in groups of ``group_size`` input columns (``0``: one scale per
      output row, XNNPACK's per-channel int4 kernels: a quarter faster here, coarser), ``"8da8w"``: int8 per output
      row; both with int8 dynamic activations (per token, asymmetric), XNNPACK's kernels. A model already
      quantized by the zoo with the same bits keeps its own codes and scales (int8, or symmetric int4 such as
      MobileLLM-Pro's QAT weights); asymmetric int4 is refused.
    * the output head int8 per row (int8 activations), above 4 bits as llama.cpp keeps it; tied to the embedding,
      it is a second copy of that matrix (XNNPACK packs its weights its own way), so both are int8;
    * the token embedding int8 per row (a lookup of int8 rows).

    Norms, routers and LoRA deltas stay float32.
    """
    try:
        bits = lookup(quantize, "pte").bits
    except ValueError as e:
        raise ExportError(str(e)) from None
    if not isinstance(group_size, int) or group_size < 0:
        raise ExportError(
            f"group_size must be a whole number of input columns, or 0 for one per row; got {group_size!r}"
        )
    done = model_quantization(model)
    if done is not None and (done.method == "bf16" or (done.method == "int8_weight_only") != (bits == 8)):
        raise ExportError(
            f"this model holds {done.describe()} weights; pte quantize={quantize!r} stores "
            f"{'int8' if bits == 8 else 'int4'} projections: export the float model, or quantize "
            f"{'8da8w' if done.method == 'int8_weight_only' else '8da4w'}"
        )
    lm = copy.deepcopy(model).float().eval()
    for name in quantized_layer_names(lm):
        parent_name, _, child_name = name.rpartition(".")
        parent, layer = lm.get_submodule(parent_name), lm.get_submodule(name)
        if isinstance(layer, QuantizedLinear):
            weight = _intx_from_zoo(layer)
            if weight is None:
                raise ExportError(
                    f"{name} holds asymmetric int4 codes (zero points), which XNNPACK's int4 kernels do not take: "
                    "export the float model with quantize='8da4w', or quantize the zoo model symmetrically"
                )
            linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
            if layer.bias is not None:
                linear.bias.copy_(layer.bias.float())
        else:
            linear, g = layer, ((group_size or layer.in_features) if bits == 4 else layer.in_features)
            if layer.in_features % g:
                raise ExportError(
                    f"pte quantize={quantize!r}: group_size {g} does not divide the input width {layer.in_features} "
                    f"of {name}; choose a group_size that divides it (32 divides every registered shape)"
                )
            weight = _intx_from_float(layer.weight, bits, g, True)
        linear.weight = nn.Parameter(weight, requires_grad=False)
        setattr(parent, child_name, linear)
    head = lm.output_weight.detach()
    lm.lm_head = nn.Linear(head.shape[1], head.shape[0], bias=False)
    lm.lm_head.weight = nn.Parameter(_intx_from_float(head, 8, head.shape[1], True), requires_grad=False)
    lm.model.embed_tokens = Int8Embedding(lm.model.embed_tokens.weight)
    vars(lm).pop("quantization", None)  # the zoo's kernels no longer apply: torchao's tensors run the products
    return lm
