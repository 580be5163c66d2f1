"""Held-out metrics and the report of a model's size, shared by training (``zoo.train.tasks``) and ``eval.py``.

Sums are accumulated per process and reduced before the metrics are formed, so many-process evaluation gives the
same figures as one process.
"""

import contextlib
import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..profile import count_macs, count_params, profile

__all__ = [
    "classification_metrics",
    "classification_sums",
    "lm_logits",
    "lm_metrics",
    "lm_sums",
    "profile_classifier",
    "profile_lm",
]


def lm_logits(out: Any) -> torch.Tensor:
    """Logits from a language model's output: a tensor, an object with ``.logits``, or a tuple (logits first)."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    if isinstance(out, dict) and "logits" in out:
        return out["logits"]
    raise TypeError(f"cannot find logits in a model output of type {type(out).__name__}")


@torch.no_grad()
def classification_sums(
    model: nn.Module, batches, k: int, amp_ctx=contextlib.nullcontext, max_batches: int | None = None
) -> torch.Tensor:
    """(loss sum, top-1 hits, top-k hits, count) of ``model`` over ``(x, y)`` batches already on its device."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)
    for i, (x, y) in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        with amp_ctx():
            logits = model(x)
        logits = logits.float()
        sums[0] += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(k, dim=1).indices
        sums[1] += (top[:, 0] == y).sum().item()
        sums[2] += (top == y[:, None]).any(dim=1).sum().item()
        sums[3] += y.numel()
    return sums


def classification_metrics(sums: torch.Tensor) -> dict[str, float]:
    n = max(sums[3].item(), 1)
    return {
        "top1": 100.0 * sums[1].item() / n,
        "top5": 100.0 * sums[2].item() / n,
        "loss": sums[0].item() / n,
        "samples": int(n),
    }


@torch.no_grad()
def lm_sums(model: nn.Module, batches, amp_ctx=contextlib.nullcontext, max_batches: int | None = None) -> torch.Tensor:
    """(next-token NLL sum, token count) of ``model`` over rows of token ids already on its device."""
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64)
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        with amp_ctx():
            logits = lm_logits(model(batch[:, :-1]))
        sums[0] += F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        ).item()
        sums[1] += batch[:, 1:].numel()
    return sums


def lm_metrics(sums: torch.Tensor) -> dict[str, float]:
    loss = sums[0].item() / max(sums[1].item(), 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": int(sums[1].item())}


def profile_classifier(model: nn.Module, input_size) -> dict[str, Any]:
    """Params and MACs at ``input_size`` (counted on a CPU copy of a model that lives elsewhere)."""
    on_cpu = all(t.device.type == "cpu" for t in model.parameters())
    p = profile(model if on_cpu else copy.deepcopy(model).cpu(), input_size=tuple(input_size))
    return {"params": p.params, "macs": p.macs, "macs_input": list(p.input_size)}


def profile_lm(model: nn.Module, seq_len: int) -> dict[str, Any]:
    """MACs on token ids (one sequence of ``seq_len``)."""
    ids = torch.zeros(1, seq_len, dtype=torch.long, device=next(model.parameters()).device)
    model.eval()
    with torch.no_grad():
        macs, _ = count_macs(model, ids)  # fvcore with the zoo's handles, as zoo.profile counts
    return {"params": count_params(model)["params"], "macs": macs, "macs_input": [1, seq_len]}
