"""Whole models: :func:`quantize_model` swaps a decoder LM's projections for :class:`QuantizedLinear`,
:func:`dequantize_model` undoes it, and QAT checkpoints are converted. Part of :mod:`zoo.lm.quant`, which
re-exports every public name."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from .quant_format import INT4_GROUP_SIZES, QuantSpec, _check_group, pack_int4, quantize_int4
from .quant_layer import QuantizedLinear

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
    # a spec parsed above (create_model parses quantize= once) is taken as it is
    parsed = isinstance(quantize, QuantSpec) and group_size is None and act_bits is None
    spec = quantize if parsed else QuantSpec.parse(quantize, group_size, act_bits)
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
