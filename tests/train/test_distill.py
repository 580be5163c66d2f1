"""Knowledge distillation in training (the recipe's ``distill:``) and ``init_from``: the loss math against hand
computations, a frozen teacher, recipe errors, digits and LM runs with a teacher, resume, two processes."""

import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from torch import nn

from zoo.train.config import RecipeError, load_recipe
from zoo.train.distill import (
    DistillConfig,
    Distiller,
    DistillError,
    hard_distill_loss,
    soft_distill_loss,
)

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "configs" / "quickstart_digits.yaml"
DIGITS_DISTILL = ROOT / "configs" / "quickstart_digits_distill.yaml"
LM = ROOT / "configs" / "quickstart_lm.yaml"
LM_DISTILL = ROOT / "configs" / "quickstart_lm_distill.yaml"

TINY_ARCH = {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}


# --------------------------------------------------------------------------------------------------------------
# the losses, by hand
# --------------------------------------------------------------------------------------------------------------


def _softmax(row, t):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def test_soft_loss_is_kl_at_temperature_times_t_squared():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    for temp in (1.0, 4.0):
        kls = []
        for srow, trow in zip(s.tolist(), t.tolist()):
            ps, pt = _softmax(srow, temp), _softmax(trow, temp)
            kls.append(sum(b * math.log(b / a) for a, b in zip(ps, pt)))
        expected = sum(kls) / len(kls) * temp**2
        assert soft_distill_loss(s, t, temp).item() == pytest.approx(expected, rel=1e-5)
    assert soft_distill_loss(t, t, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    # torch's own KL (batchmean) agrees
    ref = F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), reduction="batchmean", log_target=True) * 4
    assert soft_distill_loss(s, t, 2.0).item() == pytest.approx(ref.item(), rel=1e-5)


def test_hard_loss_is_cross_entropy_on_the_teachers_argmax():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[0.0, 0.1, 5.0], [9.0, 1.0, 1.0]])  # argmax 2, 0
    expected = (-math.log(_softmax(s[0].tolist(), 1)[2]) - math.log(_softmax(s[1].tolist(), 1)[0])) / 2
    assert hard_distill_loss(s, t).item() == pytest.approx(expected, rel=1e-6)


def test_lm_loss_is_per_token_and_masks_padding():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    kept = soft_distill_loss(s[mask], t[mask], 2.0)
    assert soft_distill_loss(s, t, 2.0, mask).item() == pytest.approx(kept.item(), rel=1e-6)
    per_token = [soft_distill_loss(s[i, j : j + 1], t[i, j : j + 1], 2.0).item() for i, j in ((0, 0), (0, 1), (1, 0))]
    assert kept.item() == pytest.approx(sum(per_token) / 3, rel=1e-5)
    # a masked position changes nothing however wrong its logits are
    s2 = s.clone()
    s2[0, 2] = 100.0
    assert soft_distill_loss(s2, t, 2.0, mask).item() == pytest.approx(kept.item(), rel=1e-6)
    assert hard_distill_loss(s, t, torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0
    with pytest.raises(DistillError, match="same classes"):
        soft_distill_loss(s, t[..., :5])


# --------------------------------------------------------------------------------------------------------------
# the distiller: frozen teacher, combined loss, distillation token
# --------------------------------------------------------------------------------------------------------------


def test_teacher_stays_frozen_in_eval_and_the_loss_mixes_by_alpha():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.5), nn.Linear(16, 4))
    student = nn.Linear(6, 4)
    d = Distiller(teacher, DistillConfig(teacher="t", alpha=0.25, temperature=2.0))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    teacher.train()  # switched by someone else: the teacher still predicts in eval mode
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    t1, t2 = d.teacher_logits(x), d.teacher_logits(x)
    assert torch.equal(t1, t2) and not t1.requires_grad and not teacher.training  # no dropout, no graph
    out = student(x)
    loss = d.classification_loss(out, x, y, F.cross_entropy)
    expected = 0.75 * F.cross_entropy(out, y) + 0.25 * soft_distill_loss(out, t1, 2.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())

    # a student with a distillation token: labels on the class head, the teacher on the distillation head
    cls_out, dist_out = torch.randn(8, 4), torch.randn(8, 4)
    d_hard = Distiller(teacher, DistillConfig(teacher="t", alpha=0.5, kind="hard"))
    loss = d_hard.classification_loss((cls_out, dist_out), x, y, F.cross_entropy)
    expected = 0.5 * F.cross_entropy(cls_out, y) + 0.5 * F.cross_entropy(dist_out, t1.argmax(-1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.slow
def test_two_gloo_processes_train_the_student_like_one(tmp_path, monkeypatch):
    import distill_ddp_worker  # beside this module (pytest puts its folder on sys.path)
    import torch.multiprocessing as mp

    out = tmp_path / "result.pt"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.spawn(distill_ddp_worker.run, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    res = torch.load(out, weights_only=True)
    assert res["same"] and res["teacher_unchanged"] and not any(res["teacher_grads"])
    teacher, student = distill_ddp_worker.nets(0)
    assert res["ddp_params"] == sum(p.numel() for p in student.parameters())  # the teacher is not in DDP
    d = Distiller(teacher, DistillConfig(teacher="t", alpha=0.7, temperature=2.0))
    distill_ddp_worker.train_steps(d, student, *distill_ddp_worker.data(), 5)
    one = torch.cat([p.detach().flatten() for p in student.parameters()])
    assert (one - res["student"]).abs().max().item() < 1e-5


# --------------------------------------------------------------------------------------------------------------
# recipes
# --------------------------------------------------------------------------------------------------------------


def test_distill_section_is_checked_when_the_recipe_loads(tmp_path):
    r = load_recipe(str(DIGITS), ["--distill.teacher", "runs/quickstart_digits", "--distill.temperature", "4"])
    assert r.distill == DistillConfig(teacher="runs/quickstart_digits", temperature=4.0)
    assert load_recipe(str(DIGITS_DISTILL), ["--distill", "null"]).distill is None  # plain fine-tuning
    assert load_recipe(str(DIGITS), ["--init-from", "some/folder"]).init_from == "some/folder"
    t = ["--distill.teacher", "x"]
    bad = [
        ([*t, "--distill.alpha", "1.5"], "distill.alpha must be in \\[0, 1\\]"),
        ([*t, "--distill.kind", "medium"], "distill.kind must be soft or hard"),
        ([*t, "--distill.temperature", "0"], "distill.temperature must be greater than 0"),
        ([*t, "--distill.temprature", "2"], "Did you mean 'temperature'"),
        ([*t, "--distill.alpha", "lots"], "distill.alpha must be a number"),
        (["--distill.alpha", "0.5"], "distill.teacher is not set"),
    ]
    for args, message in bad:
        with pytest.raises(RecipeError, match=message):
            load_recipe(str(DIGITS), args)
    with pytest.raises(RecipeError, match="hard distillation takes the teacher's argmax"):
        load_recipe(str(DIGITS), ["--distill.teacher", "x", "--distill.kind", "hard", "--distill.temperature", "3"])
    # cached logits need inputs that do not change between epochs: the digits recipe crops and rescales at random
    with pytest.raises(RecipeError, match=r"augments at random \(aug.scale=\[0.7, 1.0\], aug.ratio="):
        load_recipe(str(DIGITS), ["--distill.teacher", "x", "--distill.cache_logits", "true"])
    fixed = ["--aug.scale", "[1, 1]", "--aug.ratio", "[1, 1]", "--aug.train_interpolation", "bicubic"]
    assert load_recipe(str(DIGITS), ["--distill.teacher", "x", "--distill.cache_logits", "true", *fixed])
    assert load_recipe(str(LM), ["--distill.teacher", "x", "--distill.cache_logits", "true"])  # rows are fixed


def test_teachers_and_init_folders_that_name_nothing_are_refused_before_any_data(tmp_path):
    from zoo.train.loop import train

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    out = ["--output_dir", str(tmp_path / "run")]
    cases = {
        ("--distill.teacher", str(weights)): "is a file: set distill.teacher to the architecture's registered name",
        ("--distill.teacher", "poolformer_s13"): "neither a registered model nor a folder",
        ("--init-from", str(tmp_path / "nowhere")): "is not a folder",
    }
    for args, message in cases.items():
        with pytest.raises(RecipeError, match=message):
            train(load_recipe(str(DIGITS), [*out, *args]), progress=False)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------------------
# runs: digits from an exported folder with a teacher, resume; the LM
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dense_folder(tmp_path_factory):
    """A tiny PoolFormer written by the publish path (safetensors + config.json): teacher and starting point."""
    import zoo
    from zoo.publish import export_pretrained

    torch.manual_seed(0)
    model = zoo.create_model("poolformer_s12", num_classes=10, **TINY_ARCH)
    out = tmp_path_factory.mktemp("dense") / "folder"
    export_pretrained(
        model, out, model_name="poolformer_s12", model_kwargs={**TINY_ARCH, "num_classes": 10}, latency_runs=0
    )
    return out


def _digits(out: Path, folder: Path, *extra):
    return load_recipe(
        str(DIGITS_DISTILL),
        [
            "--output_dir",
            str(out),
            "--init-from",
            str(folder),
            "--distill.teacher",
            str(folder),
            "--train.steps",
            "4",
            "--train.batch_size",
            "16",
            "--checkpoint.every_steps",
            "2",
            "--train.threads",
            "1",
            "--sched.warmup_epochs",
            "0",
            "--train.eval_max_batches",
            "2",
            "--export.enabled",
            "false",
            *extra,
        ],
    )


@pytest.mark.slow  # 2-7 s (a training run, a compile or a parity sweep): outside the 4-minute default run
def test_digits_init_from_with_teacher_trains_and_resumes_exactly(dense_folder, tmp_path):
    from zoo.evaluate import build_model
    from zoo.train.checkpoint import load_training_checkpoint
    from zoo.train.loop import train

    ref, resumed = tmp_path / "ref", tmp_path / "resumed"
    summary = train(_digits(ref, dense_folder), progress=False)
    assert summary["steps"] == 4
    start = load_file(str(dense_folder / "model.safetensors"))
    trained = load_file(str(ref / "model.safetensors"))
    assert trained.keys() == start.keys() and any(not torch.equal(trained[k], start[k]) for k in start)
    args = yaml.safe_load((ref / "args.yaml").read_text())
    assert args["init_from"] == str(dense_folder) and args["distill"]["teacher"] == str(dense_folder)
    assert args["resolved"]["model_args"]["dims"] == TINY_ARCH["dims"]  # the folder's architecture
    assert "teacher" not in str(load_training_checkpoint(ref / "checkpoints" / "last.pt")["model"].keys())
    model, _, _ = build_model("poolformer_s12", str(ref), False, {}, None)  # eval.py rebuilds the folder's shape
    assert model.num_features == TINY_ARCH["dims"][-1]

    # killed after the step-2 checkpoint: resume rebuilds the teacher, same weights as the unbroken run
    shutil.copytree(ref, resumed)
    ck = resumed / "checkpoints"
    for name in ("last.pt", "step_4.pt"):
        (ck / name).unlink()
    (ck / "last.pt").hardlink_to(ck / "step_2.pt")
    for name in ("model.safetensors", "metrics.json"):
        (resumed / name).unlink()
    train(_digits(resumed, dense_folder), resume="auto", progress=False)
    again = load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(again[k], trained[k]) for k in trained)

    # the teacher does something: without it (plain fine-tuning, same steps) the weights differ
    plain = tmp_path / "plain"
    train(_digits(plain, dense_folder, "--distill", "null"), progress=False)
    other = load_file(str(plain / "model.safetensors"))
    assert any(not torch.equal(other[k], trained[k]) for k in trained)


def test_a_registered_teacher_takes_weights_of_its_own(dense_folder):
    import zoo
    from zoo.train.builders import build_teacher

    cfg = DistillConfig(
        teacher="poolformer_s12", teacher_weights=str(dense_folder / "model.safetensors"), teacher_kwargs=TINY_ARCH
    )
    teacher = build_teacher(cfg, "cpu", num_classes=10)  # the student's classes unless teacher_kwargs says otherwise
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(teacher(x), zoo.create_model(str(dense_folder)).eval()(x))


def test_init_from_refuses_an_architecture_the_recipe_contradicts(dense_folder, tmp_path):
    from zoo.train.loop import train

    r = load_recipe(str(DIGITS), ["--output_dir", str(tmp_path / "run"), "--init-from", str(dense_folder)])
    with pytest.raises(RecipeError, match=r"depths=\[2, 2, 4, 2\] \(model_kwargs\) differs from \[1, 1, 1, 1\]"):
        train(r, progress=False)
    r = _digits(tmp_path / "run2", dense_folder, "--model", "convformer_s18")
    with pytest.raises(RecipeError, match="holds a poolformer_s12 model and the recipe trains convformer_s18"):
        train(r, progress=False)


TINY_LM = [
    "--train.steps",
    "4",
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
    "0",
    "--train.eval_max_batches",
    "2",
    "--checkpoint.every_steps",
    "0",
    "--sched.warmup_steps",
    "1",
    "--train.threads",
    "1",
]


@pytest.mark.slow
def test_lm_distills_with_the_teachers_tokenizer_cached_and_under_bf16(tmp_path):
    from zoo.data import text
    from zoo.train.loop import train

    teacher = tmp_path / "teacher"
    train(load_recipe(str(LM), ["--output_dir", str(teacher), *TINY_LM]), progress=False)
    student = ["--model_kwargs.intermediate_size", "32", "--distill.teacher", str(teacher), "--export.enabled", "false"]
    runs = {}
    for name, extra in (
        ("soft", []),
        ("cached", ["--distill.cache_logits", "true"]),
        ("bf16", ["--train.amp", "bf16", "--distill.kind", "hard", "--distill.temperature", "1"]),
    ):
        out = tmp_path / name
        runs[name] = train(load_recipe(str(LM), ["--output_dir", str(out), *TINY_LM, *student, *extra]), progress=False)
        # no data.tokenizer: the run took the teacher's, so token ids mean the same to both
        assert (out / "tokenizer.json").read_bytes() == (teacher / "tokenizer.json").read_bytes()
        assert math.isfinite(runs[name]["metrics"]["perplexity"])
    a, b = (load_file(str(tmp_path / n / "model.safetensors")) for n in ("soft", "cached"))
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, worst  # cached logits are the teacher's logits

    # another tokenizer than the teacher's: refused, naming the fix
    other = tmp_path / "other.json"
    text.train_bpe_tokenizer(["some other text entirely"] * 50, 280, other)
    r = load_recipe(str(LM), ["--output_dir", str(tmp_path / "x"), *TINY_LM, *student, "--data.tokenizer", str(other)])
    with pytest.raises(RecipeError, match="teacher's tokenizer .* differs from this run's"):
        train(r, progress=False)


def test_shipped_distill_recipes_load():
    d = load_recipe(str(DIGITS_DISTILL))
    assert d.distill is not None and d.distill.teacher == "runs/quickstart_digits"
    assert d.init_from == "runs/quickstart_digits_pruned" and not d.model_kwargs  # the folder's architecture
    lm = load_recipe(str(LM_DISTILL))
    assert lm.distill is not None and lm.distill.teacher == "runs/quickstart_lm" and lm.task == "text-generation"


@pytest.mark.slow
def test_torchrun_ddp_with_a_teacher_matches_one_process(dense_folder, tmp_path):
    def cmd(out, *extra):
        return [
            sys.executable,
            str(ROOT / "train.py"),
            "--config",
            str(DIGITS_DISTILL),
            "--output_dir",
            str(out),
            "--no-progress",
            "--init-from",
            str(dense_folder),
            "--distill.teacher",
            str(dense_folder),
            "--train.steps",
            "4",
            "--train.batch_size",
            "16",
            "--checkpoint.every_steps",
            "0",
            "--train.drop_path",
            "0.0",
            "--export.enabled",
            "false",
            *extra,
        ]

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    one, two = tmp_path / "one", tmp_path / "two"
    for c in (cmd(one, "--train.grad_accum", "2"), [*torchrun, *cmd(two)[1:]]):
        res = subprocess.run(c, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    assert yaml.safe_load((two / "args.yaml").read_text())["resolved"]["world_size"] == 2
    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, worst  # same samples, teacher targets and gradients; only the order of float sums differs
