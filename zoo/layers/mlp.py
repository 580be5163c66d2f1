"""The transformer MLP every vision family uses: Linear -> activation -> Linear.

In eager float32 CPU training the three ops are one autograd function (:class:`_MlpTraining`): the same matrix
products and activation as autograd's chain, and as many saved tensors (the input, the activation, and the hidden
pre-activation or, for GELU, its slope), but each activation is computed as the first product's tiles are stored and
its backward as the hidden gradient's are, where autograd's chain makes a pass over the hidden map (four times the
model's width) for each and allocates a second hidden gradient. The products over the token rows (the outputs and
the input's and hidden gradients) are :func:`zoo.kernels.vision.matmul`'s, the weights' gradients the BLAS GEMM's
(:func:`zoo.kernels.vision.weight_grad`). StarReLU: :func:`zoo.kernels.vision.matmul_star_relu` and its backward.
GELU: :func:`zoo.kernels.vision.matmul_gelu` gives GELU and its slope, and :func:`zoo.kernels.vision.matmul_times`
multiplies the slope in; that GELU is the kernels' own, within derived bounds of the exact one and closer to it than
ATen's (``tests/kernels/test_vision_kernels.py``). Evaluation mode (the pruning graph traces the layers one by one),
inference, other devices and dtypes, autocast, traced or scripted graphs, layers with forward hooks (which must see
their calls), and a machine where :mod:`zoo.kernels.vision` does not run (``ZOO_VISION_KERNELS=0``) run the layers
one by one.
"""

import torch
from torch import nn

from ..kernels import vision
from .activations import GELU, StarReLU, needs_grad
from .linear import Linear, token_rows
from .tracing import is_eager, training_kernels_may_run

__all__ = ["Mlp"]


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return vision.matmul(x, weight.t(), bias)


class _MlpTraining(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, scale, shift):
        rows = token_rows(x)
        if scale is None:  # GELU and its slope, computed as the product's tiles are stored: the slope kept, not h
            a, h = vision.matmul_gelu(rows, w1.t(), b1)
        else:  # StarReLU, computed as the product's tiles are stored
            ctx.s = scale.item()
            h, a = vision.matmul_star_relu(rows, w1.t(), b1, ctx.s, shift.item())
        ctx.save_for_backward(rows, h, a, w1, w2)
        ctx.gelu, ctx.shape = scale is None, x.shape
        ctx.has_bias = b1 is not None, b2 is not None
        return _linear(a, w2, b2).view(*x.shape[:-1], w2.shape[0])

    @staticmethod
    def backward(ctx, g):
        rows, h, a, w1, w2 = ctx.saved_tensors  # h: the pre-activation, or GELU's slope
        g = token_rows(g)
        needs = ctx.needs_input_grad
        gw2 = vision.weight_grad(g, a) if needs[3] else None
        gb2 = g.sum(0) if needs[4] and ctx.has_bias[1] else None
        gscale = gshift = None
        if ctx.gelu:  # the activation's backward, the slope multiplied in as the hidden gradient's tiles are stored
            gh = vision.matmul_times(g, w2, h)
        else:
            gh, gscale, gshift = vision.matmul_star_relu_backward(g, w2, h, ctx.s)
        gx = vision.matmul(gh, w1).view(ctx.shape) if needs[0] else None
        gw1 = vision.weight_grad(gh, rows) if needs[1] else None
        gb1 = gh.sum(0) if needs[2] and ctx.has_bias[0] else None
        return gx, gw1, gb1, gw2, gb2, gscale, gshift


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
        if not torch.jit.is_scripting() and is_eager() and self._trains_fused(x):
            act = self.act
            scale, shift = (act.scale, act.bias) if isinstance(act, StarReLU) else (None, None)
            fc1, fc2 = self.fc1, self.fc2
            return _MlpTraining.apply(x, fc1.weight, fc1.bias, fc2.weight, fc2.bias, scale, shift)
        h = self.fc1(x)
        h = self.act(h) if needs_grad(h) else self.act.forward_(h)
        return self.fc2(h)

    @torch.jit.unused  # eager only (see zoo.layers.tracing)
    def _trains_fused(self, x: torch.Tensor) -> bool:
        act, fc1, fc2 = self.act, self.fc1, self.fc2
        return (
            self.training
            and torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.is_contiguous()
            and type(fc1) is Linear
            and type(fc2) is Linear
            and not (fc1._forward_hooks or fc1._forward_pre_hooks or fc2._forward_hooks or fc2._forward_pre_hooks)
            and not (act._forward_hooks or act._forward_pre_hooks)
            and fc1.weight.dtype == torch.float32
            and fc2.weight.dtype == torch.float32
            and ((type(act) is GELU and act.approximate == "none") or type(act) is StarReLU)
            and training_kernels_may_run()
            and vision.available()
        )
