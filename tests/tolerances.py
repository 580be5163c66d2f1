"""Where a numeric test's tolerance comes from (tests must pass on every CPU CI may use: AMD EPYC with AVX-512/VNNI,
Intel Xeon with AMX, older AVX2 machines, each with its own kernels and summation orders), so that no bound is a
figure tuned on one machine:

- two paths that compute the same thing the same way agree bit for bit: ``atol=0`` (no helper needed);
- two float32 paths that differ in summation order or kernel: :func:`float32_bound`, a few x the depth of the
  reductions x one float32 step of the magnitude they run over;
- a kernel's own sum, written out: :func:`gamma`, the classic bound on ``n`` roundings in a row (``|error| <=
  gamma_n x`` the sum of the magnitudes), at float32's unit roundoff :data:`U32` or another;
- a whole model (many reductions, norms, softmaxes): :func:`assert_float32_close`, the float32 result against the
  same model in float64 on the same inputs, within a small multiple of that float32 reference's own error
  (:func:`float64_bound`), which every machine measures for itself;
- a condensation step or loop against its authors' code (the parity tests, ``test_condense_parity*.py``): the zoo's
  float32 on the real shapes (:data:`SHAPES`) beside the authors' rendition in float32 and float64 on the same
  inputs, within :func:`bound_of` the authors' own relative float32-vs-float64 error (:func:`assert_within` per
  class, :func:`assert_scalar_within` for a number, :func:`assert_state_within` for a network's weights).
"""

import contextlib
import copy

import pytest
import torch

EPS32 = torch.finfo(torch.float32).eps  # 2**-23: one float32 step at 1.0 (twice the unit roundoff)
U32, U64 = 2.0**-24, 2.0**-53  # unit roundoffs of float32 and float64
TIMES, ULPS = 4.0, 4  # a float32 path within TIMES x the reference's own float32 error, plus ULPS steps of its scale


def magnitude(x) -> float:
    """The largest ``|x|`` (a tensor) or ``x`` itself (a number)."""
    return float(x.detach().abs().max()) if isinstance(x, torch.Tensor) else float(x)


def float32_bound(scale, depth: int, factor: float = 4.0) -> float:
    """``factor x depth x EPS32 x scale``: the float32 rounding that two summation orders of ``depth`` terms may
    leave between them, where ``scale`` (a tensor's max ``|.|`` or a number) is the magnitude the sums run over:
    the sum of ``|terms|`` when it is at hand, else the largest ``|output|``. Each added term rounds by at most
    half a step of the running sum, so ``depth x EPS32 x scale`` bounds either order's error; ``factor`` covers
    both orders and the rounding of the inputs and of the final value."""
    return factor * depth * EPS32 * magnitude(scale)


def float64_bound(ref32: torch.Tensor, ref64: torch.Tensor, times: float = TIMES, ulps: int = ULPS) -> float:
    """``times`` x the float32 reference's own largest error against the float64 one (the same inputs), plus
    ``ulps`` float32 steps of the reference's largest magnitude (a floor where the own error happens to be tiny)."""
    own = (ref32.double() - ref64.double()).abs().max().item()
    return times * own + ulps * EPS32 * magnitude(ref64)


def assert_float32_close(
    actual: torch.Tensor,
    ref32: torch.Tensor,
    ref64: torch.Tensor,
    times: float = TIMES,
    ulps: int = ULPS,
    msg: str = "",
) -> float:
    """``actual`` (float32, by another path) within :func:`float64_bound` of both the float32 reference and the
    float64 truth. Returns the bound (for a report)."""
    bound = float64_bound(ref32, ref64, times, ulps)
    for want, what in ((ref32, "float32"), (ref64, "float64")):
        err = (actual.double() - want.double()).abs().max().item()
        assert err <= bound, f"{msg}: {err:.3g} off the {what} reference > bound {bound:.3g} ({times} x its own error)"
    return bound


def in_float64(module: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of ``module`` (the module itself is left in float32)."""
    return copy.deepcopy(module).double()


BF16_UNIT = 2.0**-8  # bfloat16's unit roundoff: a rounding to bf16 moves a value by at most 2**-8 of itself


def bf16_bound(terms: torch.Tensor, out: torch.Tensor, factor: float = 1.0) -> float:
    """``factor x 2**-8 x max(terms + |out|)``: a product whose inputs (the rows) and output are rounded to bf16,
    each at most a unit roundoff of itself, where ``terms`` is the product's sum of ``|terms|`` per output element
    (``|x| @ |W|.T``, plus ``|bias|``) and ``out`` the output; the float32 accumulation is far below it."""
    return factor * BF16_UNIT * float((terms.detach() + out.detach().abs()).max())


# -- the condensation parity tests' float32 bound ----------------------------------------------------------------------
# A step runs in float32 on the real shapes (MNIST's 1 channel at 28 px, CIFAR's 3 at 32 px) beside the authors'
# rendition in float32 and float64 on the same inputs; the zoo's float32 may be off from the float64 truth, and from
# the authors' float32, by at most ``TIMES`` x the authors' own float32-vs-float64 error plus ``ULPS`` float32 ulps
# (errors relative to the largest ``|value|``, so the ulps are ``ULPS x EPS32``). The bound comes from float32
# rounding, not from this machine: every machine measures the authors' own error for itself.
SHAPES = [pytest.param(1, 28, id="1x28"), pytest.param(3, 32, id="3x32")]


def nets_like(channels, size, dtype, seed, classes, width):
    """The authors' ConvNet-3 and the zoo's with the same weights, in ``dtype`` (made in float32, so that every
    dtype starts from the same values; norm biases moved off their zero start)."""
    import zoo
    from zoo.bench.reference.convnet import ReferenceConvNet
    from zoo.models.convnet import checkpoint_filter_fn

    torch.manual_seed(seed)
    r = ReferenceConvNet(channels, classes, width, 3, "instancenorm", (size, size))
    with torch.no_grad():
        for t in r.state_dict().values():
            if t.ndim == 1:
                t.add_(torch.randn(t.shape) * 0.3)
    z = zoo.create_model("convnet_d3", num_classes=classes, in_chans=channels, img_size=size, width=width)
    z.load_state_dict(checkpoint_filter_fn(r.state_dict(), z))
    return r.to(dtype), z.to(dtype)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|`` of one tensor (in float64)."""
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def per_class(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``max |a - b| / max |b|`` over each class's rows (one row per class, ipc 1)."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    return (a - b).abs().amax(1) / b.abs().amax(1).clamp_min(1e-30)


def scalar_error(a, b) -> float:
    """``|a - b| / |b|`` of two numbers."""
    a, b = float(a), float(b)
    return abs(a - b) / max(abs(b), 1e-30)


def bound_of(own: float) -> float:
    """The float32 bound for a quantity whose authors' float32 is ``own`` off their float64 (relative):
    ``TIMES x own + ULPS x EPS32``."""
    return TIMES * float(own) + ULPS * EPS32


def assert_within(zoo32: torch.Tensor, ref32: torch.Tensor, ref64: torch.Tensor, what: str) -> dict:
    """The zoo's float32 per-class rows within :func:`bound_of` the authors' own largest per-class error, against
    the float64 truth and against the authors' float32. The bound is the step's, not a class's: a rounding that
    lands on the other side of a ReLU or a near-flat norm moves one class's error far above an ulp. Returns the
    errors (for a report)."""
    own = per_class(ref32, ref64)
    bound = bound_of(own.max())
    truth, authors = per_class(zoo32, ref64), per_class(zoo32, ref32)
    bad = torch.nonzero((truth > bound) | (authors > bound)).flatten().tolist()
    assert not bad, [(what, c, f"zoo {truth[c]:.2e} / {authors[c]:.2e} > {bound:.2e}, authors' own {own.max():.2e}")
                     for c in bad]  # fmt: skip
    return {"own": float(own.max()), "bound": bound, "zoo": float(truth.max())}


def assert_scalar_within(zoo32, ref32, ref64, what: str) -> dict:
    """As :func:`assert_within` for one number (a loss, a learned lr's gradient)."""
    own = scalar_error(ref32, ref64)
    bound = bound_of(own)
    truth, authors = scalar_error(zoo32, ref64), scalar_error(zoo32, ref32)
    assert truth <= bound and authors <= bound, (what, truth, authors, bound, own)
    return {"own": own, "bound": bound, "zoo": truth}


def assert_state_within(zoo32: dict, ref32: dict, ref64: dict, what: str) -> dict:
    """As :func:`assert_within` for a network's weights (``{name: tensor}``; float tensors only): each tensor's
    :func:`relative_error`, within :func:`bound_of` the authors' own largest over the network (the network's bound,
    as a step's is: a rounding that crosses a ReLU kink moves every tensor trained after it), against the float64
    truth and the authors' float32."""
    names = [k for k, v in ref64.items() if v.is_floating_point()]
    own = {k: relative_error(ref32[k], ref64[k]) for k in names}
    bound = bound_of(max(own.values()))
    errors = {k: max(relative_error(zoo32[k], ref64[k]), relative_error(zoo32[k], ref32[k])) for k in names}
    bad = [(what, k, f"zoo {errors[k]:.2e} > {bound:.2e}, authors' own {own[k]:.2e}") for k in names
           if errors[k] > bound]  # fmt: skip
    assert not bad, bad
    return {"own": max(own.values()), "bound": bound, "zoo": max(errors.values())}


def gamma(n: int, u: float = U32) -> float:
    """The classic bound on n roundings in a row: |error| <= gamma_n * (the sum of the magnitudes)."""
    return n * u / (1 - n * u)


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` for the block, then put back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gelu_bounds(x: torch.Tensor, act: torch.Tensor, slope: torch.Tensor, erf_error: float, exp_error: float):
    """``(exact act, exact slope, act's bound, slope's bound)`` in float64 for a float32 GELU ``act`` and slope of
    ``x`` computed from an erf within ``erf_error`` and an exp within the relative ``exp_error``. With ``z = x /
    sqrt 2`` rounded twice (moving erf by at most 0.97 u: erf's slope times z is at most 0.48), ``|act - gelu| <=
    |x| / 2 (erf_error + u) + u |act|``. The slope: ``Phi`` within ``(erf_error + u) / 2 + u`` (its fused
    multiply-add); the density ``exp(-x^2 / 2) / sqrt(2 pi)`` within the relative ``(x^2 / 2) u`` (x^2's rounding)
    ``+ exp_error + 2 u`` (the constant's rounding and the product's), times ``|x|``; then the last fused
    multiply-add's ``u |slope|``. A tiny absolute term covers subnormal halves and a density flushed to zero where it
    is below 1e-36."""
    x64, u, tiny = x.double(), U32, 1e-36
    cdf = 0.5 * (1 + torch.erf(x64 / 2**0.5))
    density = x64 * torch.exp(-0.5 * x64 * x64) / (2 * torch.pi) ** 0.5
    act_bound = x64.abs() / 2 * (erf_error + u) + u * act.double().abs() + tiny
    slope_bound = (erf_error + u) / 2 + u + density.abs() * (x64 * x64 / 2 * u + exp_error + 2 * u)
    return x64 * cdf, cdf + density, act_bound, slope_bound + u * slope.double().abs() + tiny


def attention_bounds(qkv: torch.Tensor, heads: int, g: torch.Tensor, exp_error: float):
    """``(out, grad, out's bound, grad's bound)`` in float64 for a float32 multi-head attention ``softmax(q k^T /
    sqrt d) v`` of ``qkv`` (B, N, 3 C) (a token's q for every head, then its k, then its v) and qkv's gradient given
    the output's gradient ``g`` (B, N, C), computed as ``zoo.kernels.vision.attention`` computes them: each score a
    float32 sum of d fused multiply-adds (within ``gamma_d sum |q||k|``), scaled by the rounded ``1 / sqrt d`` and
    rounded (``gamma_2 |x|`` more); ``exp(x - max x)`` with ``t = x - max x`` rounded and an exp within the relative
    ``exp_error``; the row's float32 sum ``l`` (``gamma_N``); the output a float32 sum of N fused multiply-adds
    (``gamma_N``) times the rounded ``1 / l``. Every weight is then within a factor ``exp(2 rho)(1 + E) / (1 - E)``
    of the exact one, ``rho`` the row's largest error in an exponent. The backward recomputes each weight as ``exp(x
    - lse)`` with ``lse = max x + log l`` rounded (its error: the exponents' ``rho``, the sum's and exps' factors,
    ``logf``'s one step and the sum's rounding), and forms ``dS = P (dP - D) / sqrt d`` with ``dP = g v^T`` and ``D
    = sum g out`` (each ``gamma_d``, D also through the output's error) and three roundings; each gradient is a
    float32 sum of N fused multiply-adds of those. A tiny absolute term covers the exps flushed to zero below
    ``exp(-87)``."""
    B, N, C3 = qkv.shape
    C = C3 // 3
    d = C // heads
    u, tiny, E = U32, 1e-36, exp_error
    x64 = qkv.detach().double().requires_grad_()
    q, k, v = x64.reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)  # (B, heads, N, d)
    c = 1 / d**0.5
    x = (q @ k.transpose(-1, -2)) * c
    p = torch.softmax(x, -1)
    out = p @ v
    g64 = g.double().reshape(B, N, heads, d).transpose(1, 2)
    (grad,) = torch.autograd.grad(out, x64, g64)
    with torch.no_grad():
        qa, ka, va, ga = q.abs(), k.abs(), v.abs(), g64.abs()
        g2, gd, gN = gamma(2), gamma(d), gamma(N)
        dx = c * gd * (qa @ ka.transpose(-1, -2)) * (1 + g2) + g2 * x.abs()  # each scaled score's error
        span = x.abs() + x.abs().amax(-1, keepdim=True) + 2 * dx.amax(-1, keepdim=True)
        rho = (dx + u * span * (1 + g2)).amax(-1, keepdim=True)  # and t's rounding: the row's worst exponent
        kappa = torch.exp(2 * rho) * (1 + E) / (1 - E) - 1
        lam = (1 + u) ** 2 / (1 - gN) - 1  # 1 / l's rounding and the product's, over l's sum
        pv = p @ va
        out_bound = (kappa + (1 + kappa) * (lam + gN * (1 + lam))) * pv + tiny
        # the backward's weights
        lse = torch.logsumexp(x, -1, keepdim=True)
        zeta = rho - torch.log(torch.tensor((1 - E) * (1 - gN), dtype=torch.float64))  # |log l - (lse - max)|
        log_l = torch.log(torch.tensor(float(N), dtype=torch.float64)) + 2 * rho + zeta
        d_lse = zeta + 2 * u * log_l + u * (lse.abs() + zeta + 2 * u * log_l) * (1 + u)
        d_exp = dx + d_lse + u * ((x - lse).abs() + dx + d_lse) * (1 + u)
        k_p = torch.exp(d_exp) * (1 + E) - 1  # each recomputed weight within p k_p
        d_dp = gd * (ga @ va.transpose(-1, -2))
        o_abs = out.abs() + out_bound
        d_D = (gd * (ga * o_abs).sum(-1, keepdim=True) + (ga * out_bound).sum(-1, keepdim=True)).transpose(-1, -2)
        dp_exact = g64 @ v.transpose(-1, -2) - (g64 * out).sum(-1, keepdim=True)  # dP - D
        d_diff = (d_dp + d_D.transpose(-1, -2)) * (1 + u) + u * dp_exact.abs()
        p_hat = p * (1 + k_p)
        d_ds = c * (p * k_p * dp_exact.abs() + p_hat * d_diff) * (1 + u) + gamma(3) * c * p_hat * (
            dp_exact.abs() + d_diff
        )
        ds_abs = c * p * dp_exact.abs() + d_ds
        dv_bound = (p * (k_p + gN * (1 + k_p))).transpose(-1, -2) @ ga
        dk_bound = (d_ds + gN * ds_abs).transpose(-1, -2) @ qa
        dq_bound = (d_ds + gN * ds_abs) @ ka
        grad_bound = torch.stack([dq_bound, dk_bound, dv_bound]).permute(1, 3, 0, 2, 4).reshape(B, N, C3) + tiny
    return out.detach().transpose(1, 2).reshape(B, N, C), grad, out_bound.transpose(1, 2).reshape(B, N, C), grad_bound
