"""The `zoo` command and `python -m zoo`."""

import json
import subprocess
import sys

import pytest
import torch
from small_lms import SMALL, lm_representatives, text_generation_models, tiny_lm_args

import zoo
from zoo.cli import main


def test_list(capsys):
    assert main(["list", "poolformer_*"]) == 0
    out = capsys.readouterr().out
    assert "poolformer_s12" in out and "11.9M" in out and "77.2" in out
    assert "caformer" not in out


def test_info_is_json(capsys):
    assert main(["info", "poolformer_s12"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["reference"]["params"] == 11_915_176


def test_unknown_model_exits_2_with_suggestions(capsys):
    assert main(["info", "poolformer_s1"]) == 2
    assert "Did you mean: poolformer_s12" in capsys.readouterr().err


def _run_lines(capsys, argv) -> list[str]:
    """The output of `zoo run`, less the line that times it."""
    assert main(["run", *argv]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if " ms " not in line]


def test_run(capsys, one_thread):
    """A seeded vision run: the same seed prints the same classes (random init and input), another seed not."""
    first = _run_lines(capsys, ["poolformer_s12", "--img-size", "64"])
    assert "seed 0" in first[0] and any("top-5" in line for line in first)
    assert _run_lines(capsys, ["poolformer_s12", "--img-size", "64", "--seed", "0"]) == first
    assert _run_lines(capsys, ["poolformer_s12", "--img-size", "64", "--seed", "1"])[1:] != first[1:]
    assert main(["run", "poolformer_s12", "--img-size", "64"]) == 0
    timing = capsys.readouterr().out
    assert "1 thread)" in timing and "1 threads" not in timing


# every registered LM, one per distinct tiny structure (tests/small_lms.py): full-size LMs take seconds to build,
# so the command runs each at its tiny config
@pytest.mark.parametrize("name", lm_representatives(text_generation_models()))
def test_run_generates_from_a_language_model(name, monkeypatch, capsys, one_thread):
    """`zoo run` on a language model continues a seeded random prompt (it raised KeyError: 'input_size')."""
    tiny = tiny_lm_args(name)
    monkeypatch.setattr("zoo.run_cli.create_model", lambda *a, **kw: zoo.create_model(*a, **kw, **tiny))
    with torch.device("meta"):
        context = zoo.create_model(name, **tiny).config.max_position_embeddings
    first = _run_lines(capsys, [name, "--batch-size", "2", "--max-new-tokens", "5"])
    ids = {line.split(":")[0].strip(): json.loads(line.split(":", 1)[1]) for line in first if "ids of" in line}
    assert len(ids["prompt ids of sequence 0"]) == 8 and len(ids["generated ids of sequence 0"]) == 5
    vocab = tiny["vocab_size"]
    assert all(0 <= i < vocab for i in ids["prompt ids of sequence 0"] + ids["generated ids of sequence 0"])
    assert "no tokenizer" in first[-1]
    assert _run_lines(capsys, [name, "--batch-size", "2", "--max-new-tokens", "5"]) == first  # seeded
    assert main(["run", name, "--max-new-tokens", f"{context + 1}"]) == 2  # past the context: one line, exit 2
    assert f"context length of {context}" in capsys.readouterr().err


def test_run_decodes_with_the_tokenizer_in_the_model_folder(tmp_path, capsys, one_thread):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    model = zoo.create_model("mobilellm_125m", **dict(SMALL, vocab_size=40))
    model.save_pretrained(tmp_path)
    tokenizer = Tokenizer(models.WordLevel({f"w{i}": i for i in range(40)}, unk_token="w0"))
    tokenizer.pre_tokenizer, tokenizer.decoder = pre_tokenizers.Whitespace(), decoders.WordPiece()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    for argv in ([str(tmp_path)], ["mobilellm_125m", "--weights", str(tmp_path)]):
        lines = dict(line.split(":", 1) for line in _run_lines(capsys, argv) if ":" in line)
        generated = json.loads(lines["generated ids of sequence 0"])
        assert lines["generated text"].strip() == repr(" ".join(f"w{i}" for i in generated))


def test_profile_json(capsys):
    assert main(["profile", "poolformer_s12", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"] == 11_915_176
    assert result["flops"] == 2 * result["macs"]
    assert abs(result["macs"] / 1.82e9 - 1) < 0.02


@pytest.mark.slow
def test_python_dash_m_is_the_same_entry():
    proc = subprocess.run([sys.executable, "-m", "zoo", "list", "randformer_s1*"], capture_output=True, text=True)
    assert proc.returncode == 0 and "randformer_s12" in proc.stdout


@pytest.mark.parametrize("name", ["poolformer_s12", "convformer_s18"])
def test_bench_smoke(name, capsys):
    """One tiny round of the zoo-vs-timm benchmark: the same weights give the same features."""
    assert (
        main(
            [
                "bench",
                "vision",
                "--models",
                name,
                "--batch-sizes",
                "1",
                "--img-size",
                "64",
                "--runs",
                "1",
                "--warmup",
                "0",
                "--check",
            ]
        )
        == 0
    )


def test_list_shows_the_papers_nonzero_figures_for_sparse_models(capsys):
    assert main(["list", "slak_*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "non-zero params / GMACs (paper)" in lines[0]
    ref = zoo.model_info("slak_small")["reference"]
    row = next(line.split() for line in lines if line.startswith("slak_small "))
    assert row[2] == f"{ref['params'] / 1e6:.1f}M" and row[3] == f"{ref['gmacs']:.2f}"  # dense
    assert row[5:8] == [f"{ref['nonzero_params'] / 1e6:.1f}M", "/", f"{ref['nonzero_macs'] / 1e9:.2f}"]
    assert lines[-1].startswith("note:") and "dense" in lines[-1] and "non-zero" in lines[-1]
    assert main(["list", "poolformer_*"]) == 0  # dense models only: no such column, no note
    out = capsys.readouterr().out
    assert "non-zero" not in out and "note:" not in out


def test_info_says_the_paper_counts_nonzero_weights(capsys):
    assert main(["info", "slak_tiny"]) == 0
    ref = json.loads(capsys.readouterr().out)["reference"]
    assert ref["nonzero_params"] < ref["params"] and ref["nonzero_macs"] < ref["macs"] and ref["sparsity"] == 0.4
    assert "paper" in ref["nonzero_convention"] and "non-zero" in ref["dense_vs_nonzero"]
    assert main(["info", "poolformer_s12"]) == 0
    assert "dense_vs_nonzero" not in json.loads(capsys.readouterr().out)["reference"]


def test_profile_text_labels_dense_and_nonzero(monkeypatch, capsys):
    """A reduced SLaK with 40% of its conv weights zeroed: the text shows both figures, as zoo.profile gives them."""
    import torch
    from torch import nn

    real_profile, results = zoo.profile, []

    def sparse_small_slak(name, **kwargs):
        model = zoo.create_model(
            name, depths=(1, 1, 1, 1), dims=(16, 24, 40, 56), kernel_size=(9, 7, 7, 5, 5), num_classes=10
        )
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Conv2d):
                    m.weight.mul_((torch.rand(m.weight.shape, generator=gen) >= 0.4).float())
        results.append(real_profile(model, **kwargs))
        return results[-1]

    monkeypatch.setattr("zoo.profile_cli.profile", sparse_small_slak)  # the function the command calls
    assert main(["profile", "slak_tiny", "--input-size", "3,64,64", "--no-cross-check"]) == 0
    out = capsys.readouterr().out
    (result,) = results
    assert result.nonzero_params < result.params and result.nonzero_macs < result.macs
    lines = {line.split(":")[0].strip(): line for line in out.splitlines() if ":" in line}
    assert f"{result.params:,}" in lines["params (dense)"] and "zeros included" in lines["params (dense)"]
    assert f"{result.nonzero_params:,}" in lines["params (non-zero)"]
    assert "not exactly zero" in lines["params (non-zero)"]
    assert f"{result.macs / 1e9:.3f} G" in lines["MACs (dense)"]
    assert f"{result.nonzero_macs / 1e9:.3f} G" in lines["MACs (non-zero)"]
    assert f"({result.nonzero_macs / result.macs:.1%} of dense)" in lines["MACs (non-zero)"]
    assert "density" in lines["MACs (non-zero)"]


def test_convert_an_authors_slak_checkpoint_into_a_zoo_folder(tmp_path, capsys):
    """`zoo convert` reads the authors' `{"model": ...}` layout and writes a folder the zoo loads back exactly."""
    import torch

    from zoo.bench.reference.slak import make_authors_state_dict, reference_forward

    model_args = dict(depths=[1, 1, 1, 1], dims=[16, 24, 40, 56], kernel_size=[13, 11, 9, 7, 5], num_classes=10)
    spec = {k: v for k, v in model_args.items() if k != "dims"} | {"base_dims": model_args["dims"]}  # widths x 1.3
    sd = make_authors_state_dict(spec, seed=2)
    src = tmp_path / "checkpoint-best.pth"
    torch.save({"model": sd}, src)
    args = json.dumps({**model_args, "deploy": True})
    assert main(["convert", "slak_tiny", str(src), str(tmp_path / "out"), "--model-args", args]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    files = {f.name for f in (tmp_path / "out").iterdir()}
    assert {"model.safetensors", "config.json", "README.md"} <= files

    back = zoo.create_model(
        "slak_tiny",
        pretrained=True,
        **json.loads(args),
        pretrained_cfg_overlay={"file": str(tmp_path / "out" / "model.safetensors")},
    ).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference_forward(sd, x)
        err = (back(x) - expected).abs().max().item()
    assert err <= 1e-4 * expected.abs().max().item()

    # bad input: clear errors, nothing written
    assert main(["convert", "slak_tiny", str(src), str(tmp_path / "bad"), "--model-args", "{num_classes"]) == 2
    assert "must be a JSON object" in capsys.readouterr().err
    assert main(["convert", "slak_tiny", str(src), str(tmp_path / "bad")]) == 2  # 1000-class, 224-width model
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["bench", "vision", "--threads", "0"], "--threads: 0 is out of range"),
        (["bench", "vision", "--runs", "0"], "--runs: 0 is out of range"),
        (["bench", "vision", "--img-size", "0"], "--img-size: 0 is out of range"),
        (["bench", "vision", "--warmup", "-1"], "--warmup: -1 is out of range"),
        (["run", "convnet_d3", "--batch-size", "0"], "--batch-size: 0 is out of range"),
        (["run", "convnet_d3", "--batch-size", "-2"], "--batch-size: -2 is out of range"),
        (["run", "convnet_d3", "--img-size", "100000"], "--img-size: 100000 is out of range"),
        (["run", "convnet_d3", "--batch-size", "two"], "expected a whole number"),
    ],
)
def test_counts_out_of_range_are_usage_errors_before_any_work(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and words in err.splitlines()[-1], err


def test_eval_finds_the_tokenizer_in_the_model_folder(tmp_path, one_thread):
    """eval.py -m FOLDER on a language model: the tokenizer.json saved beside its weights."""
    from zoo.data import text
    from zoo.evaluate import evaluate_model

    model = zoo.create_model("mobilellm_125m", **dict(SMALL, vocab_size=300))
    folder = tmp_path / "model"
    model.save_pretrained(folder, format="zoo")
    text.train_bpe_tokenizer(list(text.bundled_corpus().values())[:40], 300, folder / "tokenizer.json")
    row = evaluate_model(str(folder), "pydoc", pretrained=True, seq_len=32, max_batches=1, batch_size=2, profile=False)
    assert row["perplexity"] > 1


@pytest.mark.parametrize("command", [row[0] for row in zoo.cli.COMMANDS])
def test_ctrl_c_in_any_command_is_one_line_and_status_130(command, monkeypatch, capsys):
    """Ctrl-C during any command gives train.py's answer: one line on stderr and status 130, no traceback."""

    def interrupted(args):
        raise KeyboardInterrupt

    rows = tuple((name, h, add, interrupted if name == command else run) for name, h, add, run in zoo.cli.COMMANDS)
    monkeypatch.setattr(zoo.cli, "COMMANDS", rows)
    argv = {"list": [], "cards": [], "bench": ["table"], "data": ["shard", "in", "--out", "out"]}.get(command)
    if argv is None:  # the commands that take a name or a folder first
        argv = {"condense": ["--data", "digits", "--method", "dm", "--ipc", "1", "--out", "o"]}.get(command, ["x"])
        argv = argv + (["--repo", "o/n"] if command == "publish" else [])
        argv = argv + (["ckpt", "out"] if command == "convert" else [])
        argv = argv + (["--format", "onnx"] if command == "export" else [])
    assert main([command, *argv]) == 130
    err = capsys.readouterr().err
    assert err.splitlines() == [f"zoo {command}: interrupted; nothing half-written was kept: run the command again"]


def test_ctrl_c_in_eval_py_is_one_line_and_writes_no_results(tmp_path, monkeypatch, capsys):
    from zoo import evaluate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "evaluate_model", interrupted)
    out = tmp_path / "e.json"
    assert evaluate.main(["--model", "poolformer_s12", "--data", "digits", "--json", str(out)]) == 130
    assert capsys.readouterr().err.splitlines() == [
        "eval.py: interrupted; no results file was written: run the command again"
    ]
    assert list(tmp_path.iterdir()) == []


def test_profile_cross_check_says_which_figure_it_compares(monkeypatch, capsys):
    """The cross-check compares the products both counters count; the line gives that figure and what the headline
    MACs add to it, so the two figures printed are never mistaken for each other."""
    import re

    real_profile, results = zoo.profile, []

    def recorded(name, **kwargs):
        results.append(real_profile(name, **kwargs))
        return results[-1]

    monkeypatch.setattr("zoo.profile_cli.profile", recorded)
    assert main(["profile", "poolformer_s12", "--input-size", "3,64,64"]) == 0
    (result,) = results
    line = next(x for x in capsys.readouterr().out.splitlines() if "cross-check" in x)
    products, rest = (float(v) for v in re.findall(r"this count ([\d.]+) G.*add ([\d.]+) G", line)[0])
    assert products == pytest.approx(result.flop_counter_check["fvcore_macs"] / 1e9, abs=5e-4)
    assert products + rest == pytest.approx(result.macs / 1e9, abs=1e-3)  # together: the headline figure


def test_zoo_train_and_eval_are_train_py_and_eval_py_by_their_own_name(capsys):
    """`zoo train ARGS` is `python train.py ARGS` and `zoo eval ARGS` is `python eval.py ARGS` (their options and
    --help are those scripts'), and their messages name the command typed."""
    assert main(["train"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("zoo train: error: give --config RECIPE.yaml")
    assert main(["eval", "--model", "no_such_model", "--data", "digits"]) == 2
    assert capsys.readouterr().err.startswith("zoo eval: error: no_such_model: Unknown model")
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0 and "usage: zoo train [-h] [--config CONFIG]" in capsys.readouterr().out
