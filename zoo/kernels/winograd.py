"""The convolution kernels of dataset condensation's ConvNets (``winograd.cpp``) as ``torch.ops.zoo_conv``: their
build at first use, their shapes for ``torch.compile``, and the weight layout the Winograd kernel reads.

The operators (channels-last float32 on the CPU where a layout is named; every output computed by one thread in a
fixed order, so it does not depend on the thread count):

* ``winograd3x3(x, u, bias)``: a 3x3, stride-1, padding-1 convolution by Winograd's F(2x2, 3x3) (Lavin & Gray, "Fast
  Algorithms for Convolutional Neural Networks", CVPR 2016): every 2x2 block of outputs is 16 products over the
  input channels instead of 36, from the transformed weights ``u`` (:func:`winograd_weights`, panels of
  :data:`PANEL` output channels); ``winograd3x3_weight_grad(x, g)``: the weights' gradient by the same transforms
  (per tile ``A g A^T`` times ``B^T d B``, summed over the tiles, then ``G^T . G``; each thread's share of the tiles,
  then the threads in order);
* ``direct3x3(x, w, bias, pad)``: one input channel, the patches of an output row gathered once and multiplied by the
  weights in the same micro-kernel;
* ``plane3x3(x, w, bias, pad)`` / ``plane3x3_weight_grad(x, g, pad)``: one-channel images plane by plane in oneDNN's
  own order for one input channel (from zero, the 9 products fused-multiply-added, then the bias); the weights' and
  bias's gradients per image in float32, the images in float64;
* ``avg_pool2x2`` / ``avg_pool2x2_backward``: 2x2 average pooling with PyTorch's own bits on contiguous input;
* ``norm_relu_pool_backward``: the backward of an instance norm, ReLU and 2x2 pooling in one pass per plane;
* ``relayout(x, channels_last)``: a blocked copy between NCHW and channels-last.

They are C++ (``zoo/kernels/winograd.cpp``, shipped with the package), built by :func:`zoo.kernels.build.build_or_warn`
at the first :func:`available` like :mod:`zoo.kernels.gemv`'s kernels. The modules that run a network through them
(the inference copy, the once-differentiated pass) are condensation's: :mod:`zoo.condense.fast_convs`.
"""

from __future__ import annotations

import os
import threading

import torch

from .build import build_or_warn, built_once

__all__ = ["PANEL", "available", "winograd_weights"]

# the kernels' C++ source ships with the package beside this file; the build is keyed by its content
SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))
SOURCE_FILES = ("winograd.cpp",)
_FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp"]
_state: dict = {}
_lock = threading.Lock()

# F(2x2, 3x3)'s weight transform: U = G g G^T
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
PANEL = 16  # output channels per weight panel of the micro-kernel


def available() -> bool:
    """Whether the kernels run here (built at the first call): an AVX2 CPU, a C++ compiler, and ``ZOO_CONV`` not
    ``0``. A build that fails warns once and leaves the modules' own convolutions in use."""
    return built_once(_state, _lock, _build)


def _build() -> bool:
    built = build_or_warn(
        "zoo_conv", SOURCE_DIR, SOURCE_FILES, _FLAGS, "ZOO_CONV", "CPU convolution kernels",
        "oneDNN's convolutions run instead (slower)",
    )  # fmt: skip
    if built is None:
        return False

    @torch.library.register_fake("zoo_conv::winograd3x3")
    def _(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        return x.new_empty((n, u.shape[1] * PANEL, h, w)).contiguous(memory_format=torch.channels_last)

    @torch.library.register_fake("zoo_conv::direct3x3")
    def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, pad: int) -> torch.Tensor:
        n, _, h, wd = x.shape
        out = x.new_empty((n, w.shape[0] * PANEL, h + 2 * pad - 2, wd + 2 * pad - 2))
        return out.contiguous(memory_format=torch.channels_last)

    @torch.library.register_fake("zoo_conv::winograd3x3_weight_grad")
    def _(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x.new_empty((g.shape[1], x.shape[1], 3, 3))

    @torch.library.register_fake("zoo_conv::plane3x3")
    def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, pad: int) -> torch.Tensor:
        n, _, h, wd = x.shape
        return x.new_empty((n, w.shape[0], h + 2 * pad - 2, wd + 2 * pad - 2))

    @torch.library.register_fake("zoo_conv::plane3x3_weight_grad")
    def _(x: torch.Tensor, g: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
        return x.new_empty((g.shape[1], 1, 3, 3)), x.new_empty((g.shape[1],))

    @torch.library.register_fake("zoo_conv::relayout")
    def _(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return torch.empty_like(x, memory_format=fmt)

    @torch.library.register_fake("zoo_conv::norm_relu_pool_backward")
    def _(gp, x, y, mean, rstd, gamma) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.empty_like(x), gamma.new_empty(gamma.shape), gamma.new_empty(gamma.shape)

    @torch.library.register_fake("zoo_conv::avg_pool2x2")
    def _(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.new_empty((n, c, h // 2, w // 2))

    @torch.library.register_fake("zoo_conv::avg_pool2x2_backward")
    def _(g: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return g.new_empty((g.shape[0], g.shape[1], h, w))

    return True


def winograd_weights(weight: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``weight (K, C, 3, 3)`` as F(2x2, 3x3)'s transformed panels ``(16, K / 16, C, 16)``: ``U = G g G^T`` in
    float64, rounded once to ``dtype``; position ``p = 4 i + j`` of the 4x4 transform, 16 output channels a panel."""
    k, c = weight.shape[:2]
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ai,kcij,bj->abck", g, weight.detach().double(), g)  # (4, 4, C, K)
    return u.reshape(16, c, k // PANEL, PANEL).permute(0, 2, 1, 3).to(dtype).contiguous()
