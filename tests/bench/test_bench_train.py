"""``zoo bench train``: a zoo model and its peer take real training steps on the same weights and batch."""

import argparse
import os

import pytest
import torch
from small_lms import SMALL

from zoo.bench import train
from zoo.cli import main as zoo_main


def test_lm_training_step_against_transformers_same_first_loss(monkeypatch):
    order = []

    def here(fn, name, settings, label, *args, **kwargs):  # the side in this process: a spawned one takes ~10 s
        order.append(label)
        return fn(name, settings, label, *args, **kwargs)

    monkeypatch.setattr(train, "_in_own_process", here)
    settings = train.Settings(batch_size=1, seq_len=8)
    (row,) = train.compare("mobilellm_125m", settings, runs=1, warmup=0, rounds=2, **SMALL)
    assert order == ["peer", "zoo", "zoo", "peer"]  # each side in its own process, the two alternating
    assert row.peer == "transformers" and row.unit == "tok/s" and row.rate > 0 and row.peer_rate > 0
    # the same weights and tokens give the same next-token loss (fp32, another order of arithmetic), each side
    # built on its own
    assert row.extra["first loss zoo"] == pytest.approx(row.extra["first loss peer"], rel=1e-5)
    assert row.extra["first loss zoo"] == pytest.approx(
        torch.log(torch.tensor(float(SMALL["vocab_size"]))).item(), rel=0.5
    )
    assert train.loss_agrees(row, None, row.model)
    assert len(row.times_s["zoo"]) == len(row.times_s["transformers"]) == 2  # a step a process
    assert len(row.extra["per round"].split(", ")) == 2
    assert row.extra["peak MiB zoo"] > 0 and row.extra["peak MiB peer"] > 0


@pytest.mark.slow
def test_each_side_trains_in_a_process_of_its_own(monkeypatch):
    """The zoo's allocator policy is process-wide: a side measured in the caller's process, or in the other side's,
    would run under it."""
    pids = []

    def spy(fn, *args, **kwargs):
        result = real(fn, *args, **kwargs)
        pids.append(result["pid"])
        return result

    real = train._in_own_process
    monkeypatch.setattr(train, "_in_own_process", spy)
    settings = train.Settings(batch_size=1, seq_len=8)
    (row,) = train.compare("mobilellm_125m", settings, runs=1, warmup=0, rounds=1, **SMALL)
    assert len(pids) == 2 and len(set(pids)) == 2 and os.getpid() not in pids
    assert row.extra["first loss zoo"] == pytest.approx(row.extra["first loss peer"], rel=1e-5)


def test_a_measuring_process_that_dies_is_an_error_not_a_hang():
    with pytest.raises(ChildProcessError, match="ended without a result"):
        train._in_own_process(os._exit, 3)


def test_lm_training_steps_update_the_weights():
    _, ours, _ = train._lm_side("mobilellm_125m", train.Settings(batch_size=1, seq_len=8), "zoo", **SMALL)
    before = ours.module.model.embed_tokens.weight.detach().clone()
    step = train._step(ours, torch.optim.AdamW(ours.module.parameters(), lr=1e-2), train.Settings(batch_size=1))
    first = ours.loss().item()
    for _ in range(3):
        step()
    assert not torch.equal(before, ours.module.model.embed_tokens.weight)
    assert ours.loss().item() < first


def test_a_family_without_a_training_peer_is_refused(capsys):
    assert zoo_main(["bench", "train", "--models", "slak_tiny", "--runs", "1"]) == 2
    assert "compares MetaFormer models with timm" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "table", "prune"])
def test_a_device_that_is_not_here_is_one_line_before_anything_runs(command, capsys, monkeypatch):
    """``--device cuda`` where torch finds no GPU, or a name that is no device: argparse's one line and status 2,
    before a model is built or a measuring process spawned (a traceback from the spawned process before)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train, "compare", lambda *a, **k: pytest.fail("measured"))
    for device, why in (("cuda", "torch finds no CUDA device here"), ("gpu", "'gpu' is not a device")):
        with pytest.raises(SystemExit) as stop:
            zoo_main(["bench", command, "--device", device])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err and len(err.strip().splitlines()[-1]) < 200


@pytest.mark.parametrize("tf32", [True, False])
def test_a_cuda_step_computes_its_float32_products_as_timms_benchmark_py_and_says_so(tf32, monkeypatch):
    """On CUDA each measuring process sets TF32 (or, with --no-tf32, float32) before it builds a side, and the row's
    switches name the choice; a CPU row names none."""
    seen = []

    def built(*args, **kwargs):
        raise LookupError("stop before building")

    monkeypatch.setattr(train, "cuda_precision", lambda device, on, deterministic: seen.append((device.type, on)))
    monkeypatch.setattr(train, "_side", built)
    settings = train.Settings(batch_size=64, device="cuda", tf32=tf32)
    with pytest.raises(LookupError):
        train.measure_side("poolformer_s12", settings, "zoo", runs=1, warmup=0, threads=1)
    assert seen == [("cuda", tf32)]
    assert settings.switches() == (["tf32"] if tf32 else ["no-tf32"])
    assert settings.describe() == f"batch 64 {'tf32' if tf32 else 'no-tf32'} cuda"
    assert train.Settings(batch_size=64, tf32=tf32).switches() == []
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    assert parser.parse_args([] if tf32 else ["--no-tf32"]).tf32 is tf32


def test_a_sequence_longer_than_the_models_positions_is_refused_before_measuring(capsys, monkeypatch):
    monkeypatch.setattr(train, "_in_own_process", lambda *a, **k: pytest.fail("measured"))
    assert zoo_main(["bench", "train", "--models", "mobilellm_125m", "--seq-len", "4096"]) == 2
    assert "--seq-len 4096: mobilellm_125m has 2048 positions; use at most 2048" in capsys.readouterr().err


@pytest.mark.slow
def test_vision_training_step_against_timm():
    settings = train.Settings(batch_size=2, img_size=64)
    (row,) = train.compare("convformer_s18", settings, runs=1, warmup=0, rounds=1)
    assert row.peer == "timm" and row.unit == "img/s"
    assert row.rel_diff < 1e-4 and train.loss_agrees(row, None, row.model)


def test_e2e_rate_reads_the_logged_steps(tmp_path):
    log = tmp_path / "log.csv"
    rows = ["step,epoch,split,loss,lr,throughput,top1,top5,perplexity,time"]
    rows += [f"{i},0,train,1,0.1,0,,,,{100 + 0.5 * i}" for i in range(1, 6)] + ["5,1,val,1,,,,,,200"]
    log.write_text("\n".join(rows) + "\n")
    assert train._e2e_rate(log, 8) == pytest.approx(8 * 4 / 2.0)  # 4 steps after the first, in 2 s
    log.write_text("\n".join(rows[:3]) + "\n")
    with pytest.raises(ValueError, match="at least 3"):
        train._e2e_rate(log, 8)


@pytest.mark.slow
def test_e2e_runs_train_py_on_a_generated_folder():
    row = train.end_to_end("poolformer_s12", train.Settings(batch_size=4, img_size=32), steps=3, workers=0, runs=1)
    assert row.candidate == "train.py" and row.rate > 0 and row.peer_rate > 0 and row.target == train.E2E_TARGET


def test_training_steps_warm_up_longer_than_forward_passes():
    """A training step reaches its steady time only after a few steps (its allocations and kernel caches fill), so
    ``zoo bench train`` warms up 5 steps per side by default; the forward-pass benches keep 2."""
    import argparse

    from zoo.bench import peers

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    assert parser.parse_args([]).warmup == 5
    assert parser.parse_args(["--warmup", "1"]).warmup == 1
    vision = argparse.ArgumentParser()
    peers.add_arguments(vision, "metaformer")
    assert vision.parse_args([]).warmup == 2
