"""``gguf``: one file that llama.cpp (``llama-cli``, ``llama-server``, llama-cpp-python, ...) runs, for the
Llama-shaped language models, written with the ``gguf`` package; ``check`` runs it in llama-cpp-python and
compares greedy decoding with eager.

What is written: the plain stack of Llama blocks each family says it runs as (its ``llama_blocks()``,
:mod:`zoo.lm.llama_blocks`):

* **MobileLLM** (and -R1, which the zoo builds as a dense Llama): llama.cpp's ``llama`` architecture. The zoo's
  RoPE rotates halves of each head (transformers' layout, pairs ``(i, i + d/2)``); llama.cpp's ``llama`` rotates
  adjacent pairs ``(2i, 2i + 1)``. The rows of every head of ``q_proj`` and ``k_proj`` (and their biases) are
  therefore interleaved, first half with second half, as llama.cpp's own Hugging Face converter does; queries
  and keys are permuted alike, so attention scores are unchanged. Tied output weights write no ``output``
  tensor (llama.cpp reads ``token_embd`` then).
* **MobileLLM-LS**: llama.cpp has no weight sharing across blocks, so every *run* of a layer is a block, in
  schedule order (``0,0,1,1,...``): ``block_count`` is the number of layer runs and the file holds each shared
  weight twice (twice the memory; the same computation).
* **Recursive LMs without routing** (``vanilla_*``, ``recursive_*``): unrolled the same way; per-application norms
  (``ln_share=False``) and relaxed-recursion LoRA deltas are merged into each application's block.
  Mixture-of-Recursions routing (a per-token choice of depth at run time) and recursive KV sharing (later
  applications reading the first one's keys and values) have no llama.cpp form and are refused.
* **Sliding-window layers** (MobileLLM-Pro): llama.cpp's ``llama`` has no windows. Its ``granite_swa``
  architecture is a Llama block with a per-layer sliding-window pattern, Granite's multipliers and per-head
  attention sinks; with the multipliers at 1 and the sinks at ``-1e30`` (a softmax term of exactly 0) it computes
  the zoo's model, and it is written so. Only a llama.cpp recent enough to know ``granite_swa`` loads it.
* **Tokenizer** (when the model folder or ``tokenizer=`` has one): a byte-level BPE ``tokenizer.json`` (the zoo's
  :func:`zoo.data.text.train_bpe_tokenizer`, GPT-2's pre-tokenizer, or Llama-3's) as ``tokenizer.ggml.model =
  "gpt2"`` with its tokens, merges and token types; a SentencePiece BPE ``tokenizer.model`` (LLaMA's, which
  MobileLLM uses) as ``"llama"`` with scores and token types. Any other tokenizer is left out (the report says
  why) and the file declares no vocabulary (``"none"``): llama.cpp then runs it on token ids only.
* **quantize**: ``None``/``"f32"``, ``"f16"``, ``"q8_0"``, ``"q4_0"`` (``gguf.quants``) for the matrices; norms and
  other 1-D tensors stay f32, and a matrix whose rows are not a multiple of the 32-value block stays f16 (the
  report lists them). ``q4_0`` keeps the token embedding and output matrix at ``q8_0``, as llama-quantize keeps
  the output layer above 4 bits.

What was written (architecture, block count, tokenizer, tensor types) is recorded in ``spec.options["gguf"]``,
so ``export.json`` has it, and comes back in the check's report.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..lm.decoder import DecoderLM
from ..lm.llama_blocks import NoLlamaForm
from ..lm.quant import lookup, quant_names
from .core import ExportError, ExportSpec, _tokenizer_files
from .gguf_tokenizer import TokenizerUnsupported, read_tokenizer, write_tokenizer

_logger = logging.getLogger(__name__)

FILE_NAME = "model.gguf"
QUANTIZE = (None, *quant_names("gguf"))  # the vocabulary's GGUF types (zoo.lm.quant_format)
CHECK_TOKENS = 16  # greedy tokens compared in check
OUTPUT_TENSORS = ("token_embd.weight", "output.weight")  # q4_0 stores these q8_0
SINK = -1e30  # granite_swa's attention sinks: exp(SINK - max) is exactly 0 in float32
CHECK_TEXT = "The quick brown fox jumps over the lazy dog.\nIt's 2024 -- isn't it?  Hello,   world! (x+y)*3 = 42"
PLAIN_TEXT = "The quick brown fox jumps over the lazy dog. It is 2024, is it not? Hello, world!"  # for caveats

# blk.N.<name> -> the DecoderLayer module that holds it
_BLOCK_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _gguf():
    try:
        import gguf
    except ImportError as e:
        raise ExportError(f'GGUF export needs the gguf package ({e}); pip install -e ".[export]"') from e
    return gguf


# ------------------------------------------------------------------------------------------------------------------
# The blocks llama.cpp runs
# ------------------------------------------------------------------------------------------------------------------


def rope_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Rows of a q/k projection (or bias) from rotate-half order to llama.cpp's adjacent pairs, per head:
    row ``j`` of the first half goes to ``2j``, row ``j`` of the second half to ``2j + 1``."""
    head_dim = w.shape[0] // num_heads
    return np.ascontiguousarray(w.reshape(num_heads, 2, head_dim // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


def _layer_tensors(layer: nn.Module, lora=None, norms=None) -> dict[str, torch.Tensor]:
    """``{"attn_q.weight": ..., ...}`` of one zoo DecoderLayer, with LoRA deltas merged and norms replaced."""
    out = {}
    for name, path in _BLOCK_TENSORS.items():
        module = layer.get_submodule(path)
        if norms is not None and name in ("attn_norm", "ffn_norm"):
            module = norms[0 if name == "attn_norm" else 1]
        weight = module.weight.detach()
        short = path.rsplit(".", 1)[-1]
        if lora is not None and short in lora:
            weight = weight.float() + lora[short].delta_weight().detach().float()
        out[f"{name}.weight"] = weight
        if getattr(module, "bias", None) is not None:
            out[f"{name}.bias"] = module.bias.detach()
    return out


def blocks(model: nn.Module) -> tuple[list[dict[str, torch.Tensor]], list[int | None], list[str]]:
    """The blocks llama.cpp runs, in order (``blk.0``, ``blk.1``, ...): their tensors, attention windows (None =
    global) and notes, from the family's ``llama_blocks()`` (:mod:`zoo.lm.llama_blocks`). :class:`ExportError` for
    a model llama.cpp cannot compute."""
    if not isinstance(model, DecoderLM):
        raise ExportError(f"gguf is for the zoo's decoder language models, not {type(model).__name__}")
    if getattr(type(model), "llama_blocks", None) is None:
        raise ExportError(
            f"gguf does not know how {type(model).__name__} computes: its class declares no llama_blocks() "
            "(zoo.lm.llama_blocks), the plain stack of Llama blocks it runs as"
        )
    try:
        stack = model.llama_blocks()
    except NoLlamaForm as e:
        raise ExportError(str(e)) from None
    out, shared = [], {}
    for run in stack.runs:
        layer = model.model.layers[run.index]
        if run.lora is None and run.norms is None:  # the layer as it is: its tensors once, for every such run
            if run.index not in shared:
                shared[run.index] = _layer_tensors(layer)
            out.append(shared[run.index])
        else:
            out.append(_layer_tensors(layer, run.lora, run.norms))
    return out, [run.window for run in stack.runs], list(stack.notes)


# ------------------------------------------------------------------------------------------------------------------
# Tokenizer (read by zoo.export.gguf_tokenizer)
# ------------------------------------------------------------------------------------------------------------------


def tokenizer_source(model: nn.Module, spec: ExportSpec) -> Path | None:
    """The tokenizer to write: ``tokenizer=`` or the one beside the model's weights (tokenizer.json first)."""
    files = _tokenizer_files(model, spec.tokenizer)
    if spec.tokenizer is not None:
        return files[0]
    by_name = {p.name: p for p in files}
    return by_name.get("tokenizer.json") or by_name.get("tokenizer.model")


# ------------------------------------------------------------------------------------------------------------------
# write
# ------------------------------------------------------------------------------------------------------------------


def _types(quantize: str | None):
    """The tensor type and file type of a GGUF type name of the vocabulary (``"q4_0"`` / ``"gguf:q4_0"``)."""
    try:
        native = "f32" if quantize is None else lookup(quantize, "gguf").native
    except ValueError as e:
        raise ExportError(str(e)) from None
    gguf = _gguf()
    Q, F = gguf.GGMLQuantizationType, gguf.LlamaFileType
    return getattr(Q, native.upper()), F.ALL_F32 if native == "f32" else getattr(F, f"MOSTLY_{native.upper()}")


class _Encoder:
    """Encodes tensors for the file, once per source tensor (the blocks of a shared layer reuse the bytes)."""

    def __init__(self, qtype):
        self.gguf = _gguf()
        self.qtype = qtype
        self.memo: dict[int, tuple[torch.Tensor, np.ndarray, Any]] = {}
        self.kept: list[str] = []  # matrices left at f16 because their rows do not fill whole blocks

    def __call__(self, name: str, t: torch.Tensor, heads: int | None) -> tuple[np.ndarray, Any]:
        if id(t) in self.memo:
            return self.memo[id(t)][1:]
        array = _array(t)
        if heads is not None:
            array = rope_rows(array, heads)
        Q = self.gguf.GGMLQuantizationType
        qtype = self.qtype
        if qtype == Q.Q4_0 and name in OUTPUT_TENSORS:
            qtype = Q.Q8_0  # as llama-quantize keeps the output layer above 4 bits
        if array.ndim < 2 or qtype == Q.F32:
            out = (np.ascontiguousarray(array, dtype=np.float32), Q.F32)
        elif qtype == Q.F16:
            out = (array.astype(np.float16), Q.F16)
        elif array.shape[-1] % self.gguf.GGML_QUANT_SIZES[qtype][0]:
            self.kept.append(name)
            out = (array.astype(np.float16), Q.F16)
        else:
            out = (self.gguf.quants.quantize(np.ascontiguousarray(array, dtype=np.float32), qtype), qtype)
        self.memo[id(t)] = (t, *out)  # the source is held so that its id stays unique
        return out


def _tensors(model: nn.Module, written: list[dict[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor, Any]]:
    """``(gguf name, tensor, heads)`` of every tensor; ``heads`` is set for q/k (rows reordered for llama.cpp)."""
    c = model.config
    yield "token_embd.weight", model.model.embed_tokens.weight.detach(), None
    yield "output_norm.weight", model.model.norm.weight.detach(), None
    if model.lm_head is not None:
        yield "output.weight", model.lm_head.weight.detach(), None
    heads = {"attn_q": c.num_attention_heads, "attn_k": c.num_key_value_heads}
    for i, tensors in enumerate(written):
        for name, t in tensors.items():
            yield f"blk.{i}.{name}", t, heads.get(name.split(".")[0])


def _file_tokenizer(model: nn.Module, spec: ExportSpec, vocab_size: int) -> tuple[dict[str, Any] | None, dict]:
    """The tokenizer to write into the file (None: the file takes token ids only) and the report's entries on it;
    ``spec.options["vocabulary"] = False`` leaves it out (a file run on token ids, as the generate backend runs it)."""
    if spec.options.get("vocabulary") is False:
        return None, {"tokenizer": None, "tokenizer_note": "left out (vocabulary=False): the file takes token ids only"}
    source = tokenizer_source(model, spec)
    if source is None:
        note = "no tokenizer beside the model: the file declares no vocabulary (token ids only)"
        return None, {"tokenizer": None, "tokenizer_note": note}
    try:
        tok = read_tokenizer(source, vocab_size)
    except TokenizerUnsupported as e:
        note = f"{source.name} left out of the file: {e}; the file takes token ids only"
        _logger.warning("gguf: %s", note)
        return None, {"tokenizer": None, "tokenizer_note": note}
    info = {"model": tok["model"], "pre": tok["pre"], "file": source.name}
    if tok["padded"]:
        info["padded"] = tok["padded"]
    if tok.get("caveats"):
        info["caveats"] = tok["caveats"]
        _logger.warning("gguf: tokenizer written with caveats: %s", "; ".join(tok["caveats"]))
    return tok, {"tokenizer": info}


def _write_hyperparameters(writer, spec: ExportSpec, c, qtype, file_type, block_count: int) -> None:
    """The model's name, file type and Llama hyperparameters (``llama.*`` or ``granite_swa.*`` keys)."""
    gguf = _gguf()
    writer.add_name(spec.name)
    writer.add_file_type(int(file_type))
    if qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(c.vocab_size)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(block_count)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_rope_dimension_count(c.head_dim)
    if c.head_dim * c.num_attention_heads != c.hidden_size:
        writer.add_key_length(c.head_dim)
        writer.add_value_length(c.head_dim)


def _write_tensors(
    writer, model: nn.Module, written: list[dict[str, torch.Tensor]], qtype, arch: str, spec: ExportSpec
) -> dict[str, Any]:
    """Add every tensor (and granite_swa's attention sinks); the report's ``tensor_types`` and ``kept_f16``."""
    gguf = _gguf()
    encode = _Encoder(qtype)
    counts: dict[str, int] = {}
    for name, t, heads in _tensors(model, written):
        data, dtype = encode(name, t, heads)
        quantized = dtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
        writer.add_tensor(name, data, raw_dtype=dtype if quantized else None)
        counts[dtype.name] = counts.get(dtype.name, 0) + 1
    if arch == "granite_swa":
        sinks = np.full(model.config.num_attention_heads, SINK, dtype=np.float32)
        for i in range(len(written)):
            writer.add_tensor(f"blk.{i}.attn_sinks.weight", sinks)
        counts["F32"] = counts.get("F32", 0) + len(written)
    report: dict[str, Any] = {"tensor_types": counts}
    if encode.kept:
        report["kept_f16"] = encode.kept
        _logger.warning(
            "gguf: %d matrices stay f16: their rows (%s) are not a multiple of %s's block",
            len(encode.kept),
            ", ".join(encode.kept[:4]) + ("..." if len(encode.kept) > 4 else ""),
            spec.quantize,
        )
    return report


@torch.no_grad()
def write(model: nn.Module, folder: Path, spec: ExportSpec) -> list[str]:
    gguf = _gguf()
    qtype, file_type = _types(spec.quantize)
    written, windows, notes = blocks(model)
    c = model.config
    arch = "llama" if all(w is None for w in windows) else "granite_swa"
    sizes = sorted({w for w in windows if w is not None})
    if len(sizes) > 1:
        raise ExportError(f"llama.cpp takes one sliding-window size per model; this one has {sizes}")
    report: dict[str, Any] = {"architecture": arch, "block_count": len(written), "notes": notes}
    tok, tokenizer_report = _file_tokenizer(model, spec, c.vocab_size)
    report.update(tokenizer_report)

    tmp = folder / f".{FILE_NAME}.tmp"
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        _write_hyperparameters(writer, spec, c, qtype, file_type, len(written))
        for key, value in spec.options.get("metadata", {}).items():  # the writer's own records (strings)
            writer.add_string(key, str(value))
        if arch == "granite_swa":
            writer.add_sliding_window(sizes[0])
            writer.add_sliding_window_pattern([w is not None for w in windows])
            writer.add_logit_scale(1.0)  # Granite divides the logits by it
            notes.append(
                f"sliding-window layers written as llama.cpp's granite_swa (window {sizes[0]}, "
                f"{sum(w is not None for w in windows)} of {len(windows)} blocks; multipliers 1, sinks {SINK:g})"
            )
        write_tokenizer(writer, tok)
        report.update(_write_tensors(writer, model, written, qtype, arch, spec))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, folder / FILE_NAME)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    spec.options["gguf"] = report
    return [FILE_NAME]


# ------------------------------------------------------------------------------------------------------------------
# check
# ------------------------------------------------------------------------------------------------------------------


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise ExportError(
            f"checking a GGUF file needs llama-cpp-python ({e}); pip install llama-cpp-python, or export without check"
        ) from e
    return llama_cpp


_AMX_LOCK = threading.Lock()


def _has_amx(llama_cpp) -> bool:
    """The build carries ggml's AMX backend (``AMX_INT8 = 1``: a native build on a CPU with AMX)."""
    info = llama_cpp.llama_print_system_info()
    return b"AMX_INT8 = 1" in (info if isinstance(info, bytes) else str(info).encode())


def load_llama(path: Path | str, **kwargs: Any):
    """``llama_cpp.Llama(model_path=path, **kwargs)``, as the check and the benches load a written file.

    A llama.cpp built with its AMX backend repacks q8_0/q4_0 matrices into AMX tiles, and on some machines its
    matmul (``ggml_backend_amx_mul_mat``) kills the process with a segmentation fault at the first decode (a tile
    configuration the CPU rejects; the same build on another machine runs). A crash cannot be caught, so with such
    a build the weights stay in llama.cpp's plain CPU buffers (model parameter ``use_extra_bufts`` off; this also
    leaves out the CPU_REPACK layouts, which only change speed). A binding too old to have that parameter is
    refused rather than run.
    """
    llama_cpp = _llama_cpp()
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"no GGUF file at {path}")
    if not _has_amx(llama_cpp):
        return llama_cpp.Llama(model_path=str(path), **kwargs)
    from llama_cpp import llama_cpp as capi

    if "use_extra_bufts" not in dict(capi.llama_model_params._fields_):
        raise ExportError(
            f"llama-cpp-python {getattr(llama_cpp, '__version__', '?')} was built with llama.cpp's AMX backend, whose "
            "quantized matmul crashes on some CPUs, and has no use_extra_bufts to keep weights off it: upgrade "
            'llama-cpp-python, or rebuild it with CMAKE_ARGS="-DGGML_AMX=OFF"'
        )
    defaults = capi.llama_model_default_params

    def plain_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    # Llama() builds its model parameters from llama_model_default_params and exposes no use_extra_bufts
    with _AMX_LOCK:
        capi.llama_model_default_params = plain_buffers
        try:
            return llama_cpp.Llama(model_path=str(path), **kwargs)
        finally:
            capi.llama_model_default_params = defaults


def _logits(model: nn.Module, ids: list[int]) -> torch.Tensor:
    device = model.model.embed_tokens.weight.device
    out = model(torch.tensor([ids], device=device))
    return (out if isinstance(out, torch.Tensor) else out.logits)[0].float().cpu()


def _reference_tokenizer(path: Path) -> Callable[[str], list[int]] | None:
    try:
        if path.suffix == ".json":
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(path))
            return lambda text: tok.encode(text, add_special_tokens=False).ids
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(path))
        return lambda text: list(sp.encode(text))
    except ImportError:
        return None


def _check_prompt(model: nn.Module, spec: ExportSpec) -> tuple[list[int], int]:
    """The check's seeded prompt (token ids) and how many tokens to decode after it."""
    n_new = int(spec.options.get("check_tokens", CHECK_TOKENS))
    if n_new < 1:
        raise ExportError(f"check_tokens must be at least 1 (got {n_new})")
    prompt = spec.example_input(model, batch_size=1)[0].tolist()
    vocab = model.model.embed_tokens.weight.shape[0]
    if not prompt or not all(0 <= t < vocab for t in prompt):
        raise ExportError(f"the check's prompt must be token ids in [0, {vocab}) (got {prompt})")
    return prompt, n_new


def _greedy(llm, prompt: list[int], n_new: int) -> list[int]:
    """``n_new`` greedy tokens after ``prompt`` in llama.cpp."""
    llm.eval(prompt)
    ours = []
    for step in range(n_new):
        ours.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        if step + 1 < n_new:
            llm.eval([ours[-1]])
    return ours


def _compare_tokenization(llm, model: nn.Module, folder: Path, spec: ExportSpec) -> dict[str, Any] | None:
    """The file's tokenization of a fixed text against the written tokenizer's (None: nothing to compare with)."""
    reference, caveats = _written_tokenizer(model, folder, spec)
    if reference is None:
        return None
    ref = _reference_tokenizer(reference)
    if ref is None:
        return None
    text = PLAIN_TEXT if caveats else CHECK_TEXT
    want_ids = ref(text)
    got_ids = list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
    return {"tokenizer_equal": want_ids == got_ids, "tokenizer_text": text, "eager_ids": want_ids, "gguf_ids": got_ids}


def _check_result(
    runtime: str,
    spec: ExportSpec,
    prompt: list[int],
    eager: list[int],
    ours: list[int],
    want: torch.Tensor,
    got: torch.Tensor,
    encoded: dict[str, Any] | None,
) -> dict[str, Any]:
    """The check's report from the greedy tokens and the teacher-forced logits of eager (``want``) and the file
    (``got``), with ``ok``."""
    diff = (want - got).abs().max().item()
    top = got[len(prompt) - 1 :].argmax(-1).tolist()
    agreement = sum(a == b for a, b in zip(top, eager)) / max(len(eager), 1)
    equal = ours == eager
    result: dict[str, Any] = {
        "runtime": runtime,
        "quantize": spec.quantize or "f32",
        "prompt": prompt,
        "tokens_equal": equal,
        "eager_tokens": eager,
        "gguf_tokens": ours,
        "agreement": agreement,
        "max_abs_diff": diff,
        "max_rel_diff": diff / max(want.abs().max().item(), 1e-12),
        "finite": bool(torch.isfinite(got).all()),
        "gguf": spec.options.get("gguf"),
    }
    if not equal:
        d = next(i for i, (a, b) in enumerate(zip(ours, eager)) if a != b)
        row = want[len(prompt) - 1 + d]
        result["first_divergence"] = d
        result["eager_margin_there"] = (row[eager[d]] - row[ours[d]]).item()
    if encoded is not None:
        result.update(encoded)
    exact = (spec.quantize or "f32") in ("f32", "f16")
    ok = result["finite"] and (equal if exact else agreement >= float(spec.options.get("min_agreement", 0.0)))
    result["ok"] = bool(ok and (encoded is None or encoded["tokenizer_equal"]))
    return result


@torch.no_grad()
def check(model: nn.Module, folder: Path, spec: ExportSpec) -> dict:
    """Greedy decoding of ``CHECK_TOKENS`` tokens from a seeded prompt in llama.cpp and eager, the logits of the
    whole sequence (teacher-forced) compared, and (with a tokenizer) the tokenization of a fixed text.

    ``ok``: for f32/f16 the greedy tokens are equal (and so is the tokenization); quantized files must load and
    give finite logits (``agreement`` says how often their top-1 token is eager's; ``options["min_agreement"]``
    sets a floor).
    """
    llama_cpp = _llama_cpp()
    gguf = _gguf()
    path = folder / FILE_NAME
    prompt, n_new = _check_prompt(model, spec)
    device = model.model.embed_tokens.weight.device
    eager = model.generate(torch.tensor([prompt], device=device), max_new_tokens=n_new)[0, len(prompt) :].tolist()

    n_ctx = max(len(prompt) + n_new, 32)
    llm = load_llama(
        path,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_threads=torch.get_num_threads(),
        n_gpu_layers=0,
        logits_all=True,
        type_k=int(gguf.GGMLQuantizationType.F32),  # the cache in float32, as eager keeps it
        type_v=int(gguf.GGMLQuantizationType.F32),
        verbose=False,
    )
    try:
        ours = _greedy(llm, prompt, n_new)
        sequence = prompt + eager[:-1]  # teacher-forced: eager's tokens, every position's logits
        llm.reset()
        llm.eval(sequence)
        got = torch.from_numpy(np.array(llm.scores[: len(sequence)], dtype=np.float32))
        encoded = _compare_tokenization(llm, model, folder, spec)
    finally:
        llm.close()

    runtime = f"llama-cpp-python {getattr(llama_cpp, '__version__', '?')}"
    return _check_result(runtime, spec, prompt, eager, ours, _logits(model, sequence), got, encoded)


def _written_tokenizer(model: nn.Module, folder: Path, spec: ExportSpec) -> tuple[Path | None, list[str]]:
    """The tokenizer file the GGUF's vocabulary came from (the deployment folder's copy) and its caveats."""
    info = (spec.options.get("gguf") or {}).get("tokenizer")
    if info is None:
        field = _gguf().GGUFReader(str(folder / FILE_NAME)).get_field("tokenizer.ggml.model")
        if field is None or field.contents() == "none":
            return None, []
        source = tokenizer_source(model, spec)
        return (folder / source.name if source is not None and (folder / source.name).is_file() else source), []
    copy = folder / info["file"]
    return (copy if copy.is_file() else tokenizer_source(model, spec)), list(info.get("caveats") or [])


def usage(spec: ExportSpec) -> str:
    """The model card's lines on running this file."""
    report = spec.options.get("gguf") or {}
    lines = ["```python", "from llama_cpp import Llama", "", f'llm = Llama(model_path="{FILE_NAME}")']
    if report.get("tokenizer"):
        lines.append('print(llm("Once upon a time", max_tokens=32)["choices"][0]["text"])')
        lines += ["```", "", f"or `llama-cli -m {FILE_NAME} -p 'Once upon a time' -n 32`."]
    else:
        lines += [
            "# the file carries no vocabulary: it takes and gives token ids (greedy: top_k=1)",
            "for token in llm.generate(token_ids, top_k=1, temp=0.0, repeat_penalty=1.0):",
            "    ...",
            "```",
        ]
    if report.get("architecture") == "granite_swa":
        lines += ["", "The sliding-window layers need a llama.cpp that knows the `granite_swa` architecture."]
    return "\n".join(lines)
