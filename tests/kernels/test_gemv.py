"""zoo.kernels.gemv: the one-row CPU kernels of decoding, against the float products they stand for."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from tolerances import assert_float32_close, in_float64, torch_threads
from torch import nn

from zoo.kernels import gemv
from zoo.lm.quant import QuantizedLinear

pytestmark = pytest.mark.skipif(not gemv.available(), reason="the kernels need an AVX2 CPU and a C++ compiler")


def _rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("shape", [(1536, 576), (45, 64), (7, 1000)])
def test_f32_is_the_float_product(shape):
    w, x = torch.randn(*shape), torch.randn(1, shape[1])
    assert _rel(gemv.gemv_f32(x, w), F.linear(x, w)) < 1e-5
    # a transposed view is read as its values, not its memory
    wt = torch.randn(shape[1], shape[0]).t()
    assert _rel(gemv.gemv_f32(x, wt), F.linear(x, wt)) < 1e-5


def test_f32_many_gives_each_products_bits():
    # widths of a layer's query, key and value, and odd ones that split a 16-row grain across two weights
    x = torch.randn(1, 576)
    weights = [torch.randn(n, 576) for n in (576, 192, 192, 7, 45)] + [torch.randn(576, 40).t(), torch.randn(3, 576)]
    got = gemv.gemv_f32_many(x, weights)
    assert len(got) == len(weights)
    for y, w in zip(got, weights):
        assert y.shape == (1, w.shape[0]) and torch.equal(y, gemv.gemv_f32(x, w))
    with pytest.raises(RuntimeError, match="of the row's width"):
        gemv.gemv_f32_many(x, [weights[0], torch.randn(4, 64)])
    assert torch.equal(gemv.gemv_f32_many(x, weights[:2])[1], gemv.gemv_f32(x, weights[1]))


@pytest.mark.parametrize("k", [576, 1536, 600, 37, 5])
def test_every_float32_path_the_cpu_runs_gives_the_same_bits(k):
    """avx2 and, where the CPU reports AVX-512F, avx512: the same four chains of sums lane by lane, so the same bits
    at every width (whole turns of 32 columns, a tail of eights and a scalar tail), one weight or three at once."""
    x = torch.randn(1, k)
    weights = [torch.randn(n, k) for n in (96, 37, 16)]
    paths = gemv.f32_paths()
    assert paths[0] == "avx2" and set(paths) <= set(gemv.F32_PATHS)
    outs = {p: (gemv.gemv_f32(x, weights[0], p), gemv.gemv_f32_many(x, weights, p)) for p in paths}
    first, many = outs["avx2"]
    assert_float32_close(first, F.linear(x, weights[0]), F.linear(x.double(), weights[0].double()))
    for p, (one, several) in outs.items():
        assert torch.equal(one, first) and all(torch.equal(a, b) for a, b in zip(several, many)), p
    assert torch.equal(gemv.gemv_f32(x, weights[0]), first)  # the chosen path: one of them


def test_a_float32_path_the_cpu_lacks_is_refused():
    x, w = torch.randn(1, 64), torch.randn(8, 64)
    if "avx512" not in gemv.f32_paths():
        with pytest.raises(ValueError, match="float32 path 'avx512' does not run on this CPU"):
            gemv.gemv_f32(x, w, "avx512")
        with pytest.raises(RuntimeError, match="cannot run the float32 path 1"):
            torch.ops.zoo_gemv.f32(x, w, 1)
    with pytest.raises(RuntimeError, match="cannot run the float32 path 2"):
        torch.ops.zoo_gemv.f32_2(x, w, w, 2)


@pytest.mark.parametrize("bits,group_size", [(8, None), (4, 32), (4, 64)])
@pytest.mark.parametrize("out_features", [1536, 37])
def test_integer_kernels_match_the_dequantized_weight(bits, group_size, out_features):
    torch.manual_seed(0)
    linear = nn.Linear(576, out_features)
    layer = QuantizedLinear.from_float(linear, bits=bits, group_size=group_size, act_bits=16).eval()
    x = torch.randn(1, 576) * torch.linspace(0.01, 30, 576)  # blocks of very different magnitudes
    ref = F.linear(x, layer.dequantize())
    if bits == 8:
        y = gemv.gemv_int8(x, layer.qweight, layer.scale)
    else:
        y = gemv.gemv_int4(x, layer.qweight, layer.scale, layer.zero, group_size)
    assert _rel(y, ref) < 2e-4  # the int16 rounding of x, per block of 32
    # the layer takes them for one row (eager and compiled), with its bias, and rounds nothing to bf16
    with torch.inference_mode():
        assert _rel(layer(x), ref + layer.bias) < 2e-4
        assert _rel(layer(x[None]), ref + layer.bias) < 2e-4  # (1, 1, K) too
        rows = torch.randn(3, 576)  # more rows: PyTorch's kernels on bf16 rows
        assert _rel(layer(rows), F.linear(rows, layer.dequantize(), layer.bias)) < 2e-2


def test_int4_codes_stay_readable_beside_the_packed_copy():
    """A prompt packs the codes for PyTorch's int4 kernel; the plain codes the one-row kernel reads stay."""
    layer = QuantizedLinear.from_float(nn.Linear(64, 96), bits=4, group_size=32, act_bits=16).eval()
    codes = layer.qweight.clone()
    with torch.inference_mode():
        layer(torch.randn(5, 64))
        assert not layer.released and torch.equal(layer.qweight, codes)
        x = torch.randn(1, 64)
        assert _rel(layer(x), F.linear(x, layer.dequantize(), layer.bias)) < 2e-4


def test_bad_operands_are_refused_with_what_the_kernel_takes():
    with pytest.raises(RuntimeError, match="one float32 row of the weight's width"):
        torch.ops.zoo_gemv.f32(torch.randn(1, 10), torch.randn(4, 12), 0)
    with pytest.raises(RuntimeError, match="K a multiple of 32"):
        torch.ops.zoo_gemv.int8(torch.randn(1, 40), torch.zeros(4, 40, dtype=torch.int8), torch.ones(4))
    with pytest.raises(RuntimeError, match="gs a multiple of 32"):
        codes = torch.zeros(4, 32, dtype=torch.uint8)
        scale = torch.ones(4, 4, dtype=torch.float16)
        torch.ops.zoo_gemv.int4(torch.randn(1, 64), codes, scale, scale, 16)
    assert not gemv.supports(torch.randn(2, 64), 64) and not gemv.supports(torch.randn(1, 48), 48)


def test_the_build_is_skipped_when_switched_off(monkeypatch):
    monkeypatch.setenv("ZOO_GEMV", "0")
    assert gemv._build() is False


def test_compiled_one_row_products_call_the_kernel():
    from torch._inductor.utils import run_and_get_code

    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32, bias=False)).eval()
    x = torch.randn(1, 64)
    step = torch.compile(model, fullgraph=True, options={"post_grad_custom_post_pass": gemv.OneRowProducts()})
    with torch.no_grad():
        y, code = run_and_get_code(step, x)
        # the kernel's dot products against oneDNN's: within 4x eager's own float32 error against float64
        assert_float32_close(y, model(x), in_float64(model)(x.double()), msg="compiled")
        assert "".join(code).count("torch.ops.zoo_gemv.f32.default(") == 2
        # two rows are a matrix product, left to Inductor
        y2, code2 = run_and_get_code(step, torch.randn(2, 64))
    assert "zoo_gemv" not in "".join(code2) and y2.shape == (2, 32)


@pytest.mark.parametrize("heads,kv_heads,head_dim", [(9, 3, 64), (4, 4, 20), (6, 2, 96)])
def test_one_token_attention_is_sdpa_over_the_seen_positions(heads, kv_heads, head_dim):
    torch.manual_seed(0)
    S = 256
    q, k, v = (
        torch.randn(1, heads, 1, head_dim),
        torch.randn(1, kv_heads, S, head_dim),
        torch.randn(1, kv_heads, S, head_dim),
    )
    scale = head_dim**-0.5
    for mask in (
        torch.arange(S) < 40,
        (torch.arange(S) >= 30) & (torch.arange(S) < 45),
        torch.ones(S, dtype=torch.bool),
    ):
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None, None, None], scale=scale, enable_gqa=True)
        y = gemv.attend_one(q, k, v, mask[None, None, None], scale)
        assert y.shape == (1, 1, heads * head_dim)
        ref64 = F.scaled_dot_product_attention(
            q.double(), k.double(), v.double(), attn_mask=mask[None, None, None], scale=scale, enable_gqa=True
        )  # two softmax kernels over up to 256 positions: within 8x SDPA's own float32 error against float64
        flat = lambda t: t.transpose(1, 2).reshape(1, 1, -1)  # noqa: E731
        assert_float32_close(y, flat(ref), flat(ref64), times=8, msg="attend_one")  # 540 draws: at most 1.5x
        with torch_threads(2):  # two threads split the heads (5 and 4 of 9: a key-value group across both)
            split = gemv.attend_one(q, k, v, mask[None, None, None], scale)
        torch.testing.assert_close(split, y, rtol=0, atol=0)
    # a token that sees nothing sees everything (the static decoder's rule for routed slots), not NaN
    none = gemv.attend_one(q, k, v, torch.zeros(S, dtype=torch.bool), scale)
    torch.testing.assert_close(none, gemv.attend_one(q, k, v, torch.ones(S, dtype=torch.bool), scale), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="a bool mask of S positions"):
        gemv.attend_one(q, k, v, torch.ones(S - 1, dtype=torch.bool), scale)


def test_the_kernel_bench_times_each_kernel_alone_and_through_the_layer():
    from zoo.bench.quant_kernels import candidates

    table = candidates(torchao=False)
    w, x = torch.randn(64, 96), torch.randn(1, 96)
    alone = table["zoo_gemv::int4 g32 (the kernel alone)"][0](w)(x)
    layer = table["zoo int4 g32 layer forward, one fp32 row (zoo_gemv::int4)"][0](w)
    with torch.inference_mode():
        torch.testing.assert_close(alone, layer(x), rtol=0, atol=0)  # the same kernel on the same row
    # the kernel's dot products against oneDNN's: within 4x F.linear's own float32 error against float64
    one_row = table["zoo fp32 one row (zoo_gemv::f32 avx2)"][0](w)(x)
    assert_float32_close(one_row, F.linear(x, w), F.linear(x.double(), w.double()), msg="f32 one row")


def test_a_static_decoder_computes_its_layers_one_way():
    from small_lms import SMALL

    import zoo
    from zoo.lm.static_decoder import StaticDecoder

    model = zoo.create_model("mobilellm_125m", **SMALL).eval()
    with pytest.raises(ValueError, match="pass one of them"):
        StaticDecoder(model, 16, delegate_ops=True, one_token_ops=True)


def test_a_failed_build_warns_once_and_leaves_pytorchs_kernels(monkeypatch):
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension 'zoo_gemv': g++: command not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(gemv, "_state", {})
    with pytest.warns(UserWarning, match="could not be built.*g\\+\\+: command not found.*ZOO_GEMV=0"):
        assert gemv.available() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decided once: no second build, no second warning
        assert gemv.available() is False
    layer = QuantizedLinear.from_float(nn.Linear(64, 32), bits=8).eval()
    x = torch.randn(1, 64)
    with torch.inference_mode():  # the layer still computes, through PyTorch's bf16-row kernel
        assert _rel(layer(x), F.linear(x, layer.dequantize(), layer.bias)) < 2e-2


def _degenerate_calls() -> dict:
    ops = torch.ops.zoo_gemv
    i8, u8, h, ok = torch.int8, torch.uint8, torch.float16, torch.ones(5, dtype=torch.bool)
    q, kv = torch.randn(1, 4, 1, 8), torch.randn(1, 2, 5, 8)
    return {
        "attend, no key-value heads": lambda: ops.attend(q, kv[:, :0], kv[:, :0], ok, 1.0),
        "attend, heads not a multiple": lambda: ops.attend(torch.randn(1, 3, 1, 8), kv, kv, ok, 1.0),
        "attend, mask of another length": lambda: ops.attend(q, kv, kv, ok[:4], 1.0),
        "f32, width mismatch": lambda: ops.f32(torch.randn(1, 8), torch.randn(4, 9), 0),
        "f32, path out of range": lambda: ops.f32(torch.randn(1, 8), torch.randn(4, 8), -1),
        "int8, K not a multiple of 32": lambda: ops.int8(
            torch.randn(1, 33), torch.zeros(4, 33, dtype=i8), q.new_ones(4)
        ),
        "int4, group size 0": lambda: ops.int4(
            torch.randn(1, 64), torch.zeros(4, 32, dtype=u8), torch.ones(4, 2, dtype=h), torch.ones(4, 2, dtype=h), 0
        ),
        "int4, negative group size": lambda: ops.int4(
            torch.randn(1, 64), torch.zeros(4, 32, dtype=u8), torch.ones(4, 2, dtype=h), torch.ones(4, 2, dtype=h), -32
        ),
        "int8_a8, path out of range": lambda: ops.int8_a8(
            torch.randn(2, 32), torch.zeros(4, 32, dtype=i8), torch.ones(4), 7
        ),
        "int4_a8, group size 0": lambda: ops.int4_a8(
            torch.randn(2, 64), torch.zeros(4, 32, dtype=u8), torch.ones(4, 2, dtype=h), torch.ones(4, 2, dtype=h), 0, 0
        ),
        "a8_tiles, negative outputs": lambda: ops.a8_tiles(
            torch.randn(2, 32), torch.zeros(256, dtype=u8), torch.ones(8), -8, 0, 0
        ),
        "a8_tiles, group size not a multiple of 32": lambda: ops.a8_tiles(
            torch.randn(2, 64), torch.zeros(256, dtype=u8), torch.ones(32, dtype=h), 8, 16, 0
        ),
        "q8_0, width not a multiple of 32": lambda: ops.q8_0(torch.randn(2, 33)),
    }


@pytest.mark.parametrize("case", list(_degenerate_calls()))
def test_degenerate_shapes_are_refused_and_never_crash_the_process(case):
    """Every operator fed shapes, counts or paths its C++ cannot take (no key-value heads, a group size of 0, a path
    out of range): an error the caller can catch, never a signal that takes the interpreter with it (a crash here
    fails the test as a lost worker)."""
    with pytest.raises((RuntimeError, ValueError)) as e:
        _degenerate_calls()[case]()
    assert str(e.value).strip()


def test_the_kernels_fuse_a_multiply_and_an_add_only_where_the_source_says():
    """The 512-bit paths are functions built for another target in the same file: left to the compiler, a scalar
    ``s += a * b`` shared by two paths may be fused in one and not the other, and the paths' bits differ. With
    contraction off, every fused multiply-add is one the source wrote (an fma intrinsic or ``std::fma``)."""
    assert "-ffp-contract=off" in gemv._FLAGS
    source = "".join(gemv._TEXTS.values())
    assert "s = std::fma(row[k], xp[k], s)" in source  # the float32 product's scalar tail, one rounding on each path
