"""How :meth:`zoo.lm.decoder.DecoderLM.generate` chooses its tokens, whatever computes the logits (the eager
model, the compiled step, a backend's session): a call's settings resolved (:func:`generation_settings`), the plan
of one call (:func:`decoding_plan`: sampling, penalty, stop ids and strings), and the token loop that feeds the
engine (:func:`decode_loop`).

:func:`token_presence` / :func:`apply_repetition_penalty` are transformers' ``RepetitionPenaltyLogitsProcessor``
(a positive logit of a token already in the prompt or the output is divided by the penalty, a negative one
multiplied), with left padding left out as transformers 5 does.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .generation_config import GenerationConfig
from .streamers import StopStrings, TextStreamer

__all__ = [
    "Decoding",
    "apply_repetition_penalty",
    "as_list",
    "as_streamer",
    "decode_loop",
    "decoding_plan",
    "end_stream",
    "generation_settings",
    "sample_token",
    "token_presence",
]


def token_presence(
    input_ids: torch.Tensor, vocab_size: int, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Boolean ``(B, vocab_size)``: which ids occur in each row of ``input_ids`` (padding, 0 in
    ``attention_mask``, left out)."""
    ids = input_ids.long()
    if attention_mask is not None:
        ids = ids.masked_fill(attention_mask.to(ids.device) == 0, vocab_size)  # an extra column, dropped below
    seen = torch.zeros(ids.shape[0], vocab_size + 1, dtype=torch.bool, device=ids.device)
    return seen.scatter_(1, ids.clamp(max=vocab_size), True)[:, :vocab_size]


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' ``RepetitionPenaltyLogitsProcessor``: for each token in ``seen`` (``(B, V)``, see
    :func:`token_presence`), a positive logit divided by ``penalty``, a negative one multiplied."""
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def generation_settings(
    base: GenerationConfig, generation_config: GenerationConfig | None, **settings
) -> GenerationConfig:
    """A call's settings over ``generation_config`` over ``base`` (the model's own; transformers' precedence)."""
    try:
        gc = base.update(generation_config, **settings)
    except ValueError as e:
        raise ValueError(str(e).removeprefix("GenerationConfig: ")) from None
    temperature = 1.0 if gc.temperature is None else gc.temperature
    if gc.do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    return gc


def decoding_plan(
    gc: GenerationConfig,
    vocab: int,
    input_ids: torch.Tensor,
    padding: torch.Tensor | None,
    stop_token_ids: int | Sequence[int] | None,
    generator: torch.Generator | None,
    tokenizer: Any,
) -> "Decoding":
    """How each next token is chosen and when a sequence stops (sampling, penalty, stop ids and strings)."""
    device, B = input_ids.device, input_ids.shape[0]
    stop_ids = gc.stop_ids + _ids_list(stop_token_ids, "stop_token_ids")
    if any(i >= vocab for i in stop_ids):
        raise ValueError(f"stop token ids must lie in [0, {vocab}), got {sorted(set(stop_ids))}")
    pad = gc.pad_token_id if gc.pad_token_id is not None else (stop_ids[0] if stop_ids else 0)
    if (stop_ids or gc.stop_string_list) and not 0 <= pad < vocab:
        raise ValueError(
            f"pad_token_id={pad} (the call's or the generation config's) lies outside the vocabulary [0, {vocab}): "
            "a sequence that stops is padded with it while the others go on, and the model cannot read it. "
            f"Pass a pad_token_id below {vocab}, or leave it unset (the first stop id pads)"
        )
    penalty = 1.0 if gc.repetition_penalty is None else float(gc.repetition_penalty)
    return Decoding(
        do_sample=bool(gc.do_sample),
        temperature=1.0 if gc.temperature is None else gc.temperature,
        top_k=gc.top_k or None,
        top_p=gc.top_p,
        generator=generator,
        stop_ids=torch.tensor(stop_ids, device=device) if stop_ids else None,
        strings=StopStrings(tokenizer, gc.stop_string_list, B) if gc.stop_string_list else None,
        pad=pad,
        min_new_tokens=gc.min_new_tokens or 0,
        penalty=penalty,
        seen=token_presence(input_ids, vocab, padding) if penalty != 1.0 else None,
        finished=torch.zeros(B, dtype=torch.bool, device=device),
    )


def decode_loop(
    input_ids, logits, step, max_new_tokens: int, plan: "Decoding", streamer: Any, step_id=None
) -> torch.Tensor:
    """The token loop of :meth:`~zoo.lm.decoder.DecoderLM.generate`: choose each step's tokens from ``logits``,
    stream them, stop when every sequence finished, else ``logits = step(token, n)`` with ``n`` tokens made so
    far. ``step_id(token, n)``, where the engine has it, is the same step taking one sequence's token as an int:
    where the plan needs no tensors (:meth:`Decoding.by_ids`) the loop then chooses and stops on ints. Between two
    steps of a small model every tensor op costs tens of microseconds (the step has just swept the caches), a
    visible share of a token."""
    if step_id is not None and plan.by_ids(input_ids):
        return _decode_ids(input_ids, logits, step_id, max_new_tokens, plan, streamer)
    out = torch.empty(input_ids.shape[0], max_new_tokens, dtype=input_ids.dtype, device=input_ids.device)
    n = 0
    for i in range(max_new_tokens):
        token = plan.next_token(logits, i)
        out[:, i] = token
        n = i + 1
        if streamer is not None:
            streamer.put(token.cpu())
        if n == max_new_tokens or plan.all_finished():
            break
        logits = step(token, n)
    return torch.cat([input_ids, out[:, :n]], dim=1)


def _decode_ids(input_ids, logits, step_id, max_new_tokens: int, plan: "Decoding", streamer: Any) -> torch.Tensor:
    """:func:`decode_loop` for one greedy sequence on the CPU: the same tokens and stops, as ints."""
    stops = set() if plan.stop_ids is None else set(plan.stop_ids.tolist())
    ids: list[int] = []
    for i in range(max_new_tokens):
        token = _argmax_id(logits)
        ids.append(token)
        if streamer is not None:
            streamer.put(torch.tensor([token]))
        if token in stops or (plan.strings is not None and plan.strings.update([token], [True])[0]):
            break
        if i + 1 < max_new_tokens:
            logits = step_id(token, i + 1)
    return torch.cat([input_ids, torch.tensor([ids], dtype=input_ids.dtype)], dim=1)


@dataclass
class Decoding:
    """The resolved settings of one :meth:`~zoo.lm.decoder.DecoderLM.generate` call and its state (which sequences
    finished, which tokens each has seen): logits in, the next token of every sequence out."""

    do_sample: bool
    temperature: float
    top_k: int | None
    top_p: float | None
    generator: torch.Generator | None
    stop_ids: torch.Tensor | None  # ids that finish a sequence
    strings: StopStrings | None  # stop strings, read in each sequence's decoded new text
    pad: int  # what finished sequences emit
    min_new_tokens: int  # stop ids masked before this many new tokens
    penalty: float
    seen: torch.Tensor | None  # (B, vocab) tokens in each sequence so far, for the repetition penalty
    finished: torch.Tensor  # (B,) bool

    @property
    def stopping(self) -> bool:
        return self.stop_ids is not None or self.strings is not None

    def next_token(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        """The token of every sequence after ``step`` new ones, from the last position's ``logits`` (B, V)."""
        suppress = self.stop_ids is not None and step < self.min_new_tokens
        if self.seen is not None or suppress:  # transformers' processors, on float32 logits
            logits = logits.float()
            if self.seen is not None:
                logits = apply_repetition_penalty(logits, self.seen, self.penalty)
            if suppress:
                logits = logits.index_fill(-1, self.stop_ids, float("-inf"))
        if self.do_sample:
            token = sample_token(logits.float(), self.temperature, self.top_k, self.top_p, self.generator)
        else:
            token = _argmax(logits)
        if self.stopping:
            active = ~self.finished
            token = torch.where(self.finished, torch.full_like(token, self.pad), token)
            if self.stop_ids is not None:
                self.finished |= torch.isin(token, self.stop_ids)
            if self.strings is not None:
                hits = self.strings.update(token.tolist(), active.tolist())
                self.finished |= torch.tensor(hits, device=token.device)
        if self.seen is not None:
            self.seen.scatter_(1, token[:, None], True)
        return token

    def by_ids(self, input_ids: torch.Tensor) -> bool:
        """Whether :func:`decode_loop` may choose the tokens as ints: one sequence on the CPU, greedy, no penalty, no
        stop ids masked (``min_new_tokens``)."""
        return (
            input_ids.shape[0] == 1
            and input_ids.device.type == "cpu"
            and not self.do_sample
            and self.seen is None
            and (self.stop_ids is None or self.min_new_tokens == 0)
        )

    def all_finished(self) -> bool:
        return self.stopping and bool(self.finished.all())


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=-1)``; float32 CPU logits through numpy's (the same first index of the maximum, faster
    on a 32000-token row, where a small LM's whole step is a few milliseconds)."""
    if logits.device.type == "cpu" and logits.dtype == torch.float32 and not logits.requires_grad:
        return torch.from_numpy(np.argmax(logits.numpy(), axis=-1))
    return logits.argmax(dim=-1)


def _argmax_id(logits: torch.Tensor) -> int:
    """One sequence's :func:`_argmax` (logits ``(1, V)`` or ``(V,)``) as an int: numpy's where the logits are a CPU
    array numpy reads (asking first costs as much as the argmax, on caches the step has swept)."""
    try:
        return int(np.argmax(logits.numpy()))
    except (TypeError, RuntimeError):  # on an accelerator, bfloat16, or needing grad
        return int(logits.argmax())


def as_list(value: Any) -> Any:
    """Tensors, numpy values and tuples of ids or strings as lists / ints (what GenerationConfig holds)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, Sequence) and not isinstance(value, (str, list)):
        value = list(value)
    return value


def _ids_list(ids: int | Sequence[int] | None, name: str) -> list[int]:
    ids = as_list(ids)
    if ids is None:
        return []
    values = [ids] if isinstance(ids, int) else list(ids)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in values):
        raise ValueError(f"{name} must be a token id or a list of them, got {ids!r}")
    return values


def end_stream(streamer: Any) -> None:
    if callable(getattr(streamer, "end", None)):
        streamer.end()


def as_streamer(streamer: Any, tokenizer: Any, batch_size: int):
    """An object with ``put`` / ``end`` as it is; a plain callable behind a :class:`TextStreamer` that skips the
    prompt (it needs the tokenizer and one sequence)."""
    if streamer is None or (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
        return streamer
    if not callable(streamer):
        raise TypeError(
            f"streamer must have put(token_ids) and end() (e.g. TextStreamer) or be a callable taking text, "
            f"got {type(streamer).__name__}"
        )
    if tokenizer is None:
        raise ValueError("a callable streamer receives text: pass the tokenizer as generate(..., tokenizer=...)")
    if batch_size != 1:
        raise ValueError(f"a callable streamer follows one sequence; the batch has {batch_size}")
    return TextStreamer(tokenizer, skip_prompt=True, callback=streamer)


def sample_token(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None
) -> torch.Tensor:
    """One token per row from ``logits`` (B, V): temperature, then top-k, then top-p (nucleus) filtering."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > top_p  # keep the smallest prefix reaching top_p (always one)
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
