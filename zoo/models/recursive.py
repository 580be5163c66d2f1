"""Recursive language models: weight-shared decoders, Mixture-of-Recursions routing and relaxed recursion.

Papers: "Mixture-of-Recursions: Learning Dynamic Recursive Depths for Adaptive Token-Level Computation"
(NeurIPS 2025), https://arxiv.org/abs/2507.10524, code https://github.com/raymin0223/mixture_of_recursions;
"Relaxed Recursive Transformers: Effective Parameter Sharing with Layer-wise LoRA" (ICLR 2025),
https://arxiv.org/abs/2410.20672.

Architecture. Llama-style pre-norm layers (:class:`zoo.lm.DecoderLayer`) on SmolLM shapes (vocab 49,152,
tied embeddings). A few *unique* blocks are applied along a per-application schedule
(:func:`zoo.layers.recursion.sharing_schedule`). ``num_hidden_layers`` is the depth of the dense base model;
with ``num_recursion = N_r`` it has ``B = shared_depth(...)`` shared blocks:

* ``cycle``: ``[0..B-1] x N_r``; ``sequence``: each block ``N_r`` times in a row (MobileLLM-LS is ``sequence``
  with ``N_r = 2`` and the LS model's depth doubled, see :func:`from_pretrained_dense`);
* ``middle_cycle`` (the paper's default) / ``middle_sequence``: the first and last layers stay unique.

Norm weights belong to their block (``ln_share=True``); with ``ln_share=False`` every repeated application has
its own two norms. Parameters are stored once per unique block, so ``parameters()`` counts shared weights once
and the profiler (which follows the computation) counts MACs once per application.

Routing (``mor``), applied per *recursion step* (one pass over the shared blocks, cycle-type sharing only):

* ``"expert"`` (expert-choice): step ``r`` has its own router (``linear`` or ``mlp`` on the hidden state),
  score ``alpha * sigmoid(logit)`` (alpha 0.1). The step keeps the top ``k = max(1, int(capacity_r * T))`` of the
  tokens still active after step ``r - 1`` (capacity ``(N_r - r) / N_r`` by default: tokens only drop out), in
  their causal order. The selected tokens run through the step's blocks as a shorter sequence that keeps their
  original RoPE positions and a causal mask on their original indices; the result is added back weighted by
  the score: ``x[sel] += score * blocks(x[sel])`` (the block output includes its residual, as in the authors'
  code). Training adds ``aux_loss_coeff`` (0.001) x BCE(logit, selected) over the candidate tokens.
* ``"token"`` (token-choice): one router with ``N_r`` outputs, ``softmax`` (x alpha 1.0); a token's argmax is its
  depth ``d`` (it runs ``d + 1`` steps) and its output is ``x + p_d * h_d``. Balancing by a loss
  (``balancing_coeff`` 0.1, Switch-style ``N_r * sum(P_i f_i)``) or loss-free (a router bias added for the choice
  only, moved by ``bias_update_rate`` towards equal load after every training forward).

How inference routes. Top-k over a sequence looks at future tokens, so it cannot decode token by token. The
zoo trains with top-k (``model.train()``) and, by default, routes causally everywhere else
(``inference_routing="threshold"``): after step ``r - 1`` a token continues when ``sigmoid(logit_r) >=
routing_threshold`` (0.5), which is exactly what the auxiliary BCE loss trains the router to predict. Each
token's decision depends only on its own hidden state, so a full forward and a cached decode take the same
decisions. Steps of capacity 1 (step 0 by default) always take every token. ``forward(..., routing="topk")``
forces top-k, and ``route_masks=`` replays given decisions (e.g. those a top-k prefill returned).

KV caching (one :class:`zoo.lm.routing.RoutedKVCache`):

* recursion-wise (default): every application owns a cache slot holding only the tokens active at its step;
  attention at step ``r`` is among the tokens active at ``r`` (also in the full forward, so both agree);
* recursive KV sharing (``kv_sharing=True``): only the first application of each block computes and caches
  keys/values; its later applications attend with their own queries to those (all tokens of recursion 0), so
  the cache has one slot per unique block and later recursions skip their key/value projections.

Relaxed recursion: ``lora_rank > 0`` adds a LoRA delta per application of a shared block on ``lora_targets``
(``q_proj``/``v_proj`` by default, any of the seven projections), and :func:`from_pretrained_dense` converts a
dense (MobileLLM-format) model, initialising the deltas from a truncated SVD of ``W_original - W_shared``.

Differences from the authors' code: routing decodes (threshold rule above; theirs is training-only); the
recursion-wise cache stores per-step token subsets with their sequence indices in one static cache;
non-divisible depths are floored (``(L - 2) // N_r`` shared blocks) instead of resampled by ``linspace``; the
loss-free bias update runs inside ``forward`` in training; the auxiliary losses reach the gradient through
:class:`zoo.lm.routing.AddAuxiliaryLoss`, so an unchanged cross-entropy loop trains the routers.
"""

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.pruning import PruneError, keep_cols, keep_rows
from ..layers.recursion import SHARING_STRATEGIES, recursion_indices, shared_depth, sharing_schedule
from ..lm import (
    AddAuxiliaryLoss,
    BlockRun,
    DecoderBody,
    DecoderConfig,
    DecoderLM,
    DecoderPrunePlan,
    LlamaBlocks,
    LoRA,
    NoLlamaForm,
    PassStart,
    RMSNorm,
    RotaryEmbedding,
    RoutedKVCache,
    Router,
    build_attention_masks,
    extend,
    gather_active,
    layer_forward,
    model_quantization,
    routed_attention_mask,
)
from ..registry import register_model
from ._builder import build_lm
from ._lm_files import write_lm_folder

__all__ = ["MODEL_TYPE", "MoROutput", "RecursiveConfig", "RecursiveLM", "from_pretrained_dense", "save_pretrained"]

# config.json's ``model_type`` / ``architectures`` of a recursive LM folder (transformers' Auto classes read them once
# zoo.export.hf_auto has registered the zoo's classes)
MODEL_TYPE = "zoo_recursive"
HF_ARCHITECTURE = "RecursiveLMForCausalLM"

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# --------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------


@dataclass
class RecursiveConfig(DecoderConfig):
    """A recursive decoder: the dense base (transformers' Llama key names) plus recursion, routing and LoRA.
    ``num_hidden_layers`` is the depth of the dense base model."""

    vocab_size: int = 49152
    bos_token_id: int | None = 0
    eos_token_id: int | None = 0
    # recursion
    num_recursion: int = 1  # 1: the plain (vanilla) stack
    sharing: str = "middle_cycle"
    ln_share: bool = True
    kv_sharing: bool = False
    # Mixture-of-Recursions routing
    mor: str | None = None  # None | "expert" | "token"
    router_type: str = "linear"  # "linear" | "mlp"
    capacity: list[float] | None = None  # expert: fraction of the sequence kept per step; None: (N_r - r) / N_r
    alpha: float | None = None  # router score scale; None: 0.1 (expert), 1.0 (token)
    aux_loss_coeff: float = 0.001  # expert: BCE(router logit, selected)
    routing_threshold: float = 0.5  # expert, causal routing: continue when sigmoid(logit) >= threshold
    inference_routing: str = "threshold"  # expert routing outside training: "threshold" (causal) | "topk"
    balancing: str = "loss"  # token: "loss" | "loss_free"
    balancing_coeff: float = 0.1
    bias_update_rate: float = 1e-3
    # relaxed recursion
    lora_rank: int = 0
    lora_alpha: float | None = None  # None: 2 x rank (scaling 2)
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    positive_ints: ClassVar[tuple[str, ...]] = DecoderConfig.positive_ints + ("num_recursion",)

    def __post_init__(self):
        super().__post_init__()
        if self.sharing not in SHARING_STRATEGIES:
            raise ValueError(f"sharing must be one of {SHARING_STRATEGIES}, got {self.sharing!r}")
        if self.num_recursion > 1:
            shared_depth(self.sharing, self.num_hidden_layers, self.num_recursion)  # raises when too shallow
        if self.mor not in (None, "expert", "token"):
            raise ValueError(f"mor must be None, 'expert' or 'token', got {self.mor!r}")
        if self.mor is not None:
            if self.num_recursion < 2:
                raise ValueError("Mixture-of-Recursions routing needs num_recursion >= 2")
            if not self.sharing.endswith("cycle"):
                raise ValueError(
                    f"routing runs per recursion step, a pass over the shared blocks, which needs "
                    f"sharing='cycle' or 'middle_cycle' (got {self.sharing!r})"
                )
        if self.router_type not in ("linear", "mlp"):
            raise ValueError(f"router_type must be 'linear' or 'mlp', got {self.router_type!r}")
        if self.capacity is not None:
            self.capacity = [float(c) for c in self.capacity]
            if len(self.capacity) != self.num_recursion or not all(0 < c <= 1 for c in self.capacity):
                raise ValueError(f"capacity needs {self.num_recursion} fractions in (0, 1], got {self.capacity}")
        if self.inference_routing not in ("threshold", "topk"):
            raise ValueError(f"inference_routing must be 'threshold' or 'topk', got {self.inference_routing!r}")
        if self.balancing not in ("loss", "loss_free"):
            raise ValueError(f"balancing must be 'loss' or 'loss_free', got {self.balancing!r}")
        if not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise ValueError(f"lora_rank must be an int >= 0, got {self.lora_rank!r}")
        self.lora_targets = list(self.lora_targets)
        bad = sorted(set(self.lora_targets) - set(LORA_TARGETS))
        if bad:
            raise ValueError(f"lora_targets may name only {LORA_TARGETS}, got {bad}")

    # -- derived --------------------------------------------------------------------------------------------------
    @property
    def num_shared_blocks(self) -> int:
        """``B``: blocks that are applied ``num_recursion`` times (0 for the plain stack)."""
        return shared_depth(self.sharing, self.num_hidden_layers, self.num_recursion) if self.num_recursion > 1 else 0

    def schedule(self) -> list[int]:
        """The unique block run at each application."""
        if self.num_recursion == 1:
            return list(range(self.num_hidden_layers))
        return sharing_schedule(self.sharing, self.num_shared_blocks, self.num_recursion)

    def capacities(self) -> list[float]:
        n = self.num_recursion
        return list(self.capacity) if self.capacity is not None else [(n - r) / n for r in range(n)]

    @property
    def router_alpha(self) -> float:
        return self.alpha if self.alpha is not None else (1.0 if self.mor == "token" else 0.1)


def _check_keys(kwargs: dict[str, Any]):
    RecursiveConfig.check_keys(kwargs, "recursive LM")


# --------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------


class MoROutput(NamedTuple):
    logits: torch.Tensor  # (B, T, vocab)
    past_key_values: RoutedKVCache | None
    aux_loss: torch.Tensor | None  # router losses of this forward (training), already weighted
    routing: list[torch.Tensor] | None  # per recursion step: (B, T) bool, tokens active at that step


class _Pass:
    """Per-forward state: sizes, positions, masks, the cache and the keys/values kept for KV sharing."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class _Selection:
    """The active tokens of one recursion step: indices (padding = T), validity, sequence indices, RoPE."""

    def __init__(self, idx: torch.Tensor, valid: torch.Tensor, seq: torch.Tensor, rope):
        self.idx, self.valid, self.seq, self.rope = idx, valid, seq, rope
        self.masks: dict[str, torch.Tensor] = {}


class RecursivePrunePlan(DecoderPrunePlan):
    """zoo.prune on a recursive LM: a shared block is pruned once for all its applications, its per-application
    LoRA deltas with it; the Mixture-of-Recursions routers' inputs follow the hidden channels kept."""

    def block_loras(self, block: int) -> list[nn.ModuleDict]:
        m = self.model
        return [m.lora[str(i)] for i, b in enumerate(m.schedule) if b == block and str(i) in m.lora]

    def ignored(self) -> list[nn.Module]:
        return super().ignored() + [m for r in self.model.routers for m in r.modules() if isinstance(m, nn.Linear)]

    def trace(self, model: nn.Module, ids: torch.Tensor):
        routers = list(model.routers)
        for router in routers:  # scores scale the hidden states by broadcasting, which the graph would read as
            router.__dict__["forward"] = lambda x, net=router.net: net(x).detach()  # channels: see finish()
        try:
            return super().trace(model, ids)
        finally:
            for router in routers:
                del router.__dict__["forward"]

    def start(self) -> None:
        """A few embedding rows: their columns identify the hidden channels that the graph keeps (finish())."""
        self.signature = None
        if len(self.model.routers):
            weight = self.model.get_input_embeddings().weight.detach()
            rows = torch.randperm(weight.shape[0], generator=torch.Generator().manual_seed(0))[:32]
            self.signature = weight[rows].clone(), rows

    def finish(self) -> None:
        """The routers' inputs follow the hidden channels the graph kept (found by matching embedding columns)."""
        if self.signature is None:
            return
        before, rows = self.signature
        after = self.model.get_input_embeddings().weight.detach()[rows]
        if after.shape[1] == before.shape[1]:
            return
        same = (after.T[:, None, :] == before.T[None, :, :]).all(-1)  # (kept, original)
        if not bool((same.sum(1) >= 1).all()):
            raise PruneError("could not match the kept hidden channels for the routers")
        kept = same.float().argmax(1)
        for router in self.model.routers:
            linears = [m for m in router.net.modules() if isinstance(m, nn.Linear)]
            keep_cols(linears[0], kept)
            if len(linears) == 2:  # an "mlp" router is dim -> dim -> scores: its inner width follows the hidden
                keep_rows(linears[0], kept)
                keep_cols(linears[1], kept)


class _RoutedSteps:
    """The recursion steps under Mixture-of-Recursions routing (expert or token choice, see the module doc): which
    tokens each step runs, their gathering into a shorter sequence and the weighted scatter back, and the routers'
    auxiliary losses. Mixed into :class:`RecursiveLM`, whose ``config``, ``routers``, ``steps``, ``rotary`` and
    ``_run_app`` it uses."""

    config: RecursiveConfig
    routers: nn.ModuleList
    steps: list[list[int]]
    rotary: RotaryEmbedding

    def _select(self, active: torch.Tensor, ctx: _Pass, size: int | None = None) -> _Selection | None:
        """The tokens of ``active`` ``(B, T)`` gathered with their sequence indices and RoPE tables (None: none).

        ``size``: how many to gather per row where that is known without reading ``active`` (a top-k's ``k``).
        While ``torch.export`` traces, every step gathers ``T`` slots (the active tokens, then empty ones that no
        mask lets any token see and whose results land on the dropped extra row): the number of active tokens is
        data, and the program must not depend on it. The active tokens' values are the same either way."""
        if size is None and torch.compiler.is_exporting():
            size = ctx.T
        idx, valid = gather_active(active, size)
        if idx.shape[1] == 0:
            return None
        seq = torch.where(valid, extend(ctx.seq.expand(ctx.B, -1)).gather(1, idx), torch.full_like(idx, -1))
        pos = extend(ctx.rope_pos).gather(1, idx)
        return _Selection(idx, valid, seq, self.rotary(pos, ctx.rope[0].dtype))

    def _run_step(self, r: int, x: torch.Tensor, ctx: _Pass, sel: _Selection | None) -> torch.Tensor:
        for i in self.steps[r]:
            x = self._run_app(i, x, ctx, sel)
        return x

    def _expert_steps(
        self, x: torch.Tensor, ctx: _Pass, mode: str, route_masks: Sequence[torch.Tensor] | None, record: list
    ) -> torch.Tensor:
        """Expert choice: per step, its router keeps the top-k (``mode="topk"``) or the above-threshold tokens of
        those still active, and ``x[sel] += score * blocks(x[sel])``."""
        c = self.config
        T = ctx.T
        caps = c.capacities()
        active = None  # None: every token
        kept = None  # tokens per row the last step kept, where every row kept as many (top-k)
        for r in range(c.num_recursion):
            logit = self.routers[r](x).squeeze(-1)  # (B, T)
            prob = torch.sigmoid(logit)
            score = c.router_alpha * prob
            candidates = active
            if caps[r] >= 1.0 and candidates is None:
                chosen = None
            elif route_masks is not None:
                chosen = route_masks[r].to(x.device).bool()
                chosen = chosen if candidates is None else chosen & candidates
            elif mode == "topk":
                # every row keeps exactly k tokens at a top-k step, so what is left is known without reading it
                avail = T if candidates is None else (kept if kept is not None else int(candidates.sum(1).min()))
                if torch.compiler.is_exporting():
                    raise ValueError(
                        "top-k routing (inference_routing='topk', or a model in training mode) cannot be exported: "
                        "each step keeps int(capacity * tokens) tokens, a size torch.export cannot bound for every "
                        "length; export the model in eval mode with inference_routing='threshold' (the causal rule "
                        "its routers are trained to predict)"
                    )
                k = min(max(1, int(caps[r] * T)), avail)
                masked = score if candidates is None else score.masked_fill(~candidates, float("-inf"))
                top = masked.topk(k, dim=1, sorted=False).indices
                chosen = torch.zeros_like(logit, dtype=torch.bool)
                chosen = chosen.scatter(1, top, torch.ones_like(top, dtype=torch.bool))
            else:
                chosen = prob >= c.routing_threshold
                chosen = chosen if candidates is None else chosen & candidates
            if self.training and c.aux_loss_coeff > 0:
                target = torch.ones_like(logit) if chosen is None else chosen.to(logit.dtype)
                if candidates is None:
                    bce = F.binary_cross_entropy_with_logits(logit, target)
                else:
                    bce = F.binary_cross_entropy_with_logits(logit[candidates], target[candidates])
                ctx.aux.append(c.aux_loss_coeff * bce)
            record.append(torch.ones_like(logit, dtype=torch.bool) if chosen is None else chosen)
            k_chosen = k if mode == "topk" and route_masks is None and chosen is not None else None
            if chosen is None:
                x = x + score.unsqueeze(-1) * self._run_step(r, x, ctx, None)
            else:
                sel = self._select(chosen, ctx, k_chosen)
                if sel is not None:
                    index = sel.idx.unsqueeze(-1).expand(-1, -1, x.shape[-1])
                    x_ext = extend(x)
                    out = self._run_step(r, x_ext.gather(1, index), ctx, sel)
                    weight = extend(score).gather(1, sel.idx) * sel.valid
                    x = x_ext.scatter_add(1, index, out * weight.unsqueeze(-1).to(out.dtype))[:, :T]
            active, kept = chosen, k_chosen
        return x

    def _token_steps(
        self, x: torch.Tensor, ctx: _Pass, route_masks: Sequence[torch.Tensor] | None, record: list
    ) -> torch.Tensor:
        """Token choice: one router picks each token's depth ``d``; the token runs ``d + 1`` steps and leaves with
        ``x + p_d * h_d``."""
        c = self.config
        n, T = c.num_recursion, ctx.T
        logits = self.routers[0](x)  # (B, T, N_r)
        probs = logits.softmax(dim=-1) * c.router_alpha
        if route_masks is not None:
            depth = torch.stack([m.to(x.device).bool() for m in route_masks], 0).sum(0) - 1
            depth = depth.clamp(min=0)
        else:
            choice = probs + self.router_bias if c.balancing == "loss_free" else probs
            depth = choice.argmax(dim=-1)  # (B, T): the token runs depth + 1 steps
        weight = probs.gather(-1, depth.unsqueeze(-1)).squeeze(-1)
        if self.training and route_masks is None:
            load = torch.bincount(depth.flatten(), minlength=n).to(probs.dtype) / depth.numel()
            if c.balancing == "loss":
                ctx.aux.append(c.balancing_coeff * n * (probs.mean(dim=(0, 1)) * load).sum())
            else:
                with torch.no_grad():
                    self.router_bias.add_(c.bias_update_rate * torch.sign(1.0 / n - load))
        out_x = x
        cur = x
        D = x.shape[-1]
        for r in range(n):
            active = depth >= r
            record.append(active)
            finish = (depth == r).to(x.dtype) * weight
            if r == 0:  # every token runs the first step
                h = self._run_step(r, cur, ctx, None)
                out_x = out_x + finish.unsqueeze(-1) * h
                cur = h
                continue
            sel = self._select(active, ctx)
            if sel is None:
                break
            index = sel.idx.unsqueeze(-1).expand(-1, -1, D)
            cur_ext = extend(cur)
            h = self._run_step(r, cur_ext.gather(1, index), ctx, sel)
            w = extend(finish).gather(1, sel.idx) * sel.valid
            out_x = extend(out_x).scatter_add(1, index, h * w.unsqueeze(-1))[:, :T]
            cur = cur_ext.scatter(1, index, h)[:, :T]  # padded rows land on the dropped extra row
        return out_x


class RecursiveLM(_RoutedSteps, DecoderLM):
    """A recursive (weight-shared) decoder with optional Mixture-of-Recursions routing and per-loop LoRA.

    ``model(input_ids)`` -> logits ``(B, T, vocab)``; :meth:`generate` decodes with a :class:`RoutedKVCache`.
    Args: a :class:`RecursiveConfig`, or its fields as keyword arguments.
    """

    cache_class = RoutedKVCache
    prune_plan = RecursivePrunePlan
    config_class = RecursiveConfig
    model_type = MODEL_TYPE
    hf_architecture = HF_ARCHITECTURE

    def __init__(self, config: RecursiveConfig | None = None, **kwargs):
        super().__init__()
        self.config = c = RecursiveConfig.resolve(config, kwargs, "recursive LM")
        self.schedule = c.schedule()
        self.recursion = recursion_indices(self.schedule)
        num_blocks = max(self.schedule) + 1
        self.model = DecoderBody(c, [None] * num_blocks)
        self.lm_head = None if c.tie_word_embeddings else nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.rotary = RotaryEmbedding(c.head_dim, c.rope_theta, initial_length=min(c.max_position_embeddings, 4096))
        uses = [self.schedule.count(b) for b in range(num_blocks)]
        self.shared = [uses[b] > 1 for b in self.schedule]  # per application: its block is applied more than once

        # recursion steps (cycle-type sharing): prefix applications, N_r passes over the shared blocks, suffix
        A, B, n = len(self.schedule), c.num_shared_blocks, c.num_recursion
        first = 1 if (n > 1 and c.sharing.startswith("middle")) else 0
        if n > 1 and c.sharing.endswith("cycle"):
            self.prefix = list(range(first))
            self.steps = [list(range(first + r * B, first + (r + 1) * B)) for r in range(n)]
            self.suffix = list(range(first + n * B, A))
        else:
            self.prefix, self.steps, self.suffix = list(range(A)), [], []

        # cache slots: one per application, or (KV sharing) one per unique block, read by its later applications
        self.reads_shared = [c.kv_sharing and r > 0 for r in self.recursion]
        if c.kv_sharing:
            self.slot_of = list(self.schedule)
            self.num_slots = num_blocks
        else:
            self.slot_of = list(range(A))
            self.num_slots = A
        self.feeds_readers = {b for b, r in zip(self.schedule, self.reads_shared) if r}

        # per-application norms (ln_share=False) and LoRA deltas (relaxed recursion)
        self.app_norms = nn.ModuleDict(
            {
                str(i): nn.ModuleList([RMSNorm(c.hidden_size, c.rms_norm_eps), RMSNorm(c.hidden_size, c.rms_norm_eps)])
                for i, r in enumerate(self.recursion)
                if r > 0 and not c.ln_share
            }
        )
        self.lora = self._lora_deltas(c)

        # routers
        self.routers = nn.ModuleList()
        if c.mor == "expert":
            self.routers.extend(Router(c.hidden_size, 1, c.router_type) for _ in range(n))
        elif c.mor == "token":
            self.routers.append(Router(c.hidden_size, n, c.router_type))
            if c.balancing == "loss_free":
                self.register_buffer("router_bias", torch.zeros(n))
        self.grad_checkpointing = False
        self.pretrained_cfg: dict[str, Any] = {}
        self.aux_loss: torch.Tensor | None = None
        self.init_weights()

    def llama_blocks(self) -> LlamaBlocks:
        """The model as llama.cpp runs it (GGUF): every application of a block, in schedule order, with its own
        norms (``ln_share=False``) and its LoRA deltas merged. Routing and recursive KV sharing have no such form."""
        c = self.config
        if c.mor is not None:
            raise NoLlamaForm(
                f"{c.mor}-choice Mixture-of-Recursions routing cannot be written as GGUF: its routers decide per "
                f"token, at run time, which recursion steps a token runs, and llama.cpp runs every block on every "
                f"token (a token that leaves early would have to skip blocks and their cache)"
            )
        if c.kv_sharing:
            raise NoLlamaForm(
                "recursive KV sharing cannot be written as GGUF: later applications of a block attend to the keys "
                "and values of its first application, and every llama.cpp block computes and caches its own"
            )
        runs = [
            BlockRun(
                index,
                lora=self.lora[str(i)] if str(i) in self.lora else None,
                norms=tuple(self.app_norms[str(i)]) if str(i) in self.app_norms else None,
            )
            for i, index in enumerate(self.schedule)
        ]
        notes = []
        if len(set(self.schedule)) < len(self.schedule):
            notes.append(
                f"recursion unrolled: {max(self.schedule) + 1} shared blocks written as {len(runs)} applications"
                + (" with their LoRA deltas merged" if len(self.lora) else "")
            )
        return LlamaBlocks(runs, notes)

    def _lora_deltas(self, c: RecursiveConfig) -> nn.ModuleDict:
        """Per application of a shared block: LoRA deltas on ``c.lora_targets`` (relaxed recursion)."""
        lora = nn.ModuleDict()
        if c.lora_rank <= 0:
            return lora
        block = self.model.layers[0]
        attn_targets = ("q_proj", "k_proj", "v_proj", "o_proj")
        dims = {}
        for t in c.lora_targets:
            m = getattr(block.self_attn if t.endswith(attn_targets) else block.mlp, t)
            dims[t] = (m.in_features, m.out_features)
        for i in range(len(self.schedule)):
            if self.shared[i]:
                lora[str(i)] = nn.ModuleDict({t: LoRA(*dims[t], c.lora_rank, c.lora_alpha) for t in c.lora_targets})
        return lora

    # -- weights ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self):
        """Llama's init (N(0, initializer_range) linear/embedding weights, norms 1), zero LoRA deltas."""
        super().init_weights()
        for m in self.modules():
            if isinstance(m, (LoRA, Router)):
                m.reset_parameters()

    # -- cache --------------------------------------------------------------------------------------------------
    def new_cache(
        self,
        batch_size: int,
        max_length: int,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> RoutedKVCache:
        """A static cache for ``batch_size`` sequences of up to ``max_length`` tokens (see the module doc).

        Expert-choice routing: a routed step's slots start at that step's capacity share of ``max_length`` (plus
        16 entries) and grow when the routing keeps more tokens than that (threshold routing at inference may)."""
        p = self.model.embed_tokens.weight
        return RoutedKVCache(
            self.num_slots,
            batch_size,
            self.config.num_key_value_heads,
            max_length,
            self.config.head_dim,
            dtype or p.dtype,
            device or p.device,
            capacities=self._slot_capacities(max_length),
        )

    @property
    def num_cache_slots(self) -> int:
        return self.num_slots

    def _slot_capacities(self, max_length: int) -> list[int | None]:
        c = self.config
        if c.mor != "expert" or c.kv_sharing:
            return [None] * self.num_slots
        caps = c.capacities()
        share: dict[int, float] = {}
        for r, apps in enumerate(self.steps):
            for i in apps:
                share[self.slot_of[i]] = max(share.get(self.slot_of[i], 0.0), caps[r])
        return [
            None if share.get(s, 1.0) >= 1.0 else min(max_length, math.ceil(share[s] * max_length) + 16)
            for s in range(self.num_slots)
        ]

    def kv_cache_bytes_per_token(self, dtype: torch.dtype | None = None, expected: bool = False) -> float:
        """Bytes of keys/values per token and sequence: allocated (every slot), or ``expected`` (routed slots
        scaled by their step's capacity)."""
        size = torch.empty((), dtype=dtype or self.model.embed_tokens.weight.dtype).element_size()
        per_slot = 2 * self.config.num_key_value_heads * self.config.head_dim * size
        if not expected or self.config.mor != "expert" or self.config.kv_sharing:
            return per_slot * self.num_slots
        caps = self.config.capacities()
        frac = {i: caps[r] for r, apps in enumerate(self.steps) for i in apps}
        return per_slot * sum(frac.get(i, 1.0) for i in range(len(self.schedule)))

    # -- forward ------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: RoutedKVCache | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        routing: str | None = None,
        route_masks: Sequence[torch.Tensor] | None = None,
        return_routing: bool = False,
    ) -> torch.Tensor | MoROutput:
        """Logits of every position (or the last ``logits_to_keep``).

        Args:
            input_ids: ``(B, T)`` token ids.
            attention_mask: ``(B, past + T)``, 1 for real tokens, 0 for (left) padding, as in transformers.
            position_ids: ``(B, T)`` RoPE positions; default ``past, ..., past + T - 1``.
            past_key_values: a :class:`RoutedKVCache` (``model.new_cache``), appended to.
            use_cache: return a :class:`MoROutput`; without ``past_key_values`` a fresh cache is made.
            routing: expert-choice rule, ``"topk"`` or ``"threshold"``; default: top-k in training, else
                ``config.inference_routing``.
            route_masks: per recursion step, ``(B, T)`` bool masks of the tokens to run (replaces the routers'
                choice; nested masks for expert-choice, ``mask[r] = depth >= r`` for token-choice).
            return_routing: return a :class:`MoROutput` with the routing taken.
        """
        if route_masks is not None and len(route_masks) != len(self.steps):
            raise ValueError(f"route_masks needs one (B, T) mask per recursion step ({len(self.steps)})")
        if routing not in (None, "topk", "threshold"):
            raise ValueError(f"routing must be None, 'topk' or 'threshold', got {routing!r}")
        c = self.config
        start = self.start_pass(input_ids, attention_mask, position_ids, past_key_values, use_cache)
        ctx = self._pass_context(start, input_ids.shape[1])
        mode = routing or ("topk" if self.training else c.inference_routing)
        record: list[torch.Tensor] = []
        x = self._apply_schedule(start.x, ctx, mode, route_masks, record)
        cache = start.cache
        if cache is not None:
            cache.seen = start.past + ctx.T
        logits = self.finish_pass(x, logits_to_keep)
        aux = torch.stack(ctx.aux).sum() if ctx.aux else None
        self.aux_loss = None if aux is None else aux.detach()
        if aux is not None and aux.requires_grad:
            logits = AddAuxiliaryLoss.apply(logits, aux)
        if use_cache or past_key_values is not None or return_routing:
            return MoROutput(logits, cache, aux, record if c.mor is not None else None)
        return logits

    def _pass_context(self, start: PassStart, T: int) -> _Pass:
        """The state one forward's applications share: cache, rotary tables, positions, mask."""
        x, past, device = start.x, start.past, start.x.device
        B = x.shape[0]
        rope_pos = start.positions
        if rope_pos is None:
            rope_pos = torch.arange(past, past + T, device=device).expand(B, T)
        mask, causal = build_attention_masks(past, T, [None], start.padding, device).get(None)
        return _Pass(
            B=B,
            T=T,
            past=past,
            cache=start.cache,
            rope=start.rope,
            rope_pos=rope_pos,
            mask=mask,
            causal=causal,
            padding=None if start.padding is None else start.padding.to(device),
            seq=torch.arange(past, past + T, device=device),
            kv_store={},
            aux=[],
        )

    def _apply_schedule(self, x: torch.Tensor, ctx: _Pass, mode: str, route_masks, record) -> torch.Tensor:
        """The prefix applications, the recursion steps (routed by expert or token choice, or all tokens), the
        suffix."""
        for i in self.prefix:
            x = self._run_app(i, x, ctx, None)
        if self.config.mor == "expert":
            x = self._expert_steps(x, ctx, mode, route_masks, record)
        elif self.config.mor == "token":
            x = self._token_steps(x, ctx, route_masks, record)
        else:
            for apps in self.steps:
                for i in apps:
                    x = self._run_app(i, x, ctx, None)
        for i in self.suffix:
            x = self._run_app(i, x, ctx, None)
        return x

    # -- one application ----------------------------------------------------------------------------------------
    def _run_app(self, i: int, x: torch.Tensor, ctx: _Pass, sel: _Selection | None) -> torch.Tensor:
        if not self.checkpoints(i, ctx.cache):
            return self._apply_inner(i, x, ctx, sel)
        # checkpointed: every tensor that carries a gradient in or out is an argument or a result of the
        # checkpointed function (the shared keys/values a reader attends to, those a writer keeps for its readers),
        # so that any checkpoint function (reentrant or not) passes their gradients
        slot = self.slot_of[i]
        shared = ctx.kv_store[slot] if self.reads_shared[i] else None
        keeps = not self.reads_shared[i] and self.schedule[i] in self.feeds_readers

        def run(x: torch.Tensor, *kv: torch.Tensor):
            if shared is not None:
                ctx.kv_store[slot] = (*kv, shared[2])
            out = self._apply_inner(i, x, ctx, sel)
            return (out, *ctx.kv_store[slot][:2]) if keeps else out

        out = self.checkpoint_fn(run, x, *(shared[:2] if shared is not None else ()))
        if keeps:
            out, k, v = out
            ctx.kv_store[slot] = (k, v, ctx.kv_store[slot][2])
        return out

    def _apply_inner(self, i: int, x: torch.Tensor, ctx: _Pass, sel: _Selection | None) -> torch.Tensor:
        """Application ``i`` on every token (``sel`` None) or on the gathered tokens ``x`` of ``sel``."""
        block = self.schedule[i]
        layer = self.model.layers[block]
        slot = self.slot_of[i]
        cache = ctx.cache
        lora = self.lora[str(i)] if str(i) in self.lora else None
        norms = tuple(self.app_norms[str(i)]) if str(i) in self.app_norms else None
        rope = ctx.rope if sel is None else sel.rope
        if self.reads_shared[i]:  # recursive KV sharing: attend to the first application's keys/values
            if cache is not None:
                (k, v), key_seq = cache.cached(slot), cache.positions(slot)
                if slot in ctx.kv_store:  # grad mode: the writer's own keys/values, which carry its graph
                    k, v = ctx.kv_store[slot][:2]
                full = cache.is_full(slot)
            else:
                k, v, key_seq = ctx.kv_store[slot]
                full = key_seq is None
            if sel is None and full:
                mask, causal = ctx.mask, ctx.causal
            else:
                mask, causal = self._mask(ctx, sel, "shared", key_seq), False
            return layer_forward(layer, x, rope, mask=mask, is_causal=causal, shared_kv=(k, v), lora=lora, norms=norms)
        keep_kv = block in self.feeds_readers and (cache is None or torch.is_grad_enabled())
        if sel is None:
            mask, causal, positions = ctx.mask, ctx.causal, None
        else:
            old = cache.positions(slot) if cache is not None else None
            mask, causal, positions = self._mask(ctx, sel, "own", old), False, sel.seq
        out = layer_forward(
            layer,
            x,
            rope,
            cache=cache,
            slot=slot,
            mask=mask,
            is_causal=causal,
            positions=positions,
            lora=lora,
            norms=norms,
            return_kv=keep_kv,
        )
        if keep_kv:
            out, (k, v) = out
            ctx.kv_store[slot] = (k, v, None if sel is None else sel.seq)
        return out

    def _mask(self, ctx: _Pass, sel: _Selection | None, kind: str, key_seq: torch.Tensor | None):
        """Mask of ``sel``'s queries (all tokens when None) against cached/shared keys ``key_seq`` (+ own keys).

        Every application of one step sees the same key history, so the mask is made once per step and kind.
        """
        if sel is not None and kind in sel.masks:
            return sel.masks[kind]
        q = ctx.seq.expand(ctx.B, -1) if sel is None else sel.seq
        if kind == "own":  # keys: what the slot holds, then this step's own tokens
            keys = sel.seq if key_seq is None else torch.cat([key_seq, sel.seq], dim=1)
        else:
            keys = key_seq if key_seq is not None else torch.arange(ctx.T, device=q.device).expand(ctx.B, -1)
        mask = routed_attention_mask(q, keys, ctx.padding)
        if sel is not None:
            sel.masks[kind] = mask
        return mask


# --------------------------------------------------------------------------------------------------------------
# Conversion of a dense model (relaxed recursion)
# --------------------------------------------------------------------------------------------------------------

_PROJ_OWNER = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}


@torch.no_grad()
def _init_blocks(rec: RecursiveLM, originals: list, orig: list[int], init: str, ln_share: bool) -> None:
    """Unique blocks copy their original layer; shared ones are initialised by ``init`` (see
    :func:`from_pretrained_dense`)."""
    num_blocks = len(rec.model.layers)
    shared_blocks = [b for b in range(num_blocks) if rec.schedule.count(b) > 1]
    replaced = sorted({orig[i] for i, s in enumerate(rec.shared) if s})  # original layers the shared blocks stand for
    picks = torch.linspace(0, len(replaced) - 1, len(shared_blocks)).round().long().tolist() if shared_blocks else []
    for b in range(num_blocks):
        apps = [i for i, s in enumerate(rec.schedule) if s == b]
        layer = rec.model.layers[b]
        if len(apps) == 1:
            layer.load_state_dict(originals[orig[apps[0]]].state_dict())
            continue
        j = shared_blocks.index(b)
        if init == "average":
            group = [originals[orig[i]].state_dict() for i in apps]
            sd = {k: torch.stack([g[k] for g in group]).mean(0) for k in group[0]}
        else:
            sd = originals[replaced[picks[j] if init == "stepwise" else min(j, len(replaced) - 1)]].state_dict()
        if not ln_share:  # each application keeps its original norms; the block's are its first application's
            first = originals[orig[apps[0]]]
            sd = dict(sd)
            sd["input_layernorm.weight"] = first.input_layernorm.weight
            sd["post_attention_layernorm.weight"] = first.post_attention_layernorm.weight
        layer.load_state_dict(sd)


@torch.no_grad()
def _init_norms_and_lora(rec: RecursiveLM, originals: list, orig: list[int]) -> None:
    """Per-application norms copy the original layer's; LoRA deltas start at the SVD of original - shared."""
    for i, norms in rec.app_norms.items():
        o = originals[orig[int(i)]]
        norms[0].weight.copy_(o.input_layernorm.weight)
        norms[1].weight.copy_(o.post_attention_layernorm.weight)
    for i, deltas in rec.lora.items():
        o = originals[orig[int(i)]]
        block = rec.model.layers[rec.schedule[int(i)]]
        for target, lora in deltas.items():
            w_orig = getattr(getattr(o, _PROJ_OWNER[target]), target).weight
            w_shared = getattr(getattr(block, _PROJ_OWNER[target]), target).weight
            lora.init_from_delta(w_orig - w_shared)


# the dense model's config fields a converted recursive model takes over
_DENSE_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "tie_word_embeddings",
    "initializer_range",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)


def _dense_parts(model: nn.Module) -> tuple[Any, nn.Module]:
    """(config, body) of a dense decoder that can be converted, else a TypeError/ValueError saying why not."""
    src = getattr(model, "config", None)
    body = getattr(model, "model", None)
    if src is None or body is None or not hasattr(body, "layers"):
        raise TypeError("from_pretrained_dense needs a zoo MobileLLM-style model (config + model.layers)")
    if hasattr(src, "layer_windows") and any(w is not None for w in src.layer_windows()):
        raise ValueError("sliding-window layers cannot be converted (the recursive model uses global attention)")
    if getattr(src, "attention_bias", False) or getattr(src, "mlp_bias", False):
        raise ValueError("layers with biases are not supported by the conversion (LoRA deltas cover weights only)")
    return src, body


@torch.no_grad()
def from_pretrained_dense(
    model: nn.Module,
    num_recursion: int,
    sharing: str = "middle_cycle",
    init: str = "stepwise",
    lora_rank: int = 0,
    lora_targets: Sequence[str] = ("q_proj", "v_proj"),
    lora_alpha: float | None = None,
    ln_share: bool = True,
    **overrides,
) -> RecursiveLM:
    """A :class:`RecursiveLM` initialised from a dense decoder (a zoo :class:`~zoo.models.mobilellm.MobileLLM`).

    The dense model's layer applications (its schedule: a MobileLLM-LS model counts each layer twice) are the
    original stack of depth ``L``; the recursive model has ``num_hidden_layers = L``. When it is shallower
    (non-divisible depths), application ``i`` stands for original layer ``round(i (L - 1) / (A - 1))``.
    Unique blocks copy their layer. A shared block is initialised by ``init``:

    * ``"stepwise"``: the layers picked at even steps (``linspace``) over the original layers it replaces;
    * ``"average"``: the mean of the original layers of all its applications;
    * ``"lower"``: the ``j``-th of the replaced original layers for the ``j``-th shared block.

    ``lora_rank > 0`` adds per-application LoRA deltas on ``lora_targets``, set to the truncated SVD of
    ``W_original - W_shared`` (exact at full rank, e.g. ``lora_rank=10**9``). With ``ln_share=False`` every
    application keeps its original norms, so full-rank LoRA on all seven projections reproduces the dense model.
    ``overrides`` are further :class:`RecursiveConfig` fields (e.g. ``mor="expert"``; routers start fresh).
    """
    if init not in ("stepwise", "average", "lower"):
        raise ValueError(f"init must be 'stepwise', 'average' or 'lower', got {init!r}")
    src, body = _dense_parts(model)
    schedule = list(getattr(model, "schedule", range(len(body.layers))))
    originals = [body.layers[b] for b in schedule]
    L = len(originals)
    kwargs = {k: getattr(src, k) for k in _DENSE_KEYS}
    kwargs.update(
        num_hidden_layers=L,
        num_recursion=num_recursion,
        sharing=sharing,
        ln_share=ln_share,
        lora_rank=lora_rank,
        lora_targets=list(lora_targets),
        lora_alpha=lora_alpha,
    )
    _check_keys(overrides)
    kwargs.update(overrides)
    ref = next(model.parameters())
    rec = RecursiveLM(RecursiveConfig(**kwargs)).to(device=ref.device, dtype=ref.dtype)
    A = len(rec.schedule)
    orig = list(range(A)) if A == L else [round(i * (L - 1) / max(A - 1, 1)) for i in range(A)]

    rec.model.embed_tokens.weight.copy_(body.embed_tokens.weight)
    rec.model.norm.weight.copy_(body.norm.weight)
    if rec.lm_head is not None:
        rec.lm_head.weight.copy_(model.lm_head.weight)

    _init_blocks(rec, originals, orig, init, ln_share)
    _init_norms_and_lora(rec, originals, orig)
    rec.pretrained_cfg = {
        "architecture": "recursive",
        "converted_from": (getattr(model, "pretrained_cfg", None) or {}).get("architecture"),
        "init": init,
    }
    return rec.eval() if not model.training else rec


# what save_pretrained's format may be (zoo.publish checks it before writing a publishable folder)
SAVE_FORMATS = ("auto", "zoo")


def save_pretrained(
    model: RecursiveLM, out_dir: str | os.PathLike, format: str = "auto", model_name: str | None = None
) -> Path:
    """Write ``model.safetensors``, ``generation_config.json`` + ``config.json`` (``model_type`` :data:`MODEL_TYPE`, the config's fields and
    ``architecture``, the registry name; a quantized model's ``quantization``) to ``out_dir``. The zoo's format is
    the only one (``format``: ``"auto"`` or ``"zoo"``): transformers has no model that computes recursion."""
    if format not in SAVE_FORMATS:
        raise ValueError(f"format must be 'auto' or 'zoo' for a recursive LM (the zoo's format), got {format!r}")
    name = model_name or (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or "recursive"
    data = {
        "architectures": [HF_ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "architecture": name,
        **model.config.to_dict(),
    }
    return write_lm_folder(model, out_dir, data, {"architecture": name}, model_quantization(model))


# --------------------------------------------------------------------------------------------------------------
# Pretrained configs and registered models
# --------------------------------------------------------------------------------------------------------------

FAMILY = dict(name="recursive", task="text-generation", model_class=RecursiveLM)

_PAPER = dict(
    paper_name="Mixture-of-Recursions: Learning Dynamic Recursive Depths for Adaptive Token-Level Computation",
    paper_ids="arXiv:2507.10524",
    origin_url="https://github.com/raymin0223/mixture_of_recursions",
    license="apache-2.0",
    context_length=2048,
    tokenizer="SmolLM tokenizer (49,152)",
    notes=(
        "no released weights on the Hub (the authors share checkpoints elsewhere); trained from scratch "
        "or converted with from_pretrained_dense",
    ),
)

# SmolLM shapes (vocab 49,152, tied): layers, hidden, heads, kv heads, ffn
SHAPES = {
    "135m": dict(
        num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536
    ),
    "360m": dict(
        num_hidden_layers=32, hidden_size=960, num_attention_heads=15, num_key_value_heads=5, intermediate_size=2560
    ),
    "1.7b": dict(
        num_hidden_layers=24, hidden_size=2048, num_attention_heads=32, num_key_value_heads=32, intermediate_size=8192
    ),
}
KINDS = {
    "mor": dict(num_recursion=3, sharing="middle_cycle", mor="expert"),  # the paper's default MoR
    "recursive": dict(num_recursion=3, sharing="middle_cycle"),  # recursive baseline without routing
    "vanilla": dict(num_recursion=1),  # the dense SmolLM-shaped baseline
}
ARCHS: dict[str, dict[str, Any]] = {
    f"{kind}_{size}": {**shape, **extra} for kind, extra in KINDS.items() for size, shape in SHAPES.items()
}

default_cfgs: dict[str, dict[str, Any]] = {name: dict(_PAPER) for name in ARCHS}


def _count(name: str) -> int:
    """Exact parameters of a registered default (tied embeddings and shared blocks once), from the shapes."""
    a = {**RecursiveConfig().to_dict(), **ARCHS[name]}
    c = RecursiveConfig(**{k: v for k, v in a.items() if k != "head_dim"})
    d, f, hd = c.hidden_size, c.intermediate_size, c.head_dim
    layer = d * hd * (2 * c.num_attention_heads + 2 * c.num_key_value_heads) + 3 * d * f + 2 * d
    blocks = max(c.schedule()) + 1
    routers = d * c.num_recursion if c.mor == "expert" else 0
    return c.vocab_size * d + blocks * layer + d + routers


reference_figures: dict[str, dict[str, Any]] = {
    name: dict(params=_count(name), macs=None, gmacs=None, top1=None) for name in ARCHS
}


# the builders: SmolLM shapes by name (ARCHS); recursion, sharing and routing are overridable as kwargs
@register_model
def mor_135m(pretrained=False, **kwargs):
    return build_lm(RecursiveLM, ARCHS, "mor_135m", pretrained, **kwargs)


@register_model
def mor_360m(pretrained=False, **kwargs):
    return build_lm(RecursiveLM, ARCHS, "mor_360m", pretrained, **kwargs)


@register_model(name="mor_1.7b")
def mor_1_7b(pretrained=False, **kwargs):
    return build_lm(RecursiveLM, ARCHS, "mor_1.7b", pretrained, **kwargs)


@register_model
def recursive_135m(pretrained=False, **kwargs):
    return build_lm(RecursiveLM, ARCHS, "recursive_135m", pretrained, **kwargs)


@register_model
def recursive_360m(pretrained=False, **kwargs):
    return build_lm(RecursiveLM, ARCHS, "recursive_360m", pretrained, **kwargs)


@register_model(name="recursive_1.7b")
def recursive_1_7b(pretrained=False, **kwargs):
    return build_lm(RecursiveLM, ARCHS, "recursive_1.7b", pretrained, **kwargs)


@register_model
def vanilla_135m(pretrained=False, **kwargs):
    return build_lm(RecursiveLM, ARCHS, "vanilla_135m", pretrained, **kwargs)


@register_model
def vanilla_360m(pretrained=False, **kwargs):
    return build_lm(RecursiveLM, ARCHS, "vanilla_360m", pretrained, **kwargs)


@register_model(name="vanilla_1.7b")
def vanilla_1_7b(pretrained=False, **kwargs):
    return build_lm(RecursiveLM, ARCHS, "vanilla_1.7b", pretrained, **kwargs)
