"""Normalisation layers for channels-last (B, H, W, C) feature maps.

Two kinds of "LayerNorm" appear in the MetaFormer papers and are easy to confuse:

* :class:`ChannelLayerNorm` normalises each position over its C channels (``F.layer_norm`` over the last dim).
* :class:`SpatialLayerNorm` normalises each sample over (H, W, C) jointly: it is ``GroupNorm(1, C)``
  written for channels-last maps, with a per-channel weight and an optional bias.
"""

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn


def spatial_stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean and reciprocal std over all non-batch dims (biased variance), shaped (B, 1, ..., 1).

    Uses the group-norm kernel's statistics (one group over everything): on CPU it is several times faster
    than ``torch.var_mean`` over several dims, and it is the same arithmetic as ``nn.GroupNorm``. A leaf of
    ``torch.fx`` graphs (its sizes are the input's), and scriptable.
    """
    B = x.shape[0]
    n = 1
    for d in x.shape[1:]:  # not reshape(B, 1, -1): ambiguous for an empty batch
        n *= d
    _, mean, rstd = torch.native_group_norm(x.reshape(B, 1, n), None, None, B, 1, n, 1, eps)
    shape = [B] + [1] * (x.dim() - 1)
    return mean.view(shape), rstd.view(shape)


torch.fx.wrap("spatial_stats")


class SpatialLayerNorm(nn.Module):
    """GroupNorm with one group over a channels-last map: normalise over (H, W, C), then ``* weight (+ bias)``.

    ``forward`` runs as one statistics pass and one fused multiply-add pass. ``stats`` exposes the
    per-sample mean and reciprocal std so that blocks can fold the affine part into what follows.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels)) if bias else None

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @torch.jit.export
    def stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return spatial_stats(x, self.eps)

    @torch.jit.export
    def scale_shift(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) of shape (B, 1, 1, C) with ``norm(x) == x * scale + shift``."""
        mean, rstd = self.stats(x)
        scale = self.weight * rstd
        shift = -mean * scale
        bias = self.bias
        if bias is not None:
            shift = shift + bias
        return scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the group-norm kernel reads the channels-last map in place and writes a channels-last result
        y = F.group_norm(x.permute(0, 3, 1, 2), 1, self.weight, self.bias, self.eps)
        return y.permute(0, 2, 3, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}"


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the last (channel) dim, with an optional bias."""

    def __init__(self, num_channels: int, eps: float = 1e-6, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.normalized_shape = (num_channels,)
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels)) if bias else None

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape[0]}, eps={self.eps}, bias={self.bias is not None}"
