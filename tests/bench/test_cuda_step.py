"""tools/cuda_step.py: the training step of both builds in one process, float32 and bf16, and the kernels with the
most time. Its figures come from a GPU; here it runs on the CPU at a toy size, which exercises the same code."""

import json

import pytest
import torch
from maintainer_tools import load

cuda_step = load("cuda_step")


@pytest.mark.slow  # both builds, two precisions, five warm-up steps each and a profile: about 16 s on 2 cores
def test_a_run_writes_both_precisions_of_both_builds_and_their_kernels(tmp_path, one_thread, capsys):
    out = tmp_path / "cuda_step.json"
    argv = ["--models", "poolformer_s12", "--batch", "1", "--img-size", "32", "--rounds", "1", "--steps", "1"]
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    assert cuda_step.main([*argv, "--device", "cpu", "--tf32", "on", "--out", str(out)]) == 0
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags  # a CPU run sets none
    doc = json.loads(out.read_text())
    assert doc["tf32"] == "on" and doc["provenance"]["commit"] and doc["command"].endswith(f"--out {out}")
    (row,) = doc["rows"]
    for side in ("timm", "zoo"):
        for tag in ("fp32", "bf16"):
            assert row[f"{side}_{tag}_img_s"] > 0
        assert row[f"{side}_bf16_over_fp32"] == round(row[f"{side}_bf16_img_s"] / row[f"{side}_fp32_img_s"], 3)
        total, *top = doc["kernels"]["poolformer_s12"][side]
        assert top and total["total_ms_per_step"] >= sum(k["ms_per_step"] for k in top) - 1e-3 * len(top)
        assert [k["ms_per_step"] for k in top] == sorted((k["ms_per_step"] for k in top), reverse=True)
    assert "poolformer_s12   batch 1 cpu" in capsys.readouterr().out
