"""The condensation speed bench: both sides run on their own state, each in its own process with the authors' loop
counts, and the rows and table say what was measured."""

import pytest
import torch

from zoo.bench.condense_speed import generated_data, measure, render_scripts, render_speed, sides
from zoo.condense import core


def _tiny():
    return generated_data(num_classes=3, per_class=6, channels=1, size=16, seed=1)


def test_sides_keep_their_own_images(monkeypatch):
    """One iteration of each side changes its own synthetic images and not the other's."""
    monkeypatch.setattr(core, "COMPILE_FROM", 10**9)  # eager: what is checked here does not depend on it
    real = _tiny()
    torch.manual_seed(0)
    zoo_step, authors_step = sides("dm", real, ipc=2, batch_real=4, outer=1, inner=1, seed=0)
    zoo_images = zoo_step.__closure__  # the zoo's method object holds its images
    method = next(c.cell_contents for c in zoo_images if hasattr(c.cell_contents, "images"))
    before = method.images.detach().clone()
    authors_step()
    assert torch.equal(method.images.detach(), before)  # the authors' step did not touch the zoo's images
    zoo_step()
    assert not torch.equal(method.images.detach(), before)


@pytest.mark.slow  # four processes of a minute in all
@pytest.mark.parametrize("methods", [("dsa",)])
def test_measure_in_processes_and_render(methods):
    """Each side's timings come from its own processes (wall and CPU seconds per iteration, peak memory), with the
    authors' loop counts for the ipc; the ratios are the medians'; the table and provenance line say so."""
    rows = []
    for method in methods:
        row = measure(method, "generated", None, ipc=1, rounds=2, iterations=1, threads=1, batch_real=4)
        assert (row["rounds"], row["iterations"], row["threads"], row["size"]) == (2, 1, 1, 32)
        for side in ("zoo", "authors"):
            for key in ("wall", "cpu"):
                assert 0 < row[f"{side}_{key}_min"] <= row[f"{side}_{key}_median"]
            assert row[f"{side}_peak_mb"] > 50  # a process with torch and the data resident
        assert abs(row["speedup_wall"] - row["authors_wall_median"] / row["zoo_wall_median"]) < 1e-12
        assert abs(row["speedup_cpu"] - row["authors_cpu_median"] / row["zoo_cpu_median"]) < 1e-12
        if method == "dsa":
            assert row["loops"] == [1, 1]  # get_loops at ipc 1, not a setting of the bench's own
        rows.append(row)
    doc = {"provenance": {"date": "d", "commit": "c", "cpu": "cpu", "threads": "1", "torch": "t", "load": "0"},
           "speed": rows}  # fmt: skip
    table = render_speed([doc])
    assert table.count("| generated |") == len(methods) and "2 rounds x 1 iterations a side (one process each)" in table


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_a_failing_side_says_which():
    with pytest.raises(RuntimeError, match="the zoo side of nope"):
        measure("nope", "generated", None, ipc=1, rounds=1, iterations=1, threads=1, batch_real=4)


def _scripts_doc(date, rows):
    prov = {"date": date, "commit": "abc1234", "cpu": "a CPU", "torch": "2.x", "load": "0.5"}
    keys = ("method", "ipc", "threads", "device", "authors_wall", "zoo_wall")
    scripts = [dict(zip(keys, r), data="mnist", authors_command=f"main.py {r[0]}", authors_cpu=r[4], zoo_cpu=r[5],
                    speedup_wall=r[4] / r[5], speedup_cpu=r[4] / r[5]) for r in rows]  # fmt: skip
    return {"provenance": prov, "repository": "authors@1", "method": "probe", "scripts": scripts}


def test_the_scripts_table_takes_each_row_from_its_latest_run():
    old = _scripts_doc("day 1", [("dc", 1, 1, "H200", 20.0, 10.0), ("dm", 1, 1, "H200", 6.0, 3.0)])
    new = _scripts_doc("day 2", [("dc", 1, 1, "H200", 20.0, 8.0)])
    table = render_scripts([old, new])
    rows = [line for line in table.splitlines() if line.startswith("| D")]
    assert [r.split(" | ")[0] for r in rows] == ["| DM", "| DC"]  # one row per key, DM first
    assert "**2.50x / 2.50x** | day 2" in rows[1] and "**2.00x / 2.00x** | day 1" in rows[0]
    assert table.count("- authors@1:") == 2  # both runs cited under the table
    gpu = render_scripts([_scripts_doc("day 3", [("dm", 10, 16, "H200", 0.0931, 0.0357)])], column="device")
    assert "| ipc | device |" in gpu and "| DM | 10 | H200 | `main.py dm` | 0.093 / 0.093 | 0.036 / 0.036 |" in gpu
