"""The bench commands write the results files (``--out``) that tools/headline.py renders the pages' tables from."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from maintainer_tools import load

from zoo.bench import deployed, formats, formats_report
from zoo.bench import prune as prune_bench
from zoo.bench import train as train_bench
from zoo.bench.harness import Row, merge_rows, merge_run, provenance
from zoo.cli import main as zoo_main

REPO = Path(__file__).resolve().parents[2]
headline = load("headline")


def bench_main(argv: list[str]) -> int:
    """``zoo bench ARGV``."""
    return zoo_main(["bench", *argv])


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A copy of the repository's results files, to overwrite one at a time."""
    folder = tmp_path / "results"
    shutil.copytree(REPO / "results", folder, ignore=shutil.ignore_patterns("*.md"))
    return folder


def _earlier_train_run(path: Path) -> None:
    """An earlier run's file of two rows (poolformer_s12 and convformer_s18 at 32 x 224), whatever the repository's
    file holds today."""
    prov = {"date": "2026-11-23", "commit": "4f47973", "machine": "x86_64, 2 threads", "cpu": "AMD EPYC (AVX2)",
            "threads": "2", "torch": "2.14.1"}  # fmt: skip
    rows = [
        {"model": m, "batch": "32 x 224", "peer": "timm", "unit": "img/s", "peer_rate": 6.0, "zoo_rate": 8.0,
         "ratio": 1.33, "first_loss_peer": 7.7, "first_loss_zoo": 7.7, "peak_mib_peer": 2284, "peak_mib_zoo": 1982,
         **({"loss_note": "head differs by design"} if m == "poolformer_s12" else {})}
        for m in ("poolformer_s12", "convformer_s18")
    ]  # fmt: skip
    cmd = "zoo bench --train --models poolformer_s12,convformer_s18,mobilellm_125m"
    path.write_text(json.dumps({"provenance": prov, "command": cmd, "train_step": rows}))


def _train_row(model: str, peer_rate: float, rate: float, loss: float = 7.5) -> Row:
    extra = {"first loss peer": loss, "first loss zoo": loss + 1e-6, "peak MiB peer": 2048.4, "peak MiB zoo": 1900.6}
    extra["per round"] = "1.18, 1.25"
    return Row(model, "batch 32 cpu", "timm", "zoo", "img/s", peer_rate, rate, 5, 1.0, extra=extra)


def test_provenance_names_the_run():
    p = provenance()
    assert {"date", "commit", "machine", "cpu", "cores", "threads", "torch", "versions", "load"} <= p.keys()
    assert p["date"].endswith("UTC") and p["commit"] and p["cpu"]
    assert int(p["threads"]) >= 1 and int(p["cores"]) >= 1
    assert p["versions"]["torch"] and p["versions"]["timm"]


def test_merge_keeps_unmeasured_rows_with_their_run():
    old = [{"model": "a", "v": 1}, {"model": "b", "v": 2, "provenance": {"date": "x"}}, {"model": "c", "v": 3}]
    new = [{"model": "c", "v": 30}, {"model": "d", "v": 40}]
    merged = merge_rows(old, {"provenance": {"date": "old"}}, new, lambda r: r["model"])
    assert [(r["model"], r["v"]) for r in merged] == [("a", 1), ("b", 2), ("c", 30), ("d", 40)]
    assert merged[0]["provenance"] == {"date": "old"} and merged[1]["provenance"] == {"date": "x"}
    assert "provenance" not in merged[2] and "provenance" not in merged[3]


def test_merge_run_replaces_the_rows_it_measured_and_heads_the_file_with_its_run(tmp_path):
    path = tmp_path / "rows.json"
    key = lambda r: r["model"]  # noqa: E731
    merge_run(path, [{"model": "a", "v": 1}, {"model": "b", "v": 2}], {"date": "first"}, "cmd 1", key)
    merge_run(path, [{"model": "b", "v": 20}, {"model": "c", "v": 30}], {"date": "second"}, "cmd 2", key)
    doc = json.loads(path.read_text())
    assert (doc["provenance"], doc["command"]) == ({"date": "second"}, "cmd 2")
    got = [(r["model"], r["v"], r["provenance"]["date"], r["command"]) for r in doc["rows"]]
    assert got == [("a", 1, "first", "cmd 1"), ("b", 20, "second", "cmd 2"), ("c", 30, "second", "cmd 2")]


def test_train_results_are_read_by_their_table(results: Path):
    path = results / "train_throughput.json"
    _earlier_train_run(path)
    settings = train_bench.Settings(batch_size=32)
    rows = [train_bench.result_row(_train_row("convformer_s18", 2.5, 3.0), settings)]
    train_bench.write_results(path, rows, "zoo bench --train --models convformer_s18")
    doc = json.loads(path.read_text())
    assert doc["command"] == "zoo bench --train --models convformer_s18" and doc["provenance"]["cpu"]
    conv = next(r for r in doc["train_step"] if r["model"] == "convformer_s18")
    assert conv["batch"] == "32 x 224" and conv["zoo_rate"] == 3.0 and conv["ratio"] == 1.2
    assert conv["peak_mib_peer"] == 2048 and "provenance" not in conv
    kept = next(r for r in doc["train_step"] if r["model"] == "poolformer_s12")
    assert kept["provenance"]["commit"] == "4f47973"  # the earlier run's row keeps its run
    assert kept["loss_note"] == "head differs by design"
    table = headline.train_step(results)
    assert "| convformer_s18 | 32 x 224 | timm | 2.50 img/s | 3.00 img/s | 1.20x | 1.18, 1.25 |" in table
    assert conv["per_round"] == [1.18, 1.25]
    assert "| poolformer_s12 | 32 x 224 | timm | 6.00 img/s | 8.00 img/s | 1.33x | one process |" in table
    # a line per run above the table: the earlier run's command and commit, then the new one's with its versions
    head = " ".join(table.split("\n\n| model")[0].split())
    assert head.startswith(
        "`zoo bench --train --models poolformer_s12,convformer_s18,mobilellm_125m`: 2026-11-23, commit"
    )
    assert f"`zoo bench --train --models convformer_s18`: {doc['provenance']['date']}, commit" in head
    assert f"torch {doc['provenance']['torch']}, timm {doc['provenance']['versions']['timm']}" in head
    # the headline's training rows are timm's own benchmark.py's (train/timm_benchmark.json), not this file's
    text = headline.headline(results)
    assert "training step by timm's `benchmark.py`" in text and "3.00 img/s" not in text


def test_train_switches_stay_out_of_the_fp32_headline(results: Path):
    path = results / "train_throughput.json"
    _earlier_train_run(path)
    settings = train_bench.Settings(batch_size=32, amp=train_bench.torch.bfloat16, channels_last=True)
    row = train_bench.result_row(_train_row("poolformer_s12", 9.0, 12.0), settings)
    assert row["switches"] == ["bf16", "channels-last"]
    train_bench.write_results(path, [row], "zoo bench --train --amp bf16 --channels-last")
    doc = json.loads(path.read_text())
    assert len([r for r in doc["train_step"] if r["model"] == "poolformer_s12"]) == 2  # fp32 row kept beside it
    assert "| poolformer_s12 | 32 x 224, bf16, channels-last | timm | 9.00 img/s |" in headline.train_step(results)
    assert "12.00 img/s" not in headline.headline(results)


def test_a_cuda_run_names_its_gpu_and_a_cpu_run_names_none(monkeypatch):
    assert "gpu" not in provenance() and "gpu" not in provenance(device="cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    p = provenance(device="cuda")
    assert p["gpu"] == "NVIDIA H200" and p["device"] == "cuda" and p["cuda"] == str(torch.version.cuda)
    line = headline.run_lines([("zoo bench train --device cuda", p)])
    assert "NVIDIA H200 (CUDA" in line


def test_gpu_and_bf16_rows_of_timm_s_benchmark_stay_beside_the_cpu_rows_and_out_of_the_headline(results: Path):
    timm_benchmark = load("timm_benchmark")
    path = results / "train" / "timm_benchmark.json"
    before = json.loads(path.read_text())["rows"]
    cpu = next(r for r in before if (r["model"], r["batch_size"], r["threads"]) == ("caformer_s18", 8, 1))
    fast = {**cpu, "timm": 700.0, "zoo": 900.0, "ratio": 1.29, "ratios": [1.29], "load": 0.1}
    rows = [{**fast, "device": "cuda"}, {**fast, "amp": "bf16"}]
    merge_run(path, rows, {**provenance(), "gpu": "NVIDIA H200"}, "python tools/timm_benchmark.py", timm_benchmark._key)
    after = json.loads(path.read_text())["rows"]
    kept = [r for r in after if timm_benchmark._key(r) == timm_benchmark._key(cpu)]
    assert len(after) == len(before) + 2 and [(r["timm"], r["zoo"]) for r in kept] == [(cpu["timm"], cpu["zoo"])]
    table = headline.timm_benchmark(results)
    assert "| caformer_s18 | 8 x 224 | train | cuda | 1 | 700.00 | 900.00 |" in table
    assert "| caformer_s18 | 8 x 224 | train | cpu bf16 | 1 | 700.00 | 900.00 |" in table
    assert "900.00" not in headline.headline(results)


def test_a_training_step_run_stopped_part_way_keeps_the_rows_it_measured(tmp_path: Path, monkeypatch, capsys):
    """``zoo bench train --out``: Ctrl-C (or a time limit) at the second model keeps the first model's row."""

    def compare(name, settings, *args, **kwargs):
        if name == "convformer_s18":
            raise KeyboardInterrupt
        return [_train_row(name, 2.0, 3.0)]

    monkeypatch.setattr(train_bench, "compare", compare)
    path = tmp_path / "train_throughput.json"
    argv = ["train", "--models", "poolformer_s12,convformer_s18", "--batch-sizes", "32", "--out", str(path)]
    assert bench_main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    rows = json.loads(path.read_text())["train_step"]
    assert [(r["model"], r["batch"], r["zoo_rate"]) for r in rows] == [("poolformer_s12", "32 x 224", 3.0)]


def test_a_timm_benchmark_run_stopped_part_way_keeps_the_rows_it_measured(results: Path, tmp_path: Path, monkeypatch):
    """A run the machine's time limit or Ctrl-C stops at its second model keeps its first model's row."""
    timm_benchmark = load("timm_benchmark")
    script = tmp_path / "benchmark.py"
    script.write_text("")

    def run(build, script, model, batch, args):  # benchmark.py's result, without benchmark.py
        if model == "convformer_s18":
            raise KeyboardInterrupt
        return {"train_samples_per_sec": {"timm": 500.0, "zoo": 400.0}[build]}

    monkeypatch.setattr(timm_benchmark, "_run", run)
    path = results / "train" / "timm_benchmark.json"
    argv = ["--script", str(script), "--models", "poolformer_s12,convformer_s18", "--batch-sizes", "64"]
    with pytest.raises(KeyboardInterrupt):
        timm_benchmark.main([*argv, "--device", "cuda", "--rounds", "1", "--out", str(path)])
    new = [r for r in json.loads(path.read_text())["rows"] if r.get("device") == "cuda"]
    assert [(r["model"], r["batch_size"], r["timm"], r["zoo"], r["ratio"]) for r in new] == [
        ("poolformer_s12", 64, 500.0, 400.0, 0.8)
    ]


@pytest.mark.slow  # builds poolformer_s12 twice and times a step of each (several seconds on 2 shared cores)
def test_a_tiny_training_step_run_writes_its_file(tmp_path: Path, capsys):
    path = tmp_path / "train_throughput.json"
    argv = ["train", "--models", "poolformer_s12", "--batch-sizes", "2", "--img-size", "32", "--runs", "1"]
    assert bench_main([*argv, "--warmup", "0", "--rounds", "1", "--out", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert doc["command"] == "zoo bench " + " ".join(argv) + f" --warmup 0 --rounds 1 --out {path}"
    (row,) = doc["train_step"]
    assert row["model"] == "poolformer_s12" and row["batch"] == "2 x 32" and row["zoo_rate"] > 0
    assert len(row["per_round"]) == 1  # one process a side
    assert row["peer"] == "timm" and row["peak_mib_zoo"] >= 0
    assert f"wrote {path}" in capsys.readouterr().out


def _prune_rows() -> list[Row]:
    extra = {"params M": "26.8->14.6", "GMACs": "4.00->1.98"}
    return [
        Row("convformer_s18", "batch 1", "dense", "pruned 50% MACs", "img/s", 15.42, 27.51, 20,
            extra={**extra, "latency x": 0.56}),
        Row("convformer_s18", "batch 32", "dense", "pruned 50% MACs", "img/s", 19.04, 33.46, 4, 1 / 0.6,
            extra={**extra, "latency x": 0.569}),
    ]  # fmt: skip


def test_prune_results_are_read_by_the_headline(results: Path, monkeypatch):
    path = results / "compress.json"
    doc = json.loads(path.read_text())
    doc["other"] = {"kept": True}
    path.write_text(json.dumps(doc))
    monkeypatch.setattr(prune_bench, "prune_rows", lambda *a, **k: _prune_rows())
    assert bench_main(["prune", "--models", "convformer_s18", "--out", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert doc["other"] == {"kept": True}
    section = doc["prune_latency"]
    assert section["command"] == f"zoo bench prune --models convformer_s18 --out {path}"
    assert "224x224" in section["settings"] and section["provenance"]["threads"]
    conv = next(r for r in section["rows"] if r["model"] == "convformer_s18")
    assert conv == {"model": "convformer_s18", "params_m": [26.8, 14.6], "gmacs": [4.0, 1.98],
                    "batch1_img_s": [15.4, 27.5], "batch32_img_s": [19.0, 33.5], "batch32_latency_ratio": 0.57}  # fmt: skip
    assert [r["model"] for r in section["rows"]] == ["poolformer_s12", "convformer_s18", "slak_tiny (inference form)"]
    assert "| convformer_s18 | 26.8 M -> 14.6 M | 4.00 -> 1.98 | 15.4 / 27.5 img/s | 19.0 / 33.5 img/s | 0.57x |" in (
        headline.prune_latency(results)
    )
    assert "| 33.5 img/s, 14.6 M params | dense 19.0 img/s" in headline.headline(results)


def test_prune_out_needs_batch_1_and_32(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as e:
        bench_main(["prune", "--batch-sizes", "1,8", "--out", str(tmp_path / "c.json")])
    assert e.value.code == 2 and "batch 1 and batch 32" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def _deployed_rows(name: str, *_args) -> list[Row]:
    return [
        Row(name, "batch 1", "zoo eager", "zoo onnxruntime", "img/s", 20.0, 25.0, 5, 1.3),
        Row(name, "batch 1", "zoo eager", "zoo torch.compile", "img/s", 20.0, 18.25, 5, 1.3),
        Row(name, "batch 1", "timm onnxruntime", "zoo onnxruntime", "img/s", 28.0, 25.0, 5, 1.0),
    ]


def test_deployed_results_are_read_by_the_headline(results: Path, monkeypatch, capsys):
    path = results / "deployed.json"
    monkeypatch.setattr(deployed, "compare", _deployed_rows)
    assert bench_main(["deployed", "--models", "poolformer_s12", "--batch-sizes", "1", "--out", str(path)]) == 0
    runs = json.loads(path.read_text())["runs"]
    assert len(runs) == 3 and all("deployed" in r["command"] for r in runs)
    assert runs[-1]["command"] == f"zoo bench deployed --models poolformer_s12 --batch-sizes 1 --out {path}"
    # the earlier vision run keeps its other rows; its poolformer_s12 batch 1 row is replaced by the new run's
    assert [(r["model"], r["setting"]) for r in runs[0]["rows"]] == [
        ("poolformer_s12", "batch 32"), ("convformer_s18", "batch 1"), ("convformer_s18", "batch 32")]  # fmt: skip
    assert runs[1]["rows"][0]["model"] == "mobilellm_125m"
    assert runs[2]["rows"] == [{"model": "poolformer_s12", "setting": "batch 1", "unit": "img/s", "zoo_eager": 20.0,
                                "onnxruntime_zoo": 25.0, "torch_compile": 18.25, "onnxruntime_timm": 28.0}]  # fmt: skip
    assert "| poolformer_s12 | batch 1 | 20.0 img/s | 25.0 / 28.0 img/s | 18.2 img/s |" in headline.deployed(results)


def test_deployed_lm_rows_take_their_columns():
    rows = [
        Row("m", "decode 8 (fp32)", "zoo eager", "llama.cpp f32", "tok/s", 18.3, 47.1, 5),
        Row("m", "decode 8 (fp32)", "zoo eager", "zoo pte", "tok/s", 18.3, 36.0, 5),
    ]
    assert deployed.result_rows(rows) == [
        {"model": "m", "setting": "greedy decode, batch 1", "unit": "tok/s", "zoo_eager": 18.3, "llama_cpp_f32": 47.1,
         "executorch_pte": 36.0}]  # fmt: skip


@pytest.mark.parametrize(
    "argv, why",
    [
        (["formats", "--formats", "fp32", "--out", "r.txt"], "a results file is JSON"),
        (["deployed", "--out", "r.csv"], "a results file is JSON"),
        (["train", "--e2e", "--out", "r.json"], "--e2e has no results file"),
        (["formats", "--formats", "fp32", "--backend-only", "--out", "r.json"], "--backend-only has none"),
    ],
)
def test_out_where_no_results_file_is_written(argv: list[str], why: str, capsys):
    assert bench_main(argv) == 2
    err = capsys.readouterr().err
    assert why in err and err.count("\n") == 1


def _one_machine(results: Path) -> None:
    """Every provenance under ``results`` rewritten to one machine and torch version."""
    for f in results.rglob("*.json"):
        text = f.read_text()
        doc = json.loads(text)

        def same(node):
            if isinstance(node, dict):
                if "date" in node and "cpu" in node:
                    node.update(cpu="Example CPU", torch="2.15.0")
                for value in node.values():
                    same(value)
            elif isinstance(node, list):
                for value in node:
                    same(value)

        same(doc)
        f.write_text(json.dumps(doc))


def test_one_machine_gives_one_table_under_one_line(results: Path):
    two = headline.headline(results)
    assert two.count("| what | zoo | against | source |") == 2  # the files name two machines
    _one_machine(results)
    one = headline.headline(results)
    assert one.count("| what | zoo | against | source |") == 1
    first = one.split("\n\n")[0]
    assert first.startswith("fp32 on a CPU: Example CPU, ") and first.count("torch 2.15.0") == 1
    rows = [line for line in one.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len([line for line in two.splitlines() if line.startswith("| ") and "what" not in line])
    assert rows[-1].startswith("| condensation speed, DM, MNIST")


def test_check_catches_a_stale_table_and_write_mends_it(results: Path):
    repo = results.parent
    page = repo / "README.md"
    fresh = headline.TABLES["train_step"](results)
    page.write_text(f"# x\n\n<!-- train_step:start -->\n{fresh}\n<!-- train_step:end -->\n")
    assert headline.check(repo) == []
    train_bench.write_results(
        results / "train_throughput.json",
        [train_bench.result_row(_train_row("convformer_s18", 2.5, 3.0), train_bench.Settings(batch_size=32))],
        "zoo bench --train --models convformer_s18",
    )
    assert headline.check(repo) == ["README.md: train_step"]
    assert headline.write(repo) == [page]
    assert headline.check(repo) == [] and "| 3.00 img/s | 1.20x |" in page.read_text()


def test_a_deployed_decode_run_replaces_the_model_s_earlier_row(results: Path):
    rows = [Row("mobilellm_125m", "decode 128 (fp32)", "zoo eager", "llama.cpp f32", "tok/s", 20.0, 50.0, 5)]
    deployed.write_results(results / "deployed.json", rows, "zoo bench --deployed --models mobilellm_125m")
    runs = json.loads((results / "deployed.json").read_text())["runs"]
    assert [r["command"] for r in runs] == ["zoo bench --deployed", "zoo bench --deployed --models mobilellm_125m"]
    assert runs[1]["rows"] == [{"model": "mobilellm_125m", "setting": "greedy decode, batch 1", "unit": "tok/s",
                                "zoo_eager": 20.0, "llama_cpp_f32": 50.0}]  # fmt: skip
    assert runs[1]["provenance"]["commit"] != "c12e7c9"


def _format_rows(name: str, fmts, *_args, **_kwargs) -> list[Row]:
    extra = {
        "zoo eager": 20.04,
        "overhead ms/tok": 27.21,
        "compiled = eager": 1.0,
        "llama.cpp": 53.8,
        "llama.cpp type": "F32",
        "vs llama.cpp": 0.833,
        "perplexity": 119.1,
        "ppl vs fp32": 0.0,
        "agreement": 1.0,
    }
    pte = {"llama.cpp type": "Q8_0", "export s": 95.2, "pte MB": 144.8, "gguf MB": 132.6, "size vs gguf": 1.092}
    return [
        Row(name, "decode 128 fp32", "transformers fp32", "zoo fp32 compiled", "tok/s", 18.9, 44.6, 3, extra=extra),
        Row(name, "decode 128 int8", "llama.cpp q8_0", "zoo pte 8da8w", "tok/s", 118.7, 131.4, 3, extra=pte),
        Row(name, "prefill 128 fp32", "llama.cpp f32", "zoo fp32 compiled", "tok/s", 500.0, 400.0, 3),
    ]  # fmt: skip


def test_formats_results_are_read_by_the_headline(results: Path, monkeypatch):
    path = results / "lm_decode.json"
    monkeypatch.setattr(formats, "compare", _format_rows)
    monkeypatch.setattr(formats_report, "notes", lambda rows: [])
    argv = ["formats", "--models", "mobilellm_125m", "--formats", "fp32", "--prefill", "0", "--out", str(path)]
    before = next(r for r in json.loads(path.read_text())["runs"] if r["model"] == "mobilellm_125m")
    assert bench_main(argv) == 0
    doc = json.loads(path.read_text())
    run = next(r for r in doc["runs"] if r["model"] == "mobilellm_125m")
    assert run["command"] == "zoo bench " + " ".join(argv) and "32-token prompt" in run["settings"]
    assert [f["format"] for f in run["formats"]] == [f["format"] for f in before["formats"]]
    fp32, kept = run["formats"][0], run["formats"][-1]
    assert fp32 == {"format": "fp32", "zoo_eager": 20.0, "zoo_compiled": 44.6, "transformers_fp32": 18.9,
                    "llama_cpp": 53.8, "llama_cpp_type": "F32", "compiled_vs_transformers": 2.36,
                    "compiled_vs_llama_cpp": 0.83, "compiled_equals_eager": 1.0, "overhead_ms_per_token": 27.2,
                    "perplexity": 119.1, "perplexity_change_pct": 0.0, "greedy_agreement": 1.0}  # fmt: skip
    # a format this run did not measure keeps the run that measured it
    assert kept["format"] != "fp32" and kept["provenance"]["commit"] == before["provenance"]["commit"]
    assert {r["model"] for r in doc["runs"]} == {"mobilellm_125m", "mobilellm_350m", "mor_135m"}
    assert doc["quality"]["rows"] and doc["pte"]["rows"][0]["tok_s"] == 131.4
    assert doc["pte"]["rows"][1]["provenance"]["commit"] == "cafc3dc"
    assert "| fp32 | 20.0 tok/s | 44.6 tok/s | 18.9 tok/s | 53.8 tok/s (F32) | 2.36x / 0.83x |" in (
        headline.lm_formats_125m(results)
    )
    assert "| 8da8w | 131.4 | 118.7 (Q8_0) | 1.11x |" in headline.lm_pte(results)
    assert "| greedy decode, mobilellm_125m, fp32 compiled | 44.6 tok/s |" in headline.headline(results)


@pytest.mark.parametrize(
    "file, write",
    [
        ("train_throughput.json", lambda p: train_bench.write_results(p, [], "zoo bench --train")),
        ("deployed.json", lambda p: deployed.write_results(p, [], "zoo bench --deployed")),
    ],
)
def test_a_run_merges_into_its_file_and_keeps_every_other_key(results: Path, file, write):
    path = results / file
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "note": "added by hand"}))
    write(path)
    new = json.loads(path.read_text())
    assert new["note"] == "added by hand" and set(doc) <= set(new)


@pytest.mark.parametrize(
    "mode, wrong",
    [
        (["train"], "lm_decode.json"),
        (["train"], "deployed.json"),
        (["deployed"], "lm_decode.json"),
        (["deployed"], "train_throughput.json"),
        (["deployed"], "compress.json"),
        (["formats", "--formats", "fp32"], "deployed.json"),
    ],
)
def test_out_naming_another_kinds_file_is_refused_before_measuring(results: Path, mode, wrong, capsys, monkeypatch):
    path = results / wrong
    before = path.read_bytes()
    measured = []
    monkeypatch.setattr(deployed, "compare", lambda *a, **k: measured.append(1) or [])
    assert bench_main([*mode, "--models", "mobilellm_125m", "--out", str(path)]) == 2
    err = capsys.readouterr().err
    assert "results" in err and "nothing was measured" in err, err
    assert path.read_bytes() == before and not measured


def test_a_deployed_run_at_another_image_size_is_a_row_of_its_own(results: Path):
    path = results / "deployed.json"
    published = [(r["model"], r["setting"]) for run in json.loads(path.read_text())["runs"] for r in run["rows"]]
    row = Row("poolformer_s12", deployed.setting_label(1, 32), "zoo eager", "zoo onnxruntime", "img/s", 900.0, 990.0, 5)
    deployed.write_results(path, [row], "zoo bench --deployed --img-size 32")
    now = [(r["model"], r["setting"]) for run in json.loads(path.read_text())["runs"] for r in run["rows"]]
    assert now == [*published, ("poolformer_s12", "batch 1, 32 px")]
    assert deployed.setting_label(1) == "batch 1"


def _spoil_row_model(folder: Path) -> None:
    data = json.loads((folder / "lm_decode.json").read_text())
    for run in data["runs"]:
        run.pop("model")
    (folder / "lm_decode.json").write_text(json.dumps(data))


# (what, how the results copy is spoiled, the page text, a fragment of the one-line error)
SPOILED = [
    ("truncated file", lambda f: (f / "lm_decode.json").write_text((f / "lm_decode.json").read_text()[:500]),
     "<!-- headline:start -->\n<!-- headline:end -->\n", "lm_decode.json is not complete JSON"),
    ("row without model", _spoil_row_model, "<!-- headline:start -->\n<!-- headline:end -->\n",
     "table headline cannot be built from"),
    ("unknown marker", lambda f: None, "<!-- headlines:start -->\n<!-- headlines:end -->\n",
     "README.md: <!-- headlines:start --> names no generated table"),
]  # fmt: skip


@pytest.mark.parametrize("what, spoil, page, fragment", SPOILED, ids=[r[0] for r in SPOILED])
def test_tables_that_cannot_be_rendered_are_one_line_naming_the_file(what, spoil, page, fragment, tmp_path, capsys,
                                                                      monkeypatch):  # fmt: skip
    shutil.copytree(REPO / "results", tmp_path / "results", ignore=shutil.ignore_patterns("*.md"))
    spoil(tmp_path / "results")
    (tmp_path / "README.md").write_text(page)
    monkeypatch.setattr(headline, "REPO", tmp_path)
    for mode in (["--check"], ["--write"]):
        assert headline.main(mode) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert (tmp_path / "README.md").read_text() == page  # nothing written


@pytest.mark.parametrize(
    "command",
    [["train", "--models", "poolformer_s12"], ["deployed", "--models", "poolformer_s12"]],
    ids=["train", "deployed"],
)
def test_an_out_that_is_a_link_is_refused_before_measuring(command, results, tmp_path, capsys):
    """A results file is replaced whole when written: a link named by --out would be replaced and its target left
    stale, so the link is refused in one line, before anything is measured, and both are left as they were."""
    target = results / "deployed.json" if "deployed" in command else results / "train_throughput.json"
    link = tmp_path / "link.json"
    link.symlink_to(target)
    before = target.read_bytes()
    assert bench_main([*command, "--out", str(link)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a symbolic link to" in err and len(err.splitlines()) == 1, err
    assert link.is_symlink() and target.read_bytes() == before
    with pytest.raises(SystemExit):
        bench_main(["prune", "--models", "poolformer_s12", "--out", str(link)])
    assert "is a symbolic link to" in capsys.readouterr().err


def test_a_condensation_file_of_one_dataset_leaves_the_others_cells_not_run(results: Path):
    """An ipc-10 file measured on MNIST only adds its rows; Fashion-MNIST's cells say "not run"."""
    base = json.loads((results / "condense/mnist_ipc10_cpu.json").read_text())
    row = {**next(r for r in base["rows"] if r["method"] == "dm"), "method": "mtt", "mean": 91.25, "std": 0.5}
    (results / "condense/mnist_ipc10_cpu_b.json").write_text(json.dumps({**base, "rows": [row]}))
    line = next(x for x in headline.condense_table(results).splitlines() if x.startswith("| mtt | 10 |"))
    assert "| 91.2 ± 0.5 |" in line and "| not run | - | - |" in line


def test_the_pruning_summary_takes_wall_time_from_the_median_run(results: Path):
    """One full run slowed by other work on the machine moves the mean of the full runs' wall time, not the saving
    the README states: that comes from each side's median run."""
    name = "data_pruning/mnist_quickstart_2000_100ep_5seeds.json"
    path = results / name
    doc = json.loads(path.read_text())
    runs = doc["tables"][0]["runs"]
    for method, wall in (("full", 100.0), ("infobatch", 60.0)):
        for r in runs[method]:
            r["wall_s"] = wall
    runs["full"][0]["wall_s"] = 1000.0  # the slowed run
    path.write_text(json.dumps(doc))
    row = next(line for line in headline.data_pruning_summary(results).splitlines() if "| 100 x 5 |" in line)
    assert row.endswith("| 40.0% |")
    runs["full"][1]["wall_s"] = runs["full"][2]["wall_s"] = 1000.0  # now most full runs are slow: the median moves
    path.write_text(json.dumps(doc))
    row = next(line for line in headline.data_pruning_summary(results).splitlines() if "| 100 x 5 |" in line)
    assert row.endswith("| 94.0% |")


def _write_many(path: str, first: int, count: int) -> None:
    """One writer: ``count`` runs of one row each (models m{first}..), merged into ``path`` one by one."""
    for i in range(first, first + count):
        row = {"model": f"m{i}", "batch": "1 x 8", "peer_rate": 1.0, "zoo_rate": 1.0}
        train_bench.write_results(Path(path), [row], f"writer {first}")


def test_two_processes_merging_into_one_file_keep_every_row(tmp_path: Path, monkeypatch):
    """Read, merge and write back under one lock: two processes merging 25 rows each into one results file keep
    all 50 (without the lock, one writer's read misses the other's rows and its write drops them)."""
    import multiprocessing

    import zoo.bench.harness as harness

    monkeypatch.setattr(harness, "_commit", lambda: "abc1234")  # no git process per write: the writes interleave
    path = tmp_path / "train_throughput.json"
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_write_many, args=(str(path), first, 25)) for first in (0, 100)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    models = {r["model"] for r in json.loads(path.read_text())["train_step"]}
    assert models == {f"m{i}" for i in [*range(25), *range(100, 125)]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_throughput.json"]  # no lock or temporary file


def test_a_failed_results_write_keeps_the_file_and_leaves_no_temporary(tmp_path: Path, monkeypatch):
    import errno

    from zoo.bench.harness import save_results

    path = tmp_path / "r.json"
    save_results(path, {"rows": [1]})

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="No space left"):
        save_results(path, {"rows": [2]})
    assert json.loads(path.read_text()) == {"rows": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_provenance_names_the_zoo_s_commit_only_in_the_zoo_s_checkout(tmp_path, monkeypatch):
    """An installed zoo inside another project's git repository (its .venv) records its version, not that project's
    commit; run from its own checkout it records the checkout's commit."""
    import subprocess

    from zoo.bench import harness

    assert harness._commit().startswith(
        subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    )
    project = tmp_path / "project"
    installed = project / ".venv" / "site-packages" / "zoo" / "bench"
    installed.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    identity = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", *identity, "commit", "-q", "--allow-empty", "-m", "x"], cwd=project, check=True)
    monkeypatch.setattr(harness, "__file__", str(installed / "harness.py"))
    assert harness._commit() == f"zoo {harness.__version__}"
