"""zoo.kernels.gemv's 8-bit activation kernels (act_bits=8): the Q8_0 row, every instruction path this CPU runs
against a float64 reference and against each other, the dispatcher, and the layer and compiled step that use them."""

import json
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from tolerances import float32_bound
from torch import nn

from zoo.kernels import gemv
from zoo.lm.quant import QuantizedLinear

pytestmark = pytest.mark.skipif(not gemv.available(), reason="the kernels need an AVX2 CPU and a C++ compiler")
TINY = float(torch.finfo(torch.float32).tiny)


def q8_0(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Q8_0 row in torch: d = amax / 127 per block of 32, q = round(x / d) (ties to even) in float32."""
    xb = x.reshape(x.shape[0], -1, 32)
    amax = xb.abs().amax(-1, keepdim=True)
    used = amax >= TINY
    d = torch.where(used, amax / 127.0, torch.zeros_like(amax))
    q = torch.where(used, torch.round(xb / torch.where(used, d, torch.ones_like(d))), torch.zeros_like(xb))
    return q.reshape(x.shape).to(torch.int8), d.squeeze(-1)


def adversarial_rows(k: int) -> torch.Tensor:
    """Random rows and rows built to break a block quantizer: all-zero and negative-zero blocks, a subnormal block,
    one huge value per block, blocks of very different magnitudes, values on the rounding ties."""
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(k, generator=g), torch.randn(k, generator=g) * torch.linspace(1e-3, 1e3, k)]
    r = torch.randn(k, generator=g)
    r[:32] = 0.0
    r[32:64] = -0.0
    if k >= 96:
        r[64:96] = torch.full((32,), 1e-40) * torch.randn(32, generator=g).sign()  # subnormal: below float32's normal
    rows.append(r)
    huge = torch.randn(k, generator=g) * 1e-3
    huge[::32] = 3e4 * (1 - 2 * (torch.arange(k // 32) % 2))  # one huge value per block, of either sign
    rows.append(huge)
    ties = (torch.arange(k) % 32).float() * 4 - 62.5  # d = 1 (amax 127): every other value a tie, to even
    ties[::32] = 127.0
    rows.append(ties)
    return torch.stack(rows)


@pytest.mark.parametrize("k", [64, 128, 576])
def test_the_q8_0_row_is_llama_cpps(k):
    x = adversarial_rows(k)
    q, d = gemv.quantize_q8_0(x)
    want_q, want_d = q8_0(x)
    assert torch.equal(q, want_q) and torch.equal(d, want_d)
    assert q.abs().max() <= 127
    assert (q[2, :64] == 0).all() and (d[2, :2] == 0).all()  # zero and negative-zero blocks: zero codes, d = 0
    err = (x - (q.float().reshape(len(x), -1, 32) * d[..., None]).reshape(x.shape)).abs()
    assert (err <= d.repeat_interleave(32, 1) / 2 * (1 + 1e-6) + TINY).all()  # half a step at most


def _layer(bits: int, group_size: int | None, n: int, k: int, seed: int = 0) -> QuantizedLinear:
    torch.manual_seed(seed)
    linear = nn.Linear(k, n)
    return QuantizedLinear.from_float(linear, bits=bits, group_size=group_size, act_bits=8).eval()


def _run(layer: QuantizedLinear, x: torch.Tensor, isa: str) -> torch.Tensor:
    if layer.bits == 8:
        return gemv.gemm_int8_a8(x, layer.qweight, layer.scale, isa)
    return gemv.gemm_int4_a8(x, layer.qweight, layer.scale, layer.zero, layer.group_size, isa)


def _run_tiles(layer: QuantizedLinear, x: torch.Tensor, isa: str) -> torch.Tensor:
    """The decode kernel on the repacked codes (tiles of 8 output rows), one row at a time."""
    if layer.bits == 8:
        packed, scale = gemv.repack_int8(layer.qweight, layer.scale)
    else:
        packed, scale = gemv.repack_int4(layer.qweight, layer.scale, layer.zero)
    n, gs = layer.out_features, layer.group_size or 0
    return torch.cat([gemv.gemm_a8_tiles(r[None], packed, scale, n, gs, isa) for r in x])


def _references(layer: QuantizedLinear, x: torch.Tensor):
    """(the kernel's arithmetic in float64: the quantized row times the weight, with int4's zero points times the
    float row; the exact float64 product; a bound of the difference the Q8_0 row may make)."""
    w = layer.dequantize().double()
    q, d = q8_0(x)
    xq = (q.double().reshape(len(x), -1, 32) * d.double()[..., None]).reshape(x.shape)
    exact = x.double() @ w.T
    if layer.bits == 8:
        centred, offset = w, 0.0
    else:  # w = (u - 8) * scale + zero: the zero point meets the float row, (u - 8) * scale the quantized one
        zero = layer.zero.double().repeat_interleave(layer.group_size, 1)
        centred, offset = w - zero, x.double() @ zero.T
    emulated = xq @ centred.T + offset
    bound = (d.double().repeat_interleave(32, 1) / 2) @ centred.abs().T
    return emulated, exact, bound


@pytest.mark.parametrize(
    "bits,group_size,k", [(8, None, 576), (8, None, 544), (4, 32, 608), (4, 32, 480), (4, 64, 640), (4, 128, 1536)]
)
@pytest.mark.parametrize("n", [37, 96])
def test_every_path_is_the_float64_product_of_the_q8_0_row(bits, group_size, k, n):
    # 18, 17, 19, 15, 20 blocks: whole groups of eight and tails of 2, 1, 3, 7, 4 (the float code's running sum after
    # the whole groups); g128: 12 groups, eight and a tail of 4; n = 37: a last tile of 5 output rows
    layer = _layer(bits, group_size, n, k)
    x = adversarial_rows(k)
    emulated, exact, bound = _references(layer, x)
    outs = {isa: _run(layer, x, isa) for isa in gemv.cpu_isas()}  # several rows: the prompt's path
    outs |= {f"{isa}, one row": torch.cat([_run(layer, r[None], isa) for r in x]) for isa in gemv.cpu_isas()}
    outs |= {f"{isa}, repacked": _run_tiles(layer, x, isa) for isa in gemv.cpu_isas()}
    assert outs and all(o.shape == (len(x), n) and o.dtype == torch.float32 for o in outs.values())
    first = next(iter(outs.values()))
    for isa, y in outs.items():
        # integer sums are exact and the float code is shared: every path gives the same bits, one row or several
        assert torch.equal(y, first), isa
    y = first.double()
    size = (x.double().abs() @ layer.dequantize().double().abs().T).clamp(min=1e-30)
    assert ((y - emulated).abs() <= 2e-6 * size).all()  # the float32 accumulation of exact integer sums
    assert ((y - exact).abs() <= bound * (1 + 1e-6) + 2e-6 * size).all()  # at most half a Q8_0 step per value


@pytest.mark.parametrize("bits,group_size", [(8, None), (4, 32), (4, 64)])
def test_a_prompt_is_one_call_and_gives_each_rows_product(bits, group_size):
    """Several rows are quantized once and multiplied as a small GEMM, 8 activation rows at a time; each row's result
    is the one-row result, for every count of rows in the last pass (4 to 17 rows: passes of 8 and 1-7 left over)."""
    layer = _layer(bits, group_size, 70, 128)
    x = torch.randn(17, 128)
    alone = torch.cat([_run(layer, x[i : i + 1], gemv.kernel_path()) for i in range(len(x))])
    for m in range(4, 18):
        assert torch.equal(_run(layer, x[:m], gemv.kernel_path()), alone[:m]), m
    assert _run(layer, x[:0], gemv.kernel_path()).shape == (0, 70)


def test_rows_not_a_multiple_of_32_are_refused_and_the_layer_takes_another_path():
    """Decision: the kernels refuse a width that is no whole number of Q8_0 blocks (every registered model's widths
    are multiples of 32); a layer of such a width keeps PyTorch's kernels."""
    with pytest.raises(RuntimeError, match="not a multiple of 32"):
        torch.ops.zoo_gemv.int8_a8(torch.randn(1, 40), torch.zeros(4, 40, dtype=torch.int8), torch.ones(4), 0)
    with pytest.raises(RuntimeError, match="gs a multiple of 32"):
        codes, scale = torch.zeros(4, 24, dtype=torch.uint8), torch.ones(4, 3, dtype=torch.float16)
        torch.ops.zoo_gemv.int4_a8(torch.randn(1, 48), codes, scale, scale, 16, 0)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        gemv.quantize_q8_0(torch.randn(2, 40))
    layer = QuantizedLinear.from_float(nn.Linear(40, 24), bits=8, act_bits=8).eval()
    x = torch.randn(3, 40)
    with torch.inference_mode():
        # the portable float32 form, codes times the row scale after the product: float32 reordering over 40 terms
        want = F.linear(x, layer.dequantize(), layer.bias)
        terms = x.abs() @ layer.dequantize().abs().T + layer.bias.abs()
        torch.testing.assert_close(layer(x), want, rtol=0, atol=float32_bound(terms, depth=40))


@pytest.mark.parametrize("bits,group_size", [(8, None), (4, 32)])
def test_the_layer_sends_every_row_to_the_8_bit_kernels(bits, group_size):
    layer = _layer(bits, group_size, 48, 96)
    for x in (torch.randn(1, 96), torch.randn(2, 5, 96), torch.randn(3, 96).bfloat16()):
        want = _run(layer, x.reshape(-1, 96).float(), gemv.kernel_path()).reshape(*x.shape[:-1], 48).to(x.dtype)
        with torch.inference_mode():
            y = layer(x)
        assert y.dtype == x.dtype and torch.equal(y, want + layer.bias.to(x.dtype))
    layer.act_bits = 16  # the int16 row: one row to zoo_gemv::int8 / int4
    x = torch.randn(1, 96)
    with torch.inference_mode():
        assert not torch.equal(layer(x), _run(layer, x, gemv.kernel_path()) + layer.bias)


@pytest.mark.parametrize("bits,group_size", [(8, None), (4, 32)])
def test_the_repacked_codes_are_a_run_time_copy_rebuilt_when_the_codes_change(bits, group_size):
    layer, other = _layer(bits, group_size, 37, 96), _layer(bits, group_size, 37, 96, seed=1)
    keys = set(layer.state_dict())
    x = torch.randn(1, 96)
    with torch.inference_mode():
        layer(x)
    assert "tiles" in layer._kernel and set(layer.state_dict()) == keys  # the state dict keeps the plain codes
    layer.load_state_dict(other.state_dict())
    layer.qweight.add_(0)  # codes changed in place after the load, too: the copy follows
    with torch.inference_mode():
        y = layer(x)
    assert torch.equal(y, _run(other, x, gemv.kernel_path()) + other.bias)
    with pytest.raises(RuntimeError, match="repacked weights do not fit"):
        gemv.gemm_a8_tiles(torch.randn(1, 64), *layer._kernel["tiles"][1], 37, group_size or 0)
    with torch.inference_mode():  # codes made under inference mode (no version counter) take the same path
        made = _layer(bits, group_size, 37, 96, seed=1)
        assert torch.equal(made(x), y)


def _cpuinfo_paths() -> set[str] | None:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    if flags is None:
        return None
    flags = set(flags)
    found = set()
    if {"avx2", "fma", "f16c"} <= flags:
        found.add("avx2")
        if "avx_vnni" in flags:
            found.add("avxvnni")
        if {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"} <= flags:
            found.add("avx512vnni")
        if "avx512f" in flags:
            found.add("f32 avx512")
    return found


def test_the_dispatcher_takes_the_preferred_path_the_cpu_reports(monkeypatch):
    monkeypatch.delenv("ZOO_GEMV_ISA", raising=False)
    found = gemv.cpu_isas()
    assert found and found[0] == "avx2" and set(found) <= set(gemv.ISAS)
    wide = gemv.f32_paths()
    reported = _cpuinfo_paths()
    if reported is not None:  # the compiler's cpuid check agrees with the kernel's flags
        assert set(found) | {f"f32 {p}" for p in wide[1:]} == reported
    choice = gemv.kernel_choice()
    assert {choice.decode, choice.prompt} <= set(found) and choice.f32 in wide
    assert gemv.kernel_path(1) == choice.decode and gemv.kernel_path(gemv.PROMPT_ROWS) == choice.prompt
    if len(found) == 1 and len(wide) == 1:
        assert choice.why.startswith("the only path this CPU reports") and not choice.ms
    else:  # measured: the fastest of each kind
        kinds = ("decode", "prompt", "f32")
        assert all(getattr(choice, k) == min(choice.ms[k], key=choice.ms[k].get) for k in kinds)
    for isa in found:
        monkeypatch.setenv("ZOO_GEMV_ISA", isa.upper())
        assert gemv.kernel_path() == isa


def test_a_forced_path_the_cpu_lacks_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(gemv, "_cpu_mask", lambda: 1)  # a CPU that reports AVX2 alone
    monkeypatch.setenv("ZOO_GEMV_ISA", "avx512vnni")
    with pytest.raises(ValueError, match=r"does not report AVX-512 VNNI \(it runs avx2\)") as e:
        gemv.kernel_path()
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="does not run on this CPU"):
        gemv.gemm_int8_a8(torch.randn(1, 32), torch.zeros(4, 32, dtype=torch.int8), torch.ones(4), "avxvnni")
    monkeypatch.setenv("ZOO_GEMV_ISA", "sse2")
    with pytest.raises(ValueError, match="not a kernel path: use one of avx2, avxvnni, avx512vnni"):
        gemv.kernel_path()


def test_the_operators_refuse_a_path_the_cpu_lacks():
    missing = [i for i, isa in enumerate(gemv.ISAS) if isa not in gemv.cpu_isas()] + [len(gemv.ISAS), -1]
    for isa in missing:  # the paths this CPU lacks (none on an AVX-512 VNNI machine) and indices of no path
        with pytest.raises(RuntimeError, match="cannot run the 8-bit activation path"):
            torch.ops.zoo_gemv.int8_a8(torch.randn(1, 32), torch.zeros(4, 32, dtype=torch.int8), torch.ones(4), isa)


def test_a_forced_path_runs_the_layer(monkeypatch):
    """ZOO_GEMV_ISA is read at the first 8-bit product of the process: the cached choice is what the layer runs."""
    layer = _layer(4, 32, 40, 64)
    x = torch.randn(3, 64)
    with torch.inference_mode():
        y = layer(x)
    for isa in gemv.cpu_isas():
        monkeypatch.setitem(gemv._state, "choice", gemv.KernelChoice(isa, isa, "a test"))
        with torch.inference_mode():
            assert torch.equal(layer(x), y)


def _tiny_lm(fmt: str) -> nn.Module:
    from small_lms import tiny_lm

    from zoo.lm.quant import quantize_model

    return quantize_model(tiny_lm("mobilellm_125m"), fmt).eval()


def _compiled_matches_eager(fmt: str) -> tuple[nn.Module, Counter]:
    """The compiled step's tokens are eager's; the model and the zoo kernels its step calls (by dispatcher name)."""
    from zoo.lm.compiled import COMPILED_STATE

    model = _tiny_lm(fmt)
    ids = torch.randint(0, model.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(1))
    eager = model.generate(ids, max_new_tokens=10)
    assert torch.equal(model.generate(ids, max_new_tokens=10, compile=True), eager)
    step = model.__dict__[COMPILED_STATE][2].run
    assert hasattr(step, "kernel_calls"), "the step was not built ahead of time: see the warning logged above"
    return model, step.kernel_calls


@pytest.mark.slow  # 4-11 s (a compile): outside the 4-minute default run
def test_the_compiled_step_gives_eager_tokens_with_8_bit_activations():
    model, calls = _compiled_matches_eager("int4a8")
    # one row: the repacked codes' kernel; per layer one product for query, key and value, one for gate and up,
    # o_proj, down_proj; and the head
    assert calls["zoo_gemv::a8_tiles"] == 4 * model.config.num_hidden_layers + 1


@pytest.mark.parametrize("fmt", ["int8a8", "int4a8"])
def test_a_prompt_that_starts_the_cache_is_eagers_forward(fmt, monkeypatch):
    """The compiled path's prompt pass (the static decoder, uncompiled) runs each layer through prompt_layer: the
    prompt's own keys with causal SDPA, as eager does, rather than a mask over the whole static cache; uncompiled,
    its logits are eager's, bit for bit. A later chunk (not from position 0) keeps the mask."""
    from zoo.lm import static_decoder

    model = _tiny_lm(fmt)
    ids = torch.randint(0, model.config.vocab_size, (1, 37), generator=torch.Generator().manual_seed(1))
    decoder, _ = model.compiled_decoder(ids.shape[1] + 5)
    decoder.prompt_layer = None  # prompt_layer as it is, not compiled
    seen = []
    run = static_decoder.prompt_layer
    monkeypatch.setattr(static_decoder, "prompt_layer", lambda *args: seen.append(args[0]) or run(*args))
    with torch.inference_mode():
        got = decoder(ids, torch.zeros(1, dtype=torch.long))
        out = model(ids)
        want = (out if isinstance(out, torch.Tensor) else out.logits)[:, -1]
        assert torch.equal(got.reshape(want.shape), want)
        assert seen == list(model.model.layers)
        decoder(ids[:, 20:], torch.tensor([20]))
    assert len(seen) == model.config.num_hidden_layers


@pytest.mark.slow  # 4-11 s (a compile): outside the 4-minute default run
def test_the_compiled_prompt_is_one_graph_for_every_layer_and_length():
    """generate(compile=True) compiles prompt_layer once for a model: every layer and every prompt length of one
    cache size run the same graph, and the tokens are eager's."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    model = _tiny_lm("int4a8")
    for length in (23, 40):
        ids = torch.randint(0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(length))
        assert torch.equal(model.generate(ids, max_new_tokens=6, compile=True), model.generate(ids, max_new_tokens=6))
    decoder, _ = model.compiled_decoder(46)
    assert len(_debug_get_cache_entry_list(decoder.prompt_layer._torchdynamo_orig_callable.__code__)) == 1


@pytest.mark.slow
@pytest.mark.parametrize("fmt,op", [("int8a8", "a8_tiles"), ("int8a16", "int8"), ("int4a16", "int4")])
def test_the_compiled_step_gives_eager_tokens_at_each_act_width(fmt, op):
    _, calls = _compiled_matches_eager(fmt)
    assert calls[f"zoo_gemv::{op}"] > 0  # the step calls the act width's kernel


@pytest.mark.parametrize("fmt", ["int8a8", "int4a8"])
def test_every_path_the_cpu_runs_gives_the_model_the_same_bits(monkeypatch, fmt):
    """ZOO_GEMV_ISA=avx2|avxvnni|avx512vnni, each where this CPU has it, through a whole quantized LM: the prompt's
    logits and the greedy tokens of every path are the same bits (the kernels' paths are bit-identical), so the
    default test run covers every path the machine at hand runs."""
    model = _tiny_lm(fmt)
    ids = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    saved = gemv._state.pop("choice", None)
    outs = {}
    try:
        for isa in gemv.cpu_isas():
            monkeypatch.setenv("ZOO_GEMV_ISA", isa)
            gemv._state.pop("choice", None)  # the path is read at the process's first 8-bit product
            with torch.inference_mode():
                outs[isa] = (model(ids), model.generate(ids, max_new_tokens=8))
            ran = gemv._state["choice"]
            assert (ran.decode, ran.prompt, ran.why) == (isa, isa, f"ZOO_GEMV_ISA={isa}")  # that path ran
    finally:
        gemv._state.pop("choice", None)
        if saved is not None:
            gemv._state["choice"] = saved
    first_logits, first_tokens = next(iter(outs.values()))
    for isa, (logits, tokens) in outs.items():
        assert torch.equal(logits, first_logits), isa
        assert torch.equal(tokens, first_tokens), isa


def test_the_path_is_measured_on_the_cpu_at_hand_kept_under_its_name_and_overridable(monkeypatch, tmp_path):
    """A CPU that reports several paths: each is timed once (here a stand-in for the timing), the fastest for a
    decoded token and for a prompt is taken and kept beside the built kernels under the CPU's name; the next call
    reads it without timing; another CPU's entry stays; an unreadable file is measured again; ZOO_GEMV_ISA wins."""
    monkeypatch.delenv("ZOO_GEMV_ISA", raising=False)
    monkeypatch.setattr(gemv, "_cpu_mask", lambda: 0b111)  # a CPU reporting AVX2, AVX-VNNI and AVX-512 VNNI
    monkeypatch.setitem(gemv._state, "folder", str(tmp_path))
    monkeypatch.setitem(gemv._state, "calibrated", None)  # restored after the test
    monkeypatch.setattr(gemv, "cpu_model", lambda: "Test CPU 9000")
    timed = []

    def measure(paths, f32=()):
        timed.append(paths)
        assert f32 == ("avx2",)  # the mask reports no AVX-512F
        return {"decode": {"avx2": 3.0, "avxvnni": 1.0, "avx512vnni": 2.0},
                "prompt": {"avx2": 9.0, "avxvnni": 5.0, "avx512vnni": 4.0}, "f32": {"avx2": 1.0}}  # fmt: skip

    monkeypatch.setattr(gemv, "measure_paths", measure)
    (tmp_path / gemv.CALIBRATION_FILE).write_text(
        '{"Other CPU (avx2)": {"decode": {"avx2": 1}, "prompt": {"avx2": 1}}}'
    )
    choice = gemv.kernel_choice()
    assert (choice.decode, choice.prompt) == ("avxvnni", "avx512vnni") and len(timed) == 1
    assert "measured on this CPU (Test CPU 9000 (avx2, avxvnni, avx512vnni))" in choice.why
    assert "avxvnni 1.000" in choice.why and choice.f32 == "avx2"
    assert str(choice).startswith("decode avxvnni, prompt avx512vnni, float32 avx2: measured")
    assert (gemv.kernel_path(1), gemv.kernel_path(3), gemv.kernel_path(4)) == ("avxvnni", "avxvnni", "avx512vnni")
    kept = json.loads((tmp_path / gemv.CALIBRATION_FILE).read_text())
    assert set(kept) == {"Other CPU (avx2)", "Test CPU 9000 (avx2, avxvnni, avx512vnni)"}
    assert gemv.kernel_choice() == choice  # the process's answer, kept
    gemv._state["calibrated"] = None  # a new process: read from the file
    again = gemv.kernel_choice()
    assert (again.decode, again.prompt, again.ms) == (choice.decode, choice.prompt, choice.ms)
    assert f"kept in {tmp_path / gemv.CALIBRATION_FILE}" in again.why
    assert len(timed) == 1  # read, not timed again
    gemv.calibrate(refresh=True)
    assert len(timed) == 2
    gemv._state["calibrated"] = None  # a new process
    (tmp_path / gemv.CALIBRATION_FILE).write_text('{"Test CPU 9000 (avx2, avxvnni, avx512vnni)": {"decode": 7')
    assert gemv.kernel_choice().prompt == "avx512vnni" and len(timed) == 3  # unreadable: measured again
    monkeypatch.setenv("ZOO_GEMV_ISA", "avx2")
    assert gemv.kernel_choice() == gemv.KernelChoice("avx2", "avx2", "ZOO_GEMV_ISA=avx2") and len(timed) == 3
    # the operators take the decode path below PROMPT_ROWS rows and the prompt path from there
    monkeypatch.setitem(gemv._state, "choice", gemv.KernelChoice("avxvnni", "avx512vnni", "a test"))
    assert [gemv._isa(None, r) for r in (1, 3, 4, 64)] == [1, 1, 2, 2]


def test_the_timing_covers_every_path_the_cpu_runs():
    ms = gemv.measure_paths(gemv.cpu_isas(), rounds=1, f32=gemv.f32_paths())
    assert set(ms) == {"decode", "prompt", "f32"} and set(ms["f32"]) == set(gemv.f32_paths())
    for kind in ("decode", "prompt"):
        assert set(ms[kind]) == set(gemv.cpu_isas())
    assert all(0 < t < 1e3 for kind in ms.values() for t in kind.values())
    assert set(gemv.measure_paths(gemv.cpu_isas(), rounds=1)) == {"decode", "prompt"}  # no float32 paths: not timed


def test_a_first_product_inside_a_compiled_graph_calibrates_as_plain_python(monkeypatch, tmp_path):
    """Where the first 8-bit product of the process is traced by torch.compile, the path is still measured (not
    traced) and the graph takes it as a constant: one graph, the same bits as the path run directly."""
    layer = _layer(4, 32, 40, 64)
    x = torch.randn(5, 64)
    want = _run(layer, x, "avx2") + layer.bias
    monkeypatch.delenv("ZOO_GEMV_ISA", raising=False)
    monkeypatch.setattr(gemv, "_cpu_mask", lambda: 0b111)  # several paths: calibrated
    monkeypatch.setitem(gemv._state, "folder", str(tmp_path))
    monkeypatch.delitem(gemv._state, "choice", raising=False)
    monkeypatch.setitem(gemv._state, "calibrated", None)  # restored after the test
    timed = []

    def measure(paths, f32=()):  # avx2 (the one path this test can run everywhere) the fastest
        timed.append(paths)
        return {kind: {p: 1.0 + i for i, p in enumerate(run)} for kind, run in (("decode", paths), ("prompt", paths),
                                                                                ("f32", f32))}  # fmt: skip

    monkeypatch.setattr(gemv, "measure_paths", measure)
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True)
    with torch.inference_mode():
        got = compiled(x)
    torch._dynamo.reset()
    assert len(timed) == 1 and torch.equal(got, want)
    assert gemv._state["choice"].prompt == "avx2"


@pytest.mark.parametrize("bits,group_size", [(8, None), (4, 32)])
def test_projections_that_read_one_input_share_one_product_with_the_same_bits(bits, group_size):
    from zoo.lm.quant_layer import shared_products

    def three(seed: int) -> tuple[QuantizedLinear, ...]:  # a query, key and value projection of a GQA layer
        layers = tuple(_layer(bits, group_size, n, 96, seed=seed + i) for i, n in enumerate((64, 16, 16)))
        for layer in layers:
            layer.bias = None
        return layers

    layers, x = three(0), torch.randn(1, 1, 96)
    with torch.inference_mode():
        own = [layer(x) for layer in layers]
        shared = shared_products(layers, x)
    assert [y.shape for y in shared] == [(1, 1, 64), (1, 1, 16), (1, 1, 16)]
    assert all(torch.equal(a, b) for a, b in zip(shared, own))  # every output row computed alone: the same bits
    stack = layers[0]._kernel["stacked"][2][0]
    for layer in layers:  # each layer's repacked codes are a view into the stack: kept once
        assert layer._kernel["tiles"][1][0].untyped_storage().data_ptr() == stack.untyped_storage().data_ptr()
    layers[1].load_state_dict(three(5)[1].state_dict())  # new key codes: the stack follows
    with torch.inference_mode():
        assert torch.equal(shared_products(layers, x)[1], layers[1](x))
        assert not torch.equal(shared_products(layers, x)[1], own[1])
        assert shared_products(layers, torch.randn(4, 96)) is None  # a prompt: each layer by itself
        assert shared_products(layers[:1], x) is None
        odd = _layer(bits, group_size, 20, 96)  # 20 rows are no whole tiles of 8
        odd.bias = None
        assert shared_products((layers[0], odd), x) is None
        assert shared_products((layers[0], _layer(bits, group_size, 16, 96)), x) is None  # a bias
