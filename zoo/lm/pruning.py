"""The pruning plan of the Llama-shaped decoders (:class:`~zoo.layers.pruning.PrunePlan`): the hidden size
(embeddings, tied or not, stay tied), whole KV groups and the MLP width, the same in every layer, so that the result
is still a plain Llama-shaped config that ``transformers`` can load. Families subclass it where they hold more
(the recursive LMs' per-application LoRA deltas and routers)."""

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..layers.pruning import PruneError, PrunePlan, keep_cols, keep_rows, kept_count, score_units, tag_grad
from .blocks import GroupedQueryAttention

__all__ = ["DecoderPrunePlan", "gqa_groups"]


def gqa_groups(
    attn: GroupedQueryAttention, keep_groups: int, importance: str, gen, loras: Sequence[nn.ModuleDict] = ()
) -> None:
    """Keep ``keep_groups`` whole KV groups (the KV head and the query heads that read it) of one layer, and the
    same rows and columns of the LoRA deltas ``loras`` added to its projections."""
    kv, h, d = attn.num_kv_heads, attn.num_heads, attn.head_dim
    rep = h // kv
    if keep_groups == kv:
        return
    parts = []
    for proj, heads in ((attn.q_proj, h), (attn.k_proj, kv), (attn.v_proj, kv)):
        w = proj.weight.reshape(kv, heads // kv * d, -1)  # (kv groups, rows of a group, in)
        tag_grad(w, proj.weight, lambda g, heads=heads: g.reshape(kv, heads // kv * d, -1))
        parts.append(w)
    wo = attn.o_proj.weight.reshape(attn.o_proj.out_features, kv, rep * d).transpose(0, 1)  # (kv, out, rep * d)
    tag_grad(wo, attn.o_proj.weight, lambda g: g.reshape(attn.o_proj.out_features, kv, rep * d).transpose(0, 1))
    parts.append(wo)
    groups = score_units(parts, importance, gen).topk(keep_groups).indices.sort().values
    q_rows = (groups[:, None] * rep * d + torch.arange(rep * d)).reshape(-1)
    kv_rows = (groups[:, None] * d + torch.arange(d)).reshape(-1)
    keep_rows(attn.q_proj, q_rows)
    keep_rows(attn.k_proj, kv_rows)
    keep_rows(attn.v_proj, kv_rows)
    keep_cols(attn.o_proj, q_rows)
    attn.num_heads, attn.num_kv_heads = keep_groups * rep, keep_groups
    for deltas in loras:  # the per-application LoRA deltas of a shared block follow its heads
        for name, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
            if name in deltas:
                deltas[name].lora_B = nn.Parameter(deltas[name].lora_B.data[rows].clone())
        if "o_proj" in deltas:
            deltas["o_proj"].lora_A = nn.Parameter(deltas["o_proj"].lora_A.data[:, q_rows].clone())


class DecoderPrunePlan(PrunePlan):
    """A :class:`~zoo.lm.decoder.DecoderLM` with ``model.layers`` of Llama blocks (``self_attn``: grouped-query
    attention, ``mlp``: gated) and ``lm_head`` (None when tied)."""

    def attention(self) -> list[GroupedQueryAttention]:
        return [m for m in self.model.modules() if isinstance(m, GroupedQueryAttention)]

    def ignored(self) -> list[nn.Module]:
        model = self.model
        keep = [model.lm_head] if isinstance(getattr(model, "lm_head", None), nn.Module) else []
        for attn in self.attention():  # heads go whole, by the plan, never channel by channel
            keep += [attn.q_proj, attn.k_proj, attn.v_proj]
        return keep

    def block_loras(self, block: int) -> list[nn.ModuleDict]:
        """The LoRA deltas added to layer ``block``'s projections (a shared block: one per application)."""
        return []

    def heads(self, ratio: float, importance: str, generator: torch.Generator, kept: set[int]) -> None:
        layers = self.model.model.layers
        skipped = [id(layer.self_attn.q_proj) in kept for layer in layers]
        if any(skipped):
            if not all(skipped):
                raise PruneError(
                    "ignore= holds the attention of some layers only: a language model keeps one head count for "
                    "every layer, so ignore every layer's attention (or none)"
                )
            return
        keep = kept_count(self.model.config.num_key_value_heads, ratio)
        for block, layer in enumerate(layers):
            gqa_groups(layer.self_attn, keep, importance, generator, self.block_loras(block))

    def mlps(self) -> list[nn.Module]:
        return [p for layer in self.model.model.layers for p in (layer.mlp.gate_proj, layer.mlp.up_proj)]

    def trace(self, model: nn.Module, ids: torch.Tensor) -> Any:
        """The graph's trace: the output head as a module call (an untied ``lm_head``, whose inputs are the hidden
        channels), or, tied, the final hidden states (the embedding the head shares is in the graph; read through
        ``F.linear`` the shared matrix would tie the hidden channels to the logits' sequence axis)."""
        head = model.lm_head
        # (B, hidden) for the tied case: the graph reads an output's channels on its axis 1
        model.__dict__["logits"] = head if head is not None else (lambda h: h.mean(1))  # shadows the method
        try:
            return model(ids)
        finally:
            del model.__dict__["logits"]

    def widths(self) -> dict[str, Any]:
        """The config fields of the pruned widths (also set on ``model.config``)."""
        model, c = self.model, self.model.config
        layers = self.attention()
        widths = {layer.mlp.gate_proj.out_features for layer in model.model.layers}
        if len(widths) != 1 or len({a.num_kv_heads for a in layers}) != 1:
            raise PruneError("the language model's layers were pruned to different widths; zoo.prune keeps them equal")
        c.hidden_size = (
            model.get_input_embeddings().weight.shape[1]
            if hasattr(model, "get_input_embeddings")
            else (layers[0].q_proj.in_features)
        )
        c.intermediate_size = widths.pop()
        c.num_attention_heads, c.num_key_value_heads = layers[0].num_heads, layers[0].num_kv_heads
        return {
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "num_attention_heads": c.num_attention_heads,
            "num_key_value_heads": c.num_key_value_heads,
            "head_dim": c.head_dim,
        }
