"""Activations with learnable or squared forms (MetaFormer baselines)."""

import torch
import torch.nn.functional as F
from torch import nn


class StarReLU(nn.Module):
    """``scale * relu(x) ** 2 + bias`` with learnable scalar ``scale`` and ``bias`` (shape [1]).

    From "MetaFormer Baselines for Vision"; initialised to scale 1.0 and bias 0.0 as in the authors' code.
    """

    def __init__(self, scale_value: float = 1.0, bias_value: float = 0.0):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), float(scale_value)))
        self.bias = nn.Parameter(torch.full((1,), float(bias_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = F.relu(x)
        # bias + r * (r * scale): two passes over r instead of square, mul and add
        return torch.addcmul(self.bias, r, r * self.scale)

    def forward_(self, x: torch.Tensor) -> torch.Tensor:
        """In-place form for inference (no autograd): overwrites and returns ``x``."""
        return x.relu_().square_().mul_(self.scale).add_(self.bias)


class GELU(nn.GELU):
    """Exact (erf) GELU with an in-place form for inference."""

    def forward_(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.gelu_(x)


def needs_grad(x: torch.Tensor) -> bool:
    """True when autograd records ops on ``x`` (then in-place shortcuts are not allowed)."""
    return torch.is_grad_enabled() and x.requires_grad


class SquaredReLU(nn.Module):
    """``relu(x) ** 2`` (the MetaFormer MLP head's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.square(F.relu(x))
