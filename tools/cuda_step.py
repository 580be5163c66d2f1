"""The training step on a CUDA device, the zoo's build and timm's: float32 and bf16 autocast, and where the time goes.

A maintainer's tool of the zoo's checkout, for a machine with a GPU::

    python tools/cuda_step.py [--models poolformer_s12,convformer_s18,caformer_s18] [--batch 64] \\
        [--out results/train/cuda_step.json]

``zoo bench train --device cuda`` gives the ratio, each side in its own process, as on the CPU. This tool answers the
next two questions in one process, which on a GPU costs no fairness (the CPU allocator policy that keeps the bench's
sides apart does not touch device memory): what bf16 autocast gains over float32 on each build, and which CUDA
kernels make the difference between the builds. The step is ``benchmark.py --bench train``'s: forward,
cross-entropy, backward, ``create_optimizer_v2(model, "sgd", lr=1e-4)``'s step, on one random batch. ``--tf32``
sets the float32 products: ``torch`` leaves PyTorch's defaults (TF32 in cuDNN's convolutions, float32 in cuBLAS's
matrix products: timm's 1x1 layers are convolutions, the zoo's are matrix products), ``on`` is what timm's
``benchmark.py`` and the zoo's ``train.py`` set (TF32 in both, cuDNN autotuning), ``off`` float32 in both. Each
precision times ``--rounds`` rounds of ``--steps`` steps per build, the builds alternating, each round one window
between two device synchronizations; a row gives the median step. Then ``torch.profiler`` records three float32
steps of each build and lists the kernels with the most device time per step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path


def _step_fn(model, x, y, amp: bool):
    import torch
    import torch.nn.functional as F
    from timm.optim import create_optimizer_v2

    opt = create_optimizer_v2(model, "sgd", lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def _time(steps: dict, rounds: int, n: int, warmup: int, cuda: bool) -> dict[str, float]:
    """Median seconds per step of each candidate, rounds alternating their order. A round times ``n`` steps as one
    window, the device synchronized at its two ends only, so that a step's launches overlap the previous step's work
    as in training (``zoo.bench.harness.time_interleaved`` times each call on its own)."""
    import time

    import torch

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(rounds):
        for label in list(steps) if r % 2 == 0 else list(steps)[::-1]:
            sync()
            t0 = time.perf_counter()
            for _ in range(n):
                steps[label]()
            sync()
            times[label].append((time.perf_counter() - t0) / n)
    return {k: statistics.median(v) for k, v in times.items()}


def _kernels(fn, cuda: bool, steps: int = 3, top: int = 12) -> list[dict]:
    """The kernels (CUDA; CPU operators without a GPU) with the most self time per step over ``steps`` steps."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            fn()
        if cuda:
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = e.self_device_time_total if cuda else e.self_cpu_time_total
        if t > 0 and (not cuda or e.device_type.name == "CUDA"):
            rows.append({"kernel": e.key[:110], "ms_per_step": t / 1e3 / steps, "calls_per_step": e.count / steps})
    rows.sort(key=lambda r: -r["ms_per_step"])
    total = sum(r["ms_per_step"] for r in rows)
    return [{"total_ms_per_step": round(total, 3)}] + [
        {**r, "ms_per_step": round(r["ms_per_step"], 3), "calls_per_step": round(r["calls_per_step"], 1)}
        for r in rows[:top]
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="poolformer_s12,convformer_s18,caformer_s18")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10, help="steps per round")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tf32", choices=("torch", "on", "off"), default="torch", help="float32 products (see above)")
    ap.add_argument("--out", type=Path, help="write the rows and kernels with the run's provenance (JSON)")
    a = ap.parse_args(argv)

    import torch

    from zoo.bench.harness import provenance, save_results
    from zoo.bench.vision import build_pair
    from zoo.train.run_setup import cuda_precision

    cuda = torch.device(a.device).type == "cuda"  # where the steps run, not whether the machine has a GPU
    if a.tf32 != "torch":
        cuda_precision(torch.device(a.device), a.tf32 == "on", deterministic=False)

    doc = {"provenance": provenance(device=a.device), "command": "python tools/cuda_step.py " + " ".join(
        sys.argv[1:] if argv is None else argv), "tf32": a.tf32, "rows": [], "kernels": {}}  # fmt: skip
    for name in a.models.split(","):
        peer, zoo_model = (m.to(a.device).train() for m in build_pair(name))
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(a.batch, 3, a.img_size, a.img_size, generator=gen).to(a.device)
        y = torch.randint(0, zoo_model.num_classes, (a.batch,), generator=gen).to(a.device)
        row = {"model": name, "batch": a.batch, "img_size": a.img_size}
        for amp in (False, True):
            fns = {"timm": _step_fn(peer, x, y, amp), "zoo": _step_fn(zoo_model, x, y, amp)}
            t = _time(fns, a.rounds, a.steps, warmup=5, cuda=cuda)
            tag = "bf16" if amp else "fp32"
            for side in fns:
                row[f"{side}_{tag}_img_s"] = round(a.batch / t[side], 1)
            row[f"zoo_over_timm_{tag}"] = round(t["timm"] / t["zoo"], 3)
            if not amp:
                doc["kernels"][name] = {side: _kernels(fn, cuda) for side, fn in fns.items()}
        for side in ("timm", "zoo"):
            row[f"{side}_bf16_over_fp32"] = round(row[f"{side}_bf16_img_s"] / row[f"{side}_fp32_img_s"], 3)
        print(
            f"{name:16s} batch {a.batch} {a.device}: fp32 timm {row['timm_fp32_img_s']} zoo {row['zoo_fp32_img_s']} "
            f"img/s ({row['zoo_over_timm_fp32']}x); bf16 timm {row['timm_bf16_img_s']} zoo {row['zoo_bf16_img_s']} "
            f"({row['zoo_over_timm_bf16']}x); bf16/fp32 timm {row['timm_bf16_over_fp32']}x "
            f"zoo {row['zoo_bf16_over_fp32']}x",
            flush=True,
        )
        doc["rows"].append(row)
        for side, ks in doc["kernels"][name].items():
            print(f"  {side} fp32 kernels: {ks[0]['total_ms_per_step']} ms/step device time; top:")
            for k in ks[1:9]:
                print(f"    {k['ms_per_step']:8.3f} ms {k['calls_per_step']:6.1f}x  {k['kernel'][:90]}")
        if a.out:
            save_results(a.out, doc)
        del peer, zoo_model
        if cuda:
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
