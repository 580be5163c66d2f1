"""The text of generated tokens as they come, with transformers' names and semantics.

* :class:`IncrementalDecoder`: text of a growing token list piece by piece, never splitting a multi-byte
  character (the text of a token that ends inside one is held back until a later token completes it).
* :class:`StopStrings`: per-sequence detection of stop strings in the decoded new text.
* :class:`TextStreamer` (print or a callback) and :class:`TextIteratorStreamer` (a queue read from another
  thread): transformers' ``put(token_ids)`` / ``end()`` protocol.
"""

from collections.abc import Callable, Sequence
from queue import Queue
from typing import Any

import torch

__all__ = ["IncrementalDecoder", "StopStrings", "TextIteratorStreamer", "TextStreamer"]


class IncrementalDecoder:
    """The text of a growing list of token ids, one new piece per :meth:`add`.

    Each piece is the difference between the decoding of the tokens from the previous piece's first token on
    and that of the same tokens without the new ones (the context keeps SentencePiece's word-initial spaces), so
    the pieces join to ``tokenizer.decode(all ids)``. A decoding that ends in U+FFFD (a multi-byte character
    split across tokens) is held back until a later token completes it; :meth:`flush` gives what is left.
    """

    def __init__(self, tokenizer, **decode_kwargs):
        self.tokenizer = tokenizer
        self.decode_kwargs = decode_kwargs
        self.ids: list[int] = []
        self.prefix = self.read = 0  # ids[prefix:read] were emitted already and serve as context

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, **self.decode_kwargs) if ids else ""

    def add(self, ids: Sequence[int]) -> str:
        self.ids.extend(int(i) for i in ids)
        done = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        if len(text) <= len(done) or text.endswith("\ufffd") or not text.startswith(done):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(done) :]

    def flush(self) -> str:
        done = self._decode(self.ids[self.prefix : self.read])
        text = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return text[len(done) :] if text.startswith(done) else text


class StopStrings:
    """Per sequence of a batch: whether its decoded new text contains one of ``strings`` (checked as tokens
    arrive, so the token that completes a stop string is the one reported)."""

    def __init__(self, tokenizer, strings: Sequence[str], batch_size: int):
        if tokenizer is None or not callable(getattr(tokenizer, "decode", None)):
            raise ValueError(
                "stop_strings need the tokenizer to read the new text: generate(..., stop_strings=..., "
                "tokenizer=zoo.data.lm_tokenizer.load_lm_tokenizer(FOLDER))"
            )
        self.strings = list(strings)
        self.longest = max(len(s) for s in self.strings)
        self.decoders = [IncrementalDecoder(tokenizer) for _ in range(batch_size)]
        self.texts = [""] * batch_size

    def update(self, tokens: Sequence[int], active: Sequence[bool]) -> list[bool]:
        """Feed each active row its new token; True where a stop string has now appeared."""
        hits = []
        for row, (token, on) in enumerate(zip(tokens, active)):
            if not on:
                hits.append(False)
                continue
            piece = self.decoders[row].add([token])
            before = len(self.texts[row])
            self.texts[row] += piece
            tail = self.texts[row][max(0, before - self.longest + 1) :]  # only text that includes the new piece
            hits.append(bool(piece) and any(s in tail for s in self.strings))
        return hits


class TextStreamer:
    """transformers' ``TextStreamer`` protocol (``put(token_ids)``, ``end()``) for batch size 1: the text of
    the tokens as it comes, without splitting multi-byte characters (:class:`IncrementalDecoder`).

    Each piece goes to ``callback(text)`` when given, else is printed (with a newline at the end, as
    transformers). ``skip_prompt``: the first ``put`` (the prompt, which ``generate`` sends first) is dropped.
    ``decode_kwargs`` go to ``tokenizer.decode``.
    """

    def __init__(
        self, tokenizer, skip_prompt: bool = False, callback: Callable[[str], Any] | None = None, **decode_kwargs
    ):
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.callback = callback
        self.decode_kwargs = decode_kwargs
        self._reset()

    def _reset(self):
        self.decoder = IncrementalDecoder(self.tokenizer, **self.decode_kwargs)
        self.next_tokens_are_prompt = True

    def put(self, value) -> None:
        ids = torch.as_tensor(value)
        if (ids.ndim > 1 and ids.shape[0] > 1) or (
            ids.ndim == 1 and not self.next_tokens_are_prompt and ids.numel() > 1
        ):
            raise ValueError(f"{type(self).__name__} streams one sequence: generate with a batch of 1")
        prompt, self.next_tokens_are_prompt = self.next_tokens_are_prompt, False
        if prompt and self.skip_prompt:
            return
        text = self.decoder.add(ids.reshape(-1).tolist())
        if text:
            self.on_finalized_text(text)

    def end(self) -> None:
        text = self.decoder.flush()
        self._reset()
        self.on_finalized_text(text, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if self.callback is not None:
            if text:
                self.callback(text)
        else:
            print(text, flush=True, end="\n" if stream_end else "")


class TextIteratorStreamer(TextStreamer):
    """A :class:`TextStreamer` whose pieces are read by iterating over it, typically while ``generate`` runs in
    another thread (transformers' ``TextIteratorStreamer``). ``timeout``: seconds a read waits before
    ``queue.Empty`` is raised (None: forever); ``generate`` ends the stream even when it fails."""

    _STOP = object()

    def __init__(self, tokenizer, skip_prompt: bool = False, timeout: float | None = None, **decode_kwargs):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: Queue = Queue()
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self._STOP, timeout=self.timeout)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        value = self.text_queue.get(timeout=self.timeout)
        if value is self._STOP:
            raise StopIteration
        return value
