"""The one quantization vocabulary (zoo.lm.quant_format): every name is taken by each door its backend opens
(create_model, eval.py, zoo run, zoo export, the bench) and refused by the others with one error; old spellings
are the same spec; a checkpoint's record is read in one place; ``QuantSpec.parse`` runs once per create_model."""

import argparse
import re

import pytest
import torch
from small_lms import SMALL

import zoo
from zoo.bench.formats import FORMATS, PTE_TYPES, check_formats
from zoo.evaluate import _gguf_type, _parser
from zoo.export.core import ExportError, format_quantize
from zoo.export.llama_backend import _check_quantize
from zoo.lm.quant import (
    EXPORT_BACKENDS,
    VOCABULARY,
    QuantRecordError,
    QuantRecordMismatch,
    QuantSpec,
    counterpart,
    lookup,
    quant_names,
    quantize_argument,
)
from zoo.lm.quant_format import BACKENDS

NAMES = sorted(VOCABULARY)


def test_every_backend_is_described_and_read_by_an_export_format():
    assert {q.backend for q in VOCABULARY.values()} == set(BACKENDS) == set(EXPORT_BACKENDS.values())
    for q in VOCABULARY.values():
        assert (":" in q.name) == (q.backend != "zoo")  # the other runtimes' names carry their backend
        assert q.zoo is None or lookup(q.zoo, "zoo").bits == q.bits  # the zoo twin stores the same weight bits


@pytest.mark.parametrize("name", NAMES)
def test_every_name_is_taken_where_its_backend_applies(name):
    entry = VOCABULARY[name]
    for spelled in {name, entry.native}:
        for fmt, backend in EXPORT_BACKENDS.items():  # zoo export
            if backend == entry.backend:
                got = format_quantize(fmt, spelled)
                assert got is None if entry.bits == 32 and backend == "zoo" else got == entry
            elif f"{backend}:{entry.native}" not in VOCABULARY:  # (the zoo's int8 and onnx:int8 share a bare name)
                with pytest.raises(ExportError, match="quantize must be one of"):
                    format_quantize(fmt, name)
        for backend in BACKENDS:  # the argparse door of each backend
            if backend == entry.backend:
                assert quantize_argument(backend)(spelled) == spelled
            elif backend not in ("zoo", "onnx"):  # (the zoo's int8 and onnx's int8 share a bare name)
                with pytest.raises(argparse.ArgumentTypeError, match="did you mean|must be one of"):
                    quantize_argument(backend)(name)
    if entry.backend == "zoo":  # create_model, eval.py on torch, the bench
        spec = QuantSpec.parse(name)
        assert (spec is None) == (entry.bits == 32) and (spec is None or spec.bits == entry.bits)
        assert _gguf_type("torch", name) is None
        assert check_formats([name]) == [name] and FORMATS[name][1] == counterpart(name, "gguf").native
        assert _parser().parse_args(["--model", "m", "--data", "pydoc", "--quantize", name]).quantize == name
        with pytest.raises(ValueError, match="is a zoo format"):
            _gguf_type("llama.cpp", name)
    else:
        with pytest.raises(ValueError, match=re.escape(f"is {BACKENDS[entry.backend][0]}")):
            QuantSpec.parse(name)
    if entry.backend == "gguf":  # eval.py / zoo run / generate with backend llama.cpp
        assert _gguf_type("llama.cpp", name) == _check_quantize(name) == entry.native
        with pytest.raises(ValueError, match="a GGUF type"):
            _gguf_type("torch", name)


@pytest.mark.parametrize("name", [n for n in NAMES if VOCABULARY[n].backend == "zoo" and VOCABULARY[n].bits < 32])
def test_create_model_takes_every_zoo_format(name):
    model = zoo.create_model("mobilellm_125m", quantize=name, **SMALL)
    assert model.quantization == QuantSpec.parse(name)


def test_old_spellings_are_the_same_spec():
    for old, new in [
        ("int8", "int8_weight_only"),
        ("int8", "zoo:int8"),
        ("int4", "int4_weight_only"),
        ("bf16", "bfloat16"),
        ("int4a8", "INT4A8"),
        ("int8", {"method": "int8_weight_only"}),
        ("int4", {"method": "int4_weight_only", "group_size": 32, "scheme": "asymmetric"}),
    ]:
        assert QuantSpec.parse(old) == QuantSpec.parse(new), (old, new)
    assert QuantSpec.parse("fp32") is QuantSpec.parse("none") is None
    for bare, spelled in [("q4_0", "gguf:q4_0"), ("q8_0", "gguf:q8_0"), ("f16", "gguf:f16"), ("f32", "gguf:f32")]:
        assert lookup(bare, "gguf") is lookup(spelled) is lookup(spelled, "gguf") is lookup(bare)
        assert format_quantize("gguf", bare).native == format_quantize("gguf", spelled).native == bare
    for bare in quant_names("pte"):
        assert format_quantize("pte", bare) is lookup(f"pte:{bare}")
    assert format_quantize("onnx", "int8") is lookup("onnx:int8")  # the reading backend's own name first
    assert PTE_TYPES == {"int8": "8da8w", "int4": "8da4w"}
    assert FORMATS["int4a8"] == ("int4a8", "q4_0") and FORMATS["fp32"] == (None, "f32")


def test_an_unknown_name_is_one_error_with_the_closest_name():
    with pytest.raises(ValueError, match=r"quantize must be one of fp32, bf16, int8, .*did you mean 'int4a8'"):
        QuantSpec.parse("int4a9")
    with pytest.raises(ExportError, match=r"gguf quantize must be one of f32, f16, q8_0, q4_0.*did you mean 'q4_0'"):
        format_quantize("gguf", "q4_1")
    with pytest.raises(ValueError, match=r"is a zoo format.*did you mean 'q8_0' \(the same weight bits\)"):
        _check_quantize("int8")
    with pytest.raises(ValueError, match="did you mean '8da4w'"):
        lookup("8da4", "pte")
    with pytest.raises(ValueError, match="unknown weight format 'int44'.*did you mean 'int4'"):
        check_formats(["int44"])


def test_eval_cli_refuses_an_unknown_name_with_a_suggestion(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--model", "m", "--data", "pydoc", "--quantize", "q4_1"])
    assert "did you mean 'q4_0'" in capsys.readouterr().err


def test_a_checkpoint_record_is_read_in_one_place():
    record = {"method": "int4_weight_only", "group_size": 32, "scheme": "symmetric"}
    spec = QuantSpec.from_checkpoint(
        {"quantization": record},
        {"quantization": '{"method": "int4_weight_only", "group_size": 32, "scheme": "symmetric", "act_bits": 16}'},
    )
    assert spec == QuantSpec.parse(record)  # the config.json's record wins where both agree
    assert QuantSpec.from_checkpoint(None, {"quantization": '{"method": "bf16"}'}) == QuantSpec("bf16")
    assert QuantSpec.from_checkpoint({"architecture": "x"}, {}) is None
    assert QuantSpec.from_checkpoint(argparse.Namespace(quantization={"method": "int8"})) == QuantSpec.parse("int8")
    with pytest.raises(QuantRecordMismatch, match="config.json records int8"):
        QuantSpec.from_checkpoint({"quantization": {"method": "int8"}}, {"quantization": '{"method": "bf16"}'})
    with pytest.raises(QuantRecordError, match="not a JSON object"):
        QuantSpec.from_checkpoint(None, {"quantization": "{"})


def test_parse_runs_once_per_create_model(monkeypatch, tmp_path):
    calls = []
    parse = QuantSpec.parse.__func__

    def counted(cls, *args, **kwargs):
        calls.append(args)
        return parse(cls, *args, **kwargs)

    monkeypatch.setattr(QuantSpec, "parse", classmethod(counted))
    model = zoo.create_model("mobilellm_125m", quantize="int4a8", **SMALL)
    assert len(calls) == 1 and model.quantization.act_bits == 8
    model.save_pretrained(tmp_path / "q")  # a folder of int4 codes, its record in config.json and the metadata
    calls.clear()
    loaded = zoo.create_model(str(tmp_path / "q"), quantize="int4a16")
    assert len(calls) == 1 and loaded.quantization.act_bits == 16
    calls.clear()
    zoo.create_model(str(tmp_path / "q"))
    assert calls == [(None,)]  # quantize= (none); the record is read by from_checkpoint, not parsed again


def test_the_head_and_the_projections_choose_their_kernel_in_one_place(monkeypatch):
    from torch import nn

    from zoo.lm import quant_layer

    model = zoo.create_model("mobilellm_125m", quantize="int8", **SMALL).eval()
    chosen = []
    choose = quant_layer.choose_kernel

    def spy(x, in_features, act_bits, codes_fit=True):
        chosen.append(choose(x, in_features, act_bits, codes_fit))
        return chosen[-1]

    monkeypatch.setattr(quant_layer, "choose_kernel", spy)
    h = torch.randn(1, 1, SMALL["hidden_size"])
    with torch.no_grad():
        model.logits(h)
        head = model.__dict__["_head_int8"]
        assert isinstance(head, quant_layer.QuantizedLinear) and len(chosen) == 1  # the head: a quantized layer
        assert head not in set(model.modules())  # not a submodule: the state dict keeps the float head
        projection = model.model.layers[0].self_attn.q_proj
        assert isinstance(projection, quant_layer.QuantizedLinear) and not isinstance(projection, nn.Linear)
        projection(h)
        assert len(chosen) == 2 and chosen[0] == chosen[1]  # one row, width 64: the same choice
        assert torch.equal(head(h), model.logits(h))
