"""A dense ``nn.Conv2d`` whose weights' gradient, in CPU float32 training, is one matrix product over the input's
patches.

oneDNN's weights' gradient of a strided dense convolution (the MetaFormer downsampling layers: 3x3, stride 2, on
channels-last maps) runs at well under half its forward pass's multiply-add rate. The same sums are one GEMM::

    dW[o, (i, j, c)] = sum over (n, ho, wo) of g[(n, ho, wo), o] * P[(n, ho, wo), (i, j, c)]

with ``P`` the input's patches (im2col: one row a receptive field, read from the zero-padded channels-last map by
strides, then copied once). The patch matrix holds ``kh kw / (sh sw)`` times the input (2.25 for a 3x3 stride-2
layer), freed when the backward pass ends. The forward pass and the input's gradient are oneDNN's own calls, so
the same bits as ``nn.Conv2d``; the weights' gradient is a float32 sum of ``N Ho Wo`` products in another order
than oneDNN's, within the same rounding bound (``gamma_{N Ho Wo}`` times ``sum |x| |g|``); the bias's is
``g.sum``.

The product is taken in eager float32 CPU training on a channels-last input, with groups 1, no dilation, zero
padding, outside autocast and with no hooks on the layer; anything else (evaluation, which the pruning graph
traces, inference, other devices, dtypes or layouts, ``torch.compile`` / ``torch.export`` / fx and TorchScript
traces, a dispatch mode, TorchScript) is the plain convolution. Same parameters and state dict as ``nn.Conv2d``.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .tracing import is_eager, training_kernels_may_run

__all__ = ["PatchConv2d", "patch_weight_grad"]


def patch_weight_grad(x: torch.Tensor, g: torch.Tensor, kernel: tuple[int, int], stride, padding) -> torch.Tensor:
    """The ``(O, C, kh, kw)`` weights' gradient of ``conv2d(x, w, stride=stride, padding=padding)`` given the
    output's gradient ``g``, as one matrix product over ``x``'s patches (module docstring); channels-last maps."""
    n, c = x.shape[:2]
    o, ho, wo = g.shape[1:]
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))  # (N, H + 2 ph, W + 2 pw, C), contiguous
    s_n, s_h, s_w, s_c = xp.stride()
    patches = xp.as_strided((n, ho, wo, kh, kw, c), (s_n, sh * s_h, sw * s_w, s_h, s_w, s_c))
    rows = g.permute(0, 2, 3, 1).reshape(n * ho * wo, o)
    dw = rows.t().mm(patches.reshape(n * ho * wo, kh * kw * c))  # (O, kh kw C)
    return dw.view(o, kh, kw, c).permute(0, 3, 1, 2).contiguous()


class _PatchConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        g = g.contiguous(memory_format=torch.channels_last)
        needs = ctx.needs_input_grad
        gx = gw = gb = None
        if needs[0]:
            gx = torch.ops.aten.convolution_backward(
                g, x, weight, None, ctx.stride, ctx.padding, (1, 1), False, (0, 0), 1, (True, False, False)
            )[0]
        if needs[1]:
            gw = patch_weight_grad(x, g, tuple(weight.shape[2:]), ctx.stride, ctx.padding)
        if needs[2]:
            gb = g.sum((0, 2, 3))
        return gx, gw, gb, None, None


class PatchConv2d(nn.Conv2d):
    """``nn.Conv2d`` (groups 1) whose weights' gradient is one matrix product where it applies (module
    docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and is_eager() and self._trains_by_patches(x):
            return _PatchConv.apply(x, self.weight, self.bias, self.stride, self.padding)
        return self._conv_forward(x, self.weight, self.bias)

    @torch.jit.unused  # eager only (see zoo.layers.tracing)
    def _trains_by_patches(self, x: torch.Tensor) -> bool:
        return (
            self.training
            and torch.is_grad_enabled()
            and self.weight.requires_grad
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last)
            and isinstance(self.padding, tuple)
            and self.groups == 1
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
            and not (self._forward_hooks or self._forward_pre_hooks)
            and training_kernels_may_run()
        )
