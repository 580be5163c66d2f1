"""``generate(compile=True)``: one compiled decode step over a static cache gives eager's greedy tokens.

Compiling takes several seconds even for these reduced models, so one family (and one quantized format) runs by
default and every family and format under ``-m slow``.
"""

import copy

import pytest
import torch
from small_lms import TINY_DIMS, lm_representatives, text_generation_models, tiny_lm
from tolerances import assert_float32_close
from torch import nn

from zoo.lm.quant import quantize_model

# every registered LM family at its tiny size, one model per distinct structure (tests/small_lms.py)
EVERY_LM = lm_representatives(text_generation_models())


def _model(name: str, fmt: str | None = None) -> nn.Module:
    """A registered model at its tiny size (:func:`small_lms.tiny_lm`), quantized to ``fmt``."""
    model = tiny_lm(name)
    return model if fmt is None else quantize_model(model, fmt).eval()


def _prompt(length=9, seed=1, vocab=TINY_DIMS["vocab_size"]):
    return torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(seed))


def _check(model: nn.Module, new_tokens: int = 12):
    ids = _prompt(vocab=model.config.vocab_size)
    eager = model.generate(ids, max_new_tokens=new_tokens)
    compiled = model.generate(ids, max_new_tokens=new_tokens, compile=True)
    assert compiled.shape == eager.shape
    assert torch.equal(compiled, eager)
    # a second call of another prompt length reuses the compiled step (same size bucket) and still agrees
    ids2 = _prompt(4, seed=2, vocab=model.config.vocab_size)
    step = model.compiled_decoder(ids2.shape[1] + new_tokens)[1]
    assert torch.equal(
        model.generate(ids2, max_new_tokens=new_tokens, compile=True), model.generate(ids2, max_new_tokens=new_tokens)
    )
    assert model.compiled_decoder(ids2.shape[1] + new_tokens)[1] is step


@pytest.mark.slow  # 2-7 s (a training run, a compile or a parity sweep): outside the 4-minute default run
def test_compiled_decode_equals_eager():
    _check(_model("mobilellm_125m"))


@pytest.mark.slow  # a compile, 9-13 s: outside the 4-minute default run (test_gemv.py compiles the float32 pass)
def test_compiled_decode_int8_keeps_the_kernels_and_the_tokens():
    model = _model("mobilellm_pro_1b", "int8")  # a global layer and a sliding window
    _check(model, new_tokens=10)


@pytest.mark.slow  # a compile: outside the 4-minute default run
def test_the_float32_step_shares_a_call_for_query_key_value_and_for_gate_up(monkeypatch):
    """torch.compile's step (where the step cannot be built ahead of time; test_aot_step.py reads the built one's
    code)."""
    from torch._inductor.utils import run_and_get_code

    from zoo.kernels import gemv

    if not gemv.available():
        pytest.skip("the zoo's CPU kernels do not run here")
    monkeypatch.setenv("ZOO_AOT_STEP", "0")
    model = _model("mobilellm_125m")
    ids = _prompt(vocab=model.config.vocab_size)
    eager = model.generate(ids, max_new_tokens=8)
    compiled, code = run_and_get_code(lambda: model.generate(ids, max_new_tokens=8, compile=True))
    assert torch.equal(compiled, eager)
    code = "\n".join(code)
    layers = model.config.num_hidden_layers
    # per layer one call for query, key and value and one for gate and up; o_proj, down_proj one each, and the head
    assert code.count('"zoo_gemv::f32_3"') == code.count('"zoo_gemv::f32_2"') == layers
    assert "custom_op_wrapper" not in code  # the C++ wrapper calls each kernel without Python
    assert code.count('"zoo_gemv::f32"') == 2 * layers + 1


def test_compiled_decode_refuses_batches_and_padding():
    model = _model("mobilellm_125m")
    with pytest.raises(ValueError, match="batch 1"):
        model.generate(torch.zeros(2, 3, dtype=torch.long), max_new_tokens=2, compile=True)
    mask = torch.tensor([[0, 1, 1]])
    with pytest.raises(ValueError, match="padding"):
        model.generate(torch.zeros(1, 3, dtype=torch.long), attention_mask=mask, max_new_tokens=2, compile=True)


def test_copies_do_not_carry_the_compiled_step():
    model = _model("mobilellm_125m")
    model.compiled_decoder(16)
    clone = copy.deepcopy(model)
    assert "_compiled_step" not in clone.__dict__ and "_compiled_step" in model.__dict__
    assert not any("lm" == n.split(".")[0] for n, _ in model.named_modules() if n)  # the decoder is no submodule


# -m slow (CI): every family in float32 and every format on MobileLLM; -m sweep (by hand): the other pairs
@pytest.mark.slow
@pytest.mark.parametrize(
    "family, fmt",
    [
        (f, q) if q is None or f == "mobilellm_125m" else pytest.param(f, q, marks=pytest.mark.sweep)
        for q in (None, "bf16", "int8", "int4")
        for f in EVERY_LM
    ],
)
def test_compiled_decode_every_family_and_format(family, fmt):
    if fmt == "bf16":  # bf16 compiled and eager may round differently: greedy agreement, not equality
        model = _model(family, fmt)
        ids = _prompt(vocab=model.config.vocab_size)
        eager = model.generate(ids, max_new_tokens=12)
        compiled = model.generate(ids, max_new_tokens=12, compile=True)
        assert (compiled[:, 9:] == eager[:, 9:]).float().mean() >= 0.5
        return
    _check(_model(family, fmt))


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_a_model_quantized_in_place_after_compiling_is_compiled_again():
    """The step skips Dynamo's guards on the model's modules; swapping them (quantize_model in place) makes a new
    step instead of running code that reads the float layers that are gone."""
    model = _model("mobilellm_125m")
    ids = _prompt()
    assert torch.equal(model.generate(ids, max_new_tokens=6, compile=True), model.generate(ids, max_new_tokens=6))
    first = model.compiled_decoder(ids.shape[1] + 6)[1]
    quantize_model(model, "int8")
    assert torch.equal(model.generate(ids, max_new_tokens=6, compile=True), model.generate(ids, max_new_tokens=6))
    assert model.compiled_decoder(ids.shape[1] + 6)[1] is not first


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_the_step_sees_weights_updated_in_place_and_is_made_again_for_replaced_ones():
    """The step holds the model's tensors themselves (graph attributes, not gathered at every token): a weight
    changed in place is seen by the same step, a tensor replaced (load_state_dict with assign=True) makes a new one."""
    model = _model("mobilellm_125m")
    ids = _prompt()
    before = model.generate(ids, max_new_tokens=8, compile=True)
    step = model.compiled_decoder(ids.shape[1] + 8)[1]
    with torch.no_grad():
        model.model.norm.weight.neg_()  # the logits negated: other greedy tokens
    eager = model.generate(ids, max_new_tokens=8)
    assert not torch.equal(eager, before)
    assert torch.equal(model.generate(ids, max_new_tokens=8, compile=True), eager)
    assert model.compiled_decoder(ids.shape[1] + 8)[1] is step
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["model.norm.weight"].neg_()  # back to the first weights, in new tensors
    model.load_state_dict(state, assign=True)
    assert torch.equal(model.generate(ids, max_new_tokens=8, compile=True), before)
    assert model.compiled_decoder(ids.shape[1] + 8)[1] is not step


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_quantized_codes_changed_in_place_make_a_new_step():
    """The step holds the repacked copies of a quantized layer's codes: codes changed in place (a buffer's version
    moves) make a new step, whose tokens are eager's with the new codes."""
    model = _model("mobilellm_125m", "int8a8")
    ids = _prompt()
    model.generate(ids, max_new_tokens=6, compile=True)
    step = model.compiled_decoder(ids.shape[1] + 6)[1]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.qweight.neg_()
    assert model.compiled_decoder(ids.shape[1] + 6)[1] is not step
    assert torch.equal(model.generate(ids, max_new_tokens=6, compile=True), model.generate(ids, max_new_tokens=6))


# One query token's attention: the eager model calls the compiled step's kernel (zoo_gemv::attend), not SDPA, so
# the two decode with the same bits. SDPA sums in another order; with 8-bit activations (act_bits=8) such last-bit
# differences round to whole codes and grow into other greedy tokens.


def _eager_and_static_step(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of the step after a one-token prompt: eager (the model's cache) and the uncompiled static decoder
    with the compiled step's ops. (A longer prompt runs SDPA over the static cache's slots in the static decoder,
    over its own length in the eager model: their last bits may differ before the step.)"""
    from zoo.lm.static_decoder import StaticDecoder

    ids = _prompt(1, vocab=model.config.vocab_size)
    with torch.inference_mode():
        cache = model.new_cache(1, ids.shape[1] + 4)
        token = model(ids, past_key_values=cache, logits_to_keep=1).logits[:, -1].argmax(-1, keepdim=True)
        eager = model(token, past_key_values=cache).logits[:, -1]
        decoder = StaticDecoder(model, 256, one_token_ops=True).eval()
        decoder(ids, torch.zeros(1, dtype=torch.long))
        static = decoder(token, torch.tensor([ids.shape[1]]))
    return eager, static


@pytest.mark.parametrize("fmt", [None, "int8a8", "int4a8"])
@pytest.mark.parametrize("family", EVERY_LM)
def test_eager_decode_step_has_the_compiled_steps_bits(family, fmt):
    """Every family's eager attention (the recursive ones through layer_forward, shared keys/values included)
    takes the kernel for one decode token."""
    from zoo.kernels import gemv

    if not gemv.available():
        pytest.skip("the zoo's CPU kernels do not run here")
    model = _model(family, fmt)
    eager, static = _eager_and_static_step(model)
    assert torch.equal(eager, static)


def test_one_token_attention_is_the_kernels_and_sdpa_elsewhere():
    from zoo.kernels import gemv
    from zoo.lm import GroupedQueryAttention

    if not gemv.available():
        pytest.skip("the zoo's CPU kernels do not run here")
    attn = _model("mobilellm_125m").model.layers[0].self_attn
    assert isinstance(attn, GroupedQueryAttention)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, attn.num_heads, 1, attn.head_dim, generator=g)
    k, v = (torch.randn(1, attn.num_kv_heads, 37, attn.head_dim, generator=g) for _ in range(2))
    mask = torch.rand(1, 1, 1, 37, generator=g) > 0.3
    with torch.no_grad():
        for m in (None, mask):
            seen = torch.ones(37, dtype=torch.bool) if m is None else m
            assert torch.equal(attn.attend(q, k, v, m, True), gemv.attend_one(q, k, v, seen, attn.scale))
    # autograd through the query: SDPA (the kernel has no backward), the same values to rounding
    qg = q.clone().requires_grad_()
    y = attn.attend(qg, k, v, mask, False)
    assert y.requires_grad
    # two softmax kernels over 37 positions: within 8x SDPA's own float32 error against float64 (test_gemv.py)
    y64 = attn.attend(q.double(), k.double(), v.double(), mask, False)
    assert_float32_close(gemv.attend_one(q, k, v, mask, attn.scale), y.detach(), y64, times=8, msg="attend")


@pytest.mark.slow
def test_compiled_decode_int8a8_mobilellm_125m_full_width():
    """The int8 model with 8-bit activations at mobilellm_125m's full widths (random weights, as the formats bench
    decodes them): the compiled step's greedy tokens are eager's. Four of its 30 layers: the kernels see every
    shape the full model gives them, and the step compiles in a fraction of the full depth's time (its C++ grows
    with the layers: about 3 minutes for all 30 on 2 cores, before Inductor's cache holds it)."""
    from zoo.bench.formats import FORMATS, _quantized
    from zoo.bench.lm import build_pair

    _, base = build_pair("mobilellm_125m", torch.float32, num_hidden_layers=4)
    model = _quantized(base, FORMATS["int8"][0])
    ids = torch.randint(0, base.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(1))
    eager = model.generate(ids, max_new_tokens=24, eos_token_id=[])
    assert torch.equal(model.generate(ids, max_new_tokens=24, eos_token_id=[], compile=True), eager)
