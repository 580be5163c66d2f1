"""The tokenizer of a GGUF file: a byte-level BPE ``tokenizer.json`` or a SentencePiece BPE ``tokenizer.model`` read
into llama.cpp's ``tokenizer.ggml.*`` fields (:mod:`zoo.export.gguf_file` writes them), or refused with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# GGUF token types (llama.cpp's llama_token_type; SentencePiece's piece types use the same numbers)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# pre-tokenizer regexes llama.cpp knows by name (tokenizer.ggml.pre)
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


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


def write_tokenizer(writer, tok: dict[str, Any] | None) -> None:
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
