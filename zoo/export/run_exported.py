"""Run any folder ``zoo export`` wrote, by its own runtime and nothing of the zoo's model code: ``zoo run FOLDER``.

* ``pte``: :class:`~zoo.export.lm_runtime.CompiledLM` continues a random prompt (greedy, or as the folder's
  ``generation_config.json`` says), ExecuTorch or AOTInductor;
* ``gguf``: llama.cpp (llama-cpp-python) continues a random prompt greedily (both print the text too when the
  folder ships its tokenizer);
* ``pt2``: ``torch.export.load``'s program, ``onnx``: onnxruntime, on a random prompt's ids (language models) or a
  batch of random images of the exported size (vision), printing the logits' shape and top classes or next tokens.

Inputs are seeded, so two runs print the same.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..data.lm_tokenizer import load_lm_tokenizer
from .core import FORMATS, REPORT_NAME, TEXT
from .gguf_file import load_llama
from .lm_runtime import load
from .onnx_file import run, session

__all__ = ["is_export_folder", "run_export_folder"]


def is_export_folder(path: str | Path) -> bool:
    """``path`` is a folder with an ``export.json`` naming a known format."""
    report = Path(path) / REPORT_NAME
    if not report.is_file():
        return False
    try:
        return json.loads(report.read_text()).get("format") in FORMATS
    except (OSError, ValueError, AttributeError):
        return False


def _report(folder: Path) -> dict:
    report = json.loads((folder / REPORT_NAME).read_text())
    files = report.get("files") or []
    missing = [f for f in files if not (folder / f).is_file()]
    if not files or missing:
        raise FileNotFoundError(
            f"{folder} is an incomplete {report.get('format')} export: {', '.join(missing) or 'no artefact'} "
            "missing; export it again (zoo export)"
        )
    return report


def run_export_folder(
    folder: str | Path, *, seed: int = 0, prompt_tokens: int = 8, max_new_tokens: int = 8, batch_size: int = 1
) -> list[str]:
    """Run the artefact of an export ``folder`` on seeded inputs; the lines that say what it did."""
    folder = Path(folder)
    report = _report(folder)
    fmt, spec = report["format"], report.get("spec") or {}
    generator = torch.Generator().manual_seed(seed)
    path = folder / report["files"][0]
    if fmt == "pte":
        lm = load(folder)
        prompt = torch.randint(0, lm.vocab_size, (1, prompt_tokens), generator=generator)
        start = time.perf_counter()
        out = lm.generate(prompt, max_new_tokens)[0, prompt_tokens:].tolist()
        return _tokens_lines(f"pte ({lm.backend})", prompt, out, time.perf_counter() - start, folder)
    if fmt == "gguf":
        context = prompt_tokens + max_new_tokens
        llm = load_llama(path, n_ctx=context, n_batch=context, n_threads=torch.get_num_threads(), verbose=False)
        try:
            prompt = torch.randint(0, llm.n_vocab(), (1, prompt_tokens), generator=generator)
            start = time.perf_counter()
            out = []
            for token in llm.generate(prompt[0].tolist(), top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
                out.append(int(token))
                if len(out) == max_new_tokens:
                    break
            return _tokens_lines("gguf (llama.cpp)", prompt, out, time.perf_counter() - start, folder)
        finally:
            llm.close()
    if spec.get("task") == TEXT:
        vocab = int(json.loads((folder / "config.json").read_text())["vocab_size"])
        x = torch.randint(0, vocab, (batch_size, prompt_tokens), generator=generator)
    else:
        x = torch.randn(batch_size, *spec["input_size"], generator=generator)
    if fmt == "pt2":
        program = torch.export.load(path).module()
        runtime = "pt2 (torch.export.load)"
        start = time.perf_counter()
        with torch.no_grad():
            logits = program(x)
    else:
        sess = session(path)
        runtime = "onnx (onnxruntime)"
        start = time.perf_counter()
        logits = run(sess, x)
    seconds = time.perf_counter() - start
    lines = [f"{runtime}: input {tuple(x.shape)} -> logits {tuple(logits.shape)} in {seconds * 1e3:.1f} ms"]
    if spec.get("task") == TEXT:
        lines.append(f"next token after each prompt: {logits[:, -1].argmax(-1).tolist()}")
    else:
        top = logits.softmax(-1)[0].topk(min(5, logits.shape[-1]))
        lines.append(
            "top classes of input 0: "
            + ", ".join(f"{i}:{p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
        )
    return lines


def _tokens_lines(runtime: str, prompt: torch.Tensor, new: list[int], seconds: float, folder: Path) -> list[str]:
    """What a run printed: the ids, and their text when the folder ships its tokenizer."""
    rate = f", {len(new) / seconds:.1f} tok/s" if new and seconds > 0 else ""
    lines = [
        f"{runtime}: random prompt of {prompt.shape[1]} tokens -> {len(new)} new tokens in {seconds * 1e3:.1f} ms{rate}",
        f"prompt ids:    {prompt[0].tolist()}",
        f"generated ids: {new}",
    ]
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file():
        tokenizer = load_lm_tokenizer(folder)
        lines += [
            f"prompt text:    {tokenizer.decode(prompt[0].tolist())!r}",
            f"generated text: {tokenizer.decode(new)!r}",
        ]
    return lines
