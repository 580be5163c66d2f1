"""transformers' Auto classes load every zoo LM folder after ``import zoo`` (zoo.export.hf_auto, zoo.export.hf_hook).

Each folder is written the way the zoo publishes (``zoo.publish.export_pretrained``: the family's own format), read
back with ``AutoConfig`` / ``AutoModelForCausalLM`` (no remote code) and checked against the zoo model: the same
logits, and ``generate(..., do_sample=False)`` gives the zoo's own greedy tokens. The weights are spread wider than
the init so that every layer, window and routing decision moves the logits.
"""

import json
import subprocess
import sys
import textwrap

import pytest
import small_lms
import torch
import transformers  # the dev extra (>= 5): a missing install fails, it does not skip
from tolerances import assert_float32_close, in_float64

import zoo  # noqa: E402
from zoo.export import hf_auto  # noqa: E402
from zoo.models.mobilellm import pro_layer_types  # noqa: E402
from zoo.publish import export_pretrained  # noqa: E402

pytestmark = pytest.mark.export

AutoConfig, AutoModelForCausalLM = transformers.AutoConfig, transformers.AutoModelForCausalLM

# tests/small_lms.py's SMALL with 128 tokens: transformers leaves the weights it loads where safetensors' mmap puts
# them (8 bytes past a 64-byte line here), and at SMALL's own 96 the MoR case's matmuls over such weights round a
# last bit otherwise than the zoo's over its own (copied to aligned memory, the two agree), which the bit-for-bit
# checks below would report
SMALL = dict(small_lms.SMALL, vocab_size=128)

PRO = dict(
    SMALL, num_hidden_layers=3, layer_types=pro_layer_types(3), sliding_window=4, max_position_embeddings=256
)  # layers: global, local (window 4), global
RECURSIVE = dict(SMALL, num_hidden_layers=5)  # middle_cycle, 3 recursions: 1 shared block between unique ends

CASES = {
    "ls": ("mobilellm_125m_ls", SMALL, "mobilellm", hf_auto.MobileLLMForCausalLM),
    "pro_untied": ("mobilellm_pro_1b", dict(PRO, tie_word_embeddings=False), "mobilellm", hf_auto.MobileLLMForCausalLM),
    "mor": ("mor_135m", RECURSIVE, "zoo_recursive", hf_auto.RecursiveLMForCausalLM),
    "mor_token_loss_free": (
        "mor_135m",
        dict(RECURSIVE, mor="token", balancing="loss_free"),
        "zoo_recursive",
        hf_auto.RecursiveLMForCausalLM,
    ),
    # the zoo's int8 / int4 codes: the classes build the quantized layers (quantization_config: quant_method "zoo")
    "int8": ("mobilellm_125m", dict(SMALL, quantize="int8"), "mobilellm", hf_auto.MobileLLMForCausalLM),
    "int4_mor": ("mor_135m", dict(RECURSIVE, quantize="int4"), "zoo_recursive", hf_auto.RecursiveLMForCausalLM),
    "recursive_kv_shared_lora": (
        "recursive_135m",
        dict(RECURSIVE, kv_sharing=True, lora_rank=4, ln_share=False),
        "zoo_recursive",
        hf_auto.RecursiveLMForCausalLM,
    ),
}


@torch.no_grad()
def _spread(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights well away from the init (matrices ~ 1.5 / sqrt(fan-in), norms ~ 1, routers' biases random)."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        noise = torch.randn(p.shape, generator=g)
        p.copy_(noise * 1.5 / p.shape[-1] ** 0.5 if p.ndim >= 2 else 1 + 0.2 * noise)
    for b in model.buffers():
        if b.is_floating_point():
            b.copy_(torch.randn(b.shape, generator=g))
    return model.eval()


def _prompts(vocab: int = SMALL["vocab_size"]):
    """Two prompts of 7 tokens, the second left-padded by 2."""
    ids = torch.randint(3, vocab, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    ids[1, :2] = 0
    return ids, mask


def _export(name, kwargs, folder):
    model = _spread(zoo.create_model(name, **kwargs))
    export_pretrained(model, folder, model_kwargs=kwargs, latency_runs=0)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_auto_classes_load_zoo_folders_with_zoo_logits_and_greedy_tokens(case, tmp_path):
    name, kwargs, model_type, model_class = CASES[case]
    model = _export(name, kwargs, tmp_path)
    on_disk = json.loads((tmp_path / "config.json").read_text())
    assert on_disk["model_type"] == model_type and on_disk["architectures"] == [model_class.__name__]

    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is model_class.config_class and config.architecture == name
    assert config.to_zoo_config() == model.config

    hf = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(hf) is model_class and not hf.training
    assert hf.state_dict().keys() == model.state_dict().keys()
    ids, mask = _prompts()
    with torch.no_grad():
        zoo_logits = model(ids)
        zoo_logits = zoo_logits if isinstance(zoo_logits, torch.Tensor) else zoo_logits.logits
        out = hf(ids)
    assert torch.equal(out.logits, zoo_logits) and out.past_key_values is None

    eos = model.config.eos_token_id
    expected = model.generate(ids[:1], 8, eos_token_id=eos)
    assert torch.equal(hf.generate(ids[:1], max_new_tokens=8, do_sample=False), expected)
    # a left-padded batch: zoo's and transformers' generate agree on positions and masks
    expected = model.generate(ids, 8, attention_mask=mask, eos_token_id=eos, pad_token_id=0)
    got = hf.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(got, expected)


def test_generation_without_cache_beams_loss_and_zoo_cache(tmp_path):
    name, kwargs, _, _ = CASES["pro_untied"]
    model = _export(name, kwargs, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids, _ = _prompts()
    ids = ids[:1]
    expected = model.generate(ids, 8)
    assert torch.equal(hf.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False), expected)
    beams = hf.generate(ids, max_new_tokens=4, do_sample=False, num_beams=2)  # beams recompute (no cache to reorder)
    assert beams.shape == (1, 11) and torch.equal(beams[:, :7], ids)

    # forward with the zoo's cache: prefill + one cached step equal the full recompute
    cache = hf_auto.ZooCache(hf.zoo_model.new_cache(1, 16))
    with torch.no_grad():
        first = hf(ids, past_key_values=cache, use_cache=True)
        step = hf(expected[:, 7:8], past_key_values=first.past_key_values, use_cache=True)
        full = hf(expected[:, :8]).logits
        full64 = in_float64(hf.zoo_model)(expected[:, :8])
    assert first.past_key_values is cache and cache.get_seq_length() == 8
    # the cached step differs from the recompute in float32 summation order only (4x the recompute's own error)
    assert_float32_close(step.logits[:, -1], full[:, -1], full64[:, -1], msg="cached step")

    labels = ids.clone()
    loss = hf(ids, labels=labels).loss
    with torch.no_grad():
        logits, logits64 = model(ids), in_float64(model)(ids)
    reference = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:])
    reference64 = torch.nn.functional.cross_entropy(logits64[0, :-1], labels[0, 1:])
    assert_float32_close(loss.detach(), reference, reference64, msg="loss")  # 4x the reference's own float32 error
    with pytest.raises(ValueError, match="zoo model's own cache"):
        hf(ids, past_key_values=transformers.DynamicCache())


def test_transformers_save_pretrained_round_trips_to_transformers_and_zoo(tmp_path):
    name, kwargs, _, _ = CASES["mor"]
    model = _export(name, kwargs, tmp_path / "zoo")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "zoo")
    hf.save_pretrained(tmp_path / "hf")
    ids, _ = _prompts()
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    back = zoo.create_model(tmp_path / "hf", pretrained=True).eval()
    with torch.no_grad():
        expected = model(ids)
        assert torch.equal(again(ids).logits, expected) and torch.equal(back(ids), expected)


def test_llama_compatible_mobilellm_stays_a_stock_llama_folder(tmp_path):
    model = _export("mobilellm_125m", SMALL, tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is transformers.LlamaConfig
    hf = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(hf) is transformers.LlamaForCausalLM
    ids, _ = _prompts()
    with torch.no_grad():
        # transformers' Llama against the zoo's: within 4x the zoo's own float32 error against float64
        assert_float32_close(hf(ids).logits, model(ids), in_float64(model)(ids), msg="Llama")
    assert torch.equal(
        hf.generate(ids[:1], max_new_tokens=8, do_sample=False), model.generate(ids[:1], 8, eos_token_id=2)
    )


def test_registration_is_idempotent_and_leaves_taken_names_alone(monkeypatch, caplog):
    assert hf_auto.register() == ["mobilellm", "zoo_recursive"] == hf_auto.register()

    class TakenConfig(hf_auto.ZooMobileLLMConfig):
        model_type = "llama"  # a name transformers owns

    class TakenModel(hf_auto.MobileLLMForCausalLM):
        config_class = TakenConfig

    monkeypatch.setattr(hf_auto, "MODEL_TYPES", {"llama": (TakenConfig, TakenModel)})
    with caplog.at_level("WARNING", logger=hf_auto.__name__):
        assert hf_auto.register() == ["mobilellm", "zoo_recursive"]  # a warning, no error, nothing replaced
    assert "already registered" in caplog.text
    assert AutoConfig.for_model("llama").__class__ is transformers.LlamaConfig
    assert type(AutoConfig.for_model("mobilellm", **SMALL)) is hf_auto.ZooMobileLLMConfig


@pytest.mark.slow  # a fresh interpreter importing torch and transformers: about 12 s
def test_import_zoo_stays_light_and_registers_when_the_auto_api_loads():
    """A fresh interpreter: ``import zoo`` imports no transformers; its Auto API, when imported, finds the zoo."""
    code = textwrap.dedent(
        """
        import sys
        import zoo
        assert "transformers" not in sys.modules and zoo.export.hf_hook.installed()
        import transformers
        assert "zoo.export.hf_auto" not in sys.modules  # the bare package: nothing registered yet
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
        from zoo.export import hf_auto
        assert not zoo.export.hf_hook.installed()
        assert type(AutoConfig.for_model("zoo_recursive")) is hf_auto.ZooRecursiveConfig
        assert MODEL_FOR_CAUSAL_LM_MAPPING[hf_auto.ZooMobileLLMConfig] is hf_auto.MobileLLMForCausalLM
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
