"""``zoo bench --formats``: perplexity and agreement per weight format, and the side-by-side speed rows."""

import math
import os

import pytest
import torch

import zoo
from zoo.bench import formats, main
from zoo.bench.harness import randomize_
from zoo.data.text import bundled_corpus, train_bpe_tokenizer
from zoo.models.mobilellm import save_pretrained

pytestmark = pytest.mark.export

TINY = dict(
    num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=128,
)  # fmt: skip


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    docs = list(bundled_corpus().values())[:200]
    tok = train_bpe_tokenizer(docs, 320, folder / "tokenizer.json")
    model = randomize_(zoo.create_model("mobilellm_125m", vocab_size=tok.get_vocab_size(), **TINY), 0).eval()
    save_pretrained(model, folder)
    return folder


# trains and scores every format on a small LM (about 20 s): -m slow
@pytest.mark.slow
def test_quality_per_format(lm_folder):
    scores = formats.quality(lm_folder, ["fp32", "bf16", "int8", "int4"])
    assert list(scores) == ["fp32", "bf16", "int8", "int4"]
    fp32 = scores["fp32"]["perplexity"]
    assert math.isfinite(fp32) and fp32 > 1.0
    assert scores["fp32"]["agreement"] == 1.0 and scores["fp32"]["ppl vs fp32"] == 0.0
    for fmt in ("bf16", "int8", "int4"):
        s = scores[fmt]
        assert s["perplexity"] != fp32  # each format is really measured in its own weights
        assert s["ppl vs fp32"] == pytest.approx(s["perplexity"] / fp32 - 1)
        assert 0.0 <= s["agreement"] <= 1.0
    # int8 codes sit within half a step of the weights: far closer to fp32 than int4's
    assert abs(scores["int8"]["ppl vs fp32"]) < 0.02
    assert abs(scores["int8"]["ppl vs fp32"]) <= abs(scores["int4"]["ppl vs fp32"])


def test_quality_without_a_trained_model_says_how_to_get_one(tmp_path):
    with pytest.raises(ValueError, match="train.py --config configs/quickstart_lm.yaml"):
        formats.quality(tmp_path / "missing", ["fp32"])


@pytest.mark.slow  # compiles two models and writes two GGUF files: ~20 s
def test_speed_rows_side_by_side(lm_folder):
    torch.manual_seed(0)
    rows = formats.compare(
        "mobilellm_125m", ["fp32", "int8"], runs=1, warmup=1, prompt_tokens=5, new_tokens=6,
        quality_run=lm_folder, vocab_size=256, **TINY,
    )  # fmt: skip
    assert [r.setting for r in rows] == ["decode 6 fp32", "decode 6 int8"] * 2
    backend = [r for r in rows if r.candidate == formats.BACKEND]
    assert [r.peer for r in backend] == ["llama.cpp f32", "llama.cpp q8_0"] and all(r.rate > 0 for r in backend)
    assert backend[0].extra["same tokens as llama.cpp"] == 1.0
    for r in rows[:2]:
        assert r.peer == formats.PEER and r.peer_rate > 0 and r.rate > 0
        assert r.extra["compiled = eager"] == 1.0  # the compiled step decodes eager's tokens
        assert r.extra["zoo eager"] > 0 and "overhead ms/tok" in r.extra
        assert r.extra["llama.cpp"] > 0 and r.extra["llama.cpp type"] in ("F32", "Q8_0")
        assert "perplexity" in r.extra and "agreement" in r.extra
    assert rows[0].extra["llama.cpp agreement"] == 1.0  # f32 llama.cpp: eager's greedy tokens
    assert any("transformers fp32" in line for line in formats.notes(rows))


def test_llama_cpp_backend_rows_beside_bare_llama_cpp(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "user-cache"))
    rows = formats.compare_backend(
        "mobilellm_125m", ["fp32", "int4"], runs=1, warmup=1, prompt_tokens=5, new_tokens=6, vocab_size=256, **TINY
    )
    assert [(r.setting, r.peer, r.candidate) for r in rows] == [
        ("decode 6 fp32", "llama.cpp f32", formats.BACKEND),
        ("decode 6 int4", "llama.cpp q4_0", formats.BACKEND),
    ]
    for r in rows:
        assert r.target == 0.95 and r.rate > 0 and r.peer_rate > 0 and r.extra["same tokens as llama.cpp"] == 1.0
        assert r.extra["paired ratio"] > 0
    assert os.environ["ZOO_CACHE"] == str(tmp_path / "user-cache")  # the bench's files went to its own folder
    assert not (tmp_path / "user-cache").exists()
    lines = formats.notes(rows)
    assert len(lines) == 2 and "zoo llama.cpp backend" in lines[1] and "bare llama.cpp Q4_0" in lines[1]


def test_cli_refuses_unknown_formats_and_vision_models(capsys):
    assert main(["--models", "mobilellm_125m", "--formats", "fp64"]) == 2
    assert "unknown weight format" in capsys.readouterr().err
    assert main(["--models", "poolformer_s12", "--formats", "fp32"]) == 2
    assert "language models" in capsys.readouterr().err


def test_a_family_without_a_transformers_twin_is_said_so_for_the_formats_bench():
    """MoR's config has no Llama mapping: build_pair says so (a ValueError the formats bench turns into zoo-only rows)."""
    from zoo.bench.lm import build_pair

    tiny = dict(TINY, vocab_size=128, num_hidden_layers=5)
    with pytest.raises(ValueError, match="no stock LlamaForCausalLM twin"):
        build_pair("mor_135m", torch.float32, **tiny)
