"""The dataset-distillation protocol: ``zoo bench condense``.

``zoo bench condense --data mnist --data-path ../shared/datasets/mnist --preset cpu`` condenses every
method at every ``--ipc`` into ``sets`` sets (seeds ``seed .. seed + sets - 1``), trains ``nets`` fresh ConvNet-3s
on each with the authors' evaluation for that data and method (:meth:`zoo.condense.EvalSettings.for_data`: DSA
with flips only where the data allows them; DC's own augmentation without DSA), and reports mean +- std over all
``sets x nets`` networks, beside:

- the accuracy of each learned method's iteration-0 set (the same seeds, no steps: what the steps added);
- for the teacher-based methods (rded, sre2l) the authors' student recipe (every augmented batch relabelled by the
  teacher: :func:`zoo.condense.evaluate_with_teacher`) as the main column, the plain hard-label evaluation beside
  it, and a ``random + teacher`` row (a random subset under the same recipe and teacher), which separates the
  images' gain from the teacher's;
- for factorization two rows: within the ipc budget (the zoo's accounting) and the authors' released-script layout
  (``budget=False``; its stored values say by how much it exceeds the budget);
- the whole-data ceiling, and the published figures where a paper reports the dataset (:data:`PUBLISHED`).

``--curve`` evaluates DM's and DSA's set at ipc 1 along its iterations (the preset's ``curve`` points).
Presets (:mod:`zoo.condense.presets`) choose the counts; each row records its wall and CPU seconds. The JSON output
(``--json``) carries the date, commit, machine and versions.
"""

import argparse
import csv
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..condense import METHODS, EvalSettings, condense, evaluate_set, evaluate_with_teacher, load_real, load_real_split
from ..condense.presets import PRESETS, default_preset, departures, method_options
from ..condense.student import StudentSettings
from ..condense.teacher import train_teacher
from ..data.sources import add_data_path_argument, resolve
from .condense_speed import render_scripts, render_speed, speed
from .harness import provenance

__all__ = ["PRESETS", "PUBLISHED", "curve", "run_protocol"]

_DC_PAPER = "DC paper (Zhao, Mopuri, Bilen, ICLR 2021, arXiv:2006.05929) Table 1"
_DC_README = "VICO-UoE/DatasetCondensation README, Table 1 (DC) / Table 2 (DSA)"
# published ConvNet-3 top-1 (%) at ipc 1 / 10 / 50, and where each row comes from; a (dataset, method) not listed
# is not reported by the method's paper for that dataset
# the bench condenses on the CPU (torch.device("cpu")): zoo condense's default for that device, by the one rule
DEFAULT_PRESET = default_preset("cpu")

PUBLISHED: dict[tuple[str, str], tuple[tuple[float | None, ...], str]] = {
    ("mnist", "random"): ((64.9, 95.1, 97.9), _DC_PAPER),
    ("mnist", "herding"): ((89.2, 93.7, 94.8), _DC_PAPER),
    ("mnist", "kcenter"): ((89.3, 84.4, 97.4), _DC_PAPER),
    ("mnist", "dc"): ((91.7, 97.4, 98.8), _DC_README),
    ("mnist", "dsa"): ((88.7, 97.8, 99.2), _DC_README),
    ("mnist", "whole data"): ((99.6,), _DC_PAPER),
    ("fashion_mnist", "random"): ((51.4, 73.8, 82.5), _DC_PAPER),
    ("fashion_mnist", "herding"): ((67.0, 71.1, 71.9), _DC_PAPER),
    ("fashion_mnist", "kcenter"): ((66.9, 54.7, 68.3), _DC_PAPER),
    ("fashion_mnist", "dc"): ((70.5, 82.3, 83.6), _DC_README),
    ("fashion_mnist", "dsa"): ((70.6, 84.6, 88.7), _DC_README),
    ("fashion_mnist", "whole data"): ((93.5,), _DC_PAPER),
}
_IPC_COLUMN = {1: 0, 10: 1, 50: 2}

CROSS = {
    "poolformer": ("poolformer_s12", {"depths": [2, 2, 4, 2], "dims": [32, 64, 128, 256]}),
    "convformer": ("convformer_s18", {"depths": [1, 1, 2, 1], "dims": [32, 64, 128, 256]}),
    "sret": ("sret_tiny", {"img_size": 32, "heads": [1, 2, 4], "recursive_num": [1, 1, 1]}),
    "slak": ("slak_tiny", {"dims": [32, 64, 128, 256], "depths": [1, 1, 2, 1]}),
}


def published(dataset: str, method: str, ipc) -> tuple[float | None, str | None]:
    """The published top-1 for (dataset, method, ipc) and its source, or (None, None)."""
    entry = PUBLISHED.get((dataset, method))
    if entry is None:
        return None, None
    values, source = entry
    col = 0 if ipc == "all" else _IPC_COLUMN.get(ipc)
    if col is None or col >= len(values):
        return None, source
    return values[col], source


def _stats(accs: list[float]) -> tuple[float, float]:
    return statistics.fmean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)


def _upsampled(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    if images.shape[-1] >= size and images.shape[1] == 3:
        return images
    if images.shape[1] == 1:  # the cross-architecture models are RGB
        images = images.expand(-1, 3, -1, -1)
    if images.shape[-1] >= size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def _cross(synset, test, arch: str, epochs: int, runs: int, seed: int) -> list[float]:
    name, kwargs = CROSS[arch]
    images = _upsampled(synset.images)
    test_up = replace(test, images=_upsampled(test.images))
    settings = EvalSettings(model=name, epochs=epochs, model_kwargs=kwargs, lr=0.01)
    return evaluate_set((images, synset.labels), test_up, settings, runs=runs, seed=seed)


class _Clock:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def _eval_settings(real, method: str, preset: str, meta: dict | None = None) -> EvalSettings:
    """The preset's evaluation (:meth:`EvalSettings.for_preset`); ``meta``: the set's, for a learned lr."""
    return EvalSettings.for_preset(preset, str(real.source.get("name", "")), method, meta)


def _student(real, preset) -> StudentSettings:
    return StudentSettings.for_data(real, epochs=preset.student_epochs)


def run_protocol(
    data: str = "digits",
    methods: list[str] = ("random", "dm"),
    ipcs: list[int] = (1, 10),
    preset: str = "quick",
    sets: int | None = None,
    nets: int | None = None,
    cross: list[str] = (),
    cross_runs: int = 1,
    seed: int = 0,
    out: Path | None = None,
    path: str | None = None,
    whole: bool = True,
    log=print,
    on_row=None,
    side_nets: int = 1,
) -> list[dict]:
    """The table's rows (see the module docstring); ``sets``/``nets`` None take the preset's; the side columns
    (iteration 0, hard labels) train ``side_nets`` networks per set."""
    p = PRESETS[preset]
    sets, nets = sets or p.sets, nets or p.nets
    real = load_real(data, path=path, image_size=p.image_size or _native(data, path))
    test = load_real_split(real.source, real.preprocessing)
    dataset = str(real.source.get("name", data))
    rows: list[dict] = []
    t0 = time.perf_counter()

    def add(row: dict) -> None:
        pub, src = published(dataset, row["method"].split(" ")[0] if row["method"] != "whole data" else
                             "whole data", row["ipc"])  # fmt: skip
        row.update({"dataset": dataset, "preset": preset, "published": pub, "published_source": src})
        rows.append(row)
        if on_row is not None:
            on_row(rows)
        extra = "".join(
            f", {k} {row[k]:.2f}" for k in ("init_mean", "hard_mean", "teacher_mean") if row.get(k) is not None
        )
        log(f"{row['method']} ipc {row['ipc']}: {row['mean']:.2f} +- {row['std']:.2f}{extra} (condense "
            f"{row['seconds']:.0f} s wall, {row['cpu_seconds']:.0f} s CPU; "
            f"{time.perf_counter() - t0:.0f} s so far)")  # fmt: skip

    if whole:
        with _Clock() as c:
            accs = evaluate_set((real.images, real.labels), test, EvalSettings(epochs=p.whole_epochs, dsa=False),
                                runs=1, seed=seed)  # fmt: skip
        m, s = _stats(accs)
        add({"method": "whole data", "ipc": "all", "mean": m, "std": s, "n": len(accs), "seconds": c.wall,
             "cpu_seconds": c.cpu, "stored": int(real.images.numel()), "eval_epochs": p.whole_epochs})  # fmt: skip
    teacher = None

    def get_teacher():
        nonlocal teacher
        if teacher is None:
            with _Clock() as c:
                teacher = train_teacher(real, epochs=p.teacher_epochs, seed=seed)
            log(f"teacher (ConvNet-3, BatchNorm, {p.teacher_epochs} epoch(s) on the training split): {c.wall:.0f} s")
        return teacher

    for method in methods:
        if method not in METHODS and method != "random+teacher":
            raise SystemExit(f"unknown method {method!r}: {', '.join(sorted(METHODS))}, random+teacher")
        for ipc in ipcs:
            for variant in _variants(method):
                row = _row(real, test, method, variant, ipc, p, sets, nets, seed, out, get_teacher, cross,
                           cross_runs, log, side_nets)  # fmt: skip
                if row is not None:
                    add(row)
    return rows


def _native(data: str, path: str | None) -> int:
    """The data's own edge (28 for MNIST); 32 where it has none (folders)."""
    return resolve(data, path).native_size or 32


def _variants(method: str) -> list[dict]:
    if method == "factorization":
        return [{}, {"budget": False}]
    return [{}]


def _condense(real, method, ipc, preset, seed, out, keep=True, **extra):
    """One set of ``method`` under ``out`` (written there only with ``keep``); trajectory methods share one expert
    buffer under ``out`` across sets, ipcs, methods and iteration-0 sets."""
    options = {**method_options(preset.name, method, ipc), **extra}
    if "buffer" in METHODS[method].defaults:
        options.setdefault("buffer", str(Path(out or "runs/condensed") / "buffers"))
    folder = None if out is None or not keep else out / f"{method}_ipc{ipc}_seed{seed}"
    return condense(real, method, ipc, folder, seed=seed, progress=False, preset=preset.name, **options)


def _row(real, test, method, variant, ipc, p, sets, nets, seed, out, get_teacher, cross, cross_runs, log, side):
    """One table row: ``sets`` condensations of ``method`` x ``nets`` evaluations each."""
    base = "random" if method == "random+teacher" else method
    cls = METHODS[base]
    settings = _eval_settings(real, base, p.name)
    epochs = settings.epochs
    extra = dict(variant)
    if cls.needs_teacher or "teacher" in cls.defaults:  # selection embeds with the same trained network
        extra["teacher"] = get_teacher()
    deterministic = base in ("herding", "kcenter")  # the same set at every seed: condensed once
    accs, init_accs, hard_accs, wall, cpu, stored, cross_accs = [], [], [], 0.0, 0.0, 0, {a: [] for a in cross}
    synset = None
    for k in range(sets):
        s = seed + k
        with _Clock() as c:
            try:
                synset = synset if deterministic and k else _condense(real, base, ipc, p, s, out, **extra)
            except ValueError as e:  # e.g. ipc larger than a class for a selection method
                log(f"{method} ipc {ipc}: skipped ({e})")
                return None
        wall, cpu, stored = wall + c.wall, cpu + c.cpu, synset.stored_values
        if method == "random+teacher" or cls.needs_teacher:
            accs += evaluate_with_teacher(synset, test, get_teacher(), _student(real, p), runs=nets, seed=s)
            hard = synset if method != "random+teacher" else None
            if hard is not None:
                hard_accs += evaluate_set(replace(hard, soft_labels=None), test, settings, runs=side, seed=s)
        else:
            settings = _eval_settings(real, base, p.name, synset.meta)  # MTT's learned lr under paper
            accs += evaluate_set(synset, test, settings, runs=nets, seed=s)
        if cls.learned and synset.meta.get("options", {}).get("iterations"):
            start = _condense(real, base, ipc, p, s, out, keep=False, **{**extra, "iterations": 0})
            if cls.needs_teacher:
                init_accs += evaluate_with_teacher(start, test, get_teacher(), _student(real, p), runs=side, seed=s)
            else:
                init_accs += evaluate_set(start, test, settings, runs=side, seed=s)
        for arch in cross:
            cross_accs[arch] += _cross(synset, test, arch, epochs or settings.epochs, cross_runs, s)
    m, sd = _stats(accs)
    name = method + ("" if not variant else " (authors' layout)" if variant.get("budget") is False else f" {variant}")
    row = {"method": name, "ipc": ipc, "mean": m, "std": sd, "n": len(accs), "sets": sets, "nets": nets,
           "seconds": wall / sets, "cpu_seconds": cpu / sets, "stored": stored,
           "budget": ipc * real.num_classes * real.images[0].numel(),
           "eval_epochs": epochs or settings.epochs, "eval": _describe(settings),
           "iterations": synset.meta.get("options", {}).get("iterations", 0),
           "departures": departures(p.name, base, ipc, _resolved_defaults(cls, real, ipc),
                                    dataset=str(real.source.get("name", "")), student=cls.needs_teacher)}  # fmt: skip
    if init_accs:
        row["init_mean"], row["init_std"] = _stats(init_accs)
    if hard_accs:
        row["hard_mean"], row["hard_std"] = _stats(hard_accs)
    for arch in cross:
        row[arch] = _stats(cross_accs[arch])[0]
    return row


def _resolved_defaults(cls, real, ipc: int) -> dict:
    """``cls``'s defaults as a run on ``real`` at ``ipc`` takes them (MTT, factorization: their published row)."""
    published = getattr(cls, "published_settings", None)
    return {**cls.defaults, **(published(str(real.source.get("name", "")), ipc)[0] if published else {})}


def _describe(s: EvalSettings) -> str:
    aug = f"DSA {s.dsa_strategy}" if s.dsa else (f"DC augment {s.dc_aug}" if s.dc_aug else "no augmentation")
    return f"{s.model}, {aug}"


def curve(
    data: str,
    path: str | None = None,
    methods: list[str] = ("dm", "dsa"),
    ipc: int = 1,
    preset: str = "cpu",
    nets: int = 3,
    seed: int = 0,
    log=print,
    points: tuple[int, ...] | None = None,
) -> list[dict]:
    """Top-1 of ``methods``' set at ``ipc`` after each of the preset's ``curve`` iteration counts (one run,
    evaluated at those points with ``nets`` networks): the evidence of where a shortened run heads. ``points``
    replaces the preset's."""
    p = PRESETS[preset]
    if points:
        p = replace(p, curve=tuple(sorted(points)))
    real = load_real(data, path=path, image_size=p.image_size or _native(data, path))
    test = load_real_split(real.source, real.preprocessing)
    points = []
    for method in methods:
        points += _curve_of(real, test, method, ipc, p, nets, seed, log)
    return points


def _curve_of(real, test, method: str, ipc: int, p, nets: int, seed: int, log) -> list[dict]:
    options = {**method_options(p.name, method, ipc), "iterations": max(p.curve)}
    torch.manual_seed(seed)
    m = METHODS[method](real, ipc, options, seed, torch.device("cpu"))
    m.check()
    m.setup()
    settings = _eval_settings(real, method, p.name)
    points, t0 = [], time.perf_counter()
    for it in range(max(p.curve) + 1):
        if it in p.curve:  # evaluate without disturbing the run's random streams
            images, labels = (t.detach().clone() for t in m.result()[:2])
            state = (torch.random.get_rng_state(), m.generator.get_state())
            accs = evaluate_set((images, labels), test, settings, runs=nets, seed=seed)
            torch.random.set_rng_state(state[0])
            m.generator.set_state(state[1])
            mean, sd = _stats(accs)
            points.append({"dataset": str(real.source.get("name")), "method": method, "ipc": ipc, "iterations": it,
                           "mean": mean, "std": sd, "n": nets, "seconds": time.perf_counter() - t0})  # fmt: skip
            log(f"curve {method} ipc {ipc}: {it} iterations -> {mean:.2f} +- {sd:.2f}")
        if it < max(p.curve):
            m.step(it)
    return points


def markdown(rows: list[dict], cross: list[str] = ()) -> str:
    head = ("| method | ipc | iterations | sets x nets | ConvNet-3 top-1 | iteration 0 | hard labels | published | "
            "stored values | condense s (wall / CPU) |" + "".join(f" {a} |" for a in cross))  # fmt: skip
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(cross)]

    def pm(r, key):
        return f"{r[key + '_mean']:.1f} ± {r[key + '_std']:.1f}" if r.get(key + "_mean") is not None else "-"

    for r in rows:
        extra = "".join(f" {r[a]:.1f} |" if a in r else " - |" for a in cross)
        pub = f"{r['published']:.1f}" if r.get("published") is not None else "not reported"
        lines.append(
            f"| {r['method']} | {r['ipc']} | {r.get('iterations') or '-'} | {r.get('sets', '-')} x {r.get('nets', '-')} | "
            f"{r['mean']:.1f} ± {r['std']:.1f} | {pm(r, 'init')} | {pm(r, 'hard')} | "
            f"{pub} | {r['stored']:,} | {r['seconds']:.0f} / {r['cpu_seconds']:.0f} |{extra}"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, points: list[dict] = ()) -> None:
    import matplotlib  # optional plotting dependency: imported only when a plot is asked for

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [name for name, has in (("rows", rows), ("curve", points)) if has]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    if rows:
        _plot_rows(axes[0][0], rows)
    if points:
        _plot_curve(axes[0][len(panels) - 1], points)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_rows(ax, rows: list[dict]) -> None:
    whole = next((r for r in rows if r["method"] == "whole data"), None)
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "whole data"):
        pts = [(r["ipc"], r["mean"], r["std"]) for r in rows if r["method"] == method]
        ax.errorbar([q[0] for q in pts], [q[1] for q in pts], yerr=[q[2] for q in pts], marker="o", label=method)
    if whole:
        ax.axhline(whole["mean"], color="k", ls="--", label="whole data")
    ax.set_xscale("log")
    ax.set_xlabel("images per class")
    ax.set_ylabel("held-out top-1 (%)")
    ax.legend(fontsize=7)


def _plot_curve(ax, points: list[dict]) -> None:
    for dataset in dict.fromkeys(q["dataset"] for q in points):
        for method in dict.fromkeys(q["method"] for q in points if q["dataset"] == dataset):
            qs = [q for q in points if q["method"] == method and q["dataset"] == dataset]
            bars = ax.errorbar(
                [max(q["iterations"], 1) for q in qs],
                [q["mean"] for q in qs],
                yerr=[q["std"] for q in qs],
                marker="o",
                label=f"{dataset} {method} ipc {qs[0]['ipc']}",
            )
            value, _ = published(dataset, method, qs[0]["ipc"])
            if value is not None:  # the paper's figure, after the paper's iteration count
                ax.axhline(value, ls="--", color=bars[0].get_color(), label=f"{method} published ({value})")
    ax.set_xscale("log")
    ax.set_xlabel("iterations (0 drawn at 1)")
    ax.set_ylabel("held-out top-1 (%)")
    ax.legend(fontsize=7)


def render(docs: list[dict]) -> str:
    """Markdown of saved runs (``--json`` files): each dataset's rows in one table, under its provenance line, and
    its curve points."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for d in docs for r in [*d["rows"], *d.get("curve", [])]):
        parts = [d for d in docs if any(r["dataset"] == dataset for r in [*d["rows"], *d.get("curve", [])])]
        rows = [r for d in parts for r in d["rows"] if r["dataset"] == dataset]
        points = [q for d in parts for q in d.get("curve", []) if q["dataset"] == dataset]
        out.append(f"### {dataset}")
        for d in parts:
            v = d["provenance"]
            out.append(f"- {v['date']}, commit {v['commit']}, {v['cpu']}, {v['threads']} thread(s), "
                       f"torch {v['torch']}, preset {d['preset']}")  # fmt: skip
        if rows:
            out += ["", markdown(rows)]
        if points:
            out += ["", "| method | ipc | iterations | top-1 |", "|---|---:|---:|---:|"]
            out += [f"| {q['method']} | {q['ipc']} | {q['iterations']} | {q['mean']:.1f} ± {q['std']:.1f} |"
                    for q in points]  # fmt: skip
        out.append("")
    return "\n".join(out)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """``zoo bench condense``: the protocol's table (and ``--curve``, ``--speed``, ``--render``)."""
    ap.add_argument("--data", default="digits", help="a data name (digits, mnist, fashion_mnist, cifar10, ...)")
    add_data_path_argument(ap)
    ap.add_argument("--methods", default="random,herding,kcenter,dm,dc,dsa,mtt,factorization,rded,sre2l,random+teacher")
    ap.add_argument("--ipc", default=None, help="comma-separated (default: 1,10)")
    ap.add_argument(
        "--preset", choices=list(PRESETS), default=None, help=f"default: zoo condense's on a CPU ({DEFAULT_PRESET})"
    )
    ap.add_argument("--sets", type=int, default=None, help="condensed sets per row (default: the preset's)")
    ap.add_argument("--nets", type=int, default=None, help="evaluation networks per set (default: the preset's)")
    ap.add_argument("--side-nets", type=int, default=1, help="networks per set for iteration 0 and hard labels")
    ap.add_argument("--no-whole", action="store_true", help="leave out the whole-data ceiling")
    ap.add_argument("--curve", action="store_true", help="also: DM's and DSA's top-1 along their iterations at ipc 1")
    ap.add_argument("--curve-only", action="store_true", help="only the curve")
    ap.add_argument("--curve-methods", default="dm,dsa", help="the curve's methods (default dm,dsa)")
    ap.add_argument("--curve-points", default=None, help="iteration counts to evaluate at (default: the preset's)")
    ap.add_argument("--cross", default="", help="cross-architecture columns: poolformer,convformer,sret,slak")
    ap.add_argument("--cross-runs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=None, help="keep every set under this folder")
    ap.add_argument("--json", default=None, help="write rows, curve and provenance here")
    ap.add_argument("--csv", default=None)
    ap.add_argument("--plot", default=None)
    ap.add_argument(
        "--speed",
        action="store_true",
        help="only: DM, DSA and DC per iteration vs the authors' loops, one process a side",
    )
    _add_speed_options(ap)
    ap.add_argument("--render", nargs="+", default=None, metavar="JSON", help="only: print the table of saved runs")


def _add_speed_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--speed-methods", default="dm,dsa,dc", help="--speed: the methods timed (dm, dsa, dc, mtt)")
    ap.add_argument("--speed-threads", default="1,2", help="--speed: torch threads of each row (default 1,2)")
    ap.add_argument("--rounds", type=int, default=3, help="--speed: rounds of one process per side (default 3)")
    ap.add_argument("--speed-iterations", type=int, default=2, help="--speed: timed iterations a process (2)")


def add_speed_arguments(ap: argparse.ArgumentParser) -> None:
    """``zoo bench condense-speed``: DM, DSA and DC (and MTT) per iteration against the authors' loops."""
    ap.add_argument("--data", default="digits", help="a data name (mnist, ..., or generated: CIFAR-shaped noise)")
    add_data_path_argument(ap)
    ap.add_argument("--ipc", default=None, help="comma-separated (default: 1,10)")
    ap.add_argument("--json", default=None, help="write the rows and provenance here")
    _add_speed_options(ap)


def _render(args: argparse.Namespace) -> int:
    docs = [json.loads(Path(f).read_text()) for f in args.render]
    speeds = [d for d in docs if "speed" in d]
    if speeds:
        print(render_speed(speeds))
    scripts = [d for d in docs if "scripts" in d]
    if scripts:
        print(render_scripts(scripts))
    docs = [d for d in docs if "speed" not in d and "scripts" not in d]
    if docs:
        print(render(docs))
    if args.plot:
        plot([r for d in docs for r in d["rows"]], Path(args.plot), [q for d in docs for q in d.get("curve", [])])
    return 0


def run_speed(args: argparse.Namespace) -> int:
    """The speed rows (:func:`zoo.bench.condense_speed.speed`), and their JSON file with ``--json``."""
    rows = speed(
        args.data,
        args.data_path,
        tuple(int(i) for i in (args.ipc or "1,10").split(",")),
        tuple(args.speed_methods.split(",")),
        args.rounds,
        tuple(int(t) for t in args.speed_threads.split(",")),
        args.speed_iterations,
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        prov = {**provenance(), "threads": args.speed_threads}  # each row's own count; the run's range here
        Path(args.json).write_text(json.dumps({"provenance": prov, "speed": rows}, indent=2) + "\n")
    return 0


def _saver(args: argparse.Namespace, info: dict, preset: str) -> Callable[..., None]:
    def save(rows_so_far: list[dict], points_so_far: list[dict] = ()) -> None:
        if args.json:  # after every row: a long run keeps what it measured
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            doc = {"provenance": info, "preset": preset, "data": args.data, "rows": rows_so_far,
                   "curve": list(points_so_far)}  # fmt: skip
            Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")

    return save


def _protocol(args: argparse.Namespace, cross: list[str]) -> int:
    """The protocol's rows and curve, saved after every row; the CSV and the plot at the end."""
    preset = args.preset or DEFAULT_PRESET
    info = provenance()
    print("  ".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    rows, points = [], []
    save = _saver(args, info, preset)
    if not args.curve_only:
        rows = run_protocol(
            args.data, args.methods.split(","), [int(i) for i in (args.ipc or "1,10").split(",")], preset, args.sets, args.nets,
            cross, args.cross_runs, args.seed, Path(args.out) if args.out else None, args.data_path,
            whole=not args.no_whole, on_row=save, side_nets=args.side_nets,
        )  # fmt: skip
        print(markdown(rows, cross))
    if args.curve or args.curve_only:
        at = tuple(int(i) for i in args.curve_points.split(",")) if args.curve_points else None
        points = curve(args.data, args.data_path, args.curve_methods.split(","), preset=preset,
                       nets=args.nets or PRESETS[preset].nets, seed=args.seed, points=at)  # fmt: skip
    save(rows, points)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
            w.writeheader()
            w.writerows(rows)
    if args.plot:
        plot(rows, Path(args.plot), points)
    return 0


def run(args: argparse.Namespace) -> int:
    """``--render``, ``--speed``, or the protocol's table (with ``--curve``)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.render:
        return _render(args)
    if args.speed:
        return run_speed(args)
    cross = [c for c in args.cross.split(",") if c]
    unknown = [c for c in cross if c not in CROSS]
    if unknown:
        print(f"unknown --cross {unknown}: choose from {', '.join(CROSS)}", file=sys.stderr)
        return 2
    return _protocol(args, cross)
