"""Decoder-only language-model blocks: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU, a static
KV cache and a Llama-style pre-norm decoder layer.

Conventions follow Llama (and transformers' ``LlamaForCausalLM``), so checkpoints map by name:

* :class:`RMSNorm`: ``weight * x / sqrt(mean(x^2) + eps)`` over the last dimension (eps 1e-5 by default).
* :class:`RotaryEmbedding`: the "rotate half" (non-interleaved) convention, ``inv_freq = theta^(-2i/d)``, angles
  computed in float32 from integer positions. Tables are built lazily per device and grown on demand, so a
  model built on the meta device needs no buffer and the state dict holds no RoPE tensors.
* :class:`GroupedQueryAttention`: ``q_proj``/``k_proj``/``v_proj``/``o_proj`` without biases by default, and
  ``F.scaled_dot_product_attention`` with ``enable_gqa`` (query head ``h`` reads key/value head
  ``h // (num_heads // num_kv_heads)``). ``sliding_window=W`` lets a query see the ``W`` most recent keys,
  itself included (Mistral's convention: ``q_idx - k_idx < W``).
* :class:`SwiGLU`: ``down(silu(gate(x)) * up(x))``.
* :class:`KVCache`: one preallocated tensor pair of shape ``(slots, B, kv_heads, max_length, head_dim)``. A
  *slot* is one application of an attention layer: a plain stack uses slot ``i`` for layer ``i``; a stack that
  runs a shared layer several times (layer sharing, recursion) gives every run its own slot. Each slot keeps its
  own length and, optionally (``track_positions=True``), the original sequence index of every cached token, so
  a slot may hold only a routed subset of the tokens. The cache never changes shape after it is made.

Masks. Causality and windows are decided on *sequence indices* (0 for the first token of the sequence, padding
included), the same indices a cache records. :func:`attention_mask` builds a boolean ``(B, 1, T, S)`` mask
(True = may attend) from query indices, key indices, an optional key padding mask and a window; a query row
with no visible key (a padding query) is let see every key, so no row is all masked (which would give NaN that
then leaks through the value products of later layers).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AttentionMasks",
    "DecoderLayer",
    "GroupedQueryAttention",
    "KVCache",
    "RMSNorm",
    "RotaryEmbedding",
    "SwiGLU",
    "apply_rotary",
    "attention_mask",
    "build_attention_masks",
    "rotate_half",
]


def _inference(x: torch.Tensor) -> bool:
    """True when no autograd graph is being recorded for ``x`` (in-place shortcuts are safe)."""
    return not (torch.is_grad_enabled() and x.requires_grad) or torch.is_inference_mode_enabled()


# ------------------------------------------------------------------------------------------------------------------
# Norm, RoPE, MLP
# ------------------------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension with a learned scale (Llama's, eps 1e-5 by default)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):  # statistics in float32, as Llama computes them
            return F.rms_norm(x.float(), self.weight.shape, None, self.eps).to(x.dtype) * self.weight
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class RotaryEmbedding(nn.Module):
    """cos/sin tables of rotary position embeddings (rotate-half convention) for ``head_dim`` and ``theta``.

    ``forward(positions)`` takes integer positions of shape ``(T,)`` or ``(B, T)`` and returns ``(cos, sin)`` of
    shape ``(1 or B, 1, T, head_dim)``, ready to broadcast over heads. ``slice(start, length)`` is the cheap
    path for consecutive positions. Nothing is stored in the state dict.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0, initial_length: int = 2048):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
        self.head_dim = head_dim
        self.theta = float(theta)
        self.initial_length = initial_length
        self._tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def inv_freq(self, device=None) -> torch.Tensor:
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim
        return 1.0 / (self.theta**exponent)

    def tables(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of shape ``(L, head_dim)`` with ``L >= length``, cached per device and dtype."""
        key = (torch.device(device), dtype)
        cached = self._tables.get(key)
        if cached is None or cached[0].shape[0] < length:
            if isinstance(length, torch.SymInt):  # a traced dynamic length (torch.export): a static table, no guard
                size = max(self.initial_length, cached[0].shape[0] if cached is not None else 0)
            else:
                size = max(self.initial_length, 1 << max(0, int(length - 1).bit_length()))
            # normal tensors even when first built under inference_mode (e.g. by generate): a later forward with
            # grad saves them for backward, which inference tensors cannot be
            with torch.autocast(torch.device(device).type, enabled=False), torch.inference_mode(False):
                positions = torch.arange(size, dtype=torch.int64, device=device).float()
                freqs = positions[:, None] * self.inv_freq(device)[None, :]
                emb = torch.cat((freqs, freqs), dim=-1)
                cached = (emb.cos().to(dtype), emb.sin().to(dtype))
            self._tables[key] = cached
        return cached

    def slice(self, start: int, length: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.tables(start + length, device, dtype)
        return cos[start : start + length][None, None], sin[start : start + length][None, None]

    def forward(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        if positions.numel() and int(positions.min()) < 0:
            raise ValueError("rotary positions must be >= 0")
        length = int(positions.max()) + 1 if positions.numel() else 1
        cos, sin = self.tables(length, positions.device, dtype)
        cos, sin = cos[positions], sin[positions]  # (T, d) or (B, T, d)
        if positions.ndim == 1:
            return cos[None, None], sin[None, None]
        return cos[:, None], sin[:, None]

    def _apply(self, fn, recurse=True):
        self._tables = {}  # moved or cast: rebuild lazily on the new device
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta:g}"


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` for ``x`` of shape ``(B, heads, T, head_dim)``."""
    return x * cos + rotate_half(x) * sin


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` (Llama's MLP), no biases by default."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate_proj(x)
        if _inference(gate):  # no graph: reuse the gate's memory
            return self.down_proj(F.silu(gate, inplace=True).mul_(self.up_proj(x)))
        return self.down_proj(F.silu(gate) * self.up_proj(x))


# ------------------------------------------------------------------------------------------------------------------
# KV cache and masks
# ------------------------------------------------------------------------------------------------------------------


class KVCache:
    """A static key/value cache: ``slots`` x ``(batch_size, num_kv_heads, length, head_dim)``, preallocated.

    ``update(slot, k, v)`` writes ``T`` new entries after the slot's current ones and returns the slot's keys and
    values (views, no copy). While autograd records (grad mode), the cache stores detached copies and returns the
    cached past followed by the new entries themselves, so gradients flow through the forward that computed them
    and the cache never holds a graph. Lengths are per slot; ``seq_length`` is the length of slot 0 (the number
    of tokens a plain stack has seen). With ``track_positions`` every entry also records its sequence index
    (``positions(slot)``), for slots that cache a routed subset of the tokens.

    ``windows`` (one per slot, ``None`` for full attention) gives sliding-window slots a buffer of only their
    window: once full, an update returns the held entries followed by the new ones (a temporary) and keeps the
    last ``window``. ``evicted(slot)`` says how many of the slot's first tokens are gone, i.e. where the returned
    keys start in the sequence, so that a mask over the whole sequence is cut to them.
    """

    def __init__(
        self,
        num_slots: int,
        batch_size: int,
        num_kv_heads: int,
        max_length: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        track_positions: bool = False,
        windows: Sequence[int | None] | None = None,
        capacities: Sequence[int | None] | None = None,
    ):
        for name, value in (
            ("num_slots", num_slots),
            ("batch_size", batch_size),
            ("num_kv_heads", num_kv_heads),
            ("max_length", max_length),
            ("head_dim", head_dim),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"KVCache: {name} must be a positive int, got {value!r}")
        windows = [None] * num_slots if windows is None else list(windows)
        if len(windows) != num_slots or any(w is not None and (not isinstance(w, int) or w < 1) for w in windows):
            raise ValueError(f"KVCache: windows must be {num_slots} entries of None or a positive int, got {windows}")
        if track_positions and any(w is not None for w in windows):
            raise ValueError("KVCache: routed slots (track_positions) cannot have sliding windows")
        capacities = [None] * num_slots if capacities is None else list(capacities)
        if len(capacities) != num_slots or any(c is not None and (not isinstance(c, int) or c < 1) for c in capacities):
            raise ValueError(f"KVCache: capacities must be {num_slots} entries of None or a positive int")
        self.windows = windows
        self.capacity = [
            min(w, max_length) if w is not None else min(c or max_length, max_length)
            for w, c in zip(windows, capacities)
        ]
        self._max_length, self._shape = max_length, (batch_size, num_kv_heads, head_dim)
        if all(n == max_length for n in self.capacity) and all(w is None for w in windows):
            shape = (num_slots, batch_size, num_kv_heads, max_length, head_dim)
            self.keys = torch.zeros(shape, dtype=dtype, device=device)
            self.values = torch.zeros(shape, dtype=dtype, device=device)
            # per-slot views, made once: an update is then two narrow + copy_ (fewer ops per decoded token)
            self._slot_keys = list(self.keys.unbind(0))
            self._slot_values = list(self.values.unbind(0))
        else:  # slots of different lengths: one tensor each (``keys``/``values`` are not one stack then)
            self.keys = self.values = None
            self._slot_keys = [torch.zeros(batch_size, num_kv_heads, n, head_dim, dtype=dtype, device=device)
                               for n in self.capacity]  # fmt: skip
            self._slot_values = [torch.zeros_like(k) for k in self._slot_keys]
        self.lengths: list[int] = [0] * num_slots  # tokens written to each slot
        self.held: list[int] = [0] * num_slots  # entries each slot holds (fewer once a window is full)
        self.key_positions = (
            torch.zeros(num_slots, batch_size, max_length, dtype=torch.long, device=device) if track_positions else None
        )

    # -- shape ---------------------------------------------------------------------------------------------------
    @property
    def num_slots(self) -> int:
        return len(self._slot_keys)

    @property
    def batch_size(self) -> int:
        return self._shape[0]

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def dtype(self) -> torch.dtype:
        return self._slot_keys[0].dtype

    @property
    def seq_length(self) -> int:
        return self.lengths[0]

    def get_seq_length(self, slot: int = 0) -> int:
        return self.lengths[slot]

    def evicted(self, slot: int) -> int:
        """How many of the slot's first tokens a full window has dropped (0 for full-attention slots)."""
        return 0 if self.windows[slot] is None else self.lengths[slot] - self.held[slot]

    @property
    def nbytes(self) -> int:
        extra = self.key_positions.numel() * self.key_positions.element_size() if self.key_positions is not None else 0
        return sum(k.numel() * k.element_size() for k in self._slot_keys) * 2 + extra

    @property
    def bytes_per_token(self) -> int:
        """Bytes one more token costs across all slots, per sequence (keys + values), once every window is full
        (a sliding-window slot then costs nothing more)."""
        b, kv, d = self._shape
        full = sum(w is None for w in self.windows)
        return 2 * full * kv * d * self._slot_keys[0].element_size()

    # -- use -----------------------------------------------------------------------------------------------------
    def update(
        self, slot: int, key: torch.Tensor, value: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``key``/``value`` ``(B, kv_heads, T, head_dim)`` to ``slot``; return the slot's cached k, v."""
        start = self.lengths[slot]
        end = start + key.shape[2]
        if end > self.max_length:
            raise ValueError(
                f"KV cache is full: slot {slot} holds {start} of {self.max_length} tokens and "
                f"{key.shape[2]} more were written. Make a larger cache (model.new_cache(batch_size, "
                f"max_length)) before decoding this far."
            )
        b, kv, d = self._shape
        if key.shape[:2] != (b, kv) or key.shape[-1] != d:
            raise ValueError(
                f"KV cache made for (batch, kv_heads, head_dim) = {(b, kv, d)} got keys of shape {tuple(key.shape)}"
            )
        # full-attention slots write after their length (a routed cache may rewind it); windowed ones after what
        # they hold
        held, n = (start if self.windows[slot] is None else self.held[slot]), key.shape[2]
        if held + n > self.capacity[slot] and self.windows[slot] is None:  # a slot sized below the length grows
            self._grow(slot, held + n)
        if held + n > self.capacity[slot]:  # a full window: keep its last entries
            out = self._write_window(slot, key, value)
        elif torch.is_grad_enabled():  # (False under no_grad and inference_mode)
            out = self._write_recorded(slot, held, key, value)
        else:  # the fast path: two copies into the slot's views, returned as views
            keys, values = self._slot_keys[slot], self._slot_values[slot]
            keys.narrow(2, held, n).copy_(key)
            values.narrow(2, held, n).copy_(value)
            out = keys.narrow(2, 0, held + n), values.narrow(2, 0, held + n)
            self.held[slot] = held + n
        if self.key_positions is not None:
            if positions is None:
                positions = torch.arange(start, end, device=key.device).expand(key.shape[0], -1)
            self.key_positions[slot, :, start:end].copy_(positions)
        self.lengths[slot] = end
        return out

    def cached(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values ``slot`` holds, ``(B, kv_heads, held, head_dim)`` views."""
        n = self.lengths[slot] if self.windows[slot] is None else self.held[slot]
        return self._slot_keys[slot].narrow(2, 0, n), self._slot_values[slot].narrow(2, 0, n)

    def _grow(self, slot: int, needed: int) -> None:
        """Reallocate a slot made smaller than ``max_length`` (e.g. a routed step's expected share of the tokens)
        to twice its size, or what is needed, up to ``max_length``; its entries are kept."""
        size = min(self.max_length, max(needed, 2 * self.capacity[slot]))
        for store in (self._slot_keys, self._slot_values):
            old = store[slot]
            new = old.new_zeros(*old.shape[:2], size, old.shape[3])
            new.narrow(2, 0, old.shape[2]).copy_(old)
            store[slot] = new
        self.capacity[slot] = size

    def _slot(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        # writable in grad mode: the views made by ``unbind`` are not (autograd forbids modifying them)
        if self.keys is not None:
            return self.keys.select(0, slot), self.values.select(0, slot)
        return self._slot_keys[slot], self._slot_values[slot]

    def _write_recorded(
        self, slot: int, start: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`update` in grad mode: detached copies into fresh views of the slot, and the cached past followed
        by ``key``/``value`` themselves returned (a new tensor, which later writes to the cache leave unchanged)."""
        keys, values = self._slot(slot)
        n = key.shape[2]
        keys.narrow(2, start, n).copy_(key.detach())
        values.narrow(2, start, n).copy_(value.detach())
        self.held[slot] = start + n
        if start == 0:
            return key, value
        return torch.cat([keys.narrow(2, 0, start), key], dim=2), torch.cat([values.narrow(2, 0, start), value], dim=2)

    def _write_window(self, slot: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A sliding-window slot past its window: the held entries followed by the new ones are returned (what the
        new queries may see), and the last ``capacity`` of them are kept."""
        keys, values = self._slot(slot)
        held, cap = self.held[slot], self.capacity[slot]
        past_k, past_v = keys.narrow(2, 0, held).clone(), values.narrow(2, 0, held).clone()
        all_k, all_v = torch.cat([past_k, key], dim=2), torch.cat([past_v, value], dim=2)
        keys.copy_(all_k[:, :, -cap:].detach())
        values.copy_(all_v[:, :, -cap:].detach())
        self.held[slot] = cap
        return all_k, all_v

    def positions(self, slot: int) -> torch.Tensor:
        """Sequence index of every cached entry of ``slot``, ``(B, length)`` (needs ``track_positions``)."""
        if self.key_positions is None:
            raise ValueError("this KVCache was made without track_positions=True")
        return self.key_positions[slot, :, : self.lengths[slot]]

    def reset(self) -> "KVCache":
        """Forget every entry (the memory is kept for the next sequence)."""
        self.lengths = [0] * self.num_slots
        self.held = [0] * self.num_slots
        return self

    def crop(self, length: int) -> "KVCache":
        """Drop entries beyond ``length`` in every slot (e.g. to rewind rejected draft tokens). A sliding-window
        slot cannot rewind past the tokens its window has already dropped."""
        for slot, n in enumerate(self.lengths):
            drop = n - min(n, length)
            if self.windows[slot] is not None and drop > self.held[slot]:
                raise ValueError(
                    f"cannot crop slot {slot} (window {self.windows[slot]}) to {length} tokens: it holds only its last "
                    f"{self.held[slot]} of {n}; crop to at least {n - self.held[slot]}, or make the cache without "
                    "windows (model.new_cache(..., windowed=False))"
                )
        for slot, n in enumerate(self.lengths):
            drop = n - min(n, length)
            self.held[slot] -= drop
            self.lengths[slot] = n - drop
        return self

    def __repr__(self) -> str:
        b, kv, d = self._shape
        window = f", windows={self.windows}" if any(w is not None for w in self.windows) else ""
        return (
            f"KVCache(slots={self.num_slots}, batch_size={b}, num_kv_heads={kv}, max_length={self.max_length}, "
            f"head_dim={d}, dtype={self.dtype}, seq_length={self.seq_length}{window})"
        )


def attention_mask(
    query_index: torch.Tensor,
    key_index: torch.Tensor,
    key_padding: torch.Tensor | None = None,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Boolean ``(B, 1, T, S)`` mask, True where query ``t`` may attend to key ``s``.

    ``query_index`` ``(T,)`` or ``(B, T)`` and ``key_index`` ``(S,)`` or ``(B, S)`` are sequence indices;
    ``key_padding`` ``(B, S)`` is 1/True for real tokens. Rows that would see nothing see every key instead.
    """
    q = query_index[..., :, None]
    k = key_index[..., None, :]
    allowed = k <= q
    if sliding_window is not None:
        allowed = allowed & (q - k < sliding_window)
    if allowed.ndim == 2:
        allowed = allowed[None]
    if key_padding is not None:
        allowed = allowed & key_padding.bool()[:, None, :]
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
    return allowed[:, None]


@dataclass
class AttentionMasks:
    """The masks of one forward, per window (``None`` = global attention).

    ``masks[w]`` is a boolean mask or None; ``causal[w]`` says that a None mask means "causal" (a fresh
    sequence without padding, ``is_causal=True``) rather than "see every key" (one new token, no padding).
    """

    masks: dict[int | None, torch.Tensor | None]
    causal: dict[int | None, bool]

    def get(self, window: int | None) -> tuple[torch.Tensor | None, bool]:
        return self.masks[window], self.causal[window]


def build_attention_masks(
    past_length: int,
    length: int,
    windows: Sequence[int | None],
    padding_mask: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
) -> AttentionMasks:
    """Masks for ``length`` new tokens after ``past_length`` cached ones, for each window in ``windows``.

    ``padding_mask`` ``(B, past_length + length)`` marks real tokens with 1. No tensor is made where SDPA can
    do without one: a fresh unpadded sequence (``is_causal``) or a single new token that sees the whole cache.
    """
    total = past_length + length
    if padding_mask is not None:
        if padding_mask.ndim != 2 or padding_mask.shape[1] != total:
            raise ValueError(
                f"attention_mask must be (batch, past + new tokens) = (B, {total}), got {tuple(padding_mask.shape)}"
            )
        if bool(padding_mask.bool().all()):
            padding_mask = None
    masks, causal = {}, {}
    for window in dict.fromkeys(windows):
        window_fits = window is None or total <= window
        if padding_mask is None and window_fits and past_length == 0:
            masks[window], causal[window] = None, True
        elif padding_mask is None and window_fits and length == 1:
            masks[window], causal[window] = None, False
        else:
            q = torch.arange(past_length, total, device=device)
            k = torch.arange(total, device=device)
            masks[window], causal[window] = attention_mask(q, k, padding_mask, window), False
    return AttentionMasks(masks, causal)


# ------------------------------------------------------------------------------------------------------------------
# Attention and decoder layer
# ------------------------------------------------------------------------------------------------------------------


# One query token's attention for decoding, registered by the package that holds a faster kernel for it
# (zoo.lm.gemv, the kernel the compiled decode step calls, so that eager and compiled decoding attend alike):
# (q, k, v, mask, scale) -> the output as ``(1, 1, H * hd)``, or None where it does not take these inputs.
_one_token_attention = None


def set_one_token_attention(fn) -> None:
    """Route :meth:`GroupedQueryAttention.attend` of one query token (batch 1) through ``fn(q, k, v, mask,
    scale)``, which returns the attention output ``(1, 1, H * hd)`` or None to leave SDPA to it."""
    global _one_token_attention
    _one_token_attention = fn


class GroupedQueryAttention(nn.Module):
    """Multi-head attention with ``num_kv_heads`` shared key/value heads over ``F.scaled_dot_product_attention``.

    ``forward(x, rope, cache=None, slot=0, mask=None, is_causal=True)``: ``x`` is ``(B, T, dim)``, ``rope`` the
    ``(cos, sin)`` pair of the tokens' positions. With a cache, the new keys/values are appended to ``slot`` and
    the queries attend to everything the slot holds (subject to ``mask``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int | None = None,
        bias: bool = False,
        sliding_window: int | None = None,
    ):
        super().__init__()
        head_dim = head_dim or dim // num_heads
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        if sliding_window is not None and sliding_window < 1:
            raise ValueError(f"sliding_window must be >= 1 or None, got {sliding_window}")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.sliding_window = sliding_window
        self.scale = 1.0 / math.sqrt(head_dim)
        self.q_proj = nn.Linear(dim, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, num_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, dim, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | None = None,
        slot: int = 0,
        mask: torch.Tensor | None = None,
        is_causal: bool = True,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cos, sin = rope
        q = apply_rotary(self.split_heads(self.q_proj(x), self.num_heads), cos, sin)  # (B, H, T, hd)
        k = apply_rotary(self.split_heads(self.k_proj(x), self.num_kv_heads), cos, sin)  # (B, KV, T, hd)
        v = self.split_heads(self.v_proj(x), self.num_kv_heads)
        if cache is not None:
            k, v = cache.update(slot, k, v, positions)  # (B, KV, S, hd), S = cached + T
        return self.o_proj(self.attend(q, k, v, mask, is_causal))

    def split_heads(self, t: torch.Tensor, heads: int) -> torch.Tensor:
        """``(B, T, heads * head_dim)`` -> ``(B, heads, T, head_dim)``."""
        B, T, _ = t.shape
        return t.view(B, T, heads, self.head_dim).transpose(1, 2)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        """SDPA of rotated queries ``(B, H, T, hd)`` over keys/values ``(B, KV, S, hd)``, as ``(B, T, H * hd)``
        for ``o_proj``. A causal mask needs ``S == T`` (SDPA aligns it top-left); else pass ``mask``."""
        B, _, T, _ = q.shape
        if _one_token_attention is not None and B == 1 and T == 1:
            y = _one_token_attention(q, k, v, mask, self.scale)
            if y is not None:
                return y
        if mask is not None:
            is_causal = False
        elif is_causal and k.shape[2] != T:
            raise ValueError(
                "is_causal with cached or shared keys needs an explicit mask (SDPA aligns causal masks top-left)"
            )
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=bool(is_causal and T > 1),
            scale=self.scale,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )
        return y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)

    def extra_repr(self) -> str:
        window = f", sliding_window={self.sliding_window}" if self.sliding_window else ""
        return f"heads={self.num_heads}, kv_heads={self.num_kv_heads}, head_dim={self.head_dim}{window}"


class DecoderLayer(nn.Module):
    """Pre-norm Llama block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))`` (transformers' key names)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        intermediate_size: int,
        head_dim: int | None = None,
        eps: float = 1e-5,
        attention_bias: bool = False,
        mlp_bias: bool = False,
        sliding_window: int | None = None,
    ):
        super().__init__()
        self.input_layernorm = RMSNorm(dim, eps)
        self.self_attn = GroupedQueryAttention(dim, num_heads, num_kv_heads, head_dim, attention_bias, sliding_window)
        self.post_attention_layernorm = RMSNorm(dim, eps)
        self.mlp = SwiGLU(dim, intermediate_size, mlp_bias)

    @property
    def sliding_window(self) -> int | None:
        return self.self_attn.sliding_window

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | None = None,
        slot: int = 0,
        mask: torch.Tensor | None = None,
        is_causal: bool = True,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.self_attn(self.input_layernorm(x), rope, cache, slot, mask, is_causal, positions)
        x = x + h  # a new tensor: the caller's input is never modified
        h = self.mlp(self.post_attention_layernorm(x))
        return x.add_(h) if _inference(h) else x + h
