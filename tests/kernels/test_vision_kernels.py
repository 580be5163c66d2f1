"""zoo.kernels.vision and the layers that call it (DepthwiseConv2d, StarReLU, Mlp, Linear): the depthwise forward
gives oneDNN's bits; the input's and weights' gradients, StarReLU's scalar gradients and the matrix products stay
within bounds derived from float32 rounding against float64; StarReLU's elementwise values are autograd's chain's
bits; a training step of a ConvFormer and a CAFormer is as close to float64 as the plain operators' step; bad calls
raise, never crash."""

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from tolerances import (
    EPS32,
    TIMES,
    U32,
    U64,
    ULPS,
    attention_bounds,
    float32_bound,
    gamma,
    gelu_bounds,
    torch_threads,
)
from torch import nn

import zoo
from zoo.kernels import vision
from zoo.layers import DepthwiseConv2d, StarReLU
from zoo.layers.activations import _star_relu
from zoo.layers.linear import Linear, _LinearTraining
from zoo.layers.mlp import _MlpTraining
from zoo.layers.patch_conv import PatchConv2d, _PatchConv

pytestmark = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"), reason="the kernels are AVX2"
)

CL = torch.channels_last
# (N, C, H, W, kh, kw, ph, pw): ConvFormer's 7x7 'same', rows shorter than a tile, rectangular and odd kernels,
# one image, a map smaller than the kernel
SHAPES = [
    (2, 16, 14, 14, 7, 7, 3, 3),
    (3, 8, 9, 11, 5, 5, 2, 2),
    (1, 24, 7, 7, 7, 7, 3, 3),
    (2, 8, 6, 13, 3, 5, 0, 2),
    (2, 8, 3, 2, 7, 7, 3, 3),
    (1, 16, 10, 10, 1, 13, 0, 6),
]


def _kernel_calls(monkeypatch) -> list[str]:
    """The names of the kernels (and the layers' kernel autograd functions) called from here on, in order."""
    calls = []

    def counted(op, f):
        return lambda *args, **kwargs: calls.append(op) or f(*args, **kwargs)

    ops = ("depthwise_forward", "depthwise_weight_grad", "star_relu_forward", "star_relu_backward_", "matmul")
    ops += ("matmul_star_relu", "matmul_star_relu_backward", "matmul_gelu", "matmul_times")
    ops += ("attention", "attention_backward")
    for op in ops:
        monkeypatch.setattr(vision, op, counted(op, getattr(vision, op)))
    monkeypatch.setattr(_MlpTraining, "apply", counted("mlp", _MlpTraining.apply))
    monkeypatch.setattr(_LinearTraining, "apply", counted("linear", _LinearTraining.apply))
    monkeypatch.setattr(_PatchConv, "apply", counted("patch", _PatchConv.apply))
    return calls


@contextlib.contextmanager
def _plain_operators():
    """The layers as if the kernels could not run here (what ZOO_VISION_KERNELS=0 gives)."""
    state = dict(vision._state)
    vision._state["ok"] = False
    try:
        yield
    finally:
        vision._state.clear()
        vision._state.update(state)


@pytest.fixture(autouse=True)
def kernels():
    assert vision.available()  # an AVX2 CPU with a C++ compiler: every machine the project runs its tests on


def _maps(shape, seed=0):
    n, c, h, w, kh, kw, ph, pw = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen).to(memory_format=CL)
    wt = torch.randn(c, 1, kh, kw, generator=gen)
    g = torch.randn(n, c, h + 2 * ph - kh + 1, w + 2 * pw - kw + 1, generator=gen).to(memory_format=CL)
    return x, wt, g, (ph, pw)


@pytest.mark.parametrize("shape", SHAPES)
def test_depthwise_forward_gives_onednns_bits(shape):
    x, w, _, pad = _maps(shape)
    out = vision.depthwise_forward(x, w, pad)
    assert out.is_contiguous(memory_format=CL)
    assert torch.equal(out, F.conv2d(x, w, padding=pad, groups=x.shape[1]))


def _conv_backward(g, x, w, pad, mask):
    return torch.ops.aten.convolution_backward(
        g, x, w, None, [1, 1], list(pad), [1, 1], False, [0, 0], x.shape[1], mask
    )  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
def test_depthwise_gradients_within_float32_bounds(shape):
    x, w, g, pad = _maps(shape)
    layer = DepthwiseConv2d(x.shape[1], tuple(w.shape[2:]), padding=pad, bias=False)
    layer.weight.data.copy_(w)
    xr = x.clone().requires_grad_()
    layer(xr).backward(g)
    assert layer.weight.grad is not None and xr.grad is not None
    # float64 references, and the same sums over magnitudes (the bounds' right-hand sides)
    gx64, gw64, _ = _conv_backward(g.double(), x.double(), w.double(), pad, [True, True, False])
    mx, mw, _ = _conv_backward(g.double().abs(), x.double().abs(), w.double().abs(), pad, [True, True, False])
    kh, kw = w.shape[2:]
    # input's gradient: one float32 accumulator over the kh * kw taps
    assert ((xr.grad.double() - gx64).abs() <= gamma(kh * kw) * mx).all()
    # weights' gradient: float32 sums over an image's Ho Wo products, the images in float64, rounded once to float32
    n, ho, wo = g.shape[0], g.shape[2], g.shape[3]
    bound = (gamma(ho * wo) + gamma(n, U64)) * mw + U32 * gw64.abs()
    assert ((layer.weight.grad.double() - gw64).abs() <= bound).all()


def test_depthwise_weight_grad_does_not_depend_on_the_thread_count():
    x, _, g, pad = _maps((2, 32, 12, 12, 7, 7, 3, 3), seed=1)
    with torch_threads(1):
        one = vision.depthwise_weight_grad(x, g, (7, 7), pad)
    with torch_threads(2):
        two = vision.depthwise_weight_grad(x, g, (7, 7), pad)
    assert torch.equal(one, two)


def test_depthwise_layer_is_a_conv2d_and_falls_back():
    layer = DepthwiseConv2d(16, 7, padding=3, bias=True)
    plain = nn.Conv2d(16, 16, 7, padding=3, groups=16, bias=True)
    plain.load_state_dict(layer.state_dict())  # same parameters and state dict
    x = torch.randn(2, 16, 9, 9).to(memory_format=CL)
    with torch.no_grad():
        assert torch.equal(layer(x), plain(x))  # the kernel, then the bias: oneDNN's bits
        contiguous = x.contiguous()  # NCHW memory: the plain convolution
        assert torch.equal(layer(contiguous), plain(contiguous))
        x64 = x.double()  # float64: the plain convolution
        assert torch.equal(copy.deepcopy(layer).double()(x64), copy.deepcopy(plain).double()(x64))


def test_star_relu_kernel_gives_the_chains_bits_and_bounded_scalar_gradients():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 7, 41, generator=gen)  # a size that is not a multiple of the vector or the chunk
    g = torch.randn(x.shape, generator=gen)
    act = StarReLU(scale_value=0.8944, bias_value=-0.4472)
    xk = x.clone().requires_grad_()
    out = act(xk)
    assert torch.equal(out, _star_relu(x, act.scale, act.bias).detach())
    out.backward(g)
    s = act.scale.detach()
    r = F.relu(x)
    assert torch.equal(xk.grad, (g * r).mul_(2 * s))  # the chain's backward: t = g r, then 2 s t
    r64, g64 = r.double(), g.double()
    ds64, db64 = (g64 * r64 * r64).sum(), g64.sum()
    n = x.numel()
    ds_bound = (2 * U32 + gamma(n, U64)) * (g64.abs() * r64 * r64).sum() + U32 * ds64.abs()
    assert abs(act.scale.grad.double() - ds64) <= ds_bound
    assert abs(act.bias.grad.double() - db64) <= gamma(n, U64) * g64.abs().sum() + U32 * db64.abs()


@pytest.mark.parametrize(
    "name", ["caformer_s18", "poolformer_s12", pytest.param("convformer_s18", marks=pytest.mark.slow)]
)
def test_training_step_as_close_to_float64_as_the_plain_operators(name, monkeypatch):
    """The loss and every weight's gradient of a step with the kernels is, against the same step in float64,
    within TIMES the plain float32 operators' own error (the worst over the weights, relative to the largest
    gradient of each).

    StarReLU's scale and bias are left to the kernels' own tests (derived bounds): each one's gradient is a sum over
    a whole activation with heavy cancellation, so its relative error is the float32 noise of every upstream product
    divided by a small result, and it swings by an order of magnitude with the seed for either path (on five seeds,
    the kernels' worst over the scalars was 0.4x to 4.8x the plain operators')."""
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=5)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 3])

    def step(m, inp):
        m.zero_grad()
        loss = F.cross_entropy(m(inp), y)
        loss.backward()
        return loss.item(), {k: p.grad.double() for k, p in m.named_parameters()}

    calls = _kernel_calls(monkeypatch)
    loss_k, kernels = step(model, x)
    expected = {"mlp", "matmul_star_relu", "matmul_star_relu_backward"}  # StarReLU MLPs
    if name.startswith(("convformer", "caformer")):  # SepConv's and attention's Linear layers, SepConv's StarReLU
        expected |= {"depthwise_forward", "depthwise_weight_grad", "linear", "star_relu_forward"}
    if name.startswith("caformer"):  # stages 3 and 4
        expected |= {"attention", "attention_backward"}
    if name.startswith("poolformer"):
        expected = {"mlp", "matmul_gelu", "matmul_times"}  # GELU MLPs
    # the MLPs' and Linear layers' products, and the downsampling layers' weights' gradient by patches
    assert set(calls) == expected | {"matmul", "patch"}
    monkeypatch.setattr(PatchConv2d, "_trains_by_patches", lambda self, x: False)
    with _plain_operators():
        loss_p, plain = step(model, x)
    loss_64, ref = step(copy.deepcopy(model).double(), x.double())

    weights = [k for k in ref if ref[k].numel() > 1]

    def worst(grads):
        return max(((grads[k] - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-30)).item() for k in weights)

    assert abs(loss_k - loss_64) <= TIMES * abs(loss_p - loss_64) + ULPS * EPS32 * abs(loss_64)
    assert worst(kernels) <= TIMES * worst(plain) + ULPS * EPS32


def test_no_kernel_runs_while_torch_compile_traces_the_step(monkeypatch):
    """``torch.compile`` (``train.compile``) and ``torch.export`` trace PyTorch's operators, which they fuse; the
    kernels are eager code (a scalar read back, the build's checks) that would break the traced graph. A CAFormer
    step (every layer with a kernel) calls none of them while tracing, and each layer's kernels in eager."""
    model = zoo.create_model("caformer_s18", depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), num_classes=5)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 3])
    calls = _kernel_calls(monkeypatch)
    for tracing in ("is_compiling", "is_exporting"):
        with monkeypatch.context() as m:
            m.setattr(torch.compiler, tracing, lambda: True)
            F.cross_entropy(model(x), y).backward()
        assert calls == [], tracing
    F.cross_entropy(model(x), y).backward()
    assert {"star_relu_forward", "depthwise_forward", "attention", "mlp", "linear", "patch"} <= set(calls)


@pytest.mark.parametrize("name", ["caformer_s18", "poolformer_s12"])
def test_torch_func_grad_trains_on_the_plain_operators(name, monkeypatch):
    """Under ``torch.func.grad`` (per-sample gradients, meta-learning) the layers take the plain operators, whose
    autograd ``torch.func`` can transform (the kernels' autograd functions and StarReLU's define no vmap rule and would
    raise): the gradients are, against float64, within TIMES the plain float32 step's own error."""
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=5)
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 3])

    def loss(params, m=model, inp=x):
        return F.cross_entropy(torch.func.functional_call(m, params, (inp,)), y)

    grads = torch.func.grad(loss)({k: p.detach() for k, p in model.named_parameters()})
    model64 = copy.deepcopy(model).double()
    model64.zero_grad()
    F.cross_entropy(model64(x.double()), y).backward()
    ref = {k: p.grad for k, p in model64.named_parameters()}
    monkeypatch.setattr(PatchConv2d, "_trains_by_patches", lambda self, x: False)
    with _plain_operators():
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
    plain = {k: p.grad for k, p in model.named_parameters()}
    weights = [k for k in ref if ref[k].numel() > 1]

    def worst(g):
        return max(((g[k].double() - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-30)).item() for k in weights)

    assert worst(grads) <= TIMES * worst(plain) + ULPS * EPS32


# (M, K, N): rows and columns that fill no tile, one of each, the MetaFormer stages' widths, a classifier's 1000
PRODUCTS = [(1, 1, 1), (7, 3, 20), (13, 64, 8), (50, 17, 1000), (100, 320, 33), (97, 64, 256), (6, 0, 16), (0, 5, 8)]


@pytest.mark.parametrize("shape", PRODUCTS)
@pytest.mark.parametrize("transposed", [False, True], ids=["b", "weight.t()"])
def test_matmul_within_the_float32_bound_of_its_sum(shape, transposed):
    """Each output is one float32 sum of K fused multiply-adds, then the bias: within ``gamma_K sum |a||b|`` of
    float64, plus the bias's rounding, for either layout of ``b``."""
    m, k, n = shape
    gen = torch.Generator().manual_seed(m * 1000 + k)
    a = torch.randn(m, k, generator=gen)
    b = torch.randn(n, k, generator=gen).t() if transposed else torch.randn(k, n, generator=gen)
    bias = torch.randn(n, generator=gen)
    for with_bias in (None, bias):
        out = vision.matmul(a, b, with_bias)
        exact = a.double() @ b.double() + (0 if with_bias is None else with_bias.double())
        bound = gamma(k) * (a.double().abs() @ b.double().abs()) + U32 * exact.abs()
        assert out.shape == (m, n) and out.is_contiguous()
        assert ((out.double() - exact).abs() <= bound).all()


@pytest.mark.parametrize("shape", [(97, 64, 256), (13, 5, 20), (50, 17, 1000), (300, 40, 24)])
def test_fused_star_relu_products_give_the_two_calls_results(shape):
    """The MLP's first product with StarReLU in its tiles' stores gives the bits of the product and then the
    activation; the hidden gradient's product with StarReLU's backward gives the two calls' ``dx`` bits and scalar
    gradients within the float64 sums' bound (their order differs), the same on any thread count."""
    m, k, n = shape
    gen = torch.Generator().manual_seed(m + k + n)
    a, w, bias = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen), torch.randn(n, generator=gen)
    for b in (None, bias):
        h, act = vision.matmul_star_relu(a, w.t(), b, 0.8, -0.3)
        assert torch.equal(h, vision.matmul(a, w.t(), b))
        assert torch.equal(act, vision.star_relu_forward(h, 0.8, -0.3))
    g, h = torch.randn(m, k, generator=gen), torch.randn(m, n, generator=gen)
    with torch_threads(1):
        fused = vision.matmul_star_relu_backward(g, w.t(), h, 0.8)
    with torch_threads(2):
        assert all(torch.equal(x, y) for x, y in zip(fused, vision.matmul_star_relu_backward(g, w.t(), h, 0.8)))
    y = vision.matmul(g, w.t())
    dx, ds, db = vision.star_relu_backward(y, h, 0.8)
    assert torch.equal(fused[0], dx)
    r = h.clamp_min(0).double()
    t = (y * h.clamp_min(0)).double()  # the float32 products both sum, each rounded once more by its t * r
    assert abs(fused[1].double() - ds.double()) <= 2 * (gamma(m * n, U64) * (t.abs() * r).sum() + U32 * ds.abs())
    assert abs(fused[2].double() - db.double()) <= 2 * (gamma(m * n, U64) * y.double().abs().sum() + U32 * db.abs())


def test_matmul_reads_strided_rows_and_does_not_depend_on_the_thread_count():
    a = torch.randn(300, 80)[:, :64]  # rows 80 apart
    b = torch.randn(64, 264)
    with torch_threads(1):
        one = vision.matmul(a, b)
    with torch_threads(2):
        two = vision.matmul(a, b)
    assert torch.equal(one, two)
    assert torch.equal(one, vision.matmul(a.contiguous(), b.t().contiguous().t()))  # the same sums, either layout


def test_linear_trains_on_the_kernels_and_leaves_the_rest_to_f_linear():
    """In training mode with autograd recording, the output and the input's gradient are the kernel's products
    (within ``gamma_K`` of float64) and the weights' and bias's gradients the BLAS's; evaluation, no-grad, few rows
    and ``torch.func`` run ``F.linear``."""
    torch.manual_seed(0)
    layer = Linear(48, 40).train()
    x = torch.randn(3, 30, 48, requires_grad=True)
    y = layer(x)
    assert y.grad_fn.name().startswith("_LinearTraining")
    g = torch.randn_like(y)
    y.backward(g)
    w64, x64, g64 = layer.weight.double(), x.detach().double(), g.double()
    exact = x64 @ w64.t() + layer.bias.double()
    assert ((y.double() - exact).abs() <= gamma(48) * (x64.abs() @ w64.abs().t()) + U32 * exact.abs()).all()
    assert ((x.grad.double() - g64 @ w64).abs() <= gamma(40) * (g64.abs() @ w64.abs())).all()
    rows_x, rows_g = x64.reshape(-1, 48), g64.reshape(-1, 40)
    gw_bound = gamma(90) * (rows_g.abs().t() @ rows_x.abs())
    assert ((layer.weight.grad.double() - rows_g.t() @ rows_x).abs() <= gw_bound).all()
    assert torch.equal(layer.bias.grad, g.reshape(-1, 40).sum(0))
    assert "_LinearTraining" not in layer.eval()(x).grad_fn.name()
    layer.train()
    with torch.no_grad():
        assert layer(x).grad_fn is None
    assert "_LinearTraining" not in layer(x[:1, :2]).grad_fn.name()  # 2 rows: a classifier's batch
    grads = torch.func.grad(lambda w: torch.func.functional_call(layer, {"weight": w}, (x.detach(),)).sum())
    assert torch.allclose(grads(layer.weight.detach()), torch.ones(90, 40).t() @ x.detach().reshape(-1, 48))


def test_bad_calls_raise():
    with pytest.raises(RuntimeError, match=r"\(M, K\) and \(K, N\)"):
        vision.matmul(torch.randn(4, 3), torch.randn(4, 3))
    with pytest.raises(RuntimeError, match="rows must be contiguous"):
        vision.matmul(torch.randn(4, 3).t(), torch.randn(4, 3))
    with pytest.raises(RuntimeError, match="bias"):
        vision.matmul(torch.randn(4, 3), torch.randn(3, 5), torch.randn(4))
    with pytest.raises(RuntimeError, match="h must be"):
        vision.matmul_star_relu_backward(torch.randn(4, 3), torch.randn(3, 5), torch.randn(4, 6), 1.0)
    with pytest.raises(RuntimeError, match="d must be"):
        vision.matmul_times(torch.randn(4, 3), torch.randn(3, 5), torch.randn(5, 4))
    with pytest.raises(RuntimeError, match="float32"):
        vision.gelu(torch.randn(4, dtype=torch.float64))
    x = torch.randn(1, 12, 5, 5).to(memory_format=CL)  # 12 channels: not a multiple of 8
    with pytest.raises(RuntimeError, match="multiple of 8"):
        vision.depthwise_forward(x, torch.randn(12, 1, 3, 3), (1, 1))
    x = torch.randn(1, 8, 5, 5)  # NCHW memory
    with pytest.raises(RuntimeError, match="channels-last"):
        vision.depthwise_weight_grad(x, x, (3, 3), (1, 1))
    x = x.to(memory_format=CL)
    with pytest.raises(RuntimeError, match=r"\(N, C, Ho, Wo\)"):
        vision.depthwise_weight_grad(x, x[:, :, :4], (3, 3), (1, 1))
    with pytest.raises(RuntimeError, match="larger than the padded map"):
        vision.depthwise_forward(x, torch.randn(8, 1, 9, 9), (0, 0))
    with pytest.raises(RuntimeError, match="one size"):
        vision.star_relu_backward(torch.randn(3), torch.randn(4), 1.0)


def test_fused_mlp_leaves_hooked_layers_and_evaluation_to_the_layers():
    from zoo.layers import Mlp

    mlp = Mlp(8, hidden=32).train()
    seen = []
    x = torch.randn(2, 5, 8, requires_grad=True)
    handle = mlp.fc1.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    mlp(x).sum().backward()
    assert seen == [torch.Size([2, 5, 32])]  # the hook saw its layer's call: the layers ran one by one
    handle.remove()
    fused = mlp(x)
    assert fused.grad_fn.name().startswith("_MlpTraining")
    plain = mlp.eval()(x)
    assert "_MlpTraining" not in plain.grad_fn.name()
    assert torch.allclose(fused, plain, rtol=0, atol=gamma(8 + 32 + 2) * 8)


@pytest.mark.parametrize("act", ["gelu", "star_relu"])
def test_fused_mlp_and_linear_take_expanded_and_strided_gradients(act):
    """A sum's gradient (stride 0) and a slice's (rows apart) reach the kernels, which read contiguous rows."""
    from zoo.layers import GELU, Mlp

    mlp = Mlp(16, hidden=64, act_layer=GELU if act == "gelu" else StarReLU).train()
    linear = Linear(16, 24).train()
    x = torch.randn(2, 40, 16, requires_grad=True)
    for layer in (mlp, linear):
        for reduce in (lambda y: y.sum(), lambda y: y[..., ::2].pow(2).sum(), lambda y: y[:, 1:].sum()):
            x.grad = None
            reduce(layer(x)).backward()
            fused = x.grad.clone()
            x.grad = None
            with _plain_operators():
                reduce(layer(x)).backward()
            # two summation orders of the backward's products (16 and 64 terms deep)
            assert torch.allclose(fused, x.grad, rtol=0, atol=float32_bound(x.grad, 16 + 64 + 64))


def test_layers_script_to_the_plain_operators():
    """TorchScript compiles the layers (their kernel branches are eager-only) and runs PyTorch's operators."""
    from zoo.layers import Mlp

    conv = DepthwiseConv2d(16, 7, padding=3, bias=False).eval()
    x = torch.randn(1, 16, 9, 9).to(memory_format=CL)
    with torch.no_grad():
        assert torch.equal(torch.jit.script(conv)(x), F.conv2d(x, conv.weight, padding=3, groups=16))
    mlp = Mlp(8, hidden=32, act_layer=StarReLU).train()
    h = torch.randn(2, 3, 8)
    torch.testing.assert_close(torch.jit.script(mlp)(h), mlp(h), rtol=0, atol=gamma(8 + 32 + 4) * 16)


def _float32s(lo: float, hi: float, step: int) -> torch.Tensor:
    """Every ``step``-th float32 from ``lo`` to ``hi`` (both >= 0) by bit pattern: a sample of every binade."""
    bits = torch.arange(
        torch.tensor(lo).view(torch.int32).item(), torch.tensor(hi).view(torch.int32).item() + 1, step,
        dtype=torch.int32,
    )  # fmt: skip
    return bits.view(torch.float32)


def _erf_error(z: torch.Tensor) -> float:
    return (vision.erf(z).double() - torch.erf(z.double())).abs().max().item()


def test_erf_within_its_stated_error_odd_and_saturated():
    """A sample of every binade from 0 to 4 (beyond 4 the input is clamped, and float32's erf is 1 from 3.84);
    the slow test below covers every float32."""
    z = torch.cat([_float32s(0.0, 4.0, 997), torch.tensor([4.0, 4.5, 10.0, 1e30, float("inf")])])
    assert _erf_error(z) <= vision.ERF_ERROR
    assert torch.equal(vision.erf(-z), -vision.erf(z))
    assert torch.equal(vision.erf(torch.tensor([4.0, 1e30, float("inf")])), torch.ones(3))
    assert vision.erf(torch.tensor([float("nan")])).isnan().all()


@pytest.mark.slow
@pytest.mark.sweep  # every float32 from 0 to 4, about a CPU-minute: by hand when the erf changes (ERF_ERROR's proof)
def test_erf_within_its_stated_error_at_every_float32():
    top, step, worst = torch.tensor(4.0).view(torch.int32).item(), 1 << 24, 0.0
    for lo in range(0, top + 1, step):
        bits = torch.arange(lo, min(lo + step, top + 1), dtype=torch.int32)
        worst = max(worst, _erf_error(bits.view(torch.float32)))
    assert worst <= vision.ERF_ERROR


def test_gelu_and_its_slope_within_their_derived_bounds():
    """Every binade from 0 to 20 and both signs, and huge inputs: GELU and its slope within the bounds
    ``tolerances.gelu_bounds`` derives from the erf's and exp's errors and float32 rounding."""
    pos = torch.cat([_float32s(0.0, 20.0, 613), torch.tensor([1e10, 1e30, 3e38])])
    x = torch.cat([pos, -pos])
    act, slope = vision.gelu(x)
    gelu, d, act_bound, slope_bound = gelu_bounds(x, act, slope, vision.ERF_ERROR, vision.EXP_ERROR)
    assert ((act.double() - gelu).abs() <= act_bound).all()
    assert ((slope.double() - d).abs() <= slope_bound).all()


def test_gelu_special_values_are_atens():
    """Zeros, infinities, NaN and huge inputs: ATen's GELU and ``gelu_backward`` give the same values (NaN where
    they give NaN, as at -inf, whose ``x * 0`` is NaN in both)."""
    x = torch.tensor([0.0, -0.0, 1e-40, -1e-40, 1e30, -1e30, float("inf"), float("-inf"), float("nan"), 60.0, -60.0])
    act, slope = vision.gelu(x)
    torch.testing.assert_close(act, F.gelu(x), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(
        slope, torch.ops.aten.gelu_backward(torch.ones_like(x), x), rtol=0, atol=0, equal_nan=True
    )


@pytest.mark.parametrize("shape", [(97, 64, 256), (13, 5, 20), (50, 17, 1000), (300, 40, 24)])
def test_fused_gelu_products_give_the_two_calls_results(shape):
    """The MLP's first product with GELU and its slope in its tiles' stores gives the bits of the product and then
    ``gelu``; the hidden gradient's product times the slope gives the bits of the product and then the product, the
    same on any thread count."""
    m, k, n = shape
    gen = torch.Generator().manual_seed(m + k + n)
    a, w, bias = torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen), torch.randn(n, generator=gen)
    for b in (None, bias):
        fused = vision.matmul_gelu(a, w.t(), b)
        two = vision.gelu(vision.matmul(a, w.t(), b))
        assert all(torch.equal(f, t) for f, t in zip(fused, two))
    g, d = torch.randn(m, k, generator=gen), torch.randn(m, n, generator=gen)
    with torch_threads(1):
        one = vision.matmul_times(g, w.t(), d)
    with torch_threads(2):
        assert torch.equal(one, vision.matmul_times(g, w.t(), d))
    assert torch.equal(one, vision.matmul(g, w.t()) * d)


@pytest.mark.parametrize("shape", [(3000, 64, 256), (2500, 40, 24), (700, 16, 8), (1031, 33, 7)])
def test_weight_grad_within_the_float32_bound_on_any_thread_count(shape):
    """``g.t() @ x`` split by rows over the threads (from 1024 rows): within ``gamma_M sum |g| |x|`` of float64 on
    one thread and two (an input that requires gradients, as a saved activation may, included), and the BLAS's
    ``mm`` itself on one thread."""
    m, n, k = shape
    gen = torch.Generator().manual_seed(m)
    g, x = torch.randn(m, n, generator=gen), torch.randn(m, k, generator=gen).requires_grad_()
    exact = g.double().t() @ x.detach().double()
    bound = gamma(m) * (g.double().abs().t() @ x.detach().double().abs())
    for threads in (1, 2):
        with torch_threads(threads):
            out = vision.weight_grad(g, x)
        assert out.shape == (n, k)
        assert ((out.double() - exact).abs() <= bound).all()
    with torch_threads(1):
        assert torch.equal(vision.weight_grad(g, x), g.t().mm(x.detach()))
    with pytest.raises(RuntimeError, match=r"\(M, N\) and \(M, K\)"):
        vision.weight_grad(g, x[:-1])


# (B, N, heads, d, input scale): CAFormer's stage 3 and 4 at 224 px, few tokens, one token, wide heads, large scores
ATTENTION = [
    (2, 196, 10, 32, 1.0),
    (3, 49, 16, 32, 3.0),
    (1, 5, 2, 16, 1.0),
    (2, 37, 3, 64, 1.0),
    (1, 1, 1, 16, 1.0),
    (1, 300, 2, 32, 4.0),
    (1, 20, 1, 256, 0.5),
]


def _qkv(b, n, heads, d, scale, seed=0):
    gen = torch.Generator().manual_seed(seed + n)
    return torch.randn(b, n, 3 * heads * d, generator=gen) * scale, torch.randn(b, n, heads * d, generator=gen)


def _sdpa(qkv, heads):
    b, n, c3 = qkv.shape
    q, k, v = qkv.reshape(b, n, 3, heads, c3 // (3 * heads)).permute(2, 0, 3, 1, 4)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c3 // 3)


@pytest.mark.parametrize("shape", ATTENTION)
def test_attention_and_its_backward_within_their_derived_bounds(shape):
    """The output and qkv's gradient against float64 autograd of ``softmax(q k^T / sqrt d) v``, within the bounds
    ``tolerances.attention_bounds`` derives from the kernel's roundings and its exp's error; the same bits on one
    thread and two (a head of an image is one task)."""
    b, n, heads, d, scale = shape
    qkv, g = _qkv(b, n, heads, d, scale)
    with torch_threads(1):
        out, lse = vision.attention(qkv, heads)
        grad = vision.attention_backward(g, qkv, out, lse, heads)
    with torch_threads(2):
        out2, lse2 = vision.attention(qkv, heads)
        assert torch.equal(out, out2) and torch.equal(lse, lse2)
        assert torch.equal(grad, vision.attention_backward(g, qkv, out, lse, heads))
    out64, grad64, out_bound, grad_bound = attention_bounds(qkv, heads, g, vision.EXP_ERROR)
    assert out.shape == (b, n, heads * d) and lse.shape == (b, heads, n) and grad.shape == qkv.shape
    assert ((out.double() - out64).abs() <= out_bound).all()
    assert ((grad.double() - grad64).abs() <= grad_bound).all()


def test_attention_gives_nan_where_the_operators_do():
    """A NaN query makes its own rows NaN; a NaN key or an infinite score every row that sees it, as
    ``scaled_dot_product_attention`` gives; the rest is finite."""
    qkv, _ = _qkv(2, 9, 2, 16, 1.0)
    qkv[0, 3, 5] = float("nan")  # image 0, token 3's query, head 0
    qkv[1, 4, 32 + 20] = float("inf")  # image 1, token 4's key, head 1
    out, _ = vision.attention(qkv, 2)
    expected = _sdpa(qkv, 2)
    assert torch.equal(out.isnan(), expected.isnan())
    assert out.isnan().any() and not out.isnan().all()


def test_caformer_attention_trains_on_the_kernel_and_falls_back():
    """In training mode with autograd recording, CAFormer's attention runs the kernel: its output, through the
    projection, within the kernel's bound (and the projection's float32 sum) of float64 on the same qkv. Evaluation,
    no-grad, and heads of a width the kernel does not take run ``scaled_dot_product_attention``."""
    from zoo.layers import attention as attention_layer
    from zoo.models.metaformer import Attention

    calls = []
    real = attention_layer._AttentionTraining.apply
    for head_dim, kernel in ((32, True), (24, False)):
        torch.manual_seed(0)
        layer = Attention(64 if head_dim == 32 else 48, head_dim=head_dim)
        x = torch.randn(2, 5, 7, layer.qkv.in_features, requires_grad=True)
        calls.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(attention_layer._AttentionTraining, "apply", lambda *a: calls.append(1) or real(*a))
            y = layer(x)
            y.sum().backward()
            assert bool(calls) == kernel
            calls.clear()
            layer.eval()
            layer(x)
            with torch.no_grad():
                layer.train()
                layer(x)
            assert not calls
        if not kernel:
            continue
        qkv = layer.qkv(x).reshape(2, 35, -1).detach()
        out64, _, bound, _ = attention_bounds(
            qkv, layer.num_heads, torch.zeros(2, 35, layer.attention_dim), vision.EXP_ERROR
        )
        out32, _ = vision.attention(qkv, layer.num_heads)
        w = layer.proj.weight.double()
        y64 = (out64 @ w.t()).reshape(y.shape)
        limit = (bound @ w.abs().t() + gamma(layer.attention_dim) * (out32.double().abs() @ w.abs().t())).reshape(
            y.shape
        )
        assert ((y.double() - y64).abs() <= limit).all()


def test_attention_bad_calls_raise():
    with pytest.raises(RuntimeError, match=r"\(B, N, 3 C\)"):
        vision.attention(torch.randn(2, 5, 96, dtype=torch.float64), 2)
    with pytest.raises(RuntimeError, match="3 heads d"):
        vision.attention(torch.randn(2, 5, 100), 2)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        vision.attention(torch.randn(2, 5, 72), 1)  # heads of 24
    with pytest.raises(RuntimeError, match="multiple of 16"):
        vision.attention(torch.randn(2, 5, 0), 2)  # heads of no width
    qkv = torch.randn(2, 5, 96)
    out, lse = vision.attention(qkv, 2)
    with pytest.raises(RuntimeError, match=r"\(B, N, C\)"):
        vision.attention_backward(out[:, :4].contiguous(), qkv, out, lse, 2)
    with pytest.raises(RuntimeError, match="lse"):
        vision.attention_backward(out, qkv, out, lse[:1], 2)
