"""Tokenizers of language-model checkpoints: ``tokenizer.json`` (Hugging Face ``tokenizers``) or ``tokenizer.model``
(SentencePiece, e.g. the LLaMA tokenizer the MobileLLM checkpoints ship).

:func:`load_lm_tokenizer` returns a ``tokenizers.Tokenizer`` for ``tokenizer.json`` and a
:class:`SentencePieceTokenizer` for ``tokenizer.model``; the latter offers the same small surface (``encode(text)
.ids``, ``encode_batch``, ``decode``, ``token_to_id``, ``id_to_token``, ``get_vocab_size``), so code written for
one works with the other. A random-init model has no tokenizer: train one on local text with
:func:`zoo.data.text.train_bpe_tokenizer` (for example on :func:`zoo.data.text.bundled_corpus`).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SentencePieceTokenizer", "load_lm_tokenizer"]


@dataclass
class _Encoding:
    ids: list[int]
    tokens: list[str] = field(default_factory=list)


class SentencePieceTokenizer:
    """A SentencePiece model behind the ``tokenizers.Tokenizer`` methods the zoo uses.

    ``add_bos`` prepends the model's BOS id on ``encode`` (LLaMA's ``add_bos_token=True``); ``add_eos`` appends
    EOS. Special pieces (``<s>``, ``</s>``, ``<unk>``) are ids, not text: ``decode`` skips them.
    """

    def __init__(self, model_file: str | Path, add_bos: bool = True, add_eos: bool = False):
        try:
            import sentencepiece as spm
        except ImportError:
            raise ImportError(
                "tokenizer.model files need the `sentencepiece` package: pip install sentencepiece"
            ) from None
        model_file = Path(model_file)
        if not model_file.is_file():
            raise FileNotFoundError(f"no SentencePiece model at {model_file}")
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.add_bos, self.add_eos = add_bos, add_eos
        self.path = model_file

    @property
    def bos_token_id(self) -> int | None:
        i = self.sp.bos_id()
        return i if i >= 0 else None

    @property
    def eos_token_id(self) -> int | None:
        i = self.sp.eos_id()
        return i if i >= 0 else None

    @property
    def pad_token_id(self) -> int | None:
        i = self.sp.pad_id()
        return i if i >= 0 else None

    def get_vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def token_to_id(self, token: str) -> int | None:
        i = self.sp.piece_to_id(token)
        # piece_to_id answers unk for unknown pieces: only the unk piece itself maps to unk
        return None if i == self.sp.unk_id() and token != self.sp.id_to_piece(i) else i

    def id_to_token(self, i: int) -> str | None:
        return self.sp.id_to_piece(i) if 0 <= i < self.get_vocab_size() else None

    def encode(self, text: str, add_special_tokens: bool = True) -> _Encoding:
        ids = list(self.sp.encode(text))
        if add_special_tokens:
            if self.add_bos and self.bos_token_id is not None:
                ids = [self.bos_token_id] + ids
            if self.add_eos and self.eos_token_id is not None:
                ids = ids + [self.eos_token_id]
        return _Encoding(ids, [self.sp.id_to_piece(i) for i in ids])

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[_Encoding]:
        return [self.encode(t, add_special_tokens) for t in texts]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            special = {self.sp.bos_id(), self.sp.eos_id(), self.sp.pad_id()}
            ids = [i for i in ids if i not in special]
        return self.sp.decode(ids)

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({str(self.path)!r}, vocab={self.get_vocab_size()})"


def load_lm_tokenizer(path: str | Path, add_bos: bool = True):
    """The tokenizer in ``path``: a ``tokenizer.json`` / ``tokenizer.model`` file, or a folder holding one.

    A folder with both prefers ``tokenizer.json``. ``add_bos`` applies to SentencePiece models.
    """
    p = Path(path)
    if p.is_dir():
        for name in ("tokenizer.json", "tokenizer.model"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise FileNotFoundError(
                f"{path} holds no tokenizer.json or tokenizer.model. A random-init model has no "
                f"tokenizer: train one with zoo.data.text.train_bpe_tokenizer"
            )
    if not p.is_file():
        raise FileNotFoundError(f"no tokenizer at {path}")
    if p.suffix == ".json":
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(p))
    if p.suffix == ".model":
        return SentencePieceTokenizer(p, add_bos=add_bos)
    raise ValueError(f"{p} is neither a tokenizer.json nor a SentencePiece .model file")
