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

``zoo bench deployed --out results/deployed.json`` adds the run to that file's ``runs`` (:func:`write_results`):
one row per model and setting with every form's rate, the same model and setting in earlier runs replaced.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..export import ExportSpec, export
from ..export.gguf_file import load_llama
from ..export.lm_runtime import load as load_lm_artifact
from ..export.onnx_file import run as ort_run
from ..export.onnx_file import session
from ..factory import create_model
from .harness import (
    Row,
    default_runs,
    load_results,
    median,
    one_writer,
    output_diff,
    peer_row,
    provenance,
    randomize_,
    save_results,
    time_interleaved,
)
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
    program = torch.onnx.export(
        model, (x,), dynamo=True, opset_version=ExportSpec.opset, dynamic_shapes=({0: batch},), verbose=False
    )
    program.save(str(path))
    return path


def setting_label(batch: int, img_size: int = 224) -> str:
    """A vision row's setting: ``batch 1`` at the published 224 pixels, ``batch 1, 32 px`` at another size (a row
    of another size is another row of the results file, never a replacement of the published one)."""
    return f"batch {batch}" if img_size == 224 else f"batch {batch}, {img_size} px"


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
                    peer_row(
                        name,
                        setting_label(bs, img_size),
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
                    peer_row(
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


# ------------------------------------------------------------------------------------------------------------------
# Language models: zoo eager against its deployed forms, same weights
# ------------------------------------------------------------------------------------------------------------------

LM_DEFAULT_MODELS = ("mobilellm_125m",)


def _llama_cpp_decoder(path: Path, context: int):
    """Greedy decoding through llama-cpp-python, as its users run it (``Llama.generate`` with top-k 1), from an
    empty cache at every call: ``generate`` would otherwise keep the prompt of the call before and run only its
    last token, where the zoo's paths and transformers run the whole prompt (at 32 tokens, about 5% of a
    128-token call at Q4_0)."""
    llm = load_llama(path, n_ctx=context, n_batch=context, n_threads=torch.get_num_threads(), verbose=False)

    def generate(prompt: list[int], new_tokens: int) -> list[int]:
        llm.reset()
        out = []
        for token in llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(int(token))
            if len(out) == new_tokens:
                break
        return out

    return llm, generate


def compare_lm(
    name: str,
    runs: int = 5,
    warmup: int = 1,
    prompt_tokens: int = 32,
    new_tokens: int = 128,
    forms: Sequence[str] = ("llama.cpp", "pte"),
    **model_kwargs,
) -> list[Row]:
    """Greedy decode tokens/s (batch 1, fp32 weights) of the zoo model in eager PyTorch against its deployed forms:
    the GGUF file in llama.cpp (f32, the same weights) and the compiled ``pte`` artefact."""
    model = randomize_(create_model(name, **model_kwargs)).eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_tokens), generator=torch.Generator().manual_seed(1))
    context = prompt_tokens + new_tokens
    candidates: dict[str, object] = {}
    closers = []
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        if "llama.cpp" in forms:
            export(model, "gguf", Path(tmp) / "gguf", model_name=name, quantize="f32")
            llm, llama_generate = _llama_cpp_decoder(Path(tmp) / "gguf" / "model.gguf", context)
            closers.append(llm.close)
            candidates["llama.cpp f32"] = lambda: llama_generate(prompt[0].tolist(), new_tokens)
        if "pte" in forms:
            export(model, "pte", Path(tmp) / "pte", model_name=name, max_seq_len=context)
            runner = load_lm_artifact(Path(tmp) / "pte")
            candidates["zoo pte"] = lambda: runner.generate(prompt, new_tokens)[0, prompt_tokens:].tolist()

        def eager():
            return model.generate(prompt, max_new_tokens=new_tokens)[0, prompt_tokens:].tolist()

        try:
            times = time_interleaved({"zoo eager": eager, **candidates}, runs, warmup, desc=f"{name} deployed decode")
            with torch.inference_mode():
                want = eager()
                outputs = {label: list(fn()) for label, fn in candidates.items()}
        finally:
            for close in closers:
                close()
    rows = []
    for label, got in outputs.items():
        agree = sum(a == b for a, b in zip(got, want)) / len(want)
        rows.append(
            peer_row(
                name,
                f"decode {new_tokens} (fp32)",
                "zoo eager",
                label,
                "tok/s",
                times["zoo eager"],
                times[label],
                runs,
                work=new_tokens,
                extra={"same tokens": got == want, "token agreement": agree},
                times_s={k: v["total"] for k, v in times.items()},
            )
        )
    return rows


# (candidate, peer) of a row -> the results file's keys for (its rate, its peer's rate)
_COLUMNS = {
    ("zoo onnxruntime", "zoo eager"): ("onnxruntime_zoo", "zoo_eager"),
    ("zoo torch.compile", "zoo eager"): ("torch_compile", "zoo_eager"),
    ("zoo onnxruntime", "timm onnxruntime"): ("onnxruntime_zoo", "onnxruntime_timm"),
    ("llama.cpp f32", "zoo eager"): ("llama_cpp_f32", "zoo_eager"),
    ("zoo pte", "zoo eager"): ("executorch_pte", "zoo_eager"),
}


def result_rows(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The rows of one run as ``results/deployed.json`` holds them: one per model and setting (a language model's
    one: ``greedy decode, batch 1``), each form's rate (two decimals) under its own key, beside zoo eager's."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if (r.candidate, r.peer) not in _COLUMNS:
            raise ValueError(f"no results column for {r.candidate} against {r.peer}")
        rate, peer_rate = _COLUMNS[(r.candidate, r.peer)]
        # decoding: the prompt and token counts are the command's; the row is the model's one decode figure
        setting = "greedy decode, batch 1" if r.unit == "tok/s" else r.setting
        row = out.setdefault((r.model, setting), {"model": r.model, "setting": setting, "unit": r.unit})
        row[peer_rate] = round(r.peer_rate, 2)
        row[rate] = round(r.rate, 2)
    return list(out.values())


@one_writer
def write_results(path: Path, rows: Sequence[Row], command: str) -> dict[str, Any]:
    """Append one run to ``path``'s ``runs`` under its provenance, after removing the rows (model, setting) it
    measured again from the earlier runs (a run left without rows goes); written atomically."""
    new = result_rows(rows)
    measured = {(r["model"], r["setting"]) for r in new}
    runs = []
    old = load_results(path)
    for run in old.get("runs", []):
        kept = [r for r in run["rows"] if (r["model"], r["setting"]) not in measured]
        if kept:
            runs.append({**run, "rows": kept})
    doc = {**old, "runs": [*runs, {"command": command, "provenance": provenance(), "rows": new}]}  # other keys stay
    save_results(path, doc)
    return doc
