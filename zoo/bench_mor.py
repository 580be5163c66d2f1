"""CPU throughput of Mixture-of-Recursions against vanilla and recursive baselines: prefill and decode tokens/s.

Models (SmolLM shapes, random weights, fp32, eval, ``torch.inference_mode``), for a size such as ``135m``:

* ``mor``: ``mor_<size>`` (middle_cycle, 3 recursions, expert-choice, recursion-wise KV cache);
* ``mor_kv_share``: the same with recursive KV sharing;
* ``recursive``: ``recursive_<size>`` (the same shared blocks, every token through every recursion);
* ``vanilla_same_params``: a dense stack with as many layers as the recursive model has unique blocks;
* ``vanilla_same_depth``: the dense base (``vanilla_<size>``).

Routing. Random routers do not behave like trained ones, so the routed models replay decisions drawn per token
at the paper's capacities (each token runs step 1 with probability 2/3 and step 2 with probability 1/3, nested),
passed as ``route_masks``: the computation a trained router at those capacities would cause under the zoo's
causal (per-token) inference rule. In a batch, a step runs when any row needs it (rows are padded to the
longest), so batch 8 gains less than batch 1.

Prefill: one forward of ``--prompt`` tokens that fills a fresh cache; decode: ``--new`` single-token steps after
it. Timings are medians over ``--runs`` rounds that alternate the models.

    python -m zoo.bench_mor [--size 135m] [--batch-sizes 1,8] [--prompt 128] [--new 32] [--runs 3] [--threads 1]
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

from zoo.bench_lm import randomize_


def _randomize(model, seed: int = 0):
    randomize_(model, seed)
    return model.eval()


def build_models(size: str, **overrides) -> Dict[str, torch.nn.Module]:
    import zoo
    mor = zoo.create_model(f"mor_{size}", **overrides)
    blocks = len(mor.model.layers)
    return {
        "mor": _randomize(mor),
        "mor_kv_share": _randomize(zoo.create_model(f"mor_{size}", kv_sharing=True, **overrides)),
        "recursive": _randomize(zoo.create_model(f"recursive_{size}", **overrides)),
        "vanilla_same_params": _randomize(zoo.create_model(f"vanilla_{size}", **{**overrides,
                                                                                 "num_hidden_layers": blocks})),
        "vanilla_same_depth": _randomize(zoo.create_model(f"vanilla_{size}", **overrides)),
    }


def sample_routes(batch: int, length: int, capacities: Sequence[float], gen: torch.Generator) -> List[torch.Tensor]:
    """Nested per-token masks: P(active at step r) = capacities[r] (each step keeps a fraction of the last)."""
    masks, active, prev = [], torch.ones(batch, length, dtype=torch.bool), 1.0
    for cap in capacities:
        keep = torch.rand(batch, length, generator=gen) < cap / prev
        active = active & keep
        masks.append(active)
        prev = cap
    return masks


def _timed(model, ids, routes, new_tokens: int):
    """(prefill seconds, decode seconds) of a prompt and ``new_tokens`` single-token steps."""
    B, T = ids.shape
    routed = getattr(model.config, "mor", None) is not None
    cache = model.new_cache(B, T + new_tokens)
    start = time.perf_counter()
    kwargs = {"route_masks": [m[:, :T] for m in routes]} if routed else {}
    logits = model(ids, past_key_values=cache, logits_to_keep=1, **kwargs).logits
    prefill = time.perf_counter() - start
    token = logits[:, -1].argmax(-1, keepdim=True)
    start = time.perf_counter()
    for t in range(new_tokens):
        kwargs = {"route_masks": [m[:, T + t:T + t + 1] for m in routes]} if routed else {}
        logits = model(token, past_key_values=cache, **kwargs).logits
        token = logits[:, -1].argmax(-1, keepdim=True)
    return prefill, time.perf_counter() - start


def run(size: str = "135m", batch_sizes: Sequence[int] = (1, 8), prompt: int = 128, new_tokens: int = 32,
        runs: int = 3, warmup: int = 1, **overrides) -> List[Dict]:
    models = build_models(size, **overrides)
    mor_cfg = models["mor"].config
    rows = []
    for bs in batch_sizes:
        gen = torch.Generator().manual_seed(bs)
        ids = torch.randint(0, mor_cfg.vocab_size, (bs, prompt), generator=gen)
        routes = sample_routes(bs, prompt + new_tokens, mor_cfg.capacities(), gen)
        times: Dict[str, List] = {k: [] for k in models}
        with torch.inference_mode():
            for _ in range(warmup):
                for m in models.values():
                    _timed(m, ids[:, :16], routes, 2)
            for i in tqdm(range(runs), desc=f"{size} b{bs}", file=sys.stderr, leave=False):
                order = list(models) if i % 2 == 0 else list(reversed(models))
                for key in order:
                    times[key].append(_timed(models[key], ids, routes, new_tokens))
        for key, model in models.items():
            pre = statistics.median(t[0] for t in times[key])
            dec = statistics.median(t[1] for t in times[key])
            rows.append(dict(size=size, model=key, batch=bs, applications=len(model.schedule),
                             unique_blocks=len(model.model.layers), params=model.num_params(),
                             prefill_tok_s=bs * prompt / pre, decode_tok_s=bs * new_tokens / dec))
    return rows


def _table(rows: List[Dict]) -> str:
    lines = [f"{'model':<22}{'batch':>6}{'apps':>6}{'blocks':>7}{'params':>13}{'prefill tok/s':>15}"
             f"{'decode tok/s':>14}{'prefill x':>11}{'decode x':>10}"]
    base = {(r["batch"]): r for r in rows if r["model"] == "vanilla_same_depth"}
    for r in rows:
        b = base[r["batch"]]
        lines.append(f"{r['model']:<22}{r['batch']:>6}{r['applications']:>6}{r['unique_blocks']:>7}"
                     f"{r['params']:>13,}{r['prefill_tok_s']:>15.1f}{r['decode_tok_s']:>14.1f}"
                     f"{r['prefill_tok_s'] / b['prefill_tok_s']:>11.2f}{r['decode_tok_s'] / b['decode_tok_s']:>10.2f}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="135m", choices=["135m", "360m", "1.7b"])
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--layers", type=int, default=None, help="dense base depth (reduce for a quicker run)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"num_hidden_layers": args.layers} if args.layers else {}
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    rows = run(args.size, batch_sizes, args.prompt, args.new, args.runs, **overrides)
    print(f"CPU fp32, torch {torch.__version__}, {torch.get_num_threads()} thread(s); prompt {args.prompt}, "
          f"{args.new} decode steps; ratios against vanilla_same_depth")
    print(_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
