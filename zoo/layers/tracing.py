"""Eager fast paths that stay out of traced and scripted graphs.

The vision families run CPU inference through shortcuts that look at tensors at run time (the row count, the device,
whether autograd records). Such a branch cannot be traced: under ``torch.fx`` symbolic tracing a tensor is a proxy
whose properties are unknown, and TorchScript cannot compile the shortcuts' Python. Every shortcut is therefore
taken only where :func:`is_eager` holds, written as the first operand of the condition::

    if not torch.jit.is_scripting() and is_eager() and <the fast path's test>:
        ...  # eager only

TorchScript reads ``torch.jit.is_scripting()`` as a constant and compiles neither the rest of the condition nor the
branch, so a scripted model holds the plain path; under ``torch.fx`` tracing the plain path is recorded. Eager code
pays one flag read.
"""

import torch
from torch.fx import _symbolic_trace
from torch.utils import _python_dispatch

__all__ = ["func_transforming", "is_eager", "is_fx_tracing", "kernels_may_run", "training_kernels_may_run"]

# torch.fx's symbolic tracing only (torch.export, which compiles, keeps the paths written for it); older torch has
# the one flag
is_fx_tracing = getattr(_symbolic_trace, "is_fx_symbolic_tracing", _symbolic_trace.is_fx_tracing)


@torch.jit.unused  # never reached in a scripted model: its callers test torch.jit.is_scripting() first
def is_eager() -> bool:
    """False while ``torch.fx`` traces the model (its graph then records the plain path of every shortcut)."""
    return not is_fx_tracing()


@torch.jit.unused
def kernels_may_run() -> bool:
    """Whether a layer may call the zoo's own C++ operators instead of PyTorch's: not while ``torch.jit`` traces
    (fvcore's count, ONNX) nor under a dispatch mode (``FlopCounterMode``, fake tensors), which see and count
    PyTorch's operators only."""
    return not torch.jit.is_tracing() and _python_dispatch._get_current_dispatch_mode() is None


@torch.jit.unused
def func_transforming() -> bool:
    """Whether a ``torch.func`` transform (``grad``, ``vmap``, ...) is active: the zoo's hand-written autograd
    functions define no vmap or forward-mode rule, so the plain operators run under one."""
    return torch._C._are_functorch_transforms_active()


@torch.jit.unused
def training_kernels_may_run() -> bool:
    """:func:`kernels_may_run`, and no CPU autocast (the kernels are float32), no ``torch.compile`` or
    ``torch.export`` in progress (they trace PyTorch's operators) and no ``torch.func`` transform (the kernels'
    autograd functions define no vmap or forward-mode rule)."""
    return (
        not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and not func_transforming()
        and kernels_may_run()
    )
