"""The condensation speed bench: both sides run on their own state, each in its own process with the authors' loop
counts, and the rows and table say what was measured."""

import pytest
import torch

from zoo.bench.condense_speed import generated_data, measure, render_speed, sides
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
