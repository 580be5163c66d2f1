"""``zoo bench formats``: perplexity and agreement per weight format, and the side-by-side speed rows."""

import math
import os
import statistics

import pytest
import torch
from small_lms import SMALL, tiny_lm_args

import zoo
from zoo.bench import formats, formats_report
from zoo.bench.harness import randomize_
from zoo.cli import main as zoo_main
from zoo.data.text import bundled_corpus, train_bpe_tokenizer
from zoo.export import export
from zoo.models.mobilellm import save_pretrained

pytestmark = pytest.mark.export

TINY = dict(SMALL, max_position_embeddings=128)  # a short context: the prefill refusal below names it


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    docs = list(bundled_corpus().values())[:200]
    tok = train_bpe_tokenizer(docs, 320, folder / "tokenizer.json")
    model = randomize_(zoo.create_model("mobilellm_125m", **dict(TINY, vocab_size=tok.get_vocab_size())), 0).eval()
    save_pretrained(model, folder)
    return folder


# scores every format on a small LM, in the zoo, llama.cpp and the pte's weights (about 50 s): -m slow
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
    if formats.act_bits_available():  # both activation widths of each integer weight width, in the same run
        for fmt in ("int8", "int4"):
            s = scores[fmt]
            assert {"ppl a8 vs fp32", "agreement a8", "ppl a16 vs fp32", "agreement a16"} <= set(s)
            assert s["ppl a8 vs fp32"] != s["ppl a16 vs fp32"]  # the two widths are really run
            assert s["ppl vs fp32"] in (s["ppl a8 vs fp32"], s["ppl a16 vs fp32"])  # the default is one of them
    # the other engines on the same trained weights: llama.cpp on zoo export's GGUF at each format's type, and the
    # pte's torchao weights of the integer formats. Float32 in llama.cpp is the same function as the zoo's float32;
    # Q8_0 and the pte's 8-bit weights sit within half a step of the weights, as the zoo's int8 does, and closer to
    # float32 than their 4-bit counterparts
    for fmt in scores:
        assert math.isfinite(scores[fmt]["llama.cpp ppl vs fp32"]) and 0.0 <= scores[fmt]["llama.cpp agreement"] <= 1
    assert abs(scores["fp32"]["llama.cpp ppl vs fp32"]) < abs(scores["int8"]["llama.cpp ppl vs fp32"]) < 0.02
    assert abs(scores["int8"]["llama.cpp ppl vs fp32"]) <= abs(scores["int4"]["llama.cpp ppl vs fp32"])
    assert {fmt for fmt in scores if "pte ppl vs fp32" in scores[fmt]} == {"int8", "int4"}
    assert abs(scores["int8"]["pte ppl vs fp32"]) < 0.02
    assert abs(scores["int8"]["pte ppl vs fp32"]) <= abs(scores["int4"]["pte ppl vs fp32"])
    assert all(0.0 <= scores[fmt]["pte agreement"] <= 1.0 for fmt in ("int8", "int4"))


def test_quality_without_a_trained_model_says_how_to_get_one(tmp_path):
    with pytest.raises(ValueError, match="train.py --config configs/quickstart_lm.yaml"):
        formats.quality(tmp_path / "missing", ["fp32"])


@pytest.mark.slow  # compiles two models and writes two GGUF files: ~20 s
def test_speed_rows_side_by_side(lm_folder):
    torch.manual_seed(0)
    rows = formats.compare(
        "mobilellm_125m", ["fp32", "int8"], runs=1, warmup=1, prompt_tokens=5, new_tokens=6,
        quality_run=lm_folder, prefill=(16,), **TINY,
    )  # fmt: skip
    assert [r.setting for r in rows] == ["decode 6 fp32", "decode 6 int8"] * 2 + ["prefill 16 fp32", "prefill 16 int8"]
    assert [r.peer for r in rows[-2:]] == ["llama.cpp f32", "llama.cpp q8_0"] and all(r.rate > 0 for r in rows[-2:])
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
    assert [r.extra["kernel path"] for r in rows[:2] + rows[-2:]] == [
        formats.kernel_path(f, n) for f, n in (("fp32", 1), ("int8", 1), ("fp32", 16), ("int8", 16))
    ]
    assert any("transformers fp32" in line for line in formats_report.notes(rows))


def test_every_row_names_the_kernel_path_it_ran_on_this_cpu():
    from zoo.kernels import gemv

    if not gemv.available():
        assert {formats.kernel_path(f, 1) for f in formats.FORMATS} == {"torch"}
        return
    assert formats.kernel_path("int8", 1) == f"zoo a8 {gemv.kernel_path(1)}"
    assert formats.kernel_path("int4a8", 512) == f"zoo a8 {gemv.kernel_path(512)}"
    assert formats.kernel_path("int8a16", 1) == "zoo a16 avx2" and formats.kernel_path("int8a16", 2) == "torch"
    assert formats.kernel_path("fp32", 1) == f"zoo f32 {gemv.kernel_choice().f32}"  # the dispatcher's, not a name
    assert formats.kernel_path("fp32", 128) == "torch"
    assert formats.kernel_path("bf16", 1) == "torch"


def test_llama_cpp_backend_rows_beside_bare_llama_cpp(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "user-cache"))
    rows = formats.compare_backend(
        "mobilellm_125m", ["fp32", "int4"], runs=1, warmup=1, prompt_tokens=5, new_tokens=6, **TINY
    )
    assert [(r.setting, r.peer, r.candidate) for r in rows] == [
        ("decode 6 fp32", "llama.cpp f32", formats.BACKEND),
        ("decode 6 int4", "llama.cpp q4_0", formats.BACKEND),
    ]
    for r in rows:
        assert r.target == 0.95 and r.rate > 0 and r.peer_rate > 0 and r.extra["same tokens as llama.cpp"] == 1.0
        assert r.extra["paired ratio"] > 0 and r.extra["per-token paired ratio"] > 0  # the session alone, timed too
        assert math.isfinite(r.extra["check ms/call"]) and len(r.times_s) == 3
    assert os.environ["ZOO_CACHE"] == str(tmp_path / "user-cache")  # the bench's files went to its own folder
    assert not (tmp_path / "user-cache").exists()
    lines = formats_report.notes(rows)
    assert len(lines) == 2 and "zoo llama.cpp backend" in lines[1] and "bare llama.cpp Q4_0" in lines[1]
    assert "per token alone (its session, no per-call weights check)" in lines[1]


def test_every_llama_cpp_candidate_runs_the_whole_prompt_at_each_call(tmp_path, monkeypatch):
    """The bare loop, the backend and its session start each call from an empty cache, as the zoo's paths do
    (llama-cpp-python's generate and the backend would otherwise run only the last token of a prompt they hold)."""
    import llama_cpp

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    base = randomize_(zoo.create_model("mobilellm_125m", **TINY), 0).eval()
    prompt = torch.randint(0, base.config.vocab_size, (1, 5), generator=torch.Generator().manual_seed(0))
    found, close = formats._llama_cpp_decoders(base, "mobilellm_125m", "f32", tmp_path, prompt, 3)
    evaluated, real_eval = [], llama_cpp.Llama.eval
    monkeypatch.setattr(
        llama_cpp.Llama, "eval", lambda self, ids: (evaluated.append(len(ids)), real_eval(self, ids))[1]
    )
    try:
        assert len(found) == 3
        for label, run in found.items():
            for _ in range(2):
                evaluated.clear()
                assert len(run()) == 3
                assert evaluated[0] == 5, (label, evaluated)  # the prompt, whole, at the second call too
    finally:
        close()


def test_cli_refuses_unknown_formats_and_vision_models(capsys):
    assert zoo_main(["bench", "formats", "--models", "mobilellm_125m", "--formats", "fp64"]) == 2
    assert "unknown weight format" in capsys.readouterr().err
    assert zoo_main(["bench", "formats", "--models", "poolformer_s12", "--formats", "fp32"]) == 2
    assert "language models" in capsys.readouterr().err


def test_a_family_without_a_transformers_twin_is_said_so_for_the_formats_bench():
    """MoR's config has no Llama mapping: build_pair says so (a ValueError the formats bench turns into zoo-only rows)."""
    from zoo.bench.lm import build_pair

    with pytest.raises(ValueError, match="no stock LlamaForCausalLM twin"):
        build_pair("mor_135m", torch.float32, **tiny_lm_args("mor_135m"))


def _tiny_formats(tmp_path):
    """A tiny LM at fp32 and int8 and its GGUF files at the same bits (F32, Q8_0)."""
    base = randomize_(zoo.create_model("mobilellm_125m", **TINY), 0).eval()
    models = {"fp32": base, "int8": formats._quantized(base, "int8")}
    ggufs = {}
    for fmt, gguf_type in (("fp32", "f32"), ("int8", "q8_0")):
        export(base, "gguf", tmp_path / gguf_type, model_name="mobilellm_125m", quantize=gguf_type)
        ggufs[fmt] = tmp_path / gguf_type / "model.gguf"
    return models, ggufs


@pytest.mark.slow  # 4-11 s (a compile): outside the 4-minute default run
@pytest.mark.export
def test_prefill_rows_time_every_format_beside_llama_cpp_prompt_processing(tmp_path, one_thread):
    models, ggufs = _tiny_formats(tmp_path)
    rows = formats.prefill_rows("mobilellm_125m", models, ggufs, {}, 16, runs=1, warmup=0)
    assert [(r.setting, r.peer, r.candidate) for r in rows] == [
        ("prefill 16 fp32", "llama.cpp f32", "zoo fp32 compiled"),
        ("prefill 16 int8", "llama.cpp q8_0", "zoo int8 compiled"),
    ]
    for r in rows:
        assert r.unit == "tok/s" and r.rate > 0 and r.peer_rate > 0 and r.extra["zoo eager"] > 0
        assert r.extra["eager vs llama.cpp"] == pytest.approx(r.extra["zoo eager"] / r.peer_rate)
        assert r.extra["llama.cpp n_batch"] == 16 and r.target is None  # the 0.8x target is at 512 tokens
        assert set(r.times_s) == {r.candidate, r.candidate.replace("compiled", "eager"), r.peer}
        assert r.rate == pytest.approx(16 / statistics.median(r.times_s[r.candidate]))
    # without a GGUF (a family llama.cpp has no graph for): the zoo's rates alone
    (alone,) = formats.prefill_rows("mobilellm_125m", {"fp32": models["fp32"]}, {}, {}, 8, runs=1, warmup=0)
    assert alone.peer == "-" and alone.rate > 0 and math.isnan(alone.peer_rate) and alone.target is None


def test_prefill_ratios_against_llama_cpp():
    rate = {"zoo int4 compiled": 80.0, "zoo int4 eager": 60.0, "llama.cpp q4_0": 100.0, "zoo pte 8da4w": 90.0}
    row = formats.prefill_row("m", "int4", 512, rate, runs=3)
    assert (row.setting, row.peer, row.peer_rate, row.rate) == ("prefill 512 int4", "llama.cpp q4_0", 100.0, 80.0)
    assert row.ratio == pytest.approx(0.8) and row.target == 0.8 and row.meets_target
    assert row.extra["eager vs llama.cpp"] == pytest.approx(0.6)
    assert row.extra["pte vs llama.cpp"] == pytest.approx(0.9) and row.extra["llama.cpp type"] == "Q4_0"
    (line,) = formats_report.notes([row])
    assert line.startswith("m int4 prefill 512: zoo compiled 0.80x, eager 0.60x, pte 0.90x llama.cpp Q4_0")
    assert line.endswith("(n_batch = n_ubatch = 512) (>= 0.8x: ok)")
    slower = formats.prefill_row("m", "int4", 512, {**rate, "zoo int4 compiled": 79.0}, runs=3)
    assert not slower.meets_target and formats_report.notes([slower])[0].endswith("(>= 0.8x: MISS)")
    short = formats.prefill_row("m", "int8a8", 128, {"zoo int8a8 compiled": 5.0, "zoo int8a8 eager": 4.0}, runs=1)
    assert short.peer == "-" and short.target is None and "pte vs llama.cpp" not in short.extra


def test_quality_pairs_are_every_weight_and_activation_width():
    assert formats.QUALITY_PAIRS == ("int8a16", "int8a8", "int4a16", "int4a8")
    assert formats.quality_pairs(formats.DEFAULT_FORMATS) == list(formats.QUALITY_PAIRS)
    assert formats.quality_pairs(["fp32", "bf16"]) == []
    assert formats.quality_pairs(["fp32", "int8"]) == ["int8a16", "int8a8"]
    assert formats.quality_pairs(["int4a8"]) == ["int4a16", "int4a8"]
    for pair in formats.QUALITY_PAIRS:  # each pair is a format of its own, at its weights' GGUF type
        assert formats.FORMATS[pair][1] == formats.FORMATS[pair[:4]][1]
        assert f"ppl {pair}" in formats.TARGETS
    extra = {"ppl a8 vs fp32": 0.004, "agreement a8": 0.9, "ppl a16 vs fp32": 0.001, "agreement a16": 1.0}
    lines = formats_report._pair_lines("m", "int8", extra)
    assert [line.split(" (")[0] for line in lines] == ["m int8a16", "m int8a8"]
    assert "+0.40% vs fp32 (<= 0.5%: ok), greedy agreement with fp32 90%" in lines[1]


def test_prefill_lengths_from_the_command_line():
    assert formats.parse_prefill("128,512") == (128, 512)
    assert formats.parse_prefill("512,512") == (512,) and formats.parse_prefill("0") == ()


@pytest.mark.parametrize("bad", ["abc", "-5", "0,128", "", "128,", "12.5"])
def test_bad_prefill_values_are_one_line_and_exit_2(bad, capsys):
    assert zoo_main(["bench", "formats", "--models", "mobilellm_125m", "--formats", "fp32", "--prefill", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--prefill takes comma-separated prompt lengths" in err[0] and repr(bad) in err[0]


def test_a_prefill_prompt_longer_than_the_context_is_refused():
    with pytest.raises(ValueError, match="holds 128 positions, so a prefill prompt has at most 127 tokens"):
        formats.compare("mobilellm_125m", ["fp32"], quality_run=None, prefill=(64, 200), **TINY)
