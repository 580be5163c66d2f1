"""``generate(compile=True)``: one torch.compile'd decode step over a static cache gives eager's greedy tokens.

Compiling takes several seconds even for these reduced models, so one family (and one quantized format) runs by
default and every family and format under ``-m slow``.
"""

import copy

import pytest
import torch
from torch import nn

import zoo
from zoo.bench.harness import randomize_
from zoo.lm.quant import quantize_model

TINY = dict(
    vocab_size=128, num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
    num_key_value_heads=2,
)  # fmt: skip
FAMILIES = {
    "mobilellm": ("mobilellm_125m", {}),
    "ls": ("mobilellm_125m_ls", {}),
    "pro": ("mobilellm_pro_1b", dict(num_hidden_layers=4, layer_types=["sliding_attention", "full_attention"] * 2,
                                     sliding_window=5)),
    "recursive": ("recursive_135m", dict(num_hidden_layers=5)),
    "mor": ("mor_135m", dict(num_hidden_layers=5)),
}  # fmt: skip


def _model(family: str, fmt: str | None = None) -> nn.Module:
    name, extra = FAMILIES[family]
    model = randomize_(zoo.create_model(name, **{**TINY, **extra}), 0).eval()
    return model if fmt is None else quantize_model(model, fmt).eval()


def _prompt(length=9, seed=1):
    return torch.randint(0, TINY["vocab_size"], (1, length), generator=torch.Generator().manual_seed(seed))


def _check(model: nn.Module, new_tokens: int = 12):
    ids = _prompt()
    eager = model.generate(ids, max_new_tokens=new_tokens)
    compiled = model.generate(ids, max_new_tokens=new_tokens, compile=True)
    assert compiled.shape == eager.shape
    assert torch.equal(compiled, eager)
    # a second call of another prompt length reuses the compiled step (same size bucket) and still agrees
    ids2 = _prompt(4, seed=2)
    step = model.compiled_decoder(ids2.shape[1] + new_tokens)[1]
    assert torch.equal(
        model.generate(ids2, max_new_tokens=new_tokens, compile=True), model.generate(ids2, max_new_tokens=new_tokens)
    )
    assert model.compiled_decoder(ids2.shape[1] + new_tokens)[1] is step


def test_compiled_decode_equals_eager():
    _check(_model("mobilellm"))


def test_compiled_decode_int8_keeps_the_kernels_and_the_tokens():
    model = _model("pro", "int8")
    _check(model, new_tokens=10)


def test_compiled_decode_refuses_batches_and_padding():
    model = _model("mobilellm")
    with pytest.raises(ValueError, match="batch 1"):
        model.generate(torch.zeros(2, 3, dtype=torch.long), max_new_tokens=2, compile=True)
    mask = torch.tensor([[0, 1, 1]])
    with pytest.raises(ValueError, match="padding"):
        model.generate(torch.zeros(1, 3, dtype=torch.long), attention_mask=mask, max_new_tokens=2, compile=True)


def test_copies_do_not_carry_the_compiled_step():
    model = _model("mobilellm")
    model.compiled_decoder(16)
    clone = copy.deepcopy(model)
    assert "_compiled_step" not in clone.__dict__ and "_compiled_step" in model.__dict__
    assert not any("lm" == n.split(".")[0] for n, _ in model.named_modules() if n)  # the decoder is no submodule


# -m slow (CI): every family in float32 and every format on MobileLLM; -m sweep (by hand): the other pairs
@pytest.mark.slow
@pytest.mark.parametrize(
    "family, fmt",
    [
        (f, q) if q is None or f == "mobilellm" else pytest.param(f, q, marks=pytest.mark.sweep)
        for q in (None, "bf16", "int8", "int4")
        for f in sorted(FAMILIES)
    ],
)
def test_compiled_decode_every_family_and_format(family, fmt):
    if fmt == "bf16":  # bf16 compiled and eager may round differently: greedy agreement, not equality
        model = _model(family, fmt)
        ids = _prompt()
        eager = model.generate(ids, max_new_tokens=12)
        compiled = model.generate(ids, max_new_tokens=12, compile=True)
        assert (compiled[:, 9:] == eager[:, 9:]).float().mean() >= 0.5
        return
    _check(_model(family, fmt))


def test_a_model_quantized_in_place_after_compiling_is_compiled_again():
    """The step skips Dynamo's guards on the model's modules; swapping them (quantize_model in place) makes a new
    step instead of running code that reads the float layers that are gone."""
    model = _model("mobilellm")
    ids = _prompt()
    assert torch.equal(model.generate(ids, max_new_tokens=6, compile=True), model.generate(ids, max_new_tokens=6))
    first = model.compiled_decoder(ids.shape[1] + 6)[1]
    quantize_model(model, "int8")
    assert torch.equal(model.generate(ids, max_new_tokens=6, compile=True), model.generate(ids, max_new_tokens=6))
    assert model.compiled_decoder(ids.shape[1] + 6)[1] is not first
