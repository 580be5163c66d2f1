"""How many weights each layer keeps: Erdos-Renyi-Kernel scores, SNIP scores of one batch, and the allocation of
a model's density over its layers; the prune rate's cosine decay."""

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .comm import comm_device, dist_world

__all__ = ["allocate_densities", "cosine", "erk_scores", "snip_counts"]


def erk_scores(shapes: Sequence[Sequence[int]], power_scale: float = 1.0) -> list[float]:
    """Erdos-Renyi-Kernel raw densities ``(sum(shape) / prod(shape)) ** power_scale``, before scaling."""
    return [(sum(s) / math.prod(s)) ** power_scale for s in shapes]


def allocate_densities(
    raw: Sequence[float], sizes: Sequence[int], density: float, dense_threshold: float = 0.99
) -> list[float]:
    """Per-layer densities ``eps * raw[i]`` whose weighted mean over ``sizes`` is ``density``.

    A layer whose density would reach ``dense_threshold`` is made fully dense and ``eps`` is solved again over
    the others, highest ``raw`` first (the ERK procedure of RigL/SLaK, with the "layers at >= 99% stay dense"
    rule moved inside it so that the dense layers count towards the budget).
    """
    if len(raw) != len(sizes) or not raw:
        raise ValueError("allocate_densities needs one raw score per layer and at least one layer")
    if any(r < 0 or not math.isfinite(r) for r in raw):
        raise ValueError(f"layer scores must be finite and >= 0, got {list(raw)}")
    budget = density * sum(sizes)
    dense: set = set()
    eps = 0.0
    while True:
        free = [i for i in range(len(raw)) if i not in dense]
        if not free:
            break
        rest = max(budget - sum(sizes[i] for i in dense), 0.0)
        denom = sum(raw[i] * sizes[i] for i in free)
        if denom <= 0:
            if rest > 0:
                raise ValueError(
                    "every remaining layer has a zero score, so no density can be allocated to them "
                    "(for SNIP: the batch gave zero gradients; check the loss and the batch)"
                )
            eps = 0.0
            break
        eps = rest / denom
        top = max(raw[i] for i in free)
        if eps * top < dense_threshold:
            break
        dense.update(i for i in free if raw[i] == top)
    return [1.0 if i in dense else min(eps * raw[i], 1.0) for i in range(len(raw))]


def cosine(step: int, total: int, start: float, end: float) -> float:
    t = min(max(step, 0), total)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t / total))


def snip_counts(model: nn.Module, params: list[nn.Parameter], batch: Any, loss_fn, density: float, group) -> list[int]:
    """Per layer, how many of its weights are among the ``density * N`` largest ``|w * grad|`` of the model (the
    scores summed over the processes of ``group``)."""
    device = params[0].device
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    try:
        with torch.enable_grad():
            if loss_fn is not None:
                loss = loss_fn(model, batch)
            else:
                if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                    raise ValueError(
                        "init_masks(batch=...) without loss_fn expects an (inputs, targets) pair "
                        "for cross-entropy; pass loss_fn(model, batch) -> loss for other batches"
                    )
                inputs, targets = (b.to(device) if torch.is_tensor(b) else b for b in batch)
                loss = F.cross_entropy(model(inputs), targets)
            if not torch.is_tensor(loss) or loss.ndim != 0:
                raise ValueError("the SNIP loss must be a scalar tensor")
            grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        for k, b in model.named_buffers():
            b.copy_(buffers[k])
    scores = torch.cat(
        [
            (p.detach().float() * g.float()).abs().flatten() if g is not None else torch.zeros(p.numel(), device=device)
            for p, g in zip(params, grads)
        ]
    )
    if dist_world(group) > 1:
        buf = scores.to(comm_device(group))
        dist.all_reduce(buf, group=group)
        scores = buf.to(device)
    n_total = scores.numel()
    k = int(n_total * density)
    if k <= 0:
        return [0] * len(params)
    threshold = torch.kthvalue(scores.cpu(), n_total - k + 1).values.item()
    sizes = [p.numel() for p in params]
    chunks = scores.split(sizes)
    above = [int((c > threshold).sum()) for c in chunks]
    ties = [int((c == threshold).sum()) for c in chunks]
    need = k - sum(above)  # weights at exactly the threshold go to the first layers that hold them
    counts = []
    for a, t in zip(above, ties):
        take = min(t, max(need, 0))
        need -= take
        counts.append(a + take)
    return counts
