"""The decoder-LM base every zoo language model shares (MobileLLM, the recursive LMs).

:class:`DecoderConfig` holds the Llama fields (transformers' key names) and their validation;
:class:`DecoderBody` the embedding, decoder layers and final norm (``LlamaModel``'s key names); :class:`DecoderLM`
Llama's init, tied output weights, parameter counting, input checks, the plumbing of a forward pass and its KV
cache. ``generate`` comes from :class:`~zoo.lm.generation.GenerationMixin` (the generation names are importable
from here too). A family subclasses the three and adds what is its own (layer sharing, windows, recursion,
routing).
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers.args import check_known_keys
from ..layers.saving import HubMixin
from .blocks import DecoderLayer, RMSNorm
from .cache import KVCache
from .compiled import COMPILED_STATE
from .decoding import decoding_plan, generation_settings, sample_token
from .generation import GenerationMixin
from .generation_config import GenerationConfig
from .quant import int8_head, kernel_path
from .sessions import BACKEND_STATE, generate_on_session
from .streamers import TextIteratorStreamer, TextStreamer

__all__ = [
    "DecoderBody",
    "DecoderConfig",
    "DecoderLM",
    "GenerationConfig",
    "LMOutput",
    "PassStart",
    "TextIteratorStreamer",
    "TextStreamer",
    "decoding_plan",
    "generate_on_session",
    "generation_settings",
    "sample_token",
]


def _tracing() -> bool:
    """True while torch.compile or torch.export traces the model (data-dependent input checks are skipped)."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


@dataclass
class DecoderConfig:
    """A Llama-style decoder's architecture with transformers' key names; families subclass it with their fields
    (redeclaring a field changes only its default)."""

    vocab_size: int = 32000
    hidden_size: int = 576
    intermediate_size: int = 1536
    num_hidden_layers: int = 30
    num_attention_heads: int = 9
    num_key_value_heads: int = 3
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = None

    # fields that must be positive ints; subclasses extend the tuple
    positive_ints: ClassVar[tuple[str, ...]] = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
    )

    def __post_init__(self):
        name = type(self).__name__
        for key in self.positive_ints:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}.{key} must be a positive int, got {value!r}")
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                    f"{self.num_attention_heads}; give head_dim explicitly"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.hidden_act != "silu":
            raise ValueError(f"only hidden_act='silu' (SwiGLU) is supported, got {self.hidden_act!r}")
        if not self.rms_norm_eps > 0 or not self.rope_theta > 0:
            raise ValueError("rms_norm_eps and rope_theta must be > 0")

    @classmethod
    def field_names(cls) -> set:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def check_keys(cls, kwargs: dict[str, Any], what: str) -> None:
        """TypeError naming the keys of ``kwargs`` that are not fields of this config (with the closest ones)."""
        check_known_keys(kwargs, cls.field_names(), what, "Accepted config keys")

    @classmethod
    def resolve(cls, config: Optional["DecoderConfig"], kwargs: dict[str, Any], what: str) -> "DecoderConfig":
        """``config`` with ``kwargs`` applied (or a new config of ``kwargs``), unknown keys refused."""
        if kwargs:
            cls.check_keys(kwargs, what)
        if config is None:
            return cls(**kwargs)
        return dataclasses.replace(config, **kwargs) if kwargs else config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LMOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, vocab)
    past_key_values: KVCache | None


class PassStart(NamedTuple):
    """What every decoder's forward sets up before its layers (:meth:`DecoderLM.start_pass`)."""

    x: torch.Tensor  # (B, T, dim) token embeddings
    cache: KVCache | None  # appended to by the layers
    past: int  # tokens the cache held before this pass
    padding: torch.Tensor | None  # (B, past + T) True for real tokens; None when every token is real
    rope: tuple[torch.Tensor, torch.Tensor]  # (cos, sin) of the tokens' positions
    positions: torch.Tensor | None  # (B, T) the given position_ids; None: past, ..., past + T - 1


class DecoderBody(nn.Module):
    """Embedding, decoder layers and the final norm (transformers' ``LlamaModel`` key names)."""

    def __init__(self, c: DecoderConfig, windows: Sequence[int | None]):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(
            [
                DecoderLayer(
                    c.hidden_size,
                    c.num_attention_heads,
                    c.num_key_value_heads,
                    c.intermediate_size,
                    c.head_dim,
                    c.rms_norm_eps,
                    c.attention_bias,
                    c.mlp_bias,
                    window,
                )
                for window in windows
            ]
        )
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class DecoderLM(nn.Module, HubMixin, GenerationMixin):
    """What every zoo decoder shares (MobileLLM, the recursive LMs): Llama's init, tied output weights, parameter
    counting, input checks and the steps of a forward pass around the layers (:meth:`start_pass`,
    :meth:`finish_pass`), with cached :meth:`~zoo.lm.generation.GenerationMixin.generate` from
    :class:`~zoo.lm.generation.GenerationMixin`. Subclasses provide ``config``, ``model.embed_tokens``, ``lm_head``
    (None when tied), ``new_cache`` and ``forward``."""

    # what a family's class declares: the config dataclass it is built from (zoo.models._builder.build_lm), and
    # for a family whose folders have a format of their own, the config.json ``model_type`` and transformers class
    # name it writes (zoo.export.hf_auto makes transformers classes for every registered family that has one)
    config_class: ClassVar[type[DecoderConfig]] = DecoderConfig
    model_type: ClassVar[str | None] = None
    hf_architecture: ClassVar[str | None] = None

    # -- weights ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self):
        """transformers' Llama init: N(0, initializer_range) for linear and embedding weights, norms at 1."""
        std = self.config.initializer_range
        if self.model.embed_tokens.weight.is_meta:
            return  # shapes only (the factory counts a config's model on the meta device): nothing to fill
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, std)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
            elif isinstance(m, RMSNorm):
                m.weight.fill_(1.0)

    @property
    def output_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output head: ``hidden @ output_weight.T``. With int8/int4 projections (``quantize=``), CPU inference
        runs it as int8 codes per row (:func:`zoo.lm.quant.int8_head`; llama.cpp's Q8_0 treats its output matrix
        the same way): the float head is the largest matrix of a small LM and would otherwise cost more than
        every quantized projection together."""
        spec = getattr(self, "quantization", None)
        if spec is not None and spec.method != "bf16" and kernel_path(hidden):
            return int8_head(self.__dict__, self.output_weight, hidden, spec.act_bits)
        return F.linear(hidden, self.output_weight)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # tied weights are one parameter: counted once
        return n - self.model.embed_tokens.weight.numel() if non_embedding else n

    # what set_grad_checkpointing installs: the checkpoint function and every how many layer runs it applies
    checkpoint_fn: ClassVar[Callable[..., Any]] = functools.partial(checkpoint, use_reentrant=False)
    checkpoint_every: ClassVar[int] = 1

    def set_grad_checkpointing(
        self, enable: bool = True, checkpoint_fn: Callable[..., Any] | None = None, every_n_layers: int = 1
    ):
        """Recompute the layer runs in the backward pass instead of keeping their activations (training mode, no
        cache, grad enabled). ``checkpoint_fn(function, *args)`` does the checkpointing (default
        ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``; transformers' ``gradient_checkpointing_enable``
        passes its own, with the caller's ``gradient_checkpointing_kwargs``); ``every_n_layers`` checkpoints every
        n-th layer run only (transformers' argument of that name)."""
        if not isinstance(every_n_layers, int) or isinstance(every_n_layers, bool) or every_n_layers < 1:
            raise ValueError(f"every_n_layers must be a positive int, got {every_n_layers!r}")
        if checkpoint_fn is not None and not callable(checkpoint_fn):
            raise ValueError(f"checkpoint_fn must be callable, got {type(checkpoint_fn).__name__}")
        self.grad_checkpointing = bool(enable)
        if checkpoint_fn is not None:
            self.checkpoint_fn = checkpoint_fn
        self.checkpoint_every = every_n_layers

    def checkpoints(self, run: int, cache: Any) -> bool:
        """Whether layer run ``run`` (its index in the schedule) is recomputed in the backward pass."""
        return (
            self.grad_checkpointing
            and cache is None
            and self.training
            and torch.is_grad_enabled()
            and run % self.checkpoint_every == 0
        )

    def no_weight_decay(self) -> set:
        return {n for n, p in self.named_parameters() if p.ndim < 2}

    # -- input checks -------------------------------------------------------------------------------------------
    def _check_ids(self, input_ids: torch.Tensor):
        if (
            not isinstance(input_ids, torch.Tensor)
            or input_ids.ndim != 2
            or input_ids.dtype not in (torch.long, torch.int32, torch.int16, torch.int8, torch.uint8)
        ):
            got = (
                f"{tuple(input_ids.shape)} {input_ids.dtype}"
                if isinstance(input_ids, torch.Tensor)
                else type(input_ids).__name__
            )
            raise ValueError(f"input_ids must be an integer tensor of shape (batch, tokens), got {got}")
        if input_ids.numel() == 0:
            raise ValueError("input_ids is empty: give at least one token")
        # (on other devices the embedding's own check fires; no host sync here)
        if input_ids.device.type == "cpu" and not _tracing():
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= self.config.vocab_size:
                raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got values in [{lo}, {hi}]")

    def _check_context(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, past: int
    ) -> torch.Tensor | None:
        """Checks of a forward of ``input_ids`` (already through :meth:`_check_ids`) after ``past`` cached tokens:
        the context length and the mask. Returns the padding mask (boolean ``(B, past + T)``, True for real
        tokens), or None when every token is real."""
        batch, length = input_ids.shape
        limit = self.config.max_position_embeddings
        if past + length > limit:
            after = f" after {past} cached ones" if past else ""
            raise ValueError(
                f"{length} tokens{after} exceed this model's context length of {limit} tokens "
                f"(config.max_position_embeddings): feed at most {limit} tokens per sequence (truncate or split "
                f"the text)"
            )
        return self._padding_mask(attention_mask, batch, past + length)

    def _padding_mask(self, attention_mask: torch.Tensor | None, batch: int, length: int) -> torch.Tensor | None:
        """``attention_mask`` checked against ``(batch, length)``, as booleans; None when every token is real.

        Refused: another shape (it would broadcast), values other than 0 and 1, rows without a real token. While
        torch.compile or torch.export traces, the mask is taken as it is (the checks would break the graph).
        """
        if attention_mask is None:
            return None
        if _tracing():
            return attention_mask.bool()
        if not isinstance(attention_mask, torch.Tensor) or tuple(attention_mask.shape) != (batch, length):
            got = (
                tuple(attention_mask.shape)
                if isinstance(attention_mask, torch.Tensor)
                else type(attention_mask).__name__
            )
            raise ValueError(
                f"attention_mask must be a tensor of shape (batch, cached + new tokens) = {(batch, length)}, got "
                f"{got}: give one row per sequence, 1 for each real token and 0 for padding, the cached tokens "
                f"included"
            )
        real = attention_mask != 0
        not_binary = real & (attention_mask != 1)
        odd, empty, every = torch.stack([not_binary.any(), (~real.any(dim=1)).any(), real.all()]).tolist()
        if odd:
            values = attention_mask[not_binary].unique()[:5].tolist()
            raise ValueError(
                f"attention_mask may hold only 0 (padding) and 1 (real token), got {values}; build it from the "
                f"tokenizer's mask or as (input_ids != pad_id).long()"
            )
        if empty:
            rows = (~real.any(dim=1)).nonzero().flatten().tolist()
            raise ValueError(
                f"attention_mask rows {rows} are all 0: every sequence needs at least one real token "
                f"(drop empty sequences from the batch)"
            )
        return None if every else real

    # -- one forward pass: what comes before and after the layers ---------------------------------------------------
    cache_class: ClassVar[type] = KVCache

    @property
    def num_cache_slots(self) -> int:
        """Cache slots the layers write (one per layer run unless the family shares them)."""
        return len(self.schedule)

    def start_pass(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        past_key_values: KVCache | None,
        use_cache: bool,
    ) -> PassStart:
        """Checks the inputs and cache, makes a cache for ``use_cache`` (``max(T, min(context, 2048))`` tokens),
        embeds the tokens and builds their rotary tables."""
        self._check_ids(input_ids)
        B, T = input_ids.shape
        cache = past_key_values
        if cache is None and use_cache:
            cache = self.new_cache(B, max(T, min(self.config.max_position_embeddings, 2048)))
        if cache is not None:
            self._check_cache(cache, B)
        past = cache.seq_length if cache is not None else 0
        padding = self._check_context(input_ids, attention_mask, past)
        x = self.model.embed_tokens(input_ids)
        if position_ids is None:
            positions, rope = None, self.rotary.slice(past, T, x.device, x.dtype)
        else:
            positions = position_ids.to(x.device).reshape(-1, T).expand(B, T)
            rope = self.rotary(positions, x.dtype)
        return PassStart(x, cache, past, padding, rope, positions)

    def _check_cache(self, cache: Any, batch: int) -> None:
        fits = isinstance(cache, self.cache_class)
        if fits and cache.num_slots == self.num_cache_slots and cache.batch_size == batch:
            return
        got = type(cache).__name__
        if isinstance(cache, KVCache):
            got += f" with {cache.num_slots} slots for batch {cache.batch_size}"
        raise ValueError(
            f"the cache is a {got}; this model needs a {self.cache_class.__name__} with {self.num_cache_slots} "
            f"slots for the input batch {batch}. Use model.new_cache(batch_size, max_length)."
        )

    def finish_pass(self, x: torch.Tensor, logits_to_keep: int) -> torch.Tensor:
        """Logits of the final hidden states ``x`` (of the last ``logits_to_keep`` positions, 0: all)."""
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return self.logits(self.model.norm(x))

    # -- copies --------------------------------------------------------------------------------------------------
    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state)
        state.pop(COMPILED_STATE, None)  # copies and pickles compile their own
        state.pop("_head_int8", None)  # and make their own head codes
        state.pop(BACKEND_STATE, None)  # and load their own backend engines (a llama.cpp model is not copied)
        return state
