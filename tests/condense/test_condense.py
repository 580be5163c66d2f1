"""zoo condense: the core (real data, the folder, the resumable loop), DM and DC/DSA, the command, train.py on a set.

Tiny settings throughout (digits at 16x16, a few iterations, small real batches); the protocol's figures are the
benchmark's (zoo bench condense), and a slow test checks that DM beats the random subset.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.cli import main as zoo_main
from zoo.condense import CondenseError, SyntheticSet, condense, evaluate_set, load_real, load_real_split
from zoo.condense.core import METHODS, STATE_DIR, run_method
from zoo.condense.dc import default_loops, match_distance
from zoo.condense.evaluate import EvalSettings
from zoo.data.dsa import DSA
from zoo.data.synthetic import load_synthetic

ROOT = Path(__file__).resolve().parents[2]
TINY = {"dm": dict(batch_real=16), "dc": dict(batch_real=16, inner_loop=1), "dsa": dict(batch_real=16, inner_loop=1)}


def test_real_digits_are_normalised_and_fingerprinted(real):
    assert real.images.shape == (1437, 3, 16, 16) and real.num_classes == 10
    assert abs(float(real.images.mean())) < 1e-3 and abs(float(real.images.std()) - 1) < 0.01
    again = load_real("digits", image_size=16)
    assert again.source["fingerprint"] == real.source["fingerprint"]
    test = load_real_split(real.source, real.preprocessing)
    assert test.images.shape[0] == 360 and test.preprocessing == real.preprocessing
    assert test.source["fingerprint"] != real.source["fingerprint"]


# dc is dsa's code without the augmentation; dsa's step is checked against the authors' by default
# (tests/condense/test_condense_parity.py), its run here under -m slow
@pytest.mark.parametrize(
    "method", ["dm", pytest.param("dc", marks=pytest.mark.slow), pytest.param("dsa", marks=pytest.mark.slow)]
)
def test_matching_loss_falls_and_images_move(real, method):
    iters, losses = 6, []
    m = METHODS[method](real, 2, {"iterations": iters, **TINY[method]}, seed=0, device=torch.device("cpu"))
    m.check()
    run_method(m, progress=False, log=lambda it, loss: losses.append(loss))
    images = m.result()[0]
    assert len(losses) == iters and all(torch.isfinite(torch.tensor(losses)))
    # each iteration draws a new network and new augmentations, so compare the start and the result on the same
    # draws: iteration 0's network, real batches and transforms
    again = []
    for start in (None, images):
        m0 = METHODS[method](real, 2, {"iterations": 1, **TINY[method]}, seed=0, device=torch.device("cpu"))
        m0.setup()
        if start is not None:
            m0.images.data.copy_(start)
        again.append(m0.step(0))
    assert again[1] < again[0], (again, losses)
    start = METHODS[method](real, 2, {}, seed=0, device=torch.device("cpu")).init_from_real()[0]
    assert images.shape == start.shape == (20, 3, 16, 16) and not torch.equal(images, start)


@pytest.mark.parametrize("method", ["dm", pytest.param("dsa", marks=pytest.mark.slow)])
def test_same_seed_same_set_other_seed_other_set(real, method):
    a = condense(real, method, ipc=1, iterations=2, progress=False, seed=3, **TINY[method])
    b = condense(real, method, ipc=1, iterations=2, progress=False, seed=3, **TINY[method])
    c = condense(real, method, ipc=1, iterations=2, progress=False, seed=4, **TINY[method])
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.labels.tolist() == list(range(10))


def test_resume_ends_with_the_uninterrupted_set(real, tmp_path):
    whole = condense(real, "dm", ipc=1, iterations=4, progress=False, **TINY["dm"])
    out = tmp_path / "dm"
    condense(real, "dm", ipc=1, iterations=2, out=out, save_every=1, progress=False, **TINY["dm"])
    assert (out / STATE_DIR / "last.pt").is_file()
    resumed = condense(real, "dm", ipc=1, iterations=4, out=out, resume=True, save_every=1, progress=False,
                       **TINY["dm"])  # fmt: skip
    assert torch.equal(resumed.images, whole.images)


def test_folder_round_trip(real, tmp_path):
    s = condense(real, "dm", ipc=2, iterations=1, out=tmp_path / "set", progress=False, **TINY["dm"])
    files = {p.name for p in (tmp_path / "set").iterdir()}
    assert {"synthetic.safetensors", "condense.json", "README.md", "grid.png", "images"} <= files
    assert len(list((tmp_path / "set" / "images" / "3").glob("*.png"))) == 2
    meta = json.loads((tmp_path / "set" / "condense.json").read_text())
    assert meta["method"] == "dm" and meta["ipc"] == 2 and meta["source"]["size"] == 1437
    assert meta["source"]["fingerprint"].startswith("sha256:") and meta["wall_time_s"] > 0
    assert meta["peak_memory_mb"] > 0 and meta["storage"]["values"] == 20 * 3 * 16 * 16
    back = SyntheticSet.load(tmp_path / "set")
    assert torch.equal(back.images, s.images) and torch.equal(back.labels, s.labels)
    assert "![grid](grid.png)" in (tmp_path / "set" / "README.md").read_text()


def test_a_folder_that_is_not_a_set_is_not_replaced(real, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CondenseError, match="not a synthetic set"):
        condense(real, "dm", ipc=1, iterations=1, out=tmp_path, progress=False, **TINY["dm"])
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_dsa_is_siamese_and_differentiable():
    dsa = DSA()
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):  # every op shows up among a dozen draws
        p = dsa.sample(g, 1, (16, 16))
        a, b = dsa.apply(x, p), dsa.apply(x[:2].detach(), p)
        assert torch.allclose(a[:2], b, atol=1e-6), p.op  # the same transform on any batch
        a.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_gradient_distance_and_loops():
    g = torch.randn(8, 3, 3, 3)
    assert match_distance(g, g).abs() < 1e-5 and abs(float(match_distance(g, -g)) - 16) < 1e-4
    assert match_distance(torch.randn(8), torch.randn(8)) == 0  # biases are left out
    assert default_loops(1) == (1, 1) and default_loops(10) == (10, 50) and default_loops(50) == (50, 10)


def test_the_real_side_compiles_where_it_is_repaid(real):
    """DM's real side compiles on the CPU from COMPILE_FROM iterations (the first iteration's compilation is
    repaid), never for a short run, never when told not to; DC's only when asked; the chunks are the device's."""
    from zoo.condense.core import COMPILE_FROM, compile_real_side, real_chunk
    from zoo.condense.dc import _real_loss
    from zoo.condense.dm import _embed_sum

    cpu = torch.device("cpu")
    assert compile_real_side(_embed_sum, None, cpu, COMPILE_FROM - 1) is _embed_sum
    assert compile_real_side(_embed_sum, False, cpu, 20000) is _embed_sum
    assert compile_real_side(_embed_sum, True, cpu, 1) is not _embed_sum
    assert compile_real_side(_embed_sum, None, torch.device("meta"), 20000) is _embed_sum  # the CPU's measure
    chunks = [real_chunk(device, threads) for device, threads in [("cpu", 1), ("cpu", 2), ("cpu", 8), ("meta", 1)]]
    assert chunks == [16, 64, 64, 512]  # one thread, two or more, another device

    def made(method, **options):
        m = METHODS[method](real, 1, {**TINY[method], **options}, 0, cpu)
        m.setup()
        return m

    assert made("dm", iterations=COMPILE_FROM)._embed_sum is not _embed_sum
    assert made("dm", iterations=COMPILE_FROM - 1)._embed_sum is _embed_sum
    assert made("dc", iterations=20000)._real_loss is _real_loss
    assert made("dsa", iterations=5, compile=True)._real_loss is not _real_loss
    assert made("dm").chunk == real_chunk("cpu", torch.get_num_threads())


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_evaluation_trains_networks_on_a_set(real):
    test = load_real_split(real.source, real.preprocessing)
    idx = torch.cat([real.by_class[c][:5] for c in range(10)])
    accs = evaluate_set((real.images[idx], real.labels[idx]), test, EvalSettings(epochs=15), runs=2)
    assert len(accs) == 2 and all(30 < a <= 100 for a in accs) and accs[0] != accs[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ipc", "0"], "ipc"),
        (["--method", "dmm"], "unknown method"),
        (["--method", "dm", "--option", "lr=1"], "no option"),
        (["--data", "/no/such/folder"], "no dataset"),
    ],
)
def test_bad_input_is_one_line_and_status_2(args, message, tmp_path, capsys):
    rc = zoo_main(["condense", "--out", str(tmp_path / "o"), "--no-progress", "--iterations", "1", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err


def test_an_interrupted_runs_state_is_kept_until_resume_or_overwrite(tmp_path, capsys):
    """A run stopped before its set was written leaves its state in --out; starting again there without --resume
    would delete it: refused in one line naming both ways on, the state left as it was."""
    state = tmp_path / "o" / STATE_DIR
    state.mkdir(parents=True)
    (state / "last.pt").write_bytes(b"state of the earlier run")
    rc = zoo_main(["condense", "--out", str(tmp_path / "o"), "--no-progress", "--iterations", "1", "--ipc", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--resume" in err and "--overwrite" in err, err
    assert (state / "last.pt").read_bytes() == b"state of the earlier run"


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_the_zoos_cache_is_no_out_folder(tmp_path, monkeypatch, capsys, overwrite):
    cache = tmp_path / "cache"
    (cache / "datasets" / "mnist").mkdir(parents=True)
    monkeypatch.setenv("ZOO_CACHE", str(cache))
    for out in (cache, tmp_path):
        rc = zoo_main(["condense", "--out", str(out), "--no-progress", "--iterations", "1", "--ipc", "1", *overwrite])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "the zoo's cache" in err, err
    assert (cache / "datasets" / "mnist").is_dir()


def test_a_dataset_without_labels_is_refused(tmp_path, capsys):
    (tmp_path / "flat").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    rc = zoo_main(["condense", "--data", str(tmp_path / "flat"), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "class" in err, err


@pytest.mark.slow
def test_condense_then_train_py_then_held_out(tmp_path):
    out = tmp_path / "set"
    rc = zoo_main(["condense", "--data", "digits", "--method", "dm", "--ipc", "5", "--image-size", "16",
                   "--iterations", "2", "--option", "batch_real=16", "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0 and load_synthetic(out).images.shape == (50, 3, 16, 16)
    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs/condensed_digits.yaml"),
           "--data.path", str(out), "--output_dir", str(run), "--train.epochs", "20", "--train.eval_every_epochs", "20",
           "--export.enabled", "false"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path, timeout=300)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "validation" and metrics["samples"] == 360  # the real held-out scans
    assert metrics["top1"] > 50, metrics


@pytest.mark.slow
def test_dm_at_ipc_1_beats_the_random_subset(real):
    """DM's set trains ConvNet-3 clearly better than random images. 40 iterations (the benchmark's quick setting
    takes 150) already lift the set from the random subset's 76-78% to about 90% top-1 on the held-out digits; at one
    iteration the two are alike."""
    test = load_real_split(real.source, real.preprocessing)
    settings = EvalSettings(epochs=60)
    dm = condense(real, "dm", ipc=1, iterations=40, batch_real=64, progress=False)
    rnd = condense(real, "random", ipc=1, progress=False)
    dm_acc = sum(evaluate_set(dm, test, settings, runs=3)) / 3
    rnd_acc = sum(evaluate_set(rnd, test, settings, runs=3)) / 3
    assert dm_acc > rnd_acc + 5, (dm_acc, rnd_acc)


def test_a_saved_set_has_the_umasks_modes(real, tmp_path):
    """The set's folder and files are made as other outputs are (0755 / 0644 under umask 022): safetensors writes
    0600 and a temporary folder is 0700."""
    old = os.umask(0o022)
    try:
        condense(real, "dm", ipc=1, iterations=1, out=tmp_path / "set", progress=False, **TINY["dm"])
    finally:
        os.umask(old)
    assert (tmp_path / "set").stat().st_mode & 0o777 == 0o755
    for f in ("synthetic.safetensors", "condense.json", "README.md", "grid.png"):
        assert (tmp_path / "set" / f).stat().st_mode & 0o777 == 0o644, f
