"""The decoder's blocks: RMSNorm, rotary embeddings, SwiGLU, attention masks, grouped-query attention and a
Llama-style pre-norm decoder layer (the KV cache they append to is :mod:`zoo.lm.cache`).

Conventions follow Llama (and transformers' ``LlamaForCausalLM``), so checkpoints map by name:

* :class:`RMSNorm`: ``weight * x / sqrt(mean(x^2) + eps)`` over the last dimension (eps 1e-5 by default).
* :class:`RotaryEmbedding`: the "rotate half" (non-interleaved) convention, ``inv_freq = theta^(-2i/d)``, angles
  computed in float32 from integer positions. Tables are built lazily per device and grown on demand, so a
  model built on the meta device needs no buffer and the state dict holds no RoPE tensors.
* :class:`GroupedQueryAttention`: ``q_proj``/``k_proj``/``v_proj``/``o_proj`` without biases by default, and
  ``F.scaled_dot_product_attention`` with ``enable_gqa`` (query head ``h`` reads key/value head
  ``h // (num_heads // num_kv_heads)``). ``sliding_window=W`` lets a query see the ``W`` most recent keys,
  itself included (Mistral's convention: ``q_idx - k_idx < W``). One query token of batch 1 (a decoded token)
  attends through the zoo's CPU kernel (:func:`zoo.kernels.gemv.attend_one`, the one the compiled decode step calls),
  so eager and compiled decoding attend with the same bits; SDPA everywhere else.
* :class:`SwiGLU`: ``down(silu(gate(x)) * up(x))``.
* :class:`DecoderLayer`: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``.

Masks. Causality and windows are decided on *sequence indices* (0 for the first token of the sequence, padding
included), the same indices a cache records. :func:`attention_mask` builds a boolean ``(B, 1, T, S)`` mask
(True = may attend) from query indices, key indices, an optional key padding mask and a window; a query row
with no visible key (a padding query) is let see every key, so no row is all masked (which would give NaN that
then leaks through the value products of later layers).

Shapes: ``B`` batch, ``T`` new tokens, ``S`` keys seen (cached + new), ``H`` query heads, ``KV`` key/value heads,
``hd`` head dim.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import gemv
from .cache import KVCache

__all__ = [
    "AttentionMasks",
    "DecoderLayer",
    "GroupedQueryAttention",
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
        if torch.compiler.is_exporting():  # positions are data there: a static table, as for a traced length
            length = self.initial_length
        else:
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
        return self.down_proj(gated(self.gate_proj(x), self.up_proj(x)))


def gated(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up``; without an autograd graph or the compiler, in the gate's memory (the same values)."""
    if _inference(gate) and not torch.compiler.is_compiling() and gate.dtype == up.dtype:
        return F.silu(gate, inplace=True).mul_(up)
    return F.silu(gate) * up


# ------------------------------------------------------------------------------------------------------------------
# Masks
# ------------------------------------------------------------------------------------------------------------------


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
    exporting = torch.compiler.is_exporting()  # the length is symbolic: no branch on it (an explicit mask instead)
    for window in dict.fromkeys(windows):
        window_fits = window is None or (not exporting and total <= window)
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


def _kernel_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor | None:
    """One query token's attention through :func:`zoo.kernels.gemv.attend_one`, the compiled decode step's kernel, so
    that eager and compiled decoding attend with the same bits (SDPA sums in another order, and 8-bit activations
    round such last-bit differences to whole codes); None (SDPA) for what it does not take: other devices or dtypes,
    autograd through the inputs, export traces, a mask that is not one boolean per key, or no kernels here (the
    kernels are built at the first :func:`~zoo.kernels.gemv.available`, never at import)."""
    if not (
        q.device.type == "cpu"
        and q.dtype == k.dtype == v.dtype == torch.float32
        and q.dim() == 4
        and k.dim() == 4
        and k.shape[0] == 1
        and k.shape == v.shape
        and q.shape[1] % k.shape[1] == 0
        and (mask is None or (mask.dtype == torch.bool and mask.numel() == k.shape[2]))
        and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))
        and not (torch.compiler.is_exporting() or torch.jit.is_tracing())
        and gemv.available()
    ):
        return None
    if mask is None:  # one new token sees every cached one
        mask = torch.ones(k.shape[2], dtype=torch.bool)
    return gemv.attend_one(q, k, v, mask, scale)  # (1, 1, H * hd)


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
        v = self.split_heads(self.v_proj(x), self.num_kv_heads)  # (B, KV, T, hd)
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
        if B == 1 and T == 1:  # a decoded token: the CPU kernel where it takes these inputs
            y = _kernel_attention(q, k, v, mask, self.scale)
            if y is not None:
                return y
        if mask is not None:
            is_causal = False
        elif is_causal and k.shape[2] != T:
            raise ValueError(
                "is_causal with cached or shared keys needs an explicit mask (SDPA aligns causal masks top-left)"
            )
        if T == 1:  # one query: nothing after it to mask (a branch, so that a symbolic length gives a guard)
            is_causal = False
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=bool(is_causal),
            scale=self.scale,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )
        return y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)  # (B, H, T, hd) -> (B, T, H * hd)

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
