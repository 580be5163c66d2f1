"""Presets by name (zoo condense --preset, the bench), the start line that names them, an option a method does not
take refused in one line, and the bench's table helpers (published rows, markdown)."""

import pytest

from zoo.bench.condense import PUBLISHED, markdown, published, render
from zoo.cli import main as zoo_main
from zoo.condense.core import METHODS
from zoo.condense.evaluate import EvalSettings
from zoo.condense.presets import (
    PAPER,
    PRESETS,
    default_preset,
    departures,
    estimate_seconds,
    eval_protocol,
    method_options,
    settings_table,
)
from zoo.data.synthetic import load_synthetic


def test_presets_pick_options_by_ipc():
    assert method_options("cpu", "dc", 1)["iterations"] != method_options("cpu", "dc", 10)["iterations"]
    assert method_options("cpu", "dc", 5) == method_options("cpu", "dc", 1)  # the largest key not above 5
    assert method_options("cpu", "dc", 50) == method_options("cpu", "dc", 10)
    assert method_options("paper", "dm", 10)["iterations"] == 20001  # the authors' command (presets.PAPER)
    assert method_options("paper", "random", 10) == {}  # not recorded: the method's own defaults
    assert method_options("cpu", "random", 1) == {}
    with pytest.raises(ValueError, match="unknown preset"):
        method_options("fast", "dm", 1)
    assert default_preset("cuda:0") == "paper" and default_preset("cpu") == "cpu"
    cpu = PRESETS["cpu"]
    assert cpu.eval_epochs >= 300 and cpu.sets >= 3 and cpu.nets >= 3  # the papers' evaluation, 3 x 3 per row


def test_estimate_scales_with_pixels_and_iterations():
    a = estimate_seconds("dm", 1, 100, 28)
    assert a and estimate_seconds("dm", 1, 200, 28) == pytest.approx(2 * a)
    assert estimate_seconds("dm", 1, 100, 32) == pytest.approx(a)  # 28 px is padded to 32
    assert estimate_seconds("dm", 1, 100, 64) == pytest.approx(4 * a)
    assert estimate_seconds("random", 1, 0, 28) is None


def test_iterations_for_a_method_without_steps_is_one_line(tmp_path, capsys):
    rc = zoo_main(["condense", "--data", "digits", "--method", "random", "--iterations", "5", "--out",
                   str(tmp_path / "o"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "takes no iterations" in err, err
    assert not (tmp_path / "o").exists()


def test_start_line_names_the_preset_and_the_count(tmp_path, capsys):
    out = tmp_path / "set"
    rc = zoo_main(["condense", "--data", "digits", "--method", "dm", "--ipc", "1", "--image-size", "16",
                   "--iterations", "2", "--option", "batch_real=8", "--out", str(out), "--no-progress"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    first = text.splitlines()[0]
    assert "preset cpu" in first and "2 iterations (the paper's: 20,000)" in first and "about" in first, first
    assert load_synthetic(out).meta["options"]["iterations"] == 2  # the hand-given count wins over the preset's
    assert load_synthetic(out).meta["options"]["batch_real"] == 8
    meta = load_synthetic(out).meta  # condense.json records the preset and where the run departs from the authors'
    assert meta["preset"] == "cpu"
    assert "iterations: 20,001 -> 2" in meta["departures"] and "batch_real: 256 -> 8" in meta["departures"]
    assert "eval.epochs: 1,000 -> 300" in meta["departures"], meta["departures"]


def test_published_rows_and_markdown():
    assert published("mnist", "dsa", 1)[0] == 88.7 and published("fashion_mnist", "dc", 10)[0] == 82.3
    assert published("mnist", "dm", 1) == (None, None)  # not reported for this dataset
    assert published("mnist", "whole data", "all")[0] == 99.6
    assert all(src for _, src in PUBLISHED.values())
    rows = [
        {"method": "dm", "ipc": 1, "mean": 80.0, "std": 1.0, "init_mean": 60.0, "init_std": 2.0, "published": None,
         "stored": 7840, "seconds": 12.0, "cpu_seconds": 20.0},
        {"method": "dsa", "ipc": 1, "mean": 85.0, "std": 0.5, "published": 88.7, "stored": 7840, "seconds": 30.0,
         "cpu_seconds": 55.0},
    ]  # fmt: skip
    table = markdown(rows).splitlines()
    assert len(table) == 4 and "60.0 ± 2.0" in table[2] and "not reported" in table[2] and "88.7" in table[3]
    for r in rows:
        r["dataset"] = "mnist"
    v = {"date": "2026-01-01 00:00 UTC", "commit": "abc", "cpu": "x86", "threads": "1", "torch": "2"}
    curve = [{"dataset": "mnist", "method": "dm", "ipc": 1, "iterations": 25, "mean": 70.0, "std": 1.0}]
    text = render([{"provenance": v, "preset": "cpu", "rows": rows, "curve": curve}])
    assert "### mnist" in text and "commit abc" in text and "| dm | 1 | 25 | 70.0 ± 1.0 |" in text


def test_student_recipe_follows_the_data():
    from zoo.condense.student import StudentSettings

    assert not StudentSettings.for_data("mnist").flip and StudentSettings.for_data("fashion_mnist").flip
    assert StudentSettings.for_data("cifar10", epochs=7).epochs == 7


def test_paper_is_the_authors_command_and_cpu_lists_its_departures():
    """The paper preset takes the authors' values (N + 1 updates for --Iteration N, DC from noise, DM's flips as
    main_DM.py runs); the cpu preset's departures name the real batch and the evaluation epochs."""
    assert method_options("paper", "dm", 1)["iterations"] == 20001
    assert method_options("paper", "dc", 1)["init"] == "noise" and method_options("paper", "dsa", 1)["init"] == "real"
    assert (
        method_options("paper", "dsa", 10)["outer_loop"] == 10
        and method_options("paper", "dsa", 10)["inner_loop"] == 50
    )
    assert "flip" in method_options("paper", "dm", 1)["dsa_strategy"]
    dep = departures("cpu", "dm", 1, METHODS["dm"].defaults)
    assert "batch_real: 256 -> 64" in dep and any(d.startswith("eval.epochs") for d in dep)
    assert departures("paper", "dm", 1) == []
    assert "main_DM.py:22" in settings_table("cpu", "dm", 1, METHODS["dm"].defaults)


def test_every_paper_value_is_an_option_of_the_method():
    """PAPER's rows that are not eval.* or sets x nets name the method's own options (factorization's per ipc)."""
    for method in PAPER:
        for ipc in (1, 10, 50):
            unknown = set(method_options("paper", method, ipc)) - set(METHODS[method].defaults)
            assert not unknown, (method, ipc, unknown)
        assert all(r.source for r in PAPER[method])
    fac = [method_options("paper", "factorization", ipc) for ipc in (1, 10, 50)]
    assert [f["syn_steps"] for f in fac] == [50, 30, 30] and [f["lr_teacher"] for f in fac] == [0.01, 0.001, 0.01]
    assert fac[0]["lr_lr"] == 1e-7 and fac[1]["max_start_epoch"] == 20 and fac[0]["iterations"] == 15001
    assert method_options("paper", "mtt", 1)["max_start_epoch"] == 25  # distill.py's default (no MNIST command)
    assert method_options("paper", "rded", 10)["n_candidates"] == 300
    assert method_options("paper", "sre2l", 10)["lr_img"] == 0.25


def test_the_evaluation_follows_the_preset():
    """paper: the authors' evaluation (DM's script flips MNIST; DC on MNIST: its augmentation, 1000 epochs; MTT at
    the set's learned lr); cpu: 300 epochs, no flips on digits, lr 0.01, each listed as a departure."""
    dm = EvalSettings.for_preset("paper", "mnist", "dm")
    assert dm.epochs == 1000 and dm.dsa and "flip" in dm.dsa_strategy and dm.lr == 0.01 and dm.batch == 256
    cpu = EvalSettings.for_preset("cpu", "mnist", "dm")
    assert cpu.epochs == 300 and cpu.dsa and "flip" not in cpu.dsa_strategy
    dc = EvalSettings.for_preset("paper", "mnist", "dc")
    assert dc.epochs == 1000 and not dc.dsa and dc.dc_aug == "crop_scale_rotate"
    assert EvalSettings.for_preset("paper", "cifar10", "dc").epochs == 300
    dsa = EvalSettings.for_preset("paper", "mnist", "dsa")
    assert dsa.epochs == 1000 and "flip" not in dsa.dsa_strategy  # the README's per-dataset strategy
    assert EvalSettings.for_preset("paper", "mnist", "mtt", {"eval_lr": 0.03}).lr == 0.03
    assert EvalSettings.for_preset("cpu", "mnist", "mtt", {"eval_lr": 0.03}).lr == 0.01
    assert EvalSettings.for_preset("cpu", "mnist", "dm", epochs=7).epochs == 7
    dep = departures("cpu", "dm", 1, METHODS["dm"].defaults, dataset="mnist")
    assert "eval.epochs: 1,000 -> 300" in dep and any(d.startswith("eval.augment") for d in dep)
    assert any(d.startswith("dsa_strategy") for d in dep)  # MNIST: no flips, where main_DM.py's default flips
    for method in ("dm", "dc"):  # CIFAR-10: the zoo's None resolves to the authors' strategy, no departure
        assert not any(d.startswith("dsa_strategy") for d in departures("cpu", method, 1, dataset="cifar10"))
    assert "eval.lr: learned -> 0.01" in departures("cpu", "mtt", 10, METHODS["mtt"].defaults, dataset="mnist")
    assert eval_protocol("paper", "rded", "mnist", student=True)["epochs"] == 300
    assert eval_protocol("cpu", "rded", "mnist", student=True)["epochs"] == PRESETS["cpu"].student_epochs


def test_print_settings_shows_the_evaluation(capsys):
    assert zoo_main(["condense", "--method", "factorization", "--ipc", "10", "--data", "mnist", "--preset", "cpu",
                     "--print-settings"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "run_cifar10_ipc{1,10,50}_style5.sh:5" in text and "evaluation on mnist: epochs=300" in text
    assert "eval.lr: learned -> 0.01" in text and "iterations: 15,001 -> 50" in text


def test_print_settings_shows_what_auto_resolves_to(capsys):
    """A value a run decides itself (``auto``, or None that means it) is printed with what it resolves to for the
    data, ipc and image size given: the student's batch, SRe2L's jitter, RDED's factor, DM's DSA strategy."""
    args = ["condense", "--ipc", "1", "--data", "mnist", "--preset", "cpu", "--print-settings"]
    assert zoo_main([*args, "--method", "sre2l"]) == 0
    text = capsys.readouterr().out
    assert "batch=auto (= 10 for mnist ipc 1 at 28 px)" in text, text
    assert "jitter: 4 -> auto (= 3 for mnist ipc 1 at 28 px)" in text  # size // 8 at 28 px
    assert "jitter_mode: cifar -> auto (= cifar for mnist ipc 1 at 28 px)" in text
    assert zoo_main(["condense", "--method", "rded", "--ipc", "10", "--data", "cifar100", "--preset", "paper",
                     "--print-settings"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "batch=auto (= 100 for cifar100 ipc 10 at 32 px)" in text, text  # 50 at ipc 10, x 2 from 100 classes
    assert zoo_main(["condense", "--method", "rded", "--ipc", "1", "--data", "digits", "--preset", "quick",
                     "--print-settings"]) == 0  # fmt: skip
    assert "factor: 1 -> auto (= 1 for digits ipc 1 at 16 px)" in capsys.readouterr().out
    assert zoo_main([*args[:4], "mnist", *args[5:], "--method", "dm"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("dsa_strategy:"))
    want = "-> auto (every op, no flips on digits; = color_crop_cutout_scale_rotate for mnist ipc 1 at 28 px)"
    assert line.endswith(want), line
    assert zoo_main([*args[:4], "cifar10", *args[5:], "--method", "dm"]) == 0  # resolves to the authors' strategy
    assert not any(x.strip().startswith("dsa_strategy:") for x in capsys.readouterr().out.splitlines())


def test_settings_table_marks_auto_it_cannot_resolve():
    """Without the data's answer (a folder's classes) an ``auto`` says when it is decided; without ``resolved`` the
    table is as before, and a None that is not an auto value is left as it is."""
    table = settings_table("cpu", "rded", 1, METHODS["rded"].defaults, "flowers", True, {}, "for flowers ipc 1")
    assert "batch=auto (resolved when the run reads the data)" in table
    assert "factor: 1 -> None" in table  # not named in resolved: a value of its own
    plain = settings_table("cpu", "rded", 1, METHODS["rded"].defaults, "flowers", True)
    assert "batch=auto," not in plain and plain.split("batch=")[1].startswith("auto\n") and "(=" not in plain


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (["--ipc", "0"], "--ipc (images per class) must be 1 or more"),
        (["--option", "lr_img=fast"], "--option lr_img=fast"),
        (["--iterations", "-3"], "--iterations must be 0 or more"),
    ],
)
def test_print_settings_refuses_what_the_run_refuses(bad, fragment, capsys):
    """--print-settings shows only settings that would run: every check of the arguments comes first."""
    argv = ["condense", "--method", "dm", "--ipc", "1", "--data", "mnist", "--preset", "cpu", *bad]
    assert zoo_main([*argv, "--print-settings"]) == 2
    assert fragment in capsys.readouterr().err
