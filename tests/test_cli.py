"""The `zoo` command and `python -m zoo`."""
import json
import subprocess
import sys

import pytest

from zoo.cli import main


def test_list(capsys):
    assert main(["list", "poolformer_*"]) == 0
    out = capsys.readouterr().out
    assert "poolformer_s12" in out and "11.9M" in out and "77.2" in out
    assert "caformer" not in out


def test_info_is_json(capsys):
    assert main(["info", "poolformer_s12"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["reference"]["params"] == 11_915_176


def test_unknown_model_exits_2_with_suggestions(capsys):
    assert main(["info", "poolformer_s1"]) == 2
    assert "Did you mean: poolformer_s12" in capsys.readouterr().err


def test_run(capsys):
    assert main(["run", "poolformer_s12", "--img-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "logits (1, 1000)" in out and "top-5" in out


def test_profile_json(capsys):
    assert main(["profile", "poolformer_s12", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"] == 11_915_176
    assert result["flops"] == 2 * result["macs"]
    assert abs(result["macs"] / 1.82e9 - 1) < 0.02


def test_python_dash_m_is_the_same_entry():
    proc = subprocess.run([sys.executable, "-m", "zoo", "list", "randformer_s1*"], capture_output=True, text=True)
    assert proc.returncode == 0 and "randformer_s12" in proc.stdout


@pytest.mark.parametrize("name", ["poolformer_s12", "convformer_s18"])
def test_bench_smoke(name, capsys):
    """One tiny round of the zoo-vs-timm benchmark: the same weights give the same features."""
    assert main(["bench", "--models", name, "--batch-sizes", "1", "--img-size", "64", "--runs", "1",
                 "--warmup", "0", "--check"]) == 0
