"""CPU benchmark of the zoo's SReT against a plain rendition of the authors' forward, on the same weights.

The peer is :mod:`zoo.reference.sret` (manual attention per group, the authors' permutation and reshaping
steps, the shared blocks applied from the authors' aliased state dict). Both run in fp32, eval, under
``torch.inference_mode``; the authors' token permutations come from the global RNG, seeded with 0 before every
pass, and the zoo's seeded permutations (seed 0) reproduce them, so the outputs are compared directly. Timing
rounds alternate between the two. Target: zoo >= 1.5x at batch 32.

    python -m zoo.bench_sret [--models sret_tiny,sret_small] [--batch-sizes 1,32] [--runs N]
    zoo bench --models sret_tiny,sret_small      # the same, through the zoo command
"""
import argparse
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

DEFAULT_MODELS = ("sret_tiny", "sret_small")
TARGET = {32: 1.5}


def _build(name: str):
    import zoo
    from zoo.weights import load_state_dict_checked
    from zoo.models.sret import checkpoint_filter_fn
    from zoo.reference.sret import make_authors_state_dict

    state_dict = make_authors_state_dict(name, seed=0)
    model = zoo.create_model(name)
    load_state_dict_checked(model, dict(state_dict), "the authors' layout", filter_fn=checkpoint_filter_fn)
    return state_dict, model.eval()


def run_one(name: str, batch_sizes: Sequence[int], runs: Optional[int], warmup: int) -> List[Dict]:
    from zoo.reference.sret import reference_forward

    state_dict, model = _build(name)
    size = model.pretrained_cfg["input_size"][-1]
    impls = {
        "authors": lambda x: (torch.manual_seed(0), reference_forward(name, state_dict, x))[1],
        "zoo": model,
    }
    rows = []
    for bs in batch_sizes:
        n = runs or max(3, round(12 / bs ** 0.5))
        x = torch.randn(bs, 3, size, size, generator=torch.Generator().manual_seed(bs))
        times: Dict[str, List[float]] = {k: [] for k in impls}
        with torch.inference_mode():
            for _ in range(warmup):
                for fn in impls.values():
                    fn(x)
            for i in tqdm(range(n), desc=f"{name} b{bs}", file=sys.stderr, leave=False):
                for key in (("authors", "zoo") if i % 2 == 0 else ("zoo", "authors")):
                    start = time.perf_counter()
                    impls[key](x)
                    times[key].append(time.perf_counter() - start)
            ref, out = impls["authors"](x), impls["zoo"](x)
        authors_ips = bs / statistics.median(times["authors"])
        zoo_ips = bs / statistics.median(times["zoo"])
        diff = (out - ref).abs().max().item()
        rows.append(dict(model=name, batch=bs, authors=authors_ips, zoo=zoo_ips, ratio=zoo_ips / authors_ips,
                         target=TARGET.get(bs, 1.0), max_abs_diff=diff, rel_diff=diff / ref.abs().max().item()))
    return rows


def format_rows(rows: Sequence[Dict]) -> str:
    lines = [f"{'model':<12}{'batch':>6}{'authors img/s':>15}{'zoo img/s':>11}{'zoo/authors':>13}{'target':>12}"
             f"{'max|d|':>10}{'rel':>10}"]
    for r in rows:
        mark = "ok" if r["ratio"] >= r["target"] else "MISS"
        lines.append(f"{r['model']:<12}{r['batch']:>6}{r['authors']:>15.1f}{r['zoo']:>11.1f}{r['ratio']:>12.2f}x"
                     f"{'>=' + format(r['target'], '.1f') + 'x ' + mark:>12}{r['max_abs_diff']:>10.2e}"
                     f"{r['rel_diff']:>10.2e}")
    return "\n".join(lines)


def run(models: Sequence[str], batch_sizes: Sequence[int], runs: Optional[int] = None, warmup: int = 2) -> int:
    print(f"SReT CPU benchmark: zoo vs a plain rendition of the authors' forward, same weights "
          f"(fp32, eval, torch {torch.__version__}, {torch.get_num_threads()} threads)", flush=True)
    rows = [row for name in models for row in run_one(name, batch_sizes, runs, warmup)]
    print(format_rows(rows))
    return 0 if all(r["rel_diff"] <= 1e-4 for r in rows) else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench_sret", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    return run(args.models.split(","), [int(b) for b in args.batch_sizes.split(",")], args.runs, args.warmup)


if __name__ == "__main__":
    sys.exit(main())
