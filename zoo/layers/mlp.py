"""The transformer MLP every vision family uses: Linear -> activation -> Linear."""

import torch
from torch import nn

from .activations import GELU, needs_grad
from .linear import Linear

__all__ = ["Mlp"]


class Mlp(nn.Module):
    """``fc2(act(fc1(x)))`` with ``hidden`` (default ``mlp_ratio * dim``) units; the activation runs in place when
    nothing needs gradients. MetaFormer v1 and SLaK/SReT: GELU with biases; the MetaFormer baselines: StarReLU
    without biases."""

    def __init__(self, dim: int, hidden: int | None = None, mlp_ratio: float = 4, act_layer=GELU, bias: bool = True):
        super().__init__()
        hidden = hidden or int(mlp_ratio * dim)
        self.fc1 = Linear(dim, hidden, bias=bias)
        self.act = act_layer()
        self.fc2 = Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = self.act(h) if needs_grad(h) else self.act.forward_(h)
        return self.fc2(h)
