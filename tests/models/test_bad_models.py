"""Bad model arguments and inputs, and honest profiles and cards (issue: reliability).

Each row is an input, the error it must raise and a fragment of the message; the profile and card checks assert
what a user reads: the same peak memory whatever ran first, MACs named MACs, no tracer warnings, plural-correct
and load-annotated latency lines.
"""

import ast
import importlib
import json
import logging
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import small_lms
import torch

import zoo
from zoo import publish
from zoo.cards import _latency_text
from zoo.profile import trim_heap
from zoo.publish import export_pretrained
from zoo.train.builders import build_distiller
from zoo.train.distill import DistillConfig, DistillError

ROOT = Path(__file__).resolve().parents[2]

# small widths and one block per stage: the same code paths as the full models, built in milliseconds
SMALL = {
    "poolformer_s12": dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
    "poolformerv2_s12": dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
    "identityformer_s12": dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
    "convformer_s18": dict(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1)),
    "caformer_s18": dict(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1)),
    "slak_tiny": dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
}


def _small(name: str, **kwargs):
    return zoo.create_model(name, num_classes=5, **SMALL.get(name, {}), **kwargs).eval()


@pytest.mark.parametrize("name", list(SMALL) + ["sret_tiny"])
def test_an_empty_batch_gives_an_empty_batch(name):
    model = _small(name) if name in SMALL else zoo.create_model(name, num_classes=5).eval()
    size = 32 if name in SMALL else 224
    with torch.no_grad():
        out = model(torch.zeros(0, 3, size, size))
        feats = model.forward_intermediates(torch.zeros(0, 3, size, size), intermediates_only=True)
    assert out.shape == (0, 5)
    assert all(f.shape[0] == 0 for f in feats)


BAD_ARGS = [
    # (model, kwargs, error, message fragment)
    ("poolformer_s12", dict(drop_path_rate=2.0), ValueError, "drop_path_rate is a probability in [0, 1)"),
    ("convformer_s18", dict(drop_path_rate=-0.1), ValueError, "drop_path_rate is a probability in [0, 1)"),
    ("caformer_s18", dict(drop_rate=1.0), ValueError, "drop_rate is a probability in [0, 1)"),
    ("poolformerv2_s12", dict(head_dropout=1.5), ValueError, "head_dropout is a probability in [0, 1)"),
    ("slak_tiny", dict(drop_path_rate=2.0), ValueError, "drop_path_rate is a probability in [0, 1)"),
    ("slak_tiny", dict(drop_rate="0.1"), ValueError, "drop_rate is a probability in [0, 1)"),
    ("sret_tiny", dict(drop_path_rate=1.0), ValueError, "drop_path_rate is a probability in [0, 1)"),
    ("sret_tiny", dict(drop_rate=float("nan")), ValueError, "drop_rate is a probability in [0, 1)"),
]


@pytest.mark.parametrize("name,kwargs,error,fragment", BAD_ARGS, ids=[f"{r[0]}-{r[1]}" for r in BAD_ARGS])
def test_bad_arguments_are_refused_at_build_time(name, kwargs, error, fragment):
    with pytest.raises(error) as info:
        zoo.create_model(name, **SMALL.get(name, {}), **kwargs)
    assert fragment in str(info.value)


BAD_NAMES = [
    # (name, error, message fragment): a path is named for what is (or is not) there, never "Unknown model"
    ("MISSING/model", zoo.UnknownModelError, "MISSING/model does not exist (no file or folder at MISSING/model)"),
    ("./no_such_folder", zoo.UnknownModelError, "./no_such_folder does not exist"),
    ("weights.safetensors", zoo.UnknownModelError, "weights.safetensors does not exist"),
    ("local-dir:MISSING/x", zoo.CheckpointError, "local-dir:MISSING/x: MISSING/x does not exist (no folder at"),
    ("FILE", zoo.UnknownModelError, "FILE is a file, not a model folder or a registered name: load it into its "
     "architecture, zoo.create_model(NAME, pretrained=True, pretrained_cfg_overlay={'file': 'FILE'})"),
    ("poolformer_s13", zoo.UnknownModelError, "Unknown model 'poolformer_s13'. Did you mean: poolformer_s36"),
    # a training run that has not written export/: how to write it, not a registered name's overlay
    ("RUN", zoo.CheckpointError, "RUN is a training run without export/ (its model folder): write it with "
     "`zoo publish RUN --repo ORG/NAME --no-push --out-dir RUN/export`"),
]  # fmt: skip


@pytest.mark.parametrize("name,error,fragment", BAD_NAMES, ids=[r[0] for r in BAD_NAMES])
def test_a_name_that_is_a_path_says_what_is_there(tmp_path, monkeypatch, name, error, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.pth").write_bytes(b"")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "args.yaml").write_text("model: poolformer_s12\n")
    missing, file, run = str(tmp_path / "missing"), "file.pth", "run"

    def fill(text: str) -> str:
        return text.replace("MISSING", missing).replace("FILE", file).replace("RUN", run)

    with pytest.raises(error) as info:
        zoo.create_model(fill(name))
    message = str(info.value)
    assert fill(fragment) in message, message
    assert "Unknown model" not in message or name == "poolformer_s13"


BAD_INPUTS = [
    # (model, input shape, error, message fragment)
    ("slak_tiny", (1, 3, 16, 16), ValueError, "SLaK downsamples by 32 and needs >= 32x32"),
    ("slak_tiny", (2, 3, 31, 64), ValueError, "needs >= 32x32"),
    ("poolformer_s12", (1, 3, 16, 16), ValueError, "MetaFormer downsamples by 32 and needs >= 32x32"),
    ("slak_tiny", (1, 1, 32, 32), ValueError, "build the model with in_chans=1"),
]


@pytest.mark.parametrize("name,shape,error,fragment", BAD_INPUTS, ids=[f"{r[0]}-{r[1]}" for r in BAD_INPUTS])
def test_bad_inputs_are_named(name, shape, error, fragment):
    model = _small(name)
    with pytest.raises(error) as info, torch.no_grad():
        model(torch.zeros(shape))
    assert fragment in str(info.value)


def test_peak_memory_does_not_depend_on_latency_running_first():
    model = zoo.create_model("poolformer_s12", dims=(32, 64, 128, 256), depths=(1, 1, 1, 1)).eval()
    trim_heap()  # each call starts from a heap like a fresh `zoo profile` process's
    alone = zoo.profile(model, memory=True).peak_memory["bytes"]
    trim_heap()
    after = zoo.profile(model, latency=True, memory=True, runs=3, warmup=1).peak_memory["bytes"]
    # one 224x224 forward works on megabytes; before the fix the run after the latency loop read ~0
    assert alone > 2**20 and after > 2**20, (alone, after)
    assert 0.5 < after / alone < 2.0, (alone, after)


def test_breakdown_names_its_column_macs():
    table = zoo.profile(_small("poolformer_s12"), input_size=(3, 32, 32), breakdown=True).module_table
    assert "#macs" in table and "#flops" not in table


def test_lm_profile_fits_a_short_context():
    model = zoo.create_model("mobilellm_125m", **small_lms.SMALL, max_position_embeddings=128)
    prof = zoo.profile(model)
    assert prof.input_size == (1, 127) and prof.lm["seq_len"] == 127


def _jit_warnings(fn) -> list[str]:
    """The torch.jit warnings ``fn`` emits with fvcore imported afresh (its import scripts functions, which warns)."""
    saved = {k: m for k, m in sys.modules.items() if k == "fvcore" or k.startswith("fvcore.")}
    for k in saved:
        del sys.modules[k]
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            fn()
    finally:
        for k in [k for k in sys.modules if k == "fvcore" or k.startswith("fvcore.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    return [str(w.message) for w in seen if "torch.jit" in str(w.message)]


def test_profiling_prints_no_tracer_deprecation():
    if not _jit_warnings(lambda: importlib.import_module("fvcore.nn")):
        pytest.skip("this torch does not warn about torch.jit")
    model = _small("poolformer_s12")
    assert _jit_warnings(lambda: zoo.profile(model, input_size=(3, 32, 32), breakdown=True)) == []


def test_only_the_profiler_imports_fvcore():
    """Training and evaluation reach fvcore through zoo.profile (which quiets it), never by importing it."""
    sources = [ROOT / "train.py", ROOT / "eval.py", *sorted((ROOT / "zoo").rglob("*.py"))]
    importers = set()
    for path in sources:
        text = path.read_text()
        if "fvcore" not in text:  # no import of it can be there: the syntax tree is read only where one can
            continue
        for node in ast.walk(ast.parse(text)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "fvcore" for n in names):
                importers.add(path.relative_to(ROOT).as_posix())
    assert importers == {"zoo/profile.py"}


@pytest.mark.parametrize(
    "summary,present,absent",
    [
        (dict(latency_ms=3.0, threads=1), ["1 thread,"], ["1 threads"]),
        (dict(latency_ms=3.0, threads=2, latency_runs=20), ["of 20 runs", "2 threads"], []),
        (dict(latency_ms=3.0, threads=2, load_average=0.1, cores=2), ["load average 0.10 on 2 cores"], ["busy"]),
        (dict(latency_ms=3.0, threads=2, load_average=2.0, cores=2), ["load average 2.00"], ["busy"]),
        (dict(latency_ms=3.0, threads=1, load_average=3.5, cores=2), ["taken on a busy machine"], []),
    ],
)
def test_card_latency_line(summary, present, absent):
    text = _latency_text(summary)
    assert all(p in text for p in present), text
    assert not any(a in text for a in absent), text


def test_the_card_says_how_its_latency_was_taken(tmp_path):
    out = export_pretrained(_small("poolformer_s12"), tmp_path / "export", model_name="poolformer_s12", latency_runs=3)
    card = (Path(out) / "README.md").read_text()
    line = next(line for line in card.splitlines() if "Latency (batch 1)" in line)
    threads = torch.get_num_threads()
    assert f"median of 3 runs on CPU, {threads} thread{'' if threads == 1 else 's'}," in line, line
    assert "1-min load average" in line, line


def test_exported_files_have_the_umask_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        out = export_pretrained(
            _small("poolformer_s12"), tmp_path / "export", model_name="poolformer_s12", latency_runs=0
        )
    finally:
        os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in Path(out).iterdir()}
    assert {"model.safetensors", "config.json", "README.md"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes


# ------------------------------------------------------------------------------------------------------------------
# Distillation teachers: trained on the student's classes (in order), with the student's tokenizer
# ------------------------------------------------------------------------------------------------------------------

STUDENT_CLASSES = ["cat", "dog", "eel"]


def _three():
    return zoo.create_model("poolformer_s12", num_classes=3, **SMALL["poolformer_s12"]).eval()


class _StubTask:
    """What build_distiller reads of a task: the data's classes (or the run's tokenizer) and a training batch."""

    def __init__(self, class_names=None, tokenizer_file=None, inputs=None):
        self.info = SimpleNamespace(num_classes=len(class_names or []), class_names=class_names)
        self.tokenizer_file = tokenizer_file
        self.train_set = list(inputs)

    def prepare_batch(self, batch, device, channels_last):
        return batch

    def model_inputs(self, batch):
        return batch


def _vision_teacher(root: Path, recorded: str, names) -> DistillConfig:
    """A 3-class PoolFormer teacher whose class names are recorded in ``recorded``: the folder's config.json, its
    run's metrics.json, the config.json beside teacher_weights, or nowhere."""
    model = _three()
    args = {**SMALL["poolformer_s12"], "num_classes": 3}
    config = {"architecture": "poolformer_s12", "model_args": args, "pretrained_cfg": {}}
    if recorded in ("config", "weights") and names:
        config["pretrained_cfg"]["label_names"] = names
    folder = root / ("run/export" if recorded == "metrics" else "teacher")
    zoo.save_state_dict(model, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config))
    if recorded == "metrics":
        (root / "run" / "args.yaml").write_text("model: poolformer_s12\n")
        (root / "run" / "metrics.json").write_text(json.dumps({"label_names": names}))
        return DistillConfig(teacher=str(root / "run"), alpha=1.0)
    if recorded == "weights":
        weights = str(folder / "model.safetensors")
        return DistillConfig(teacher="poolformer_s12", teacher_weights=weights, teacher_kwargs=args, alpha=1.0)
    return DistillConfig(teacher=str(folder), alpha=1.0)


TEACHER_CLASSES = [
    # (id, where the teacher records its names, its names, error fragment or None (it distills))
    (
        "other classes",
        "config",
        ["ant", "bee", "cow"],
        r"trained on the classes \['ant', 'bee', 'cow'\], this run's data has \['cat', 'dog', 'eel'\]: other classes",
    ),
    ("another order", "config", ["dog", "cat", "eel"], r"same classes in another order \(position 0: 'dog' vs 'cat'\)"),
    ("run's metrics.json", "metrics", ["ant", "bee", "cow"], r"\['ant', 'bee', 'cow'\], this run's data has"),
    ("beside teacher_weights", "weights", ["ant", "bee", "cow"], r"\['ant', 'bee', 'cow'\], this run's data has"),
    ("the same classes", "config", STUDENT_CLASSES, None),
    ("the same, in metrics.json", "metrics", STUDENT_CLASSES, None),
]  # fmt: skip


@pytest.mark.parametrize(
    "recorded, names, fragment", [r[1:] for r in TEACHER_CLASSES], ids=[r[0] for r in TEACHER_CLASSES]
)
def test_a_teacher_of_other_classes_is_refused_with_both_lists(tmp_path, recorded, names, fragment):
    cfg = _vision_teacher(tmp_path, recorded, names)
    recipe = SimpleNamespace(distill=cfg, task="image-classification")
    task = _StubTask(STUDENT_CLASSES, inputs=torch.randn(2, 3, 32, 32))
    student = _three()
    if fragment is None:
        assert build_distiller(recipe, task, student, torch.device("cpu")).teacher is not None
        return
    with pytest.raises(DistillError, match=fragment):
        build_distiller(recipe, task, student, torch.device("cpu"))


def test_a_teacher_without_class_names_is_said_in_the_log(tmp_path, caplog):
    cfg = _vision_teacher(tmp_path, "config", None)
    recipe = SimpleNamespace(distill=cfg, task="image-classification")
    task = _StubTask(STUDENT_CLASSES, inputs=torch.randn(2, 3, 32, 32))
    with caplog.at_level(logging.WARNING, logger="zoo.train.builders"):
        build_distiller(recipe, task, _three(), torch.device("cpu"))
    assert "records no class names" in caplog.text and "['cat', 'dog', 'eel']" in caplog.text


LM_TINY = dict(small_lms.SMALL, vocab_size=8)  # the vocabulary of the 8-word tokenizers below


def _word_tokenizer(path: Path, words: list[str]) -> Path:
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0])).save(str(path))
    return path


@pytest.mark.parametrize("same", [False, True], ids=["another tokenizer", "the same tokenizer"])
def test_a_hub_lm_teachers_tokenizer_is_compared(hub, tmp_path, same):
    words = [f"w{i}" for i in range(8)]
    teacher = zoo.create_model("mobilellm_125m", **LM_TINY)
    teacher.save_pretrained(tmp_path / "lm", format="zoo")
    served = {p.name: p.read_bytes() for p in (tmp_path / "lm").iterdir() if p.is_file()}
    served["tokenizer.json"] = _word_tokenizer(tmp_path / "theirs.json", words).read_bytes()
    hub.repos["someone/lm"] = served
    ours = _word_tokenizer(tmp_path / "ours.json", words if same else words[::-1])
    recipe = SimpleNamespace(distill=DistillConfig(teacher="hf-hub:someone/lm"), task="text-generation")
    task = _StubTask(tokenizer_file=ours, inputs=torch.randint(0, 8, (2, 6)))
    student = zoo.create_model("mobilellm_125m", **LM_TINY)
    if same:
        assert build_distiller(recipe, task, student, torch.device("cpu")) is not None
        return
    with pytest.raises(DistillError, match=r"the teacher's tokenizer \(.*tokenizer\.json\) differs from this run's"):
        build_distiller(recipe, task, student, torch.device("cpu"))


# ------------------------------------------------------------------------------------------------------------------
# What `zoo publish` uploads: the files an export writes, never a link out of the folder
# ------------------------------------------------------------------------------------------------------------------

UPLOADS = [
    # (id, what is added to an exported folder: name -> "text" or "-> target" (a link), error fragment or the list)
    ("another tokenizer*.json", {"tokenizer-private.json": "{}"}, ["model.safetensors", "config.json", "README.md"]),
    ("a tokenizer", {"tokenizer.json": "{}"}, ["model.safetensors", "config.json", "README.md", "tokenizer.json"]),
    ("a link out", {"tokenizer.json": "-> OUTSIDE"}, "tokenizer.json is a symbolic link to OUTSIDE, outside"),
    ("config.json a link out", {"config.json": "-> OUTSIDE"}, "config.json is a symbolic link to OUTSIDE, outside"),
    ("a link inside", {"tokenizer.model": "x", "generation_config.json": "-> tokenizer.model"},
     ["model.safetensors", "config.json", "README.md", "tokenizer.model", "generation_config.json"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def exported_folder(tmp_path_factory):
    return export_pretrained(
        _small("poolformer_s12"), tmp_path_factory.mktemp("pub") / "export", model_name="poolformer_s12", latency_runs=0
    )


@pytest.mark.parametrize("added, expected", [r[1:] for r in UPLOADS], ids=[r[0] for r in UPLOADS])
def test_publish_uploads_only_the_exported_files(exported_folder, tmp_path, added, expected):
    folder = tmp_path / "export"
    shutil.copytree(exported_folder, folder)
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps({"token": "hf_secret"}))
    for name, content in added.items():
        (folder / name).unlink(missing_ok=True)
        if content.startswith("-> "):
            target = content[3:].replace("OUTSIDE", str(outside))
            (folder / name).symlink_to(target)
        else:
            (folder / name).write_text(content)
    if isinstance(expected, list):
        assert publish.exported_files(folder) == expected
        return
    with pytest.raises(publish.PublishError, match=re.escape(expected.replace("OUTSIDE", str(outside)))):
        publish.exported_files(folder)
