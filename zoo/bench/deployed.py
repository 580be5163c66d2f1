"""The deployed forms of the vision models beside eager PyTorch, timed side by side in one run.

For each model (default ``poolformer_s12``, ``convformer_s18``) and batch size, on the same weights (timm's
model with :func:`zoo.bench.harness.randomize_` weights, loaded into the zoo's, as in :mod:`zoo.bench.vision`):

* ``zoo eager``: the zoo model under ``torch.inference_mode`` (the peer of the rows below);
* ``zoo onnxruntime``: ``zoo.export(model, "onnx")`` (dynamic batch) run by onnxruntime's CPU provider with as
  many intra-op threads as torch uses;
* ``zoo torch.compile``: ``torch.compile(model, options={"freezing": True})`` (inductor with the weights frozen
  into constants, which lets it pre-pack them for oneDNN; compiled during the warm-up);
* ``timm onnxruntime``: timm's model through the same exporter and runtime, the reference point for the zoo's
  exported form (a row with ``timm onnxruntime`` as its peer).

Each row's difference is the candidate's logits against its peer's eager logits on the same input (the
``timm onnxruntime`` row: the zoo's ONNX against timm's eager features is not like for like, so its difference
column holds timm's ONNX against timm's eager logits). Targets: an exported or compiled form >= 1.3x the zoo's
eager figure, and the zoo's ONNX >= 1.0x timm's ONNX.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from ..export import export
from ..export.onnx_file import run as ort_run
from ..export.onnx_file import session
from .harness import Row, default_runs, median, output_diff, time_interleaved
from .vision import build_pair

DEFAULT_MODELS = ("poolformer_s12", "convformer_s18")
DEFAULT_BATCH_SIZES = (1, 32)
TARGET_EAGER = 1.3
TARGET_TIMM = 1.0
TOLERANCE = 1e-4
FORMS = ("onnxruntime", "compile")


def _timm_onnx(model, folder: Path, img_size: int) -> Path:
    path = folder / "timm.onnx"
    x = torch.randn(2, 3, img_size, img_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=({0: batch},), verbose=False)
    program.save(str(path))
    return path


def compare(
    name: str,
    batch_sizes: Sequence[int],
    runs=None,
    warmup: int = 2,
    img_size: int = 224,
    forms: Sequence[str] = FORMS,
) -> list[Row]:
    """Rows of every deployed form of ``name`` against zoo eager (and the zoo's ONNX against timm's)."""
    timm_model, zoo_model = build_pair(name)
    threads = torch.get_num_threads()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        candidates = {"zoo eager": zoo_model}
        if "onnxruntime" in forms:
            folder = Path(tmp) / "zoo"
            export(zoo_model, "onnx", folder, input_size=(3, img_size, img_size), model_name=name)
            zoo_sess = session(folder / "model.onnx", threads)
            timm_sess = session(_timm_onnx(timm_model, Path(tmp), img_size), threads)
            candidates["zoo onnxruntime"] = lambda x: ort_run(zoo_sess, x)
            candidates["timm onnxruntime"] = lambda x: ort_run(timm_sess, x)
        if "compile" in forms:
            # freezing: weights become constants, so inductor folds them and packs them for oneDNN once
            candidates["zoo torch.compile"] = torch.compile(zoo_model, options={"freezing": True})
        for bs in batch_sizes:
            x = torch.randn(bs, 3, img_size, img_size, generator=torch.Generator().manual_seed(bs))
            n = runs or default_runs(bs)
            fns = {label: (lambda f=f, x=x: f(x)) for label, f in candidates.items()}
            times = time_interleaved(fns, n, warmup, desc=f"{name} b{bs} deployed")
            with torch.inference_mode():
                outputs = {label: torch.as_tensor(f()) for label, f in fns.items()}
                timm_eager = timm_model(x)
            rate = {label: bs / median(t) for label, t in times.items()}
            for label in candidates:
                if label in ("zoo eager", "timm onnxruntime"):
                    continue
                rows.append(
                    Row(
                        name,
                        f"batch {bs}",
                        "zoo eager",
                        label,
                        "img/s",
                        rate["zoo eager"],
                        rate[label],
                        n,
                        TARGET_EAGER,
                        **output_diff(outputs[label], outputs["zoo eager"]),
                        times_s={k: v["total"] for k, v in times.items()},
                    )
                )
            if "timm onnxruntime" in candidates:
                timm_diff = output_diff(outputs["timm onnxruntime"], timm_eager)
                rows.append(
                    Row(
                        name,
                        f"batch {bs}",
                        "timm onnxruntime",
                        "zoo onnxruntime",
                        "img/s",
                        rate["timm onnxruntime"],
                        rate["zoo onnxruntime"],
                        n,
                        TARGET_TIMM,
                        **timm_diff,
                    )
                )
    return rows


def notes(rows: Sequence[Row]) -> list[str]:
    return [
        "deployed forms: max|d| / rel are the candidate's logits against the peer's eager logits on the same input;",
        "  'zoo onnxruntime vs timm onnxruntime' rows show timm's ONNX against timm's eager (the heads differ by design)",
    ]
