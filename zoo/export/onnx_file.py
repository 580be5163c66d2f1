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

from .core import ExportError, ExportSpec, compare, format_quantize
from .program import check_inputs, dynamic_shapes, traced_module

FILE_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
INT8_MIN_COSINE = 0.98  # int8 changes the arithmetic: logits must point the same way, not be equal
# the dynamo exporter implements its ops from opset 18 on; a lower opset goes through ONNX's version converter, which
# fails on these graphs and leaves the file at 18, so it is refused. The top is torch's own limit.
MIN_OPSET = 18
MAX_OPSET = int(getattr(getattr(torch.onnx, "_constants", None), "ONNX_MAX_OPSET", 23))


def _require():
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f'ONNX export needs onnx and onnxscript ({e}); pip install -e ".[export]"') from e


def check_opset(opset) -> None:
    """Refuse an opset outside what the exporter writes (see :data:`MIN_OPSET`)."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"onnx opset {opset!r} is not supported: the exporter writes opsets {MIN_OPSET} to {MAX_OPSET} (below "
            f"{MIN_OPSET} ONNX's version converter fails on these models); pass --opset between them (default 20)"
        )


def file_opset(path: Path) -> int | None:
    """The default-domain (``ai.onnx``) opset a file declares."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def write(model: nn.Module, folder: Path, spec: ExportSpec) -> list[str]:
    format_quantize("onnx", spec.quantize)  # the vocabulary's onnx names
    check_opset(spec.opset)
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
    written = file_opset(tmp)
    if written != spec.opset:
        raise ExportError(
            f"the exporter wrote opset {written} where opset {spec.opset} was asked for; nothing was kept. Pass "
            f"--opset {written} (or another between {MIN_OPSET} and {MAX_OPSET})"
        )
    os.replace(tmp, folder / FILE_NAME)
    files = [FILE_NAME]
    if spec.quantize == "int8":
        _quantize_int8(folder / FILE_NAME, folder / INT8_NAME)
        files.append(INT8_NAME)
    return files


def _quantize_int8(source: Path, target: Path) -> None:
    """onnxruntime's dynamic int8 quantization of ``source``, its computed weights first stored (see
    :func:`stored_weights`)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = stored_weights(onnx.load(str(source)))
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        quantize_dynamic(model, str(tmp), weight_type=QuantType.QInt8)
    except Exception as e:
        raise ExportError(f"onnxruntime's int8 quantization of {source.name} failed: {type(e).__name__}: {e}") from e
    os.replace(tmp, target)


def stored_weights(model):
    """``model`` with every convolution weight the graph computes from stored tensors alone stored itself: the
    exporter writes MetaFormer's 1x1 convolutions as ``Unsqueeze(fc.weight)`` and SReT's scaled kernels as a
    ``Mul`` of stored tensors, and onnxruntime's quantizer quantizes only stored conv weights (it fails on computed
    ones). The values are computed once here by ONNX's reference evaluator; nodes and tensors nothing reads any
    more are dropped."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    stored = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    wanted = [n.input[1] for n in graph.node if n.op_type == "Conv" and n.input[1] not in stored]
    needed, names = [], []
    for name in dict.fromkeys(wanted):
        nodes, ok = _constant_producers(name, producer, stored)
        if ok:
            needed += [n for n in nodes if n not in needed]
            names.append(name)
    if not names:
        return model
    order = [n for n in graph.node if n in needed]  # the graph's own (topological) order
    sub = helper.make_graph(
        order, "weights", [], [helper.make_tensor_value_info(n, 0, None) for n in names], list(stored.values())
    )
    sub_model = helper.make_model(sub, opset_imports=model.opset_import)
    values = ReferenceEvaluator(sub_model).run(None, {})
    for name, value in zip(names, values):
        graph.initializer.append(numpy_helper.from_array(value, name))
    while True:  # nodes whose outputs nothing reads any more (their results are stored now)
        read = _read_names(graph) | {o.name for o in graph.output}
        dead = [n for n in graph.node if n in order and not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = _read_names(graph) | {o.name for o in graph.output}
    for tensor in [t for t in graph.initializer if t.name not in read]:
        graph.initializer.remove(tensor)
    return model


def _constant_producers(name: str, producer: dict, stored: dict, depth: int = 0) -> tuple[list, bool]:
    """The nodes computing ``name`` and whether they read stored tensors only (no graph input, no subgraph)."""
    if name in stored or not name:
        return [], True
    node = producer.get(name)
    if node is None or depth > 32 or any(a.HasField("g") or len(a.graphs) for a in node.attribute):
        return [], False
    nodes = []
    for i in node.input:
        more, ok = _constant_producers(i, producer, stored, depth + 1)
        if not ok:
            return [], False
        nodes += [n for n in more if n not in nodes]
    return nodes + [node], True


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
    report = {"runtime": f"onnxruntime {ort.__version__}", "opset": file_opset(folder / FILE_NAME)}
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


def _read_names(graph) -> set[str]:
    """The names the nodes of ``graph`` and of its subgraphs (If / Loop bodies) read."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                names |= _read_names(sub)
    return names


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
