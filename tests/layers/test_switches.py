"""Switches are arguments: the environment only gives the default, read when a layer is built, and never overrides
an explicit argument."""

import torch
from tolerances import assert_float32_close, in_float64

import zoo
from zoo.layers import FusedLargeKernel, Linear
from zoo.registry import list_models


def _linears(model):
    return [m for m in model.modules() if isinstance(m, Linear)]


def test_onednn_linear_argument_and_environment_default(monkeypatch):
    name = list_models(task="image-classification")[0]
    monkeypatch.setenv("ZOO_ONEDNN_LINEAR", "0")
    with torch.device("meta"):
        assert not any(m.onednn for m in _linears(zoo.create_model(name)))  # the default, from the environment
        assert all(m.onednn for m in _linears(zoo.create_model(name, onednn_linear=True)))  # the argument wins
    monkeypatch.delenv("ZOO_ONEDNN_LINEAR")
    assert Linear(4, 4).onednn and not Linear(4, 4, onednn=False).onednn


def test_onednn_and_plain_linear_agree():
    layer = Linear(64, 32)
    plain = Linear(64, 32, onednn=False)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(40, 64, 64)  # enough rows for the oneDNN path
    with torch.no_grad():  # oneDNN's blocking against ATen's: within 4x the plain product's own float32 error
        assert_float32_close(layer(x), plain(x), in_float64(plain)(x.double()), msg="oneDNN")


def test_large_kernel_impl_argument_is_never_overridden(monkeypatch):
    monkeypatch.setenv("ZOO_LARGE_KERNEL_IMPL", "matmul")
    assert FusedLargeKernel(8, 7).impl == "matmul"  # no argument: the environment's default
    assert FusedLargeKernel(8, 7, impl="auto").impl == "auto"  # an explicit argument stays
    name = list_models(family="slak")[0]
    with torch.device("meta"):
        model = zoo.create_model(name, deploy=True, large_kernel_impl="conv")
    assert {m.impl for m in model.modules() if isinstance(m, FusedLargeKernel)} == {"conv"}


def test_a_training_step_on_the_cpu_holds_freed_memory(monkeypatch):
    """A vision model's forward in training, on the CPU with gradients, asks for freed memory to be kept
    (``zoo.platform.allocator.hold_freed_memory``, which ``ZOO_KEEP_FREED_MEMORY=0`` turns off); inference, a
    forward without gradients and a traced graph do not."""
    import zoo.layers.backbone as backbone

    calls = []
    monkeypatch.setattr(backbone, "hold_freed_memory", lambda: calls.append(1) or False)
    model = zoo.create_model("convnet_d3", num_classes=3)
    x = torch.randn(1, 3, 32, 32)
    model.eval()(x)
    with torch.no_grad():
        model.train()(x)
    torch.fx.symbolic_trace(model)
    assert calls == []
    model.train()(x).sum().backward()
    assert calls == [1]
