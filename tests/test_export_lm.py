"""``pte``: the language models' compiled prefill + cached decode over a static KV cache.

Fast: the traced module (:class:`CachedDecoder`) decodes the same greedy tokens as ``model.generate`` for every
LM family and option that changes the cache (layer sharing, sliding windows, recursion, MoR routing of both kinds,
recursive KV sharing, LoRA, per-application norms), eagerly and as ``torch.export`` programs; what cannot decode
causally is refused. One AOTInductor export (a C++ compile, about 25 s on two cores) runs end to end, and its
packages are run by a Python that imports torch only. ``-m slow``: ExecuTorch (XNNPACK) and more AOTInductor
exports.
"""

import json
import subprocess
import sys

import pytest
import torch

import zoo
from zoo.export import ExportError
from zoo.export.lm_runtime import CachedDecoder, export_methods, load

SMALL = dict(
    vocab_size=128,
    num_hidden_layers=2,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
)
RECURSIVE = {**SMALL, "num_hidden_layers": 5}
PRO = {
    **SMALL,
    "num_hidden_layers": 3,
    "layer_types": ["full_attention", "sliding_attention", "full_attention"],
    "sliding_window": 4,
}
CASES = {
    "mobilellm": ("mobilellm_125m", SMALL),
    "mobilellm_ls": ("mobilellm_125m_ls", SMALL),
    "mobilellm_pro_window": ("mobilellm_pro_1b", PRO),
    "vanilla": ("vanilla_135m", RECURSIVE),
    "recursive": ("recursive_135m", RECURSIVE),
    "recursive_kv_share_lora_norms": (
        "recursive_135m",
        {**RECURSIVE, "kv_sharing": True, "lora_rank": 4, "ln_share": False},
    ),
    "mor_expert": ("mor_135m", RECURSIVE),
    "mor_expert_kv_share": ("mor_135m", {**RECURSIVE, "kv_sharing": True}),
    "mor_token_loss_free_kv_share": (
        "mor_135m",
        {**RECURSIVE, "mor": "token", "balancing": "loss_free", "kv_sharing": True},
    ),
}
PROMPT, NEW, MAX_LEN = 7, 12, 32


def _model(case: str):
    """A reduced model with weights moved off their init (so greedy tokens vary and routing mixes)."""
    name, kwargs = CASES[case]
    model = zoo.create_model(name, **kwargs).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
        if hasattr(model, "router_bias"):
            model.router_bias.copy_(torch.randn(model.router_bias.shape, generator=g))
    return model


def _prompt(vocab: int = 128) -> torch.Tensor:
    return torch.randint(0, vocab, (1, PROMPT), generator=torch.Generator().manual_seed(2))


def _greedy(step, prompt: torch.Tensor, new: int):
    """Greedy tokens and last-token logits from ``step(tokens, input_pos) -> (1, vocab)``."""
    logits = step(prompt, torch.tensor([0]))
    first, tokens = logits, []
    for i in range(new):
        tokens.append(int(logits.argmax(-1)))
        if i + 1 < new:
            logits = step(torch.tensor([[tokens[-1]]]), torch.tensor([prompt.shape[1] + i]))
    return tokens, first


def _eager(model, prompt):
    with torch.no_grad():
        out = model(prompt)
    return model.generate(prompt, max_new_tokens=NEW)[0, PROMPT:].tolist(), (
        out if isinstance(out, torch.Tensor) else out.logits
    )[:, -1]


@pytest.mark.parametrize("case", list(CASES))
def test_cached_decoder_decodes_as_generate(case):
    model, prompt = _model(case), _prompt()
    want, want_logits = _eager(model, prompt)
    decoder = CachedDecoder(model, MAX_LEN).eval()
    with torch.no_grad():
        got, logits = _greedy(decoder, prompt, NEW)
    assert got == want
    assert len(set(want)) > 1  # a varied continuation, not one repeated token
    assert (logits - want_logits).abs().max().item() < 1e-4
    if model.config.__class__.__name__ == "RecursiveConfig" and model.config.mor:  # routing took mixed decisions
        with torch.no_grad():
            routing = model(torch.cat([prompt, torch.tensor([want])], 1), return_routing=True).routing
        assert any(0 < r.float().mean() < 1 for r in routing)


@pytest.mark.parametrize("case", ["mobilellm_ls", "mor_expert_kv_share", "mor_token_loss_free_kv_share"])
def test_exported_methods_decode_as_generate(case):
    """The torch.export programs: prefill with a dynamic prompt length, decode of one token, the cache in their
    buffers (copied from prefill's to decode's here; the compiled artefacts hold one)."""
    model, prompt = _model(case), _prompt()
    want, want_logits = _eager(model, prompt)
    decoder = CachedDecoder(model, MAX_LEN).eval()
    spec = zoo.export.ExportSpec(name=CASES[case][0], task="text-generation", format="pte", max_seq_len=MAX_LEN)
    programs = export_methods(decoder, spec)
    prefill, decode = programs["prefill"].module(), programs["decode"].module()

    def step(tokens, pos):
        if tokens.shape[1] > 1:
            return prefill(tokens, pos)
        if int(pos) == PROMPT:  # the first decode step: decode's cache := prefill's
            for name, buf in decode.named_buffers():
                buf.copy_(prefill.get_buffer(name))
        return decode(tokens, pos)

    with torch.no_grad():
        got, logits = _greedy(step, prompt, NEW)
    assert got == want
    assert (logits - want_logits).abs().max().item() < 1e-4
    assert all(bool(b.any()) for n, b in decode.named_buffers() if n.startswith("valid_"))


def test_what_cannot_decode_causally_is_refused(tmp_path):
    topk = zoo.create_model("mor_135m", **RECURSIVE, inference_routing="topk").eval()
    with pytest.raises(ExportError, match="top-k"):
        zoo.export(topk, "pte", tmp_path / "a", backend="aoti")
    model = zoo.create_model("mobilellm_125m", **SMALL, max_position_embeddings=64).eval()
    with pytest.raises(ExportError, match="context length"):
        zoo.export(model, "pte", tmp_path / "b", max_seq_len=128, backend="aoti")
    with pytest.raises(ExportError, match="quantize"):
        zoo.export(model, "pte", tmp_path / "c", max_seq_len=32, quantize="int8", backend="aoti")
    with pytest.raises(ExportError, match="backend"):
        zoo.export(model, "pte", tmp_path / "d", max_seq_len=32, backend="tflite")


STANDALONE = """
import json, sys, torch
lm = torch._inductor.aoti_load_package(json.load(open("runtime.json"))["file"])
ids = torch.tensor([json.loads(sys.argv[1])])
logits, out = lm(ids, torch.tensor([0])), []
for i in range(int(sys.argv[2])):
    out.append(int(logits.argmax(-1)))
    logits = lm(torch.tensor([[out[-1]]]), torch.tensor([ids.shape[1] + i]))
assert not any(m == "zoo" or m.startswith("zoo.") for m in sys.modules)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_aoti_export_generates_as_eager(tmp_path):
    """The AOTInductor package (a compile: slow), checked, then run by a Python without zoo."""
    model, prompt = _model("mobilellm"), _prompt()
    result = zoo.export(model, "pte", tmp_path, max_seq_len=MAX_LEN, check=True, backend="aoti")
    assert result.files == ["decoder.pt2", "runtime.json"]
    assert result.check["ok"] and result.check["tokens_equal"], result.check
    report = json.loads((tmp_path / "export.json").read_text())
    assert report["check"]["tokens_equal"] and report["spec"]["options"]["backend"] == "aoti"
    assert "aoti_load_package" in (tmp_path / "README.md").read_text()

    want = model.generate(prompt, max_new_tokens=NEW)[0, PROMPT:].tolist()
    lm = load(tmp_path)
    assert lm.generate(prompt[0].tolist(), NEW) == want
    assert lm.generate(prompt, NEW) == want  # a second sequence reuses the cache
    one = prompt[:, :1]  # a one-token prompt after a longer sequence: the stale entries are masked out
    assert lm.generate(one, 3) == model.generate(one, max_new_tokens=3)[0, 1:].tolist()
    with pytest.raises(ValueError, match="compiled cache"):
        lm.generate(prompt, MAX_LEN)
    out = subprocess.run(
        [sys.executable, "-c", STANDALONE, json.dumps(prompt[0].tolist()), str(NEW)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == want


@pytest.mark.slow
@pytest.mark.parametrize("case", ["mobilellm_ls", "mor_expert"])
def test_aoti_export_more_families(tmp_path, case):
    result = zoo.export(_model(case), "pte", tmp_path, max_seq_len=MAX_LEN, check=True, backend="aoti")
    assert result.check["ok"], result.check


@pytest.mark.parametrize(
    "case",
    # ExecuTorch lowerings take 1-2.5 min each on 2 cores: -m slow (CI) runs the plain decoder, sliding windows and
    # MoR routing (the cache paths the plain decoder lacks); -m sweep (by hand): layer sharing and the vanilla
    # recursive stack, whose caches are the plain decoder's
    [pytest.param(c, marks=pytest.mark.slow) for c in ("mobilellm", "mobilellm_pro_window", "mor_expert")]
    + [pytest.param(c, marks=[pytest.mark.slow, pytest.mark.sweep]) for c in ("mobilellm_ls", "vanilla")],
)
def test_executorch_export_generates_as_eager(tmp_path, case):
    # executorch is in the export extra (part of dev): a missing install fails here rather than skipping
    model, prompt = _model(case), _prompt()
    result = zoo.export(model, "pte", tmp_path, max_seq_len=MAX_LEN, check=True, backend="executorch")
    assert result.files == ["model.pte", "runtime.json"]
    assert result.check["ok"], result.check
    want = model.generate(prompt, max_new_tokens=NEW)[0, PROMPT:].tolist()
    lm = load(tmp_path)
    assert lm.generate(prompt, NEW) == want
    assert lm.generate(prompt[:, :1], 3) == model.generate(prompt[:, :1], max_new_tokens=3)[0, 1:].tolist()
