"""``pte``: the language models' compiled prefill + cached decode over a static KV cache.

Fast: the traced module (:class:`CachedDecoder`) decodes the same greedy tokens as ``model.generate`` for every
LM family and option that changes the cache (layer sharing, sliding windows, recursion, MoR routing of both kinds,
recursive KV sharing, LoRA, per-application norms), eagerly and as ``torch.export`` programs; what cannot decode
causally is refused. One AOTInductor export (a C++ compile, about 25 s on two cores) runs end to end, and its
packages are run by a Python that imports torch only. ``-m slow``: ExecuTorch (XNNPACK) and more AOTInductor
exports.
"""

import copy
import json
import subprocess
import sys

import pytest
import torch
from small_lms import SMALL

import zoo
from zoo.cli import main as zoo_main
from zoo.export import ExportError
from zoo.export.lm_runtime import (
    CachedDecoder,
    CompiledLM,
    export_methods,
    file_size_check,
    load,
    load_llm_ops,
    tied_head_bytes,
    weight_bytes,
)
from zoo.export.xnnpack_quant import Int8Embedding, quantize_for_xnnpack, stack_linears
from zoo.lm.decoder import GenerationConfig, generate_on_session
from zoo.lm.quant import QuantSpec, quantize_model, unpack_int4

pytestmark = pytest.mark.export

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


def _prompt(vocab: int = SMALL["vocab_size"]) -> torch.Tensor:
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
    # the modules' own ops; the ones the executorch export lowers; and those with ExecuTorch's LLM operators for
    # the causal slots' cache writes and attention
    for delegate_ops, llm_ops in ((False, False), (True, False), (True, load_llm_ops())):
        decoder = CachedDecoder(model, MAX_LEN, delegate_ops=delegate_ops, llm_ops=llm_ops).eval()
        with torch.no_grad():
            got, logits = _greedy(decoder, prompt, NEW)
        assert got == want, (delegate_ops, llm_ops)
        assert (logits - want_logits).abs().max().item() < 1e-4
    assert len(set(want)) > 1  # a varied continuation, not one repeated token
    if model.config.__class__.__name__ == "RecursiveConfig" and model.config.mor:  # routing took mixed decisions
        with torch.no_grad():
            routing = model(torch.cat([prompt, torch.tensor([want])], 1), return_routing=True).routing
        assert any(0 < r.float().mean() < 1 for r in routing)


def _chunked_lm(decoder, chunk: int, min_tokens: int, calls: list) -> CompiledLM:
    """A CompiledLM whose prompt method (``chunk`` tokens) and one-token method are ``decoder`` itself, recording
    each call as (method, tokens, position)."""

    def method(name):
        def run(inputs):
            tokens, pos = inputs
            assert tokens.shape[1] == (chunk if name == "prefill" else 1)  # the static methods' shapes
            calls.append((name, tokens[0].tolist(), int(pos)))
            return [decoder(tokens, pos)]

        return run

    lm = CompiledLM.__new__(CompiledLM)
    lm.info = {"prompt": "chunk", "prompt_chunk": chunk, "chunk_min_tokens": min_tokens}
    lm.max_seq_len, lm.vocab_size, lm.position = decoder.max_seq_len, decoder.lm.config.vocab_size, 0
    lm.generation_config = GenerationConfig()
    lm._methods = {m: method(m) for m in ("prefill", "decode")}
    return lm


def test_compiled_lm_prompt_chunks():
    """CompiledLM.prefill over a prompt method of 8 tokens and a one-token method: whole chunks, a short rest token
    by token, a longer rest as an overlapping last chunk, a prompt shorter than a chunk padded (its last token
    alone). Every way gives eager's logits, and the cache it leaves decodes as eager."""
    model = _model("mobilellm")
    decoder = CachedDecoder(model, MAX_LEN).eval()
    ids = torch.randint(0, SMALL["vocab_size"], (1, 24), generator=torch.Generator().manual_seed(5))
    calls = []
    lm = _chunked_lm(decoder, 8, 3, calls)
    t = ids[0].tolist()
    plans = {  # prompt length -> the calls (method, first token position, length)
        1: [("decode", 0, 1)],
        2: [("decode", 0, 1), ("decode", 1, 1)],
        5: [("prefill", 0, 8), ("decode", 4, 1)],
        8: [("prefill", 0, 8)],
        9: [("prefill", 0, 8), ("decode", 8, 1)],
        13: [("prefill", 0, 8), ("prefill", 5, 8)],
        16: [("prefill", 0, 8), ("prefill", 8, 8)],
        23: [("prefill", 0, 8), ("prefill", 8, 8), ("prefill", 15, 8)],
    }
    for n, plan in plans.items():
        calls.clear()
        with torch.no_grad():
            logits = lm.prefill(ids[:, :n])
            want = _logits_of(model, ids[:, :n])[:, -1]
        assert [(m, pos, len(tokens)) for m, tokens, pos in calls] == plan, n
        for m, tokens, pos in calls:  # the prompt's own tokens at their positions; a short prompt's padding last
            real = t[pos : min(pos + len(tokens), n - 1 if n < 8 and m == "prefill" else n)]
            assert tokens[: len(real)] == real and not any(tokens[len(real) :]), (n, m, pos)
        assert (logits - want).abs().max().item() < 1e-4, n
        with torch.no_grad():  # the cache left behind (stale entries past the prompt included) decodes as eager
            assert (
                lm.generate(ids[:, :n], 4)[0, n:].tolist()
                == model.generate(ids[:, :n], max_new_tokens=4)[0, n:].tolist()
            )


@pytest.mark.parametrize(
    "case",
    # every case under slow (4-8 s each: an export): outside the 4-minute default run
    [
        pytest.param(c, marks=pytest.mark.slow)
        for c in ("mobilellm_ls", "mor_expert_kv_share", "mor_token_loss_free_kv_share")
    ],
)
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


def test_llm_ops_take_the_slots_that_write_their_own_cache():
    """ExecuTorch's ``update_cache`` writes the slots whose applications write their own cache with the layer's own
    projections (sliding windows included: their mask is additive), in its layout ``(kv_heads, S, 1, D)``, their
    layers' query/key/value projections stacked; routed slots, shared keys/values and LoRA keep the masked form."""
    assert load_llm_ops()  # executorch (the export extra, part of dev) ships them
    layout = {}
    for case in ("mobilellm", "mobilellm_pro_window", "mor_expert", "recursive_kv_share_lora_norms"):
        decoder = CachedDecoder(_model(case), MAX_LEN, delegate_ops=True, llm_ops=True)
        masked = {a.slot for a in decoder.apps if a.reads_shared or a.lora is not None} | set(decoder.routed_slots)
        assert decoder.llm_slots == set(range(decoder.num_slots)) - masked
        for slot in range(decoder.num_slots):
            size = tuple(decoder.get_buffer(f"k_cache_{slot}").shape)
            assert size == ((2, MAX_LEN, 1, 16) if slot in decoder.llm_slots else (1, 2, MAX_LEN, 16)), (case, slot)
        layout[case] = (len(decoder.llm_slots), decoder.num_slots)
        blocks = {decoder._block[i] for i, a in enumerate(decoder.apps) if a.slot in decoder.llm_slots}
        assert set(decoder.fused) == blocks, case
    assert layout["mobilellm"] == (2, 2)
    assert layout["mobilellm_pro_window"] == (3, 3)
    assert 0 < layout["mor_expert"][0] < layout["mor_expert"][1]  # the routed recursion keeps its validity mask
    assert 0 < layout["recursive_kv_share_lora_norms"][0] < layout["recursive_kv_share_lora_norms"][1]
    with pytest.raises(ExportError, match="delegate_ops"):
        CachedDecoder(_model("mobilellm"), MAX_LEN, llm_ops=True)


@pytest.mark.parametrize("quantize", [None, "8da4w", "8da8w"])
def test_stacked_linear_layers_compute_what_the_layers_do(quantize):
    """One product for a layer's query/key/value projections: the rows of float or torchao-quantized weights
    (codes, scales and zero points) stacked give each layer's outputs side by side, to the bit."""
    model = zoo.create_model("mobilellm_125m", **SMALL).eval()
    if quantize:
        model = quantize_for_xnnpack(model, quantize)
    attn = model.model.layers[0].self_attn
    layers = [attn.q_proj, attn.k_proj, attn.v_proj]
    stacked = stack_linears(layers)
    x = torch.randn(1, 5, SMALL["hidden_size"])
    with torch.no_grad():
        want = torch.cat([layer(x) for layer in layers], dim=-1)
        assert torch.equal(stacked(x), want)
    assert type(stacked.weight) is type(attn.q_proj.weight)
    # float rows beside quantized ones (or the other way round) cannot be one product
    other = quantize_for_xnnpack(model, "8da4w") if not quantize else zoo.create_model("mobilellm_125m", **SMALL)
    with pytest.raises(ExportError, match="different kinds"):
        stack_linears([attn.q_proj, other.model.layers[0].self_attn.k_proj])


def test_a_program_that_needs_the_llm_ops_says_so_where_they_are_missing(tmp_path, monkeypatch):
    from zoo.export import lm_runtime

    info = {"backend": "executorch", "file": "model.pte", "methods": {"prefill": "forward", "decode": "forward"}}
    info.update(max_seq_len=32, vocab_size=128, llm_ops=True, executorch_version="1.5.1")
    (tmp_path / "runtime.json").write_text(json.dumps(info))
    (tmp_path / "model.pte").write_bytes(b"not read")
    monkeypatch.setattr(lm_runtime, "load_llm_ops", lambda: False)
    with pytest.raises(RuntimeError, match=r"LLM operator .*install the executorch release it was exported with"):
        load(tmp_path)


def test_what_cannot_decode_causally_is_refused(tmp_path):
    topk = zoo.create_model("mor_135m", **RECURSIVE, inference_routing="topk").eval()
    with pytest.raises(ExportError, match="top-k"):
        zoo.export(topk, "pte", tmp_path / "a", backend="aoti")
    with pytest.raises(ExportError, match="top-k routing .* cannot be exported"):  # a size torch.export cannot bound
        zoo.export(topk, "pt2", tmp_path / "topk_pt2")
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
    assert lm.generate(prompt[0].tolist(), NEW)[0, PROMPT:].tolist() == want
    assert lm.generate(prompt, NEW)[0, PROMPT:].tolist() == want  # a second sequence reuses the cache
    one = prompt[:, :1]  # a one-token prompt after a longer sequence: the stale entries are masked out
    assert lm.generate(one, 3)[0, 1:].tolist() == model.generate(one, max_new_tokens=3)[0, 1:].tolist()
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


@pytest.mark.slow  # MoR's routed cache; layer sharing (whose cache is the plain decoder's) by hand (-m sweep)
@pytest.mark.parametrize("case", [pytest.param("mobilellm_ls", marks=pytest.mark.sweep), "mor_expert"])
def test_aoti_export_more_families(tmp_path, case):
    result = zoo.export(_model(case), "pte", tmp_path, max_seq_len=MAX_LEN, check=True, backend="aoti")
    assert result.check["ok"], result.check


@pytest.mark.parametrize(
    "case",
    # ExecuTorch lowerings take 10-30 s each on 2 cores: -m slow (CI) runs the plain decoder (a one-token method
    # beside prompt methods of 4 tokens, and one method of any length), sliding windows and MoR routing (the cache
    # paths the plain decoder lacks; both with the default prompt method of 32 tokens); -m sweep (by hand): the plain
    # decoder at that default, layer sharing and the vanilla recursive stack, whose caches are the plain decoder's
    [
        pytest.param(c, marks=pytest.mark.slow)
        for c in ("mobilellm:prompt_chunk=4", "mobilellm:dynamic_prompt", "mobilellm_pro_window", "mor_expert")
    ]
    + [pytest.param(c, marks=[pytest.mark.slow, pytest.mark.sweep]) for c in ("mobilellm", "mobilellm_ls", "vanilla")],
)
def test_executorch_export_generates_as_eager(tmp_path, case):
    # executorch is in the export extra (part of dev): a missing install fails here rather than skipping
    case, _, option = case.partition(":")
    model, prompt = _model(case), _prompt()
    name, _, value = option.partition("=")
    options = {name: int(value) if value else True} if option else {}
    result = zoo.export(model, "pte", tmp_path, max_seq_len=MAX_LEN, check=True, backend="executorch", **options)
    assert result.files == ["model.pte", "runtime.json"]
    assert result.check["ok"], result.check
    info = json.loads((tmp_path / "runtime.json").read_text())
    chunk = options.get("prompt_chunk", MAX_LEN)  # the default, 32, is this cache's length
    assert info["prompt"] == ("whole" if name == "dynamic_prompt" else "chunk")
    assert info.get("prompt_chunk") == (None if name == "dynamic_prompt" else chunk)
    assert info["methods"] == {"prefill": "forward" if name == "dynamic_prompt" else "prefill", "decode": "forward"}
    assert info["llm_ops"] == bool(CachedDecoder(model, MAX_LEN, delegate_ops=True, llm_ops=True).llm_slots)
    want = model.generate(prompt, max_new_tokens=NEW)[0, PROMPT:].tolist()
    lm = load(tmp_path)
    assert lm.generate(prompt, NEW)[0, PROMPT:].tolist() == want
    # one token; prompt_chunk=4: a prompt shorter than a chunk (padded), one of chunks (the 7 above: a chunk and an
    # overlapping last one), and after a longer sequence (its stale cache entries masked out)
    for n in (1, 2, 4):
        want = model.generate(prompt[:, :n], max_new_tokens=3)[0, n:].tolist()
        assert lm.generate(prompt[:, :n], 3)[0, n:].tolist() == want, n


# ------------------------------------------------------------------------------------------------------------------
# Quantized pte (8da4w / 8da8w) and CompiledLM's generation
# ------------------------------------------------------------------------------------------------------------------


def _logits_of(model, ids):
    with torch.no_grad():
        out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits


@pytest.mark.parametrize("quantize, bits, group_size", [("8da4w", 4, 32), ("8da4w", 4, 0), ("8da8w", 8, 32)])
def test_quantize_for_xnnpack_weights(quantize, bits, group_size):
    model, prompt = _model("mobilellm"), _prompt()
    lm = quantize_for_xnnpack(model, quantize, group_size)
    q_proj = lm.model.layers[0].self_attn.q_proj.weight
    assert q_proj.target_dtype == getattr(torch, f"int{bits}") and q_proj.activation_quantization is not None
    assert q_proj.block_size == ((1, 32) if bits == 4 and group_size else (1, 64))  # 0: one scale per row
    down = lm.model.layers[0].mlp.down_proj.weight  # per row: each layer's own input width
    assert down.block_size == ((1, 32) if bits == 4 and group_size else (1, down.shape[1]))
    assert int(q_proj.qdata.min()) >= -(2 ** (bits - 1)) and int(q_proj.qdata.max()) <= 2 ** (bits - 1) - 1
    head = lm.lm_head.weight  # the tied head as its own int8 matrix; the embedding as int8 rows
    assert head.target_dtype == torch.int8 and isinstance(lm.model.embed_tokens, Int8Embedding)
    assert lm.model.embed_tokens.codes.dtype == torch.int8
    assert model.lm_head is None and model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32  # a copy
    # every weight within half a step of its float value (the step: its group's or row's scale)
    w = model.model.layers[0].self_attn.q_proj.weight
    step = q_proj.scale.repeat_interleave(q_proj.block_size[1], dim=1)
    assert bool(((q_proj.dequantize() - w).abs() <= step / 2 + 1e-6).all())
    # logits at init scale (the perturbed test weights amplify rounding without bound): 7-9% and 1% here; a wrong
    # layout or grid gives 100% and more
    torch.manual_seed(0)
    plain = zoo.create_model("mobilellm_125m", **SMALL).eval()
    want, got = _logits_of(plain, prompt), _logits_of(quantize_for_xnnpack(plain, quantize, group_size), prompt)
    rel = (got - want).abs().max() / want.abs().max()
    assert 0 < rel < (0.15 if bits == 4 else 0.02), rel
    # its bytes: int4 codes + a float32 scale per 32 (or int8 + one per row), int8 head and embedding
    floats = weight_bytes(model)
    assert weight_bytes(lm) < floats * (0.4 if bits == 4 else 0.45)
    with pytest.raises(ExportError, match="group_size"):
        quantize_for_xnnpack(model, quantize, -1)


def test_quantize_for_xnnpack_keeps_a_zoo_models_own_grid():
    """Symmetric int4 (MobileLLM-Pro's QAT form) and int8 zoo codes are stored as they are, not re-quantized."""
    model = _model("mobilellm")
    qat = quantize_model(copy.deepcopy(model), QuantSpec("int4_weight_only", 32, "symmetric"))
    lm = quantize_for_xnnpack(qat, "8da4w")
    zoo_layer, weight = qat.model.layers[1].mlp.down_proj, lm.model.layers[1].mlp.down_proj.weight
    assert torch.equal(weight.qdata, (unpack_int4(zoo_layer.codes()).to(torch.int16) - 8).to(torch.int8))
    assert torch.equal(weight.scale, zoo_layer.scale.float())
    assert torch.equal(weight.dequantize(), zoo_layer.dequantize())
    int8 = quantize_model(copy.deepcopy(model), "int8")
    lm8 = quantize_for_xnnpack(int8, "8da8w")
    assert torch.equal(lm8.model.layers[0].self_attn.o_proj.weight.qdata, int8.model.layers[0].self_attn.o_proj.qweight)
    with pytest.raises(ExportError, match="asymmetric"):
        quantize_for_xnnpack(quantize_model(copy.deepcopy(model), "int4"), "8da4w")
    with pytest.raises(ExportError, match="8da8w"):
        quantize_for_xnnpack(int8, "8da4w")
    with pytest.raises(ExportError, match="group_size"):
        quantize_for_xnnpack(model, "8da4w", group_size=48)
    with pytest.raises(ExportError, match="backend='executorch'"):
        zoo.export(model, "pte", "unused", max_seq_len=MAX_LEN, quantize="8da4w", backend="aoti")


def test_file_size_check():
    info = {"file_bytes": 10_500_000, "weight_bytes": 9_000_000, "cache_bytes": 1_000_000}
    assert file_size_check(info)["ok"]
    assert not file_size_check({**info, "file_bytes": 14_000_000})["ok"]  # e.g. a float copy of a matrix
    assert not file_size_check({"file_bytes": 1})["ok"]  # nothing recorded to hold it to
    # a tied float embedding is held twice (the lookup's rows, XNNPACK's head): counted, and only once more
    tied = {**info, "file_bytes": 14_000_000, "tied_head_bytes": 4_000_000}
    assert file_size_check(tied)["ok"] and file_size_check(tied)["tied_head_bytes"] == 4_000_000
    assert not file_size_check({**tied, "file_bytes": 18_000_000})["ok"]


def test_tied_head_bytes_counts_a_tied_float_embedding_only():
    tied = zoo.create_model("mor_135m", **RECURSIVE)
    assert tied_head_bytes(tied) == tied.model.embed_tokens.weight.numel() * 4
    assert tied_head_bytes(zoo.create_model("mobilellm_125m", **SMALL, tie_word_embeddings=False)) == 0
    assert tied_head_bytes(quantize_for_xnnpack(tied, "8da8w")) == 0  # two int8 matrices, in weight_bytes


@pytest.mark.slow  # an ExecuTorch lowering of a model whose embedding is larger than the check's slack (~1 min)
@pytest.mark.parametrize(  # MoR's recursions share their blocks: the plain decoder's case by hand (-m sweep)
    "name", ["mor_135m", pytest.param("mobilellm_125m", marks=pytest.mark.sweep)]
)
def test_a_float_pte_holds_each_weight_once_and_the_tied_embedding_twice(name, tmp_path):
    dims = dict(SMALL, vocab_size=2048, hidden_size=256, intermediate_size=512, num_attention_heads=4)
    dims["num_hidden_layers"] = 5 if name.startswith("mor") else 3
    model = zoo.create_model(name, **dims).eval()
    result = zoo.export(model, "pte", tmp_path, max_seq_len=32, check=True, backend="executorch")
    size = result.check["size"]
    assert size["ok"] and size["tied_head_bytes"] == 2048 * 256 * 4 > 1 << 20  # above the megabyte of slack
    # a shared block is stored once however often it runs: the file is the weights, the embedding's second copy and
    # the program (never a block per application: 2.4 MB each here)
    assert (
        size["weight_bytes"] + size["tied_head_bytes"]
        < size["file_bytes"]
        < 1.03 * (size["weight_bytes"] + size["tied_head_bytes"])
    )


# every LM family's cache-free forward as a torch.export program and as ONNX (the docs' pt2 / onnx rows), routing
# included: MoR gathers a data-dependent number of tokens per step, which the traced program holds as T slots
PROGRAM_CASES = [  # 8-30 s each on two cores: under -m slow (the default run exports each family's cached decoder,
    # tests/models/test_lm_models.py::test_torch_export_smoke) one case of each structure in each format; the other
    # routing and sharing mixes under -m sweep
    pytest.param(case, fmt, marks=pytest.mark.slow)
    for case, fmt in [
        ("mor_expert", "pt2"),
        ("mor_token_loss_free_kv_share", "onnx"),
        ("recursive_kv_share_lora_norms", "pt2"),
        ("mobilellm_pro_window", "pt2"),
        ("mobilellm_ls", "onnx"),
    ]
] + [
    pytest.param(case, fmt, marks=[pytest.mark.slow, pytest.mark.sweep])
    for case, fmt in [
        ("mor_token_loss_free_kv_share", "pt2"),
        ("mor_expert_kv_share", "onnx"),
        ("mor_expert", "onnx"),
        ("mor_expert_kv_share", "pt2"),
    ]
]


@pytest.mark.parametrize("case, fmt", PROGRAM_CASES)
def test_every_lm_family_exports_a_program_of_its_forward(case, fmt, tmp_path):
    model = _model(case)
    ids = torch.randint(0, SMALL["vocab_size"], (3, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(ids, return_routing=True) if "mor" in case else None
    if out is not None:  # the check's inputs route a real, uneven subset (the padded slots are exercised)
        counts = torch.stack([m.sum(1) for m in out.routing[1:]])
        assert (counts < 12).any() and (counts > 0).any()
    result = zoo.export(model, fmt, tmp_path, max_seq_len=MAX_LEN, check=True)
    assert result.check["ok"], result.check
    if fmt == "pt2":  # another batch and length than the check's, through the saved program
        program = torch.export.load(tmp_path / "model.pt2").module()
        with torch.no_grad():
            want = model(ids)
            want = want if isinstance(want, torch.Tensor) else want.logits
            torch.testing.assert_close(program(ids), want, rtol=1e-4, atol=1e-4)


class _EagerSession:
    """The session protocol over a zoo model's cache-free forward: what CompiledLM gives generate_on_session."""

    def __init__(self, model):
        self.model, self.ids = model, []

    def prefill(self, ids):
        self.ids = list(ids)
        return _logits_of(self.model, torch.tensor([self.ids]))[0, -1]

    def step(self, token):
        self.ids.append(token)
        return _logits_of(self.model, torch.tensor([self.ids]))[0, -1]


class _Recorder:
    """A streamer that records what it is given."""

    def __init__(self):
        self.seen = []

    def put(self, ids):
        self.seen.append(torch.as_tensor(ids).reshape(-1).tolist())

    def end(self):
        self.seen.append("end")


def _first_new(tokens: list[int]) -> int:
    """The first step after the first whose token was not made before (a stop id that ends the sequence there)."""
    return next(i for i, t in enumerate(tokens) if i > 0 and t not in tokens[:i])


def test_generate_on_session_samples_stops_and_streams_as_generate():
    model, prompt = _model("mobilellm"), _prompt()
    vocab, base = model.config.vocab_size, model.generation_config
    settings = dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.2, min_new_tokens=2)
    want = model.generate(prompt, max_new_tokens=10, generator=torch.Generator().manual_seed(5), **settings)
    got = generate_on_session(
        _EagerSession(model), prompt, vocab, base, 10, generator=torch.Generator().manual_seed(5), **settings
    )
    assert torch.equal(got, want)
    greedy = model.generate(prompt, max_new_tokens=NEW)[0, PROMPT:].tolist()
    at = _first_new(greedy)
    streamer = _Recorder()
    got = generate_on_session(
        _EagerSession(model), prompt, vocab, base, NEW, eos_token_id=greedy[at], streamer=streamer
    )
    assert got[0, PROMPT:].tolist() == greedy[: at + 1]  # ends at the stop id
    assert streamer.seen[0] == prompt[0].tolist() and streamer.seen[-1] == "end" and len(streamer.seen) == at + 3
    with pytest.raises(ValueError, match="temperature"):
        generate_on_session(_EagerSession(model), prompt, vocab, base, 4, do_sample=True, temperature=0.0)


@pytest.mark.slow
def test_executorch_8da4w_export_samples_streams_and_runs_from_the_cli(tmp_path, capsys):
    """The quantized artefact: checked against the same quantized weights in torchao (logits within 5%), its size
    against its weights' bytes; CompiledLM samples reproducibly, stops and streams; ``zoo run FOLDER`` runs it."""
    torch.manual_seed(0)
    model, prompt = zoo.create_model("mobilellm_125m", **SMALL).eval(), _prompt()
    with torch.no_grad():  # off the init (whose greedy continuation repeats one token), milder than _model's
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.08)
    result = zoo.export(model, "pte", tmp_path, max_seq_len=MAX_LEN, quantize="8da4w", check=True)
    assert result.check["ok"], result.check
    assert result.check["size"]["ok"] and result.check["size"]["ratio"] > 0.5, result.check["size"]
    info = json.loads((tmp_path / "runtime.json").read_text())
    assert info["quantize"] == "8da4w" and info["methods"] == {"prefill": "prefill", "decode": "forward"}
    lm = load(tmp_path)
    settings = dict(do_sample=True, temperature=0.9, top_k=30, top_p=0.95)
    a = lm.generate(prompt, NEW, generator=torch.Generator().manual_seed(3), **settings)
    b = lm.generate(prompt, NEW, generator=torch.Generator().manual_seed(3), **settings)
    assert torch.equal(a, b) and a.shape == (1, PROMPT + NEW)
    greedy = lm.generate(prompt, NEW, eos_token_id=[])[0, PROMPT:].tolist()
    at, streamer = _first_new(greedy), _Recorder()
    out = lm.generate(prompt, NEW, eos_token_id=greedy[at], streamer=streamer)
    assert out[0, PROMPT:].tolist() == greedy[: at + 1]
    seen = streamer.seen
    assert seen[-1] == "end" and [t for piece in seen[1:-1] for t in piece] == out[0, PROMPT:].tolist()
    assert zoo_main(["run", str(tmp_path), "--prompt-tokens", "5", "--max-new-tokens", "4"]) == 0
    printed = capsys.readouterr().out
    assert "pte (executorch)" in printed and "4 new tokens" in printed
