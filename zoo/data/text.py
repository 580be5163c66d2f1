"""Text corpora and tokenizers for language modelling.

:func:`bundled_corpus` is CPython's own documentation text that ships with every Python (``pydoc_data.topics``:
the language-reference topics behind ``help()``): a small real corpus, no download. Tokenizers are Hugging Face
``tokenizers`` JSON files; :func:`train_bpe_tokenizer` trains a byte-level BPE one on the fly.
"""

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from .errors import DataError, unusable_tokenizer_message

__all__ = [
    "EOS_TOKEN",
    "bundled_corpus",
    "load_text_documents",
    "load_tokenizer",
    "pack_tokens",
    "special_token_ids",
    "split_documents",
    "train_bpe_tokenizer",
    "unigram_perplexity",
    "write_atomic",
]

EOS_TOKEN = "<|endoftext|>"
_TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


def bundled_corpus() -> dict[str, str]:
    """``{topic: text}`` from ``pydoc_data.topics`` (sorted by topic name)."""
    from pydoc_data.topics import topics

    return {k: topics[k] for k in sorted(topics)}


def load_text_documents(
    name: str, path: str | None = None, split: str | None = None, text_key: str | None = None
) -> list[str]:
    """Documents from ``pydoc`` (the bundled corpus), ``text`` (a .txt/.md file or a folder of them, one document
    per file) or ``hf_disk`` (a ``datasets`` folder with a text column; ``split`` picks a split when it has many).

    Documents of white space only are left out; data with no text at all is a :class:`DataError`."""
    if name == "pydoc":
        return list(bundled_corpus().values())
    if path is None:
        raise DataError(f"data.name {name} needs data.path (a text file, a folder of text files or a datasets folder)")
    p = Path(path)
    if not p.exists():
        raise DataError(f"the text data {p} does not exist: check data.path (or --data)")
    if name == "text":
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.suffix.lower() in _TEXT_SUFFIXES)
        if not files:
            raise DataError(
                f"{p} holds no text files ({', '.join(_TEXT_SUFFIXES)}): add some, or point data.path elsewhere"
            )
        docs = [t for t in (f.read_text(encoding="utf-8", errors="replace") for f in files) if t.strip()]
        if not docs:
            raise DataError(f"{p} holds no text ({len(files)} file(s), all empty or white space): add text to train on")
        return docs
    if name == "hf_disk":
        if not p.is_dir():
            raise DataError(
                f"data.path {p} is a file, not a datasets folder (save_to_disk): point data.path (or --data) at the "
                "folder, or read the file as data.name text"
            )
        try:
            from datasets import DatasetDict, load_from_disk
        except ImportError:
            raise ImportError("a datasets folder needs the `datasets` package: pip install datasets") from None
        ds = load_from_disk(str(p))
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise DataError(f"{p} has splits {list(ds)}; pick one with data.train_split / data.val_split")
            ds = ds[split]
        key = text_key or ("text" if "text" in ds.column_names else None)
        if key not in ds.column_names:
            raise DataError(f"{p} has columns {ds.column_names}; name the text column with data.text_key")
        docs = [t for t in ds[key] if t and t.strip()]
        if not docs:
            raise DataError(f"the {key!r} column of {p} ({split or 'its'} split) holds no text: add text to train on")
        return docs
    raise DataError(f"unknown text dataset {name!r}: use pydoc, text or hf_disk")


def split_documents(docs: Sequence[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """A fixed held-out split by a hash of each document's text (independent of order and seed)."""
    if not 0 < val_fraction < 1:
        raise DataError(f"data.val_fraction must be between 0 and 1, got {val_fraction}")
    train, val = [], []
    for d in docs:
        h = int(hashlib.sha256(d.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
        (val if h < val_fraction else train).append(d)
    if not train or not val:
        raise DataError(
            f"{len(docs)} document(s) cannot be split into training and held-out text with data.val_fraction "
            f"{val_fraction} (documents are files, or rows of a datasets folder): give more documents, or a "
            "datasets folder with its own validation split"
        )
    return train, val


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, path: str | Path | None = None):
    """Train a byte-level BPE tokenizer (``tokenizers``) with an ``<|endoftext|>`` token; save it to ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    if path is not None:
        write_atomic(path, tok.to_str(pretty=True))
    return tok


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file in the same folder, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")  # the name run folders clean up after a kill
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_tokenizer(path: str | Path):
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file or a model folder holding one."""
    from tokenizers import Tokenizer

    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise FileNotFoundError(f"no tokenizer at {path} (expected tokenizer.json or a folder holding one)")
    try:
        return Tokenizer.from_file(str(p))
    except Exception as e:  # the tokenizers library raises a bare Exception for a file it cannot parse
        raise DataError(unusable_tokenizer_message(p, e)) from None


def _first_id(tokenizer, tokens: Sequence[str]) -> int | None:
    for tok in tokens:
        i = tokenizer.token_to_id(tok)
        if i is not None:
            return i
    return None


def eos_id(tokenizer) -> int | None:
    return _first_id(tokenizer, (EOS_TOKEN, "</s>", "<eos>", "<|end_of_text|>"))


def special_token_ids(tokenizer) -> dict[str, int | None]:
    """``bos_token_id``, ``eos_token_id``, ``pad_token_id`` of a tokenizer (None where it has none): what a
    language model's config must declare for generation to start and stop where the tokenizer does."""
    ids = {
        "bos_token_id": _first_id(tokenizer, ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>")),
        "eos_token_id": eos_id(tokenizer),
        "pad_token_id": _first_id(tokenizer, ("<pad>", "<|pad|>", "[PAD]")),
    }
    for key in ids:  # a SentencePiece model knows its own
        if hasattr(tokenizer, key):
            ids[key] = getattr(tokenizer, key)
    return ids


def encode_documents(tokenizer, docs: Sequence[str]) -> torch.Tensor:
    """All documents' token ids in one stream, each document followed by the end-of-text token when it exists."""
    eos = eos_id(tokenizer)
    ids: list[int] = []
    for enc in tokenizer.encode_batch(list(docs)):
        ids.extend(enc.ids)
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def pack_tokens(stream: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Pack a token stream into ``(N, seq_len + 1)`` rows (inputs are ``[:, :-1]``, targets ``[:, 1:]``)."""
    n = (len(stream) - 1) // seq_len
    if n < 1:
        raise DataError(
            f"{len(stream)} tokens are too few for one sequence of {seq_len}: lower data.seq_len or add text"
        )
    idx = torch.arange(n).unsqueeze(1) * seq_len + torch.arange(seq_len + 1)
    return stream[idx]


def unigram_perplexity(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int) -> float:
    """Perplexity of ``val_ids`` under add-one-smoothed unigram frequencies of ``train_ids``: the baseline a
    language model must beat."""
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1.0
    logp = torch.log(counts / counts.sum())
    return float(torch.exp(-logp[val_ids].mean()))
