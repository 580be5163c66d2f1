"""A decoder LM as a plain stack of Llama blocks: the form llama.cpp runs (:mod:`zoo.export.gguf_file` writes it).

A language-model family that has such a form says so with a ``llama_blocks()`` method returning
:class:`LlamaBlocks`: which of ``model.model.layers`` runs at each position of the stack, with its attention window,
the LoRA deltas to merge into it and its own norms where the family keeps some per application. A model whose
computation has no such form (routing per token, caches shared across blocks) raises :class:`NoLlamaForm` with the
reason; a family without the method is refused by the writer.
"""

from dataclasses import dataclass, field

from torch import nn

__all__ = ["BlockRun", "LlamaBlocks", "NoLlamaForm"]


class NoLlamaForm(ValueError):
    """The model computes something a plain stack of Llama blocks cannot; the message says why."""


@dataclass
class BlockRun:
    """One block of the stack: layer ``index`` of ``model.model.layers``, as it runs at this position."""

    index: int
    window: int | None = None  # sliding-window size of its attention (None: global)
    lora: nn.ModuleDict | None = None  # LoRA deltas merged into its projections here ({"q_proj": LoRA, ...})
    norms: tuple[nn.Module, nn.Module] | None = None  # its own (attention, MLP) norms here, replacing the layer's


@dataclass
class LlamaBlocks:
    """The stack, in order, and notes on how it was laid out (they reach the export's report)."""

    runs: list[BlockRun]
    notes: list[str] = field(default_factory=list)
