"""Other engines for the forward passes of :meth:`zoo.lm.decoder.DecoderLM.generate` (``backend=NAME``) and
generation on an engine that is not a zoo model (:func:`generate_on_session`).

An engine is a *session*: ``prefill(ids)`` (a list of token ids of one sequence; the logits ``(vocab,)`` after its
last token, the sequence's state reset) and ``step(token)`` (one more token; the logits after it). The token loop of
:mod:`zoo.lm.decoding` chooses every token from a session's logits, so every setting means what it means with torch.
A backend lives above the layers (``"llama.cpp"``: :mod:`zoo.export` registers it when imported, as ``import zoo``
does), so it registers itself here (:func:`register_generation_backend`), as :mod:`zoo.layers.saving`'s functions
are registered.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .decoding import as_list, as_streamer, decode_loop, decoding_plan, end_stream, generation_settings
from .generation_config import GenerationConfig

__all__ = [
    "BACKEND_STATE",
    "TORCH_BACKEND",
    "backend_session",
    "generate_on_backend",
    "generate_on_session",
    "generation_backend",
    "register_generation_backend",
]

TORCH_BACKEND = "torch"
# the key of model.__dict__ under which backends keep what they loaded for a model (a copy of the model drops it)
BACKEND_STATE = "_generation_backends"
_BACKENDS: dict[str, Callable[..., Any]] = {}
# backends the zoo ships, by what registers them: named in the error when one is missing
_SHIPPED = {"llama.cpp": 'pip install "zoo[export]" (gguf and llama-cpp-python), then import zoo'}


def register_generation_backend(name: str, open_session: Callable[..., Any]) -> None:
    """Make ``generate(..., backend=name)`` run its forward passes through ``open_session(model, quantize=...,
    length=...)``: an object for one model and a context of at least ``length`` tokens, with ``prefill(ids)`` (a
    list of token ids of one sequence; the logits ``(vocab,)`` after its last token, the sequence's state reset)
    and ``step(token)`` (one more token; the logits after it). ``generate`` does the rest (sampling, penalties,
    stops, streamers), so every setting means what it means with torch."""
    if not isinstance(name, str) or not name or name == TORCH_BACKEND:
        raise ValueError(f"a generation backend needs a name other than {TORCH_BACKEND!r}, got {name!r}")
    _BACKENDS[name] = open_session


def generation_backend(name: str) -> Callable[..., Any]:
    """The registered ``open_session`` of backend ``name``; ValueError naming the choices and the install."""
    if name in _BACKENDS:
        return _BACKENDS[name]
    if name in _SHIPPED:
        raise ValueError(f"generate(backend={name!r}) is not available here: {_SHIPPED[name]}")
    choices = [TORCH_BACKEND, *sorted(set(_BACKENDS) | set(_SHIPPED))]
    raise ValueError(f"unknown generation backend {name!r}: choose one of {', '.join(map(repr, choices))}")


def backend_session(
    model: nn.Module,
    backend: str,
    quantize: str | None,
    compile: bool,
    input_ids: torch.Tensor,
    padding: torch.Tensor | None,
    max_new_tokens: int,
    streamer: Any,
) -> Any:
    """None for torch; else the backend's session for one ``generate`` call of ``model``
    (:func:`register_generation_backend`), after refusing what it cannot do as ``generate`` promises."""
    if backend == TORCH_BACKEND:
        if quantize is not None:
            raise ValueError(
                f"quantize={quantize!r} picks the weights of another backend (backend='llama.cpp'); the torch "
                "backend runs the model's own: quantize the model instead (create_model(..., quantize='int8'))"
            )
        return None
    open_session = generation_backend(backend)
    if compile:
        raise ValueError(
            f"compile=True compiles the torch backend's decode step; backend={backend!r} runs its own graph: "
            "leave compile out (or use backend='torch' with compile=True)"
        )
    if padding is not None and not bool((padding[:, 1:] >= padding[:, :-1]).all()):
        raise ValueError(
            f"backend={backend!r} takes left-padded prompts only (attention_mask rows of 0s then 1s; the padding "
            "is dropped and each prompt runs alone): pad on the left, or pass the prompts one at a time"
        )
    if streamer is not None and input_ids.shape[0] != 1:
        raise ValueError(
            f"backend={backend!r} decodes the prompts one after another, so a streamer cannot follow the batch "
            f"step by step ({input_ids.shape[0]} prompts): stream one prompt at a time, or use backend='torch'"
        )
    return open_session(model, quantize=quantize, length=input_ids.shape[1] + max_new_tokens)


def generate_on_backend(
    session: Any,
    vocab_size: int,
    input_ids: torch.Tensor,
    padding: torch.Tensor | None,
    max_new_tokens: int,
    plan_args: tuple,
    streamer: Any,
) -> torch.Tensor:
    """Each prompt (its padding dropped) decoded alone on ``session``'s logits with the torch path's token loop;
    rows that finished earlier are padded as the torch path pads them. ``plan_args``: the call's resolved
    :class:`GenerationConfig`, ``stop_token_ids``, ``generator`` and ``tokenizer`` (one plan per prompt)."""
    rows, pad = [], 0
    step_id = lambda token, n: session.step(token)  # noqa: E731
    step = lambda token, n: step_id(int(token[0]), n)[None]  # noqa: E731
    for b in range(input_ids.shape[0]):
        ids = input_ids[b : b + 1].cpu()
        if padding is not None:
            ids = ids[:, padding[b].cpu()]
        plan = decoding_plan(plan_args[0], vocab_size, ids, None, *plan_args[1:])
        logits = session.prefill(ids[0].tolist())[None]  # (1, vocab)
        out = decode_loop(ids, logits, step, max_new_tokens, plan, streamer, step_id)
        rows.append(out[0, ids.shape[1] :])
        pad = plan.pad
    n = max(len(r) for r in rows)
    new = torch.stack([F.pad(r, (0, n - len(r)), value=pad) for r in rows])
    return torch.cat([input_ids, new.to(input_ids.device, input_ids.dtype)], dim=1)


@torch.inference_mode()
def generate_on_session(
    session: Any,
    input_ids: Any,
    vocab_size: int,
    base_config: GenerationConfig,
    max_new_tokens: int | None = None,
    *,
    stop_token_ids: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    tokenizer: Any = None,
    streamer: Any = None,
    generation_config: GenerationConfig | None = None,
    **settings,
) -> torch.Tensor:
    """:meth:`~zoo.lm.decoder.DecoderLM.generate` for one prompt on an engine other than a zoo model: ``session`` has
    ``prefill(ids) -> logits (vocab,)`` and ``step(token) -> logits (vocab,)`` (the protocol of
    :func:`register_generation_backend`; e.g. a compiled ``pte`` artefact). ``settings``:
    ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``, ``min_new_tokens``,
    ``eos_token_id``, ``stop_strings``, ``pad_token_id``, over ``generation_config`` over ``base_config``, meaning
    what they mean in ``generate``. Returns ``(1, T + n)``."""
    try:
        ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1)  # (1, T)
        settings = {k: as_list(v) if k in ("eos_token_id", "stop_strings") else v for k, v in settings.items()}
        gc = generation_settings(base_config, generation_config, max_new_tokens=max_new_tokens, **settings)
        max_new_tokens = 20 if gc.max_new_tokens is None else gc.max_new_tokens
        plan = decoding_plan(gc, vocab_size, ids, None, stop_token_ids, generator, tokenizer)
        streamer = as_streamer(streamer, tokenizer, 1)
        if streamer is not None:
            streamer.put(ids)
    except BaseException:
        end_stream(streamer)
        raise
    try:
        if max_new_tokens == 0:
            return ids
        logits = torch.as_tensor(session.prefill(ids[0].tolist())).reshape(1, -1)  # (1, vocab)
        step_id = lambda token, n: torch.as_tensor(session.step(token))  # noqa: E731
        step = lambda token, n: step_id(int(token[0]), n).reshape(1, -1)  # noqa: E731
        return decode_loop(ids, logits, step, max_new_tokens, plan, streamer, step_id)
    finally:
        end_stream(streamer)
