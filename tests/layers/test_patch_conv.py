"""PatchConv2d: in float32 CPU training, the weights' gradient is one matrix product over the input's patches,
within the float32 rounding bound of its sums against float64; the forward pass and the input's gradient are
oneDNN's bits; anything else is the plain convolution."""

import copy

import pytest
import torch
import torch.nn.functional as F
from tolerances import gamma
from torch import nn

import zoo
from zoo.layers import PatchConv2d
from zoo.layers.patch_conv import _PatchConv

CL = torch.channels_last
# (N, C, H, W, O, kernel, stride, padding): the MetaFormer downsampling (3x3, stride 2), odd and even maps, a
# stem-like 7x7 stride 4, stride 1, a rectangular kernel with unequal strides and no padding along one side
SHAPES = [
    (2, 16, 13, 13, 24, (3, 3), (2, 2), (1, 1)),
    (1, 8, 14, 10, 16, (3, 3), (2, 2), (1, 1)),
    (2, 3, 17, 17, 8, (7, 7), (4, 4), (2, 2)),
    (2, 5, 9, 9, 7, (3, 3), (1, 1), (1, 1)),
    (1, 4, 6, 7, 3, (2, 3), (1, 2), (0, 1)),
]


def _case(shape, seed=0):
    n, c, h, w, o, kernel, stride, padding = shape
    gen = torch.Generator().manual_seed(seed)
    layer = PatchConv2d(c, o, kernel, stride=stride, padding=padding)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen))
        layer.bias.copy_(torch.randn(o, generator=gen))
    x = torch.randn(n, c, h, w, generator=gen).to(memory_format=CL)
    return layer, x, gen


def _plain(layer):
    plain = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding)
    plain.load_state_dict(layer.state_dict())  # same parameters and state dict
    return plain


@pytest.mark.parametrize("shape", SHAPES)
def test_weight_grad_within_the_float32_bound_and_the_rest_is_onednns_bits(shape):
    layer, x, gen = _case(shape)
    plain = _plain(layer)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = layer(xa), plain(xb)
    assert ya.grad_fn.name().startswith("_PatchConv")  # the product was taken
    assert torch.equal(ya, yb)  # the forward pass is oneDNN's call
    g = torch.randn(ya.shape, generator=gen).to(memory_format=CL)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(xa.grad, xb.grad)  # the input's gradient is oneDNN's too
    # float64 references, and the same sums over magnitudes (the bound's right-hand side)
    stride, padding = layer.stride, layer.padding
    args = (None, list(stride), list(padding), [1, 1], False, [0, 0], 1, [False, True, True])
    _, gw64, gb64 = torch.ops.aten.convolution_backward(g.double(), x.double(), layer.weight.double(), *args)
    _, mw, mb = torch.ops.aten.convolution_backward(g.double().abs(), x.double().abs(), layer.weight.double(), *args)
    terms = g.shape[0] * g.shape[2] * g.shape[3]  # each output a float32 sum of N Ho Wo products
    assert ((layer.weight.grad.double() - gw64).abs() <= gamma(terms) * mw).all()
    assert ((layer.bias.grad.double() - gb64).abs() <= gamma(terms) * mb).all()


def test_the_plain_convolution_runs_outside_float32_cpu_training():
    layer, x, _ = _case(SHAPES[0])
    xr = x.clone().requires_grad_()

    def path(module, inp):
        return module(inp).grad_fn.name()

    assert path(layer, xr).startswith("_PatchConv")
    assert not path(copy.deepcopy(layer).eval(), xr).startswith("_PatchConv")  # evaluation (the pruning graph)
    with torch.no_grad():
        assert layer(x).grad_fn is None
    assert not path(layer, xr.contiguous()).startswith("_PatchConv")  # NCHW memory
    assert not path(copy.deepcopy(layer).double(), xr.double()).startswith("_PatchConv")
    frozen = copy.deepcopy(layer).requires_grad_(False)
    assert not path(frozen, xr).startswith("_PatchConv")  # no weights' gradient to compute
    seen = []
    hooked = copy.deepcopy(layer)
    hooked.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert not path(hooked, xr).startswith("_PatchConv") and len(seen) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not path(layer, xr).startswith("_PatchConv")


def test_scripts_and_traces_to_the_plain_convolution():
    layer, x, _ = _case(SHAPES[0])
    plain = _plain(layer)
    with torch.no_grad():
        assert torch.equal(torch.jit.script(layer)(x), plain(x))
    graph = torch.fx.symbolic_trace(layer.train())
    assert "_PatchConv" not in graph.code and torch.equal(graph(x), plain(x))


@pytest.mark.parametrize("name", ["poolformer_s12", "convformer_s18"])
def test_metaformer_downsampling_trains_by_patches(name, monkeypatch):
    calls = []
    monkeypatch.setattr(_PatchConv, "apply", lambda *a: calls.append(a[0].shape) or F.conv2d(*a[:3], *a[3:]))
    model = zoo.create_model(name, num_classes=3).train()
    model(torch.randn(1, 3, 64, 64)).sum().backward()
    assert len(calls) == 3  # the three downsampling layers between the four stages
