"""Profiling: hand-checked counts on small modules, every model's MACs and params, the FlopCounterMode
cross-check, latency/memory fields, the model table, the plot."""

import csv

import pytest
import torch
from model_checks import PROFILED_BY_DEFAULT as SMALL
from model_groups import series, smallest_of_each, tiered
from torch import nn

import zoo
from zoo.profile import count_macs, count_params, measure_latency, measure_peak_memory


def test_conv_linear_counts_by_hand():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, torch.randn(1, 3, 16, 16))[0] == 8 * 16 * 16 * 3 * 3 * 3
    linear = nn.Linear(10, 20)
    assert count_macs(linear, torch.randn(4, 10))[0] == 4 * 10 * 20


def test_pooling_and_broadcast_matmul_by_hand():
    pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    assert count_macs(pool, torch.randn(2, 4, 8, 8))[0] == 2 * 4 * 8 * 8  # one per input element

    class Mix(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = nn.Parameter(torch.randn(49, 49))

        def forward(self, x):  # (B, N, C): fvcore alone would drop the batch of this broadcast matmul
            return self.m @ x

    assert count_macs(Mix(), torch.randn(3, 49, 16))[0] == 3 * 49 * 49 * 16


def test_attention_is_counted_by_hand():
    """fvcore counts SDPA as zero; the zoo's handle counts q k^T and the weighted sum."""
    model = zoo.create_model("caformer_s18").stages[2].blocks[0].token_mixer.eval()
    x = torch.randn(1, 14, 14, 320)
    from zoo.profile import _analysis

    by_op = _analysis(model, (x,)).by_operator()
    n, c = 196, 320
    assert by_op["linear"] == n * c * 3 * c + n * c * c  # qkv and proj
    assert by_op["scaled_dot_product_attention"] == 2 * n * n * c  # q k^T and the weighted sum
    assert "aten::scaled_dot_product_attention" not in count_macs(model, x)[1]


def test_uncounted_heavy_op_is_an_error(monkeypatch):
    import importlib

    prof = importlib.import_module("zoo.profile")  # the module (zoo.profile the attribute is the function)
    handles = dict(prof._ZOO_HANDLES)
    handles.pop("aten::scaled_dot_product_attention")
    monkeypatch.setattr(prof, "_ZOO_HANDLES", handles)
    model = zoo.create_model("caformer_s18").stages[2].blocks[0].token_mixer.eval()
    with pytest.raises(RuntimeError, match="scaled_dot_product_attention"):
        count_macs(model, torch.randn(1, 14, 14, 320))


VISION = zoo.list_models(task="image-classification")


@pytest.mark.parametrize("name", tiered(VISION, SMALL, slow=smallest_of_each(VISION, series)))
def test_every_model_profile(name):
    """Params exact, MACs within 2% of the authors' fvcore totals, nothing uncounted, and the FlopCounterMode
    cross-check: one model per MetaFormer and SReT series by default (PROFILED_BY_DEFAULT; tests/profile/test_cards.py's
    default rows measure the other series), one of every series with -m slow, every model with -m sweep (CI's
    tests/profile/test_cards.py counts every model's params and MACs against the authors' all the same)."""
    result = zoo.profile(name, cross_check=True)
    ref = zoo.model_info(name)["reference"]
    assert result.params == ref["params"]
    assert result.trainable_params + result.frozen_params == result.params
    assert abs(result.macs / ref["macs"] - 1) < 0.02, f"{name}: {result.macs / 1e9:.3f} GMACs vs {ref['gmacs']}"
    assert result.flops == 2 * result.macs
    assert result.uncounted_ops == {}
    check = result.flop_counter_check
    assert check["rel_diff"] < 0.01, check
    cfg_size = tuple(zoo.model_info(name)["pretrained_cfg"]["input_size"])
    assert result.input_size == (1, *cfg_size) and result.tools["fvcore"]


def test_param_kinds():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4, bias=False))
    model[1].weight.data.zero_()
    model[1].weight.data[0, 0] = 1.0
    model[0].weight.requires_grad_(False)
    counts = count_params(model)
    assert counts == dict(params=56, trainable=16, frozen=40, nonzero=41, non_embedding=16)
    tied = nn.Linear(4, 4)
    shared = nn.Sequential(tied, tied)
    assert count_params(shared)["params"] == 20  # shared weights once


def test_latency_memory_and_options():
    model = zoo.create_model("poolformer_s12").eval()
    timings = measure_latency(model, (3, 64, 64), batch_sizes=(1, 2), runs=2, warmup=1)
    assert [t["batch_size"] for t in timings] == [1, 2]
    for t in timings:
        assert t["median_ms"] > 0 and t["throughput"] == pytest.approx(t["batch_size"] / t["median_ms"] * 1e3)
    peak = measure_peak_memory(model, torch.randn(2, 3, 64, 64))
    assert peak["bytes"] >= 0 and "RSS" in peak["method"]
    result = zoo.profile(
        model,
        input_size=(3, 64, 64),
        latency=True,
        batch_sizes=[1],
        runs=1,
        warmup=0,
        channels_last=True,
        memory=True,
        breakdown=True,
    )
    assert result.latency[0]["channels_last"] is True
    assert "stages" in result.module_table and result.peak_memory is not None
    assert set(result.conventions) >= {"macs", "flops", "params", "latency", "peak_memory"}


@pytest.mark.slow
def test_compiled_latency():
    result = zoo.profile("poolformer_s12", input_size=(3, 64, 64), latency=True, runs=1, warmup=1, compile=True)
    assert result.latency[0]["compiled"] is True and result.latency[0]["median_ms"] > 0


def test_pareto_front():
    from zoo.bench.plot import pareto_front

    points = [(1.0, 70.0), (2.0, 75.0), (1.5, 69.0), (3.0, 74.0), (4.0, 80.0), (2.0, 72.0)]
    assert pareto_front(points) == [0, 1, 4]


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_model_table_csv_and_plot(tmp_path):
    from zoo.cli import main

    out, png = tmp_path / "table.csv", tmp_path / "tradeoffs.png"
    assert (
        main(
            [
                "bench",
                "table",
                "--family",
                "metaformer",
                "--models",
                "poolformer_s12,caformer_s18",
                "--runs",
                "1",
                "--warmup",
                "0",
                "--csv",
                str(out),
                "--plot",
                str(png),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    assert [r["model"] for r in rows] == ["caformer_s18", "poolformer_s12"]
    assert int(rows[1]["params"]) == 11_915_176 and float(rows[1]["top1"]) == 77.2
    assert float(rows[0]["latency_ms"]) > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        zoo.profile("poolformer_s12", input_size=(3, 64, 64), latency=True, device="cuda")
