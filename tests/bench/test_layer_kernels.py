"""tools/layer_kernels.py: every kernel pair times the zoo's call against the PyTorch operator on the same inputs,
and the two compute the same thing."""

import json

import torch
from maintainer_tools import load
from tolerances import U32, U64, attention_bounds, gamma, gelu_bounds

from zoo.kernels import vision

kernels = load("layer_kernels")


def test_each_pair_computes_the_same_result(one_thread):
    """The pairs are like for like: each side is within float32's bound for its sums (``terms`` products an entry)
    of the PyTorch operator in float64, so a pair timing two different computations fails here. GELU's pair: the
    zoo's GELU and input gradient within the bounds of its erf's and exp's errors of ATen's operators in float64.
    The attention's pair: the kernel's output and qkv's gradient within their derived bounds of float64, and the
    operators' path in float64 within the same of the exact formula."""
    for case in kernels.cases(1):
        inputs = case["inputs"]
        if case["kernel"].startswith("attention"):  # (output, qkv's gradient) of (qkv, g)
            qkv, g = inputs
            heads = qkv.shape[2] // 96
            exact_out, exact_grad, out_bound, grad_bound = attention_bounds(qkv, heads, g, vision.EXP_ERROR)
            out, grad = case["zoo"](qkv, g)
            assert ((out.double() - exact_out).abs() <= out_bound).all()
            assert ((grad.double() - exact_grad).abs() <= grad_bound).all()
            # the operators' side computes the same thing: in float64, well within the float32 bounds
            ref_out, ref_grad = case["torch"](qkv.double(), g.double())
            assert ((ref_out - exact_out).abs() <= out_bound).all()
            assert ((ref_grad - exact_grad).abs() <= grad_bound).all()
            continue
        if case["terms"] is None:  # GELU: (output, input's gradient) of (h, g)
            h, g = inputs
            act, dx = case["zoo"](h, g)
            exact_act, _ = case["torch"](h.double(), g.double())
            slope = dx / g  # (g is random normal: no zero)
            gelu, exact_slope, act_bound, slope_bound = gelu_bounds(h, act, slope, vision.ERF_ERROR, vision.EXP_ERROR)
            # the torch side is GELU: ATen's float64 operator is the exact formula within float64's rounding
            assert ((gelu - exact_act).abs() <= 8 * U64 * h.double().abs()).all()
            assert ((act.double() - gelu).abs() <= act_bound).all()
            assert (
                (dx.double() - g.double() * exact_slope).abs()
                <= g.double().abs() * slope_bound + U32 * dx.double().abs()
            ).all()
            continue
        ref = case["torch"](*(t.double() for t in inputs))
        magnitudes = case["torch"](*(t.double().abs() for t in inputs))
        bound = gamma(case["terms"]) * magnitudes
        for side in ("zoo", "torch"):
            assert ((case[side](*inputs).double() - ref).abs() <= bound).all(), (case["kernel"], case["shape"], side)


def test_out_writes_one_row_a_pair_with_its_run(tmp_path, one_thread):
    out = tmp_path / "layer_kernels.json"
    kernels.main(["--batch", "1", "--rounds", "1", "--out", str(out)])
    doc = json.loads(out.read_text())
    assert len(doc["rows"]) == len(kernels.cases(1)) == 3 + 2 * 4 + 2 * 4 + 3 * 4 + 2
    assert all(r["zoo_ms"] > 0 and r["torch_ms"] > 0 and r["batch_size"] == 1 for r in doc["rows"])
    assert doc["command"].startswith("python tools/layer_kernels.py --batch 1")
    assert torch.get_num_threads() == 1
    kernels.main(["--batch", "1", "--rounds", "1", "--only", "attention", "--out", str(out)])
    doc = json.loads(out.read_text())  # the attention's two rows replaced, the rest kept
    assert len(doc["rows"]) == len(kernels.cases(1))
    assert doc["command"].endswith("--only attention --out " + str(out))
