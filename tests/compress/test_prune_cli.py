"""``zoo prune``: a registered name, a model folder or a run -> a pruned folder that reloads; bad requests refused.
And the dense-vs-pruned benchmark's rows (``zoo bench prune``), on a tiny input."""

import json

import pytest
import torch

import zoo
from zoo import cli
from zoo.bench.prune import prune_rows
from zoo.publish import export_pretrained

ARCH = {"depths": [1, 1, 2, 1], "dims": [24, 40, 72, 96], "num_classes": 6}


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow  # 2-7 s (a training run, a compile or a parity sweep): outside the 4-minute default run
def test_prune_a_registered_name(tmp_path, capsys):
    out = tmp_path / "pruned"
    code, text, _ = _run(
        capsys,
        "prune",
        "convformer_s18",
        "--model-args",
        json.dumps(ARCH),
        "--input-size",
        "3,48,48",
        "--target-macs",
        "50%",
        "--round-to",
        "0",
        "--out",
        str(out),
    )
    assert code == 0, text
    assert "params" in text and "MACs" in text and "identical outputs True" in text
    percent = float(text.split("MACs")[1].split("(")[1].split("%")[0])
    assert abs(percent - 50) <= 2
    config = json.loads((out / "config.json").read_text())
    assert config["model_args"]["depths"] == ARCH["depths"] and config["num_classes"] == 6
    assert len(config["model_args"]["mlp_hidden"]) == sum(ARCH["depths"])
    model = zoo.create_model(out, pretrained=True)
    assert model.num_classes == 6 and model.stages[0].blocks[0].mlp.fc1.in_features < 24


def test_prune_a_model_folder_keeps_its_architecture(tmp_path, capsys):
    torch.manual_seed(0)
    dense = zoo.create_model("poolformer_s12", **ARCH).eval()
    folder = export_pretrained(
        dense, tmp_path / "dense", model_kwargs=ARCH, data_config={"input_size": (3, 32, 32)}, latency_runs=0
    )
    out = tmp_path / "pruned"
    code, text, _ = _run(capsys, "prune", str(folder), "--ratio", "0.25", "--round-to", "8", "--out", str(out))
    assert code == 0, text
    assert "at 3x32x32" in text  # MACs counted at the folder's own input size
    pruned = zoo.create_model(out, pretrained=True)
    assert [s.blocks[0].mlp.fc1.in_features % 8 for s in pruned.stages] == [0, 0, 0, 0]
    assert len(pruned.stages[2].blocks) == 2 and pruned.num_classes == 6
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the kept channels carry the dense weights: the stem conv's kept filters are its own
        kept = pruned.stem.conv.weight
        assert all(any(torch.equal(k, d) for d in dense.stem.conv.weight) for k in kept)
        assert pruned(x).shape == (2, 6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ratio", "0.5", "--target-macs", "0.5"], "exactly one of"),
        ([], "exactly one of"),
        (["--ratio", "2"], "ratio must be"),
        (["--target-macs", "lots"], "--target-macs must be"),
        (["--target-macs", "1K"], "out of reach"),
    ],
)
def test_bad_requests(argv, message, capsys, tmp_path):
    code, _, err = _run(
        capsys,
        "prune",
        "poolformer_s12",
        "--model-args",
        json.dumps(ARCH),
        "--input-size",
        "3,32,32",
        "--round-to",
        "0",
        "--out",
        str(tmp_path / "x"),
        *argv,
    )
    assert code == 2 and message in err, err
    assert not (tmp_path / "x").exists()


def test_unknown_importance_is_refused(capsys):
    with pytest.raises(SystemExit):
        cli.main(["prune", "poolformer_s12", "--ratio", "0.5", "--importance", "bogus"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_bench_rows_side_by_side():
    rows = prune_rows(
        ["poolformer_s12"], (1, 2), input_size=(3, 32, 32), runs=1, warmup=0, model_kwargs={"depths": (1, 1, 1, 1)}
    )
    assert [r.setting for r in rows] == ["batch 1", "batch 2"]
    for r in rows:
        assert r.peer == "dense" and r.candidate.startswith("pruned") and r.rate > 0 and r.peer_rate > 0
        assert len(r.times_s["dense"]) == len(r.times_s["pruned"]) == 1
    assert rows[1].target is None  # the 0.6x target applies from batch 32


def test_an_lm_with_a_short_context_is_counted_at_its_context(tmp_path, capsys):
    """The default example (128 tokens) fits the model: a context of 64 is counted at 64 tokens; a --tokens the
    context cannot take names the flag and the context, not the user's text."""
    lm = zoo.create_model("mobilellm_125m", num_hidden_layers=1, hidden_size=64, intermediate_size=128,
                          num_attention_heads=2, num_key_value_heads=1, vocab_size=300, max_position_embeddings=64)  # fmt: skip
    lm.save_pretrained(tmp_path / "lm")
    out = tmp_path / "pruned"
    assert cli.main(["prune", str(tmp_path / "lm"), "--target-macs", "50%", "--out", str(out)]) == 0
    assert "64 tokens" in capsys.readouterr().out
    assert cli.main(["prune", str(tmp_path / "lm"), "--target-macs", "50%", "--out", str(tmp_path / "b"),
                     "--tokens", "100"]) == 2  # fmt: skip
    assert "--tokens 100: give 1 to 64 (this model's context" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
