"""Seconds per iteration of the zoo's DM, DSA and MTT against the authors' own loops at equal settings.

The authors' side is :mod:`zoo.bench.reference.datasetcondensation` (``main_DM.py`` / ``main.py``: a loop over the
classes, one forward per class, ``DiffAugment`` with its per-image loops and a re-seed per draw) and
:mod:`zoo.bench.reference.mtt` (``distill.py``: ``ReparamModule``, ``DiffAugment`` per sample). Both sides get the
same network shape, real batches, loops and DSA strategy, and each its own synthetic images and optimisers. Rounds
alternate zoo, authors, zoo, ... so a busy machine slows both alike; the first round of each warms up. Peak memory
is measured in a fresh process per side (the resident set sampled every 5 ms over two iterations after a warm-up),
so one side's allocations never count for the other.

``zoo bench condense-speed`` (``--data mnist --data-path DIR``, or ``--data generated`` for CIFAR-shaped
random images; ``--ipc 1,10``; ``--speed-methods dm,dsa,mtt``; ``--rounds``; ``--threads``).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from ..condense import METHODS
from ..condense.augment import dsa_strategy
from ..condense.core import PeakMemory, RealData, _rss_mb, load_real
from ..condense.mtt import FlatModel, published_settings
from ..data.dsa import DSA
from .reference.condense import dc_iteration, dm_iteration
from .reference.convnet import ReferenceConvNet
from .reference.datasetcondensation import DiffAugment, ParamDiffAug
from .reference.mtt import ReparamModule, distill_iteration

__all__ = ["generated_data", "measure", "render_speed", "speed"]

SPEED_METHODS = ("dm", "dsa", "mtt")


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


def _time(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(method: str, real: RealData, ipc: int, rounds: int = 10, batch_real: int = 256, outer: int = 2,
            inner: int = 5, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Interleaved timings of one method: min and median seconds per iteration of each side, and their ratios."""
    zoo, authors = sides(method, real, ipc, batch_real, outer, inner, seed)
    times: dict[str, list[float]] = {"zoo": [], "authors": []}
    for r in range(rounds + 1):  # round 0 warms up
        for key, fn in (("zoo", zoo), ("authors", authors)) if r % 2 == 0 else (("authors", authors), ("zoo", zoo)):
            t = _time(fn)
            if r:
                times[key].append(t)
    row = {"method": method, "ipc": ipc, "size": real.shape[-1], "rounds": rounds}
    for key, ts in times.items():
        row[f"{key}_min"], row[f"{key}_median"] = min(ts), statistics.median(ts)
    row["speedup_min"] = row["authors_min"] / row["zoo_min"]
    row["speedup_median"] = row["authors_median"] / row["zoo_median"]
    return row


def _memory_child(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    real = _real(args.data, args.data_path)
    zoo, authors = sides(args.method, real, args.ipc, args.batch_real, 2, 5, args.seed)
    fn = zoo if args.side == "zoo" else authors
    fn()  # warm-up: allocator pools and lazy initialisation
    before = _rss_mb()
    with PeakMemory() as peak:
        for _ in range(2):
            fn()
    print(json.dumps({"peak_mb": peak.peak, "before_mb": before}))
    return 0


def peak_memory(method: str, data: str, path: str | None, ipc: int, side: str, threads: int, batch_real: int,
                seed: int) -> float:  # fmt: skip
    """Peak resident memory (MB, sampled every 5 ms) during two of ``side``'s iterations after a warm-up, in a fresh
    process: the data, the state and the iterations' transient memory, nothing of the other side."""
    cmd = [sys.executable, "-m", "zoo.bench.condense_speed", "--memory-child", "--method", method, "--data", data,
           "--ipc", str(ipc), "--side", side, "--threads", str(threads), "--batch-real", str(batch_real),
           "--seed", str(seed)]  # fmt: skip
    if path:
        cmd += ["--data-path", path]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"])


def speed(data: str = "mnist", path: str | None = None, ipcs: tuple[int, ...] = (10,),
          methods: tuple[str, ...] = SPEED_METHODS, rounds: int = 10, threads: int = 2, batch_real: int = 256,
          seed: int = 0, memory: bool = True, log=print) -> list[dict[str, Any]]:  # fmt: skip
    """Every (method, ipc) measured side by side; one printed line per row, the rows returned."""
    torch.set_num_threads(threads)
    real = _real(data, path)
    log(f"{data}: {tuple(real.shape)} images, {real.num_classes} classes; {threads} threads, {rounds} interleaved "
        f"rounds (+1 warm-up), batch_real {batch_real}; s/iteration min / median")  # fmt: skip
    rows = []
    for ipc in ipcs:
        for method in methods:
            row = {"data": data, **measure(method, real, ipc, rounds, batch_real, seed=seed)}
            if memory:
                for side in ("zoo", "authors"):
                    row[f"{side}_peak_mb"] = peak_memory(method, data, path, ipc, side, threads, batch_real, seed)
            rows.append(row)
            mem = (
                f"; peak RSS zoo {row['zoo_peak_mb']:.0f} MB, authors {row['authors_peak_mb']:.0f} MB" if memory else ""
            )
            log(f"{method:4s} ipc {ipc:3d} {row['size']}px: zoo {row['zoo_min']:.3f} / {row['zoo_median']:.3f}  "
                f"authors {row['authors_min']:.3f} / {row['authors_median']:.3f}  "
                f"speed-up {row['speedup_min']:.2f}x / {row['speedup_median']:.2f}x{mem}")  # fmt: skip
    return rows


def render_speed(docs: list[dict]) -> str:
    """Markdown of saved ``--speed --json`` runs: one table, every run's provenance line under it."""
    out = [
        "| data | method | ipc | px | zoo s/it (min / median) | authors s/it (min / median) | speed-up (min / median) "
        "| peak RSS zoo / authors (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for d in docs:
        for r in d["speed"]:
            mem = f"{r['zoo_peak_mb']:.0f} / {r['authors_peak_mb']:.0f}" if "zoo_peak_mb" in r else "-"
            out.append(f"| {r['data']} | {r['method']} | {r['ipc']} | {r['size']} | {r['zoo_min']:.2f} / "
                       f"{r['zoo_median']:.2f} | {r['authors_min']:.2f} / {r['authors_median']:.2f} | "
                       f"{r['speedup_min']:.2f}x / {r['speedup_median']:.2f}x | {mem} |")  # fmt: skip
    out.append("")
    for d in docs:
        v = d["provenance"]
        rounds = sorted({r["rounds"] for r in d["speed"]})
        out.append(f"- {', '.join(sorted({r['data'] for r in d['speed']}))}: {v['date']}, commit {v['commit']}, "
                   f"{v['cpu']}, {v['threads']} thread(s), torch {v['torch']}, {'/'.join(map(str, rounds))} "
                   f"interleaved rounds, load {v.get('load', 'not recorded')}")  # fmt: skip
    return "\n".join(out)


def _child_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m zoo.bench.condense_speed")
    ap.add_argument("--memory-child", action="store_true")
    ap.add_argument("--method", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--data-path", default=None)
    ap.add_argument("--ipc", type=int, required=True)
    ap.add_argument("--side", choices=["zoo", "authors"], required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-real", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    return ap


if __name__ == "__main__":  # the memory measurement's child process
    sys.exit(_memory_child(_child_parser().parse_args()))
