"""timm's own ``benchmark.py``, unmodified, on the zoo's builds and timm's: the figures a timm user would get.

A maintainer's tool of the zoo's checkout (the script ships in timm's repository, not in its wheel: give its path
with ``--script`` or ``$ZOO_TIMM_SCRIPTS``)::

    python tools/timm_benchmark.py --script DIR/benchmark.py --models poolformer_s12 --batch-sizes 8,32 \\
        --bench train --threads 1 --rounds 3 [--iters 5,10] [--out results/train/timm_benchmark.json]

Each measurement is its own process, ``benchmark.py --model NAME --device DEVICE --bench BENCH -b BATCH
--results-file ...`` (with ``--amp``: ``--amp --amp-dtype bfloat16`` too) with ``OMP_NUM_THREADS`` set; the two
builds alternate (timm, zoo, then zoo, timm, ...). The zoo's build runs in a process that imported the zoo and
registered its builder in timm's registry under another name, ``zoo_NAME``; timm's process never imports the zoo.
The ratio of a round is zoo / timm samples per second of that round's pair; the table gives the median over the
rounds, each round's ratio, and the load average before the first run. ``--out`` merges the rows into a results
file with the run's provenance (the GPU's name too on a CUDA device).

Run as ``python tools/timm_benchmark.py --child BUILD SCRIPT ARGS...`` it is the child: BUILD ``timm`` runs the
script as is, ``zoo`` registers ``zoo_NAME`` for every model the zoo shares with timm first.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PREFIX = "zoo_"


def _register_zoo_builds() -> None:
    """``zoo_NAME`` in timm's registry for every name both register: the zoo's builder under another name."""
    import timm
    from timm.models import _registry as timm_registry

    import zoo
    from zoo.factory import timm_default_cfg
    from zoo.registry import get_entry

    module = types.ModuleType("zoo_benchmark_builds")
    module.default_cfgs = {}
    sys.modules[module.__name__] = module
    for name in sorted(set(zoo.list_models()) & set(timm.list_models())):

        def entry(pretrained: bool = False, _name: str = name, **kwargs):
            return zoo.create_model(_name, pretrained=pretrained, **kwargs)

        entry.__name__ = entry.__qualname__ = PREFIX + name
        entry.__module__ = module.__name__
        module.default_cfgs[PREFIX + name] = timm_default_cfg(get_entry(name))
        timm_registry.register_model(entry)


def child(build: str, script: str, args: list[str]) -> None:
    if build == "zoo":
        _register_zoo_builds()
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


def _run(build: str, script: str, model: str, batch: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        name = PREFIX + model if build == "zoo" else model
        cmd = [
            sys.executable, __file__, "--child", build, script, "--model", name, "--device", args.device,
            "--bench", args.bench, "-b", str(batch), "--num-warm-iter", str(args.iters[0]),
            "--num-bench-iter", str(args.iters[1]),
            "--no-retry", "--results-file", str(out), "--results-format", "json",
            *(["--amp", "--amp-dtype", "bfloat16"] if args.amp else []),
        ]  # fmt: skip
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": path}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            raise SystemExit(f"{build} {model} batch {batch} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads(out.read_text())
        result = result[0] if isinstance(result, list) else result
        if "error" in result:
            raise SystemExit(f"{build} {model} batch {batch}: benchmark.py reported {result['error']}")
        return result


def measure(args, keep=lambda row: None) -> list[dict]:
    """Every model at every batch size; ``keep(row)`` as soon as a row is measured (a run stopped later keeps it)."""
    rows = []
    key = f"{args.bench}_samples_per_sec"
    for model in args.models.split(","):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            load = os.getloadavg()[0]
            rates: dict[str, list[float]] = {"timm": [], "zoo": []}
            for r in range(args.rounds):
                for build in ("timm", "zoo") if r % 2 == 0 else ("zoo", "timm"):
                    result = _run(build, args.script, model, batch, args)
                    rates[build].append(result[key])
            ratios = [z / t for z, t in zip(rates["zoo"], rates["timm"])]
            row = dict(model=model, batch_size=batch, bench=args.bench, threads=args.threads, device=args.device,
                       **({"amp": "bf16"} if args.amp else {}),
                       timm=statistics.median(rates["timm"]), zoo=statistics.median(rates["zoo"]),
                       ratio=statistics.median(ratios), ratios=[round(x, 3) for x in ratios],
                       rates=rates, load=round(load, 2))  # fmt: skip
            print(f"{model:16s} batch {batch:3d} {args.bench} {args.device} {'bf16 ' * args.amp}{args.threads} thr: "
                  f"timm {row['timm']:.2f} zoo {row['zoo']:.2f} samples/s  zoo/timm {row['ratio']:.2f}x  "
                  f"rounds {row['ratios']}  load {row['load']}", flush=True)  # fmt: skip
            rows.append(row)
            keep(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1], argv[2], argv[3:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    scripts = os.environ.get("ZOO_TIMM_SCRIPTS")
    p.add_argument("--script", default=str(Path(scripts) / "benchmark.py") if scripts else None,
                   help="timm's benchmark.py (default: $ZOO_TIMM_SCRIPTS/benchmark.py)")  # fmt: skip
    p.add_argument("--models", default="poolformer_s12,convformer_s18,caformer_s18")
    p.add_argument("--batch-sizes", default="8,32")
    p.add_argument("--bench", default="train", choices=("train", "infer"))
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run (default 1)")
    p.add_argument("--device", default="cpu", help="benchmark.py's --device: cpu or cuda (default cpu)")
    p.add_argument("--amp", action="store_true", help="benchmark.py's --amp --amp-dtype bfloat16 for both builds")
    p.add_argument("--rounds", type=int, default=3, help="pairs of runs (the builds' order alternates)")
    p.add_argument("--iters", type=lambda s: tuple(int(x) for x in s.split(",")), default=(5, 10),
                   help="benchmark.py's warm-up and timed iterations (default 5,10; benchmark.py's own are 10,40). "
                        "The zoo's first steps are slower than its later ones (allocator and kernel caches filling): "
                        "fewer than 5 warm-up steps time part of that")  # fmt: skip
    p.add_argument("--out", type=Path, help="merge the rows into this results file")
    args = p.parse_args(argv)
    if not args.script or not Path(args.script).is_file():
        p.error("timm's benchmark.py not found: give --script PATH or set ZOO_TIMM_SCRIPTS (it ships in timm's "
                "repository, https://github.com/huggingface/pytorch-image-models, not in its wheel)")  # fmt: skip
    sys.path.insert(0, str(REPO))
    import torch

    from zoo.bench.harness import merge_run, provenance

    prov = provenance(f"{os.uname().machine}, {args.threads} threads", args.device)  # date, commit, load, GPU
    cpu = f"{prov.get('cpu', 'CPU')} ({torch.backends.cpu.get_cpu_capability()})"  # the cores: provenance's own
    prov = {**prov, "cpu": cpu, "threads": str(args.threads)}
    command = "python tools/timm_benchmark.py " + " ".join(argv)
    # each row merged as it is measured: rows of the same model, batch, bench, threads, device and precision
    # replaced, the others kept, so that a run stopped part-way (a time limit, Ctrl-C) keeps what it measured
    measure(
        args, keep=(lambda row: merge_run(args.out, [row], prov, command, _key)) if args.out else (lambda row: None)
    )


def _key(r: dict) -> tuple:
    return r["model"], r["batch_size"], r["bench"], r["threads"], r.get("device", "cpu"), r.get("amp")


if __name__ == "__main__":
    main()
