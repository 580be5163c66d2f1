"""``gguf``: one file that llama.cpp (``llama-cli``, ``llama-server``, llama-cpp-python, ...) runs, for the
Llama-shaped language models, written with the ``gguf`` package; ``check`` runs it in llama-cpp-python and
compares greedy decoding with eager.

What is written:

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

import json
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
from ..models.mobilellm import MobileLLM
from ..models.recursive import RecursiveLM
from .core import ExportError, ExportSpec, _tokenizer_files

_logger = logging.getLogger(__name__)

FILE_NAME = "model.gguf"
QUANTIZE = (None, "f32", "f16", "q8_0", "q4_0")
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

# GGUF token types (llama.cpp's llama_token_type; SentencePiece's piece types use the same numbers)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# pre-tokenizer regexes llama.cpp knows by name (tokenizer.ggml.pre)
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


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
    global) and notes. :class:`ExportError` for a model llama.cpp cannot compute."""
    if not isinstance(model, DecoderLM):
        raise ExportError(f"gguf is for the zoo's decoder language models, not {type(model).__name__}")
    c = model.config
    notes: list[str] = []
    if isinstance(model, MobileLLM):
        windows_of = c.layer_windows()
        cache: dict[int, dict[str, torch.Tensor]] = {}
        out, windows = [], []
        for index in model.schedule:
            if index not in cache:
                cache[index] = _layer_tensors(model.model.layers[index])
            out.append(cache[index])
            windows.append(windows_of[index])
        if c.layer_sharing:
            notes.append(
                f"layer sharing unrolled: {c.num_hidden_layers} layers written as {len(out)} blocks in schedule "
                f"order (each shared layer's weights stored once per run)"
            )
        return out, windows, notes
    if isinstance(model, RecursiveLM):
        if c.mor is not None:
            raise ExportError(
                f"{c.mor}-choice Mixture-of-Recursions routing cannot be written as GGUF: its routers decide per "
                f"token, at run time, which recursion steps a token runs, and llama.cpp runs every block on every "
                f"token (a token that leaves early would have to skip blocks and their cache)"
            )
        if c.kv_sharing:
            raise ExportError(
                "recursive KV sharing cannot be written as GGUF: later applications of a block attend to the keys "
                "and values of its first application, and every llama.cpp block computes and caches its own"
            )
        out, shared = [], {}
        for i, index in enumerate(model.schedule):
            lora = model.lora[str(i)] if str(i) in model.lora else None
            norms = tuple(model.app_norms[str(i)]) if str(i) in model.app_norms else None
            if lora is None and norms is None:  # the block as it is: its tensors once, for every such application
                if index not in shared:
                    shared[index] = _layer_tensors(model.model.layers[index])
                out.append(shared[index])
            else:
                out.append(_layer_tensors(model.model.layers[index], lora, norms))
        if len(set(model.schedule)) < len(model.schedule):
            notes.append(
                f"recursion unrolled: {max(model.schedule) + 1} shared blocks written as {len(out)} applications"
                + (" with their LoRA deltas merged" if len(model.lora) else "")
            )
        return out, [None] * len(out), notes
    raise ExportError(f"gguf does not know how {type(model).__name__} computes; it writes MobileLLM and recursive LMs")


# ------------------------------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------------------------------


class TokenizerUnsupported(Exception):
    """The tokenizer has no llama.cpp form; the message says why."""


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """``(field, wire type, value)`` of a protobuf message: ints for varints, bytes otherwise."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise TokenizerUnsupported(f"not a SentencePiece model (protobuf wire type {wire})")
        yield field, wire, value


def _int32(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def read_sentencepiece(path: Path) -> dict[str, Any]:
    """Pieces, scores, types, model type and special ids of a SentencePiece ``tokenizer.model`` (its protobuf
    read directly: sentencepiece_model.proto's ModelProto, TrainerSpec and NormalizerSpec field numbers)."""
    pieces, scores, types = [], [], []
    trainer = {"model_type": 1, "unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1}
    normalizer = {"name": "nmt_nfkc", "add_dummy_prefix": True, "remove_extra_whitespaces": True}
    try:
        for field, wire, value in _fields(path.read_bytes()):
            if field == 1 and wire == 2:  # SentencePiece
                piece, score, kind = "", 0.0, NORMAL
                for f, w, v in _fields(value):
                    if f == 1 and w == 2:
                        piece = v.decode("utf-8")
                    elif f == 2 and w == 5:
                        score = float(np.frombuffer(v, dtype="<f4")[0])
                    elif f == 3 and w == 0:
                        kind = v
                pieces.append(piece)
                scores.append(score)
                types.append(kind)
            elif field == 2 and wire == 2:  # TrainerSpec
                names = {3: "model_type", 40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}
                for f, w, v in _fields(value):
                    if f in names and w == 0:
                        trainer[names[f]] = _int32(v)
            elif field == 3 and wire == 2:  # NormalizerSpec
                for f, w, v in _fields(value):
                    if f == 1 and w == 2:
                        normalizer["name"] = v.decode("utf-8")
                    elif f == 3 and w == 0:
                        normalizer["add_dummy_prefix"] = bool(v)
                    elif f == 4 and w == 0:
                        normalizer["remove_extra_whitespaces"] = bool(v)
    except (IndexError, UnicodeDecodeError) as e:
        raise TokenizerUnsupported(f"{path.name} is not a SentencePiece model ({type(e).__name__})") from e
    if not pieces:
        raise TokenizerUnsupported(f"{path.name} holds no SentencePiece pieces")
    return {"pieces": pieces, "scores": scores, "types": types, **trainer, **normalizer}


def _tokenizer_config(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer_config.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _named_id(config: dict[str, Any], key: str, ids: dict[str, int]) -> int | None:
    value = config.get(key)
    if isinstance(value, dict):
        value = value.get("content")
    return ids.get(value) if isinstance(value, str) else None


def _pre_tokenizer(data: dict[str, Any]) -> str:
    """llama.cpp's name (tokenizer.ggml.pre) for a byte-level BPE tokenizer.json's splitting, or raise."""
    pre = data.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if data.get("normalizer") not in (None, {}):
        raise TokenizerUnsupported(f"its normalizer ({data['normalizer'].get('type')}) has no llama.cpp form")
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        if parts[0].get("add_prefix_space", False):
            raise TokenizerUnsupported("ByteLevel add_prefix_space=True has no llama.cpp gpt2 form")
        return "gpt-2"
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        pattern = (parts[0].get("pattern") or {}).get("Regex")
        if pattern == _LLAMA3_REGEX and not parts[1].get("add_prefix_space", False):
            return "llama-bpe"
        if pattern == _GPT2_REGEX and not parts[1].get("add_prefix_space", False):
            return "gpt-2"
        raise TokenizerUnsupported("its pre-tokenizer regex is not one llama.cpp knows by name")
    raise TokenizerUnsupported(f"its pre-tokenizer {kinds or None} is not byte-level BPE splitting")


def _template_adds_bos(post: dict[str, Any] | None) -> bool:
    """True when a tokenizer.json's post-processor puts a special token before the text (a BOS)."""
    if not post:
        return False
    if post.get("type") == "Sequence":
        return any(_template_adds_bos(p) for p in post.get("processors") or [])
    single = post.get("single") or [] if post.get("type") == "TemplateProcessing" else []
    return bool(single) and "SpecialToken" in single[0]


def _hf_tokenizer(path: Path, vocab_size: int) -> dict[str, Any]:
    data = json.loads(path.read_text())
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise TokenizerUnsupported(f"a {model.get('type')} tokenizer.json (llama.cpp takes byte-level BPE here)")
    pre = _pre_tokenizer(data)
    decoder = data.get("decoder") or {}
    if decoder.get("type") != "ByteLevel":
        raise TokenizerUnsupported(f"its decoder {decoder.get('type')} is not ByteLevel")
    ids: dict[str, int] = dict(model.get("vocab") or {})
    types: dict[int, int] = {}
    for added in data.get("added_tokens") or []:
        ids[added["content"]] = added["id"]
        types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    size = max(ids.values()) + 1
    if size > vocab_size:
        raise TokenizerUnsupported(f"it has {size} tokens, more than the model's {vocab_size} embeddings")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    token_types = [UNUSED] * vocab_size
    for token, i in ids.items():
        tokens[i] = token
        token_types[i] = types.get(i, NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    config = _tokenizer_config(path.parent)
    out = {
        "model": "gpt2",
        "pre": pre,
        "tokens": tokens,
        "token_types": token_types,
        "merges": merges,
        "add_bos": bool(config.get("add_bos_token", _template_adds_bos(data.get("post_processor")))),
        "bos": _named_id(config, "bos_token", ids),
        "eos": _named_id(config, "eos_token", ids),
        "pad": _named_id(config, "pad_token", ids),
        "unk": None,
    }
    for key, names in (
        ("bos", ("<|begin_of_text|>", "<s>", "<|startoftext|>", "<bos>")),
        ("eos", ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>")),
    ):
        if out[key] is None:
            out[key] = next((ids[n] for n in names if n in ids), None)
    out["padded"] = vocab_size - size
    out["caveats"] = []
    if pre == "llama-bpe" and not model.get("ignore_merges"):
        out["caveats"].append("llama.cpp's llama-bpe takes a whole word found in the vocabulary as one token")
    return out


def _spm_tokenizer(path: Path, vocab_size: int) -> dict[str, Any]:
    sp = read_sentencepiece(path)
    if sp["model_type"] != 2:
        kind = {1: "unigram", 3: "word", 4: "char"}.get(sp["model_type"], str(sp["model_type"]))
        raise TokenizerUnsupported(f"a SentencePiece {kind} model (llama.cpp's 'llama' vocabulary is BPE)")
    size = len(sp["pieces"])
    if size > vocab_size:
        raise TokenizerUnsupported(f"it has {size} pieces, more than the model's {vocab_size} embeddings")
    pad = vocab_size - size
    config = _tokenizer_config(path.parent)
    caveats = []  # what SentencePiece does to text before splitting that llama.cpp does not
    if sp["name"] not in ("identity", ""):
        caveats.append(
            f"SentencePiece normalizes text ({sp['name']}) and llama.cpp does not: non-ASCII text may differ"
        )
    if sp["remove_extra_whitespaces"]:
        caveats.append("SentencePiece collapses runs of whitespace and llama.cpp does not")

    def special(i: int) -> int | None:
        return i if 0 <= i < size else None

    return {
        "model": "llama",
        "pre": "default",
        "tokens": sp["pieces"] + [f"[PAD{i}]" for i in range(size, vocab_size)],
        "scores": sp["scores"] + [-1000.0] * pad,
        "token_types": sp["types"] + [UNUSED] * pad,
        "add_bos": bool(config.get("add_bos_token", True)),
        "add_space_prefix": sp["add_dummy_prefix"],
        "bos": special(sp["bos_id"]),
        "eos": special(sp["eos_id"]),
        "pad": special(sp["pad_id"]),
        "unk": special(sp["unk_id"]),
        "padded": pad,
        "caveats": caveats,
    }


def tokenizer_source(model: nn.Module, spec: ExportSpec) -> Path | None:
    """The tokenizer to write: ``tokenizer=`` or the one beside the model's weights (tokenizer.json first)."""
    files = _tokenizer_files(model, spec.tokenizer)
    if spec.tokenizer is not None:
        return files[0]
    by_name = {p.name: p for p in files}
    return by_name.get("tokenizer.json") or by_name.get("tokenizer.model")


def read_tokenizer(path: Path, vocab_size: int) -> dict[str, Any]:
    """The tokenizer.ggml.* content of ``path`` (tokenizer.json or a SentencePiece model); raises
    :class:`TokenizerUnsupported` with the reason when llama.cpp cannot express it."""
    if path.suffix == ".json":
        try:
            return _hf_tokenizer(path, vocab_size)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            if isinstance(e, TokenizerUnsupported):
                raise
            raise TokenizerUnsupported(f"{path.name} is not a readable tokenizer.json ({e})") from e
    return _spm_tokenizer(path, vocab_size)


def _write_tokenizer(writer, tok: dict[str, Any] | None) -> None:
    if tok is None:
        writer.add_tokenizer_model("none")  # llama.cpp: no vocabulary, token ids only
        return
    writer.add_tokenizer_model(tok["model"])
    writer.add_tokenizer_pre(tok["pre"])
    writer.add_token_list(tok["tokens"])
    writer.add_token_types(tok["token_types"])
    if "scores" in tok:
        writer.add_token_scores(tok["scores"])
    if "merges" in tok:
        writer.add_token_merges(tok["merges"])
    for key, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("pad", writer.add_pad_token_id),
        ("unk", writer.add_unk_token_id),
    ):
        if tok.get(key) is not None:
            add(tok[key])
    writer.add_add_bos_token(tok["add_bos"])
    writer.add_add_eos_token(False)
    if "add_space_prefix" in tok:
        writer.add_add_space_prefix(tok["add_space_prefix"])


# ------------------------------------------------------------------------------------------------------------------
# write
# ------------------------------------------------------------------------------------------------------------------


def _types(quantize: str | None):
    gguf = _gguf()
    Q, F = gguf.GGMLQuantizationType, gguf.LlamaFileType
    table = {
        None: (Q.F32, F.ALL_F32),
        "f32": (Q.F32, F.ALL_F32),
        "f16": (Q.F16, F.MOSTLY_F16),
        "q8_0": (Q.Q8_0, F.MOSTLY_Q8_0),
        "q4_0": (Q.Q4_0, F.MOSTLY_Q4_0),
    }
    if quantize not in table:
        raise ExportError(
            f"gguf quantize must be one of {', '.join(q for q in QUANTIZE if q)} or none, got {quantize!r}"
        )
    return table[quantize]


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
        _write_tokenizer(writer, tok)
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
    """The build carries ggml's AMX backend (``AMX_INT8 = 1``: a native build on a Sapphire Rapids or later Xeon)."""
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
