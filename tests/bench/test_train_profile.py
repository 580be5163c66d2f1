"""tools/train_profile.py: a training step split into matrix products, attention and the rest, and the ceiling the
split sets on the zoo's ratio to timm."""

import json

import pytest
from maintainer_tools import load

profile = load("train_profile")


@pytest.mark.parametrize(
    "name, cls",
    [("aten::mm", "gemm"), ("aten::_slow_conv2d_backward", "gemm"), ("aten::bmm", "gemm"),
     ("zoo_vision::matmul", "gemm"), ("zoo_vision::matmul_gelu", "gemm"), ("zoo_vision::matmul_times", "gemm"),
     ("zoo_vision::matmul_star_relu_backward", "gemm"), ("zoo_vision::weight_grad", "gemm"),
     ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", "attention"),
     ("zoo_vision::attention", "attention"), ("zoo_vision::attention_backward", "attention"),
     ("zoo_vision::star_relu_forward", "other"), ("zoo_vision::depthwise_forward", "other"),
     ("aten::mkldnn_convolution", "other"), ("aten::gelu_backward", "other"), ("aten::copy_", "other")],
)  # fmt: skip
def test_operators_fall_in_their_class(name, cls):
    assert profile.op_class(name) == cls


def test_the_ceiling_is_timm_s_step_over_the_zoo_s_products_and_attention():
    timm = {"step_ms": 400.0, "gemm": 200.0, "attention": 50.0, "other": 150.0}
    zoo = {"step_ms": 300.0, "gemm": 180.0, "attention": 50.0, "other": 70.0}
    r = profile.row("m", 8, 1, timm, zoo, 1.6)
    assert r["ratio"] == pytest.approx(400 / 300)
    assert r["ceiling"] == pytest.approx(400 / 230)
    assert r["other_needed_ms"] == pytest.approx(400 / 1.6 - 230)  # 20 ms of other at 1.6x


def test_a_profiled_step_splits_its_time(tmp_path, one_thread):
    """The zoo's build, one step at batch 1: the classes add up to the step (each operator counted once, by its
    own time) and most of it is matrix products."""
    out = tmp_path / "profile.json"
    profile.child("zoo", "poolformer_s12", 1, 1, 1, str(out))
    d = json.loads(out.read_text())
    parts = d["gemm"] + d["attention"] + d["other"]
    assert d["attention"] == 0 and d["gemm"] > 0.3 * d["step_ms"]
    assert 0.5 * d["step_ms"] < parts <= 1.05 * d["step_ms"]


def test_out_replaces_the_rows_it_measured_and_keeps_the_others(tmp_path, monkeypatch):
    step = {"timm": {"step_ms": 400.0, "gemm": 200.0, "attention": 0.0, "other": 200.0}}
    step["zoo"] = {"step_ms": 300.0, "gemm": 200.0, "attention": 0.0, "other": 100.0}
    monkeypatch.setattr(profile, "_run", lambda build, model, batch, args: dict(step[build]))
    out = tmp_path / "step_profile.json"
    profile.main(["--models", "m", "--batch-sizes", "8,32", "--out", str(out)])
    step["zoo"] = {**step["zoo"], "step_ms": 200.0}
    profile.main(["--models", "m", "--batch-sizes", "32", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["batch_size"], r["zoo"]["step_ms"]) for r in rows] == [(8, 300.0), (32, 200.0)]
    assert "--batch-sizes 8,32" in rows[0]["command"] and "--batch-sizes 32 " in rows[1]["command"]
