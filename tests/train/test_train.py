"""Training engine: recipes, a digits run that learns, exact resume after SIGKILL, checkpoint integrity,
NaN stop, many processes (gloo), a language-model run, eval.py."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from digit_runs import DIGITS, LM, ROOT, TORCHRUN, subprocess_env

from zoo.train.checkpoint import CheckpointCorruptError, load_training_checkpoint, save_training_checkpoint
from zoo.train.config import RecipeError, load_recipe

# a short digits run: 12 optimizer steps of 32 images, checkpoints every 4 steps
SHORT = [
    "--train.steps",
    "12",
    "--train.batch_size",
    "32",
    "--checkpoint.every_steps",
    "4",
    "--export.enabled",
    "false",
    "--train.threads",
    "1",
    "--sched.warmup_epochs",
    "0.1",
]


def _train_cmd(out: Path, *extra):
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        str(DIGITS),
        "--output_dir",
        str(out),
        "--no-progress",
        *SHORT,
        *extra,
    ]


def _read_weights(path: Path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One uninterrupted short digits run in a subprocess (the reference for resume and eval.py)."""
    out = tmp_path_factory.mktemp("digits") / "run"
    proc = subprocess.run(_train_cmd(out), cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


# ------------------------------------------------------------------------------------------------------------
# recipes
# ------------------------------------------------------------------------------------------------------------


def test_recipe_unknown_keys_name_the_closest(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: poolformer_s12\noptim:\n  lrr: 0.1\n")
    with pytest.raises(RecipeError, match=r"optim\.lrr.*'lr'"):
        load_recipe(str(bad))
    bad.write_text("modle: poolformer_s12\n")
    with pytest.raises(RecipeError, match=r"'modle'.*'model'"):
        load_recipe(str(bad))
    with pytest.raises(RecipeError, match=r"train\.epoch.*'epochs'"):
        load_recipe(str(DIGITS), ["--train.epoch", "3"])
    with pytest.raises(RecipeError, match="must be an integer"):
        load_recipe(str(DIGITS), ["--train.epochs", "many"])
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(str(tmp_path / "missing.yaml"))


def test_recipe_overrides_and_args_yaml(tmp_path):
    from zoo.train.config import load_run_recipe, save_recipe

    r = load_recipe(
        str(DIGITS),
        [
            "--train.epochs",
            "3",
            "--optim.betas",
            "[0.9,0.95]",
            "--seed=7",
            "--model_kwargs.drop_rate",
            "0.1",
            "--optim.lr_base_size",
            "128",
        ],
    )
    assert r.train.epochs == 3 and r.optim.betas == [0.9, 0.95] and r.seed == 7
    assert r.model_kwargs == {**load_recipe(str(DIGITS)).model_kwargs, "drop_rate": 0.1}  # merged into the recipe's
    assert r.scaled_lr() == pytest.approx(r.optim.lr * r.train.batch_size / 128)  # linear scaling rule
    assert load_recipe(str(DIGITS)).output_dir == "runs/quickstart_digits"
    save_recipe(r, tmp_path / "args.yaml", extra={"lr": r.scaled_lr()})
    back = load_run_recipe(tmp_path)
    assert back == r
    assert yaml.safe_load((tmp_path / "args.yaml").read_text())["resolved"]["lr"] == r.scaled_lr()


def test_every_shipped_recipe_loads_and_names_a_registered_model():
    import zoo

    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(configs) >= 10
    for path in configs:
        r = load_recipe(str(path))
        assert r.model in zoo.list_models(), f"{path.name}: {r.model} is not registered"
        if r.sparse is not None:  # a typed section, checked when the recipe loads
            from zoo.train.sparse import SparseConfig

            assert isinstance(r.sparse, SparseConfig) and 0 < r.sparse.density < 1


# ------------------------------------------------------------------------------------------------------------
# a short run learns; the run folder holds what contract 1 promises
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_digits_run_learns_and_writes_the_run_folder(digits_run):
    out, proc = digits_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["samples"] == 360
    assert metrics["top1"] > 60.0, metrics  # chance is 10%
    assert metrics["params"] > 1e6 and metrics["macs"] > 1e6
    args = yaml.safe_load((out / "args.yaml").read_text())
    assert args["model"] == "poolformer_s12" and args["train"]["steps"] == 12
    assert args["resolved"]["total_steps"] == 12
    assert (out / "model.safetensors").is_file() and (out / "checkpoints" / "last.pt").is_file()
    assert load_training_checkpoint(out / "checkpoints" / "last.pt")["step"] == 12
    assert any((out / "tb").iterdir())
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,split,loss,lr")
    assert any(",val," in r for r in rows)
    assert str(out / "metrics.json") in proc.stdout


# ------------------------------------------------------------------------------------------------------------
# SIGKILL mid-run, resume, same result
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(digits_run, tmp_path):
    ref, _ = digits_run
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _train_cmd(out), cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 400
        while not (out / "checkpoints" / "last.pt").exists():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.time() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists()  # killed mid-way
    killed_at = load_training_checkpoint(out / "checkpoints" / "last.pt")["step"]
    assert 4 <= killed_at < 12
    res = subprocess.run(
        _train_cmd(out, "--resume", "auto"), cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = _read_weights(ref / "model.safetensors"), _read_weights(out / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # bitwise on CPU
        assert torch.equal(a[k], b[k]), k
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    assert (ma["top1"], ma["loss"]) == (mb["top1"], mb["loss"])
    steps = [int(r.split(",")[0]) for r in (out / "log.csv").read_text().splitlines()[1:] if ",train," in r]
    assert steps == sorted(set(steps))  # rows logged after the checkpoint were dropped, not duplicated


# ------------------------------------------------------------------------------------------------------------
# checkpoint integrity
# ------------------------------------------------------------------------------------------------------------


def _state(v):
    return {
        "model": {"w": torch.full((64, 64), float(v))},
        "data_position": {"epoch": 0, "step_in_epoch": v},
        "rng": [{"python": (3, tuple(range(5)), None)}],
    }


def test_a_compiled_models_weights_are_the_models_own():
    """What a run saves, profiles and averages (EMA) is the model inside ``torch.compile``'s wrapper: its state dict
    has the model's names, not ``_orig_mod.`` ones that no plain build loads."""
    from zoo.train.distributed import unwrap

    model = torch.nn.Linear(2, 2)
    compiled = torch.compile(model)  # compiles at its first call: nothing runs here
    assert unwrap(compiled) is model and unwrap(model) is model
    assert set(unwrap(compiled).state_dict()) == {"weight", "bias"} != set(compiled.state_dict())


def test_corrupt_checkpoint_is_refused_and_the_previous_stays(tmp_path):
    ck = tmp_path / "checkpoints"
    save_training_checkpoint(_state(1), ck, 1, keep=3)
    save_training_checkpoint(_state(2), ck, 2, keep=3)
    last = ck / "last.pt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the tensor data
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match=r"last\.pt.*corrupt.*step_1\.pt"):
        load_training_checkpoint(last)
    assert load_training_checkpoint(ck / "step_1.pt")["step"] == 1
    last.write_bytes(bytes(data[: len(data) // 3]))  # a truncated copy
    with pytest.raises(CheckpointCorruptError, match=r"last\.pt cannot be read"):
        load_training_checkpoint(last)
    from zoo.train.cli import main

    assert main(["--config", str(DIGITS), "--output_dir", str(tmp_path), "--resume", str(last)]) == 2


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ck = tmp_path / "checkpoints"
    save_training_checkpoint(_state(1), ck, 1)
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_training_checkpoint(_state(2), ck, 2)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_training_checkpoint(ck / "last.pt")["step"] == 1
    assert sorted(p.name for p in ck.iterdir()) == ["last.pt", "step_1.pt"]  # no temp file left behind


# ------------------------------------------------------------------------------------------------------------
# NaN loss
# ------------------------------------------------------------------------------------------------------------


def test_nonfinite_loss_stops_with_a_checkpoint(tmp_path, capsys):
    from zoo.train.cli import main

    # an absurd learning rate overflows the weights after the first update
    rc = main(
        [
            "--config",
            str(DIGITS),
            "--output_dir",
            str(tmp_path),
            "--no-progress",
            *SHORT,
            "--optim.lr",
            "1e37",
            "--optim.clip_grad",
            "null",
            "--sched.warmup_epochs",
            "0",
        ]
    )
    assert rc == 3
    err = capsys.readouterr().err
    assert "loss became" in err and "last.pt" in err
    ck = load_training_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert 1 <= ck["step"] < 12
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert not (tmp_path / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------------------------
# many processes
# ------------------------------------------------------------------------------------------------------------


# two processes on this machine (gloo on CPU)
def _ok(cmd: list[str]) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    extra = ["--train.steps", "6", "--checkpoint.every_steps", "0", "--train.drop_path", "0.0"]
    one, two = tmp_path / "one", tmp_path / "two"
    _ok(_train_cmd(one, *extra, "--train.grad_accum", "2"))
    _ok([*TORCHRUN, *_train_cmd(two, *extra)[1:]])
    assert yaml.safe_load((two / "args.yaml").read_text())["resolved"]["world_size"] == 2
    a, b = _read_weights(one / "model.safetensors"), _read_weights(two / "model.safetensors")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, worst  # same samples and gradients; only the order of float sums differs
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert ma["samples"] == mb["samples"] == 360
    assert abs(ma["loss"] - mb["loss"]) < 1e-3


# a tiny language model on pydoc: 6 steps of 4 sequences, evaluated and checkpointed at step 3, exported
TINY_LM = [
    "--config",
    str(LM),
    "--no-progress",
    "--train.steps",
    "6",
    "--train.batch_size",
    "4",
    "--data.seq_len",
    "32",
    "--data.vocab_size",
    "300",
    "--model_kwargs.hidden_size",
    "32",
    "--model_kwargs.intermediate_size",
    "64",
    "--model_kwargs.num_hidden_layers",
    "2",
    "--model_kwargs.num_attention_heads",
    "2",
    "--model_kwargs.num_key_value_heads",
    "1",
    "--model_kwargs.max_position_embeddings",
    "32",
    "--train.eval_every_steps",
    "3",
    "--checkpoint.every_steps",
    "3",
    "--sched.warmup_steps",
    "1",
]


def _torchrun(out: Path, *args):
    return _ok(
        [*TORCHRUN, str(ROOT / "train.py"), "--output_dir", str(out), *TINY_LM, "--dist.strategy", "fsdp", *args]
    )


@pytest.mark.slow
def test_fsdp_on_two_gloo_processes_matches_one_process_and_resumes(tmp_path):
    one, two, resumed = tmp_path / "one", tmp_path / "two", tmp_path / "resumed"
    r1 = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--output_dir", str(one), *TINY_LM, "--train.grad_accum", "2"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r1.returncode == 0, r1.stderr[-3000:]
    _torchrun(two)
    assert yaml.safe_load((two / "args.yaml").read_text())["resolved"]["world_size"] == 2
    assert (one / "tokenizer.json").read_text() == (two / "tokenizer.json").read_text()
    a, b = _read_weights(one / "model.safetensors"), _read_weights(two / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, worst  # sharded parameters and gradients; only the order of float sums differs
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert abs(ma["loss"] - mb["loss"]) < 1e-3 and ma["params"] == mb["params"]
    exported = _read_weights(two / "export" / "model.safetensors")
    assert all(torch.equal(exported[k], b[k]) for k in exported)
    val = [r for r in (two / "log.csv").read_text().splitlines() if ",val," in r]
    assert [r.split(",")[0] for r in val] == ["3", "6"]

    # killed after the step-3 checkpoint: resume from it on two processes, same result
    shutil.copytree(two, resumed)
    ck = resumed / "checkpoints"
    for name in ("last.pt", "step_6.pt"):
        (ck / name).unlink()
    os.link(ck / "step_3.pt", ck / "last.pt")
    for name in ("model.safetensors", "metrics.json"):
        (resumed / name).unlink()
    shutil.rmtree(resumed / "export")
    _torchrun(resumed, "--resume", "auto")
    c = _read_weights(resumed / "model.safetensors")
    worst = max((b[k] - c[k]).abs().max().item() for k in b)
    assert worst < 1e-6, worst
    assert [r for r in (resumed / "log.csv").read_text().splitlines() if ",val," in r][-1].startswith("6,")


# ------------------------------------------------------------------------------------------------------------
# language modelling
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_lm_run_beats_the_unigram_baseline(tmp_path):
    from zoo.train.loop import train

    r = load_recipe(
        str(LM),
        [
            "--output_dir",
            str(tmp_path),
            "--train.steps",
            "120",
            "--optim.lr",
            "6e-3",
            "--data.seq_len",
            "64",
            "--data.vocab_size",
            "512",
            "--model_kwargs.hidden_size",
            "64",
            "--model_kwargs.intermediate_size",
            "160",
            "--model_kwargs.num_hidden_layers",
            "2",
            "--model_kwargs.num_attention_heads",
            "2",
            "--model_kwargs.num_key_value_heads",
            "1",
            "--export.enabled",
            "false",
            "--sched.warmup_steps",
            "5",
            "--checkpoint.every_steps",
            "0",
            "--train.eval_every_steps",
            "0",
            "--train.log_interval",
            "5",
        ],
    )
    summary = train(r, progress=False)
    m = summary["metrics"]
    assert (tmp_path / "tokenizer.json").is_file()
    assert m["vocab_size"] <= 512 and m["perplexity"] < 0.7 * m["unigram_perplexity"], m
    losses = [
        float(row.split(",")[3]) for row in (tmp_path / "log.csv").read_text().splitlines()[1:] if ",train," in row
    ]
    assert losses[-1] < losses[0] - 1.0
    assert math.isclose(m["perplexity"], math.exp(m["loss"]), rel_tol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# eval.py
# ------------------------------------------------------------------------------------------------------------


# a CAFormer (its training step holds the zoo's eager kernels: StarReLU, the MLPs, attention, the depthwise
# convolutions) at one block a stage and small widths
TINY_CAFORMER = dict(depths=[1, 1, 1, 1], dims=[16, 32, 64, 128])


@pytest.mark.slow  # torch.compile of a training step, its backward and the evaluation (about a minute on 2 cores)
def test_a_compiled_run_trains_and_writes_the_folder_a_plain_run_writes(tmp_path):
    """``train.compile: true``: the compiled step traces PyTorch's operators where the zoo's kernels run in eager
    (the kernels' Python would break its graph), and the run folder holds the model's own names, as a plain run's
    does: weights, checkpoint, the profile in metrics.json."""
    import zoo

    out = tmp_path / "run"
    model_args = [arg for k, v in TINY_CAFORMER.items() for arg in (f"--model_kwargs.{k}", json.dumps(v))]
    res = _ok(_train_cmd(out, "--model", "caformer_s18", *model_args, "--train.steps", "3", "--train.compile", "true"))
    assert "profiling failed" not in res.stderr, res.stderr[-3000:]
    names = set(zoo.create_model("caformer_s18", **TINY_CAFORMER, num_classes=10).state_dict())
    assert set(_read_weights(out / "model.safetensors")) == names
    assert set(torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]) == names
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 3 and metrics["macs"] > 0 and math.isfinite(metrics["loss"])


@pytest.mark.slow
def test_eval_py_reproduces_the_held_out_metrics(digits_run, tmp_path):
    out, _ = digits_run
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "eval.py"),
            "--model",
            "poolformer_s12",
            "--checkpoint",
            str(out),
            "--data",
            "digits",
            "--json",
            str(tmp_path / "e.json"),
        ],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads((tmp_path / "e.json").read_text())
    want = json.loads((out / "metrics.json").read_text())
    assert got["top1"] == pytest.approx(want["top1"]) and got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert got["input_size"] == [3, 32, 32] and got["params"] == want["params"] and got["macs"] == want["macs"]
    bad = subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), "--model", "poolformer_s12", "--data", "pydoc"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and "image classifier" in bad.stderr


# ------------------------------------------------------------------------------------------------------------
# dynamic sparse training from a recipe's sparse: section
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # 2-7 s (a training run, a compile or a parity sweep): outside the 4-minute default run
def test_sparse_section_trains_a_sparse_model(tmp_path):
    from zoo.train.loop import train

    r = load_recipe(
        str(DIGITS),
        [
            "--output_dir",
            str(tmp_path),
            "--train.steps",
            "6",
            "--train.batch_size",
            "16",
            "--checkpoint.every_steps",
            "0",
            "--export.enabled",
            "false",
            "--sparse.sparsity",
            "0.5",
            "--sparse.init",
            "snip",
            "--sparse.update_frequency",
            "2",
            "--ema.enabled",
            "true",
            "--ema.decay",
            "0.5",
            "--train.threads",
            "1",
        ],
    )
    train(r, progress=False)
    state = load_training_checkpoint(tmp_path / "checkpoints" / "last.pt")["sparsity"]
    masks = state["masks"]
    assert masks and state["steps"] == 6 and state["updates"] == 3
    density = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert 0.3 < density < 0.55, density  # SNIP's layer-wise densities; layers it keeps dense carry no mask
    final = _read_weights(tmp_path / "model.safetensors")  # the EMA weights follow the masks
    for name, m in masks.items():
        assert not final[name][~m].any(), name
    with pytest.raises(RecipeError, match="did you mean 'sparsity'"):  # refused when the recipe loads
        load_recipe(str(DIGITS), ["--output_dir", str(tmp_path / "x"), "--sparse.sparsty", "0.5"])
