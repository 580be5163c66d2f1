"""``model.generate(..., backend="llama.cpp", quantize=...)``: the zoo's decoding over llama.cpp's forward passes.

Reduced configs (64 wide, 2-5 blocks) with weights scaled up from the init so that greedy tokens are decided by
clear margins; with ``quantize="f32"`` llama.cpp computes torch's logits, so every setting must give torch's tokens.
The GGUF cache lives in a temporary ``ZOO_CACHE``.
"""

import copy
import os

import llama_cpp  # noqa: F401  (the export extra, part of dev: a missing install fails, it does not skip)
import pytest
import torch
from small_lms import PROMPTS, SMALL, seeded_small_lm

import zoo
from zoo import cli
from zoo.data.text import bundled_corpus, train_bpe_tokenizer
from zoo.evaluate import evaluate_model
from zoo.export import llama_backend
from zoo.lm import sessions
from zoo.lm.generation import GenerationConfig, TextStreamer
from zoo.models.mobilellm import save_pretrained

LLAMA = "llama.cpp"
WINDOWED = ["sliding_attention", "full_attention"]


# one_thread: tests/conftest.py; gguf_cache: tests/export/conftest.py
pytestmark = [pytest.mark.export, pytest.mark.usefixtures("one_thread", "gguf_cache")]


class _Chars:
    """A tokenizer whose token i is one letter: enough for stop strings and text streamers."""

    def decode(self, ids, **kwargs):
        return "".join(chr(97 + int(i) % 26) for i in ids)


@pytest.fixture(scope="module")
def mobilellm():
    return seeded_small_lm()


def _both(model, ids=PROMPTS, **kwargs):
    return model.generate(ids, **kwargs), model.generate(ids, backend=LLAMA, quantize="f32", **kwargs)


def test_f32_greedy_tokens_equal_torch(mobilellm, monkeypatch):
    calls = []
    step = llama_backend.LlamaSession.step
    monkeypatch.setattr(
        llama_backend.LlamaSession, "step", lambda self, token: calls.append(token) or step(self, token)
    )
    want, got = _both(mobilellm, max_new_tokens=24)
    assert got.shape == (2, 30) and got.dtype == want.dtype
    assert torch.equal(got, want)
    assert calls == got[0, 6:-1].tolist() + got[1, 6:-1].tolist()  # llama.cpp ran every step after the prompts
    assert torch.equal(mobilellm.generate(PROMPTS, max_new_tokens=24, backend=LLAMA), want)  # f32 is the default


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("mobilellm_125m_ls", {}),
        ("recursive_135m", dict(num_hidden_layers=5, lora_rank=4, ln_share=False)),
        ("mobilellm_pro_1b", dict(num_hidden_layers=3, layer_types=["full_attention", *WINDOWED], sliding_window=4)),
    ],
)
def test_other_families_the_gguf_writer_takes(name, overrides):
    model = seeded_small_lm(name, **overrides)  # Pro's windows: llama.cpp's granite_swa
    want, got = _both(model, max_new_tokens=12)
    assert torch.equal(got, want)
    again = model.generate(PROMPTS, max_new_tokens=12, backend=LLAMA)  # the cache of the last prompt reused or not
    assert torch.equal(again, want)


def test_stops_penalty_min_tokens_and_padding_as_torch(mobilellm):
    free = mobilellm.generate(PROMPTS, max_new_tokens=16)
    stop = int(free[0, 9])  # a token row 0 emits on its own (at its 4th new token)
    settings = dict(max_new_tokens=16, eos_token_id=[stop, 95], min_new_tokens=2, pad_token_id=94)
    want, got = _both(mobilellm, **settings)
    assert torch.equal(got, want)
    assert (got == 94).any()  # a row that stopped first was padded while the other went on
    want, got = _both(mobilellm, max_new_tokens=16, repetition_penalty=1.5)
    assert torch.equal(got, want) and not torch.equal(got, free)
    config = GenerationConfig(max_new_tokens=5, eos_token_id=stop)
    want, got = _both(mobilellm, generation_config=config)
    assert torch.equal(got, want) and got.shape[1] <= PROMPTS.shape[1] + 5


def test_stop_strings_and_streamers_as_torch(mobilellm):
    free = mobilellm.generate(PROMPTS[:1], max_new_tokens=16)
    text = _Chars().decode(free[0, 6:].tolist())
    stop = text[5:7]
    want, got = _both(mobilellm, PROMPTS[:1], max_new_tokens=16, stop_strings=stop, tokenizer=_Chars())
    assert torch.equal(got, want) and got.shape[1] < free.shape[1]
    pieces = []
    out = mobilellm.generate(
        PROMPTS[:1], max_new_tokens=8, backend=LLAMA, streamer=pieces.append, tokenizer=_Chars()
    )  # a plain callable: the new text, piece by piece
    assert "".join(pieces) == _Chars().decode(out[0, 6:].tolist())
    seen = []
    streamer = TextStreamer(_Chars(), callback=seen.append)
    mobilellm.generate(PROMPTS[:1], max_new_tokens=8, backend=LLAMA, streamer=streamer)
    assert "".join(seen) == _Chars().decode(out[0].tolist())  # the prompt first, then each token


def test_left_padded_batch_runs_each_prompt_alone(mobilellm):
    ids = torch.tensor([[0, 0, 3, 5, 7, 9], [1, 2, 3, 4, 5, 6]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    want, got = _both(mobilellm, ids, max_new_tokens=10, attention_mask=mask)
    assert torch.equal(got, want)
    alone = mobilellm.generate(ids[:1, 2:], max_new_tokens=10, backend=LLAMA)
    assert torch.equal(got[0, 6:], alone[0, 4:])
    with pytest.raises(ValueError, match="left-padded prompts only"), pytest.warns(UserWarning, match="right-pad"):
        mobilellm.generate(ids, attention_mask=mask.flip(1), backend=LLAMA)


def test_sampling_with_a_seed_repeats(mobilellm):
    def sample(seed, **kwargs):
        g = torch.Generator().manual_seed(seed)
        settings = dict(do_sample=True, temperature=0.9, top_k=40, top_p=0.9, max_new_tokens=20, generator=g)
        return mobilellm.generate(PROMPTS, backend=LLAMA, quantize="q8_0", **settings, **kwargs)

    a, b, c = sample(0), sample(0), sample(1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_file_is_written_once_and_the_model_kept(mobilellm, gguf_cache):
    mobilellm.generate(PROMPTS, max_new_tokens=2, backend=LLAMA, quantize="q4_0")
    (path,) = gguf_cache.glob("*.q4_0.gguf")
    stamp = path.stat().st_mtime_ns
    session = llama_backend.open_session(mobilellm, "q4_0")
    mobilellm.generate(PROMPTS, max_new_tokens=2, backend=LLAMA, quantize="q4_0")
    assert llama_backend.open_session(mobilellm, "q4_0") is session  # the loaded file is kept with the model
    twin = copy.deepcopy(mobilellm)  # a copy loads its own llama.cpp model, from the same file
    twin.generate(PROMPTS, max_new_tokens=2, backend=LLAMA, quantize="q4_0")
    assert llama_backend.open_session(twin, "q4_0") is not session
    assert path.stat().st_mtime_ns == stamp and len(list(gguf_cache.iterdir())) == 1  # no rewrite, no temporary left
    with torch.no_grad():
        twin.model.norm.weight.mul_(2)  # changed weights: another file
    twin.generate(PROMPTS, max_new_tokens=2, backend=LLAMA, quantize="q4_0")
    assert len(list(gguf_cache.glob("*.q4_0.gguf"))) == 2 and path.stat().st_mtime_ns == stamp


def test_longer_requests_reload_with_a_longer_context():
    model = seeded_small_lm(max_position_embeddings=1024)
    assert llama_backend.open_session(model, "f32", 8).n_ctx == 256  # what the call needs, in llama.cpp's steps
    assert llama_backend.open_session(model, "f32", 200).n_ctx == 256  # kept
    assert llama_backend.open_session(model, "f32", 600).n_ctx == 768
    assert llama_backend.open_session(model, "f32", 900).n_ctx == 1024  # twice as many, within the model's


def test_what_llama_cpp_cannot_run_is_refused_with_the_fastest_zoo_path(mobilellm, gguf_cache):
    mor = seeded_small_lm("mor_135m", num_hidden_layers=5)
    with pytest.raises(ValueError, match=r"Mixture-of-Recursions.*generate\(\.\.\., compile=True\)"):
        mor.generate(PROMPTS, backend=LLAMA)
    kv = seeded_small_lm("recursive_135m", num_hidden_layers=5, kv_sharing=True)
    with pytest.raises(ValueError, match="recursive KV sharing"):
        kv.generate(PROMPTS, backend=LLAMA)
    with pytest.raises(ValueError, match="zoo's int8"):
        zoo.create_model("mobilellm_125m", quantize="int8", **SMALL).generate(PROMPTS, backend=LLAMA)
    assert not gguf_cache.exists() or not list(gguf_cache.iterdir())


def test_settings_llama_cpp_cannot_take_are_refused(mobilellm):
    with pytest.raises(ValueError, match="quantize must be one of f32, f16, q8_0, q4_0"):
        mobilellm.generate(PROMPTS, backend=LLAMA, quantize="int8")
    with pytest.raises(ValueError, match="leave compile out"):
        mobilellm.generate(PROMPTS[:1], backend=LLAMA, compile=True)
    with pytest.raises(ValueError, match="a streamer cannot follow the batch"):
        mobilellm.generate(PROMPTS, backend=LLAMA, streamer=TextStreamer(_Chars()))
    with pytest.raises(ValueError, match="the torch backend runs the model's own"):
        mobilellm.generate(PROMPTS, quantize="q8_0")
    with pytest.raises(ValueError, match="unknown generation backend 'onnx'.*'llama.cpp'"):
        mobilellm.generate(PROMPTS, backend="onnx")


def test_an_unregistered_backend_names_the_install(mobilellm, monkeypatch):
    monkeypatch.delitem(sessions._BACKENDS, LLAMA)
    with pytest.raises(ValueError, match=r'pip install "zoo\[export\]"'):
        mobilellm.generate(PROMPTS, backend=LLAMA)


def test_logits_of_every_position_for_perplexity(mobilellm):
    scored = llama_backend.LlamaCppLogits(mobilellm, "f32")
    ids = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = mobilellm(ids)
    got = scored(ids)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_cache_dir_follows_zoo_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "elsewhere"))
    assert llama_backend.cache_dir() == tmp_path / "elsewhere" / "gguf"
    monkeypatch.delenv("ZOO_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert llama_backend.cache_dir() == llama_backend.Path(os.path.expanduser("~/.cache/zoo/gguf"))


# ------------------------------------------------------------------------------------------------------------------
# zoo run --backend llama.cpp, eval.py --backend llama.cpp
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    tok = train_bpe_tokenizer(list(bundled_corpus().values())[:100], 300, folder / "tokenizer.json")
    save_pretrained(seeded_small_lm(vocab_size=tok.get_vocab_size(), max_position_embeddings=256), folder)
    return folder


def test_zoo_run_with_the_llama_cpp_backend(lm_folder, capsys):
    assert cli.main(["run", str(lm_folder), "--max-new-tokens", "6"]) == 0
    torch_out = capsys.readouterr().out
    assert cli.main(["run", str(lm_folder), "--max-new-tokens", "6", "--backend", LLAMA, "--quantize", "f32"]) == 0
    out = capsys.readouterr().out
    assert "llama.cpp: " in out and "(greedy, llama.cpp f32," in out

    def ids(text):
        return next(line for line in text.splitlines() if line.startswith("generated ids"))

    assert ids(out) == ids(torch_out)
    assert cli.main(["run", str(lm_folder), "--quantize", "q8_0"]) == 2
    assert "add --backend llama.cpp" in capsys.readouterr().err


def test_eval_perplexity_through_llama_cpp(lm_folder):
    settings = dict(max_batches=1, batch_size=2, seq_len=32, profile=False, tokenizer=str(lm_folder / "tokenizer.json"))
    want = evaluate_model(str(lm_folder), "pydoc", **settings)
    got = evaluate_model(str(lm_folder), "pydoc", backend=LLAMA, **settings)
    assert got["backend"] == LLAMA and got["gguf_type"] == "f32" and got["tokens"] == want["tokens"]
    assert got["perplexity"] == pytest.approx(want["perplexity"], rel=1e-5)
    q4 = evaluate_model(str(lm_folder), "pydoc", backend=LLAMA, quantize="q4_0", **settings)
    assert q4["gguf_type"] == "q4_0" and q4["perplexity"] != got["perplexity"]
    with pytest.raises(ValueError, match="quantize must be one of f32, f16, q8_0, q4_0"):
        evaluate_model(str(lm_folder), "pydoc", backend=LLAMA, quantize="int8", **settings)
    with pytest.raises(ValueError, match="a GGUF type"):
        evaluate_model(str(lm_folder), "pydoc", quantize="q8_0", **settings)


def test_the_weights_check_at_each_call_digests_with_xxh3_on_kept_threads(mobilellm, monkeypatch):
    import xxhash

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    weight = mobilellm.model.norm.weight
    assert llama_backend._content_crcs([weight]) == ((xxhash.xxh3_64_intdigest(weight.detach().numpy().tobytes()),),)
    first = llama_backend._fingerprint(mobilellm)
    pool = llama_backend._digest_pool(2)
    assert llama_backend._fingerprint(mobilellm) == first and llama_backend._digest_pool(2) is pool  # kept
    before = weight.data[0].item()
    try:
        weight.data[0] = before + 1.0  # an edit through .data: no version bump, a new digest
        assert llama_backend._fingerprint(mobilellm) != first
    finally:
        weight.data[0] = before
    assert llama_backend._fingerprint(mobilellm) == first


def test_the_digests_split_large_tensors_and_join_small_ones_in_order(monkeypatch):
    import xxhash

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(llama_backend, "DIGEST_PIECE", 64)  # bytes: 16 float32 values a piece
    big, small, empty = torch.arange(40.0), torch.arange(3.0), torch.zeros(0)
    got = llama_backend._content_crcs([small, big, empty, small.clone()])
    raw = big.numpy().tobytes()
    pieces = tuple(xxhash.xxh3_64_intdigest(raw[i : i + 64]) for i in range(0, len(raw), 64))
    whole = xxhash.xxh3_64_intdigest(small.numpy().tobytes())
    assert got == ((whole,), pieces, (xxhash.xxh3_64_intdigest(b""),), (whole,)) and len(pieces) == 3
    edited = big.clone()
    edited[-1] += 1  # in the last piece only
    assert llama_backend._content_crcs([small, edited, empty, small])[1][:2] == pieces[:2]
    assert llama_backend._content_crcs([small, edited, empty, small])[1][2] != pieces[2]
