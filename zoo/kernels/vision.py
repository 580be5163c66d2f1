"""The MetaFormer vision models' training kernels (``vision.cpp``, ``torch.ops.zoo_vision``), float32 on a CPU
with AVX2: a depthwise convolution's forward pass and weights' gradient (stride 1, zero padding, channels-last maps,
eight channels a vector), StarReLU forward and backward in one pass each, the matrix product of token-major
activations with a weight, and multi-head self-attention.

What a ConvFormer's training step waits on longest after its matrix products is oneDNN's weights' gradient of its
depthwise 7x7 convolutions, which runs several times slower than their forward pass over the same multiply-adds;
their forward pass itself runs well below the multiply-add peak.

* :func:`depthwise_forward`: ``y[n, c, ho, wo] = sum_{i, j} x[n, c, ho + i - ph, wo + j - pw] * w[c, 0, i, j]``,
  one float32 accumulator an output, fused multiply-adds over the taps in ``(i, j)`` order: the same order, so the
  same bits, as oneDNN's direct depthwise convolution. The input's gradient is the same call on the output's
  gradient with the kernel flipped and the complementary padding.
* :func:`depthwise_weight_grad`: ``dw[c, i, j] = sum_{n, ho, wo} x[n, c, ho + i - ph, wo + j - pw] * g[n, c, ho, wo]``,
  float32 fused multiply-adds over each image's outputs, the images' sums added in float64, by one thread an output
  in a fixed order (the result does not depend on the thread count). Its error is at most ``gamma_{Ho Wo}`` (a
  float32 sum of ``Ho Wo`` products) times ``sum |x| |g|``, plus the float64 sum's and the final rounding's;
  oneDNN's sums its ``N Ho Wo`` products in float32.
* :func:`star_relu_forward` / :func:`star_relu_backward`: ``s * relu(x) ** 2 + b`` and its three gradients in one
  pass over the tensor each, where autograd's chain of ``relu``, ``mul`` and ``addcmul`` makes three passes forward
  and four backward, each with a tensor of the input's size to allocate. The elementwise values are the chain's bits
  (``r s`` rounded, then the fused multiply-add of ATen's ``addcmul``; the backward's products one by one); the
  scalars' gradients are sums over fixed chunks in float64.

* :func:`matmul`: ``a @ b (+ bias)`` with ``a``'s rows contiguous (thousands of token rows, 8 to 2048 features)
  and ``b`` a weight or its transpose: a Linear layer's output and its input's gradient. ``b`` is packed into panels
  of 16 columns; a tile of 6 rows by 16 columns keeps its accumulators in registers over the whole of ``K`` and reads
  ``a``'s rows in place. The BLAS GEMM blocks ``K`` and packs ``a`` too, which on these shapes (``K`` of 64 to 2048,
  every row read once a tile column) costs more than it saves: the BLAS runs well below its large-matrix rate on a
  MetaFormer's first stages (``tools/layer_kernels.py`` times both). Each output is one float32 accumulator of fused
  multiply-adds in ``k`` order, then the bias: at most ``gamma_K sum_k |a_ik| |b_kj|`` from the exact product, the
  same bits on any thread count. :func:`matmul_star_relu` also writes StarReLU of each output as its tile is stored
  (an MLP's first layer), and :func:`matmul_star_relu_backward` applies StarReLU's backward to each output of the
  hidden gradient's product before it is stored (its second layer's backward): each the bits of the two calls, but
  one pass over the hidden activation fewer.
* :func:`gelu`: GELU (``approximate="none"``) and its slope ``Phi(x) + x phi(x)`` in one pass, with a rational
  ``erf`` (:func:`erf`, within :data:`ERF_ERROR` of the exact value at every float32) and a polynomial ``exp``
  (within :data:`EXP_ERROR`, relative), in less time than ATen's ``gelu`` and ``gelu_backward`` (whose ``erf``,
  Abramowitz and Stegun's 7.1.26, is less accurate than this one): the ``erf`` and ``exp`` are evaluated once for
  both, where ATen's backward evaluates them again. Their evaluation, not memory traffic, is what GELU's time is.
  :func:`matmul_gelu` computes them as an MLP's first product's tiles are stored, and :func:`matmul_times`
  multiplies the hidden gradient's product by the slope as its tiles are stored: GELU's backward is then one
  multiply, and the MLP keeps the slope where it kept the product.
* :func:`weight_grad`: a Linear layer's weights' gradient ``g.t() @ x`` over thousands of token rows, by the BLAS on
  one part of the rows a thread, the parts' sums added in order. The BLAS's own threads split the few outputs, and
  each reads every row.

* :func:`attention`: CAFormer's multi-head self-attention ``softmax(q k^T / sqrt d) v``, forward and backward
  (:func:`attention_backward`), q, k and v read in place from the qkv product and the output written in the tokens'
  layout the projection reads, so the operators' permutes into heads and back (and the three gradients' stacking)
  go. A task is one head of one image: its scores (a few hundred tokens square) stay in its buffer in cache, and its
  products are the tiles above. The softmax's exp is the kernels' own (:data:`EXP_ERROR`); the backward recomputes
  the scores (the same bits) and the weights from each row's log-sum-exp, as ``scaled_dot_product_attention``'s
  flash backward does, and saves no more. Each head is one thread's: the same bits on any thread count, where
  PyTorch's attention backward scales poorly over threads on these small heads. The error bounds of the output and
  of every gradient are derived in ``tests/tolerances.py`` (``attention_bounds``).

``tools/layer_kernels.py`` times each against the operator it stands in for (``results/train_throughput.md``).

:func:`available` says whether the kernels run here (an AVX2 CPU, a C++ compiler, and ``ZOO_VISION_KERNELS`` not
``0``). ``tests/kernels/test_vision_kernels.py`` checks the bits, the error bounds and the gradients.
"""

from __future__ import annotations

import os
import threading

import torch

from .build import build_or_warn, built_once

__all__ = [
    "LANES",
    "attention",
    "attention_backward",
    "available",
    "depthwise_forward",
    "depthwise_weight_grad",
    "erf",
    "gelu",
    "matmul",
    "matmul_gelu",
    "matmul_star_relu",
    "matmul_star_relu_backward",
    "matmul_times",
    "star_relu_backward",
    "star_relu_backward_",
    "star_relu_forward",
    "weight_grad",
]

SOURCE_DIR = os.path.dirname(os.path.abspath(__file__))
SOURCE_FILES = ("vision.cpp", "simd.h")
FLAGS = ["-O3", "-mavx2", "-mfma", "-ffp-contract=off", "-fopenmp"]
LANES = 8  # channels a vector: the channel count must be a multiple of it
# The largest |erf(z) - erf_kernel(z)| over every float32 z (5.92 units of 2 ** -24, the rounding of a float32 just
# under 1; exhaustive in the slow tests), and a bound on the relative error of the kernels' exp (a degree-7 Taylor
# polynomial on |r| <= ln 2 / 2: truncation 0.13 u, the reduction's rounding 0.7 u, the coefficients' 1.5 u,
# Horner's seven fused multiply-adds 10 u, u = 2 ** -24)
ERF_ERROR = 3.527e-7
EXP_ERROR = 13 * 2.0**-24
_state: dict = {}
_lock = threading.Lock()


def available() -> bool:
    """Whether the kernel runs here (built at the first call). A build that fails warns once, and oneDNN's
    gradient is used instead."""
    return built_once(_state, _lock, _build)


def _build() -> bool:
    built = build_or_warn(
        "zoo_vision", SOURCE_DIR, SOURCE_FILES, FLAGS, "ZOO_VISION_KERNELS", "vision training kernels",
        "PyTorch's own operators run instead (slower)",
    )  # fmt: skip
    if built is None:
        return False

    @torch.library.register_fake("zoo_vision::depthwise_forward")
    def _(x: torch.Tensor, w: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
        n, c, h, wd = x.shape
        out = x.new_empty((n, c, h + 2 * ph - w.shape[2] + 1, wd + 2 * pw - w.shape[3] + 1))
        return out.contiguous(memory_format=torch.channels_last)

    @torch.library.register_fake("zoo_vision::depthwise_weight_grad")
    def _(x: torch.Tensor, g: torch.Tensor, kh: int, kw: int, ph: int, pw: int) -> torch.Tensor:
        return x.new_empty((x.shape[1], 1, kh, kw))

    @torch.library.register_fake("zoo_vision::star_relu_forward")
    def _(x: torch.Tensor, s: float, b: float) -> torch.Tensor:
        return torch.empty_like(x)

    @torch.library.register_fake("zoo_vision::star_relu_backward_")
    def _(g: torch.Tensor, x: torch.Tensor, s: float) -> tuple[torch.Tensor, torch.Tensor]:
        return x.new_empty((1,)), x.new_empty((1,))

    @torch.library.register_fake("zoo_vision::star_relu_backward")
    def _(g: torch.Tensor, x: torch.Tensor, s: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.empty_like(x), x.new_empty((1,)), x.new_empty((1,))

    @torch.library.register_fake("zoo_vision::matmul")
    def _(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return a.new_empty((a.shape[0], b.shape[1]))

    @torch.library.register_fake("zoo_vision::matmul_star_relu")
    def _(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, s: float, sb: float):
        return a.new_empty((a.shape[0], b.shape[1])), a.new_empty((a.shape[0], b.shape[1]))

    @torch.library.register_fake("zoo_vision::matmul_star_relu_backward")
    def _(g: torch.Tensor, w: torch.Tensor, h: torch.Tensor, s: float):
        return torch.empty_like(h), h.new_empty((1,)), h.new_empty((1,))

    @torch.library.register_fake("zoo_vision::erf")
    def _(x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)

    @torch.library.register_fake("zoo_vision::gelu")
    def _(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.empty_like(x), torch.empty_like(x)

    @torch.library.register_fake("zoo_vision::matmul_gelu")
    def _(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None):
        return a.new_empty((a.shape[0], b.shape[1])), a.new_empty((a.shape[0], b.shape[1]))

    @torch.library.register_fake("zoo_vision::weight_grad")
    def _(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return g.new_empty((g.shape[1], x.shape[1]))

    @torch.library.register_fake("zoo_vision::attention")
    def _(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c3 = qkv.shape
        return qkv.new_empty((b, n, c3 // 3)), qkv.new_empty((b, heads, n))

    @torch.library.register_fake("zoo_vision::attention_backward")
    def _(g: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, heads: int) -> torch.Tensor:
        return torch.empty_like(qkv)

    @torch.library.register_fake("zoo_vision::matmul_times")
    def _(g: torch.Tensor, w: torch.Tensor, d: torch.Tensor):
        return torch.empty_like(d)

    return True


def depthwise_forward(x: torch.Tensor, w: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    """``conv2d(x, w, padding=padding, groups=C)`` (stride 1) of a channels-last ``x``; channels-last result."""
    return torch.ops.zoo_vision.depthwise_forward(x, w, padding[0], padding[1])


def depthwise_weight_grad(x: torch.Tensor, g: torch.Tensor, kernel_size: tuple[int, int], padding: tuple[int, int]):
    """The ``(C, 1, kh, kw)`` weights' gradient of ``conv2d(x, w, padding=padding, groups=C)`` given the output's
    gradient ``g`` (stride 1), both channels-last."""
    return torch.ops.zoo_vision.depthwise_weight_grad(x, g, kernel_size[0], kernel_size[1], padding[0], padding[1])


def star_relu_forward(x: torch.Tensor, scale: float, bias: float) -> torch.Tensor:
    """``scale * relu(x) ** 2 + bias`` of a contiguous float32 ``x``."""
    return torch.ops.zoo_vision.star_relu_forward(x, scale, bias)


def star_relu_backward(g: torch.Tensor, x: torch.Tensor, scale: float):
    """``(dx, dscale, dbias)`` of :func:`star_relu_forward` given the output's gradient ``g`` (both contiguous)."""
    return torch.ops.zoo_vision.star_relu_backward(g, x, scale)


def star_relu_backward_(g: torch.Tensor, x: torch.Tensor, scale: float):
    """:func:`star_relu_backward` with ``dx`` written over ``g``; returns ``(dscale, dbias)``."""
    return torch.ops.zoo_vision.star_relu_backward_(g, x, scale)


def matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b (+ bias)`` of float32 CPU matrices, ``a``'s rows contiguous, ``b`` in any layout (a weight or its
    transpose); contiguous result. Each output is one float32 sum of fused multiply-adds in ``k`` order."""
    return torch.ops.zoo_vision.matmul(a, b, bias)


def matmul_star_relu(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, scale: float, shift: float):
    """``(h, star_relu_forward(h, scale, shift))`` of ``h = matmul(a, b, bias)``, both written as the tile is stored
    (an MLP's first layer and its StarReLU in one pass): the same bits as the two calls."""
    return torch.ops.zoo_vision.matmul_star_relu(a, b, bias, scale, shift)


def matmul_star_relu_backward(g: torch.Tensor, w: torch.Tensor, h: torch.Tensor, scale: float):
    """``star_relu_backward(matmul(g, w), h, scale)``, the hidden gradient's product and StarReLU's backward in one
    pass: the same ``dx`` bits; the scalars' float64 sums taken tile by tile (tasks in order, so the same on any
    thread count)."""
    return torch.ops.zoo_vision.matmul_star_relu_backward(g, w, h, scale)


def erf(x: torch.Tensor) -> torch.Tensor:
    """The kernels' ``erf`` of a contiguous float32 ``x``: within :data:`ERF_ERROR` of ``torch.erf``'s exact value
    at every float32 (a rational in ``x ** 2``; ``vision.cpp`` says which)."""
    return torch.ops.zoo_vision.erf(x)


def gelu(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gelu(x), gelu'(x))`` of a contiguous float32 ``x`` (``approximate="none"``): ``x Phi(x)`` and its slope
    ``Phi(x) + x phi(x)``, with the kernels' :func:`erf`; their errors are in ``tests/kernels/test_vision_kernels.py``.
    """
    return torch.ops.zoo_vision.gelu(x)


def matmul_gelu(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None):
    """``gelu(matmul(a, b, bias))`` computed as the tile is stored (an MLP's first layer and its GELU in one pass):
    the same bits as the two calls. The product itself is not kept: GELU's backward needs only the slope."""
    return torch.ops.zoo_vision.matmul_gelu(a, b, bias)


def matmul_times(g: torch.Tensor, w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``matmul(g, w) * d`` with ``d`` multiplied in as the tile is stored: GELU's backward through an MLP's second
    layer, ``d`` GELU's slope. The same bits as the two calls."""
    return torch.ops.zoo_vision.matmul_times(g, w, d)


def weight_grad(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``g.t() @ x``, a Linear layer's weights' gradient from its output's gradient ``g`` (M, N) and its input ``x``
    (M, K), the token rows split into one part a thread (each part's product by the BLAS on that thread alone) and
    the parts' sums added in order; on one thread, or fewer than 1024 rows, the BLAS's ``mm`` itself. Within
    ``gamma_M sum |g| |x|`` of the exact product, as the BLAS's is."""
    return torch.ops.zoo_vision.weight_grad(g, x)


def attention(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, lse)``: each head's ``softmax(q k^T / sqrt d) v`` (B, N, C) of a contiguous float32 ``qkv``
    (B, N, 3 C), C = ``heads`` d (a token's q for every head, then its k, then its v; d a multiple of 16, at most
    256), and each row's log-sum-exp ``max x + log sum exp(x - max x)`` of its scaled scores ``x`` (B, heads, N). A
    row with a NaN or infinite score gives NaN, as the operators' softmax does."""
    return torch.ops.zoo_vision.attention(qkv, heads)


def attention_backward(
    g: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, heads: int
) -> torch.Tensor:
    """qkv's gradient (B, N, 3 C) given the output's gradient ``g`` (B, N, C) and :func:`attention`'s ``out`` and
    ``lse``; the scores are recomputed (the forward's bits) rather than kept."""
    return torch.ops.zoo_vision.attention_backward(g, qkv, out, lse, heads)
