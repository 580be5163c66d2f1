"""Every LM folder the zoo writes is a complete transformers folder, read by a transformers user who never imports
zoo: ``AutoTokenizer`` has bos/eos/pad and pads a batch (``tokenizer_config.json``), a folder stock transformers
cannot express loads with ``trust_remote_code=True`` (``auto_map`` + ``configuration_zoo.py`` / ``modeling_zoo.py``)
and gives the zoo's logits, an int8 folder says so in ``quantization_config``, and ``lm_eval``'s CLI (``slow``; skipped
where lm-eval is not installed) evaluates a MobileLLM, an MoR and an int8 folder on a tiny local task.

The models are tiny and random (tests/small_lms.py's SMALL), the tokenizer a byte-level BPE trained on the bundled
corpus; everything is built here, offline.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import small_lms
import torch
import transformers  # the dev extra (>= 5): a missing install fails, it does not skip

import zoo
from zoo.cli import main
from zoo.data.text import bundled_corpus, special_token_ids, train_bpe_tokenizer
from zoo.export.core import TEXT, ExportSpec, write_deployment_files
from zoo.publish import export_pretrained

pytestmark = pytest.mark.export

# SMALL, its vocabulary the tokenizer's (byte-level BPE: 256 bytes, the end-of-text token, a few merges)
VOCAB = 300
SMALL = dict(small_lms.SMALL, vocab_size=VOCAB, max_position_embeddings=64)
RECURSIVE = dict(SMALL, num_hidden_layers=5)  # middle_cycle, 3 recursions: 1 shared block between unique ends
FOLDERS = {  # kind -> (registry name, kwargs): a stock Llama folder, a recursive (MoR) one, an int8 one
    "mobilellm": ("mobilellm_125m", SMALL),
    "mor": ("mor_135m", RECURSIVE),
    "int8": ("mobilellm_125m", dict(SMALL, quantize="int8")),
}
IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 250], [11, 12, 13, 14, 15, 16, 17]])


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_bpe_tokenizer(list(bundled_corpus().values())[:20], VOCAB, path)
    return path


def _tokenizer_ids(tokenizer_file: Path) -> dict:
    from tokenizers import Tokenizer

    return special_token_ids(Tokenizer.from_file(str(tokenizer_file)))


def _folder(kind: str, out: Path, tokenizer_file: Path) -> tuple[Path, torch.nn.Module]:
    """The zoo's published folder of ``kind`` (as ``zoo publish`` / train.py's export write it) and its model."""
    name, kwargs = FOLDERS[kind]
    kwargs = {**kwargs, **_tokenizer_ids(tokenizer_file)}  # as train.py sets them from the tokenizer
    torch.manual_seed(0)
    model = zoo.bench.harness.randomize_(zoo.create_model(name, **kwargs), 0).eval()
    export_pretrained(model, out, model_kwargs=kwargs, tokenizer_file=tokenizer_file, latency_runs=0)
    return out, model


def _logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits


def _fresh_env(tmp_path: Path) -> dict:
    """A subprocess's environment: offline, transformers' remote-code cache under ``tmp_path``."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONWARNINGS": ""}


# ----------------------------------------------------------------------------------------------------------------
# AutoTokenizer


def test_auto_tokenizer_has_bos_eos_pad_and_pads_a_batch(tmp_path, tokenizer_file):
    folder, model = _folder("mobilellm", tmp_path / "m", tokenizer_file)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["model_max_length"] == 64
    assert "tokenizer_config.json" in zoo.publish.exported_files(folder)  # uploaded with the folder

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    eos = model.config.eos_token_id
    assert tok.eos_token_id == eos and tok.eos_token == "<|endoftext|>"
    # the zoo's BPE has one special token: bos and pad are it, as GPT-2's are and as users set pad = eos
    assert tok.bos_token_id == eos and tok.pad_token_id == eos
    batch = tok(["a", "bb cc"], padding=True, return_tensors="pt")
    plain = [e.ids for e in zoo.data.lm_tokenizer.load_lm_tokenizer(tokenizer_file).encode_batch(["a", "bb cc"])]
    assert len(plain[0]) < len(plain[1])  # the first is padded
    width = len(plain[1])
    assert batch["input_ids"].shape == (2, width)
    for row, ids, mask in zip(plain, batch["input_ids"].tolist(), batch["attention_mask"].tolist(), strict=True):
        pad = width - len(row)  # left padding: a decoder generates after the prompt
        assert ids == [eos] * pad + row and mask == [0] * pad + [1] * len(row)

    # batched generation from the padded batch: the transformers Llama folder gives the zoo's greedy tokens
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder)
    got = hf.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    expected = model.generate(batch["input_ids"], 4, attention_mask=batch["attention_mask"], pad_token_id=eos)
    assert torch.equal(got, expected)


def test_the_tokenizer_folders_own_config_and_chat_template_are_kept(tmp_path, tokenizer_file):
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(tokenizer_file, source / "tokenizer.json")
    template = "{% for m in messages %}<|endoftext|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    (source / "tokenizer_config.json").write_text(json.dumps({"chat_template": template, "model_max_length": 32}))
    (source / "chat_template.jinja").write_text(template)
    folder, _ = _folder("mor", tmp_path / "m", source / "tokenizer.json")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["chat_template"] == template and config["model_max_length"] == 32  # the folder's own win
    assert config["eos_token"] == "<|endoftext|>" and (folder / "chat_template.jinja").read_text() == template
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text == "<|endoftext|>user: hi\n" and tok.pad_token == "<|endoftext|>"


def test_export_folders_carry_the_tokenizer_config_and_remote_code(tmp_path, tokenizer_file):
    """``zoo export``'s deployment folder (its files beside the artefact, as every LM format writes them)."""
    folder, _ = _folder("mor", tmp_path / "m", tokenizer_file)
    model = zoo.create_model(str(folder), pretrained=True)
    deployment = tmp_path / "onnx"
    deployment.mkdir()
    spec = ExportSpec("mor_135m", TEXT, "onnx")
    write_deployment_files(model, deployment, spec, tokenizer=folder / "tokenizer.json", model_kwargs=RECURSIVE)
    for name in ("tokenizer.json", "tokenizer_config.json", "configuration_zoo.py", "modeling_zoo.py"):
        assert (deployment / name).read_bytes() == (folder / name).read_bytes(), name
    tok = transformers.AutoTokenizer.from_pretrained(deployment)
    assert tok.pad_token_id == tok.eos_token_id == _tokenizer_ids(tokenizer_file)["eos_token_id"]
    config = transformers.AutoConfig.from_pretrained(deployment, trust_remote_code=True)
    assert config.architecture == "mor_135m" and config.num_hidden_layers == RECURSIVE["num_hidden_layers"]


def test_zoo_convert_carries_the_checkpoints_tokenizer(tmp_path, tokenizer_file):
    """`zoo convert` of a transformers folder: the tokenizer beside the weights comes along, with its config."""
    folder, model = _folder("mor", tmp_path / "m", tokenizer_file)
    args = json.dumps({**RECURSIVE, **_tokenizer_ids(tokenizer_file)})
    assert main(["convert", "mor_135m", str(folder), str(tmp_path / "out"), "--model-args", args]) == 0
    out = tmp_path / "out"
    for name in ("tokenizer.json", "tokenizer_config.json", "configuration_zoo.py", "modeling_zoo.py"):
        assert (out / name).read_bytes() == (folder / name).read_bytes(), name
    assert transformers.AutoTokenizer.from_pretrained(out).pad_token == "<|endoftext|>"


# ----------------------------------------------------------------------------------------------------------------
# trust_remote_code in a process that never imports zoo

FRESH = textwrap.dedent(
    """
    import sys
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    folders, expected = sys.argv[1:-1], torch.load(sys.argv[-1], weights_only=True)
    ids = expected.pop("ids")
    # without trust_remote_code, transformers says what the folder needs (stdin is closed: no prompt)
    try:
        AutoModelForCausalLM.from_pretrained(folders[0])
        raise SystemExit("loaded custom code without trust_remote_code")
    except ValueError as e:
        assert "trust_remote_code=True" in str(e), e
    # with it, where zoo is not installed: the remote code says how to get it
    sys.modules["zoo"] = None
    try:
        AutoModelForCausalLM.from_pretrained(folders[0], trust_remote_code=True)
        raise SystemExit("loaded without the zoo package")
    except ImportError as e:
        assert "pip install zoo" in str(e), e
    del sys.modules["zoo"]
    for folder in folders:
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
        with torch.no_grad():
            logits = model(ids).logits
        # the zoo's logits up to float32 rounding (transformers computes on weights where the file's mmap puts them)
        diff, scale = (logits - expected[folder]).abs().max(), expected[folder].abs().max()
        assert logits.shape == expected[folder].shape and diff <= 1e-5 * scale, (folder, diff, scale)
        quant = getattr(model.config, "quantization_config", None)
        print("loaded", folder, type(model).__module__, type(model).__name__, getattr(quant, "quant_method", None),
              getattr(model, "is_quantized", False))
    """
)


def test_the_folders_remote_code_loads_them_with_the_zoos_logits(tmp_path, tokenizer_file, monkeypatch):
    """The default run's sibling of the fresh-process test below: the folder's own files, imported the way
    ``trust_remote_code=True`` imports them (transformers' module cache), load it with the zoo's logits."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    for kind in ("int8", "mor"):
        folder, model = _folder(kind, tmp_path / kind, tokenizer_file)
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        config_class = get_class_from_dynamic_module(auto_map["AutoConfig"], folder)
        model_class = get_class_from_dynamic_module(auto_map["AutoModelForCausalLM"], folder)
        # transformers imports each file under a hash of it and its relative imports: the names are what match
        assert model_class.__module__.endswith(".modeling_zoo") and config_class.__module__.endswith(
            ".configuration_zoo"
        )
        assert model_class.config_class.__name__ == config_class.__name__ == f"Zoo{type(model.config).__name__}"
        assert issubclass(model_class, zoo.export.hf_auto.MODEL_TYPES[model.model_type][1])
        hf = model_class.from_pretrained(folder)
        assert getattr(hf, "is_quantized", False) == (kind == "int8")
        diff, scale = (_logits(hf) - _logits(model)).abs().max(), _logits(model).abs().max()
        assert diff <= 1e-5 * scale, (kind, diff, scale)  # float32 rounding (see FRESH)


@pytest.mark.slow  # a fresh interpreter importing torch, transformers and zoo: 10-20 s
def test_a_fresh_process_loads_mor_and_int8_folders_with_trust_remote_code(tmp_path, tokenizer_file):
    expected, folders = {"ids": IDS}, []
    for kind in ("int8", "mor"):
        folder, model = _folder(kind, tmp_path / kind, tokenizer_file)
        config = json.loads((folder / "config.json").read_text())
        assert config["auto_map"] == {
            "AutoConfig": f"configuration_zoo.Zoo{type(model.config).__name__}",
            "AutoModelForCausalLM": f"modeling_zoo.{type(model).hf_architecture}",
        }
        expected[str(folder)] = _logits(model)
        folders.append(str(folder))
    config = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert "quantization_config" not in json.loads((tmp_path / "mor" / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "zoo", "bits": 8, **config["quantization"]}
    torch.save(expected, tmp_path / "expected.pt")
    run = subprocess.run(
        [sys.executable, "-c", FRESH, *folders, str(tmp_path / "expected.pt")],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env=_fresh_env(tmp_path),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    loaded = [line.split("loaded ", 1)[1].split() for line in run.stdout.splitlines() if "loaded " in line]
    # the first folder through its remote code (transformers_modules.<folder>.<hash>.modeling_zoo), quantized in
    # transformers' own terms; the remote code imported zoo, which registered its classes, and transformers prefers
    # a registered class to a folder's code: the second loads through zoo.export.hf_auto's
    assert [row[0] for row in loaded] == folders
    module, name, quant_method, is_quantized = loaded[0][1:]
    assert module.startswith("transformers_modules.int8.") and module.endswith(".modeling_zoo")
    assert (name, quant_method, is_quantized) == ("MobileLLMForCausalLM", "zoo", "True")
    assert loaded[1][1:] == ["zoo.export.hf_auto", "RecursiveLMForCausalLM", "None", "False"]
    assert "Unknown quantization type" not in run.stderr


def test_transformers_save_pretrained_of_a_zoo_class_keeps_the_remote_code(tmp_path, tokenizer_file):
    folder, model = _folder("int8", tmp_path / "zoo", tokenizer_file)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder)  # zoo is imported here: no remote code needed
    assert hf.is_quantized and hf.quantization_method == "zoo"
    hf.save_pretrained(tmp_path / "hf")
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert saved["auto_map"] == json.loads((folder / "config.json").read_text())["auto_map"]
    assert saved["quantization_config"]["quant_method"] == "zoo"
    for name in ("configuration_zoo.py", "modeling_zoo.py"):
        assert (tmp_path / "hf" / name).read_text() == (folder / name).read_text()
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True)
    assert torch.equal(_logits(again), _logits(model))
    assert torch.equal(_logits(zoo.create_model(tmp_path / "hf", pretrained=True).eval()), _logits(model))


# ----------------------------------------------------------------------------------------------------------------
# lm_eval's CLI

TASK = """\
task: zoo_tiny_{kind}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
{body}
"""
LOGLIKELIHOOD = """\
output_type: loglikelihood
doc_to_text: "{{context}}"
doc_to_target: "{{continuation}}"
metric_list:
  - metric: perplexity
  - metric: acc
"""
GENERATE = """\
output_type: generate_until
doc_to_text: "{{context}}"
doc_to_target: "{{continuation}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
"""
DOCS = [
    {"context": "The value of", "continuation": " the expression"},
    {"context": "A class is", "continuation": " defined"},
    {"context": "def f(x):", "continuation": " return x"},
]


def _lm_eval_tasks(where: Path) -> Path:
    where.mkdir()
    data = where / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    for kind, body in (("loglikelihood", LOGLIKELIHOOD), ("generate", GENERATE)):
        (where / f"{kind}.yaml").write_text(TASK.format(kind=kind, data=data, body=body))
    return where


def _zoo_loglikelihood(model, tokenizer_file: Path, context: str, continuation: str) -> float:
    """The log-likelihood of ``continuation`` after ``context`` as lm_eval's hf model computes it (the pair encoded
    whole, the context's tokens split off; no BOS added)."""
    tok = zoo.data.lm_tokenizer.load_lm_tokenizer(tokenizer_file)
    whole = tok.encode(context + continuation).ids
    cont = whole[len(tok.encode(context).ids) :]
    logp = torch.log_softmax(_logits(model, torch.tensor([whole[:-1]])).double(), -1)[0]
    return float(sum(logp[len(whole) - len(cont) - 1 + i, t] for i, t in enumerate(cont)))


# lm_eval's CLI (a process importing lm_eval, datasets and transformers: about 30 s): CI's slow run on MoR's folder
# (the zoo's code, trust_remote_code), the Llama-shaped and int8 folders by hand (-m sweep); the tokenizer files
# it reads are the same for all three
@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", [k if k == "mor" else pytest.param(k, marks=pytest.mark.sweep) for k in sorted(FOLDERS)]
)
def test_lm_eval_cli_runs_on_the_folder(kind, tmp_path, tokenizer_file):
    if shutil.which("lm_eval") is None or importlib.util.find_spec("accelerate") is None:
        pytest.skip("lm-eval's hf model is not installed (pip install 'lm-eval[hf]'): its CLI is what this test runs")
    folder, model = _folder(kind, tmp_path / kind, tokenizer_file)
    tasks = _lm_eval_tasks(tmp_path / "tasks")
    model_args = f"pretrained={folder}" + (",trust_remote_code=True" if kind != "mobilellm" else "")
    command = ["lm_eval", "--model", "hf", "--model_args", model_args, "--include_path", str(tasks)]
    command += ["--tasks", "zoo_tiny_loglikelihood,zoo_tiny_generate", "--batch_size", "2", "--device", "cpu"]
    command += ["--output_path", str(tmp_path / "out"), "--log_samples"]
    env = {**_fresh_env(tmp_path), "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    print(run.stdout[-3000:])  # lm_eval's table: pytest -s shows it

    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]
    scores = results["zoo_tiny_loglikelihood"]
    assert scores["perplexity,none"] > 1 and 0 <= scores["acc,none"] <= 1
    assert 0 <= results["zoo_tiny_generate"]["exact_match,none"] <= 1
    # lm_eval's per-document log-likelihoods are the zoo model's own
    samples = next((tmp_path / "out").rglob("samples_zoo_tiny_loglikelihood_*.jsonl")).read_text().splitlines()
    assert len(samples) == len(DOCS)
    for line in samples:
        sample = json.loads(line)
        doc, (loglik, _greedy) = sample["doc"], sample["resps"][0][0]
        expected = _zoo_loglikelihood(model, tokenizer_file, doc["context"], doc["continuation"])
        assert abs(float(loglik) - expected) <= 1e-3 * max(1.0, abs(expected)), (doc, loglik, expected)
    generated = next((tmp_path / "out").rglob("samples_zoo_tiny_generate_*.jsonl")).read_text().splitlines()
    assert len(generated) == len(DOCS)  # every document got a generation (a padded batch of 2 and a batch of 1)
