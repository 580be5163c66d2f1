"""Where a numeric test's tolerance comes from (tests must pass on every CPU CI may use: AMD EPYC with AVX-512/VNNI,
Intel Xeon with AMX, older AVX2 machines, each with its own kernels and summation orders), so that no bound is a
figure tuned on one machine:

- two paths that compute the same thing the same way agree bit for bit: ``atol=0`` (no helper needed);
- two float32 paths that differ in summation order or kernel: :func:`float32_bound`, a few x the depth of the
  reductions x one float32 step of the magnitude they run over;
- a whole model (many reductions, norms, softmaxes): :func:`assert_float32_close`, the float32 result against the
  same model in float64 on the same inputs, within a small multiple of that float32 reference's own error
  (:func:`float64_bound`), which every machine measures for itself.
"""

import copy

import torch

EPS32 = torch.finfo(torch.float32).eps  # 2**-23: one float32 step at 1.0 (twice the unit roundoff)
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
