"""The compiled decode step of :meth:`zoo.lm.decoder.DecoderLM.generate` (``compile=True``): the model as a
:class:`~zoo.lm.static_decoder.StaticDecoder` over a static KV cache, its one-token step compiled once and kept with
the model (:func:`compiled_decoder`; on the CPU with the zoo's kernels built ahead of time by AOTInductor,
:mod:`zoo.lm.aot_step`, else ``torch.compile``'d), fed by the token loop of :mod:`zoo.lm.decoding`; the prompt goes
through the static decoder with its plain layers compiled (:func:`~zoo.lm.static_decoder.prompt_layer`, one graph
for every layer and prompt length). Eager's tokens, but where float32 rounding (Inductor's fused norms) decides
between near-tied logits; it saves the per-op Python overhead of each step.
"""

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..kernels import gemv
from ..platform.allocator import huge_pages
from .aot_step import aot_step
from .decoding import Decoding, decode_loop
from .static_decoder import StaticDecoder, prompt_layer

__all__ = ["COMPILED_STATE", "check_compilable", "compiled_decoder", "generate_compiled"]

# the key of model.__dict__ under which the compiled step is kept (a copy of the model drops it)
COMPILED_STATE = "_compiled_step"


def check_compilable(input_ids: torch.Tensor, padding: torch.Tensor | None) -> None:
    """ValueError unless ``compile=True`` can decode the prompt: one prompt, no padding."""
    B = input_ids.shape[0]
    if B != 1 or padding is not None:
        raise ValueError(
            f"compile=True decodes one prompt at a time (batch 1, no padding); got {B} prompt(s)"
            + (" with an attention_mask holding padding" if padding is not None else "")
            + ". Loop over the prompts, or leave compile out to decode the batch together"
        )


def compiled_decoder(model: nn.Module, length: int) -> tuple[StaticDecoder, Any]:
    """A :class:`StaticDecoder` of at least ``length`` tokens (a power of two from 256, up to the context length)
    and its compiled step (built at its first call), made once and kept with the model (for its dtype, device,
    modules and tensors; another size, a module or tensor swapped, or a buffer changed in place, replaces it). The
    step reads the model's parameters themselves, so their updates in place are seen."""
    p = model.model.embed_tokens.weight
    size = min(model.config.max_position_embeddings, max(256, 1 << max(0, int(length) - 1).bit_length()))
    # the modules themselves: the step skips guards on them, so a model whose modules were swapped (quantized in
    # place, say) is compiled again rather than handed code that reads the old ones
    modules = tuple((id(m), type(m)) for m in model.modules())
    # and its tensors: the step holds the ones it was traced with (generate_compiled), so a tensor replaced (a
    # state dict loaded with assign=True, say) is compiled again too; so is a buffer changed in place (a quantized
    # layer's codes or scales), whose repacked copies the step holds (a parameter's update is seen as it is)
    params = tuple((id(t), t.data_ptr()) for t in model.parameters())
    buffers = tuple((id(t), t.data_ptr(), 0 if t.is_inference() else t._version) for t in model.buffers())
    key = (size, p.dtype, p.device, modules, params, buffers)
    kept = model.__dict__.get(COMPILED_STATE)
    if kept is None or kept[0] != key:
        kernels = p.device.type == "cpu" and gemv.available()  # built before tracing
        with torch.inference_mode(False):  # cache buffers usable by a later call outside inference mode too
            decoder = StaticDecoder(model, size, one_token_ops=kernels).eval()
        if kernels:  # one token through it, eagerly: what its one-row products read (the quantized layers' repacked
            # weights) is made by eager code, before the step is traced; the prompt's compiled layers make none
            with torch.no_grad():
                zero = torch.zeros(1, dtype=torch.long, device=p.device)
                decoder(zero[None], zero)
            huge_pages(_read_per_token(model))  # every token streams them: 2 MB pages, fewer TLB misses
        step = _Step(decoder, kernels)
        # a prompt's plain layers (StaticDecoder.forward, uncompiled, calls it): one graph for all of them and every
        # prompt length; the model's modules guarded as usual, since one graph serves many layers
        layer = _own(prompt_layer, f"prompt_layer_{id(decoder):x}")
        decoder.prompt_layer = torch.compile(layer, fullgraph=True, dynamic=True, options={"size_asserts": False})
        kept = (key, decoder, step)
        model.__dict__[COMPILED_STATE] = kept  # not a submodule: the decoder holds the model
    return kept[1], kept[2]


def generate_compiled(
    model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int, plan: Decoding, streamer: Any
) -> torch.Tensor:
    """``generate(..., compile=True)``'s tokens: the prompt through the static decoder (its plain layers compiled,
    the rest not), then each new token through the compiled step."""
    T = input_ids.shape[1]
    decoder, step = model.compiled_decoder(T + max_new_tokens)
    device = input_ids.device
    logits = decoder(input_ids, torch.zeros(1, dtype=torch.long, device=device))  # the prompt: its layers compiled
    pos = torch.arange(T, T + max_new_tokens, dtype=torch.long, device=device)  # each step's input position
    token_in, position = torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    token_np, position_np = token_in.numpy(), position.numpy()

    def step_id(token: int, n: int) -> torch.Tensor:  # one CPU sequence's token as an int: no tensor op
        token_np[0, 0], position_np[0] = token, T + n - 1
        return step(token_in, position)

    # the step traced with the tensors it reads (parameters, caches, repacked weights) as the graph's own attributes,
    # not as inputs that Dynamo's code gathers through the modules at every token
    with torch._dynamo.config.patch(install_free_tensors=True):
        return decode_loop(
            input_ids,
            logits,
            lambda token, n: step(token[:, None], pos[n - 1 : n].clone()),
            max_new_tokens,
            plan,
            streamer,
            step_id if device.type == "cpu" else None,
        )


class _Step:
    """The decode step ``(tokens (1, 1), input_pos (1,)) -> logits``, built at its first call (as torch.compile
    builds at its first): on the CPU with the zoo's kernels ahead of time (:func:`~zoo.lm.aot_step.aot_step`, one
    C++ call a token), else, or where that cannot be built, ``torch.compile``'d."""

    def __init__(self, decoder: StaticDecoder, kernels: bool):
        self.decoder, self.kernels = decoder, kernels
        self.run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def __call__(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        if self.run is None:
            self.run = self._build()
        return self.run(tokens, input_pos)

    def _build(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        # no size/stride checks of every kernel's output at every token (a cost paid per kernel, per token)
        options: dict[str, Any] = {"size_asserts": False}
        if self.kernels:  # float32 rows to zoo.kernels.gemv's kernel
            options["post_grad_custom_post_pass"] = gemv.OneRowProducts()
            built = aot_step(self.decoder, options)
            if built is not None:
                return built
        options["guard_filter_fn"] = torch.compiler.skip_guard_on_all_nn_modules_unsafe
        if self.decoder.lm.model.embed_tokens.weight.device.type == "cpu":  # calls made from C++: 12-17% faster
            options["cpp_wrapper"] = True
        return torch.compile(_own_step(self.decoder), fullgraph=True, dynamic=False, options=options)


def _read_per_token(model: nn.Module) -> list[torch.Tensor]:
    """What a decoded token reads: the model's parameters and buffers, and the quantized layers' kernel copies."""
    copies = [t for m in model.modules() if hasattr(m, "kernel_copies") for t in m.kernel_copies()]
    return [*model.parameters(), *model.buffers(), *copies]


def _own_step(decoder: StaticDecoder):
    """``decoder``'s forward as a function with a code object of its own. torch.compile keeps compiled code and its
    guards per code object: this step's entries belong to this decoder alone, so its guards need not tell it from
    other models' decoders, and those on the model's modules (hundreds of parameters checked per token) are
    skipped. A decoder holds the layers it was built with; a model changed otherwise gets a new decoder."""

    def step(tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return decoder(tokens, input_pos)

    return _own(step, f"decode_step_{id(decoder):x}")


def _own(fn: Callable, name: str) -> Callable:
    """``fn`` with a code object of its own, named ``name``: its own entries of torch.compile's code cache."""
    code = fn.__code__.replace(co_name=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
