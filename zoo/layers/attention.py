"""Multi-head self-attention over a qkv product, ``softmax(q k^T / sqrt d) v`` head by head (CAFormer's mixer).

In eager float32 CPU training the attention is one autograd function (:class:`_AttentionTraining`) over
:func:`zoo.kernels.vision.attention` and its backward: q, k and v are read in place from the qkv Linear's output and
the output is written in the layout the projection reads, where the operators' path permutes q, k and v into heads,
copies the output back into tokens, and stacks the three gradients into qkv's. It saves what
``scaled_dot_product_attention``'s flash backward saves (q, k, v, the output and each row's log-sum-exp) and
recomputes the scores in the backward as it does. Each head of each image is one task on one thread, its scores kept
in cache; the result does not depend on the thread count. Evaluation, inference, other devices and dtypes, autocast,
traced or scripted graphs, heads whose width is not a multiple of 16, more than :data:`MAX_TOKENS` tokens, and a
machine where :mod:`zoo.kernels.vision` does not run take the model's own ``F.scaled_dot_product_attention``.
"""

import torch

from ..kernels import vision
from .tracing import training_kernels_may_run

__all__ = ["MAX_TOKENS", "attention_on_kernels", "trains_on_kernels"]

MAX_TOKENS = 1024  # more tokens: a thread's two N x N score buffers (8 MiB at 1024) far outgrow its cache


class _AttentionTraining(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, heads):
        out, lse = vision.attention(qkv, heads)
        ctx.save_for_backward(qkv, out, lse)
        ctx.heads = heads
        return out

    @staticmethod
    def backward(ctx, g):
        return vision.attention_backward(g.contiguous(), *ctx.saved_tensors, ctx.heads), None


@torch.jit.unused  # eager only (see zoo.layers.tracing)
def trains_on_kernels(qkv: torch.Tensor, head_dim: int) -> bool:
    """Whether :func:`attention_on_kernels` may take this qkv (B, N, 3 heads head_dim) in training; the caller tests
    its own conditions first (eager, training mode)."""
    return (
        torch.is_grad_enabled()
        and qkv.requires_grad
        and qkv.device.type == "cpu"
        and qkv.dtype == torch.float32
        and head_dim % 16 == 0
        and head_dim <= 256
        and qkv.shape[1] <= MAX_TOKENS
        and training_kernels_may_run()
        and vision.available()
    )


@torch.jit.unused
def attention_on_kernels(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Each head's ``softmax(q k^T / sqrt d) v`` (B, N, heads d) of ``qkv`` (B, N, 3 heads d), a token's q for every
    head, then its k, then its v (:func:`zoo.kernels.vision.attention`), differentiable."""
    return _AttentionTraining.apply(qkv.contiguous(), heads)
