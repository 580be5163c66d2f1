"""Generation for the zoo's decoder LMs: :class:`GenerationMixin` gives :class:`~zoo.lm.decoder.DecoderLM` its
:meth:`~GenerationMixin.generate` (transformers' arguments and semantics), :attr:`~GenerationMixin.generation_config`
and the compiled decode step.

This module is the door to generation; the parts live beside it:

* :mod:`zoo.lm.generation_config`: :class:`GenerationConfig`, the settings under transformers' key names
  (``generation_config.json``).
* :mod:`zoo.lm.decoding`: how each token is chosen (sampling, transformers' repetition penalty, stop ids and
  strings) and the token loop every engine feeds with logits.
* :mod:`zoo.lm.streamers`: incremental text, stop strings, :class:`TextStreamer` / :class:`TextIteratorStreamer`.
* :mod:`zoo.lm.compiled`: the ``torch.compile``'d one-token step (``compile=True``).
* :mod:`zoo.lm.sessions`: other engines for the forward passes (``backend=NAME``,
  :func:`register_generation_backend`) and :func:`generate_on_session` for engines that are not zoo models.
"""

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .compiled import check_compilable, compiled_decoder, generate_compiled
from .decoding import (
    Decoding,
    apply_repetition_penalty,
    as_list,
    as_streamer,
    decode_loop,
    decoding_plan,
    end_stream,
    generation_settings,
    sample_token,
    token_presence,
)
from .generation_config import GENERATION_CONFIG_NAME, GenerationConfig
from .sessions import (
    BACKEND_STATE,
    TORCH_BACKEND,
    backend_session,
    generate_on_backend,
    generate_on_session,
    generation_backend,
    register_generation_backend,
)
from .static_decoder import StaticDecoder
from .streamers import IncrementalDecoder, StopStrings, TextIteratorStreamer, TextStreamer

__all__ = [
    "BACKEND_STATE",
    "GENERATION_CONFIG_NAME",
    "GenerationConfig",
    "GenerationMixin",
    "IncrementalDecoder",
    "StopStrings",
    "TORCH_BACKEND",
    "TextIteratorStreamer",
    "TextStreamer",
    "apply_repetition_penalty",
    "decoding_plan",
    "generate_on_session",
    "generation_backend",
    "generation_settings",
    "register_generation_backend",
    "sample_token",
    "token_presence",
]


class GenerationMixin:
    """:meth:`generate` and what it needs of a model: its generation settings, prompt checks, the eager token loop
    and the compiled step. The model provides ``config`` (``vocab_size``, ``max_position_embeddings``),
    ``model.embed_tokens``, ``new_cache(batch_size, max_length)``, ``_check_ids``, ``_padding_mask`` and a forward
    taking ``attention_mask``, ``position_ids``, ``past_key_values`` and ``logits_to_keep``
    (:class:`~zoo.lm.decoder.DecoderLM` has them all)."""

    @property
    def generation_config(self) -> GenerationConfig:
        """What :meth:`generate` uses for the settings it is not given. A model built in code gets
        ``GenerationConfig.from_model_config(config)``: the model's bos / pad ids and no stop ids, so that plain
        ``generate`` decodes ``max_new_tokens`` tokens (the zoo's default; transformers also stops at the model
        config's EOS). A model loaded from a folder with ``generation_config.json`` gets that file's settings."""
        config = self.__dict__.get("_generation_config")
        if config is None:
            config = self.__dict__["_generation_config"] = GenerationConfig.from_model_config(self.config)
        return config

    @generation_config.setter
    def generation_config(self, value: GenerationConfig | None) -> None:
        if value is not None and not isinstance(value, GenerationConfig):
            raise TypeError(f"generation_config must be a zoo GenerationConfig, got {type(value).__name__}")
        self.__dict__["_generation_config"] = value

    def save_generation_config(self, folder: str | os.PathLike) -> Path:
        """Write ``generation_config.json`` (transformers' keys): :attr:`generation_config`, with the bos / eos /
        pad ids it leaves unset taken from the model config (as transformers writes them, so that the saved
        folder stops at EOS in transformers and in the zoo alike)."""
        return self.generation_config.with_ids_from(self.config).save_pretrained(folder)

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_token_id: int | Sequence[int] | None = None,
        attention_mask: torch.Tensor | None = None,
        pad_token_id: int | None = None,
        generator: torch.Generator | None = None,
        *,
        min_new_tokens: int | None = None,
        repetition_penalty: float | None = None,
        stop_token_ids: int | Sequence[int] | None = None,
        stop_strings: str | Sequence[str] | None = None,
        tokenizer: Any = None,
        streamer: Any = None,
        generation_config: GenerationConfig | None = None,
        compile: bool = False,
        backend: str = TORCH_BACKEND,
        quantize: str | None = None,
    ) -> torch.Tensor:
        """Prompt + up to ``max_new_tokens`` new tokens ``(B, T + n)``, decoding with a static KV cache.

        Settings left None come from ``generation_config``, then from :attr:`generation_config` (transformers'
        precedence), then from the defaults: 20 new tokens, greedy, no penalty, no stop.

        * Sampling: ``do_sample`` samples from ``softmax(logits / temperature)`` restricted to the ``top_k`` most
          likely tokens and the smallest set whose probability reaches ``top_p`` (in that order).
        * ``repetition_penalty``: transformers' processor (the logit of every token already in the prompt or the
          output, padding aside, divided by the penalty when positive, multiplied when negative).
        * Stopping: a sequence that emits one of ``eos_token_id`` (an id or a list; ``[]``: none) or
          ``stop_token_ids`` (added to them), or whose decoded new text comes to contain one of ``stop_strings``
          (this needs ``tokenizer=``), is finished: its ids end at that token and it is padded with
          ``pad_token_id`` (default: the first stop id) while the others go on. Decoding stops when every
          sequence has finished. ``min_new_tokens``: the stop ids are masked until that many new tokens exist.
        * ``streamer``: an object with transformers' ``put(token_ids)`` / ``end()`` (the prompt is put first,
          then each step's tokens), e.g. :class:`TextStreamer` / :class:`TextIteratorStreamer`; or a plain
          callable, called with each new piece of text (needs ``tokenizer=``, batch size 1).

        Batches of prompts of different lengths are left-padded with ``attention_mask`` marking the real tokens
        (right padding gives a warning, as in transformers). Prompt and new tokens must fit the context length.

        ``compile=True`` (one prompt, no padding): every token is one ``torch.compile``'d step of
        :meth:`compiled_decoder` (compiled at the first call, about a minute for a 125M model on 2 cores); the
        prompt's layers run one more compiled function. Eager's tokens but at near-ties (float32 rounding), without
        the per-op Python overhead. ``backend="llama.cpp"``: the forward passes run in llama.cpp on a GGUF of the
        weights at ``quantize`` ("f32", "f16", "q8_0", "q4_0"), one prompt at a time."""
        try:  # a streamer is ended whatever happens, so that a reader in another thread is not left waiting
            self._check_ids(input_ids)
            gc = self._generation_settings(
                generation_config,
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                do_sample=do_sample,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                repetition_penalty=repetition_penalty,
                eos_token_id=as_list(eos_token_id),
                stop_strings=as_list(stop_strings),
                pad_token_id=pad_token_id,
            )
            max_new_tokens = 20 if gc.max_new_tokens is None else gc.max_new_tokens
            input_ids, padding = self._prepare_prompt(input_ids, attention_mask, max_new_tokens)
            plan = decoding_plan(gc, self.config.vocab_size, input_ids, padding, stop_token_ids, generator, tokenizer)
            streamer = as_streamer(streamer, tokenizer, input_ids.shape[0])
            session = backend_session(self, backend, quantize, compile, input_ids, padding, max_new_tokens, streamer)
            if streamer is not None:
                streamer.put(input_ids.cpu())
        except BaseException:
            end_stream(streamer)
            raise
        try:
            rows = (gc, stop_token_ids, generator, tokenizer)  # a backend's per-prompt plans
            return self._run_decoding(input_ids, padding, max_new_tokens, plan, streamer, compile, session, rows)
        finally:
            end_stream(streamer)

    def _run_decoding(
        self, input_ids, padding, max_new_tokens: int, plan, streamer, compile: bool, session: Any, rows: tuple
    ) -> torch.Tensor:
        """The tokens of :meth:`generate`: through a backend's ``session``, compiled, or eager."""
        if max_new_tokens == 0:
            return input_ids
        if session is not None:
            return generate_on_backend(
                session, self.config.vocab_size, input_ids, padding, max_new_tokens, rows, streamer
            )
        if compile:
            check_compilable(input_ids, padding)
            return generate_compiled(self, input_ids, max_new_tokens, plan, streamer)
        return self._generate_eager(input_ids, padding, max_new_tokens, plan, streamer)

    def _generation_settings(self, generation_config: GenerationConfig | None, **settings) -> GenerationConfig:
        """The call's settings over ``generation_config`` over the model's own (transformers' precedence)."""
        return generation_settings(self.generation_config, generation_config, **settings)

    def _prepare_prompt(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_new_tokens: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prompt on the model's device and its padding mask, checked: the length with ``max_new_tokens``
        against the context, and a warning for right padding."""
        B, T = input_ids.shape
        self._check_length(T, max_new_tokens)
        padding = self._padding_mask(attention_mask, B, T)
        if padding is not None and not bool(padding[:, -1].all()):
            warnings.warn(
                "right-padding was detected in attention_mask (a row ends with 0): a decoder-only model continues "
                "from the last position, so the continuation of a right-padded row is wrong. Pad prompts on the "
                "left (tokenizer padding_side='left')",
                UserWarning,
                stacklevel=4,  # the caller of generate (past generate and the inference_mode wrapper)
            )
        device = self.model.embed_tokens.weight.device
        return input_ids.to(device), None if padding is None else padding.to(device)

    def _check_length(self, prompt: int, max_new_tokens: int):
        """ValueError when a prompt of ``prompt`` tokens plus ``max_new_tokens`` exceeds the context length."""
        limit = self.config.max_position_embeddings
        if prompt + max_new_tokens <= limit:
            return
        fixes = []
        if max_new_tokens < limit:
            fixes.append(
                f"keep the prompt's last {limit - max_new_tokens} tokens (input_ids[:, -{limit - max_new_tokens}:])"
            )
        if prompt < limit:
            fixes.append(f"lower max_new_tokens to {limit - prompt} or less")
        raise ValueError(
            f"a prompt of {prompt} tokens and max_new_tokens={max_new_tokens} make {prompt + max_new_tokens} "
            f"tokens, more than this model's context length of {limit} (config.max_position_embeddings): "
            + (" or ".join(fixes) if fixes else f"give at most {limit} tokens in all")
        )

    def _generate_eager(
        self,
        input_ids: torch.Tensor,
        padding: torch.Tensor | None,
        max_new_tokens: int,
        plan: Decoding,
        streamer: Any,
    ) -> torch.Tensor:
        """The prompt in one forward over a static cache, then one forward per token; left-padded rows get
        positions that skip their padding."""
        B, T = input_ids.shape
        cache = self.new_cache(B, T + max_new_tokens)
        mask = None
        positions = [None]
        if padding is not None:
            mask = torch.ones(B, T + max_new_tokens, dtype=torch.long, device=input_ids.device)
            mask[:, :T] = padding
            positions[0] = (mask[:, :T].cumsum(-1) - 1).clamp_(min=0)
        logits = self(
            input_ids,
            attention_mask=None if mask is None else mask[:, :T],
            position_ids=positions[0],
            past_key_values=cache,
            logits_to_keep=1,
        ).logits[:, -1]

        def step(token: torch.Tensor, n: int) -> torch.Tensor:
            if positions[0] is not None:
                positions[0] = positions[0][:, -1:] + 1
            return self(
                token[:, None],
                attention_mask=None if mask is None else mask[:, : T + n],
                position_ids=positions[0],
                past_key_values=cache,
            ).logits[:, -1]

        return decode_loop(input_ids, logits, step, max_new_tokens, plan, streamer)

    # -- the compiled decode step ----------------------------------------------------------------------------------
    def compiled_decoder(self, length: int) -> tuple[StaticDecoder, Any]:
        """A :class:`StaticDecoder` of at least ``length`` tokens (a power of two from 256, up to the context length)
        and its ``torch.compile``'d step, made once and kept with the model (for its dtype, device and modules; another
        size, or a module swapped, replaces it). The step reads the model's parameters, so later weight updates are
        seen."""
        return compiled_decoder(self, length)
