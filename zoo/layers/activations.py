"""Activations with learnable or squared forms (MetaFormer baselines)."""

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import vision
from .tracing import func_transforming, is_eager, training_kernels_may_run


def _star_relu(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    r = F.relu(x)
    # bias + r * (r * scale): two passes over r instead of square, mul and add
    return torch.addcmul(bias, r, r * scale)


class _StarReLUFunction(torch.autograd.Function):
    """StarReLU with its gradients written out: it keeps ``relu(x)`` alone for the backward pass (autograd's chain
    of relu, mul and addcmul keeps two tensors of the input's size) and computes the three gradients in four
    passes over the input's size instead of eight: ``t = g * r``; ``d scale = <t, r>``; ``d x = 2 scale t`` (zero
    where ``x <= 0``, as ``r`` is); ``d bias = sum(g)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        r = F.relu(x)
        ctx.save_for_backward(r, scale)
        return torch.addcmul(bias, r, r * scale)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        r, scale = ctx.saved_tensors
        t = g * r
        if t.is_contiguous() and r.is_contiguous() and t.dtype == r.dtype:
            grad_scale = torch.dot(t.view(-1), r.view(-1)).reshape(1)
        else:
            grad_scale = (t * r).sum().reshape(1)
        grad_bias = g.sum().reshape(1)
        return t.mul_(2 * scale), grad_scale, grad_bias


class _StarReLUKernel(torch.autograd.Function):
    """StarReLU by :mod:`zoo.kernels.vision`: one pass forward, one backward; keeps the input for the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        s = scale.item()
        ctx.save_for_backward(x)
        ctx.s = s
        return vision.star_relu_forward(x, s, bias.item())

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        dx, ds, db = vision.star_relu_backward(g.contiguous(), x, ctx.s)
        return dx, ds, db


def _kernel_takes(x: torch.Tensor, scale: torch.Tensor) -> bool:
    """Whether :class:`_StarReLUKernel` computes this call: contiguous float32 on the CPU, eager (not while
    ``torch.compile`` or ``torch.export`` traces the step: they fuse PyTorch's operators), outside autocast."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and scale.dtype == torch.float32
        and x.is_contiguous()
        and training_kernels_may_run()
        and vision.available()
    )


class StarReLU(nn.Module):
    """``scale * relu(x) ** 2 + bias`` with learnable scalar ``scale`` and ``bias`` (shape [1]).

    From "MetaFormer Baselines for Vision"; initialised to scale 1.0 and bias 0.0 as in the authors' code.
    """

    def __init__(self, scale_value: float = 1.0, bias_value: float = 0.0):
        super().__init__()
        self.scale_value, self.bias_value = float(scale_value), float(bias_value)
        self.scale = nn.Parameter(torch.full((1,), self.scale_value))
        self.bias = nn.Parameter(torch.full((1,), self.bias_value))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.scale, self.scale_value)
        nn.init.constant_(self.bias, self.bias_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the hand-written backward is eager's; traced and scripted graphs, and torch.func's transforms (the
        # autograd functions define no vmap rule), differentiate the plain ops
        if (
            not torch.jit.is_scripting()
            and is_eager()
            and torch.is_grad_enabled()
            and (x.requires_grad or self.scale.requires_grad or self.bias.requires_grad)
            and not func_transforming()
        ):
            if _kernel_takes(x, self.scale):
                return _StarReLUKernel.apply(x, self.scale, self.bias)
            return _StarReLUFunction.apply(x, self.scale, self.bias)
        return _star_relu(x, self.scale, self.bias)

    def forward_(self, x: torch.Tensor) -> torch.Tensor:
        """In-place form for inference (no autograd): overwrites and returns ``x``."""
        return x.relu_().square_().mul_(self.scale).add_(self.bias)


class GELU(nn.GELU):
    """Exact (erf) GELU with an in-place form for inference."""

    def forward_(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.gelu_(x)


def needs_grad(x: torch.Tensor) -> bool:
    """True when autograd records ops on ``x`` (then in-place shortcuts are not allowed); True under ``torch.fx``
    tracing, whose graph may be trained."""
    if not torch.jit.is_scripting() and not is_eager():
        return True
    return torch.is_grad_enabled() and x.requires_grad


class SquaredReLU(nn.Module):
    """``relu(x) ** 2`` (the MetaFormer MLP head's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.square(F.relu(x))
