"""zoo.kernels.winograd and zoo.condense.fast_convs: the inference convolutions against float64 convolution, within
bounds derived from float32 rounding; the fallbacks; the modules in a compiled graph; DM's real side runs them."""

import pytest
import torch
import torch.nn.functional as F
from tolerances import U32, gamma, torch_threads
from torch import nn

from zoo.condense import fast_convs
from zoo.kernels import winograd

pytestmark = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"), reason="the kernels are AVX2"
)


@pytest.fixture(autouse=True)
def kernels():
    assert winograd.available()  # an AVX2 CPU with a C++ compiler: every machine the project runs its tests on


BT = torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float64)
AT = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float64)


def winograd64(x, u, bias, bt=BT, at=AT):
    """F(2x2, 3x3) in float64 from the kernel's own transformed weights ``u (16, K / 16, C, 16)``; with ``|B^T|``,
    ``|A^T|``, ``|x|``, ``|u|`` and ``|bias|`` it gives the magnitudes a rounding bound multiplies."""
    n, c, h, w = x.shape
    th, tw = (h + 1) // 2, (w + 1) // 2
    xp = F.pad(x, (1, 2 * tw + 1 - w, 1, 2 * th + 1 - h))
    d = xp.unfold(2, 4, 2).unfold(3, 4, 2)  # (N, C, th, tw, 4, 4)
    v = torch.einsum("ai,nctuij,bj->nctuab", bt, d, bt)
    uu = u.double().permute(0, 2, 1, 3).reshape(4, 4, c, -1)  # (4, 4, C, K)
    m = torch.einsum("nctuab,abck->nktuab", v, uu)
    y = torch.einsum("ia,nktuab,jb->nktiuj", at, m, at).reshape(n, -1, 2 * th, 2 * tw)[:, :, :h, :w]
    return y + bias.double().view(1, -1, 1, 1)


SHAPES = [(16, 128, 128, 16, 16), (16, 128, 128, 8, 8), (3, 8, 16, 7, 5), (2, 24, 32, 1, 3)]


@pytest.mark.parametrize("n, c, k, h, w", SHAPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_is_the_convolution_within_its_rounding_bound(n, c, k, h, w, threads):
    """Every output within gamma_{C+9} of its magnitudes (the input transform's 2 roundings, the weights' 1 (rounded
    once from float64), the product's 1, the C - 1 of the sum, the output transform's 4 and the bias's 1), and at
    128 channels the largest error no more than float32 direct convolution's own (oneDNN's, on the same inputs). The algorithm itself
    in float64 is the convolution to float64's rounding."""
    g = torch.Generator().manual_seed(n * 1000 + h)
    x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(k, c, 3, 3, generator=g) * (2 / (9 * c)) ** 0.5
    bias = torch.randn(k, generator=g)
    u = winograd.winograd_weights(weight)
    with torch_threads(threads):
        y = torch.ops.zoo_conv.winograd3x3(x, u, bias)
    assert y.shape == (n, k, h, w) and y.is_contiguous(memory_format=torch.channels_last)
    truth = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    u64 = winograd.winograd_weights(weight, torch.float64)  # the same panels, unrounded
    assert torch.allclose(winograd64(x.double(), u64, bias), truth, rtol=0, atol=1e-12)
    magnitude = winograd64(x.double().abs(), u.double().abs(), bias.abs(), BT.abs(), AT.abs())
    err = (y.double() - truth).abs()
    assert (err <= gamma(c + 9) * magnitude).all(), float((err / magnitude).max())
    if c >= 64:  # ConvNet-3's widths: the fewer products round less than oneDNN's direct sums (measured 3x less)
        direct = F.conv2d(x, weight.contiguous(memory_format=torch.channels_last), bias, padding=1)
        assert err.max() <= (direct.double() - truth).abs().max()


def test_winograd_gives_the_same_bits_at_any_thread_count():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 32, 16, 16, generator=g).contiguous(memory_format=torch.channels_last)
    u, bias = winograd.winograd_weights(torch.randn(32, 32, 3, 3, generator=g)), torch.randn(32, generator=g)
    with torch_threads(1):
        one = torch.ops.zoo_conv.winograd3x3(x, u, bias)
    with torch_threads(2):
        two = torch.ops.zoo_conv.winograd3x3(x, u, bias)
    assert torch.equal(one, two)


@pytest.mark.parametrize("n, c, k, size, pad", [(16, 1, 128, 28, 3), (4, 1, 16, 5, 1), (2, 1, 32, 9, 0)])
def test_the_one_channel_product_is_the_convolution_within_its_rounding_bound(n, c, k, size, pad):
    """Every output within gamma_{9C+1} of |bias| + sum |w| |x| (the bias, then 9 C products in a row)."""
    g = torch.Generator().manual_seed(size)
    x = torch.randn(n, c, size, size, generator=g).contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(c, k, 3, padding=pad)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(k, c, 3, 3, generator=g))
        conv.bias.copy_(torch.randn(k, generator=g))
    fast = fast_convs.DirectConv3x3(conv)
    with torch.no_grad():
        y = fast(x)
    w64, b64 = conv.weight.double(), conv.bias.double()
    truth = F.conv2d(x.double(), w64, b64, padding=pad)
    magnitude = F.conv2d(x.double().abs(), w64.abs(), b64.abs(), padding=pad)
    assert y.shape == truth.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert ((y.double() - truth).abs() <= gamma(9 * c + 1) * magnitude).all()


def test_inference_convs_swaps_what_is_eligible_and_falls_back_elsewhere():
    """ConvNet-3 on MNIST: the first conv (1 channel, padding 3) by the patch product, the other two by Winograd;
    the original untouched; with gradients on, or float64 input, the modules run the convolution they were made
    from."""
    from zoo.condense.core import make_network

    net = make_network("convnet_d3", (1, 28, 28), 10, torch.Generator().manual_seed(0))
    net = net.to(memory_format=torch.channels_last)
    fast = fast_convs.inference_convs(net)
    kinds = [type(s.conv).__name__ for s in fast.stages]
    assert kinds == ["DirectConv3x3", "Winograd3x3", "Winograd3x3"]
    assert all(type(s.conv) is nn.Conv2d for s in net.stages)
    x = torch.randn(4, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want64 = net.double()(x.double())
        net.float()
        got = fast(x)
        assert torch.equal(fast.double()(x.double()), want64)  # float64: the modules' own convolutions
        fast.float()
    assert (got.double() - want64).abs().max() < 1e-4 * want64.abs().max()
    assert torch.equal(fast(x), net(x))  # gradients on: oneDNN's convolution, bit for bit


@pytest.mark.slow  # 10 s of compilation; DM's compiled float32 parity tests run the same graph by default
def test_a_compiled_graph_calls_the_kernels():
    from zoo.condense.core import make_network

    net = make_network("convnet_d3", (1, 28, 28), 10, torch.Generator().manual_seed(0))
    fast = fast_convs.inference_convs(net.to(memory_format=torch.channels_last))
    x = torch.randn(4, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        eager = fast(x)
        compiled = torch.compile(lambda m, t: m(t), dynamic=False)(fast, x)
    assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-5 * float(eager.abs().max()))


def test_dm_runs_its_real_side_through_the_kernels():
    from zoo.condense.core import METHODS
    from zoo.condense.real import RealData

    g = torch.Generator().manual_seed(0)
    real = RealData(torch.randn(40, 1, 28, 28, generator=g), torch.arange(4).repeat(10), list("abcd"), {}, {})
    seen = []
    method = METHODS["dm"](real, 1, {"batch_real": 8, "compile": False}, 0, torch.device("cpu"))
    method.setup()
    assert method.fast_convs
    original = method._real_mean

    def spy(net, x, p):
        seen.append(type(net.stages[1].conv).__name__)
        return original(net, x, p)

    method._real_mean = spy
    method.step(0)
    assert seen == ["Winograd3x3"] * 4
    off = METHODS["dm"](real, 1, {"batch_real": 8, "compile": False, "fast_convs": False}, 0, torch.device("cpu"))
    off.setup()
    assert not off.fast_convs


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("shape", [(16, 128, 32, 32), (2, 3, 7, 9), (1, 2, 34, 18)])
def test_the_pooling_has_pytorchs_bits_forward_and_backward(shape):
    """Signed zeros included: PyTorch sums a window from zero (0 + -0 is +0), and its gradient is 0 + g / 4."""
    g = torch.Generator().manual_seed(shape[-1])
    x = torch.randn(*shape, generator=g)
    x[0, 0, 0, :4] = -0.0
    x.requires_grad_(True)
    want = F.avg_pool2d(x, 2, 2)
    fast = fast_convs.AvgPool2x2()
    got = fast(x)
    assert same_bits(got.detach(), want.detach())
    grad = torch.randn(want.shape, generator=g)
    grad[0, 0, 0, :3] = -0.0
    (want_gx,) = torch.autograd.grad(want, x, grad)
    (got_gx,) = torch.autograd.grad(got, x, grad)
    assert same_bits(got_gx, want_gx)


G = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)


def weight_grad64(x, g, bt=BT, at=AT, gm=G):
    """The weights' gradient by F(2x2, 3x3) in float64: ``G^T [sum over tiles (A g A^T) * (B^T d B)] G``; with the
    matrices' and tensors' magnitudes it gives what a rounding bound multiplies."""
    n, c, h, w = x.shape
    th, tw = (h + 1) // 2, (w + 1) // 2
    d = F.pad(x, (1, 2 * tw + 1 - w, 1, 2 * th + 1 - h)).unfold(2, 4, 2).unfold(3, 4, 2)  # (N, C, th, tw, 4, 4)
    v = torch.einsum("ai,nctuij,bj->nctuab", bt, d, bt)
    gt = F.pad(g, (0, 2 * tw - w, 0, 2 * th - h)).unfold(2, 2, 2).unfold(3, 2, 2)  # (N, K, th, tw, 2, 2)
    e = torch.einsum("ia,nktuij,jb->nktuab", at, gt, at)
    du = torch.einsum("nktuab,nctuab->abkc", e, v)
    return torch.einsum("ai,abkc,bj->kcij", gm, du, gm)


@pytest.mark.parametrize("n, c, k, h, w", [(4, 128, 128, 16, 16), (3, 16, 24, 7, 5)])
def test_the_winograd_backward_keeps_the_forward_and_bounds_the_gradients(n, c, k, h, w):
    """The forward is the convolution's bits. The input gradient (the transposed convolution by F(2x2, 3x3)) within
    the first test's bound; the weights' gradient within gamma_{T+6} of its magnitudes (T tiles summed in a row, two
    roundings in each transform, one in the product, and one where the float64 output transform rounds to float32);
    the bias's is the gradient's sum."""
    gen = torch.Generator().manual_seed(h)
    conv = nn.Conv2d(c, k, 3, padding=1)
    x = torch.randn(n, c, h, w, generator=gen, requires_grad=True)
    grad = torch.randn(n, k, h, w, generator=gen)
    want = conv(x)
    fast = fast_convs.WinogradBackward3x3(conv)
    got = fast(x)
    gx, gw, gb = torch.autograd.grad(got, [x, conv.weight, conv.bias], grad)
    assert same_bits(got.detach(), want.detach())
    w_t = conv.weight.detach().flip(2, 3).transpose(0, 1)
    truth = F.conv2d(grad.double(), w_t.double(), padding=1)
    magnitude = winograd64(grad.double().abs(), fast._v[1].double().abs(), torch.zeros(c), BT.abs(), AT.abs())
    assert ((gx.double() - truth).abs() <= gamma(k + 9) * magnitude).all()
    assert gx.is_contiguous()
    x64, g64 = x.detach().double(), grad.double()
    truth_w = torch.ops.aten.convolution_backward(
        g64, x64, conv.weight.double(), [k], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False]
    )[1]
    assert torch.allclose(weight_grad64(x64, g64), truth_w, rtol=0, atol=1e-10)
    magnitude_w = weight_grad64(x64.abs(), g64.abs(), BT.abs(), AT.abs(), G.abs())
    tiles = n * ((h + 1) // 2) * ((w + 1) // 2)
    err_w = (gw.double() - truth_w).abs()
    assert (err_w <= gamma(tiles + 6) * magnitude_w + U32 * truth_w.abs()).all()
    # the bias's: a float32 sum of the N H W gradients per channel, within gamma_{NHW} of the sum of their magnitudes
    err_b = (gb.double() - g64.sum((0, 2, 3))).abs()
    assert (err_b <= gamma(n * h * w) * g64.abs().sum((0, 2, 3))).all()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_winograd_forward_for_training_follows_each_version_of_the_weights(layout):
    """With ``exact_forward=False`` the forward is ``winograd3x3``'s bits (within the first test's bound of the
    convolution) in the input's layout, its weights transformed again after each in-place update (an optimizer's
    step), and the gradients are the exact forward's."""
    gen = torch.Generator().manual_seed(5)
    conv = nn.Conv2d(16, 32, 3, padding=1)
    x = torch.randn(3, 16, 8, 8, generator=gen).contiguous(memory_format=layout).requires_grad_(True)
    grad = torch.randn(3, 32, 8, 8, generator=gen)
    fast, exact = fast_convs.WinogradBackward3x3(conv, exact_forward=False), fast_convs.WinogradBackward3x3(conv)
    for _ in range(2):
        y = fast(x)
        u, b = winograd.winograd_weights(conv.weight), conv.bias.detach()
        want = torch.ops.zoo_conv.winograd3x3(x.detach().contiguous(memory_format=torch.channels_last), u, b)
        assert same_bits(y.detach(), want) and y.is_contiguous(memory_format=layout)
        got = torch.autograd.grad(y, [x, conv.weight, conv.bias], grad)
        for a, e in zip(got, torch.autograd.grad(exact(x), [x, conv.weight, conv.bias], grad)):
            assert same_bits(a, e)
        with torch.no_grad():
            conv.weight.sub_(0.1 * got[1])  # a step: the next forward sees the new weights


PLANES = [(16, 128, 28, 28, 3), (5, 20, 13, 11, 1), (3, 16, 32, 9, 0)]  # MNIST's first layer; tails; no padding


def plane64(x, w, b, pad):
    """plane3x3's order in float64: from zero, the 9 products fused-multiply-added in the order (i, j) (each step's
    exact sum rounded to float32; a float32 product is exact in float64), then the bias added."""
    n, _, h, wd = x.shape
    ho, wo = h + 2 * pad - 2, wd + 2 * pad - 2
    xp, w64 = F.pad(x, (pad,) * 4).double(), w.double()
    acc = torch.zeros(n, w.shape[0], ho, wo, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            acc = (acc + xp[:, :, i : i + ho, j : j + wo] * w64[:, 0, i, j].view(1, -1, 1, 1)).float().double()
    return (acc + b.double().view(1, -1, 1, 1)).float()


@pytest.mark.parametrize("n, k, h, w, pad", PLANES)
def test_the_one_channel_plane_kernel_sums_in_its_stated_order(n, k, h, w, pad):
    """plane3x3's bits are its documented order's (the same on every CPU), and the module's forward is the
    convolution's own bits wherever it runs (the kernel where that order is oneDNN's, else the convolution)."""
    g = torch.Generator().manual_seed(n)
    x, wt, b = (
        torch.randn(n, 1, h, w, generator=g),
        torch.randn(k, 1, 3, 3, generator=g) * 0.3,
        torch.randn(k, generator=g),
    )
    assert same_bits(torch.ops.zoo_conv.plane3x3(x, wt, b, pad), plane64(x, wt, b, pad))
    conv = nn.Conv2d(1, k, 3, padding=pad)
    with torch.no_grad():
        conv.weight.copy_(wt), conv.bias.copy_(b)
    mod = fast_convs.PlaneBackward3x3(conv)
    assert fast_convs.PlaneBackward3x3.eligible(conv)
    assert same_bits(mod(x), F.conv2d(x, wt, b, padding=pad))


@pytest.mark.parametrize("n, k, h, w, pad", PLANES)
def test_the_one_channel_plane_gradients_are_within_their_rounding_bound(n, k, h, w, pad):
    """The weights' and bias's gradients: per image, 8 lanes each sum ceil(Wo / 8) Ho terms in a row, then 3 pairwise
    sums of the lanes, then the images add in float64 and round once: within gamma_{ceil(Wo/8) Ho + 5} of the
    magnitudes summed over every term. The same bits at one and two threads; the input's gradient is the
    convolution's when asked for."""
    g = torch.Generator().manual_seed(k)
    x = torch.randn(n, 1, h, w, generator=g)
    conv = nn.Conv2d(1, k, 3, padding=pad)
    ho, wo = h + 2 * pad - 2, w + 2 * pad - 2
    gy = torch.randn(n, k, ho, wo, generator=g)
    mod = fast_convs.PlaneBackward3x3(conv)
    xr = x.clone().requires_grad_(True)
    grads = {}
    for threads in (1, 2):
        with torch_threads(threads):
            conv.zero_grad()
            xr.grad = None
            mod(xr).backward(gy)
            grads[threads] = (conv.weight.grad.clone(), conv.bias.grad.clone(), xr.grad.clone())
    gw, gb, gx = grads[1]
    assert all(same_bits(a, b) for a, b in zip(grads[1], grads[2]))
    x64, gy64 = x.double(), gy.double()
    none = (False, True, True)
    _, tw, tb = torch.ops.aten.convolution_backward(
        gy64, x64, conv.weight.double(), [k], (1, 1), (pad, pad), (1, 1), False, (0, 0), 1, none
    )
    _, mw, mb = torch.ops.aten.convolution_backward(
        gy64.abs(), x64.abs(), conv.weight.double(), [k], (1, 1), (pad, pad), (1, 1), False, (0, 0), 1, none
    )
    bound = gamma(-(-wo // 8) * ho + 5)
    assert ((gw.double() - tw).abs() <= bound * mw).all()
    assert ((gb.double() - tb).abs() <= bound * mb).all()
    ref_gx = torch.ops.aten.convolution_backward(
        gy, x, conv.weight, None, (1, 1), (pad, pad), (1, 1), False, (0, 0), 1, (True, False, False)
    )[0]
    assert same_bits(gx, ref_gx)


@pytest.mark.parametrize("shape", [(16, 128, 32, 32), (4, 16, 8, 8), (3, 5, 6, 16)])
def test_the_fused_norm_relu_pool_keeps_the_forward_and_bounds_the_gradients(shape):
    """Forward: PyTorch's bits. Backward against float64: the input's gradient within the bound of PyTorch's own
    formula in float32 (its sums ds, db over HW terms in 8 lanes, then the three-term update: gamma_{HW/8 + 6} of
    the magnitudes, |c1 dy| + |c2 x| + |c3| with each coefficient's own magnitudes), gamma's and beta's within
    gamma_{HW/8 + 3} of the sums of their terms' magnitudes; the same bits at one and two threads."""
    n, c, h, w = shape
    g = torch.Generator().manual_seed(c)
    norm, act, pool = nn.GroupNorm(c, c), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(c, generator=g)), norm.bias.copy_(torch.randn(c, generator=g))
    assert fast_convs.NormReLUPool2x2.eligible(norm, act, pool)
    mod = fast_convs.NormReLUPool2x2(norm, act, pool)
    x = torch.randn(shape, generator=g)
    gp = torch.randn(n, c, h // 2, w // 2, generator=g)
    grads = {}
    for threads in (1, 2):
        with torch_threads(threads):
            xr = x.clone().requires_grad_(True)
            out = mod(xr)
            grads[threads] = torch.autograd.grad(out, (xr, norm.weight, norm.bias), gp)
    assert same_bits(out, pool(act(norm(x.clone()))))
    assert all(same_bits(a, b) for a, b in zip(grads[1], grads[2]))
    dx, dgamma, dbeta = grads[1]
    # float64 truth and the magnitudes of each term
    x64, gp64, gm = x.double(), gp.double(), norm.weight.detach().double().view(1, c, 1, 1)
    mean = x64.mean((2, 3), keepdim=True)
    rstd = 1 / (x64.var((2, 3), unbiased=False, keepdim=True) + norm.eps).sqrt()
    xhat = (x64 - mean) * rstd
    y = xhat * gm + norm.bias.detach().double().view(1, c, 1, 1)
    dy = torch.where(y > 0, gp64.repeat_interleave(2, 2).repeat_interleave(2, 3) / 4, torch.zeros_like(y))
    hw = h * w
    ds, db = (dy * x64).sum((2, 3), keepdim=True), dy.sum((2, 3), keepdim=True)
    c2 = (db * mean - ds) * gm * rstd**3 / hw
    c3 = -c2 * mean - db * gm * rstd / hw
    truth = rstd * gm * dy + c2 * x64 + c3
    mds, mdb = (dy * x64).abs().sum((2, 3), keepdim=True), dy.abs().sum((2, 3), keepdim=True)
    m2 = (mdb * mean.abs() + mds) * gm.abs() * rstd**3 / hw
    m3 = m2 * mean.abs() + mdb * gm.abs() * rstd / hw
    bound = gamma(hw // 8 + 8) * (rstd * gm.abs() * dy.abs() + m2 * x64.abs() + m3)
    assert ((dx.double() - truth).abs() <= bound).all()
    tg, tb = ((ds - db * mean) * rstd).sum((0, 2, 3)), db.sum((0, 2, 3))
    mg = ((mds + mdb * mean.abs()) * rstd).sum((0, 2, 3))
    assert ((dgamma.double() - tg).abs() <= gamma(hw // 8 + 6) * mg).all()
    assert ((dbeta.double() - tb).abs() <= gamma(hw // 8 + 3) * mdb.sum((0, 2, 3))).all()


def test_dc_runs_its_real_side_through_the_fast_backward_and_restores_the_network():
    from zoo.condense.core import METHODS
    from zoo.condense.real import RealData

    g = torch.Generator().manual_seed(0)
    real = RealData(torch.randn(40, 1, 28, 28, generator=g), torch.arange(4).repeat(10), list("abcd"), {}, {})
    method = METHODS["dsa"](real, 1, {"batch_real": 8}, 0, torch.device("cpu"))
    method.setup()
    seen = []
    original = method._real_loss

    def spy(net, x, y):
        seen.append([type(m).__name__ for m in (net.stages[0].conv, net.stages[1].conv, net.stages[1].norm)])
        return original(net, x, y)

    method._real_loss = spy
    net = method.network()
    method._real_grad(net, list(net.parameters()), real.images[:8], 0, None)
    assert seen == [["PlaneBackward3x3", "WinogradBackward3x3", "NormReLUPool2x2"]]
    assert [type(s.conv) for s in net.stages] == [nn.Conv2d] * 3
    assert all(type(s.pool) is nn.AvgPool2d and type(s.norm) is nn.GroupNorm for s in net.stages)
    # the network's training between outer steps: the same kernels, the 3x3 forward by Winograd too
    trained = []
    forward = net.forward

    def spy_train(x):
        trained.append((type(net.stages[0].conv).__name__, getattr(net.stages[1].conv, "exact_forward", None)))
        return forward(x)

    net.forward = spy_train
    method._train_net(net, torch.optim.SGD(net.parameters(), lr=0.01))
    assert trained and set(trained) == {("PlaneBackward3x3", False)}
    assert [type(s.conv) for s in net.stages] == [nn.Conv2d] * 3


def test_fast_backward_leaves_a_network_off_the_cpu_as_it_is():
    net = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.AvgPool2d(2)).to("meta")
    with fast_convs.fast_backward(net, exact_forward=False):
        assert [type(m) for m in net] == [nn.Conv2d, nn.AvgPool2d]


def test_zoo_conv_0_skips_the_build(monkeypatch):
    monkeypatch.setenv("ZOO_CONV", "0")
    assert winograd._build() is False


@pytest.mark.parametrize("shape", [(16, 128, 16, 16), (3, 8, 4, 2), (2, 12, 5, 5)])
def test_relayout_copies_between_the_two_memory_formats(shape):
    x = torch.randn(shape)
    cl = torch.ops.zoo_conv.relayout(x, True)
    assert cl.is_contiguous(memory_format=torch.channels_last) and same_bits(cl, x)
    back = torch.ops.zoo_conv.relayout(cl, False)
    assert back.is_contiguous() and same_bits(back, x)
    again = torch.ops.zoo_conv.relayout(back, False)  # already in the layout: a copy, never the input itself
    assert again.data_ptr() != back.data_ptr() and same_bits(again, x)
