"""Decomposed large-kernel depthwise convolution (SLaK) and its fused inference form.

Training form, :class:`DecomposedLargeKernel`: three parallel depthwise branches, each a conv without bias then a
BatchNorm, summed: ``vertical`` (K x s), ``horizontal`` (s x K) and ``small`` (s x s; absent when s >= K), with
per-axis "same" padding ``(kh // 2, kw // 2)`` (stride 1). SLaK uses K = 51..13 and s = 5.

Inference form, :class:`FusedLargeKernel` (``DecomposedLargeKernel.fuse()``): each BN folded into its conv and the
s x s kernel added to the centre of the K x s kernel, leaving two depthwise convs with bias. (Merging everything
into one dense K x K kernel would also be exact, but costs K/(2s) times the multiply-adds.)

How the fused form runs (``impl``):

* ``"conv"``: two ``F.conv2d`` depthwise calls. On channels-last memory this is oneDNN on CPU and cuDNN on CUDA.
* ``"matmul"``: each depthwise conv as one batched GEMM over channels with a banded (Toeplitz) matrix built from
  the kernel. For the K x s conv, output column x of channel c is ``sum_j T_j(c) @ x[:, x + j - s//2]`` with
  ``T_j(c)[y_out, y_in] = w[c, y_in - y_out + K//2, j]`` (H x H); the s shifted inputs are stacked so that the
  whole conv is one ``bmm`` of (C, H, s*H) by (C, s*H, N*W'). The batch images sit side by side with s - 1
  zero columns between them, so no per-image loop is needed. The zero padding of the image costs nothing (the
  band is clipped to the image), so with K >= H the matrix form does H/K times the direct conv's multiply-adds,
  at the GEMM rate rather than the much lower rate of a large depthwise kernel. The banded matrices depend on
  the input size and are cached per size (rebuilt when the weights change).
* ``"auto"`` (default): ``"conv"``. Measured on a small shared CPU (``results/notes/code_figures.md``), the
  channels-last depthwise conv beat the banded-matrix form at the SLaK-T shapes measured (56 x 56 and 28 x 28,
  batch 1 and 8): the banded matrices of a stage-1 kernel are 8 MB per conv (against 0.25 MB of taps), so the
  GEMM form is memory-bound on a busy machine, and the copies it needs cost as much as the GEMMs. On CUDA,
  cuDNN's channels-last depthwise kernels are the standard choice (no custom extension); the banded form runs
  there too but was not measured. ``"matmul"`` stays selectable for machines where it wins.

``impl=None`` takes the default from the environment variable ``ZOO_LARGE_KERNEL_IMPL`` (else ``"auto"``), read
when the module is built; an explicit ``impl`` is never overridden.
"""

import os
from collections.abc import Sequence

import torch
from torch import nn

from .tracing import is_eager

__all__ = [
    "BN_EPS",
    "fold_batchnorm",
    "default_impl",
    "IMPLS",
    "ConvBN",
    "DecomposedLargeKernel",
    "FusedLargeKernel",
    "banded_matrices",
    "depthwise_matmul",
]

IMPLS = ("auto", "conv", "matmul")


BN_EPS = 1e-5  # the BatchNorm eps of every large-kernel branch (PyTorch's default, as in the authors' code)


def fold_batchnorm(
    weight: torch.Tensor,
    bn_weight: torch.Tensor,
    bn_bias: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    eps: float = BN_EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the one conv equal to ``conv(weight)`` followed by BatchNorm with running statistics."""
    scale = bn_weight * torch.rsqrt(running_var + eps)
    return weight * scale.view(-1, *([1] * (weight.ndim - 1))), bn_bias - running_mean * scale


def default_impl() -> str:
    """The fused kernels' path when no argument says: ``ZOO_LARGE_KERNEL_IMPL``, else ``"auto"``."""
    return _check_impl(os.environ.get("ZOO_LARGE_KERNEL_IMPL", "auto"))


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"large-kernel impl must be one of {IMPLS}, got {impl!r}")
    return impl


def _pair(k: int | Sequence[int]) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else (int(k[0]), int(k[1]))


class ConvBN(nn.Module):
    """Depthwise conv (no bias, stride 1, per-axis "same" padding) then BatchNorm (or nothing, ``bn=False``)."""

    def __init__(self, dim: int, kernel_size: int | Sequence[int], bn: bool = True):
        super().__init__()
        kh, kw = _pair(kernel_size)
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"kernel sizes must be odd for 'same' padding, got {(kh, kw)}")
        self.conv = nn.Conv2d(dim, dim, (kh, kw), padding=(kh // 2, kw // 2), groups=dim, bias=False)
        self.bn = nn.BatchNorm2d(dim, eps=BN_EPS) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    @torch.no_grad()
    def fuse(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the single conv equal to conv + BN (running statistics)."""
        w = self.conv.weight
        if isinstance(self.bn, nn.Identity):
            return w.clone(), w.new_zeros(w.shape[0])
        bn = self.bn
        return fold_batchnorm(w, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)


class DecomposedLargeKernel(nn.Module):
    """``vertical(x) + horizontal(x) + small(x)``: (K x s), (s x K) and (s x s) depthwise conv + BN branches."""

    def __init__(self, dim: int, kernel_size: int, small_kernel: int = 5, bn: bool = True):
        super().__init__()
        self.dim, self.kernel_size, self.small_kernel = dim, kernel_size, small_kernel
        self.vertical = ConvBN(dim, (kernel_size, small_kernel), bn)
        self.horizontal = ConvBN(dim, (small_kernel, kernel_size), bn)
        self.small = ConvBN(dim, small_kernel, bn) if small_kernel < kernel_size else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.vertical(x) + self.horizontal(x)
        return out + self.small(x) if self.small is not None else out

    @torch.no_grad()
    def fuse(self, impl: str | None = None) -> "FusedLargeKernel":
        """The equivalent :class:`FusedLargeKernel` (BN folded, the small kernel added into the vertical one)."""
        wv, bv = self.vertical.fuse()
        wh, bh = self.horizontal.fuse()
        if self.small is not None:
            ws, bs = self.small.fuse()
            pad = (self.kernel_size - self.small_kernel) // 2
            wv[:, :, pad : pad + self.small_kernel, :] += ws
            bv = bv + bs
        fused = FusedLargeKernel(self.dim, self.kernel_size, self.small_kernel, impl=impl)
        fused.to(device=wv.device, dtype=wv.dtype)
        fused.vertical.weight.copy_(wv)
        fused.vertical.bias.copy_(bv)
        fused.horizontal.weight.copy_(wh)
        fused.horizontal.bias.copy_(bh)
        return fused


class FusedLargeKernel(nn.Module):
    """Inference form: a (K x s) and an (s x K) depthwise conv with bias, summed; see the module docstring."""

    def __init__(self, dim: int, kernel_size: int, small_kernel: int = 5, impl: str | None = None):
        super().__init__()
        self.dim, self.kernel_size, self.small_kernel = dim, kernel_size, small_kernel
        k, s = kernel_size, small_kernel
        self.vertical = nn.Conv2d(dim, dim, (k, s), padding=(k // 2, s // 2), groups=dim, bias=True)
        self.horizontal = nn.Conv2d(dim, dim, (s, k), padding=(s // 2, k // 2), groups=dim, bias=True)
        self.impl = default_impl() if impl is None else _check_impl(impl)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def extra_repr(self) -> str:
        return f"impl={self.impl!r}"

    @torch.jit.unused  # eager only (see zoo.layers.tracing)
    def resolve_impl(self, x: torch.Tensor) -> str:
        """The path this input takes: ``"conv"`` or ``"matmul"``."""
        if torch.jit.is_tracing():  # counting tools (fvcore) see the convs, i.e. the model's nominal MACs
            return "conv"
        return "conv" if self.impl == "auto" else self.impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the banded-matrix path (and its cache) is eager's; traced and scripted graphs hold the two convs
        if not torch.jit.is_scripting() and is_eager() and self.resolve_impl(x) == "matmul":
            mv, mh = self._matrices(x.shape[-2], x.shape[-1], x.dtype, x.device)
            return depthwise_matmul(x, mv, mh, self.vertical.bias + self.horizontal.bias, self.small_kernel)
        return self.vertical(x) + self.horizontal(x)

    def _matrices(self, h: int, w: int, dtype: torch.dtype, device: torch.device):
        wv, wh = self.vertical.weight, self.horizontal.weight
        key = (h, w, dtype, device, wv._version, wv.data_ptr(), wh._version, wh.data_ptr(), torch.is_grad_enabled())
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= 4:  # a few input sizes at most; drop stale entries
                self._cache.clear()
            hit = self._cache[key] = banded_matrices(wv.to(dtype), wh.to(dtype), h, w)
        return hit


def _toeplitz(taps: torch.Tensor, n: int) -> torch.Tensor:
    """(C, n, n) with ``T[c, out, in] = taps[c, in - out + K // 2]`` inside the band, 0 outside."""
    k = taps.shape[-1]
    idx = torch.arange(n, device=taps.device)
    offset = idx[None, :] - idx[:, None] + k // 2  # (out, in)
    inside = (offset >= 0) & (offset < k)
    return taps[:, offset.clamp(0, k - 1)] * inside


def banded_matrices(
    w_vertical: torch.Tensor, w_horizontal: torch.Tensor, h: int, w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The banded matrices of a (K x s) and an (s x K) depthwise kernel for an h x w map.

    Returns ``(mv, mh)``: ``mv`` (C, h, s*h) with ``mv[c, :, j*h:(j+1)*h] = T(w_vertical[c, 0, :, j])`` and
    ``mh`` (C, s*w, w) with ``mh[c, i*w:(i+1)*w, :] = T(w_horizontal[c, 0, i, :])^T``.
    """
    s = w_vertical.shape[-1]
    mv = torch.cat([_toeplitz(w_vertical[:, 0, :, j], h) for j in range(s)], dim=2)
    mh = torch.cat([_toeplitz(w_horizontal[:, 0, i, :], w).transpose(1, 2) for i in range(s)], dim=1)
    return mv.contiguous(), mh.contiguous()


def depthwise_matmul(
    x: torch.Tensor, mv: torch.Tensor, mh: torch.Tensor, bias: torch.Tensor | None, small_kernel: int
) -> torch.Tensor:
    """``conv(x, K x s) + conv(x, s x K) + bias`` through the banded matrices of :func:`banded_matrices`.

    ``x`` is (N, C, H, W) in any memory format; the result is (N, C, H, W) in channels-last memory.
    """
    n, c, h, w = x.shape
    s, p = small_kernel, small_kernel // 2
    wp, hp = w + 2 * p, h + 2 * p

    # K x s: layout (C, H, N * W') with the images side by side, W' = W + 2p zero-padded columns each
    xv = x.new_zeros(c, h, n * wp + 2 * p)
    xv[:, :, : n * wp].view(c, h, n, wp)[..., p : p + w] = x.permute(1, 2, 0, 3)
    stacked = torch.cat([xv[:, :, j : j + n * wp] for j in range(s)], dim=1)  # (C, s*H, N*W')
    bias = bias.view(c, 1, 1) if bias is not None else None
    out_v = torch.bmm(mv, stacked) if bias is None else torch.baddbmm(bias, mv, stacked)
    out_v = out_v.view(c, h, n, wp)[..., :w]  # (C, H, N, W); the 2p columns past each image are junk

    # s x K: layout (C, N * H', W) with the images stacked, H' = H + 2p zero-padded rows each
    xh = x.new_zeros(c, n * hp + 2 * p, w)
    xh[:, : n * hp].view(c, n, hp, w)[:, :, p : p + h] = x.permute(1, 0, 2, 3)
    stacked = torch.cat([xh[:, i : i + n * hp] for i in range(s)], dim=2)  # (C, N*H', s*W)
    out_h = torch.bmm(stacked, mh).view(c, n, hp, w)[:, :, :h]  # (C, N, H, W)

    out = x.new_empty(n, h, w, c)
    torch.add(out_v.permute(2, 1, 3, 0), out_h.permute(1, 2, 3, 0), out=out)
    return out.permute(0, 3, 1, 2)
