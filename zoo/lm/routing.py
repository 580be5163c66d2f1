"""Token routing over shared decoder layers: routers, gathered subsets, a cache of routed tokens, LoRA hooks.

Mixture-of-Recursions runs a shared block on a *subset* of the tokens at each recursion step. These pieces let a
stock :class:`~zoo.lm.blocks.DecoderLayer` do that without changing it:

* :func:`gather_active` turns a boolean ``(B, T)`` mask of active tokens into sorted indices ``(B, K)`` (causal
  order kept; rows with fewer active tokens are padded with the index ``T``, which points at a zero row appended
  by :func:`extend` so that gathers and scatters of padding touch nothing real).
* :class:`RoutedKVCache` is a :class:`~zoo.lm.cache.KVCache` that always records the sequence index of every
  entry; a padding entry (a row that had no active token where another row had one) records ``-1`` and is never
  attended to. It also counts the tokens the model has seen (``seen``), since no slot need hold them all.
* :func:`routed_attention_mask` builds the boolean mask for gathered queries against keys given by sequence
  index (causality by original order, padding and empty entries masked).
* :func:`layer_forward` runs a decoder layer with optional per-call LoRA deltas on its projections, its own
  norms, keys/values taken from elsewhere (recursive KV sharing) and the new keys/values returned.
* :class:`Router` (linear or MLP scorer) and :class:`AddAuxiliaryLoss` (adds an auxiliary loss's gradient in
  the backward pass of the logits, so a plain ``cross_entropy(model(x), y)`` training loop also trains routers).
"""

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DecoderLayer, _inference, apply_rotary, attention_mask, gated
from .cache import KVCache

__all__ = [
    "AddAuxiliaryLoss",
    "LayerOps",
    "LoRA",
    "RoutedKVCache",
    "Router",
    "extend",
    "gather_active",
    "layer_forward",
    "routed_attention_mask",
]


class Router(nn.Module):
    """Scores tokens from their hidden state: ``linear`` (dim -> out) or ``mlp`` (dim -> dim -> GELU -> out).

    Weights start at N(0, 0.02) without biases, as in the authors' routers.
    """

    def __init__(self, dim: int, out_features: int = 1, kind: str = "linear"):
        super().__init__()
        if kind == "linear":
            self.net = nn.Linear(dim, out_features, bias=False)
        elif kind == "mlp":
            self.net = nn.Sequential(
                nn.Linear(dim, dim, bias=False), nn.GELU(), nn.Linear(dim, out_features, bias=False)
            )
        else:
            raise ValueError(f"router kind must be 'linear' or 'mlp', got {kind!r}")
        self.kind = kind
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AddAuxiliaryLoss(torch.autograd.Function):
    """Identity on ``x`` whose backward also sends gradient 1 to ``loss``: ``d(total)/d(loss) = 1``.

    The auxiliary loss thus joins whatever loss is computed from ``x`` without the training loop knowing it
    (note that a loss scaler or a division for gradient accumulation applied to the main loss does not apply
    to it).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        ctx.dtype, ctx.shape = loss.dtype, loss.shape
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, torch.ones(ctx.shape, dtype=ctx.dtype, device=grad.device)


class LoRA(nn.Module):
    """Low-rank delta ``scaling * B @ A`` of a linear map, ``A: (rank, in)``, ``B: (out, rank)``.

    Fresh deltas are zero (``B = 0``, ``A`` Kaiming-uniform, as in LoRA); :meth:`init_from_delta` sets them to
    the rank-``rank`` truncated SVD of a given weight difference (exact when ``rank = min(out, in)``).
    """

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float | None = None):
        super().__init__()
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"LoRA rank must be a positive int, got {rank!r}")
        self.rank = min(rank, in_features, out_features)
        self.scaling = (alpha if alpha is not None else 2.0 * self.rank) / self.rank
        self.lora_A = nn.Parameter(torch.empty(self.rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, self.rank))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        if self.lora_A.device.type != "meta":
            nn.init.kaiming_uniform_(self.lora_A, a=5**0.5)
        self.lora_B.zero_()

    @torch.no_grad()
    def init_from_delta(self, delta: torch.Tensor):
        """``scaling * B @ A`` := the best rank-``rank`` approximation of ``delta`` (out, in), by SVD in float64."""
        if delta.shape != (self.lora_B.shape[0], self.lora_A.shape[1]):
            raise ValueError(
                f"delta of shape {tuple(delta.shape)} for a LoRA of shape "
                f"{(self.lora_B.shape[0], self.lora_A.shape[1])}"
            )
        U, S, Vh = torch.linalg.svd(delta.double(), full_matrices=False)
        root = (S[: self.rank] / self.scaling).sqrt()
        self.lora_B.copy_(U[:, : self.rank] * root)
        self.lora_A.copy_(root[:, None] * Vh[: self.rank])

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * self.lora_B @ self.lora_A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling

    def extra_repr(self) -> str:
        return f"in={self.lora_A.shape[1]}, out={self.lora_B.shape[0]}, rank={self.rank}, scaling={self.scaling:g}"


# ------------------------------------------------------------------------------------------------------------------
# Gathering active tokens
# ------------------------------------------------------------------------------------------------------------------


def gather_active(active: torch.Tensor, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(B, K)`` of the active tokens of each row in sequence order and their validity ``(B, K)``.

    ``K`` is the largest count of a row, or ``size`` where the caller knows a bound without reading the data (a
    top-k's ``k``; the sequence length while ``torch.export`` traces, where ``K`` would be a data-dependent size);
    shorter rows are padded with index ``T`` (the row :func:`extend` adds), which every mask treats as empty, so a
    larger ``K`` gives the active tokens the same values.
    """
    B, T = active.shape
    counts = active.sum(dim=1)
    K = size if size is not None else (int(counts.max()) if B else 0)
    # active first, each group in sequence order: distinct keys, so the K smallest are the order a stable sort of
    # ~active gives (ONNX has no stable sort)
    key = (~active).to(torch.int64) * T + torch.arange(T, device=active.device)
    order = key.topk(K, dim=1, largest=False).indices
    valid = torch.arange(K, device=active.device)[None, :] < counts[:, None]
    return torch.where(valid, order, torch.full_like(order, T)), valid


def extend(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, T, ...)`` with one zero row appended at index ``T`` (the target of padded indices)."""
    return torch.cat([x, x.new_zeros((x.shape[0], 1) + tuple(x.shape[2:]))], dim=1)


def routed_attention_mask(
    query_index: torch.Tensor, key_index: torch.Tensor, padding_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Boolean ``(B, 1, K, S)`` mask for queries and keys given by sequence index (``-1``: an empty entry).

    A query sees a key with an index at or below its own that is not empty and not padding
    (``padding_mask`` ``(B, total)``, 1 for real tokens, indexed by sequence index).
    """
    valid = key_index >= 0
    if padding_mask is not None:
        valid = valid & padding_mask.bool().gather(1, key_index.clamp(min=0))
    return attention_mask(query_index, key_index, valid)


class RoutedKVCache(KVCache):
    """A :class:`KVCache` whose slots may each hold a different subset of the tokens.

    Every entry records its sequence index (``positions(slot)``); entries written for padding (a batch row with
    no active token where another row had one) record ``-1``. ``seen`` counts the tokens of the sequence so far
    (the model advances it after each forward), which is the past length for new tokens.
    """

    def __init__(
        self,
        num_slots: int,
        batch_size: int,
        num_kv_heads: int,
        max_length: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device="cpu",
        capacities=None,
    ):
        super().__init__(
            num_slots,
            batch_size,
            num_kv_heads,
            max_length,
            head_dim,
            dtype,
            device,
            track_positions=True,
            capacities=capacities,
        )
        self.seen = 0

    @property
    def seq_length(self) -> int:
        return self.seen

    def is_full(self, slot: int) -> bool:
        """True when ``slot`` holds every token seen so far and no empty entry."""
        return self.lengths[slot] == self.seen and bool((self.positions(slot) >= 0).all())

    def reset(self) -> "RoutedKVCache":
        super().reset()
        self.seen = 0
        return self

    def crop(self, length: int) -> "RoutedKVCache":
        """Forget every token at sequence index ``length`` or later: their entries become empty, and trailing
        columns that are empty in every row are released."""
        for slot in range(self.num_slots):
            pos = self.positions(slot)
            pos.masked_fill_(pos >= length, -1)
            used = (pos >= 0).any(dim=0).nonzero()
            self.lengths[slot] = int(used.max()) + 1 if used.numel() else 0
        self.seen = min(self.seen, length)
        return self

    def __repr__(self) -> str:
        return super().__repr__().replace("KVCache(", "RoutedKVCache(", 1)


# ------------------------------------------------------------------------------------------------------------------
# A decoder layer with hooks
# ------------------------------------------------------------------------------------------------------------------


def _proj(linear: nn.Linear, x: torch.Tensor, lora: dict[str, nn.Module] | None, name: str) -> torch.Tensor:
    y = linear(x)
    if lora is not None and name in lora:
        y = y + lora[name](x)
    return y


class LayerOps:
    """How :func:`layer_forward` computes a layer's norms, heads, rotary embedding and attention: as the layer's
    own modules do (this class). :class:`zoo.lm.static_decoder.DelegateOps` computes the same values with other
    ops."""

    def norm(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return module(x)

    def split_heads(self, attn: nn.Module, t: torch.Tensor, heads: int) -> torch.Tensor:
        return attn.split_heads(t, heads)

    def rotary(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return apply_rotary(x, cos, sin)

    def attend(self, attn: nn.Module, q, k, v, mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
        return attn.attend(q, k, v, mask, is_causal)

    def project(self, linears: tuple[nn.Module, ...], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``x`` through each of ``linears`` (projections that read the same input)."""
        return tuple(linear(x) for linear in linears)


_LAYER_OPS = LayerOps()


def _projections(
    ops: LayerOps, owner: nn.Module, names: tuple[str, ...], x: torch.Tensor, lora: dict[str, nn.Module] | None
) -> tuple[torch.Tensor, ...]:
    """``x`` through ``owner``'s projections ``names`` (by ``ops.project``), each plus its LoRA delta if any."""
    ys = ops.project(tuple(getattr(owner, name) for name in names), x)
    if lora is None:
        return ys
    return tuple(y + lora[name](x) if name in lora else y for name, y in zip(names, ys))


def layer_forward(
    layer: DecoderLayer,
    x: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    *,
    cache: KVCache | None = None,
    slot: int = 0,
    mask: torch.Tensor | None = None,
    is_causal: bool = True,
    positions: torch.Tensor | None = None,
    shared_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    lora: dict[str, nn.Module] | None = None,
    norms: tuple[nn.Module, nn.Module] | None = None,
    return_kv: bool = False,
    ops: LayerOps | None = None,
):
    """``layer`` applied to ``x`` ``(B, T, dim)``, computing what :meth:`DecoderLayer.forward` computes, plus:

    * ``lora``: ``{"q_proj": LoRA, ...}`` deltas added to the named projections for this call;
    * ``norms``: (input, post-attention) norms used instead of the layer's own;
    * ``shared_kv``: attend to these keys/values ``(B, kv_heads, S, head_dim)`` (already rotated) instead of
      computing new ones; nothing is written to a cache (recursive KV sharing);
    * ``return_kv``: return ``(x, (k, v))`` with this call's keys/values (after the cache update, if any);
    * ``ops``: a :class:`LayerOps` that computes the norms, heads, rotary embedding and attention another way
      (:class:`zoo.lm.static_decoder.DelegateOps`: the same values in ops a CPU delegate takes whole); ``mask``
      is then whatever form those ``ops`` take.

    Without any of these it is exactly ``layer(x, rope, cache, slot, mask, is_causal, positions)``.
    """
    if lora is None and norms is None and shared_kv is None and not return_kv and ops is None:
        return layer(x, rope, cache, slot, mask, is_causal, positions)
    attn = layer.self_attn
    norm1, norm2 = norms if norms is not None else (layer.input_layernorm, layer.post_attention_layernorm)
    ops = ops or _LAYER_OPS
    cos, sin = rope

    h = ops.norm(norm1, x)
    names = ("q_proj",) if shared_kv is not None else ("q_proj", "k_proj", "v_proj")
    ys = _projections(ops, attn, names, h, lora)
    q = ops.rotary(ops.split_heads(attn, ys[0], attn.num_heads), cos, sin)
    if shared_kv is None:
        k = ops.rotary(ops.split_heads(attn, ys[1], attn.num_kv_heads), cos, sin)
        v = ops.split_heads(attn, ys[2], attn.num_kv_heads)
        if cache is not None:
            k, v = cache.update(slot, k, v, positions)
    else:
        k, v = shared_kv
    x = x + _proj(attn.o_proj, ops.attend(attn, q, k, v, mask, is_causal), lora, "o_proj")
    mlp = layer.mlp
    h = ops.norm(norm2, x)
    gate, up = _projections(ops, mlp, ("gate_proj", "up_proj"), h, lora)
    y = _proj(mlp.down_proj, gated(gate, up), lora, "down_proj")
    # no graph and no compiler (a prompt run as it comes): this call's own x (the sum above) takes the result
    reuse = _inference(x) and not torch.compiler.is_compiling() and y.dtype == x.dtype and y.shape == x.shape
    x = x.add_(y) if reuse else x + y
    return (x, (k, v)) if return_kv else x
