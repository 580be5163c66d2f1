"""``zoo.export(model, "gguf")``: llama.cpp files of the Llama-shaped LMs, read back with ``gguf.GGUFReader`` and run
in llama-cpp-python against eager greedy decoding (those assertions skip when llama_cpp is not installed).

Reduced configs (64 wide, 2-5 blocks); weights are scaled up from the init so that greedy tokens are decided by
clear margins, not by ties that float rounding could flip.
"""

import ast
from pathlib import Path

import gguf  # the export extra (part of dev): a missing install fails, it does not skip
import numpy as np
import pytest
import torch
from small_lms import SMALL, small_lm

import zoo
from zoo.data.text import bundled_corpus, load_tokenizer, train_bpe_tokenizer
from zoo.export import ExportError, gguf_file, gguf_tokenizer
from zoo.export.gguf_file import FILE_NAME, rope_rows

pytestmark = [pytest.mark.export, pytest.mark.usefixtures("one_thread")]  # tests/conftest.py


def _read(path):
    reader = gguf.GGUFReader(str(path))
    fields = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    tensors = {t.name: t for t in reader.tensors}
    return fields, tensors


def _export(model, out, **kwargs):
    return zoo.export(model, "gguf", out, **kwargs)


def _checked(model, out, **kwargs):
    result = _export(model, out, check=True, **kwargs)
    return result, result.check


# ------------------------------------------------------------------------------------------------------------------
# Layout: what the file holds (no llama.cpp needed)
# ------------------------------------------------------------------------------------------------------------------


def test_rope_rows_interleave_the_halves_of_each_head():
    w = np.arange(2 * 8, dtype=np.float32)[:, None]  # 2 heads of head_dim 8, one column
    got = rope_rows(w, 2)[:, 0].tolist()
    assert got == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]


def test_mobilellm_is_written_as_llama_with_its_hyperparameters(tmp_path):
    model = small_lm("mobilellm_125m")
    result = _export(model, tmp_path)
    assert result.files == [FILE_NAME]
    fields, tensors = _read(tmp_path / FILE_NAME)
    assert fields["general.architecture"] == "llama"
    assert fields["general.name"] == "mobilellm_125m"
    assert fields["general.file_type"] == 0
    assert fields["llama.block_count"] == 2
    assert fields["llama.embedding_length"] == 64
    assert fields["llama.feed_forward_length"] == 128
    assert fields["llama.attention.head_count"] == 4
    assert fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.rope.dimension_count"] == 16
    assert fields["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert fields["llama.context_length"] == 2048
    assert "llama.attention.key_length" not in fields  # head_dim = hidden / heads
    assert fields["tokenizer.ggml.model"] == "none"  # no tokenizer beside a random-init model
    assert "output.weight" not in tensors  # tied: llama.cpp reads token_embd
    assert set(tensors) == {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{n}.weight"
        for i in range(2)
        for n in (
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        )
    }
    # q/k rows are in llama.cpp's RoPE order, the rest as the model holds them
    sd = model.state_dict()
    q = np.asarray(tensors["blk.1.attn_q.weight"].data).reshape(64, 64)
    assert np.array_equal(q, rope_rows(sd["model.layers.1.self_attn.q_proj.weight"].numpy(), 4))
    v = np.asarray(tensors["blk.1.attn_v.weight"].data).reshape(32, 64)
    assert np.array_equal(v, sd["model.layers.1.self_attn.v_proj.weight"].numpy())
    assert result.spec.options["gguf"]["tokenizer"] is None
    assert (tmp_path / "export.json").is_file() and (tmp_path / "README.md").is_file()


def test_layer_sharing_writes_every_run_as_a_block(tmp_path):
    model = small_lm("mobilellm_125m_ls")
    _export(model, tmp_path)
    fields, tensors = _read(tmp_path / FILE_NAME)
    assert fields["llama.block_count"] == 4  # 0,0,1,1
    for a, b in ((0, 1), (2, 3)):
        assert np.array_equal(tensors[f"blk.{a}.ffn_up.weight"].data, tensors[f"blk.{b}.ffn_up.weight"].data)
    assert not np.array_equal(tensors["blk.1.ffn_up.weight"].data, tensors["blk.2.ffn_up.weight"].data)


def test_quantized_files_keep_norms_f32_and_odd_rows_f16(tmp_path):
    model = small_lm("mobilellm_125m", intermediate_size=136)  # ffn_down rows of 136: not whole 32-blocks
    result = _export(model, tmp_path, quantize="q8_0")
    _, tensors = _read(tmp_path / FILE_NAME)
    Q = gguf.GGMLQuantizationType
    assert tensors["blk.0.attn_q.weight"].tensor_type == Q.Q8_0
    assert tensors["blk.0.ffn_down.weight"].tensor_type == Q.F16
    assert tensors["blk.0.attn_norm.weight"].tensor_type == Q.F32
    assert result.spec.options["gguf"]["kept_f16"] == ["blk.0.ffn_down.weight", "blk.1.ffn_down.weight"]
    card = (tmp_path / "README.md").read_text()  # the card says what the file holds, not only what was asked
    counts = result.spec.options["gguf"]["tensor_types"]
    assert f"{counts['F16']} `f16`" in card and f"{counts['Q8_0']} `q8_0`" in card and "asked: `q8_0`" in card
    assert "2 matrices stay `f16`: their rows are not a whole number of `q8_0` blocks" in card
    every = small_lm("mobilellm_125m", hidden_size=48, intermediate_size=72)  # no row fills whole 32-blocks
    _export(every, tmp_path / "odd", quantize="q8_0")
    card = (tmp_path / "odd" / "README.md").read_text()
    assert "`q8_0`" not in card.split("(asked")[0] and "`f16`" in card, card
    with pytest.raises(ExportError, match="quantize must be one of"):
        _export(model, tmp_path / "bad", quantize="q5_k")


def test_mixture_of_recursions_and_kv_sharing_are_refused(tmp_path):
    with pytest.raises(ExportError, match="Mixture-of-Recursions routing cannot be written as GGUF"):
        _export(small_lm("mor_135m", num_hidden_layers=5), tmp_path / "mor")
    with pytest.raises(ExportError, match="recursive KV sharing cannot be written as GGUF"):
        _export(small_lm("recursive_135m", num_hidden_layers=5, kv_sharing=True), tmp_path / "kv")
    assert not (tmp_path / "mor" / FILE_NAME).exists()


# ------------------------------------------------------------------------------------------------------------------
# llama.cpp runs it: greedy tokens equal to eager
# ------------------------------------------------------------------------------------------------------------------


def test_the_writer_reads_the_family_stack_and_names_no_family():
    """What llama.cpp runs is each family's ``llama_blocks()``; zoo.export.gguf_file imports no family."""
    ls = small_lm("mobilellm_125m_ls").llama_blocks()
    assert [r.index for r in ls.runs] == [0, 0, 1, 1] and "layer sharing unrolled" in ls.notes[0]
    relaxed = small_lm("recursive_135m", num_hidden_layers=5, lora_rank=4).llama_blocks()
    assert [r.lora is not None for r in relaxed.runs] == [False, True, True, True, False]
    source = Path(gguf_file.__file__).read_text()
    imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) and n.module}
    assert not [m for m in imported if m == "models" or m.startswith("models.")], imported


def test_mobilellm_f32_greedy_tokens_equal_llama_cpp(tmp_path):
    result, check = _checked(small_lm("mobilellm_125m"), tmp_path)
    assert check["ok"] and check["tokens_equal"]
    assert len(check["gguf_tokens"]) == 16
    assert check["max_rel_diff"] < 1e-4  # every position's logits (teacher-forced), f32 weights and cache
    assert check["agreement"] == 1.0


def test_untied_biased_model_with_its_own_head_dim(tmp_path):
    model = small_lm("mobilellm_125m", tie_word_embeddings=False, attention_bias=True, mlp_bias=True, head_dim=8)
    _, check = _checked(model, tmp_path)
    assert check["ok"] and check["max_rel_diff"] < 1e-4
    fields, tensors = _read(tmp_path / FILE_NAME)
    assert fields["llama.attention.key_length"] == 8 and fields["llama.rope.dimension_count"] == 8
    assert {"output.weight", "blk.0.attn_q.bias", "blk.0.ffn_down.bias"} <= set(tensors)


def test_layer_shared_model_round_trips(tmp_path):
    _, check = _checked(small_lm("mobilellm_125m_ls"), tmp_path)
    assert check["ok"] and check["max_rel_diff"] < 1e-4
    assert "layer sharing unrolled" in check["gguf"]["notes"][0]


def test_r1_round_trips_with_its_rope_base(tmp_path):
    model = small_lm("mobilellm_r1_140m", bos_token_id=0, eos_token_id=1)
    assert model.config.rope_theta == 500000.0
    _, check = _checked(model, tmp_path)
    assert check["ok"] and check["max_rel_diff"] < 1e-4
    fields, _ = _read(tmp_path / FILE_NAME)
    assert fields["llama.rope.freq_base"] == pytest.approx(500000.0)
    assert fields["llama.context_length"] == 4096


def test_vanilla_and_relaxed_recursive_models_round_trip(tmp_path):
    _, check = _checked(small_lm("vanilla_135m"), tmp_path / "vanilla")
    assert check["ok"] and check["max_rel_diff"] < 1e-4
    # 5 layers, 3 recursions over 1 shared block: 0, 1, 1, 1, 2; per-application norms and LoRA merged
    model = small_lm("recursive_135m", num_hidden_layers=5, lora_rank=4, ln_share=False)
    _, check = _checked(model, tmp_path / "recursive")
    assert check["ok"] and check["max_rel_diff"] < 1e-4
    assert check["gguf"]["block_count"] == 5


def test_sliding_window_layers_are_written_as_granite_swa(tmp_path):
    types = ["full_attention"] + ["sliding_attention"] * 3 + ["full_attention"]
    model = small_lm("mobilellm_pro_1b", num_hidden_layers=5, layer_types=types, sliding_window=4)
    _, check = _checked(model, tmp_path)  # 8 prompt + 16 new tokens: far past the window
    assert check["ok"] and check["max_rel_diff"] < 1e-4
    fields, tensors = _read(tmp_path / FILE_NAME)
    assert fields["general.architecture"] == "granite_swa"
    assert fields["granite_swa.attention.sliding_window"] == 4
    assert fields["granite_swa.attention.sliding_window_pattern"] == [False, True, True, True, False]
    assert fields["granite_swa.logit_scale"] == 1.0
    assert "blk.0.attn_sinks.weight" in tensors
    # the window matters: the same weights without windows are another model
    full = zoo.create_model("mobilellm_pro_1b", **{**SMALL, "num_hidden_layers": 5, "layer_types": None}).eval()
    full.load_state_dict(model.state_dict())
    ids = torch.tensor([check["prompt"] + check["eager_tokens"][:-1]])
    with torch.no_grad():
        assert not torch.allclose(full(ids), model(ids), atol=1e-3)


def test_q8_0_loads_and_mostly_agrees(tmp_path):
    _, check = _checked(small_lm("mobilellm_125m"), tmp_path, quantize="q8_0")
    assert check["ok"] and check["finite"] and check["quantize"] == "q8_0"
    assert check["agreement"] >= 0.75
    assert check["max_rel_diff"] < 0.1


def test_q4_0_loads_and_check_refuses_what_it_cannot_run(tmp_path):
    # q8_0/q4_0 matrices are what llama.cpp's AMX backend repacks (and, on some CPUs, crashed on): load_llama keeps
    # them in plain CPU buffers with such a build, so this decodes wherever it runs
    model = small_lm("mobilellm_125m")
    _, check = _checked(model, tmp_path / "q4", quantize="q4_0")
    assert check["finite"] and check["quantize"] == "q4_0" and len(check["gguf_tokens"]) == 16
    with pytest.raises(ExportError, match="check_tokens must be at least 1"):
        _checked(model, tmp_path / "none", check_tokens=0)
    with pytest.raises(ExportError, match="no GGUF file"):
        gguf_file.load_llama(tmp_path / "missing.gguf")


# ------------------------------------------------------------------------------------------------------------------
# Tokenizers
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    train_bpe_tokenizer(list(bundled_corpus().values())[:40], 300, path)
    return path


def test_bpe_tokenizer_beside_the_weights_is_written_into_the_file(tmp_path, bpe_file):
    folder = tmp_path / "model"
    small_lm("mobilellm_125m", vocab_size=320).save_pretrained(folder)
    (folder / "tokenizer.json").write_bytes(bpe_file.read_bytes())
    out = tmp_path / "gguf"
    result = _export(str(folder), out)  # a model folder: its tokenizer is found beside the weights
    fields, _ = _read(out / FILE_NAME)
    tok = load_tokenizer(bpe_file)
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == 320  # padded to the model's vocabulary
    assert tokens[:300] == [tok.id_to_token(i) for i in range(300)]
    assert tokens[300] == "[PAD300]" and fields["tokenizer.ggml.token_type"][300] == 5
    eos = tok.token_to_id("<|endoftext|>")
    assert fields["tokenizer.ggml.eos_token_id"] == eos and fields["tokenizer.ggml.token_type"][eos] == 3
    assert len(fields["tokenizer.ggml.merges"]) > 0
    assert result.spec.options["gguf"]["tokenizer"] == {"model": "gpt2", "pre": "gpt-2", "file": "tokenizer.json"} | {
        "padded": 20
    }
    assert (out / "tokenizer.json").is_file()


def _llama3_style_tokenizer(path):
    """A small BPE tokenizer split as Llama-3's (MobileLLM-R1's): its regex, then byte-level without a regex."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(gguf_tokenizer._LLAMA3_REGEX), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(bundled_corpus().values())[:40], trainer)
    tok.save(str(path))
    return path


@pytest.mark.parametrize("style", ["gpt-2", "llama-bpe"])
def test_bpe_tokenizer_tokenizes_as_in_python(tmp_path, bpe_file, style):
    path = bpe_file if style == "gpt-2" else _llama3_style_tokenizer(tmp_path / "llama3.json")
    name = "mobilellm_125m" if style == "gpt-2" else "mobilellm_r1_140m"
    model = small_lm(name, vocab_size=300, bos_token_id=0, eos_token_id=1)
    _, check = _checked(model, tmp_path / "gguf", tokenizer=path)
    assert check["gguf"]["tokenizer"]["pre"] == style
    assert check["ok"] and check["tokenizer_equal"], (check["eager_ids"], check["gguf_ids"])
    assert "\n" in check["tokenizer_text"] and "   " in check["tokenizer_text"]


def test_sentencepiece_tokenizer_model_is_written_with_scores(tmp_path):
    import sentencepiece as spm  # a core dependency

    prefix = tmp_path / "tokenizer"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(bundled_corpus().values())[:40]),
        model_prefix=str(prefix),
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,  # as LLaMA's tokenizer.model
        num_threads=1,
        minloglevel=2,
        max_sentence_length=100000,
    )
    sp = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    out = tmp_path / "gguf"
    model = small_lm("mobilellm_125m", vocab_size=400)
    result = _export(model, out, tokenizer=f"{prefix}.model")
    fields, _ = _read(out / FILE_NAME)
    assert fields["tokenizer.ggml.model"] == "llama"
    assert fields["tokenizer.ggml.tokens"] == [sp.id_to_piece(i) for i in range(400)]
    assert fields["tokenizer.ggml.scores"] == pytest.approx([sp.get_score(i) for i in range(400)])
    types = fields["tokenizer.ggml.token_type"]
    assert types[sp.bos_id()] == 3 and types[sp.unk_id()] == 2 and types[sp.piece_to_id("<0x0A>")] == 6
    assert fields["tokenizer.ggml.bos_token_id"] == sp.bos_id() and fields["tokenizer.ggml.add_bos_token"] is True
    assert "caveats" not in result.spec.options["gguf"]["tokenizer"]
    check = gguf_file.check(model, out, result.spec)
    assert check["ok"] and check["tokenizer_equal"], (check["eager_ids"], check["gguf_ids"])


def test_a_tokenizer_llama_cpp_cannot_express_is_left_out_and_said(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["a few words of text", "more words"], trainers.WordPieceTrainer(special_tokens=["[UNK]"]))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    result = _export(small_lm("mobilellm_125m"), tmp_path / "gguf", tokenizer=path)
    fields, _ = _read(tmp_path / "gguf" / FILE_NAME)
    assert fields["tokenizer.ggml.model"] == "none"
    report = result.spec.options["gguf"]
    assert report["tokenizer"] is None and "WordPiece" in report["tokenizer_note"]
