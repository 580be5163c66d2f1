"""Quantized weights for every LM family (zoo.lm.quant): bf16, int8 (per output row) and int4 (groups of 32/64).

Error bounds of the codes, 576-wide layers, the CPU int4 kernel against the dequantized product, save/load round
trips (identical outputs), refusals of mismatched loads (never a silent cast), cached decoding equal to full
recompute in every format, greedy agreement with float32, MobileLLM-Pro-style QAT checkpoints (fake-quantizer
scales honoured), eval.py --quantize and the pt2 export. Reduced configs: a few seconds each.
"""

import copy
import fnmatch
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from small_lms import SMALL, lm_representatives, text_generation_models, tiny_lm_args
from tolerances import bf16_bound
from torch import nn

import zoo
from zoo.bench.harness import randomize_
from zoo.evaluate import evaluate_model
from zoo.export import ExportError, export
from zoo.lm.quant import (
    DEFAULT_ACT_BITS,
    QuantizedLinear,
    QuantSpec,
    model_quantization,
    portable_kernels,
    quantize_int4,
    quantize_int8,
    quantize_model,
    quantized_layer_names,
    set_act_bits,
    unpack_int4,
)
from zoo.lm_loading import check_quantization
from zoo.models.mobilellm import save_pretrained
from zoo.profile import count_params
from zoo.publish import export_pretrained
from zoo.weights import CheckpointError, CheckpointMismatchError, load_checkpoint, read_state_dict

# the options no registered default turns on (KV sharing, LoRA): case -> (registered name, options on its tiny config)
OPTIONS = {"mor_kv_share_lora": ("mor_135m", dict(kv_sharing=True, lora_rank=4))}
# every registered LM family at its tiny size, one model per distinct structure (tests/small_lms.py), and OPTIONS
EVERY_LM = lm_representatives(text_generation_models()) + list(OPTIONS)
FORMATS = ("bf16", "int8", "int4")
# every family at int4 (groups, zero points, packed codes: the most the format carries) by default; bf16 and int8 on
# the first family by default and on every other under -m slow
EVERY_LM_AND_FORMAT = [
    pytest.param(case, fmt, marks=[] if fmt == "int4" or case == EVERY_LM[0] else [pytest.mark.slow])
    for case in EVERY_LM
    for fmt in FORMATS
]


def _build(case: str) -> tuple[str, dict]:
    """(registered name, build arguments) of a case of EVERY_LM: a registered name at its tiny config
    (:func:`small_lms.tiny_lm_args`), or one of OPTIONS."""
    name, options = OPTIONS.get(case, (case, {}))
    return name, {**tiny_lm_args(name), **options}


def _float_model(case: str, seed: int = 0) -> nn.Module:
    """A case of EVERY_LM with deterministic weights of realistic scale (as :func:`small_lms.tiny_lm`)."""
    name, kwargs = _build(case)
    return randomize_(zoo.create_model(name, **kwargs), seed).eval()


def _quantized(model: nn.Module, fmt) -> nn.Module:
    return quantize_model(copy.deepcopy(model), fmt).eval()


def _ids(batch=2, length=7, seed=1, vocab=SMALL["vocab_size"]):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------------------------
# Codes and layers
# ------------------------------------------------------------------------------------------------------------------


def _weight(out_features, in_features, seed=0):
    return torch.randn(out_features, in_features, generator=torch.Generator().manual_seed(seed)) / in_features**0.5


@pytest.mark.parametrize("shape", [(64, 128), (576, 576), (1536, 576)])
def test_int8_codes_within_half_a_step(shape):
    w = _weight(*shape)
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and scale.shape == (shape[0],) and q.abs().max() <= 127
    err = (q.float() * scale[:, None] - w).abs()
    assert (err <= scale[:, None] * 0.5 + 1e-7).all()
    assert q.abs().amax(dim=1).eq(127).all()  # the full range is used in every row


@pytest.mark.parametrize("scheme", ["asymmetric", "symmetric"])
@pytest.mark.parametrize("group_size", [32, 64])
def test_int4_codes_within_half_a_step_576_wide(scheme, group_size):
    w = _weight(576, 576)
    codes, scale, zero = quantize_int4(w, group_size, scheme)
    assert codes.max() <= 15 and scale.dtype == zero.dtype == torch.float16
    assert scale.shape == (576, 576 // group_size)
    deq = (codes.float() - 8).view(576, -1, group_size) * scale.float()[..., None] + zero.float()[..., None]
    err = (deq.view(576, 576) - w).abs().view(576, -1, group_size)
    # half a step, plus what float16's rounding of scale and zero moves the end codes (at most 8 * 2^-11 steps)
    assert (err <= scale.float()[..., None] * (0.5 + 8 * 2**-11) + 1e-6).all()
    if scheme == "symmetric":
        assert not zero.any()
    # relative error of a matrix product: int4 of N(0, 1/n) weights is a few percent
    rel = (deq.view(576, 576) - w).norm() / w.norm()
    assert 0.02 < rel < 0.12


def test_bf16_error_bound():
    model = _float_model("mobilellm_125m")
    q = _quantized(model, "bf16")
    for (name, p), (_, b) in zip(model.named_parameters(), q.named_parameters()):
        assert b.dtype == torch.bfloat16
        assert ((b.float() - p).abs() <= p.abs() * 2**-8 + 1e-30).all(), name


@pytest.mark.parametrize(
    "out_features,in_features,bits,group_size",
    [(576, 576, 4, 32), (1536, 576, 4, 64), (576, 1536, 4, 32), (100, 576, 4, 32), (576, 576, 8, None)],
)
def test_quantized_linear_kernel_matches_dequantized_product(out_features, in_features, bits, group_size):
    linear = nn.Linear(in_features, out_features, bias=out_features == 100)
    layer = QuantizedLinear.from_float(linear, bits=bits, group_size=group_size)
    x = torch.randn(3, 5, in_features)
    with torch.no_grad():
        want = F.linear(x, layer.dequantize(), layer.bias)
        got = layer(x)  # the CPU kernel, fed bf16 rows, returned in the input's dtype
        assert got.shape == (3, 5, out_features) and got.dtype == torch.float32
        # the kernel's only rounding is bf16 (input rows and output): ~2^-8 relative, far below the codes' own error
        assert (got - want).norm() / want.norm() < 1e-2
        # and it is the same product as the portable path (not a different weight): per element within one bf16
        # rounding of every input term and of the output (float32 rows rounded inside, or bf16 rows given)
        terms = x.abs() @ layer.dequantize().abs().T + (0 if layer.bias is None else layer.bias.abs())
        torch.testing.assert_close(got, want, rtol=0, atol=bf16_bound(terms, want))
        got_bf16 = layer(x.bfloat16())
        assert got_bf16.dtype == torch.bfloat16
        torch.testing.assert_close(got_bf16.float(), want, rtol=0, atol=bf16_bound(terms, want))
        # close to the float layer it came from
        exact = linear(x)
        assert (got - exact).norm() / exact.norm() < (0.12 if bits == 4 else 0.01)
    # autograd through the input takes the portable path
    x.requires_grad_(True)
    layer(x).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_int4_group_size_must_divide_the_width():
    with pytest.raises(ValueError, match="does not divide the input width 576.*group_size 32 or 64"):
        QuantizedLinear.from_float(nn.Linear(576, 576, bias=False), bits=4, group_size=128)
    model = zoo.create_model("mobilellm_125m", num_hidden_layers=1, vocab_size=64)  # 576 wide
    with pytest.raises(ValueError, match="576"):
        quantize_model(model, {"method": "int4_weight_only", "group_size": 128, "scheme": "asymmetric"})
    quantize_model(model, {"method": "int4_weight_only", "group_size": 64, "scheme": "asymmetric"})
    assert model.model.layers[0].mlp.down_proj.group_size == 64


def test_act_bits_are_parsed_recorded_and_switched():
    assert QuantSpec.parse("int8a16") == QuantSpec("int8_weight_only", act_bits=16)
    assert QuantSpec.parse("INT4A8") == QuantSpec("int4_weight_only", 32, "asymmetric", act_bits=8)
    assert QuantSpec.parse("int4a16", group_size=64).group_size == 64
    assert QuantSpec.parse("int8", act_bits=16).act_bits == 16
    assert QuantSpec.parse("int4").act_bits == DEFAULT_ACT_BITS
    # a config written before act_bits existed means the default; one that records it keeps it
    assert check_quantization({"method": "int8_weight_only"}, "x").act_bits == DEFAULT_ACT_BITS
    spec = check_quantization(json.dumps({"method": "int8_weight_only", "group_size": None, "act_bits": 16}), "x")
    assert spec.act_bits == 16 and QuantSpec.parse(spec.to_dict()) == spec
    assert spec.same_weights(QuantSpec.parse("int8a8"))  # a run-time choice: the same stored weights
    for bad, kwargs, match in [
        ("int8a8", {"act_bits": 16}, "give one"),
        ("bf16", {"act_bits": 8}, "not bf16"),
        (None, {"act_bits": 8}, "act_bits is for int8"),
        ("int8a4", {}, "int8a16"),
        ({"method": "int8_weight_only", "act_bits": 12}, {}, "8 or 16"),
        ({"method": "bf16", "act_bits": 8}, {}, "bf16 weights take no act_bits"),
    ]:
        with pytest.raises(ValueError, match=match):
            QuantSpec.parse(bad, **kwargs)
    with pytest.raises(CheckpointError, match="act_bits must be 8 or 16"):
        check_quantization({"method": "int4_weight_only", "group_size": 32, "scheme": "asymmetric", "act_bits": 4}, "x")
    model = zoo.create_model("mobilellm_125m", **SMALL)
    quantize_model(model, "int4", act_bits=16)
    layers = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert model.quantization.act_bits == 16 and {m.act_bits for m in layers} == {16}
    model.__dict__["_compiled_step"] = "made for act_bits 16"
    set_act_bits(model, 8)
    assert model.quantization.act_bits == 8 and {m.act_bits for m in layers} == {8}
    assert "_compiled_step" not in model.__dict__  # compiled again for the new kernels
    with pytest.raises(ValueError, match="8 or 16"):
        set_act_bits(model, 4)


def test_spec_parsing_and_config_entry():
    assert QuantSpec.parse("int4").to_dict() == {
        "method": "int4_weight_only",
        "group_size": 32,
        "scheme": "asymmetric",
        "act_bits": DEFAULT_ACT_BITS,
    }
    assert QuantSpec.parse("int8").to_dict() == {
        "method": "int8_weight_only",
        "group_size": None,
        "act_bits": DEFAULT_ACT_BITS,
    }
    assert QuantSpec.parse(torch.bfloat16) == QuantSpec.parse("bf16") == QuantSpec("bf16")
    assert QuantSpec.parse(None) is None and QuantSpec.parse("none") is None
    assert check_quantization(json.dumps({"method": "int8_weight_only"}), "x") == QuantSpec("int8_weight_only")
    for bad, match in [
        ({"method": "int3"}, "method"),
        ({"method": "int4_weight_only", "group_size": 48, "scheme": "asymmetric"}, "group_size"),
        ({"method": "int8_weight_only", "group_size": 32}, "one scale per output row"),
        ({"method": "int8_weight_only", "path": "/tmp"}, "unknown field"),
        ("[1, 2]", "must be an object"),
    ]:
        with pytest.raises(CheckpointError, match=match):
            check_quantization(bad, "folder/config.json")
    with pytest.raises(ValueError, match="quantize must be one of"):
        QuantSpec.parse("int2")


# ------------------------------------------------------------------------------------------------------------------
# Whole models: which layers, round trips, caches, greedy agreement
# ------------------------------------------------------------------------------------------------------------------


def test_only_decoder_projections_are_quantized_and_the_tie_stays():
    model = _float_model("mor_135m")
    q = _quantized(model, "int8")
    names = {n for n, m in q.named_modules() if isinstance(m, QuantizedLinear)}
    assert names == set(quantized_layer_names(q)) and len(names) == 7 * len(q.model.layers)
    assert isinstance(q.model.embed_tokens, nn.Embedding) and q.lm_head is None  # tied: one float matrix
    assert q.output_weight is q.model.embed_tokens.weight
    assert all(isinstance(r.net, nn.Linear) for r in q.routers)  # routers stay float
    assert count_params(q)["params"] == count_params(model)["params"]  # codes count as the weights they stand for
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(q, "int4")


def _cached_and_full(model, seq, prompt: int):
    """(cached logits: the prompt, then one token at a time through a static cache; logits of the full sequence)."""
    with torch.no_grad():
        full = _logits(model, seq)
        cache = model.new_cache(seq.shape[0], seq.shape[1])
        steps = [model(seq[:, :prompt], past_key_values=cache).logits]
        for t in range(prompt, seq.shape[1]):
            steps.append(model(seq[:, t : t + 1], past_key_values=cache).logits)
    return torch.cat(steps, 1).float(), full.float(), cache


@pytest.mark.parametrize("family, fmt", EVERY_LM_AND_FORMAT)
def test_cached_decoding_equals_full_recompute(family, fmt):
    """The cache is checked where the two paths round alike: bf16, and int8 / int4 with 16-bit activations (the
    logits differ by the bf16 step of the head's output). With 8-bit activations each row is rounded to int8 codes
    (per block of 32); where the cached and the full attention differ in a last bit, an activation lands on the
    neighbouring code: a change of one code, at most twice the half-code rounding that every activation undergoes.
    So the 8-bit paths may differ by twice the rounding's measured effect on them (the 8-bit against the 16-bit
    logits of the same path) on top of the 16-bit bound; a cache that misplaced a token would differ by far more."""
    model = _quantized(_float_model(family), fmt)
    if fmt != "bf16":
        set_act_bits(model, 16)
    ids = _ids(2, 7, vocab=model.config.vocab_size)
    with torch.no_grad():
        seq = model.generate(ids, max_new_tokens=6)
    cached, full, cache = _cached_and_full(model, seq, 7)
    assert cache.dtype == (torch.bfloat16 if fmt == "bf16" else torch.float32)
    # bf16: activations in bf16; int8/int4: the head's int8 kernel returns bf16 logits (one bf16 step of the largest)
    # (bf16 every activation rounded: 4 bf16 steps, 4 x 2**-7 = 0.031, of the largest logit)
    tol = {"bf16": 4 * 2**-7, "int8": 2**-7, "int4": 2**-7}[fmt] * full.abs().max().item()
    torch.testing.assert_close(cached, full, rtol=0, atol=tol)
    # generate's tokens are the cached logits' argmax: full recompute picks the same wherever its top two logits are
    # further apart than the two paths may differ (a near tie may go either way)
    top2 = full[:, 6:-1].topk(2, dim=-1).values
    decided = top2[..., 0] - top2[..., 1] > 2 * tol
    assert torch.equal(full[:, 6:-1].argmax(-1)[decided], seq[:, 7:][decided])
    if fmt == "bf16":
        return
    set_act_bits(model, 8)
    cached8, full8, _ = _cached_and_full(model, seq, 7)
    rounding = max((cached8 - cached).abs().max().item(), (full8 - full).abs().max().item())
    assert 0 < rounding  # the 8-bit kernels ran
    torch.testing.assert_close(cached8, full8, rtol=0, atol=2 * rounding + tol)


def _logits(model, ids):
    out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits


# teacher-forced top-1 agreement with float32 over float32's greedy continuation (8 prompts x 16 tokens), measured
# on these reduced random models: bf16 0.97-0.99, int8 0.96-1.00, int4 0.73-0.91 (free-running greedy agreement,
# which compounds the first difference: bf16 0.84-1.00, int8 0.74-1.00, int4 0.29-0.68)
FLOORS = {"bf16": 0.93, "int8": 0.93, "int4": 0.6}


@pytest.mark.parametrize("family", EVERY_LM)
def test_greedy_tokens_agree_with_float32(family):
    model = _float_model(family)
    ids = _ids(8, 6, seed=3, vocab=model.config.vocab_size)
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=16)
        for fmt in FORMATS:
            quantized = _quantized(model, fmt)
            forced = (_logits(quantized, want)[:, 5:-1].argmax(-1) == want[:, 6:]).float().mean().item()
            assert forced >= FLOORS[fmt], (fmt, forced)
            if fmt == "int8":  # the first new token of most prompts is float32's
                first = (quantized.generate(ids, max_new_tokens=1)[:, -1] == want[:, 6]).float().mean().item()
                assert first >= 0.85, first


@pytest.mark.parametrize("family, fmt", EVERY_LM_AND_FORMAT)
def test_folder_round_trip_gives_identical_outputs(family, fmt, tmp_path):
    name, kwargs = _build(family)
    model = _quantized(_float_model(family), fmt)
    out = export_pretrained(model, tmp_path / "out", model_name=name, model_kwargs=kwargs, latency_runs=0)
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"] == QuantSpec.parse(fmt).to_dict()
    back = zoo.create_model(str(out)).eval()
    assert model_quantization(back) == QuantSpec.parse(fmt)
    ids = _ids(2, 9, seed=4)
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids))
        assert torch.equal(back.generate(ids, max_new_tokens=5), model.generate(ids, max_new_tokens=5))
    sd, back_sd = model.state_dict(), back.state_dict()
    assert sd.keys() == back_sd.keys()
    assert all(sd[k].dtype == back_sd[k].dtype and torch.equal(sd[k], back_sd[k]) for k in sd)
    if fmt != "bf16":
        q_proj = back.model.layers[0].self_attn.q_proj
        assert q_proj.qweight.dtype == (torch.int8 if fmt == "int8" else torch.uint8)


def test_create_model_quantizes_after_loading_float_weights(tmp_path):
    model = _float_model("mobilellm_125m")
    save_pretrained(model, tmp_path / "float")
    for fmt in FORMATS:
        loaded = zoo.create_model(str(tmp_path / "float"), quantize=fmt).eval()
        want = _quantized(model, fmt)
        with torch.no_grad():
            assert torch.equal(loaded(_ids()), want(_ids()))
    loaded = zoo.create_model(
        "mobilellm_125m", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "float")}, quantize="int4"
    )
    assert model_quantization(loaded) == QuantSpec.parse("int4")
    with pytest.raises(ValueError, match="language models"):
        zoo.create_model("poolformer_s12", quantize="int8")


# ------------------------------------------------------------------------------------------------------------------
# Refusals: quantized weights never load as float, a record never stands for other weights
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def int8_folder(tmp_path):
    model = _quantized(_float_model("mobilellm_125m"), "int8")
    save_pretrained(model, tmp_path / "int8")
    return tmp_path / "int8"


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def test_quantized_folder_refuses_another_format(int8_folder):
    with pytest.raises(CheckpointError, match="holds int8 .* cannot be loaded as int4"):
        zoo.create_model(str(int8_folder), quantize="int4")
    assert model_quantization(zoo.create_model(str(int8_folder), quantize="int8")).method == "int8_weight_only"


def test_quantized_codes_without_a_record_are_refused(int8_folder):
    # the safetensors metadata alone still says int8: the folder loads
    _edit_config(int8_folder, quantization=None)
    assert model_quantization(zoo.create_model(str(int8_folder))).method == "int8_weight_only"
    # codes that nothing describes are never read as float weights
    sd = read_state_dict(int8_folder / "model.safetensors")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(int8_folder / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="holds quantized weights .* nothing records"):
        zoo.create_model(str(int8_folder))
    # into a float model by hand: the key mismatch is named for what it is
    model = zoo.create_model("mobilellm_125m", **SMALL)
    with pytest.raises(CheckpointMismatchError, match="holds quantized layers"):
        load_checkpoint(model, int8_folder / "model.safetensors")


def test_record_that_does_not_describe_the_weights_is_refused(int8_folder, tmp_path):
    _edit_config(int8_folder, quantization={"method": "int4_weight_only", "group_size": 32, "scheme": "asymmetric"})
    with pytest.raises(CheckpointMismatchError, match="records int4 .* weight file says int8"):
        zoo.create_model(str(int8_folder))
    # a float folder that claims int8
    model = _float_model("mobilellm_125m")
    save_pretrained(model, tmp_path / "float", format="zoo")
    _edit_config(tmp_path / "float", quantization={"method": "int8_weight_only"})
    with pytest.raises(CheckpointMismatchError, match="records int8 .* holds float weights"):
        zoo.create_model(str(tmp_path / "float"))


def test_float_values_into_integer_codes_are_refused(int8_folder):
    model = zoo.create_model(str(int8_folder))
    sd = {k: (v.float() if k.endswith("qweight") else v) for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="floating-point tensor.*integer codes"):
        load_checkpoint(model, sd)
    float_sd = _float_model("mobilellm_125m").state_dict()
    with pytest.raises(CheckpointMismatchError, match="float weights where this model has quantized layers"):
        load_checkpoint(model, float_sd)


def test_transformers_format_refuses_codes(tmp_path):
    model = _quantized(_float_model("mobilellm_125m"), "int4")
    with pytest.raises(ValueError, match="cannot read the zoo's int4"):
        save_pretrained(model, tmp_path / "x", format="transformers")
    bf16 = save_pretrained(_quantized(_float_model("mobilellm_125m"), "bf16"), tmp_path / "bf16")
    config = json.loads((bf16 / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["torch_dtype"] == "bfloat16"


def test_transformers_auto_classes_read_the_codes_and_stock_classes_refuse_them(int8_folder):
    from transformers import AutoModelForCausalLM  # heavy: only this test needs it

    import zoo.export.hf_auto  # noqa: F401  (registers the zoo's model types and quant_method "zoo")

    hf = AutoModelForCausalLM.from_pretrained(str(int8_folder))  # the zoo's classes build the int8 layers
    assert hf.is_quantized and hf.quantization_method == "zoo"
    ids = torch.tensor([[3, 5, 7, 9, 11]])
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, zoo.create_model(str(int8_folder), pretrained=True).eval()(ids))
    # the same codes described as a stock Llama folder: transformers' Llama would leave them unread
    _edit_config(int8_folder, model_type="llama", architectures=["LlamaForCausalLM"], auto_map=None)
    with pytest.raises(ValueError, match="only the zoo's classes read, not LlamaForCausalLM"):
        AutoModelForCausalLM.from_pretrained(str(int8_folder))


# ------------------------------------------------------------------------------------------------------------------
# MobileLLM-Pro's int4 QAT layout
# ------------------------------------------------------------------------------------------------------------------


def _qat_checkpoint(model: nn.Module, group_size=32, zero_points=False):
    """A torchao-QAT-style state dict of ``model``: every decoder projection's ``weight`` on a symmetric int4 grid
    (stored as bf16), with ``weight_fake_quantizer.scale`` (out, in / group_size) and optionally ``.zero_point``.
    Also the codes, and the float32 weights the fake quantizer computes from them, ``(q - zero_point) * scale``."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    codes, fake = {}, {}
    gen = torch.Generator().manual_seed(7)
    for name in quantized_layer_names(model):
        w = sd[name + ".weight"].float()
        out_features, in_features = w.shape
        wg = w.view(out_features, -1, group_size)
        scale = (wg.abs().amax(-1) / 7.5).bfloat16().float()
        zp = torch.randint(-1, 2, scale.shape, generator=gen).float() if zero_points else torch.zeros_like(scale)
        q = (torch.round(wg / scale[..., None]) + zp[..., None]).clamp(-8, 7)
        fake[name + ".weight"] = ((q - zp[..., None]) * scale[..., None]).view(out_features, in_features)
        sd[name + ".weight"] = fake[name + ".weight"].bfloat16()
        sd[name + ".weight_fake_quantizer.scale"] = scale.bfloat16()
        if zero_points:
            sd[name + ".weight_fake_quantizer.zero_point"] = zp.to(torch.int32)
        codes[name] = (q + 8).to(torch.uint8).view(out_features, in_features)
    return sd, codes, fake


@pytest.mark.parametrize("zero_points", [False, True])
def test_pro_qat_checkpoint_loads_with_its_scales(tmp_path, zero_points):
    name = "mobilellm_pro_1b"  # a QAT checkpoint of MobileLLM-Pro (its global and sliding-window layers)
    model = _float_model(name)
    folder = save_pretrained(model, tmp_path / "pro")  # zoo format (sliding windows): config.json + weights
    sd, codes, fake_weights = _qat_checkpoint(model, zero_points=zero_points)
    save_file(sd, str(folder / "model.safetensors"))
    loaded = zoo.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(folder)}).eval()
    assert model_quantization(loaded) == QuantSpec("int4_weight_only", 32, "symmetric")
    fake = copy.deepcopy(model)  # the float model the fake quantizers compute (their q * scale, not the bf16 copy)
    fake.load_state_dict({**{k: v.float() for k, v in sd.items() if "fake_quantizer" not in k}, **fake_weights})
    for layer_name, want in codes.items():
        layer = loaded.get_submodule(layer_name)
        assert torch.equal(unpack_int4(layer.qweight), want)  # the checkpoint's own grid, code for code
        # q x scale, one float32 product on both sides: bit for bit
        torch.testing.assert_close(layer.dequantize(), fake.get_submodule(layer_name).weight, rtol=0, atol=0)
    ids = _ids(2, 8)
    with torch.no_grad(), portable_kernels():  # the exact product (CPU kernels round their input to bf16)
        torch.testing.assert_close(loaded(ids), fake(ids), rtol=0, atol=0)  # the same weights, the same F.linear
        assert torch.equal(loaded.generate(ids, max_new_tokens=6), fake.generate(ids, max_new_tokens=6))
    with torch.no_grad():  # the CPU kernels: within bf16 rounding of the same weights
        want = fake(ids)
        assert (loaded(ids) - want).norm() / want.norm() < 2e-2
    # saved as the zoo's int4 folder and loaded back the same
    again = save_pretrained(loaded, tmp_path / "again")
    with torch.no_grad():
        assert torch.equal(zoo.create_model(str(again))(ids), loaded(ids))
    # int8 dynamic activations (how the CPU checkpoint was trained) on request: close, not equal
    emulated = zoo.create_model(
        name,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(folder)},
        quantize={"method": "int4_weight_only", "group_size": 32, "scheme": "symmetric", "activations": "int8_dynamic"},
    ).eval()
    with torch.no_grad():
        a, b = emulated(ids), loaded(ids)
    assert not torch.equal(a, b) and (a - b).abs().max() < 0.05 * b.abs().max()


def test_qat_weights_off_their_grid_are_refused(tmp_path):
    model = _float_model("mobilellm_pro_1b")
    folder = save_pretrained(model, tmp_path / "pro")
    sd, _, _ = _qat_checkpoint(model)
    key = quantized_layer_names(model)[0] + ".weight"
    sd[key] = (sd[key].float() * 1.37).bfloat16()  # no longer q * scale
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="not int4 under its fake-quantizer scales|int4 grid"):
        zoo.create_model("mobilellm_pro_1b", pretrained=True, pretrained_cfg_overlay={"file": str(folder)})


# ------------------------------------------------------------------------------------------------------------------
# eval.py and export
# ------------------------------------------------------------------------------------------------------------------


def test_eval_quantize(tmp_path):
    from zoo.data import text

    tok = text.train_bpe_tokenizer(list(text.bundled_corpus().values())[:10], 300, tmp_path / "tokenizer.json")
    kwargs = dict(SMALL, vocab_size=tok.get_vocab_size())
    rows = {
        q: evaluate_model(
            "mobilellm_125m",
            "pydoc",
            model_kwargs=kwargs,
            tokenizer=str(tmp_path / "tokenizer.json"),
            seq_len=32,
            batch_size=4,
            max_batches=2,
            profile=False,
            quantize=q,
        )
        for q in (None, "int8", "int4")
    }
    assert "quantization" not in rows[None]
    assert rows["int8"]["quantization"] == {
        "method": "int8_weight_only",
        "group_size": None,
        "act_bits": DEFAULT_ACT_BITS,
    }
    assert rows["int4"]["quantization"]["group_size"] == 32
    base = rows[None]["perplexity"]
    assert abs(rows["int8"]["perplexity"] - base) < 0.02 * base
    assert abs(rows["int4"]["perplexity"] - base) < 0.2 * base


@pytest.mark.slow
def test_pt2_export_of_int4_weights(tmp_path):
    model = _float_model("mobilellm_125m")
    result = export(model, "pt2", tmp_path / "pt2", model_name="mobilellm_125m", quantize="int4", check=True)
    assert result.check["ok"], result.check
    config = json.loads((tmp_path / "pt2" / "config.json").read_text())
    assert config["quantization"]["method"] == "int4_weight_only"
    assert model_quantization(model) is None  # the model itself is left float
    with pytest.raises(ExportError, match="cannot store"):
        export(_quantized(model, "int8"), "onnx", tmp_path / "onnx", model_name="mobilellm_125m")


@pytest.mark.parametrize("fmt", ["int8", "int8a8", "int8a16", "int4a8"])
@pytest.mark.parametrize("hidden", [40, 72, 88, 104])
def test_widths_off_the_kernel_blocks_decode_as_the_portable_form(hidden, fmt):
    """Widths that are no multiple of 32 (``zoo prune`` makes them: 128 -> 88) take the portable product in every
    layer and in the int8 output head: a prompt and a decoded token give what the portable form gives (the CPU
    kernels once crashed the process here), and greedy decoding stays finite."""
    if fmt.startswith("int4") and hidden % 32:
        fmt = "int8" + fmt[4:]  # int4 groups of 32 need whole blocks: quantize_model refuses such widths itself
    model = randomize_(
        zoo.create_model(
            "mobilellm_125m",
            **dict(SMALL, hidden_size=hidden, num_attention_heads=hidden // 8, num_key_value_heads=hidden // 8),
        ),
        0,
    ).eval()
    model = quantize_model(model, fmt).eval()
    weight = model.output_weight
    step = weight.abs().amax(1) / 127  # the head's int8 code step per output row
    with torch.no_grad():
        for length in (8, 1):  # a prompt, a decoded token
            logits = _logits(model, _ids(2, length))
            assert torch.isfinite(logits).all() and logits.abs().max() < 1e3
            h = torch.randn(2, length, hidden)
            got, exact = model.logits(h), F.linear(h, weight)
            assert "_head_int8" in model.__dict__  # the int8 head ran
            # each weight is off by at most half a code step: |got - exact| <= sum_i |h_i| * step / 2, plus float32
            # rounding of the two sums
            bound = h.abs().sum(-1, keepdim=True) * step / 2 + 1e-5 * exact.abs().amax()
            assert ((got - exact).abs() <= bound).all()
        assert torch.isfinite(_logits(model, model.generate(_ids(1, 8), max_new_tokens=4))).all()


def test_int8_head_follows_the_float_head():
    model = _quantized(_float_model("mobilellm_125m"), "int8")
    h = torch.randn(2, 3, SMALL["hidden_size"])
    with torch.no_grad():
        exact = F.linear(h, model.output_weight)
        got = model.logits(h)
        assert "_head_int8" in model.__dict__  # the kernel path ran
        assert (got - exact).norm() / exact.norm() < 2e-2
        with portable_kernels():
            assert torch.equal(model.logits(h), exact)
        model.output_weight.mul_(-2.0)  # a weight update (training, a load) is seen at the next call
        exact = F.linear(h, model.output_weight)
        assert (model.logits(h) - exact).norm() / exact.norm() < 2e-2
    # one row (a decoded token) at act_bits 8: the repacked codes, the same bits as the plain codes' kernel
    from zoo.kernels import gemv

    if gemv.available() and model_quantization(model).act_bits == 8:
        row = torch.randn(1, 1, SMALL["hidden_size"])
        with torch.no_grad():
            for _ in range(2):
                head = model.__dict__["_head_int8"]  # a QuantizedLinear of the head's codes, not a submodule
                q, scale = head.qweight, head.scale
                got = model.logits(row)
                assert "tiles" in model.__dict__["_head_int8"]._kernel
                assert torch.equal(got.reshape(1, -1), gemv.gemm_int8_a8(row.reshape(1, -1), q, scale))
                model.output_weight.mul_(-0.5)  # and the copy follows an update
                model.logits(h)
    # with autograd the head is the float product
    h.requires_grad_(True)
    torch.testing.assert_close(model.logits(h), F.linear(h, model.output_weight))


def test_the_kernels_source_ships_with_the_package():
    from zoo.kernels import gemv

    package = Path(gemv.__file__).resolve().parent
    files = [Path(gemv.SOURCE_DIR) / name for name in gemv.SOURCE_FILES]
    assert Path(gemv.SOURCE_PATH) == files[0] and all(f.is_file() and f.parent == package for f in files)
    assert "TORCH_LIBRARY(zoo_gemv" in files[0].read_text() and '#include "gemv_a8.h"' in files[0].read_text()
    assert "".join(f.read_text() for f in files) == gemv._SOURCE  # the build is keyed by what ships
    # a wheel carries them: pyproject's package-data for zoo.kernels names them (read as text: tomllib is Python 3.11+)
    text = (package.parents[1] / "pyproject.toml").read_text()
    table = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    line = next(x for x in table.splitlines() if x.startswith('"zoo.kernels"'))
    patterns = re.findall(r'"([^"]+)"', line.split("=", 1)[1])
    for f in files:
        assert any(fnmatch.fnmatch(f.relative_to(package).as_posix(), p) for p in patterns), f


@pytest.mark.parametrize("fmt", ["int8a8", "int8a16", "int4a8", "int4a16"])
def test_eval_cli_takes_the_activation_width_formats(fmt):
    from zoo.evaluate import _parser

    assert _parser().parse_args(["--model", "m", "--data", "pydoc", "--quantize", fmt]).quantize == fmt
    assert QuantSpec.parse(fmt).act_bits == int(fmt.split("a")[1])
