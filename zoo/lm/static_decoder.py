"""A zoo decoder LM over a static KV cache, as one traceable module: the compiled decode step and the exports.

:class:`StaticDecoder` ``(tokens (1, T) int64, input_pos (1,) int64) -> logits (1, vocab)`` of the last token,
writing the ``T`` tokens' keys/values at positions ``input_pos .. input_pos + T - 1`` of a static cache of
``max_seq_len`` tokens held in module buffers and mutated in place (one pair per slot of the model's own cache, i.e.
per layer application). Attention reads the whole static cache under a mask built from the positions (and each
sliding-window layer's window), so no shape depends on the data: ``torch.compile`` traces one graph for the decode
step (:meth:`DecoderLM.generate` with ``compile=True``), ``torch.export`` a dynamic-length prefill and a decode
(``zoo export --format pte``).

Routing (Mixture-of-Recursions) runs densely: every token runs every recursion step; its routing decision selects
whether the step's output is kept (``torch.where``) and whether its cache entry counts (a per-slot validity
buffer), which for the selected tokens is what the eager model's threshold (expert-choice) or argmax (token-choice)
routing computes. Top-k expert routing looks at the whole sequence and cannot decode causally; it is refused.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.gemv import attend_one, gemv_f32_many
from .quant_layer import shared_products
from .routing import LayerOps, layer_forward

__all__ = ["DelegateOps", "OneTokenOps", "StaticDecoder", "prompt_layer"]


class DelegateOps(nn.Module, LayerOps):
    """The norms, heads, rotary embedding and attention of a :class:`StaticDecoder` written with the ops a CPU
    delegate (ExecuTorch's XNNPACK) takes whole, for a prompt of any length as for one token, so that a decoder
    layer lowers as one delegated block between its cache writes instead of ten pieces around the ops it does not
    take (a mean over the last dimension of a 3-D tensor, scalar arithmetic, slices and reshapes of a dynamic
    length, the expand of grouped-query attention, the masked softmax's NaN guard). Same values, other ops:

    * RMSNorm: the mean of squares is a linear layer of weight ``1 / dim`` and bias ``eps``;
    * heads: reshapes with the length inferred (``-1``);
    * rotary embedding: ``rotate_half`` is a linear layer (a signed permutation of ``head_dim``), not two slices;
    * attention (batch 1): the ``G = heads / kv_heads`` query heads of a key/value head are stacked as ``G * T``
      rows of one matrix product with that head's keys (no expand), plus an additive mask (0 or -inf, made once per
      step by :meth:`bias`), softmax, and the product with the values;
    * with ``llm_ops`` (:class:`StaticDecoder`), ExecuTorch's ``llama::update_cache`` writes a layer's new
      keys/values in place from ``start`` (the first new token's position), where the mask form copies the whole
      cache on each write.
    """

    start: int | torch.SymInt = 0  # the first new token's position (StaticDecoder.forward sets it)

    def __init__(self, dim: int, eps: float, num_heads: int, num_kv_heads: int, head_dim: int, scale: float, p):
        super().__init__()
        self.groups, self.head_dim = num_heads // num_kv_heads, head_dim
        half = head_dim // 2
        rotate = torch.zeros(head_dim, head_dim, dtype=p.dtype, device=p.device)  # rotate_half(x) = x @ rotate.T
        rotate[torch.arange(half), torch.arange(half, head_dim)] = -1.0
        rotate[torch.arange(half, head_dim), torch.arange(half)] = 1.0
        self.register_buffer("rotate", rotate)
        self.register_buffer("mean_weight", torch.full((1, dim), 1.0 / dim, dtype=p.dtype, device=p.device))
        self.register_buffer("mean_bias", torch.full((1,), eps, dtype=p.dtype, device=p.device))
        self.register_buffer("scale", torch.full((1,), scale, dtype=p.dtype, device=p.device))
        self.register_buffer("mask_values", torch.tensor([0.0, float("-inf")], dtype=p.dtype, device=p.device))

    def norm(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        mean_square = F.linear(x * x, self.mean_weight, self.mean_bias)
        return x * torch.rsqrt(mean_square) * module.weight

    def split_heads(self, attn: nn.Module, t: torch.Tensor, heads: int) -> torch.Tensor:
        return t.reshape(1, -1, heads, self.head_dim).transpose(1, 2)

    def rotary(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return x * cos + F.linear(x, self.rotate) * sin

    def bias(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A boolean ``(T, S)`` mask as the additive ``(G * T, S)`` mask of :meth:`attend`'s stacked rows."""
        return torch.where(mask, self.mask_values[0], self.mask_values[1]).to(dtype).repeat(self.groups, 1)

    def attend(self, attn: nn.Module, q, k, v, mask: torch.Tensor | None, is_causal: bool = False) -> torch.Tensor:
        KV, S, D = k.shape[1], k.shape[2], self.head_dim
        return self.stacked_attention(q * self.scale, k.reshape(KV, S, D), v.reshape(KV, S, D), mask)

    def stacked_attention(self, q, keys, values, bias: torch.Tensor) -> torch.Tensor:
        """Scaled queries ``(1, H, T, D)`` over ``keys`` / ``values`` ``(KV, S, D)`` under the additive ``(G * T, S)``
        ``bias``, as ``(1, T, H * D)``: the query heads of each key/value head stacked as ``G * T`` rows, the scores
        as ``keys @ rows^T`` (the keys read as they lie, not transposed), softmax, the product with the values."""
        H, D = q.shape[1], self.head_dim
        KV = keys.shape[0]
        rows = q.contiguous().view(KV, -1, D)  # (KV, G * T, D); a copy for T > 1 (the heads were permuted)
        scores = torch.bmm(keys, rows.permute(0, 2, 1)).permute(0, 2, 1)  # (KV, G * T, S)
        y = torch.bmm(torch._softmax(scores + bias, -1, False), values)  # (KV, G * T, D)
        return y.view(1, H, -1, D).permute(0, 2, 1, 3).contiguous().view(1, -1, H * D)


class OneTokenOps(LayerOps):
    """The compiled decode step's attention on CPU: one float32 query token over the static cache through
    :func:`zoo.kernels.gemv.attend_one`, which works on the positions the mask lets it see (40 of 256 slots after a
    40-token context) where SDPA works on all of them; a prompt, another dtype or device takes SDPA (a prompt that
    starts the cache: :func:`prompt_layer`). The projections that read one input share one product where they can
    (:meth:`project`). Needs :func:`zoo.kernels.gemv.available`."""

    def attend(self, attn: nn.Module, q, k, v, mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
        one = q.shape[0] == 1 and q.shape[2] == 1 and q.device.type == "cpu" and q.dtype == k.dtype == torch.float32
        if one and mask is not None and mask.dtype == torch.bool:
            return attend_one(q, k, v, mask, attn.scale)
        return attn.attend(q, k, v, mask, is_causal)

    def project(self, linears: tuple[nn.Module, ...], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Projections that read the same input (a decoded token's query, key and value; gate and up) as one call:
        quantized ones as one product of the 8-bit kernels (:func:`zoo.lm.quant_layer.shared_products`), float32
        ones by :func:`zoo.kernels.gemv.gemv_f32_many` (:func:`_float_products`); the same bits as each by itself, which
        is the fallback."""
        return shared_products(linears, x) or _float_products(linears, x) or super().project(linears, x)


def _float_products(linears: tuple[nn.Module, ...], x: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """Inside the compiled step, one float32 CPU row through several plain float32 ``nn.Linear`` of its width in one
    kernel call, each output as ``zoo_gemv::f32`` gives it (as the step's other float32 products,
    :class:`zoo.kernels.gemv.OneRowProducts`); None otherwise (run eagerly, the decoder computes eager's bits)."""
    width = x.shape[-1]
    one_row = x.numel() == width and x.device.type == "cpu" and x.dtype == torch.float32
    if not torch.compiler.is_compiling() or len(linears) < 2 or not one_row:
        return None
    if not all(type(m) is nn.Linear and m.weight.dtype == torch.float32 and m.in_features == width for m in linears):
        return None
    ys = gemv_f32_many(x, [m.weight for m in linears])
    return tuple((y if m.bias is None else y + m.bias).view(*x.shape[:-1], m.out_features) for m, y in zip(linears, ys))


class _PromptOps(LayerOps):
    """:func:`prompt_layer`'s attention: the queries are the cache's first ``T`` positions, so they attend to those
    keys alone with causal SDPA (eager's flash path), not to the whole cache under a mask."""

    def attend(self, attn: nn.Module, q, k, v, mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
        T = q.shape[2]
        return attn.attend(q, k[:, :, :T], v[:, :, :T], None, True)


class _PromptCache:
    """:func:`prompt_layer`'s cache: a slot's buffers ``(1, KV, S, D)``, the prompt's keys and values written to the
    first ``T`` positions (a slice, not a scatter by position)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        self.keys, self.values = keys, values

    def update(self, slot: int, key: torch.Tensor, value: torch.Tensor, positions=None):
        T = key.shape[2]
        self.keys[:, :, :T] = key.to(self.keys.dtype)
        self.values[:, :, :T] = value.to(self.values.dtype)
        return self.keys, self.values


_PROMPT_OPS = _PromptOps()


def prompt_layer(
    layer: nn.Module,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    shared: bool = False,
    lora: dict[str, nn.Module] | None = None,
    norms: tuple[nn.Module, nn.Module] | None = None,
) -> torch.Tensor:
    """One application of ``layer`` (no window, no routing) to a prompt ``x`` ``(1, T, dim)`` that starts the cache,
    its keys and values written to positions ``0..T-1`` of its slot's ``keys`` / ``values`` (or, ``shared``, read
    from them: recursive KV sharing), ``(cos, sin)`` the rotary tables of those positions: what
    :meth:`StaticDecoder.forward` computes for it, in eager's ops (each projection by itself, causal SDPA over the
    prompt's own keys). Everything it reads comes in as an argument, so one ``torch.compile`` of it serves every layer
    of a model and every prompt length (:func:`zoo.lm.compiled.compiled_decoder`)."""
    cache, shared_kv = (None, (keys, values)) if shared else (_PromptCache(keys, values), None)
    return layer_forward(
        layer,
        x,
        (cos, sin),
        cache=cache,
        shared_kv=shared_kv,
        is_causal=True,
        lora=lora,
        norms=norms,
        ops=_PROMPT_OPS,
    )


class _App:
    """One layer application: its layer, cache slot, window and the recursive model's hooks."""

    def __init__(self, layer, slot, window=None, lora=None, norms=None, reads_shared=False):
        self.layer, self.slot, self.window = layer, slot, window
        self.lora, self.norms, self.reads_shared = lora, norms, reads_shared


def _checked_config(model: nn.Module, max_seq_len: int, delegate_ops: bool, one_token_ops: bool, llm_ops: bool, fuse):
    """The model's config, once the arguments of :class:`StaticDecoder` are known to fit it and each other."""
    c = getattr(model, "config", None)
    if not hasattr(model, "schedule") or c is None:
        raise ValueError(f"a static-cache decoder drives the zoo's decoder language models, not {type(model).__name__}")
    if not isinstance(max_seq_len, int) or max_seq_len < 2:
        raise ValueError(f"max_seq_len must be an int >= 2, got {max_seq_len!r}")
    if delegate_ops and one_token_ops:
        raise ValueError(
            "delegate_ops (the ExecuTorch export's ops) and one_token_ops (the compiled CPU step's) are two ways "
            "of computing the same layers; pass one of them"
        )
    if llm_ops and not delegate_ops:
        raise ValueError("llm_ops are ExecuTorch's operators for the delegate_ops form: pass delegate_ops=True too")
    if fuse is not None and not llm_ops:
        raise ValueError("fuse stacks the projections of the llm_ops layers: pass llm_ops=True too")
    if max_seq_len > c.max_position_embeddings:
        raise ValueError(
            f"max_seq_len={max_seq_len} exceeds the model's context length of {c.max_position_embeddings} "
            f"tokens (config.max_position_embeddings); use max_seq_len <= {c.max_position_embeddings}"
        )
    return c


class StaticDecoder(nn.Module):
    """A zoo decoder LM over a static KV cache of ``max_seq_len`` tokens, for batch 1, as a traceable module.

    ``forward(tokens (1, T) int64, input_pos (1,) int64) -> (1, vocab)`` logits of the last token. The cache lives
    in buffers ``k_cache_{slot}`` / ``v_cache_{slot}`` ``(1, kv_heads, max_seq_len, head_dim)`` (and, for routed
    slots, ``valid_{slot}`` ``(max_seq_len,)``: whether the token at that position was cached there).
    ``delegate_ops=True`` computes with :class:`DelegateOps` (the ExecuTorch export), ``one_token_ops=True`` with
    :class:`OneTokenOps` (the compiled decode step on CPU). ``llm_ops=True`` (with ``delegate_ops``; ExecuTorch's
    LLM operators loaded, ``executorch.extension.llm.custom_ops``) runs the applications of the slots in
    ``llm_slots`` (no routing, KV sharing or LoRA) as :meth:`_run_llm`: the cache ``(kv_heads, max_seq_len, 1,
    head_dim)`` written in place by ``llama::update_cache``, attention as two batched matrix products over it.

    ``fuse`` (with ``llm_ops``): a function that stacks linear layers' output rows as one linear layer; the
    ``llm_slots`` layers' query, key and value projections then run as one product (``fused``), their MLPs' gate
    and up projections as another (``fused_mlp``).
    """

    def __init__(
        self,
        model: nn.Module,
        max_seq_len: int,
        delegate_ops: bool = False,
        one_token_ops: bool = False,
        llm_ops: bool = False,
        fuse: Callable[[list[nn.Linear]], nn.Linear] | None = None,
    ):
        super().__init__()
        c = _checked_config(model, max_seq_len, delegate_ops, one_token_ops, llm_ops, fuse)
        self.lm = model
        self.max_seq_len = max_seq_len
        self.routing: str | None = None
        layers = model.model.layers
        self._applications(model, c)
        p = model.model.embed_tokens.weight
        self._caches(model, c, max_seq_len, llm_ops, p)
        self._fuse(layers, fuse)
        self._pos: torch.Tensor | None = None
        self._fresh = False  # forward's: a prompt that starts the cache (prompt_layer for its plain layers)
        # prompt_layer compiled for this decoder's model (set by zoo.lm.compiled), else None: prompt_layer as it is
        self.prompt_layer: Callable[..., torch.Tensor] | None = None
        self.ops = OneTokenOps() if one_token_ops else None
        if delegate_ops:
            attn = layers[0].self_attn
            norm = model.model.norm
            self.ops = DelegateOps(
                c.hidden_size, norm.eps, attn.num_heads, attn.num_kv_heads, attn.head_dim, attn.scale, p
            )

    def _applications(self, model: nn.Module, c) -> None:
        """``apps`` (one per layer application, in order), ``num_slots``, and the prefix / steps / suffix split."""
        layers = model.model.layers
        if not hasattr(model, "slot_of"):  # MobileLLM: one slot per layer application
            self.num_slots = len(model.schedule)
            self.apps = [_App(layers[b], i, layers[b].sliding_window) for i, b in enumerate(model.schedule)]
            self.prefix, self.steps, self.suffix = list(range(len(self.apps))), [], []
        else:  # the recursive LMs: shared blocks, slots, LoRA, routing
            if c.mor == "expert" and c.inference_routing != "threshold":
                raise ValueError(
                    "this recursive LM routes by top-k at inference (inference_routing='topk'): top-k over the "
                    "sequence looks at future tokens, so it cannot decode token by token with a cache. Export it "
                    "with inference_routing='threshold' (the causal rule its router is trained to predict)"
                )
            self.routing = c.mor
            self.num_slots = model.num_slots
            self.apps = [
                _App(
                    layers[b],
                    model.slot_of[i],
                    None,
                    model.lora[str(i)] if str(i) in model.lora else None,
                    tuple(model.app_norms[str(i)]) if str(i) in model.app_norms else None,
                    model.reads_shared[i],
                )
                for i, b in enumerate(model.schedule)
            ]
            self.prefix, self.steps, self.suffix = list(model.prefix), [list(s) for s in model.steps], model.suffix

    def _caches(self, model: nn.Module, c, max_seq_len: int, llm_ops: bool, p: torch.Tensor) -> None:
        """The cache buffers of every slot (``cache_specs``), the masks' windows and the rotary tables."""
        shape = (1, c.num_key_value_heads, max_seq_len, c.head_dim)
        routed = {self.apps[i].slot for step in self.steps for i in step} if self.routing else set()
        self.routed_slots = sorted(routed)
        self.llm_slots: set[int] = set()
        if llm_ops:  # slots every application of which writes its own cache, the layer's projections unchanged
            masked = {a.slot for a in self.apps if a.reads_shared or a.lora is not None} | routed
            self.llm_slots = {a.slot for a in self.apps} - masked
        # the windows the applications attend under: one mask each per step
        self.windows = sorted({a.window for a in self.apps}, key=lambda w: -1 if w is None else w)
        self.cache_specs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for slot in range(self.num_slots):
            # llm_slots: update_cache's (batch, length, heads, head_dim) with a batch of kv_heads, one head each
            size = (c.num_key_value_heads, max_seq_len, 1, c.head_dim) if slot in self.llm_slots else shape
            self.cache_specs[f"k_cache_{slot}"] = self.cache_specs[f"v_cache_{slot}"] = (size, p.dtype)
            if slot in routed:
                self.cache_specs[f"valid_{slot}"] = ((max_seq_len,), torch.bool)
        for name, (size, dtype) in self.cache_specs.items():
            self.register_buffer(name, torch.zeros(size, dtype=dtype, device=p.device))
        cos, sin = model.rotary.tables(max_seq_len, p.device, p.dtype)
        self.register_buffer("rope_cos", cos[:max_seq_len].clone(), persistent=False)
        self.register_buffer("rope_sin", sin[:max_seq_len].clone(), persistent=False)
        self.register_buffer("positions", torch.arange(max_seq_len, device=p.device), persistent=False)

    def _fuse(self, layers: nn.ModuleList, fuse: Callable[[list[nn.Linear]], nn.Linear] | None) -> None:
        # the layers of llm_slots' applications: their query/key/value projections stacked (block index -> q|k|v),
        # their MLPs' gate and up projections (block index -> gate|up)
        self.fused, self.fused_mlp = nn.ModuleDict(), nn.ModuleDict()
        index = {id(layer): str(b) for b, layer in enumerate(layers)}
        for app in self.apps:
            b = index[id(app.layer)]
            if fuse is not None and app.slot in self.llm_slots and b not in self.fused:
                attn, mlp = app.layer.self_attn, app.layer.mlp
                self.fused[b] = fuse([attn.q_proj, attn.k_proj, attn.v_proj])
                self.fused_mlp[b] = fuse([mlp.gate_proj, mlp.up_proj])
        self._block = [index[id(app.layer)] for app in self.apps]

    # -- the cache protocol layer_forward uses ------------------------------------------------------------------
    def update(self, slot: int, key: torch.Tensor, value: torch.Tensor, positions=None):
        keys, values = getattr(self, f"k_cache_{slot}"), getattr(self, f"v_cache_{slot}")
        keys[:, :, self._pos] = key.to(keys.dtype)
        values[:, :, self._pos] = value.to(values.dtype)
        return keys, values

    # -- forward ------------------------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        T = tokens.shape[1]
        keys = self.positions
        pos = input_pos.reshape(1) + keys[:T]  # (T,)
        causal = keys[None, :] <= pos[:, None]  # (T, S): True where query t may see the key at that position
        self._pos = pos
        if self.llm_slots:
            start = torch.ops.aten._local_scalar_dense(input_pos[0])
            torch._check(start >= 0)
            torch._check(start + T <= self.max_seq_len)
            self.ops.start = start
        self._rope = (self.rope_cos[pos][None, None], self.rope_sin[pos][None, None])
        if self.llm_slots:  # (1, T, heads + 2 kv_heads, D): rotate the queries and keys, leave the values
            self._stacked_rope = self._stacked(self.rope_cos[pos], 1.0), self._stacked(self.rope_sin[pos], 0.0)
        self._masks = {w: causal if w is None else causal & (pos[:, None] - keys[None, :] < w) for w in self.windows}
        # a prompt that starts the cache, run outside the compiler: prompt_layer for its plain layers
        fresh = isinstance(self.ops, OneTokenOps) and T > 1 and not torch.compiler.is_compiling()
        self._fresh = fresh and int(input_pos.reshape(-1)[0]) == 0
        delegated = isinstance(self.ops, DelegateOps)
        if delegated and not self.routed_slots:  # additive masks, once per step
            self._masks = {w: self.ops.bias(m, self.rope_cos.dtype) for w, m in self._masks.items()}
        x = self.lm.model.embed_tokens(tokens)
        for i in self.prefix:
            x = self._run(i, x, None)
        if self.routing == "expert":
            x = self._expert_steps(x)
        elif self.routing == "token":
            x = self._token_steps(x)
        else:
            for r in range(len(self.steps)):
                x = self._run_step(r, x, None)
        for i in self.suffix:
            x = self._run(i, x, None)
        self._pos = self._rope = self._masks = self._stacked_rope = None
        self._fresh = False
        norm = self.lm.model.norm
        return self.lm.logits(self.ops.norm(norm, x[:, -1]) if delegated else norm(x[:, -1]))

    def _mask(self, app: _App) -> torch.Tensor | None:
        mask = self._masks[app.window]
        if app.slot in self.routed_slots:
            mask = mask & getattr(self, f"valid_{app.slot}")[None, :]
            mask = mask | ~mask.any(dim=-1, keepdim=True)  # a row that sees nothing sees everything (no NaN)
        if not isinstance(self.ops, DelegateOps):
            return mask[None, None]
        return self.ops.bias(mask, self.rope_cos.dtype) if mask.dtype == torch.bool else mask

    def _stacked(self, table: torch.Tensor, value_entry: float) -> torch.Tensor:
        """A rotary table's rows ``(T, D)`` for :meth:`_run_llm`'s stacked heads ``(1, T, H + 2 KV, D)``: the rows
        times the attention's scale for the query heads (the scores come out scaled), the rows for the key heads,
        ``value_entry`` for the value heads (cos 1, sin 0: unchanged)."""
        attn = self.lm.model.layers[0].self_attn
        T, D = table.shape
        heads = [
            (table * attn.scale)[None, :, None].expand(1, T, attn.num_heads, D),
            table[None, :, None].expand(1, T, attn.num_kv_heads, D),
            torch.full((1, T, attn.num_kv_heads, D), value_entry, dtype=table.dtype, device=table.device),
        ]
        return torch.cat(heads, dim=2)

    def _run_llm(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Application ``i`` of a slot in ``llm_slots``: what :func:`layer_forward` computes with
        :class:`DelegateOps`, in ops XNNPACK takes whole around ``llama::update_cache``.

        The query/key/value projections as one product (``fused``, or the three side by side) and the rotary
        embedding over the stacked heads; the new keys/values written in place into the cache ``(KV, S, 1, D)``;
        attention over all ``S`` slots under the window's additive mask (:meth:`DelegateOps.stacked_attention`,
        the cache read as it lies). Over
        ``llama::custom_sdpa`` (which attends over the positions seen so far, at a cost that grows with the position),
        a token took less time at the lengths measured (``results/notes/code_figures.md``)."""
        app = self.apps[i]
        layer, ops = app.layer, self.ops
        attn, mlp = layer.self_attn, layer.mlp
        H, KV, D = attn.num_heads, attn.num_kv_heads, attn.head_dim
        norm1, norm2 = app.norms if app.norms is not None else (layer.input_layernorm, layer.post_attention_layernorm)
        h = ops.norm(norm1, x)
        if self._block[i] in self.fused:
            t = self.fused[self._block[i]](h)
        else:
            t = torch.cat([attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)], dim=-1)
        t = ops.rotary(t.reshape(1, -1, H + 2 * KV, D), *self._stacked_rope)  # queries scaled
        q, k, v = t[:, :, :H], t[:, :, H : H + KV], t[:, :, H + KV :]
        keys, values = getattr(self, f"k_cache_{app.slot}"), getattr(self, f"v_cache_{app.slot}")
        torch.ops.llama.update_cache(k.permute(2, 1, 0, 3).to(keys.dtype), keys, ops.start)
        torch.ops.llama.update_cache(v.permute(2, 1, 0, 3).to(values.dtype), values, ops.start)
        S = keys.shape[1]
        mask = self._masks[app.window]
        mask = ops.bias(mask, x.dtype) if mask.dtype == torch.bool else mask
        y = ops.stacked_attention(q.permute(0, 2, 1, 3), keys.reshape(KV, S, D), values.reshape(KV, S, D), mask)
        x = x + attn.o_proj(y)
        h = ops.norm(norm2, x)
        if self._block[i] in self.fused_mlp:
            g = self.fused_mlp[self._block[i]](h)
            gate, up = g[..., : g.shape[-1] // 2], g[..., g.shape[-1] // 2 :]  # slices (chunk decomposes)
        else:
            gate, up = mlp.gate_proj(h), mlp.up_proj(h)
        return x + mlp.down_proj(gate * torch.sigmoid(gate) * up)  # SiLU as x * sigmoid(x), the op it decomposes to

    def _run(self, i: int, x: torch.Tensor, chosen: torch.Tensor | None) -> torch.Tensor:
        app = self.apps[i]
        if app.slot in self.llm_slots:
            return self._run_llm(i, x)
        if self._fresh and app.window is None and app.slot not in self.routed_slots:
            keys, values = getattr(self, f"k_cache_{app.slot}"), getattr(self, f"v_cache_{app.slot}")
            run = self.prompt_layer or prompt_layer
            return run(app.layer, x, *self._rope, keys, values, app.reads_shared, app.lora, app.norms)
        if app.reads_shared:  # recursive KV sharing: the keys/values the block's first application cached
            shared = (getattr(self, f"k_cache_{app.slot}"), getattr(self, f"v_cache_{app.slot}"))
            kwargs = dict(shared_kv=shared)
        else:
            if app.slot in self.routed_slots:
                valid = getattr(self, f"valid_{app.slot}")
                valid[self._pos] = torch.ones_like(self._pos, dtype=torch.bool) if chosen is None else chosen[0]
            kwargs = dict(cache=self, slot=app.slot)
        mask = self._mask(app)
        return layer_forward(
            app.layer, x, self._rope, mask=mask, is_causal=False, lora=app.lora, norms=app.norms, ops=self.ops, **kwargs
        )

    def _run_step(self, r: int, x: torch.Tensor, chosen: torch.Tensor | None) -> torch.Tensor:
        for i in self.steps[r]:
            x = self._run(i, x, chosen)
        return x

    def _expert_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Expert-choice routing, threshold rule: a token runs step ``r`` while ``sigmoid(router_r) >= threshold``
        (and it ran step ``r - 1``); its state gains ``score * step(x)``."""
        c = self.lm.config
        caps = c.capacities()
        active = None
        for r in range(c.num_recursion):
            prob = torch.sigmoid(self.lm.routers[r](x).squeeze(-1))  # (1, T)
            score = (c.router_alpha * prob).unsqueeze(-1)
            if caps[r] >= 1.0 and active is None:
                chosen = None
            else:
                chosen = prob >= c.routing_threshold
                chosen = chosen if active is None else chosen & active
            h = self._run_step(r, x, chosen)
            x = x + score * h if chosen is None else torch.where(chosen.unsqueeze(-1), x + h * score, x)
            active = chosen
        return x

    def _token_steps(self, x: torch.Tensor) -> torch.Tensor:
        """Token-choice routing: the router's argmax is a token's depth ``d``; it runs steps ``0..d`` and its
        output is ``x + p_d * h_d``."""
        c = self.lm.config
        probs = self.lm.routers[0](x).softmax(dim=-1) * c.router_alpha  # (1, T, N_r)
        choice = probs + self.lm.router_bias if c.balancing == "loss_free" else probs
        depth = choice.argmax(dim=-1)
        weight = probs.gather(-1, depth.unsqueeze(-1))  # (1, T, 1)
        out, cur = x, x
        for r in range(c.num_recursion):
            finish = (depth == r).to(x.dtype).unsqueeze(-1) * weight
            if r == 0:  # every token runs the first step
                h = self._run_step(r, cur, None)
                out, cur = out + finish * h, h
                continue
            active = depth >= r
            h = self._run_step(r, cur, active)
            keep = active.unsqueeze(-1)
            out, cur = torch.where(keep, out + h * finish, out), torch.where(keep, h, cur)
        return out
