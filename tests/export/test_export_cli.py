"""`zoo export` and `zoo.export(...)`: sources (name, model folder), the deployment folder, errors.

The per-model export checks live in test_export.py (vision, pt2/ONNX), test_export_lm.py (compiled decode) and
test_export_gguf.py (llama.cpp); this file is about what every format shares.
"""

import json

import pytest
import torch
from small_lms import SMALL
from tolerances import assert_float32_close, in_float64

import zoo
from zoo.cli import main
from zoo.export import ExportError

TINY = {"num_classes": 4, "dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1]}
TINY_SIZE = "3,64,64"


pytestmark = [pytest.mark.export, pytest.mark.usefixtures("one_thread")]  # tests/conftest.py


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_cli_exports_a_registered_name_with_its_deployment_files(tmp_path, capsys):
    out = tmp_path / "pt2"
    args = ["export", "poolformer_s12", "--format", "pt2", "--out", str(out), "--check", "--input-size", TINY_SIZE]
    assert main(args + ["--model-args", json.dumps(TINY)]) == 0
    printed = capsys.readouterr().out
    assert "-> ok" in printed and "model.pt2" in printed
    assert {p.name for p in out.iterdir()} == {
        "model.pt2",
        "README.md",
        "config.json",
        "preprocessing.json",
        "export.json",
    }
    report = json.loads((out / "export.json").read_text())
    assert report["check"]["ok"] and report["check"]["max_rel_diff"] <= 1e-4
    assert [i["input_shape"][0] for i in report["check"]["inputs"]] == [1, 3]  # two batch sizes: dynamic batch
    config = json.loads((out / "config.json").read_text())
    assert config["model_args"]["dims"] == TINY["dims"] and "hf_hub_sha256" not in config
    pre = json.loads((out / "preprocessing.json").read_text())
    cfg = zoo.create_model("poolformer_s12", **TINY).pretrained_cfg
    assert pre["input_size"] == [3, 64, 64] and pre["mean"] == list(cfg["mean"]) and pre["crop_pct"] == cfg["crop_pct"]
    card = (out / "README.md").read_text()
    assert "## Deployment" in card and "torch.export.load" in card
    assert "| sha256 |" not in card and "model.safetensors" not in card  # the artefact holds the weights


@pytest.mark.slow
def test_export_from_a_model_folder_rebuilds_its_architecture(tmp_path):
    torch.manual_seed(0)
    model = zoo.create_model("caformer_s18", **TINY).eval()
    folder = zoo.publish.export_pretrained(model, tmp_path / "folder", model_kwargs=TINY, latency_runs=0)
    result = zoo.export(str(folder), "onnx", tmp_path / "onnx", input_size=(3, 64, 64), check=True)
    assert result.check["ok"], result.check
    import onnxruntime as ort

    x = torch.randn(2, 3, 64, 64)
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want, want64 = model(x), in_float64(model)(x.double())
    # the folder's weights, not random: onnxruntime's kernels within 4x eager's own float32 error against float64
    assert_float32_close(torch.from_numpy(got), want, want64, msg="onnxruntime")
    assert json.loads((tmp_path / "onnx" / "config.json").read_text())["model_args"]["dims"] == TINY["dims"]


@pytest.mark.slow
def test_onnx_int8_writes_a_second_file_and_reports_it(tmp_path, capsys):
    model = zoo.create_model("convformer_s18", **TINY).eval()
    result = zoo.export(model, "onnx", tmp_path, quantize="int8", check=True, input_size=(3, 64, 64))
    assert result.files == ["model.onnx", "model.int8.onnx"]
    assert main(["run", str(tmp_path)]) == 0  # the float file, by onnxruntime
    assert "onnx (onnxruntime): input (1, 3, 64, 64) -> logits (1, 4)" in capsys.readouterr().out
    assert (tmp_path / "model.int8.onnx").stat().st_size < (tmp_path / "model.onnx").stat().st_size
    int8 = result.check["model.int8.onnx"]
    assert int8["ok"] and int8["min_cosine"] >= 0.98 and int8["max_abs_diff"] > 0  # quantized: close, not equal
    with pytest.raises(ExportError, match="int8"):
        zoo.export(model, "onnx", tmp_path / "bad", quantize="int3", input_size=(3, 64, 64))


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_slak_is_exported_in_its_fused_form_and_the_model_is_left_alone(tmp_path):
    model = zoo.create_model("slak_tiny", num_classes=3, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)).eval()
    result = zoo.export(model, "pt2", tmp_path, input_size=(3, 64, 64), check=True)
    assert result.check["ok"], result.check
    assert not model.deploy  # the caller's training-form model is not re-parameterised in place
    program = torch.export.load(result.path)
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("batch_norm" in op for op in ops), sorted(ops)  # BatchNorm folded into the kernels


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    # a vision model to an LM-only format
    assert main(["export", "poolformer_s12", "--format", "gguf", "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert "not for image-classification" in err and "pt2, onnx" in err
    # an unknown name suggests close ones
    assert main(["export", "poolformer_s1", "--format", "pt2", "--out", str(tmp_path / "u")]) == 2
    assert "poolformer_s12" in capsys.readouterr().err
    # a bad input size
    with pytest.raises(ExportError, match="input_size"):
        zoo.export(zoo.create_model("poolformer_s12", **TINY), "pt2", tmp_path / "s", input_size=(3, 0, 64))
    # a module without an architecture name
    with pytest.raises(ExportError, match="model_name"):
        zoo.export(torch.nn.Linear(2, 2), "pt2", tmp_path / "m")


def test_cli_exports_a_language_model_folder_with_its_tokenizer(tmp_path, capsys):
    from zoo.data.text import bundled_corpus, train_bpe_tokenizer

    tok = train_bpe_tokenizer(list(bundled_corpus().values())[:40], 300, tmp_path / "tokenizer.json")
    kwargs = dict(SMALL, vocab_size=tok.get_vocab_size())
    torch.manual_seed(0)
    model = zoo.create_model("mobilellm_125m_ls", **kwargs).eval()
    folder = zoo.publish.export_pretrained(
        model, tmp_path / "lm", model_kwargs=kwargs, tokenizer_file=tmp_path / "tokenizer.json", latency_runs=0
    )
    out = tmp_path / "gguf"
    assert main(["export", str(folder), "--format", "gguf", "--out", str(out), "--check"]) == 0
    assert "greedy tokens equal: True" in capsys.readouterr().out
    assert (out / "tokenizer.json").is_file() and (out / "model.gguf").is_file()
    report = json.loads((out / "export.json").read_text())
    assert report["check"]["tokens_equal"] and report["check"]["tokenizer_equal"]
    card = (out / "README.md").read_text()
    assert "for llama.cpp" in card and "from llama_cpp import Llama" in card
    # zoo run FOLDER: llama.cpp continues a seeded prompt; the same seed prints the same
    runs = []
    for _ in range(2):
        assert main(["run", str(out), "--prompt-tokens", "4", "--max-new-tokens", "3", "--seed", "1"]) == 0
        runs.append([line for line in capsys.readouterr().out.splitlines() if "ids:" in line])
    assert runs[0] == runs[1] and len(json.loads(runs[0][1].split(":", 1)[1])) == 3


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_pooling_stages_export_channels_first(tmp_path):
    """PoolFormer's exported graph runs its stages channels-first: no transpose pair around every pooling and norm
    (what made its ONNX slower than timm's), and still equal to eager."""
    import onnx

    model = zoo.create_model("poolformer_s12", **TINY).eval()
    result = zoo.export(model, "onnx", tmp_path, input_size=(3, 64, 64), check=True)
    assert result.check["ok"], result.check
    ops = [node.op_type for node in onnx.load(result.path).graph.node]
    assert ops.count("AveragePool") == 4 and ops.count("Transpose") <= 2, ops.count("Transpose")
    assert "Gelu" in ops  # opset 20's native op, not an erf expansion
