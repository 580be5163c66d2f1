"""A drop-in ``nn.Linear`` that runs CPU inference through oneDNN.

On the CPU, ``F.linear`` goes to the BLAS GEMM, while the same product written as a 1x1 convolution over
channels-last memory goes to oneDNN, which was faster once there are a thousand or more rows (token-major
activations of vision models; ``results/notes/code_figures.md``); for a few rows the GEMM is faster. The
rewrite is a pair of views, so the result is the same tensor layout, within float32 rounding.

In eager float32 CPU training (the module in training mode, autograd recording) the layer's two products over its
token rows, the output and the input's gradient, are :func:`zoo.kernels.vision.matmul`'s, which on these shapes
(thousands of rows, 64 to 2048 features) runs closer to the multiply-add peak than the BLAS GEMM; the weights'
gradient stays the BLAS GEMM's, split over the threads by rows (:func:`zoo.kernels.vision.weight_grad`;
:class:`_LinearTraining`). Other training (evaluation mode with gradients, ``torch.func`` transforms), other devices
and other dtypes use ``F.linear``, and so do ``torch.export``,
``torch.compile`` and ``torch.fx`` traces and TorchScript. The choice is an argument:
``Linear(..., onednn=False)`` (or ``model.set_onednn_linear(False)`` on a zoo vision model, or
``zoo.create_model(NAME, onednn_linear=False)``) always uses ``F.linear``. Left unset, the environment variable
``ZOO_ONEDNN_LINEAR`` (``0`` turns it off), read when the layer is built, gives the default; it never overrides
an explicit argument.

:func:`save_as_conv1x1` gives a layer the saved layout of a 1x1 convolution: the state dict of a MetaFormer stage is
timm's, whose pointwise layers are ``nn.Conv2d(kernel_size=1)``, while the zoo computes them as this ``Linear``.
"""

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import vision
from .tracing import is_eager, training_kernels_may_run

__all__ = ["MIN_ROWS", "Linear", "onednn_default", "save_as_conv1x1"]

MIN_ROWS = 1024
TRAIN_MIN_ROWS = 64  # fewer rows (a classifier head's batch): the BLAS GEMM


def token_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a (rows, features) matrix whose rows :func:`zoo.kernels.vision.matmul` can read: a view where one
    exists, a contiguous copy of an expanded (a sum's) or strided gradient."""
    rows = t.reshape(-1, t.shape[-1])
    return rows if rows.stride(1) == 1 else rows.contiguous()


class _LinearTraining(torch.autograd.Function):
    """``F.linear`` with the output and the input's gradient computed by :func:`zoo.kernels.vision.matmul` (each a
    float32 sum of fused multiply-adds in order, within ``gamma_K`` of the exact product), the weights' gradient by
    the BLAS GEMM (:func:`zoo.kernels.vision.weight_grad`) and the bias's by ``sum``: the same products as
    autograd's ``linear`` backward."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        rows = token_rows(x)
        ctx.save_for_backward(rows, weight)
        ctx.shape, ctx.has_bias = x.shape, bias is not None
        return vision.matmul(rows, weight.t(), bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, g):
        rows, weight = ctx.saved_tensors
        g = token_rows(g)
        needs = ctx.needs_input_grad
        gx = vision.matmul(g, weight).view(ctx.shape) if needs[0] else None
        gw = vision.weight_grad(g, rows) if needs[1] else None
        gb = g.sum(0) if needs[2] and ctx.has_bias else None
        return gx, gw, gb


def onednn_default() -> bool:
    """The oneDNN path's default when no argument says: on, unless ``ZOO_ONEDNN_LINEAR=0``."""
    return os.environ.get("ZOO_ONEDNN_LINEAR", "1") != "0"


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) with the oneDNN path for CPU float32 inference
    (``onednn``: None = :func:`onednn_default`)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
        onednn: bool | None = None,
    ):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.onednn = onednn_default() if onednn is None else bool(onednn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # traced (torch.export, torch.compile, torch.fx) and scripted as the plain op: the row count is a
        # shape-dependent branch, and a compiler picks its own kernels
        if not torch.jit.is_scripting() and is_eager():
            if self._takes_onednn(x):
                return self._onednn_linear(x)
            if self._trains_on_kernels(x):
                return _LinearTraining.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

    @torch.jit.unused  # eager only (see zoo.layers.tracing)
    def _trains_on_kernels(self, x: torch.Tensor) -> bool:
        bias = self.bias
        return (
            self.training
            and torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and (bias is None or bias.dtype == torch.float32)
            and x.numel() >= TRAIN_MIN_ROWS * self.in_features
            and training_kernels_may_run()
            and vision.available()
        )

    @torch.jit.unused  # eager only (see zoo.layers.tracing)
    def _takes_onednn(self, x: torch.Tensor) -> bool:
        return (
            self.onednn
            and not torch.compiler.is_exporting()
            and not torch.compiler.is_compiling()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.is_contiguous()
            and not torch.is_grad_enabled()
            and x.numel() >= MIN_ROWS * self.in_features
        )

    @torch.jit.unused  # eager only (see zoo.layers.tracing)
    def _onednn_linear(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        # (rows, in) memory viewed as a channels-last (1, in, 1, rows) image; the output comes back channels-last
        image = x.reshape(1, 1, rows, self.in_features).permute(0, 3, 1, 2)
        y = F.conv2d(image, self.weight.view(self.out_features, self.in_features, 1, 1), self.bias)
        return y.permute(0, 2, 3, 1).reshape(*x.shape[:-1], self.out_features)


def save_as_conv1x1(linear: nn.Linear) -> nn.Linear:
    """Save ``linear``'s weight as a 1x1 convolution's, ``(out, in, 1, 1)``, and load it from that shape.

    The layer still holds and computes with its ``(out, in)`` parameter; only its state dict changes, so a checkpoint
    crosses to and from a model whose layer is ``nn.Conv2d(in, out, 1)`` (timm's MetaFormer stages) by
    ``load_state_dict`` alone, strict, in either direction, with nothing for the user to convert. The saved weight
    is a view of the parameter (``torch.save``, safetensors and timm's EMA, which updates the state dict's tensors in
    place, all see the parameter's storage); the bias keeps its shape, as a convolution's has the same. Loading also
    takes an ``(out, in)`` weight as it is. ``state_dict(keep_vars=True)``, which hands out the parameter objects
    themselves, is left as it is. The hooks run at save and load time only; the forward is untouched.
    Returns ``linear``.
    """
    linear.register_state_dict_post_hook(_weight_to_conv1x1)
    linear.register_load_state_dict_pre_hook(_weight_from_conv1x1)
    return linear


# module-level functions, not closures or bound methods, so that a hooked model deep-copies (timm's EMA) and pickles


def _weight_to_conv1x1(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    key = prefix + "weight"
    weight = state_dict.get(key)
    # ``state_dict(keep_vars=True)`` asks for the parameter objects themselves (torch.jit.trace maps them by identity):
    # those stay as they are; the tensors every save reads (``keep_vars=False``) get the convolution's shape
    if weight is not None and weight.dim() == 2 and not isinstance(weight, nn.Parameter):
        state_dict[key] = weight[:, :, None, None]


def _weight_from_conv1x1(
    module: nn.Module, state_dict: dict, prefix: str, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
) -> None:
    key = prefix + "weight"
    weight = state_dict.get(key)
    if isinstance(weight, torch.Tensor) and weight.dim() == 4 and weight.shape[2:] == (1, 1):
        state_dict[key] = weight.flatten(1)
