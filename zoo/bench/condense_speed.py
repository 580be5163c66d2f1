"""Seconds per iteration of the zoo's DM, DSA, DC and MTT against the authors' own loops at equal settings.

The authors' side is :mod:`zoo.bench.reference.datasetcondensation` (``main_DM.py`` / ``main.py``: a loop over the
classes, one forward per class, fresh autograd buffers per class, ``DiffAugment`` with its per-image loops and a
re-seed per draw) and :mod:`zoo.bench.reference.mtt` (``distill.py``: ``ReparamModule``, ``DiffAugment`` per sample).
Both sides get the same network shape, real batches, DSA strategy and the authors' loop counts for the ipc
(``get_loops``: DC and DSA run 1/1 at ipc 1, 10/50 at ipc 10), each its own synthetic images and optimisers, and the
zoo runs as a run of the method's default length does (DM's real side compiled; freed memory kept in the heap,
as ``zoo condense`` keeps it: :func:`~zoo.platform.allocator.keep_freed_memory`). As the authors run their script,
each side runs in a process of its own: one per side and round, the zoo's first in even rounds and the authors'
first in odd ones, so a busy machine slows both alike; each process warms up with one iteration (compilation,
allocator pools), then times its iterations' wall and CPU seconds and samples its peak resident set every 20 ms.
The ratios are the authors' median over the zoo's, at each thread count.

``zoo bench condense-speed`` (``--data mnist --data-path DIR``, or ``--data generated`` for CIFAR-shaped
random images; ``--ipc 1,10``; ``--speed-methods dm,dsa,dc,mtt``; ``--speed-threads 1,2``; ``--rounds``;
``--speed-iterations``).
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from ..condense import METHODS
from ..condense.augment import dsa_strategy
from ..condense.core import PeakMemory, RealData, load_real
from ..condense.dc import default_loops
from ..condense.mtt import FlatModel, published_settings
from ..data.dsa import DSA
from ..platform.allocator import keep_freed_memory
from .reference.condense import dc_iteration, dm_iteration
from .reference.convnet import ReferenceConvNet
from .reference.datasetcondensation import DiffAugment, ParamDiffAug
from .reference.mtt import ReparamModule, distill_iteration

__all__ = ["generated_data", "measure", "render_scripts", "render_speed", "speed"]

SPEED_METHODS = ("dm", "dsa", "dc", "mtt")


def generated_data(num_classes: int = 10, per_class: int = 300, channels: int = 3, size: int = 32, seed: int = 0):
    """CIFAR-shaped random images (normalised scale), ``per_class`` of each class: for timing, not learning."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(num_classes * per_class, channels, size, size, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return RealData(images, labels, [str(c) for c in range(num_classes)], {"name": "generated"}, {})


def _real(data: str, path: str | None) -> RealData:
    if data == "generated":
        return generated_data()
    return load_real(data, path=path, image_size=32 if data not in ("mnist", "fashion_mnist") else 28)


def _strategy(real: RealData) -> str:
    return dsa_strategy(real)


class _Trajectory:
    """A stand-in expert buffer: one random trajectory (timing does not depend on the values)."""

    def __init__(self, size: int, epochs: int, generator: torch.Generator):
        w = torch.randn(size, generator=generator) * 0.05
        self.epochs = [w + 0.01 * e * torch.randn(size, generator=generator) for e in range(epochs + 1)]

    def rows(self, _expert: int, epochs: list[int]) -> list[torch.Tensor]:
        return [self.epochs[e] for e in epochs]


def _mtt_options(real: RealData, ipc: int) -> dict[str, Any]:
    settings, _ = published_settings(str(real.source.get("name", "")), ipc)
    return {**METHODS["mtt"].defaults, **settings}


def sides(method: str, real: RealData, ipc: int, batch_real: int, outer: int, inner: int, seed: int):
    """``(zoo_step, authors_step)``: two callables that each run one iteration of ``method`` on their own state."""
    dev = torch.device("cpu")
    strategy = _strategy(real)
    size, channels, k = real.shape[-1], real.shape[0], real.num_classes
    g = torch.Generator().manual_seed(seed + 1)
    if method == "dm":
        zoo = METHODS["dm"](real, ipc, {"batch_real": batch_real, "dsa_strategy": strategy}, seed, dev)
        zoo.setup()
        syn = zoo.images.detach().clone().requires_grad_(True)
        opt = torch.optim.SGD([syn], lr=1.0, momentum=0.5)
        dsa = DSA(strategy)
        return (lambda: zoo.step(0)), (
            lambda: dm_iteration(real.images, real.by_class, syn, opt, ipc, batch_real, dsa, g, channels, size)
        )
    if method in ("dc", "dsa"):
        opts = {"batch_real": batch_real, "outer_loop": outer, "inner_loop": inner}
        if method == "dsa":
            opts["dsa_strategy"] = strategy
        zoo = METHODS[method](real, ipc, opts, seed, dev)
        zoo.setup()
        syn = zoo.images.detach().clone().requires_grad_(True)
        opt = torch.optim.SGD([syn], lr=zoo.options["lr_img"], momentum=0.5)
        dsa = DSA(strategy) if method == "dsa" else None
        labels = zoo.labels.clone()
        return (lambda: zoo.step(0)), (
            lambda: dc_iteration(
                real.images, real.by_class, syn, labels, opt, ipc, batch_real, outer, inner, dsa, g, channels, size
            )  # fmt: skip
        )
    if method == "mtt":
        o = _mtt_options(real, ipc)
        zoo = METHODS["mtt"](real, ipc, {}, seed, dev)
        zoo.images, zoo.labels = (t.detach().clone() for t in zoo.init_from_real())
        zoo.images.requires_grad_(True)
        zoo.dsa = DSA(o["dsa_strategy"] or strategy) if o["dsa"] else None
        zoo.student = FlatModel(zoo.network())
        zoo.buffer = _Trajectory(zoo.student.size, int(o["max_start_epoch"]) + int(o["expert_epochs"]), g)
        zoo.syn_lr = torch.tensor(float(o["lr_teacher"])).requires_grad_(True)
        zoo.make_optimizers()
        ref_net = ReparamModule(ReferenceConvNet(channels, k, im_size=(size, size)))
        syn = zoo.images.detach().clone().requires_grad_(True)
        syn_lr = torch.tensor(float(o["lr_teacher"])).requires_grad_(True)
        opt_img = torch.optim.SGD([syn], lr=o["lr_img"], momentum=0.5)
        opt_lr = torch.optim.SGD([syn_lr], lr=o["lr_lr"], momentum=0.5)
        shapes = [p.shape for p in ReferenceConvNet(channels, k, im_size=(size, size)).parameters()]
        param = ParamDiffAug()
        dsa_strategy = o["dsa_strategy"] or strategy

        def authors():
            e, n = int(torch.randint(int(o["max_start_epoch"]), (1,), generator=g)), int(o["expert_epochs"])
            trajectory = {t: _split(f, shapes) for t, f in zip((e, e + n), zoo.buffer.rows(0, [e, e + n]))}
            aug = (lambda x: DiffAugment(x, dsa_strategy, param=param)) if o["dsa"] else None
            return distill_iteration(ref_net, trajectory, e, syn, zoo.labels, syn_lr, opt_img, opt_lr,
                                     int(o["syn_steps"]), int(o["expert_epochs"]), int(o["batch_syn"]) or len(syn),
                                     augment=aug)  # fmt: skip

        return (lambda: zoo.step(0)), authors
    raise ValueError(f"unknown method {method!r}: choose from {', '.join(SPEED_METHODS)}")


def _split(flat: torch.Tensor, shapes) -> list[torch.Tensor]:
    out, i = [], 0
    for s in shapes:
        n = s.numel()
        out.append(flat[i : i + n].view(s))
        i += n
    return out


def _child(args: argparse.Namespace) -> int:
    """One side in its own process: a warm-up iteration (compilation, allocator pools, lazy initialisation), then
    ``--iterations`` timed ones: wall and CPU seconds of each, and the peak resident memory during them."""
    torch.set_num_threads(args.threads)
    with keep_freed_memory() if args.side == "zoo" else contextlib.nullcontext():  # as zoo condense runs
        return _timed_side(args)


def _timed_side(args: argparse.Namespace) -> int:
    real = _real(args.data, args.data_path)
    outer, inner = default_loops(args.ipc)
    zoo, authors = sides(args.method, real, args.ipc, args.batch_real, outer, inner, args.seed)
    fn = zoo if args.side == "zoo" else authors
    fn()
    wall, cpu = [], []
    with PeakMemory() as peak:
        for _ in range(args.iterations):
            w, c = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": peak.peak, "size": real.shape[-1]}))
    return 0


def run_side(method: str, data: str, path: str | None, ipc: int, side: str, threads: int = 2,
             iterations: int = 2, batch_real: int = 256, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """``side``'s timed iterations in a fresh process (:func:`_child`): ``{"wall", "cpu", "peak_mb", "size"}``."""
    cmd = [sys.executable, "-c", _CHILD, "--method", method, "--data", data, "--ipc", str(ipc),
           "--side", side, "--threads", str(threads), "--iterations", str(iterations), "--batch-real",
           str(batch_real), "--seed", str(seed)]  # fmt: skip
    if path:
        cmd += ["--data-path", path]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"the {side} side of {method} (ipc {ipc}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(method: str, data: str, path: str | None, ipc: int, rounds: int = 3, iterations: int = 2,
            threads: int = 2, batch_real: int = 256, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """One row: ``rounds`` rounds of one fresh process per side (zoo first in even rounds, the authors' loop first
    in odd ones), each timing ``iterations`` iterations after a warm-up; min and median wall and CPU seconds per
    iteration of each side over every timed iteration, their ratios (authors / zoo), and each side's peak RSS."""
    got: dict[str, dict[str, list]] = {side: {"wall": [], "cpu": [], "peak_mb": []} for side in ("zoo", "authors")}
    size = None
    for r in range(rounds):
        for side in ("zoo", "authors") if r % 2 == 0 else ("authors", "zoo"):
            out = run_side(method, data, path, ipc, side, threads, iterations, batch_real, seed)
            size = out["size"]
            for key in ("wall", "cpu"):
                got[side][key] += out[key]
            got[side]["peak_mb"].append(out["peak_mb"])
    outer, inner = default_loops(ipc)
    row: dict[str, Any] = {"data": data, "method": method, "ipc": ipc, "size": size, "threads": threads,
                           "rounds": rounds, "iterations": iterations, "batch_real": batch_real}  # fmt: skip
    if method in ("dc", "dsa"):
        row["loops"] = [outer, inner]
    for side, t in got.items():
        for key in ("wall", "cpu"):
            row[f"{side}_{key}_min"], row[f"{side}_{key}_median"] = min(t[key]), statistics.median(t[key])
        row[f"{side}_peak_mb"] = max(t["peak_mb"])
    for key in ("wall", "cpu"):
        row[f"speedup_{key}"] = row[f"authors_{key}_median"] / row[f"zoo_{key}_median"]
    return row


def speed(data: str = "mnist", path: str | None = None, ipcs: tuple[int, ...] = (10,),
          methods: tuple[str, ...] = SPEED_METHODS, rounds: int = 3, threads: tuple[int, ...] = (1, 2),
          iterations: int = 2, batch_real: int = 256, seed: int = 0, log=print) -> list[dict[str, Any]]:  # fmt: skip
    """Every (threads, ipc, method) measured side by side; one printed line per row, the rows returned."""
    log(f"{data}: one process per side and round, {rounds} rounds x {iterations} timed iterations (+1 warm-up "
        f"each), batch_real {batch_real}; s/iteration, median wall / CPU")  # fmt: skip
    rows = []
    for t in threads:
        for ipc in ipcs:
            for method in methods:
                row = measure(method, data, path, ipc, rounds, iterations, t, batch_real, seed)
                rows.append(row)
                log(f"{method:4s} ipc {ipc:3d} {row['size']}px {t} thread(s): zoo {row['zoo_wall_median']:.2f} / "
                    f"{row['zoo_cpu_median']:.2f}  authors {row['authors_wall_median']:.2f} / "
                    f"{row['authors_cpu_median']:.2f}  speed-up {row['speedup_wall']:.2f}x / "
                    f"{row['speedup_cpu']:.2f}x; peak RSS zoo {row['zoo_peak_mb']:.0f} MB, authors "
                    f"{row['authors_peak_mb']:.0f} MB")  # fmt: skip
    return rows


def render_speed(docs: list[dict]) -> str:
    """Markdown of saved ``--speed --json`` runs: one table, every run's provenance line under it."""
    out = [
        "| data | method | ipc | px | threads | zoo s/it (wall / CPU) | authors s/it (wall / CPU) | speed-up (wall / "
        "CPU) | peak RSS zoo / authors (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d in docs:
        for r in d["speed"]:
            out.append(f"| {r['data']} | {r['method']} | {r['ipc']} | {r['size']} | {r['threads']} | "
                       f"{r['zoo_wall_median']:.2f} / {r['zoo_cpu_median']:.2f} | {r['authors_wall_median']:.2f} / "
                       f"{r['authors_cpu_median']:.2f} | {r['speedup_wall']:.2f}x / {r['speedup_cpu']:.2f}x | "
                       f"{r['zoo_peak_mb']:.0f} / {r['authors_peak_mb']:.0f} |")  # fmt: skip
    out.append("")
    for d in docs:
        v, rows = d["provenance"], d["speed"]
        shape = sorted({(r["rounds"], r["iterations"]) for r in rows})
        out.append(f"- {', '.join(sorted({r['data'] for r in rows}))}: {v['date']}, commit {v['commit']}, "
                   f"{v['cpu']}, torch {v['torch']}, {', '.join(f'{a} rounds x {b} iterations' for a, b in shape)} "
                   f"a side (one process each), load {v.get('load', 'not recorded')}")  # fmt: skip
    return "\n".join(out)


def _secs(x: float) -> str:
    """Seconds to two decimals, three below one second (a GPU's steps)."""
    return f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def render_scripts(docs: list[dict], column: str = "threads") -> str:
    """Markdown of the authors' own scripts timed beside ``zoo condense`` (``results/condense/speed_scripts*.json``,
    oldest first): one row per method, ipc and thread count (``column="device"``: per device, for runs on a GPU)
    from the latest file that has it, with its run, and those files' provenance under the table."""
    latest: dict[tuple, tuple[dict, dict]] = {}
    for d in docs:
        for r in d["scripts"]:
            latest[(r["method"], r["ipc"], r[column])] = (r, d)
    order = {"dm": 0, "dsa": 1, "dc": 2}
    out = [
        f"| method | ipc | {column} | authors' command | authors s/it (wall / CPU) | zoo s/it (wall / CPU) | zoo "
        "speed-up (wall / CPU) | run |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for key in sorted(latest, key=lambda k: (k[2], order.get(k[0], 9), k[1])):
        r, d = latest[key]
        v = d["provenance"]
        out.append(f"| {r['method'].upper()} | {r['ipc']} | {r[column]} | `{r['authors_command']}` | "
                   f"{_secs(r['authors_wall'])} / {_secs(r['authors_cpu'])} | "
                   f"{_secs(r['zoo_wall'])} / {_secs(r['zoo_cpu'])} | "
                   f"**{r['speedup_wall']:.2f}x / {r['speedup_cpu']:.2f}x** | {v['date']}, {v['commit']} |")  # fmt: skip
    out.append("")
    used = [d for d in docs if any(d is u for _, u in latest.values())]
    for d in used:
        v = d["provenance"]
        out.append(f"- {d['repository']}: {v['date']}, commit {v['commit']}, {v['cpu']}, torch {v['torch']}, "
                   f"load {v.get('load', 'not recorded')}; {d['method']}")  # fmt: skip
    return "\n".join(out)


def _child_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="zoo bench condense-speed (one side)", description="one side's timing process")
    ap.add_argument("--method", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--data-path", default=None)
    ap.add_argument("--ipc", type=int, required=True)
    ap.add_argument("--side", choices=["zoo", "authors"], required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-real", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def child_main(argv: list[str] | None = None) -> int:
    """One side's timing process (:func:`run_side` starts it as :data:`_CHILD`)."""
    return _child(_child_parser().parse_args(argv))


# the child's program: this module's child_main, imported (not run as __main__ of a package it already imported)
_CHILD = "import sys; from zoo.bench.condense_speed import child_main; sys.exit(child_main())"
