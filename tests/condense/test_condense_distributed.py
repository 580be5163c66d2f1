"""Condensation on two gloo processes (CPU) equals one process with the same seed: RDED and SRe2L share out
classes / batches, MTT its expert buffer, a toy sharding method checks the gathered rows, the optimiser state in the
checkpoint and resuming; rank 0 alone writes. Both sides run with one thread, so equal means bit for bit. The two
processes start in one module fixture (about 40 s on 2 cores): those tests are marked slow."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import condense_ddp_worker as worker  # beside this module (pytest puts its folder on sys.path)
import pytest
import torch
from safetensors.torch import load_file, save_file

from zoo.condense import METHODS
from zoo.condense.distributed import split

pytestmark = pytest.mark.ddp

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The jobs once in this process and once on two processes; their results by name."""
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("condense_ddp")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = worker.real()
        net = worker.teacher(data)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "teacher.safetensors"))
        one = worker.jobs(data, worker.teacher(data, str(folder / "teacher.safetensors")), folder / "one")
    finally:
        torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.spawn(worker.run, args=(2, str(folder / "init"), str(folder)), nprocs=2, join=True)
    two = {name: load_file(str(folder / f"{name}.safetensors")) for name in one}
    reports = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]
    return one, two, reports, folder


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_split_gives_rank_0_the_longer_blocks():
    assert split(10, 2) == [range(0, 5), range(5, 10)]
    assert split(5, 3) == [range(0, 2), range(2, 4), range(4, 5)]
    assert split(1, 2) == [range(0, 1), range(1, 1)]


@pytest.mark.parametrize(
    "name, options",
    [
        ("dm", dict(iterations=1, batch_real=8)),
        ("dsa", dict(iterations=1, batch_real=8, inner_loop=1)),
        ("rded", dict(n_candidates=4, n_crops=2)),
        ("sre2l", dict(iterations=1, batch=5)),
    ],
)
def test_a_process_draws_what_one_process_draws_and_makes_its_rows(name, options):
    """In one process, posing as rank 0 or 1 of 2: the method's generator ends where the whole method's does (every
    process draws every class's numbers), and the rows the process owns equal the whole method's rows."""
    data = worker.real()
    net = worker.teacher(data, None, epochs=0)
    made = []
    for rank in (None, 0, 1):
        opts = dict(options, teacher=net) if METHODS[name].needs_teacher else dict(options)
        m = METHODS[name](data, 2, opts, 0, torch.device("cpu"))
        if rank is not None:
            m.rank, m.world, m.classes = rank, 2, list(split(data.num_classes, 2)[rank])
        m.check()
        m.setup()
        if m.iterations:
            m.step(0)
        made.append((m.generator.get_state(), m.images.detach(), rank is not None and m.row_owner() == rank))
    whole = made[0]
    for state, images, own in made[1:]:
        assert torch.equal(state, whole[0])
        assert own.any() and torch.equal(images[own], whole[1][own])


@pytest.mark.slow
def test_each_process_owns_its_block_of_classes(runs):
    _, _, reports, _ = runs
    assert [r["classes"] for r in reports] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


@pytest.mark.slow
def test_rded_and_sre2l_on_two_processes_equal_one(runs):
    one, two, _, _ = runs
    _same(one["rded"], two["rded"])  # images, labels and the teacher's soft labels
    _same(one["sre2l"], two["sre2l"])
    assert not torch.equal(one["sre2l"]["images"][:2], one["sre2l"]["images"][2:4])


@pytest.mark.slow
def test_dm_and_dsa_on_two_processes_equal_one(runs):
    assert METHODS["dm"].shards == METHODS["dc"].shards == METHODS["dsa"].shards == "classes"
    one, two, _, _ = runs
    _same(one["dm"], two["dm"])
    _same(one["dsa"], two["dsa"])


@pytest.mark.slow
def test_mtt_buffer_trained_by_two_processes_equals_one(runs):
    one, two, _, folder = runs
    _same(one["mtt"], two["mtt"])
    a = sorted((folder / "one" / "experts").rglob("expert_*.safetensors"))
    b = sorted((folder / "two" / "experts").rglob("expert_*.safetensors"))
    assert [p.name for p in a] == [p.name for p in b] == [f"expert_{i:04d}.safetensors" for i in range(3)]
    for x, y in zip(a, b):
        assert torch.equal(load_file(str(x))["trajectory"], load_file(str(y))["trajectory"]), x.name


@pytest.mark.slow
def test_a_method_that_runs_whole_gives_the_same_set(runs):
    one, two, _, _ = runs
    _same(one["random"], two["random"])


@pytest.mark.slow
def test_gathered_rows_losses_and_resume_equal_one_process(runs):
    one, two, _, _ = runs
    assert torch.equal(one["means"]["images"], two["means"]["images"])
    # the loss shown is the sum of the processes' shares
    # two shares added re-associate a sum of float32 losses: rtol 1e-6 is ~8 float32 steps (EPS32 = 1.2e-7)
    assert torch.allclose(one["means"]["losses"], two["means"]["losses"], rtol=1e-6, atol=0)
    # a checkpoint from rank 0 carries every class's rows and momentum: the resumed run ends where one run does
    assert torch.equal(two["means_resumed"]["images"], one["means"]["images"])


@pytest.mark.slow
def test_only_rank_0_writes_the_folder(runs):
    _, _, reports, folder = runs
    assert [r["writes"] for r in reports] == [1, 0]
    assert (folder / "two" / "rded" / "condense.json").is_file()
    meta = json.loads((folder / "two" / "rded" / "condense.json").read_text())
    assert meta["processes"] == 2 and meta["split"] == "classes"


CLI_OPTIONS = {
    "mtt": [
        "num_experts=3",
        "train_epochs=2",
        "expert_epochs=1",
        "max_start_epoch=1",
        "syn_steps=2",
        "expert_images=200",
    ],  # fmt: skip
    "dm": ["batch_real=16"],
}


def _cli(method, out, *extra, processes=1):
    args = ["--data", "digits", "--method", method, "--ipc", "2", "--image-size", "16", "--preset", "quick",
            "--iterations", "4", "--save-every", "2", "--no-progress", "--out", str(out), *extra]  # fmt: skip
    for opt in CLI_OPTIONS[method]:
        args += ["--option", opt]
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [*run, "-m", "zoo", "condense", *args] if processes > 1 else [sys.executable, "-m", "zoo", "condense", *args]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout, load_file(str(out / "synthetic.safetensors"))


# the command line under torchrun with DM (its classes shared out); MTT's expert buffer on two processes is checked
# above (test_mtt_buffer_trained_by_two_processes_equals_one), its command line under torchrun by hand (-m sweep)
@pytest.mark.slow
@pytest.mark.parametrize(
    "method, shared",
    [pytest.param("mtt", "the expert buffer", marks=pytest.mark.sweep), ("dm", "the classes")],
)
def test_torchrun_zoo_condense_equals_one_process_and_resumes(tmp_path, method, shared):
    """``torchrun --nproc_per_node 2 -m zoo condense``: one start line, the work shared out, the set of one
    process; a run stopped after its step-2 state and resumed under torchrun ends with the same set (DM: the
    momentum of rank 1's classes came through rank 0's checkpoint)."""
    _, one = _cli(method, tmp_path / "one")
    out, two = _cli(method, tmp_path / "two", processes=2)
    assert out.count(f"zoo condense: {method}") == 1 and f"2 processes, sharing out {shared}" in out, out
    _same(one, two)
    state = tmp_path / "two" / ".condense_state"
    (state / "step_4.pt").unlink()  # as if killed after the step-2 state
    (state / "last.pt").unlink()
    (tmp_path / "two" / "synthetic.safetensors").unlink()
    _, resumed = _cli(method, tmp_path / "two", "--resume", processes=2)
    _same(one, resumed)


def test_more_processes_than_classes_is_one_line(monkeypatch):
    from zoo.condense import core

    monkeypatch.setattr(core.distributed, "world", lambda: (0, 11))
    with pytest.raises(core.CondenseError, match="has 10, fewer than the 11 processes: start at most 10"):
        core.condense(worker.real(), "rded", ipc=1, progress=False)
