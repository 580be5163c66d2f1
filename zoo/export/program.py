"""``pt2``: a ``torch.export`` program saved with ``torch.export.save``.

Vision models take ``(B, C, H, W)`` images with a dynamic batch (and, with ``dynamic_size``, dynamic height and
width where the architecture allows it); language models take ``(B, T)`` token ids with dynamic batch and length
and return the logits of every position (the cache-free forward; ``pte`` is the cached decode).

``quantize`` (language models): ``"bf16"``, ``"int8"`` or ``"int4"`` (:mod:`zoo.lm.quant`, applied by
:func:`zoo.export.export` before tracing): the program holds the int8/int4 codes and scales and dequantizes them
in the graph, so it runs on any machine; the check compares it with the quantized eager model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.export import Dim

from .core import TEXT, ExportError, ExportSpec, compare, format_quantize

FILE_NAME = "model.pt2"
MAX_BATCH = 1024
MAX_SIZE = 4096  # vision, dynamic_size: the largest height/width the program takes (or the example's, if larger)


class LogitsOnly(nn.Module):
    """The logits of a language model's cache-free forward, as a plain tensor (what an exported graph returns)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids)
        return out if isinstance(out, torch.Tensor) else out.logits


def traced_module(model: nn.Module, spec: ExportSpec) -> nn.Module:
    """What gets traced: the model itself (vision) or its logits (language models)."""
    return LogitsOnly(model) if spec.task == TEXT else model


def dynamic_shapes(model: nn.Module, spec: ExportSpec) -> tuple[dict[int, Dim], ...]:
    """The input's dynamic dimensions for ``torch.export``."""
    dims: dict[int, Dim] = {}
    if spec.dynamic_batch:
        dims[0] = Dim("batch", min=1, max=MAX_BATCH)
    if spec.task == TEXT:
        context = min(model.config.max_position_embeddings, max(spec.max_seq_len, 2))
        dims[1] = Dim("tokens", min=1, max=context)
    elif spec.dynamic_size:
        _, height, width = spec.input_size
        low = min_dynamic_size(model)
        if min(height, width) < low:
            raise ExportError(
                f"a dynamic image size needs an example input of at least {low}x{low} ({spec.name}'s last stage "
                f"at 2x2 or more), got {height}x{width}; pass a larger input_size"
            )
        dims[2] = Dim("height", min=low, max=max(MAX_SIZE, height))
        dims[3] = Dim("width", min=low, max=max(MAX_SIZE, width))
    return (dims,)


def min_dynamic_size(model: nn.Module) -> int:
    """The smallest height/width a dynamic-size program takes: two cells of the backbone's total stride, so that
    the last stage is at least 2x2 (torch.export specialises a dimension of size 1, and the channels-last stride
    checks of a 1x1 map would pin the size). Any size from there up works: no multiple of the stride is needed,
    the stages' floor arithmetic is traced symbolically."""
    try:
        stride = max(int(f["reduction"]) for f in model.feature_info)
    except (AttributeError, KeyError, TypeError, ValueError):
        stride = 32
    return 2 * stride


def export_program(model: nn.Module, spec: ExportSpec) -> torch.export.ExportedProgram:
    example, shapes = spec.example_input(model), dynamic_shapes(model, spec)
    try:
        return torch.export.export(traced_module(model, spec), (example,), dynamic_shapes=shapes)
    except Exception as e:  # torch's message names the op or guard that failed
        raise ExportError(f"torch.export of {spec.name} failed: {type(e).__name__}: {e}") from e


def write(model: nn.Module, folder: Path, spec: ExportSpec) -> list[str]:
    format_quantize("pt2", spec.quantize)  # the vocabulary's zoo formats
    if spec.quantize is not None and spec.task != TEXT:
        raise ExportError(f"pt2 quantize={spec.quantize!r} is for the language models (the vision models: onnx int8)")
    program = export_program(model, spec)
    tmp = folder / f".tmp-{FILE_NAME}"  # torch.export.save wants the .pt2 suffix
    torch.export.save(program, tmp)
    tmp.replace(folder / FILE_NAME)
    return [FILE_NAME]


def check_inputs(model: nn.Module, spec: ExportSpec) -> list[torch.Tensor]:
    """Inputs of two batch sizes (one when the batch is static); for LMs two lengths, for a dynamic image size
    two sizes."""
    x = spec.example_input(model, batch_size=3)
    inputs = [x[:1]] + ([x] if spec.dynamic_batch else [])
    if spec.task == TEXT:
        inputs.append(x[:1, : max(1, x.shape[1] // 2)])
    elif spec.dynamic_size:  # another height and width: one stride-32 step taller, 1.5 steps wider
        c, h, w = spec.input_size
        inputs.append(torch.randn(1, c, h + 32, w + 48, generator=torch.Generator().manual_seed(spec.seed + 1)))
    return inputs


def check(model: nn.Module, folder: Path, spec: ExportSpec) -> dict:
    program = torch.export.load(folder / FILE_NAME).module()
    eager = traced_module(model, spec)
    results = [compare(eager(x), program(x)) | {"input_shape": list(x.shape)} for x in check_inputs(model, spec)]
    return _summary(results, "torch.export.load")


def _summary(results: list[dict], runtime: str) -> dict:
    worst = max(results, key=lambda r: r.get("max_rel_diff", float("inf")))
    return {
        "ok": all(r["ok"] for r in results),
        "runtime": runtime,
        "max_abs_diff": max(r.get("max_abs_diff", float("inf")) for r in results),
        "max_rel_diff": worst.get("max_rel_diff", float("inf")),
        "inputs": results,
    }


def usage(spec: ExportSpec) -> str:
    """The model card's lines on running this artefact."""
    if spec.task == TEXT:
        call = "logits = program(input_ids)  # (B, T) int64 token ids -> (B, T, vocab) logits"
    else:
        call = (
            f"logits = program(images)  # (B, {', '.join(map(str, spec.input_size))}) float32, see preprocessing.json"
        )
    return "\n".join(
        ["```python", "import torch", "", f'program = torch.export.load("{FILE_NAME}").module()', call, "```"]
    )
