"""The checkout's examples (``examples/*.py``): scripts built on the installed package's public pieces."""

import json

import pytest
from maintainer_tools import load


@pytest.mark.slow
def test_compress_quickstart_smoke_runs_the_digits_path(tmp_path, capsys):
    pytest.importorskip("zoo.compress")
    compress_quickstart = load("compress_quickstart", "examples")

    assert compress_quickstart.main(["--smoke", "--only", "digits", "--runs", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "compress_quickstart.json").read_text())["digits"]
    dense, pruned, finetuned, distilled = rows
    assert abs(pruned["macs"] / dense["macs"] - 0.5) < 0.02  # half the MACs, counted on the reloaded folder
    assert finetuned["macs"] == distilled["macs"] == pruned["macs"]
    assert "pruned + distilled" in capsys.readouterr().out
