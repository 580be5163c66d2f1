"""Residual combination with layer scale, res scale and stochastic depth folded into one op."""

import torch

from .tracing import is_eager


def drop_path_gain(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor | None:
    """Per-sample stochastic-depth factor (0 or 1/keep), shaped (B, 1, ..., 1); None when it is a no-op."""
    if drop_prob == 0.0 or not training:
        return None
    keep = 1.0 - drop_prob
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    return x.new_empty(shape).bernoulli_(keep).div_(keep)


@torch.jit.unused  # eager only (see zoo.layers.tracing)
def _fresh_output(
    x: torch.Tensor, branch: torch.Tensor, gain: torch.Tensor | None, res_scale: torch.Tensor | None
) -> bool:
    """Whether the sum may be written into ``branch``: nothing records gradients and every operand has its dtype."""
    if torch.is_grad_enabled() and (x.requires_grad or branch.requires_grad):
        return False
    # mixed precision (autocast): type promotion picks the result dtype
    return all(t is None or t.dtype == branch.dtype for t in (x, gain, res_scale))


def residual_add(
    x: torch.Tensor,
    branch: torch.Tensor,
    gain: torch.Tensor | None = None,
    res_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``res_scale * x + gain * branch``, with either factor optional (None means 1).

    In eager inference the result is written into ``branch`` (a fresh tensor owned by the caller) instead of a new
    allocation: on CPU, first-touching large fresh buffers costs as much as the arithmetic. Traced and scripted
    graphs allocate.
    """
    out: torch.Tensor | None = None
    if not torch.jit.is_scripting() and is_eager() and _fresh_output(x, branch, gain, res_scale):
        out = branch
    if res_scale is not None:
        x = x * res_scale
    if gain is None:
        return x + branch if out is None else torch.add(x, branch, out=out)
    return torch.addcmul(x, branch, gain) if out is None else torch.addcmul(x, branch, gain, out=out)
