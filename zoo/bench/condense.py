"""The dataset-distillation protocol: ``python -m zoo.bench.condense``.

Condense once per (method, ipc), train ``--runs`` fresh ConvNet-3s on each set (DSA augmentation, the field's SGD
schedule: :mod:`zoo.condense.evaluate`), report mean +- std top-1 on the real held-out split, the whole-data
ceiling, each condensation's wall time and peak memory, and cross-architecture columns: the quickstart PoolFormer
and reduced ConvFormer / SReT / SLaK trained on the ConvNet-made sets (upsampled to 32x32 when the set is smaller,
since those models downsample by 32).

``--preset paper`` uses the authors' iteration counts and 1000 evaluation epochs (hours on a CPU); ``--preset
quick`` (default) the reduced counts the README's digits table was measured with, in minutes on 2 cores. Any
image folder or ``hf_disk`` dataset works the same way (``--data PATH``). Teacher-based methods (rded, sre2l) use a
ConvNet-3 with BatchNorm trained on the real training split, once.
"""

import argparse
import csv
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..condense import METHODS, EvalSettings, condense, evaluate_set, load_real, load_real_split
from ..condense.core import METHODS as _METHODS
from ..condense.teacher import train_teacher
from ..data.dsa import DSA
from .reference.condense import dc_iteration, dm_iteration

__all__ = ["PRESETS", "main", "run_protocol"]

_MTT_QUICK = {
    "syn_steps": 5,
    "expert_epochs": 2,
    "num_experts": 3,
    "train_epochs": 6,
    "max_start_epoch": 3,
    "lr_img": 100.0,
    "dsa_strategy": "color_crop_cutout_scale_rotate",
    "buffer": "runs/condensed/buffers",
}
# method options per preset; ``{ipc}``-dependent values are callables
PRESETS = {
    "quick": {
        "image_size": 16,
        "eval_epochs": 60,
        "whole_epochs": 10,
        "teacher_epochs": 20,
        "methods": {
            "dm": {"iterations": 150, "batch_real": 64},
            "dc": {"iterations": 10, "batch_real": 64, "outer_loop": 5, "inner_loop": 5},
            "dsa": {"iterations": 10, "batch_real": 64, "outer_loop": 5, "inner_loop": 5},
            "mtt": {**_MTT_QUICK, "iterations": 40},
            "factorization": {**_MTT_QUICK, "iterations": 40},
            "sre2l": {"iterations": 200},
            # images of 16-32 px: whole crops (the authors' CIFAR-10 ConvNet setting), not 2x2 mosaics of 8 px patches
            "rded": {"factor": 1, "crop_scale": [0.5, 1.0]},
            "herding": {"train_epochs": 10},
            "kcenter": {"train_epochs": 10},
        },
    },
    "paper": {"image_size": 32, "eval_epochs": 1000, "whole_epochs": 300, "teacher_epochs": 50, "methods": {}},
}

CROSS = {
    "poolformer": ("poolformer_s12", {"depths": [2, 2, 4, 2], "dims": [32, 64, 128, 256]}),
    "convformer": ("convformer_s18", {"depths": [1, 1, 2, 1], "dims": [32, 64, 128, 256]}),
    "sret": ("sret_tiny", {"img_size": 32, "heads": [1, 2, 4], "recursive_num": [1, 1, 1]}),
    "slak": ("slak_tiny", {"dims": [32, 64, 128, 256], "depths": [1, 1, 2, 1]}),
}


def _stats(accs: list[float]) -> tuple[float, float]:
    return statistics.fmean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)


def _upsampled(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    return (
        images if images.shape[-1] >= size else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    )


def _cross(synset, test, arch: str, epochs: int, runs: int, seed: int) -> list[float]:
    name, kwargs = CROSS[arch]
    images = _upsampled(synset.images)
    test_up = test if test.images.shape[-1] >= 32 else _with_images(test, _upsampled(test.images))
    settings = EvalSettings(model=name, epochs=epochs, model_kwargs=kwargs, lr=0.01)
    return evaluate_set((images, synset.labels), test_up, settings, runs=runs, seed=seed)


def _with_images(real, images):
    return replace(real, images=images)


def run_protocol(
    data: str = "digits",
    methods: list[str] = ("random", "dm"),
    ipcs: list[int] = (1, 10),
    runs: int = 5,
    preset: str = "quick",
    cross: list[str] = (),
    cross_runs: int = 1,
    seed: int = 0,
    out: Path | None = None,
    log=print,
) -> list[dict]:
    p = PRESETS[preset]
    real = load_real(data, image_size=p["image_size"])
    test = load_real_split(real.source, real.preprocessing)
    settings = EvalSettings(epochs=p["eval_epochs"])
    rows = []
    t0 = time.perf_counter()
    whole = evaluate_set((real.images, real.labels), test, EvalSettings(epochs=p["whole_epochs"]), runs=runs, seed=seed)
    m, s = _stats(whole)
    rows.append({"method": "whole data", "ipc": "all", "mean": m, "std": s, "runs": runs, "seconds": 0.0,
                 "peak_mb": 0.0, "stored": int(real.images.numel())})  # fmt: skip
    log(f"whole data: {m:.2f} +- {s:.2f} ({time.perf_counter() - t0:.0f} s)")
    teacher = None
    for method in methods:
        if method not in METHODS:
            raise SystemExit(f"unknown method {method!r}: {', '.join(sorted(METHODS))}")
        options = dict(p["methods"].get(method, {}))
        if METHODS[method].needs_teacher or method == "sre2l":
            if teacher is None:
                teacher = train_teacher(real, epochs=p["teacher_epochs"], seed=seed)
            options["teacher"] = teacher
        for ipc in ipcs:
            folder = None if out is None else out / f"{method}_ipc{ipc}"
            t = time.perf_counter()
            try:
                synset = condense(real, method, ipc, folder, seed=seed, progress=False, **options)
            except ValueError as e:  # e.g. ipc larger than a class for a selection method
                log(f"{method} ipc {ipc}: skipped ({e})")
                continue
            cond_s = time.perf_counter() - t
            eval_lr = synset.meta.get("eval_lr")
            st = settings if eval_lr is None else EvalSettings(epochs=settings.epochs, lr=float(eval_lr))
            accs = evaluate_set(synset, test, st, runs=runs, seed=seed)
            m, s = _stats(accs)
            row = {"method": method, "ipc": ipc, "mean": m, "std": s, "runs": runs, "seconds": cond_s,
                   "peak_mb": synset.meta.get("peak_memory_mb", 0.0), "stored": synset.stored_values}  # fmt: skip
            for arch in cross:
                row[arch] = _stats(_cross(synset, test, arch, p["eval_epochs"], cross_runs, seed))[0]
            rows.append(row)
            log(
                f"{method} ipc {ipc}: {m:.2f} +- {s:.2f}  (condense {cond_s:.0f} s, {row['peak_mb']:.0f} MB; "
                + ", ".join(f"{a} {row[a]:.1f}" for a in cross)
                + f"; total {time.perf_counter() - t0:.0f} s)"
            )
    return rows


def markdown(rows: list[dict], cross: list[str]) -> str:
    head = "| method | ipc | ConvNet-3 top-1 | stored values | condense s | peak MB |" + "".join(
        f" {a} |" for a in cross
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|" + "---:|" * len(cross)]
    for r in rows:
        extra = "".join(f" {r[a]:.1f} |" if a in r else " - |" for a in cross)
        lines.append(
            f"| {r['method']} | {r['ipc']} | {r['mean']:.2f} ± {r['std']:.2f} | {r['stored']:,} | "
            f"{r['seconds']:.0f} | {r['peak_mb']:.0f} |{extra}"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    whole = next((r for r in rows if r["method"] == "whole data"), None)
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "whole data"):
        pts = [(r["ipc"], r["mean"], r["std"]) for r in rows if r["method"] == method]
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", label=method)
    if whole:
        ax.axhline(whole["mean"], color="k", ls="--", label="whole data")
    ax.set_xscale("log")
    ax.set_xlabel("images per class")
    ax.set_ylabel("held-out top-1 (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def speed(data: str = "digits", ipc: int = 10, iterations: int = 3, image_size: int = 32, batch_real: int = 256,
          outer: int = 2, inner: int = 5, seed: int = 0, log=print) -> dict[str, float]:  # fmt: skip
    """Seconds per iteration of the zoo's DM and DC and of the authors'-loop renditions at equal settings
    (network, batches, loops, DSA), interleaved round by round; returns the reference / zoo ratios."""
    real = load_real(data, image_size=image_size)
    dsa = DSA("color_crop_cutout_scale_rotate")
    dev = torch.device("cpu")
    zoo_dm = _METHODS["dm"](real, ipc, {"batch_real": batch_real, "dsa_strategy": dsa.strategy}, seed, dev)
    zoo_dc = _METHODS["dsa"](
        real, ipc, {"batch_real": batch_real, "outer_loop": outer, "inner_loop": inner, "dsa_strategy": dsa.strategy},
        seed, dev,
    )  # fmt: skip
    zoo_dm.setup()
    zoo_dc.setup()
    syn = zoo_dm.images.detach().clone().requires_grad_(True)
    ref_opt = torch.optim.SGD([syn], lr=1.0, momentum=0.5)
    g = torch.Generator().manual_seed(seed)
    by_class = real.by_class
    timings = {"dm": [], "dm_ref": [], "dc": [], "dc_ref": []}
    for it in range(iterations + 1):  # the first round warms up
        for key, fn in (
            ("dm", lambda: zoo_dm.step(0)),
            (
                "dm_ref",
                lambda: dm_iteration(real.images, by_class, syn, ref_opt, ipc, batch_real, dsa, g, size=image_size),
            ),  # fmt: skip
            ("dc", lambda: zoo_dc.step(0)),
            (
                "dc_ref",
                lambda: dc_iteration(
                    real.images,
                    by_class,
                    syn,
                    zoo_dc.labels,
                    ref_opt,
                    ipc,
                    batch_real,
                    outer,
                    inner,
                    dsa,
                    g,
                    size=image_size,
                ),
            ),  # fmt: skip
        ):
            t = time.perf_counter()
            fn()
            if it:
                timings[key].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in timings.items()}
    ratios = {"dm": med["dm_ref"] / med["dm"], "dc": med["dc_ref"] / med["dc"]}
    log(
        f"s/iteration at {image_size}px, ipc {ipc}, batch_real {batch_real}, DC loops ({outer}, {inner}), "
        f"{iterations} interleaved rounds: DM zoo {med['dm']:.2f} vs authors' loop {med['dm_ref']:.2f} "
        f"({ratios['dm']:.2f}x); DSA zoo {med['dc']:.2f} vs authors' loop {med['dc_ref']:.2f} ({ratios['dc']:.2f}x)"
    )
    return ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zoo.bench.condense", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--methods", default="random,herding,kcenter,dm,dc,dsa,mtt,factorization,rded")
    ap.add_argument("--ipc", default="1,10,50")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--preset", choices=list(PRESETS), default="quick")
    ap.add_argument("--cross", default="poolformer,convformer,sret,slak", help="cross-architecture columns ('' none)")
    ap.add_argument("--cross-runs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="keep every set under this folder")
    ap.add_argument("--json", default=None)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--speed", action="store_true", help="only: DM and DSA per iteration vs the authors' loops")
    ap.add_argument("--image-size", type=int, default=32, help="--speed: image edge (default 32)")
    args = ap.parse_args(argv)
    if args.speed:
        speed(args.data, ipc=int(args.ipc.split(",")[-1]), image_size=args.image_size)
        return 0
    cross = [c for c in args.cross.split(",") if c]
    unknown = [c for c in cross if c not in CROSS]
    if unknown:
        print(f"unknown --cross {unknown}: choose from {', '.join(CROSS)}", file=sys.stderr)
        return 2
    rows = run_protocol(
        args.data, args.methods.split(","), [int(i) for i in args.ipc.split(",")], args.runs, args.preset, cross,
        args.cross_runs, args.seed, Path(args.out) if args.out else None,
    )  # fmt: skip
    print(markdown(rows, cross))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
            w.writeheader()
            w.writerows(rows)
    if args.plot:
        plot(rows, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
