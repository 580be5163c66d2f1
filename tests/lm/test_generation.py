"""Generation as transformers users expect it (issue 15, item 4): repetition penalty, min_new_tokens, stop token
ids and stop strings (per sequence of a batch), streamers, GenerationConfig (generation_config.json, saved and read
back) and chat templates.

Parity: the repetition penalty equals transformers' ``RepetitionPenaltyLogitsProcessor`` on the same logits, and
``LlamaForCausalLM.generate`` on the zoo model's weights gives the zoo's tokens with a penalty, stop ids,
min_new_tokens and left padding. Small models and a tokenizer trained in a fraction of a second keep it fast.
"""

import json
import logging
import re
import threading

import pytest
import torch
from small_lms import SMALL, tiny_lm_args

import zoo
from zoo.bench.harness import randomize_
from zoo.cli import main as zoo_main
from zoo.data.lm_tokenizer import apply_chat_template, load_chat_template, load_lm_tokenizer
from zoo.data.text import bundled_corpus, train_bpe_tokenizer
from zoo.lm.decoder import GenerationConfig, TextIteratorStreamer, TextStreamer
from zoo.lm.decoding import decode_loop, decoding_plan, generation_settings
from zoo.lm.generation import IncrementalDecoder, apply_repetition_penalty, token_presence
from zoo.models.mobilellm import MobileLLM, save_pretrained, to_llama_config
from zoo.weights import CheckpointError

VOCAB = 400
TEXT = "naïve café — 東京 🙂 done"  # one to four bytes per character


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tok():
    """A byte-level BPE tokenizer of VOCAB ids, with ChatML's special tokens."""
    texts = list(bundled_corpus().values())[:40] + [TEXT] * 3
    tokenizer = train_bpe_tokenizer(texts, VOCAB - 2)
    tokenizer.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    assert tokenizer.get_vocab_size() == VOCAB
    return tokenizer


def _model(vocab=SMALL["vocab_size"], seed=0, name="mobilellm_125m", **kwargs):
    # no eos / bos in the model config: transformers' twin then stops only where it is told to, as the zoo does
    kwargs = {"eos_token_id": None, "bos_token_id": None, **kwargs}
    return randomize_(zoo.create_model(name, **{**SMALL, "vocab_size": vocab, **kwargs}), seed).eval()


def _llama(model):
    """transformers' LlamaForCausalLM with the zoo model's weights (tied)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = {k: v for k, v in to_llama_config(model.config).items() if k not in ("architectures", "model_type")}
    ref = LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation="sdpa"))
    result = ref.load_state_dict(model.state_dict(), strict=False)
    assert result.unexpected_keys == [] and result.missing_keys in ([], ["lm_head.weight"])
    return ref.eval()


def _ids(batch=2, length=6, seed=1, vocab=SMALL["vocab_size"]):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def _staggered_stops(new: torch.Tensor) -> tuple[int, int, int, int]:
    """Stop ids (a, i, b, j) for a batch of 2 rows of new tokens: row 0 first meets one of them at step i (a), row 1
    at step j > i (b)."""
    rows = new.tolist()

    def first(row, ids):
        return next((k for k, t in enumerate(row) if t in ids), len(row))

    for i in range(1, len(rows[0])):
        for j in range(i + 1, len(rows[1])):
            a, b = rows[0][i], rows[1][j]
            if first(rows[0], {a, b}) == i and first(rows[1], {a, b}) == j:
                return a, i, b, j
    raise AssertionError(f"no staggered stop ids in {rows}")


def _left_padded(vocab=SMALL["vocab_size"]):
    """Two prompts of 8 and 5 tokens, the second left-padded with 3 zeros, and their mask."""
    ids = _ids(2, 8, seed=3, vocab=vocab)
    ids[1, :3] = 0
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    return ids, mask


# ----------------------------------------------------------------------------------------------------------------
# Repetition penalty, min_new_tokens, stop ids: transformers' semantics
# ----------------------------------------------------------------------------------------------------------------


def test_repetition_penalty_equals_transformers_processor():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, generator=gen) * 4  # positive and negative logits
    ids = torch.randint(0, 50, (3, 12), generator=gen)
    ids[0, :4] = ids[0, 4]  # repeats count once
    for penalty in (1.3, 0.7):
        ours = apply_repetition_penalty(logits, token_presence(ids, 50), penalty)
        theirs = RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # left padding is left out, as transformers 5 does (prompt_ignore_length = the padding's length)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    ours = apply_repetition_penalty(logits, token_presence(ids, 50, mask), 1.3)
    theirs = RepetitionPenaltyLogitsProcessor(1.3, prompt_ignore_length=torch.tensor([0, 5, 0]))(ids, logits.clone())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_generate_equals_transformers_llama_with_penalty_stops_and_min_new_tokens():
    model = _model()
    hf = _llama(model)
    prompt = _ids(1, 6)

    def theirs(ids, mask=None, **kwargs):
        mask = torch.ones_like(ids) if mask is None else mask
        with torch.no_grad():
            return hf.generate(ids, attention_mask=mask, do_sample=False, **kwargs)

    # repetition_penalty=1.3 changes the greedy tokens, identically in both
    plain = model.generate(prompt, max_new_tokens=12)
    ours = model.generate(prompt, max_new_tokens=12, repetition_penalty=1.3)
    assert not torch.equal(ours, plain)
    assert torch.equal(ours, theirs(prompt, max_new_tokens=12, repetition_penalty=1.3))

    # a left-padded batch with a penalty; stop ids that finish the rows at different steps; min_new_tokens
    ids, mask = _left_padded()
    free = model.generate(ids, max_new_tokens=10, attention_mask=mask, repetition_penalty=1.3)
    assert torch.equal(free, theirs(ids, mask, max_new_tokens=10, repetition_penalty=1.3))
    a, i, b, j = _staggered_stops(free[:, 8:])
    for min_new in (0, j + 1):
        settings = dict(max_new_tokens=10, repetition_penalty=1.3, eos_token_id=[a, b], pad_token_id=7)
        ours = model.generate(ids, attention_mask=mask, min_new_tokens=min_new, **settings)
        assert torch.equal(ours, theirs(ids, mask, min_new_tokens=min_new, **settings)), min_new
        if min_new == 0:  # row 0 ends at its stop id and is padded while row 1 goes on
            assert torch.equal(ours[0, : 8 + i + 1], free[0, : 8 + i + 1]) and (ours[0, 8 + i + 1 :] == 7).all()
            assert torch.equal(ours[1], free[1, : 8 + j + 1])
        else:  # no stop before min_new_tokens: the tokens differ from the free run's where they met one
            assert a not in ours[0, 8 : 8 + min_new] and b not in ours[1, 8 : 8 + min_new]


def test_min_new_tokens_suppresses_eos():
    model = _model()
    prompt = _ids(1, 6)
    greedy = model.generate(prompt, max_new_tokens=8)
    eos = int(greedy[0, 6])  # the first new token
    assert model.generate(prompt, max_new_tokens=8, eos_token_id=eos).shape[1] == 7
    out = model.generate(prompt, max_new_tokens=8, eos_token_id=eos, min_new_tokens=4)
    assert eos not in out[0, 6:10].tolist() and out.shape[1] >= 10
    # without stop ids there is nothing to suppress: min_new_tokens changes nothing
    assert torch.equal(model.generate(prompt, max_new_tokens=8, min_new_tokens=4), greedy)


def test_stop_token_ids_per_sequence():
    model = _model(seed=4)  # a model whose greedy rows below vary (a row that repeats one token has no stop to find)
    ids = _ids(2, 6, seed=6)
    free = model.generate(ids, max_new_tokens=8)
    first, i, second, j = _staggered_stops(free[:, 6:])
    # eos_token_id and stop_token_ids add up; finished rows are padded (default pad: the first stop id)
    out = model.generate(ids, max_new_tokens=8, eos_token_id=first, stop_token_ids=[second])
    assert out.shape[1] == 6 + j + 1
    assert torch.equal(out[0, : 6 + i + 1], free[0, : 6 + i + 1]) and (out[0, 6 + i + 1 :] == first).all()
    assert torch.equal(out[1], free[1, : 6 + j + 1])
    # a tensor of ids works too; eos_token_id=[] means none (the model's generation config may name some)
    assert torch.equal(model.generate(ids, 8, eos_token_id=torch.tensor([first, second])), out)
    model.generation_config = GenerationConfig(eos_token_id=first)
    assert torch.equal(model.generate(ids, 8, stop_token_ids=second), out)
    assert torch.equal(model.generate(ids, 8, eos_token_id=[]), free)
    vocab = model.config.vocab_size
    with pytest.raises(ValueError, match=rf"stop token ids must lie in \[0, {vocab}\)"):
        model.generate(ids, 8, stop_token_ids=[vocab])
    with pytest.raises(ValueError, match="stop_token_ids must be a token id"):
        model.generate(ids, 8, stop_token_ids=["x"])


# ----------------------------------------------------------------------------------------------------------------
# Stop strings and streamers
# ----------------------------------------------------------------------------------------------------------------


def _first_stop_string(tok, new_ids: list[int], after: int = 2) -> tuple[str, int]:
    """A stop string that the decoded new text first contains once token ``k`` (> ``after``) is in: (string, k)."""
    for k in range(after + 1, len(new_ids)):
        text, before = tok.decode(new_ids[: k + 1]), tok.decode(new_ids[:k])
        for size in (3, 2, 4, 5):
            s = text[-size:]
            if len(s) == size and "\ufffd" not in s and s not in before and s not in tok.decode(new_ids[:k]):
                return s, k
    raise AssertionError("no stop string found")


def test_stop_strings_end_each_sequence_at_the_token_that_completes_one(tok):
    model = _model(VOCAB, seed=2)
    ids = _ids(2, 5, seed=4, vocab=VOCAB - 2)
    free = model.generate(ids, max_new_tokens=16)
    s, k = _first_stop_string(tok, free[0, 5:].tolist())
    assert s not in tok.decode(free[1, 5:].tolist())  # row 1 never meets it
    out = model.generate(ids, max_new_tokens=16, stop_strings=[s], tokenizer=tok, pad_token_id=VOCAB - 1)
    assert torch.equal(out[0, : 5 + k + 1], free[0, : 5 + k + 1])  # the ids end at the completing token
    assert (out[0, 5 + k + 1 :] == VOCAB - 1).all() and torch.equal(out[1], free[1])
    single = model.generate(ids[:1], max_new_tokens=16, stop_strings=s, tokenizer=tok)
    assert torch.equal(single[0], free[0, : 5 + k + 1])
    assert s in tok.decode(single[0, 5:].tolist()) and s not in tok.decode(single[0, 5:-1].tolist())
    with pytest.raises(ValueError, match="stop_strings need the tokenizer"):
        model.generate(ids, max_new_tokens=4, stop_strings=[s])


class _Engine:
    """Logits from a fixed table, the row picked by the last token and the step: both kinds of step of
    :func:`decode_loop`, counting their calls."""

    def __init__(self, vocab, seed=0):
        self.table = torch.randn(97, vocab, generator=torch.Generator().manual_seed(seed))
        self.calls = {"tensor": 0, "int": 0}

    def step(self, token, n):
        self.calls["tensor"] += 1
        return self.table[(int(token[0]) * 31 + n) % 97][None]

    def step_id(self, token, n):
        self.calls["int"] += 1
        return self.table[(token * 31 + n) % 97][None]


class _Recorder:
    def __init__(self):
        self.puts = []

    def put(self, ids):
        self.puts.append(ids.tolist())


def _both_lanes(vocab, prompt, new, tokenizer=None, **settings):
    """decode_loop's output and streamed ids with and without the int step, and the engines' calls."""
    seen = []
    for use_ids in (False, True):
        engine, streamer = _Engine(vocab), _Recorder()
        plan = decoding_plan(
            generation_settings(GenerationConfig(), None, **settings),
            vocab,
            prompt,
            None,
            None,
            torch.Generator().manual_seed(0),
            tokenizer,
        )
        out = decode_loop(
            prompt, engine.table[0][None], engine.step, new, plan, streamer, engine.step_id if use_ids else None
        )
        seen.append((out, streamer.puts, engine.calls))
    return seen


def test_the_int_lane_gives_the_tensor_lanes_tokens_stops_and_streams(tok):
    prompt = _ids(1, 5, vocab=VOCAB - 2)
    (free, free_puts, calls), (ids, ids_puts, id_calls) = _both_lanes(VOCAB, prompt, 24)
    assert torch.equal(free, ids) and free_puts == ids_puts and len(ids_puts) == 24
    assert id_calls == {"tensor": 0, "int": 23} and calls == {"tensor": 23, "int": 0}
    new = free[0, 5:].tolist()
    stop = next(t for k, t in enumerate(new) if k >= 3 and t not in new[:k])  # first met at step k >= 3
    text, k = _first_stop_string(tok, new)
    for settings in ({"eos_token_id": stop}, {"stop_strings": [text]}, {"max_new_tokens": 1}):
        n = settings.pop("max_new_tokens", 24)
        (a, a_puts, _), (b, b_puts, id_calls) = _both_lanes(VOCAB, prompt, n, tok, **settings)
        assert torch.equal(a, b) and a_puts == b_puts and id_calls["tensor"] == 0, settings
        assert a.shape[1] < 5 + 24  # every case stops early
    assert _both_lanes(VOCAB, prompt, 24, tok, stop_strings=[text])[1][0].shape[1] == 5 + k + 1
    # what the int lane leaves to tensors: sampling, a penalty, stop ids masked, a batch
    for settings in ({"do_sample": True}, {"repetition_penalty": 1.3}, {"eos_token_id": stop, "min_new_tokens": 4}):
        (a, _, _), (b, _, id_calls) = _both_lanes(VOCAB, prompt, 24, **settings)
        assert torch.equal(a, b) and id_calls["int"] == 0 and id_calls["tensor"] > 0, settings
    (a, _, _), (b, _, id_calls) = _both_lanes(VOCAB, _ids(2, 5, vocab=VOCAB - 2), 8)
    assert torch.equal(a, b) and id_calls["int"] == 0


def test_text_streamer_never_splits_a_character(tok):
    ids = tok.encode(TEXT).ids
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some characters span several tokens
    pieces = []
    streamer = TextStreamer(tok, callback=pieces.append)
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    assert "".join(pieces) == TEXT and not any("\ufffd" in p for p in pieces)
    assert {"é", "東", "🙂"} <= set(pieces)  # each multi-byte character arrives whole, once complete
    decoder = IncrementalDecoder(tok)
    assert "".join(decoder.add([i]) for i in ids) + decoder.flush() == TEXT


def test_sentencepiece_streams_and_chats(tmp_path):
    """The LLaMA-style tokenizer.model: word-initial spaces and byte-fallback characters stream intact; a chat
    template's "<s>" becomes the BOS id."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(bundled_corpus().values())[:20]),
        model_prefix=str(tmp_path / "tokenizer"),
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        minloglevel=2,
    )
    sp = load_lm_tokenizer(tmp_path)
    ids = sp.encode(TEXT + " and more words", add_special_tokens=False).ids
    pieces = []
    streamer = TextStreamer(sp, callback=pieces.append)
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    assert "".join(pieces) == TEXT + " and more words" and not any("\ufffd" in p for p in pieces)
    template = "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "chat_template": template}))
    chat = apply_chat_template(tmp_path, [{"role": "user", "content": "Hello there"}])
    assert chat[0] == sp.bos_token_id and chat[1:] == sp.encode("[INST] Hello there [/INST]", False).ids
    assert apply_chat_template(sp, [{"role": "user", "content": "Hello there"}]) == chat  # its folder is known


def test_streamers_receive_exactly_the_new_text(tok, capsys):
    model = _model(VOCAB, seed=2)
    prompt = _ids(1, 5, seed=4, vocab=VOCAB - 2)
    out = model.generate(prompt, max_new_tokens=12)
    new_text = tok.decode(out[0, 5:].tolist())

    pieces = []  # a plain callable: the new text, piece by piece
    assert torch.equal(model.generate(prompt, max_new_tokens=12, streamer=pieces.append, tokenizer=tok), out)
    assert "".join(pieces) == new_text and len(pieces) > 1

    # transformers' protocol: the prompt is put first, then each step's tokens, then end() -- as transformers
    # itself calls it on the same weights
    class Recorder:
        def __init__(self):
            self.puts, self.ended = [], 0

        def put(self, value):
            self.puts.append(value.tolist())

        def end(self):
            self.ended += 1

    ours, theirs = Recorder(), Recorder()
    model.generate(prompt, max_new_tokens=12, streamer=ours)
    with torch.no_grad():
        _llama(model).generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False, streamer=theirs
        )
    assert ours.puts == theirs.puts and ours.ended == theirs.ended == 1
    assert ours.puts[0] == prompt.tolist() and [p[0] for p in ours.puts[1:]] == out[0, 5:].tolist()

    # TextStreamer prints the prompt and the continuation (skip_prompt: the continuation), then a newline
    model.generate(prompt, max_new_tokens=12, streamer=TextStreamer(tok, skip_prompt=True))
    assert capsys.readouterr().out == new_text + "\n"
    with pytest.raises(ValueError, match="one sequence"):
        model.generate(_ids(2, 5, vocab=VOCAB), max_new_tokens=2, streamer=TextStreamer(tok))
    with pytest.raises(ValueError, match="pass the tokenizer"):
        model.generate(prompt, max_new_tokens=2, streamer=print)


def test_iterator_streamer_in_a_thread(tok):
    model = _model(VOCAB, seed=2)
    prompt = _ids(1, 5, seed=4, vocab=VOCAB - 2)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, timeout=60)
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(out=model.generate(prompt, max_new_tokens=12, streamer=streamer))
    )
    thread.start()
    pieces = list(streamer)
    thread.join()
    assert "".join(pieces) == tok.decode(result["out"][0, 5:].tolist())
    # a generate that fails still ends the stream: the reader is not left waiting
    failing = TextIteratorStreamer(tok, timeout=60)
    thread = threading.Thread(target=lambda: pytest.raises(ValueError, model.generate, prompt, -1, streamer=failing))
    thread.start()
    assert list(failing) == []
    thread.join()


# ----------------------------------------------------------------------------------------------------------------
# GenerationConfig
# ----------------------------------------------------------------------------------------------------------------


def test_generation_config_precedence():
    model = _model(bos_token_id=1)
    ids = _ids(1, 6)
    assert model.generation_config == GenerationConfig(bos_token_id=1)  # from the model config; no stop ids
    assert model.generate(ids).shape[1] == 6 + 20  # the default length, as before
    config = GenerationConfig(max_new_tokens=5, repetition_penalty=1.3)
    assert torch.equal(
        model.generate(ids, generation_config=config), model.generate(ids, max_new_tokens=5, repetition_penalty=1.3)
    )
    assert model.generate(ids, max_new_tokens=3, generation_config=config).shape[1] == 6 + 3  # keywords win
    # the model's generation config: what a call leaves unset, a given config's unset fields included
    model.generation_config = GenerationConfig(max_new_tokens=4, do_sample=True, temperature=50.0)
    sampled = model.generate(ids, generator=torch.Generator().manual_seed(0))
    assert sampled.shape[1] == 6 + 4 and not torch.equal(sampled, model.generate(ids, do_sample=False))
    again = model.generate(
        ids, generation_config=GenerationConfig(max_new_tokens=4), generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(again, sampled)
    with pytest.raises(TypeError, match="zoo GenerationConfig"):
        model.generation_config = {"max_new_tokens": 3}
    with pytest.raises(TypeError, match="zoo GenerationConfig"):
        model.generate(ids, generation_config={"max_new_tokens": 3})
    with pytest.raises(ValueError, match="top_p must be a number in"):
        model.generate(ids, 2, do_sample=True, top_p=1.5)


def test_generation_config_file_round_trip_and_transformers(tmp_path):
    from transformers import GenerationConfig as HFGenerationConfig

    model = _model(eos_token_id=2, bos_token_id=1)
    model.generation_config = GenerationConfig(max_new_tokens=9, repetition_penalty=1.2, stop_strings=["\n\n"])
    out = save_pretrained(model, tmp_path / "hf", model_name="mobilellm_125m")
    written = json.loads((out / "generation_config.json").read_text())
    # transformers' keys; the ids the generation config leaves unset come from the model config, as transformers
    assert written == {
        "bos_token_id": 1,
        "eos_token_id": 2,
        "max_new_tokens": 9,
        "repetition_penalty": 1.2,
        "stop_strings": ["\n\n"],
    }
    hf = HFGenerationConfig.from_pretrained(out)
    assert (hf.max_new_tokens, hf.repetition_penalty, hf.eos_token_id, hf.stop_strings) == (9, 1.2, 2, ["\n\n"])
    expected = GenerationConfig(**written)
    assert MobileLLM.from_pretrained(out).generation_config == expected
    assert zoo.create_model(str(out)).generation_config == expected
    overlay = {"file": str(out / "model.safetensors")}
    assert zoo.create_model("mobilellm_125m", pretrained=True, pretrained_cfg_overlay=overlay).generation_config == (
        expected
    )
    # zoo-format folders (layer sharing) and the recursive LMs write it too
    shared = _model(name="mobilellm_125m_ls")
    assert GenerationConfig.from_pretrained(save_pretrained(shared, tmp_path / "ls")) == GenerationConfig()

    # a file transformers wrote: its keys the zoo does not use are kept and written back
    HFGenerationConfig(max_new_tokens=7, eos_token_id=[2, 5], do_sample=True, top_k=0, temperature=0.7).save_pretrained(
        tmp_path / "t"
    )
    read = GenerationConfig.from_pretrained(tmp_path / "t")
    assert (read.max_new_tokens, read.eos_token_id, read.do_sample, read.top_k, read.temperature) == (
        7,
        [2, 5],
        True,
        None,  # top_k 0: transformers' "off"
        0.7,
    )
    assert "transformers_version" in read.extra
    read.save_pretrained(tmp_path / "again")
    assert "transformers_version" in json.loads((tmp_path / "again" / "generation_config.json").read_text())


def test_published_folder_carries_the_generation_config(tmp_path):
    from zoo import publish

    kwargs = dict(SMALL, eos_token_id=2, bos_token_id=1)
    model = zoo.create_model("mobilellm_125m_ls", **kwargs)  # a zoo-format folder
    model.generation_config = GenerationConfig(stop_strings="\n\n", min_new_tokens=1)
    out = publish.export_pretrained(
        model, tmp_path / "pub", model_name="mobilellm_125m_ls", model_kwargs=kwargs, latency_runs=0
    )
    assert "generation_config.json" in publish.exported_files(out)
    expected = GenerationConfig(stop_strings="\n\n", min_new_tokens=1, eos_token_id=2, bos_token_id=1)
    assert zoo.create_model(str(out)).generation_config == expected


def test_hub_repo_generation_config(hub, tmp_path):
    model = _model(eos_token_id=2)
    model.generation_config = GenerationConfig(repetition_penalty=1.3, max_new_tokens=5)
    out = save_pretrained(model, tmp_path / "out", model_name="mobilellm_125m")
    files = {n: (out / n).read_bytes() for n in ("config.json", "model.safetensors", "generation_config.json")}
    hub.repos["me/lm"] = files
    hub.repos["me/bare"] = {k: v for k, v in files.items() if k != "generation_config.json"}
    loaded = zoo.create_model("hf-hub:me/lm")
    bare = zoo.create_model("hf-hub:me/bare")
    assert loaded.generation_config == GenerationConfig(repetition_penalty=1.3, max_new_tokens=5, eos_token_id=2)
    assert bare.generation_config == GenerationConfig()  # a repo without the file: the model config's ids
    ids = _ids(1, 6)
    assert torch.equal(loaded.generate(ids), model.generate(ids, eos_token_id=2))


def test_recursive_lm_saves_its_generation_config(tmp_path):
    from zoo.models.recursive import save_pretrained as save_recursive

    kwargs = dict(tiny_lm_args("recursive_135m"), eos_token_id=3, bos_token_id=None)
    model = zoo.create_model("recursive_135m", **kwargs)
    model.generation_config = GenerationConfig(min_new_tokens=2)
    save_recursive(model, tmp_path)
    loaded = zoo.create_model(
        "recursive_135m", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path)}, **kwargs
    )
    assert loaded.generation_config == GenerationConfig(min_new_tokens=2, eos_token_id=3)


BAD = [
    ({"temperature": "hot"}, "temperature must be a finite number >= 0"),
    ({"top_p": 1.5}, "top_p must be a number in (0, 1]"),
    ({"top_k": -1}, "top_k must be an int >= 0"),
    ({"max_new_tokens": 1.5}, "max_new_tokens must be an int >= 0"),
    ({"min_new_tokens": True}, "min_new_tokens must be an int >= 0"),
    ({"repetition_penalty": 0}, "repetition_penalty must be a finite number > 0"),
    ({"eos_token_id": [2, -1]}, "eos_token_id must be a token id"),
    ({"pad_token_id": "0"}, "pad_token_id must be a token id"),
    ({"stop_strings": ""}, "stop_strings must be a non-empty string"),
    ({"do_sample": "yes"}, "do_sample must be true or false"),
]


@pytest.mark.parametrize("data, message", BAD, ids=[next(iter(d)) for d, _ in BAD])
def test_bad_generation_config_values_are_refused(data, message):
    with pytest.raises(ValueError, match=re.escape(f"f.json: {message}")):
        GenerationConfig.from_dict(data, "f.json")
    with pytest.raises(ValueError, match=re.escape(message)):
        GenerationConfig(**data)


def test_bad_generation_config_file_refuses_the_folder(tmp_path, caplog):
    model = _model()
    out = save_pretrained(model, tmp_path, model_name="mobilellm_125m")
    path = out / "generation_config.json"
    path.write_text(json.dumps({"top_p": 2}))
    with pytest.raises(CheckpointError, match=r"generation_config.json: top_p must be .* Nothing was built"):
        zoo.create_model(str(out))
    with pytest.raises(ValueError, match="top_p must be"):
        MobileLLM.from_pretrained(out)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        MobileLLM.from_pretrained(out)
    path.write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        MobileLLM.from_pretrained(out)
    # strategies the zoo does not implement: one warning, the file still loads (and keeps them)
    path.write_text(json.dumps({"num_beams": 4, "num_return_sequences": 1, "transformers_version": "5.0"}))
    with caplog.at_level(logging.WARNING):
        loaded = MobileLLM.from_pretrained(out)
    assert "zoo's generate does not use ['num_beams']" in caplog.text
    assert loaded.generation_config.extra["num_beams"] == 4


# ----------------------------------------------------------------------------------------------------------------
# Chat templates
# ----------------------------------------------------------------------------------------------------------------

CHATML = (
    "{{ bos_token if bos_token else '' }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a café?"}]


def _tokenizer_folder(tok, folder, template=CHATML):
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    pad = {"__type": "AddedToken", "content": "<|endoftext|>", "special": True}  # transformers' AddedToken dict
    config = {"eos_token": "<|im_end|>", "pad_token": pad}
    if template is not None:
        config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_chat_template_renders_as_transformers(tok, tmp_path):
    from transformers import PreTrainedTokenizerFast

    folder = _tokenizer_folder(tok, tmp_path / "tok")
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is a café?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert apply_chat_template(folder, MESSAGES, tokenize=False) == expected
    ids = apply_chat_template(folder, MESSAGES)
    assert ids == tok.encode(expected, add_special_tokens=False).ids
    assert ids[0] == tok.token_to_id("<|im_start|>") and ids.count(tok.token_to_id("<|im_end|>")) == 2
    hf = PreTrainedTokenizerFast.from_pretrained(str(folder))
    theirs = hf.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    assert ids == list(theirs if isinstance(theirs, list) else theirs["input_ids"])  # a BatchEncoding in v5
    assert (
        apply_chat_template(folder, MESSAGES, add_generation_prompt=False, tokenize=False)
        == expected[: -len("<|im_start|>assistant\n")]
    )
    # a loaded tokenizer with the template given; named templates; chat_template.jinja wins
    assert apply_chat_template(load_lm_tokenizer(folder), MESSAGES, chat_template=CHATML) == ids
    named = _tokenizer_folder(
        tok, tmp_path / "named", [{"name": "default", "template": "{{ messages[0]['content'] }}"}]
    )
    assert apply_chat_template(named, MESSAGES, tokenize=False) == "Be brief."
    (named / "chat_template.jinja").write_text(CHATML)
    assert load_chat_template(named) == CHATML


def test_chat_template_errors(tok, tmp_path):
    plain = _tokenizer_folder(tok, tmp_path / "plain", template=None)
    with pytest.raises(ValueError, match="has no chat template"):
        apply_chat_template(plain, MESSAGES)
    with pytest.raises(ValueError, match="has no chat template"):
        apply_chat_template(load_lm_tokenizer(plain), MESSAGES)
    failing = _tokenizer_folder(tok, tmp_path / "raise", "{{ raise_exception('only user turns') }}")
    with pytest.raises(ValueError, match="only user turns"):
        apply_chat_template(failing, MESSAGES)
    # the sandbox: no way from the template to Python's internals
    escape = _tokenizer_folder(tok, tmp_path / "escape", "{{ messages.__class__.__mro__ }}")
    with pytest.raises(ValueError, match="the chat template failed: SecurityError"):
        apply_chat_template(escape, MESSAGES)
    namespace = _tokenizer_folder(tok, tmp_path / "ns", "{% set ns = namespace(_x=1) %}{{ ns._x }}")
    with pytest.raises(ValueError, match="SecurityError"):
        apply_chat_template(namespace, MESSAGES)
    with pytest.raises(TypeError, match="list of dicts"):
        apply_chat_template(_tokenizer_folder(tok, tmp_path / "ok"), "hello")


def test_zoo_run_chat(tok, tmp_path, capsys):
    model = _model(VOCAB, seed=2, eos_token_id=tok.token_to_id("<|im_end|>"))
    folder = save_pretrained(model, tmp_path / "model", model_name="mobilellm_125m")
    _tokenizer_folder(tok, folder)
    assert zoo_main(["run", str(folder), "--chat", "What is a café?", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert "reply: " in out and "new tokens in" in out
    reply = out.split("reply: ", 1)[1].rsplit("\n", 2)[0]
    prompt = torch.tensor([apply_chat_template(folder, [{"role": "user", "content": "What is a café?"}])])
    endoftext = tok.token_to_id("<|endoftext|>")  # the tokenizer's EOS stops the reply too
    expected = zoo.create_model(str(folder)).generate(prompt, max_new_tokens=6, stop_token_ids=[endoftext])
    assert reply == tok.decode(expected[0, prompt.shape[1] :].tolist())

    (folder / "tokenizer_config.json").write_text("{}")
    assert zoo_main(["run", str(folder), "--chat", "hi"]) == 2
    assert "has no chat template" in capsys.readouterr().err


def test_zoo_run_chat_is_refused_before_the_model_is_built(monkeypatch, capsys):
    """No tokenizer to chat with: one line at once, before a full-size model is built (or its weights read)."""
    from zoo import run_cli

    def built(*args, **kwargs):
        raise AssertionError("the model was built before --chat was refused")

    monkeypatch.setattr(run_cli, "create_model", built)
    assert zoo_main(["run", "mobilellm_1b", "--chat", "hi"]) == 2
    assert "--chat needs the model's tokenizer" in capsys.readouterr().err
