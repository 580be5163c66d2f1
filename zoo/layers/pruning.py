"""What a family tells :func:`zoo.compress.prune` about itself: its :class:`PrunePlan`, and the whole-head surgery
the plans share.

A family class names its plan in a ``prune_plan`` class attribute (a :class:`PrunePlan` subclass, defined in the
family's own file); ``zoo.compress.prune`` builds ``type(model).prune_plan(model)`` and runs the generic machinery
(Torch-Pruning's dependency graph, the importance criteria, the MACs / params search) around it. A class without
one is refused. The plan says which layers' outputs the graph must leave alone, how whole heads go, which layers
are the MLP inputs (the fine step of a target search), how the pruned widths are written as builder arguments, and
which width-caching attributes follow the cut.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "NEEDS_GRADIENTS",
    "PruneError",
    "PrunePlan",
    "classifier_layers",
    "fused_qkv_heads",
    "keep_cols",
    "keep_rows",
    "kept_count",
    "per_block",
    "score_units",
    "sync_stage_widths",
    "tag_grad",
]

NEEDS_GRADIENTS = ("taylor", "hessian")  # importance criteria that read gradients


class PruneError(ValueError):
    """The pruning request cannot be met (bad arguments, an unsupported model, a target out of reach)."""


class PrunePlan:
    """How :func:`zoo.compress.prune` treats one family; one plan is made per pruning pass, for its model.

    The defaults fit a plain classifier: the graph keeps the classifier's outputs, there are no whole heads, no
    MLPs to step finely, nothing to resync. :meth:`widths` has no default: it is the family's builder arguments.
    """

    # how the graph is traced: a method ``trace(model, inputs) -> output`` (None: ``model(inputs)``)
    trace: Callable[[nn.Module, torch.Tensor], Any] | None = None

    def __init__(self, model: nn.Module):
        self.model = model

    def ignored(self) -> list[nn.Module]:
        """Layers whose output channels the graph must not prune (classifiers, attention projections, fixed
        widths)."""
        return classifier_layers(self.model)

    def ignored_params(self) -> list[nn.Parameter]:
        """Parameters outside known layers that the graph must not cut (sized by tokens, not channels)."""
        return []

    def heads(self, ratio: float, importance: str, generator: torch.Generator, kept: set[int]) -> None:
        """Remove whole heads at ``ratio`` (ranked by ``importance``); ``kept``: ids of modules to leave whole."""

    def mlps(self) -> list[nn.Module]:
        """The MLPs' input layers: a target search steps them on their own, finer, ratio."""
        return []

    def start(self) -> None:
        """Called after the heads and right before the graph prunes channels."""

    def finish(self) -> None:
        """Called after the graph: attributes that cache a width follow the pruned layers."""

    def widths(self) -> dict[str, Any]:
        """The builder arguments that rebuild the model at its current widths (``model.pruned_args``)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how its pruned widths are written")


# ------------------------------------------------------------------------------------------------------------------
# Shared pieces of the plans
# ------------------------------------------------------------------------------------------------------------------


def classifier_layers(model: nn.Module) -> list[nn.Module]:
    """``[model.head.fc]`` where there is one: the classifier keeps its width (the number of classes)."""
    fc = getattr(getattr(model, "head", None), "fc", None)
    return [fc] if isinstance(fc, nn.Module) else []


def per_block(values: list) -> list | None:
    """``values`` (one per block, None where the block has none) or None when no block has one."""
    return values if any(v is not None for v in values) else None


def sync_stage_widths(model: nn.Module, widths: Sequence[int]) -> None:
    """A staged backbone's ``feature_info`` channels, ``num_features`` and ``head_hidden_size`` after a cut."""
    info = getattr(model, "feature_info", None)
    if not info:
        return
    for entry, width in zip(info, widths):
        entry["num_chs"] = width
    model.num_features = model.head_hidden_size = info[-1]["num_chs"]


# ------------------------------------------------------------------------------------------------------------------
# Whole heads: the rows of a head in the projections that make it, the columns in the one that reads it
# ------------------------------------------------------------------------------------------------------------------


def keep_rows(layer: nn.Linear, rows: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.data[rows].clone(), requires_grad=layer.weight.requires_grad)
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.data[rows].clone(), requires_grad=layer.bias.requires_grad)
    layer.out_features = len(rows)


def keep_cols(layer: nn.Linear, cols: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.data[:, cols].clone(), requires_grad=layer.weight.requires_grad)
    layer.in_features = len(cols)


def tag_grad(view: torch.Tensor, param: torch.Tensor, reshape: Callable) -> None:
    """Attach ``param``'s gradient, reshaped like ``view``, for :func:`score_units`."""
    if param.grad is not None:
        view._prune_grad = reshape(param.grad)


def score_units(weights: Sequence[torch.Tensor], importance: str, generator: torch.Generator) -> torch.Tensor:
    """One score per leading index of each (units, ...) tensor, summed over the tensors: L2 magnitude, or
    |w * grad| (taylor / hessian) where gradients are there, or random."""
    n = weights[0].shape[0]
    if importance == "random":
        return torch.rand(n, generator=generator)
    total = torch.zeros(n)
    for w in weights:
        grad = getattr(w, "_prune_grad", None)
        value = (w * grad).abs() if importance in NEEDS_GRADIENTS and grad is not None else w.pow(2)
        total += value.detach().float().reshape(n, -1).sum(1).cpu()
    return total


def kept_count(n: int, ratio: float) -> int:
    """How many of ``n`` units stay at ``ratio`` (at least one)."""
    return max(1, min(n, round(n * (1.0 - ratio))))


def fused_qkv_heads(attn: nn.Module, qkv: nn.Linear, proj: nn.Linear, ratio: float, importance: str, gen) -> int:
    """Keep the best heads of a fused (3, heads, head_dim) qkv and its output projection; returns the count."""
    h, d = attn.num_heads, attn.head_dim
    keep_n = kept_count(h, ratio)
    if keep_n == h:
        return h
    w = qkv.weight.reshape(3, h, d, -1).transpose(0, 1)  # (heads, 3, d, in)
    tag_grad(w, qkv.weight, lambda g: g.reshape(3, h, d, -1).transpose(0, 1))
    wo = proj.weight.reshape(proj.out_features, h, d).transpose(0, 1)  # (heads, out, d)
    tag_grad(wo, proj.weight, lambda g: g.reshape(proj.out_features, h, d).transpose(0, 1))
    scores = score_units([w, wo], importance, gen)
    heads = scores.topk(keep_n).indices.sort().values
    within = (heads[:, None] * d + torch.arange(d)).reshape(-1)  # kept (head, d) positions
    keep_rows(qkv, torch.cat([s * h * d + within for s in range(3)]))
    keep_cols(proj, within)
    attn.num_heads = keep_n
    if hasattr(attn, "attention_dim"):
        attn.attention_dim = keep_n * d
    return keep_n
