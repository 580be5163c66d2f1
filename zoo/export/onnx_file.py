"""``onnx``: the dynamo ONNX exporter (``torch.onnx.export(..., dynamo=True)``) at a stated opset; ``check`` runs
the file in onnxruntime on a seeded sample and compares with eager.

``quantize="int8"`` adds ``model.int8.onnx``, onnxruntime's dynamic int8 quantization of the matrix products
(weights int8, activations quantized per batch at run time); its check reports the difference too, and passes
when the cosine similarity of its logits and eager's is at least 0.98 (the arithmetic changes, so they cannot be
equal).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .core import ExportError, ExportSpec, compare
from .program import check_inputs, dynamic_shapes, traced_module

FILE_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
INT8_MIN_COSINE = 0.98  # int8 changes the arithmetic: logits must point the same way, not be equal
QUANTIZE = (None, "int8")


def _require():
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f'ONNX export needs onnx and onnxscript ({e}); pip install -e ".[export]"') from e


def write(model: nn.Module, folder: Path, spec: ExportSpec) -> list[str]:
    if spec.quantize not in QUANTIZE:
        raise ExportError(f"onnx quantize must be one of {QUANTIZE[1:]} or none, got {spec.quantize!r}")
    _require()
    example = spec.example_input(model)
    tmp = folder / f".{FILE_NAME}.tmp"
    for name in ("onnxscript", "torch.onnx", "onnx_ir"):  # the exporter narrates every pass at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                traced_module(model, spec),
                (example,),
                dynamo=True,
                opset_version=spec.opset,
                dynamic_shapes=dynamic_shapes(model, spec),
                input_names=["input_ids" if spec.task == "text-generation" else "pixel_values"],
                output_names=["logits"],
                external_data=False,
                verbose=False,
            )
            program.save(str(tmp))
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"ONNX export of {spec.name} failed: {type(e).__name__}: {str(e)[:2000]}") from e
    os.replace(tmp, folder / FILE_NAME)
    files = [FILE_NAME]
    if spec.quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(folder / FILE_NAME), str(folder / INT8_NAME), weight_type=QuantType.QInt8)
        files.append(INT8_NAME)
    return files


def session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session (``threads``: intra-op threads; default torch's)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ExportError(f'checking an ONNX file needs onnxruntime ({e}); pip install -e ".[export]"') from e
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess, x: torch.Tensor) -> torch.Tensor:
    name = sess.get_inputs()[0].name
    return torch.from_numpy(sess.run(None, {name: x.numpy()})[0])


def check(model: nn.Module, folder: Path, spec: ExportSpec) -> dict:
    import onnxruntime as ort

    eager = traced_module(model, spec)
    report = {"runtime": f"onnxruntime {ort.__version__}", "opset": spec.opset}
    ok = True
    for name in (FILE_NAME, INT8_NAME):
        if not (folder / name).is_file() or (name == INT8_NAME and spec.quantize != "int8"):
            continue
        sess = session(folder / name)
        results = []
        for x in check_inputs(model, spec):
            want, got = eager(x), run(sess, x)
            result = compare(want, got) | {"input_shape": list(x.shape)}
            if name == INT8_NAME:
                cosine = torch.nn.functional.cosine_similarity(want.flatten().float(), got.flatten(), dim=0).item()
                result |= {"cosine": cosine, "ok": cosine >= INT8_MIN_COSINE, "tolerance": None}
            results.append(result)
        part = {
            "ok": all(r["ok"] for r in results),
            "max_abs_diff": max(r.get("max_abs_diff", float("inf")) for r in results),
            "max_rel_diff": max(r.get("max_rel_diff", float("inf")) for r in results),
            "inputs": results,
        }
        if name == INT8_NAME:
            part["min_cosine"] = min(r["cosine"] for r in results)
        ok = ok and part["ok"]
        report[name] = part
    main = report[FILE_NAME]
    return {"ok": ok, **report, "max_abs_diff": main["max_abs_diff"], "max_rel_diff": main["max_rel_diff"]}


def usage(spec: ExportSpec) -> str:
    """The model card's lines on running this artefact."""
    name = "input_ids" if spec.task == "text-generation" else "pixel_values"
    shape = (
        "(B, T) int64 token ids" if spec.task == "text-generation" else "(B, C, H, W) float32, see preprocessing.json"
    )
    return "\n".join(
        [
            "```python",
            "import onnxruntime as ort",
            "",
            f'session = ort.InferenceSession("{FILE_NAME}", providers=["CPUExecutionProvider"])',
            f'(logits,) = session.run(None, {{"{name}": x}})  # x: numpy {shape}',
            "```",
        ]
    )
