"""Residual combination with layer scale, res scale and stochastic depth folded into one op."""

import torch


def drop_path_gain(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor | None:
    """Per-sample stochastic-depth factor (0 or 1/keep), shaped (B, 1, ..., 1); None when it is a no-op."""
    if drop_prob == 0.0 or not training:
        return None
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return x.new_empty(shape).bernoulli_(keep).div_(keep)


def residual_add(
    x: torch.Tensor,
    branch: torch.Tensor,
    gain: torch.Tensor | None = None,
    res_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``res_scale * x + gain * branch``, with either factor optional (None means 1).

    Without autograd, the result is written into ``branch`` (a fresh tensor owned by the caller) instead of a
    new allocation: on CPU, first-touching large fresh buffers costs as much as the arithmetic.
    """
    out = branch if not (torch.is_grad_enabled() and (x.requires_grad or branch.requires_grad)) else None
    if out is not None and any(t is not None and t.dtype != branch.dtype for t in (x, gain, res_scale)):
        out = None  # mixed precision (autocast): let type promotion pick the result dtype
    if res_scale is not None:
        x = x * res_scale
    if gain is None:
        return torch.add(x, branch, out=out) if out is not None else x + branch
    return torch.addcmul(x, branch, gain, out=out) if out is not None else torch.addcmul(x, branch, gain)
