"""bf16 autocast training against float32 on the README's quick start: the loss curves and the speed, per seed.

A maintainer's tool of the zoo's checkout, not part of the installed package::

    python tools/amp_curve.py [--seeds 0 1 2] [--epochs 3] [--threads 2] [--out results/train/amp_quickstart.json]
    python tools/amp_curve.py --render results/train/amp_quickstart.json   # recompare and rewrite from its runs

Each run is ``train.py --config configs/quickstart_digits.yaml`` in its own process with ``--seed S --train.amp
none|bf16 --train.epochs E --train.threads T --export.enabled false`` (the quick start's recipe otherwise as it is,
its schedule compressed into E epochs); the two precisions alternate per seed (float32, bf16, float32, bf16, ...)
so that a change in the machine's load falls on both. Each run's ``log.csv`` gives the training loss every
``train.log_interval`` steps and the held-out loss and top-1 after every epoch; its ``metrics.json`` the training
seconds, from which training images per second follow (optimizer steps x batch / training seconds).

The float32 runs' seed-to-seed spread is the band between the lowest and the highest float32 value at each logged
point; the report says, for every bf16 point, whether it lies in that band and by how much it leaves it. The CPU's
bf16 instructions (``avx512_bf16``, ``amx_bf16`` in ``/proc/cpuinfo``) are recorded beside the speed: without them
PyTorch's bf16 kernels convert to and from float32 around float32 arithmetic, so bf16 is expected to be slower.

The JSON (with the run's provenance) is written after every run, so an interrupted run keeps what it measured; the
Markdown summary beside it (same name, ``.md``) is written at the end; ``--render`` recomputes the comparison and
the summary from the JSON's runs alone, training nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/quickstart_digits.yaml"
AMPS = ("none", "bf16")
LABEL = {"none": "float32", "bf16": "bf16"}
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> dict[str, bool]:
    """Which of :data:`FLAGS` the first CPU of ``/proc/cpuinfo`` lists (all False where the file is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return dict.fromkeys(FLAGS, False)
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.partition(":")[2].split())
    return {f: f in have for f in FLAGS}


def read_log(path: Path) -> dict[str, list[dict[str, float]]]:
    """A run's ``log.csv``: its ``train`` rows (step, epoch, loss) and ``val`` rows (epoch, loss, top1)."""
    rows: dict[str, list[dict[str, float]]] = {"train": [], "val": []}
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            if r["split"] == "train":
                rows["train"].append({"step": int(r["step"]), "epoch": float(r["epoch"]), "loss": float(r["loss"])})
            elif r["split"] == "val":
                rows["val"].append(
                    {"epoch": round(float(r["epoch"])), "loss": float(r["loss"]), "top1": float(r["top1"])}
                )
    return rows


def _log_interval() -> int:
    """The quick start's ``train.log_interval``: the steps between the training-loss rows compared."""
    import yaml

    return int(yaml.safe_load((REPO / CONFIG).read_text())["train"]["log_interval"])


def train_once(seed: int, amp: str, epochs: int, threads: int, run_dir: Path) -> dict[str, Any]:
    """One quick-start run in its own process; its curves, top-1, training speed and the load around it."""
    cmd = [
        sys.executable,
        "train.py",
        "--config",
        CONFIG,
        "--seed",
        str(seed),
        "--train.amp",
        amp,
        "--train.epochs",
        str(epochs),
        "--train.threads",
        str(threads),
        "--export.enabled",
        "false",
        "--output_dir",
        str(run_dir),
        "--overwrite",
        "--no-progress",
    ]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    args = (run_dir / "args.yaml").read_text()
    batch = next(int(ln.split(":")[1]) for ln in args.splitlines() if ln.strip().startswith("batch_size:"))
    log = read_log(run_dir / "log.csv")
    return {
        "seed": seed,
        "amp": amp,
        "train": log["train"],
        "val": log["val"],
        "top1": metrics["top1"],
        "val_loss": metrics["loss"],
        "train_steps": metrics["train_steps"],
        "batch_size": batch,
        "train_seconds": metrics["train_seconds"],
        "images_per_s": metrics["train_steps"] * batch / metrics["train_seconds"],
        "wall_seconds": round(wall, 1),
        "load_1min": [round(load_before, 2), round(load_after, 2)],
    }


def _band_check(points: list[tuple[Any, list[float], dict[int, float]]]) -> list[dict[str, Any]]:
    """For each point (key, float32 values, bf16 value per seed): the float32 band and each bf16 value's place."""
    out = []
    for key, ref, bf in points:
        lo, hi = min(ref), max(ref)
        cells = {}
        for seed, v in bf.items():
            outside = max(0.0, v - hi, lo - v)
            cells[str(seed)] = {"value": v, "inside": outside == 0.0, "outside_by": outside}
        out.append({"at": key, "float32_min": lo, "float32_max": hi, "bf16": cells})
    return out


def compare(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The bf16 runs' curves against the float32 runs' seed-to-seed band, per logged step and per epoch."""
    by = {amp: {r["seed"]: r for r in runs if r["amp"] == amp} for amp in AMPS}
    ref, bf = by["none"], by["bf16"]
    if len(ref) < 2 or not bf:
        return {}
    steps = sorted(set.intersection(*({p["step"] for p in r["train"]} for r in [*ref.values(), *bf.values()])))
    epochs = sorted(set.intersection(*({p["epoch"] for p in r["val"]} for r in [*ref.values(), *bf.values()])))

    def at(r: dict[str, Any], part: str, key: str, k: Any, field: str) -> float:
        return next(p[field] for p in r[part] if p[key] == k)

    def epoch_train(r: dict[str, Any], e: int) -> float:
        return statistics.fmean(p["loss"] for p in r["train"] if e - 1 < p["epoch"] <= e)

    out = {
        "train_loss_per_step": _band_check(
            [
                (
                    s,
                    [at(r, "train", "step", s, "loss") for r in ref.values()],
                    {k: at(r, "train", "step", s, "loss") for k, r in bf.items()},
                )
                for s in steps
            ]
        ),
        "train_loss_per_epoch": _band_check(
            [
                (e, [epoch_train(r, e) for r in ref.values()], {k: epoch_train(r, e) for k, r in bf.items()})
                for e in epochs
            ]
        ),
        "val_loss_per_epoch": _band_check(
            [
                (
                    e,
                    [at(r, "val", "epoch", e, "loss") for r in ref.values()],
                    {k: at(r, "val", "epoch", e, "loss") for k, r in bf.items()},
                )
                for e in epochs
            ]
        ),
        "val_top1_per_epoch": _band_check(
            [
                (
                    e,
                    [at(r, "val", "epoch", e, "top1") for r in ref.values()],
                    {k: at(r, "val", "epoch", e, "top1") for k, r in bf.items()},
                )
                for e in epochs
            ]
        ),
    }
    same = [s for s in sorted(bf) if s in ref]
    out["same_seed"] = {
        str(s): {
            "train_loss_max_abs_diff": max(
                abs(at(bf[s], "train", "step", k, "loss") - at(ref[s], "train", "step", k, "loss")) for k in steps
            ),
            "val_loss_max_abs_diff": max(
                abs(at(bf[s], "val", "epoch", e, "loss") - at(ref[s], "val", "epoch", e, "loss")) for e in epochs
            ),
        }
        for s in same
    }
    out["float32_band_width"] = {
        "train_loss_per_step_median": statistics.median(
            p["float32_max"] - p["float32_min"] for p in out["train_loss_per_step"]
        ),
        "val_loss_per_epoch_median": statistics.median(
            p["float32_max"] - p["float32_min"] for p in out["val_loss_per_epoch"]
        ),
    }
    paired = [bf[s]["images_per_s"] / ref[s]["images_per_s"] for s in same]
    out["speed"] = {
        "float32_images_per_s": [ref[s]["images_per_s"] for s in sorted(ref)],
        "bf16_images_per_s": [bf[s]["images_per_s"] for s in sorted(bf)],
        "bf16_over_float32_per_seed": paired,
        "bf16_over_float32_median": statistics.median(paired) if paired else None,
    }
    for name in ("train_loss_per_step", "train_loss_per_epoch", "val_loss_per_epoch", "val_top1_per_epoch"):
        cells = [c for p in out[name] for c in p["bf16"].values()]
        out[name + "_summary"] = {
            "points": len(cells),
            "inside": sum(c["inside"] for c in cells),
            "max_outside_by": max((c["outside_by"] for c in cells), default=0.0),
        }
    return out


def _fmt(x: float, nd: int = 3) -> str:
    return f"{x:.{nd}f}"


def render(doc: dict[str, Any]) -> str:
    """The Markdown summary of a results file this tool wrote."""
    p, flags, runs, cmp_ = doc["provenance"], doc["cpu_flags"], doc["trainings"], doc.get("comparison") or {}
    present = [f for f in FLAGS if flags.get(f)]
    absent = [f for f in FLAGS if not flags.get(f)]
    s = doc["settings"]
    lines = [
        "# bf16 autocast against float32: the quick start's loss curve and speed",
        "",
        f"Written by `tools/amp_curve.py` ({p['date']}, commit {p['commit']}); the figures are in "
        "[amp_quickstart.json](amp_quickstart.json).",
        "",
        f"Machine: {p['cpu']}, {p['cores']} cores, {s['threads']} threads, torch {p['torch']} "
        f"(CPU capability {doc['torch_cpu_capability']}); CPU flags present: {', '.join(present) or 'none'}; "
        f"absent: {', '.join(absent) or 'none'}. Load at the start: {p['load']}.",
        "",
        f"Runs: `{doc['command']}`, seeds {', '.join(map(str, s['seeds']))}, each with `--train.amp none` (float32) "
        f"and `--train.amp bf16`, alternated per seed. The quick start's recipe as it is, with its schedule "
        f"(1 warmup epoch, cosine) compressed into {s['epochs']} epoch(s).",
        "",
    ]
    if not cmp_:
        lines += ["Too few runs finished to compare (at least two float32 seeds and one bf16 run are needed).", ""]
        return "\n".join(lines)
    seeds = [str(x) for x in sorted({r["seed"] for r in runs if r["amp"] == "bf16"})]

    def table(name: str, title: str, nd: int) -> list[str]:
        summ = cmp_[name + "_summary"]
        head = ["epoch" if "epoch" in name else "step", "float32 min-max"] + [f"bf16 seed {k}" for k in seeds]
        out = [
            f"**{title}**: {summ['inside']} of {summ['points']} bf16 points inside the float32 band"
            + (
                f"; the farthest outside by {_fmt(summ['max_outside_by'], nd + 1)}."
                if summ["inside"] < summ["points"]
                else "."
            ),
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for pt in cmp_[name]:
            cells = []
            for k in seeds:
                c = pt["bf16"].get(k)
                if c is None:
                    cells.append("")
                    continue
                mark = "in" if c["inside"] else f"out by {_fmt(c['outside_by'], nd + 1)}"
                cells.append(f"{_fmt(c['value'], nd)} ({mark})")
            band = f"{_fmt(pt['float32_min'], nd)} - {_fmt(pt['float32_max'], nd)}"
            out.append("| " + " | ".join([str(pt["at"]), band, *cells]) + " |")
        return out + [""]

    lines += table("val_loss_per_epoch", "Held-out loss after each epoch", 3)
    lines += table("train_loss_per_epoch", "Training loss, mean of the logged steps of each epoch", 3)
    lines += table("val_top1_per_epoch", "Held-out top-1 (%) after each epoch", 2)
    st = cmp_["train_loss_per_step_summary"]
    lines += [
        f"**Training loss at every logged step** (every {s['log_interval']} steps, {len(cmp_['train_loss_per_step'])} "
        f"steps): {st['inside']} of {st['points']} bf16 points inside the float32 band"
        + (f"; the farthest outside by {_fmt(st['max_outside_by'], 4)}." if st["inside"] < st["points"] else "."),
        "",
        "**The same seed in both precisions** (same data order and initial weights): the largest difference between "
        "a bf16 run's loss and its float32 twin's, against the float32 seeds' band width (median over the points): "
        + "; ".join(
            f"seed {k}: training loss {_fmt(v['train_loss_max_abs_diff'], 4)}, held-out loss "
            f"{_fmt(v['val_loss_max_abs_diff'], 4)}"
            for k, v in cmp_["same_seed"].items()
        )
        + f"; band width: training loss {_fmt(cmp_['float32_band_width']['train_loss_per_step_median'], 4)}, "
        f"held-out loss {_fmt(cmp_['float32_band_width']['val_loss_per_epoch_median'], 4)}. (bf16 runs log a "
        "training loss computed in bf16, so its logged value is itself rounded to bf16's 8-bit mantissa.)",
        "",
        "**Each run**: final held-out top-1 and training speed (optimizer steps x batch / training seconds, from "
        "`metrics.json`; evaluation not included).",
        "",
        "| seed | precision | top-1 (%) | held-out loss | train s | images/s | load (1 min) before, after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["seed"], AMPS.index(r["amp"]))):
        lines.append(
            f"| {r['seed']} | {LABEL[r['amp']]} | {r['top1']:.2f} | {r['val_loss']:.3f} | {r['train_seconds']:.1f} | "
            f"{r['images_per_s']:.1f} | {r['load_1min'][0]:.2f}, {r['load_1min'][1]:.2f} |"
        )
    sp = cmp_["speed"]
    ratio = sp["bf16_over_float32_median"]
    verdict = "faster" if ratio > 1 else "slower"
    lines += [
        "",
        f"**Speed**: bf16 / float32 training images per second, per seed: "
        f"{', '.join(f'{x:.2f}x' for x in sp['bf16_over_float32_per_seed'])}; median {ratio:.2f}x, bf16 "
        f"{verdict} on this CPU ({'with' if flags.get('avx512_bf16') or flags.get('amx_bf16') else 'without'} "
        "bf16 instructions: avx512_bf16 "
        f"{'present' if flags.get('avx512_bf16') else 'absent'}, amx_bf16 {'present' if flags.get('amx_bf16') else 'absent'}).",
        "",
    ]
    peak = max(max(r["load_1min"]) for r in runs)
    if peak > int(p["cores"]):
        lines += [
            f"The 1-minute load average reached {peak:.2f} on {p['cores']} cores during these runs (before and after "
            "each in the table): other processes shared the CPU, so every speed here is contended and the ratio "
            "moves with the load; alternating the precisions per seed puts both under it.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3, help="the quick start's schedule compressed into this many")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "amp_quickstart")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "train" / "amp_quickstart.json")
    ap.add_argument(
        "--render", type=Path, help="recompare this results file's runs, rewrite it and its .md; train nothing"
    )
    a = ap.parse_args(argv)
    if a.render:
        doc = json.loads(a.render.read_text())
        doc["comparison"] = compare(doc["trainings"])
        a.render.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        a.render.with_suffix(".md").write_text(render(doc))
        print(f"wrote {a.render.with_suffix('.md')}")
        return 0

    import torch

    from zoo.bench.harness import provenance, save_results

    torch.set_num_threads(a.threads)
    flags = cpu_flags()
    doc: dict[str, Any] = {
        "provenance": provenance(f"{os.uname().machine}, {a.threads} threads"),
        "cpu_flags": flags,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "command": f"python train.py --config {CONFIG} --seed S --train.amp none|bf16 --train.epochs {a.epochs} "
        f"--train.threads {a.threads} --export.enabled false --output_dir DIR --overwrite",
        "settings": {"seeds": a.seeds, "epochs": a.epochs, "threads": a.threads, "log_interval": _log_interval()},
        "trainings": [],
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in a.seeds:
        for amp in AMPS:
            print(f"seed {seed} {LABEL[amp]} ...", flush=True)
            run = train_once(seed, amp, a.epochs, a.threads, a.runs_dir / f"{amp}_seed{seed}")
            print(f"  top-1 {run['top1']:.2f}, {run['images_per_s']:.1f} images/s, {run['wall_seconds']} s", flush=True)
            doc["trainings"].append(run)
            doc["comparison"] = compare(doc["trainings"])
            save_results(a.out, doc)
    a.out.with_suffix(".md").write_text(render(doc))
    print(f"wrote {a.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
