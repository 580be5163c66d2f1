"""Faster 3x3 convolutions on an AVX2 CPU, for inference and for a gradient taken once: Winograd's F(2x2, 3x3), a
patch product for images of one channel, and 2x2 average pooling with PyTorch's bits.

A network that is only run forward, many times over (dataset condensation's real side runs ConvNet-3 over hundreds of
real images per class and iteration, without gradients) spends nearly all its time in its 3x3 convolutions, where
oneDNN already runs near the CPU's multiply-add peak. :func:`inference_convs` gives a copy of such a network whose
eligible convolutions compute the same function with fewer multiplies:

* ``winograd3x3`` (3x3, stride 1, padding 1, input channels a multiple of 8, output channels of 16): every 2x2 block
  of outputs is 16 products over the input channels instead of 36 (Lavin & Gray, "Fast Algorithms for Convolutional
  Neural Networks", CVPR 2016). The weights are transformed once per copy, in float64, and rounded to float32.
* ``direct3x3`` (3x3, stride 1, one input channel, any padding): the patches of an output row gathered once and
  multiplied by the weights in the same micro-kernel; oneDNN's kernels for a single input channel run far from peak.

A network that is differentiated once (dataset condensation's gradient matching differentiates the real side's
loss with respect to the weights, never twice) gets, within :func:`fast_backward`:

* :class:`WinogradBackward3x3`: the convolution's own forward (the same call, the same bits, so every ReLU decides as
  before); the input gradient by F(2x2, 3x3) (the transposed convolution of the output's gradient) and the weights'
  gradient by it too (``winograd3x3_weight_grad``: per tile the output gradient's transform ``A g A^T`` times the
  input's ``B^T d B``, summed over the tiles, then ``G^T . G``; faster than oneDNN's at 128 channels and closer to
  float64);
* :class:`PlaneBackward3x3`: a first layer on one-channel images (MNIST's ``Conv2d(1, K, 3)``) by ``plane3x3``,
  plane by plane in oneDNN's own order for one input channel (from zero, the 9 products fused-multiply-added, then
  the bias), so the same bits in less time, where a check on the first input of each shape finds them equal (else
  the convolution itself); its weights' and bias's gradients by ``plane3x3_weight_grad`` (per image in float32, the
  images in float64), faster than oneDNN's;
* :class:`AvgPool2x2`: 2x2 average pooling with PyTorch's own bits forward and backward, far faster than PyTorch's
  kernel on contiguous CPU tensors.

All run :mod:`zoo.kernels.winograd`'s C++ kernels (``zoo/kernels/winograd.cpp``, built at first use like
:mod:`zoo.kernels.gemv`'s), registered as ``torch.ops.zoo_conv`` operators with shape functions, so a
``torch.compile`` graph calls them and still fuses what lies between them. Condensation is their one user (DM's
real side, DC's gradient matching, the evaluation networks' training: :mod:`zoo.condense.dm`, :mod:`zoo.condense.dc`,
:mod:`zoo.condense.evaluate`). ``winograd3x3`` and ``direct3x3`` take and give channels-last float32 on the
CPU; anything else (float64, another device, gradients on) runs the module's own convolution, so
:func:`inference_convs`'s copy is for ``torch.no_grad()``.

Numerics. The result is the convolution's up to float32 rounding, in a different order: per output, the transforms
add and subtract at most 16 inputs (B^T d B) and 16 products (A^T M A), each sum over the input channels runs in order
in one accumulator. On ConvNet-3's shapes (128 channels, 16x16 and 8x8, random inputs, He-initialised weights) its
largest error against float64 is 3e-6, a third of oneDNN's float32 direct convolution's 9e-6.
``tests/kernels/test_winograd.py`` holds every output to a bound derived from the number of roundings in a row
(``gamma_n`` times the magnitudes, from the same algorithm in float64), and at 128 channels to the direct
convolution's own error. Each output of the forward is computed by one thread in a fixed order, so it does not
depend on the thread count; the weights' gradient sums each thread's share of the tiles, then the threads in order.

Speed: each kernel exists because it beat oneDNN's (or PyTorch's) at ConvNet-3's shapes on the CPU; the figures,
with the machine and the run, are in ``results/notes/code_figures.md``, and ``zoo bench condense-speed`` measures a
whole iteration (``results/condense/speed.md``).
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.winograd import PANEL, available, winograd_weights

__all__ = [
    "AvgPool2x2",
    "DirectConv3x3",
    "NormReLUPool2x2",
    "PlaneBackward3x3",
    "Winograd3x3",
    "WinogradBackward3x3",
    "fast_backward",
    "inference_convs",
]

_plane_exact: dict = {}  # (shapes, padding, threads) -> whether plane3x3 gives F.conv2d's bits here


def _fits(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and not torch.is_grad_enabled()


def _plain3x3(conv: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` 3x3, stride 1, zero padding, no dilation or groups, output channels a multiple of 16."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.out_channels % PANEL == 0
    )


class Winograd3x3(nn.Module):
    """A ``Conv2d(C, K, 3, padding=1)`` (C a multiple of 8, K of 16) run by F(2x2, 3x3) on channels-last float32
    CPU input without gradients; otherwise by the convolution it was made from."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv, self.kernels = conv, available()
        self.register_buffer("u", winograd_weights(conv.weight), persistent=False)
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("b", bias.detach().to(torch.float32).contiguous(), persistent=False)

    @staticmethod
    def eligible(conv: nn.Module) -> bool:
        return _plain3x3(conv) and conv.padding == (1, 1) and conv.in_channels % 8 == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.kernels and _fits(x)):
            return self.conv(x)
        return torch.ops.zoo_conv.winograd3x3(x, self.u, self.b)


class DirectConv3x3(nn.Module):
    """A ``Conv2d(1, K, 3, padding=p)`` (K a multiple of 16) run as a product with each output row's patches on
    channels-last float32 CPU input without gradients; otherwise by the convolution it was made from."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv, self.kernels = conv, available()
        k, c = conv.out_channels, conv.in_channels
        w = conv.weight.detach().to(torch.float32).permute(1, 2, 3, 0).reshape(c * 9, k // PANEL, PANEL)
        self.register_buffer("w", w.permute(1, 0, 2).contiguous(), persistent=False)
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("b", bias.detach().to(torch.float32).contiguous(), persistent=False)
        self.pad = conv.padding[0]

    @staticmethod
    def eligible(conv: nn.Module) -> bool:
        return _plain3x3(conv) and conv.padding[0] == conv.padding[1] and conv.in_channels == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.kernels and _fits(x)):
            return self.conv(x)
        return torch.ops.zoo_conv.direct3x3(x, self.w, self.b, self.pad)


class _AvgPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.hw = tuple(x.shape[-2:])
        return torch.ops.zoo_conv.avg_pool2x2(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        return torch.ops.zoo_conv.avg_pool2x2_backward(g, *ctx.hw)


class AvgPool2x2(nn.Module):
    """``nn.AvgPool2d(2, 2)`` with PyTorch's own bits, forward and backward (its CPU kernels' order: a window summed
    row by row from zero, then divided by 4; each input's gradient ``0 + g / 4``), far faster on contiguous
    float32 CPU input (PyTorch's kernel for that layout is slow); any other input runs ``F.avg_pool2d``. Not twice
    differentiable: for a pass whose gradient is not differentiated again."""

    def __init__(self):
        super().__init__()
        self.kernels = available()

    @staticmethod
    def eligible(pool: nn.Module) -> bool:
        two = (2, (2, 2))
        return (
            type(pool) is nn.AvgPool2d
            and pool.kernel_size in two
            and pool.stride in two
            and pool.padding in (0, (0, 0))
            and not pool.ceil_mode
            and pool.divisor_override is None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernels and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and x.is_contiguous():
            return _AvgPool2x2.apply(x)
        return F.avg_pool2d(x, 2, 2)


class _NormReLUPool(torch.autograd.Function):
    """``avg_pool2d(relu(group_norm(x, C, gamma, beta, eps)), 2)`` with PyTorch's own operators forward (the same
    bits), whose backward is one pass per plane (``norm_relu_pool_backward``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> torch.Tensor:
        n, c, h, w = x.shape
        out, mean, rstd = torch.ops.aten.native_group_norm(x, gamma, beta, n, c, h * w, c, eps)
        y = out.relu_()
        ctx.save_for_backward(x, y, mean, rstd, gamma)
        return torch.ops.zoo_conv.avg_pool2x2(y)

    @staticmethod
    def backward(ctx, gp: torch.Tensor):
        x, y, mean, rstd, gamma = ctx.saved_tensors
        dx, dgamma, dbeta = torch.ops.zoo_conv.norm_relu_pool_backward(gp, x, y, mean, rstd, gamma)
        return dx, dgamma, dbeta, None


class NormReLUPool2x2(nn.Module):
    """An instance norm (``GroupNorm(C, C)`` with weights), ReLU and 2x2 average pooling as one module: forward by
    PyTorch's own operators (the same bits), backward in one pass per (image, channel) plane
    (``norm_relu_pool_backward``: the three gradients without the two full-size tensors between them, within
    float32's rounding of PyTorch's). On contiguous float32 CPU input with an even height and a width a multiple of
    8; otherwise the three modules it was made from. Not twice differentiable."""

    def __init__(self, norm: nn.GroupNorm, act: nn.Module, pool: nn.Module):
        super().__init__()
        self.norm, self.act, self.pool, self.kernels = norm, act, pool, available()

    @staticmethod
    def eligible(norm: nn.Module, act: nn.Module, pool: nn.Module) -> bool:
        return (
            type(norm) is nn.GroupNorm
            and norm.num_groups == norm.num_channels
            and norm.affine
            and type(act) is nn.ReLU
            and AvgPool2x2.eligible(pool)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fits = x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and x.is_contiguous()
        if not (self.kernels and fits and x.shape[2] % 2 == 0 and x.shape[3] % 8 == 0):
            return self.pool(self.act(self.norm(x)))
        return _NormReLUPool.apply(x, self.norm.weight, self.norm.bias, self.norm.eps)


def _nchw(x: torch.Tensor) -> bool:
    """Whether ``x`` is laid out NCHW and not also channels-last (as a tensor of one pixel or one channel is)."""
    return x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory, by the kernels' blocked copy where it is not already."""
    return x if x.is_contiguous(memory_format=torch.channels_last) else torch.ops.zoo_conv.relayout(x, True)


class _ConvWinogradBackward(torch.autograd.Function):
    """``F.conv2d(x, w, b, padding=1)`` (the same call, the same bits; with the transformed weights ``u``, by F(2x2,
    3x3) in ``x``'s layout instead), whose gradients run by F(2x2, 3x3): the input's as the convolution of the
    output's gradient with the flipped, transposed weights ``v``; the weights' as the sum over tiles of the
    transformed gradient times the transformed input (``winograd3x3_weight_grad``); the bias's as the gradient's
    sum."""

    @staticmethod
    def forward(
        ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, v: torch.Tensor, u: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(x, w, v)
        if u is None:
            return F.conv2d(x, w, b, padding=1)
        y = torch.ops.zoo_conv.winograd3x3(_channels_last(x), u, b.contiguous())
        return torch.ops.zoo_conv.relayout(y, False) if _nchw(x) else y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, w, v = ctx.saved_tensors
        g_cl = _channels_last(g)
        gx = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.zoo_conv.winograd3x3(g_cl, v, g.new_zeros(x.shape[1]))
            if _nchw(x):
                gx = torch.ops.zoo_conv.relayout(gx, False)
        gw = torch.ops.zoo_conv.winograd3x3_weight_grad(x, g_cl) if ctx.needs_input_grad[1] else None
        gb = g.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None


class WinogradBackward3x3(nn.Module):
    """A ``Conv2d(C, K, 3, padding=1)`` (:meth:`Winograd3x3.eligible`, with a bias) whose forward is the
    convolution's own (with ``exact_forward`` off, by F(2x2, 3x3): faster, rounded in another order) and whose
    gradients run by F(2x2, 3x3) on float32 CPU input (the weights transformed once per version of the weights);
    the parameters stay the convolution's. Not twice differentiable."""

    def __init__(self, conv: nn.Conv2d, exact_forward: bool = True):
        super().__init__()
        self.conv, self.kernels, self.exact_forward, self._v = conv, available(), exact_forward, None

    @staticmethod
    def eligible(conv: nn.Module) -> bool:
        return Winograd3x3.eligible(conv) and conv.bias is not None and conv.in_channels % PANEL == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv.weight
        if not (self.kernels and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4):
            return self.conv(x)
        key = (w.data_ptr(), w._version)
        if self._v is None or self._v[0] != key:
            u = None if self.exact_forward else winograd_weights(w)
            self._v = (key, winograd_weights(w.detach().flip(2, 3).transpose(0, 1)), u)
        return _ConvWinogradBackward.apply(x, w, self.conv.bias, *self._v[1:])


def _plane_forward_exact(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, pad: int) -> bool:
    """Whether ``plane3x3`` gives ``F.conv2d``'s own bits for this shape and thread count, checked once per key on
    the first input of that shape: oneDNN's order for one input channel is an implementation detail of its kernel
    (measured on its AVX2 one), and another CPU's kernel may sum in another order."""
    key = (tuple(x.shape), tuple(w.shape), pad, torch.get_num_threads())
    if key not in _plane_exact:
        with torch.no_grad():
            theirs = F.conv2d(x, w, b, padding=pad)
            _plane_exact[key] = torch.equal(torch.ops.zoo_conv.plane3x3(x, w, b, pad), theirs)
    return _plane_exact[key]


class _ConvPlaneBackward(torch.autograd.Function):
    """``F.conv2d(x, w, b, padding=pad)`` of one-channel images (by ``plane3x3`` where it gives the same bits, else
    the same call), whose weights' and bias's gradients run by ``plane3x3_weight_grad``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, pad: int, exact: bool) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.pad = pad
        return torch.ops.zoo_conv.plane3x3(x, w, b, pad) if exact else F.conv2d(x, w, b, padding=pad)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, w = ctx.saved_tensors
        gx = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(
                g, x, w, None, (1, 1), (ctx.pad, ctx.pad), (1, 1), False, (0, 0), 1, (True, False, False)
            )[0]
        gw, gb = torch.ops.zoo_conv.plane3x3_weight_grad(x, g, ctx.pad)
        return gx, gw, gb, None, None


class PlaneBackward3x3(nn.Module):
    """A ``Conv2d(1, K, 3, padding=p)`` with a bias (a first layer on one-channel images) whose forward keeps the
    convolution's bits (by ``plane3x3``, faster than oneDNN's kernel for one channel, where it gives them on
    this CPU; else the convolution itself) and whose weights' and bias's gradients run by ``plane3x3_weight_grad``,
    within float32's rounding, on contiguous float32 CPU input. Not twice differentiable."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv, self.kernels, self.pad = conv, available(), conv.padding[0]

    @staticmethod
    def eligible(conv: nn.Module) -> bool:
        return (
            type(conv) is nn.Conv2d
            and conv.in_channels == 1
            and conv.kernel_size == (3, 3)
            and conv.stride == (1, 1)
            and conv.dilation == (1, 1)
            and conv.groups == 1
            and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple)
            and conv.padding[0] == conv.padding[1]
            and conv.bias is not None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.conv.weight, self.conv.bias
        if not (self.kernels and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4):
            return self.conv(x)
        x = x.contiguous()
        return _ConvPlaneBackward.apply(x, w, b, self.pad, _plane_forward_exact(x, w.detach(), b.detach(), self.pad))


@contextlib.contextmanager
def fast_backward(net: nn.Module, exact_forward: bool = True):
    """Within the block, ``net``'s 2x2 average poolings run by :class:`AvgPool2x2` (the same bits), its eligible 3x3
    convolutions by :class:`WinogradBackward3x3` (the same forward; the gradients rounded in another order, within
    float32's rounding), a one-channel first layer by :class:`PlaneBackward3x3`, and a block that declares
    ``fused_tail = ("norm", "act", "pool")`` (its forward ends ``pool(act(norm(.)))``) its three by
    :class:`NormReLUPool2x2`; restored after. For a pass that is differentiated once. ``exact_forward=False`` runs
    the 3x3 convolutions' forward by F(2x2, 3x3) too: for training, where the weights leave the reference's bits
    after the first update anyway. A network whose parameters are not on the CPU is left as it is (the kernels are
    not even built)."""
    swapped = []

    def swap(parent: nn.Module, child: str, new: nn.Module) -> None:
        swapped.append((parent, child, getattr(parent, child)))
        setattr(parent, child, new)

    on_cpu = all(p.device.type == "cpu" for p in net.parameters())
    if on_cpu and available():
        fused = set()
        for m in list(net.modules()):
            names = getattr(type(m), "fused_tail", None)
            if names == ("norm", "act", "pool") and NormReLUPool2x2.eligible(m.norm, m.act, m.pool):
                fused.add(id(m.pool))
                new = NormReLUPool2x2(m.norm, m.act, m.pool)
                swap(m, "norm", new)
                swap(m, "act", nn.Identity())
                swap(m, "pool", nn.Identity())
        for name, m in list(net.named_modules()):
            if id(m) in fused or isinstance(m, NormReLUPool2x2):
                continue
            new = AvgPool2x2() if AvgPool2x2.eligible(m) else None
            if new is None and WinogradBackward3x3.eligible(m):
                new = WinogradBackward3x3(m, exact_forward)
            if new is None and PlaneBackward3x3.eligible(m):
                new = PlaneBackward3x3(m)
            if new is not None:
                parent_name, _, child = name.rpartition(".")
                swap(net.get_submodule(parent_name), child, new)
    try:
        yield net
    finally:
        for parent, child, m in reversed(swapped):
            setattr(parent, child, m)


def inference_convs(net: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of ``net`` (``net`` itself with ``inplace``; in eval or train mode as it is; same weights) whose
    eligible 3x3 convolutions run by :class:`Winograd3x3` or :class:`DirectConv3x3`; ``net`` unchanged when the
    kernels cannot run here or no convolution is eligible. For forward passes without gradients; convert the layout
    (``.to(memory_format=...)``) before, not after: the transformed weights keep their own."""
    if not available():
        return net
    convs = [(name, m) for name, m in net.named_modules() if Winograd3x3.eligible(m) or DirectConv3x3.eligible(m)]
    if not convs:
        return net
    out = net if inplace else copy.deepcopy(net)
    for name, _ in convs:
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name)
        conv = getattr(parent, child)
        setattr(parent, child, Winograd3x3(conv) if Winograd3x3.eligible(conv) else DirectConv3x3(conv))
    return out
