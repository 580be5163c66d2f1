"""A depthwise ``nn.Conv2d`` computed by :mod:`zoo.kernels.vision` on channels-last float32 CPU maps.

The forward pass gives oneDNN's bits (the same multiply-adds in the same order, faster); in training the input's
gradient is that kernel on the output's gradient (the flipped kernel), and the weights' gradient the zoo's, within
float32 rounding of oneDNN's and closer to float64 (:mod:`zoo.kernels.vision`). The kernels are taken in eager
mode on the CPU, for float32 channels-last input, stride 1, no dilation, zero padding and a multiple of eight
channels, outside autocast; anything else (another device, dtype or layout, ``torch.compile`` / ``torch.export`` /
fx and TorchScript traces (fvcore's count, ONNX), a dispatch mode, TorchScript, a CPU without AVX2) is the plain
convolution. Same parameters and state dict as ``nn.Conv2d``.
"""

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ..kernels import vision
from .tracing import is_eager, training_kernels_may_run

__all__ = ["DepthwiseConv2d"]


def _forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding) -> torch.Tensor:
    y = vision.depthwise_forward(x, weight, padding)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return _forward(x, weight, bias, padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        g = g.contiguous(memory_format=torch.channels_last)
        kernel, (ph, pw) = tuple(weight.shape[2:]), ctx.padding
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = vision.depthwise_forward(g, weight.flip(2, 3), (kernel[0] - 1 - ph, kernel[1] - 1 - pw))
        if ctx.needs_input_grad[1]:
            gw = vision.depthwise_weight_grad(x, g, kernel, ctx.padding)
        if ctx.needs_input_grad[2]:
            gb = g.sum((0, 2, 3))
        return gx, gw, gb, None


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(channels, channels, kernel_size, padding=..., groups=channels)`` run by the zoo's depthwise
    kernels where they apply (module docstring)."""

    def __init__(self, channels: int, kernel_size, padding=0, bias: bool = True, **kwargs):
        super().__init__(channels, channels, kernel_size, padding=padding, groups=channels, bias=bias, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and is_eager() and self._takes(x):
            if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
                return _DepthwiseConv.apply(x, self.weight, self.bias, self.padding)
            return _forward(x, self.weight, self.bias, self.padding)
        return self._conv_forward(x, self.weight, self.bias)

    @torch.jit.unused  # eager only (see zoo.layers.tracing)
    def _takes(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last)
            and isinstance(self.padding, tuple)
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
            and self.in_channels % vision.LANES == 0
            and training_kernels_may_run()
            and vision.available()
        )
