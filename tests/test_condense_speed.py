"""The condensation speed bench: both sides run on their own state and the rows and table say what was measured."""

import pytest
import torch

from zoo.bench.condense_speed import generated_data, measure, render_speed, sides


def _tiny():
    return generated_data(num_classes=3, per_class=6, channels=1, size=16, seed=1)


def test_sides_keep_their_own_images():
    """One iteration of each side changes its own synthetic images and not the other's."""
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


@pytest.mark.parametrize("methods", [("dm", "dsa"), pytest.param(("mtt",), marks=pytest.mark.slow)])
def test_measure_and_render(methods):
    real = _tiny()
    rows = []
    for method in methods:
        row = measure(method, real, ipc=1, rounds=2, batch_real=4, outer=1, inner=1)
        assert row["rounds"] == 2 and row["zoo_min"] > 0 and row["authors_min"] > 0
        assert row["zoo_min"] <= row["zoo_median"] and row["authors_min"] <= row["authors_median"]
        assert abs(row["speedup_min"] - row["authors_min"] / row["zoo_min"]) < 1e-12
        rows.append({"data": "generated", **row})
    doc = {"provenance": {"date": "d", "commit": "c", "cpu": "cpu", "threads": "2", "torch": "t", "load": "0"},
           "speed": rows}  # fmt: skip
    table = render_speed([doc])
    assert table.count("| generated |") == len(methods) and "2 interleaved rounds" in table
