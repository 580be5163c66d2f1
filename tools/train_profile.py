"""Where one training step's time goes, for the zoo's build and timm's: matrix products, attention, the rest.

A maintainer's tool of the zoo's checkout, beside ``tools/timm_benchmark.py``: that one gives the ratio a timm user
gets; this one says what bounds it. The step is ``benchmark.py``'s (``--bench train``): forward, cross-entropy,
backward and ``timm.optim.create_optimizer_v2(model, "sgd", lr=1e-4)``'s step, on a random batch. Each build runs in
its own process (timm's never imports the zoo) with ``OMP_NUM_THREADS`` set; after warm-up steps, ``torch.profiler``
records some steps and every operator's own time (not its children's) is put in one of three classes:

- ``gemm``: the matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``; the zoo's ``zoo_vision::matmul``, its
  products with a fused activation or gate, ``matmul_gelu``, ``matmul_star_relu``, ``matmul_times`` and their
  backward, and ``weight_grad``, whose element-wise epilogues are a small part of their time; and the 1x1
  convolutions timm runs as ``_slow_conv2d_forward`` / ``_slow_conv2d_backward``, which are an im2col-free GEMM per
  image);
- ``attention``: scaled-dot-product attention, forward and backward: PyTorch's kernel on timm's build, the zoo's
  ``zoo_vision::attention`` and ``attention_backward`` on the zoo's;
- ``other``: everything else (convolutions other than 1x1, norms, activations, pooling, element-wise, optimizer).
  The stem's and the downsampling layers' dense convolutions are here too, though their multiply-adds are as fixed
  as the products' (a profile's operator names do not tell them from the depthwise ones): the ceiling is an upper
  bound.

Both builds do the same multiply-adds in their matrix products, at close to the core's peak; so ``timm step /
(zoo gemm + zoo attention)`` is the most the zoo's step could be ahead with all of its ``other`` time gone, and
``other needed`` is the zoo's ``other`` time that would reach a target ratio. The profiler adds a little time to each
operator; the step time given is the profiled one. ``tools/headline.py`` renders the file's table into
``results/train_throughput.md``::

    python tools/train_profile.py --models poolformer_s12,convformer_s18,caformer_s18 --batch-sizes 8 \\
        [--threads 1] [--target 1.3] [--out results/train/step_profile.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GEMM = {
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_slow_conv2d_forward",
    "aten::_slow_conv2d_backward",
}


def op_class(name: str) -> str:
    if name in GEMM or name.startswith("zoo_vision::matmul") or name == "zoo_vision::weight_grad":
        return "gemm"
    if "scaled_dot_product" in name or name.startswith("zoo_vision::attention"):
        return "attention"
    return "other"


def child(build: str, model_name: str, batch: int, warm: int, steps: int, out: str) -> None:
    """One build's profiled steps, written to ``out`` as ms per step by class."""
    import time

    import timm
    import timm.optim
    import torch
    from torch.profiler import ProfilerActivity, profile

    if build == "zoo":
        import zoo

        model = zoo.create_model(model_name)
    else:
        model = timm.create_model(model_name)
    model.train()
    optimizer = timm.optim.create_optimizer_v2(model, opt="sgd", lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(batch, 3, 224, 224)
    target = torch.empty(batch, dtype=torch.long).random_(1000)

    def step() -> None:
        optimizer.zero_grad()
        loss_fn(model(x), target).backward()
        optimizer.step()

    for _ in range(warm):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - start) / steps
    ms = {"gemm": 0.0, "attention": 0.0, "other": 0.0}
    for event in prof.key_averages():
        ms[op_class(event.key)] += event.self_cpu_time_total / 1000 / steps
    Path(out).write_text(json.dumps({"step_ms": wall * 1000, **ms}))


def _run(build: str, model: str, batch: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.json"
        cmd = [sys.executable, __file__, "--child", build, model, str(batch), str(args.warm), str(args.steps), str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            raise SystemExit(f"{build} {model} batch {batch} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


def row(model: str, batch: int, threads: int, timm: dict, zoo: dict, target: float) -> dict:
    """The two builds' split and what it bounds: the ceiling ratio, and the ``other`` time a target ratio needs."""
    floor = zoo["gemm"] + zoo["attention"]
    return dict(
        model=model, batch_size=batch, threads=threads, timm=timm, zoo=zoo,
        ratio=timm["step_ms"] / zoo["step_ms"], ceiling=timm["step_ms"] / floor, target=target,
        other_needed_ms=timm["step_ms"] / target - floor,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        build, model, batch, warm, steps, out = argv[1:7]
        return child(build, model, int(batch), int(warm), int(steps), out)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="poolformer_s12,convformer_s18,caformer_s18")
    p.add_argument("--batch-sizes", default="8")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of both builds (default 1)")
    p.add_argument(
        "--warm", type=int, default=5, help="steps before the profiled ones (default 5: the zoo's first few are slower)"
    )
    p.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    p.add_argument("--target", type=float, default=1.3, help="the zoo / timm ratio to size the rest against")
    p.add_argument("--out", type=Path, help="write the rows and the run's provenance to this results file")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from zoo.bench.harness import merge_run, provenance

    prov = {**provenance(f"{os.uname().machine}, {args.threads} threads"), "threads": str(args.threads)}
    rows = []
    for model in args.models.split(","):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            timm, zoo = _run("timm", model, batch, args), _run("zoo", model, batch, args)
            r = row(model, batch, args.threads, timm, zoo, args.target)
            rows.append(r)
            print(f"{model:16s} batch {batch:3d} {args.threads} thr: timm {timm['step_ms']:.0f} ms, zoo "
                  f"{zoo['step_ms']:.0f} ms (gemm {zoo['gemm']:.0f}, attention {zoo['attention']:.0f}, other "
                  f"{zoo['other']:.0f}): zoo / timm {r['ratio']:.2f}x, ceiling {r['ceiling']:.2f}x", flush=True)  # fmt: skip
    if args.out:  # rows of the same model, batch and threads replaced; the others keep their own run's lines
        command = "python tools/train_profile.py " + " ".join(argv)
        merge_run(args.out, rows, prov, command, lambda r: (r["model"], r["batch_size"], r["threads"]))


if __name__ == "__main__":
    main()
