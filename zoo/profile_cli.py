"""``zoo profile``: :func:`zoo.profile.profile` from the command line, as text (dense and non-zero figures labelled)
or JSON.

``add_arguments(parser)`` declares the options and ``run(args)`` does the work; ``zoo/cli.py`` mounts the pair.
"""

import argparse
import json

from .layers.args import add_device
from .profile import profile

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``zoo profile``'s arguments."""
    p.add_argument("model")
    p.add_argument("--input-size", default=None, help="C,H,W (default: the model's cfg)")
    p.add_argument("--batch-size", type=int, default=1, help="batch for MACs and memory (default 1)")
    p.add_argument("--latency", action="store_true", help="time the forward pass")
    p.add_argument("--batch-sizes", default=None, help="comma-separated batch sizes to time (implies --latency)")
    p.add_argument("--runs", type=int, default=10, help="timed passes; the median is reported")
    p.add_argument("--warmup", type=int, default=2)
    add_device(p)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="time torch.compile(model)")
    p.add_argument("--memory", action="store_true", help="peak memory of one forward")
    p.add_argument("--breakdown", action="store_true", help="fvcore's per-module table")
    p.add_argument("--no-cross-check", action="store_true", help="skip the FlopCounterMode cross-check")
    p.add_argument("--json", action="store_true")


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def run(args: argparse.Namespace) -> int:
    """Profile the model and print the result."""
    size = tuple(int(v) for v in args.input_size.split(",")) if args.input_size else None
    batch_sizes = [int(v) for v in args.batch_sizes.split(",")] if args.batch_sizes else None
    result = profile(
        args.model,
        input_size=size,
        batch_size=args.batch_size,
        device=args.device,
        latency=args.latency or bool(batch_sizes),
        batch_sizes=batch_sizes,
        runs=args.runs,
        warmup=args.warmup,
        channels_last=args.channels_last,
        compile=args.compile,
        memory=args.memory,
        breakdown=args.breakdown,
        cross_check=not args.no_cross_check,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"{result.name} @ {result.input_size} on {result.device}")
    print(
        f"  params (dense):    {result.params:,} ({result.trainable_params:,} trainable, "
        f"{result.frozen_params:,} frozen)   [every weight, zeros included]"
    )
    print(
        f"  params (non-zero): {result.nonzero_params:,} ({_share(result.nonzero_params, result.params)} of dense)"
        f"   [weights that are not exactly zero]"
    )
    print(
        f"  MACs (dense):      {result.macs / 1e9:.3f} G   FLOPs (= 2 x MACs): {result.flops / 1e9:.3f} G   "
        f"[fvcore + zoo handles]"
    )
    if result.nonzero_macs is not None:
        print(
            f"  MACs (non-zero):   {result.nonzero_macs / 1e9:.3f} G ({_share(result.nonzero_macs, result.macs)} of "
            f"dense)   [each conv/linear layer's MACs scaled by its weight density]"
        )
    print(f"  left uncounted: {', '.join(sorted(result.uncounted_ops)) or 'nothing'}")
    if result.lm:  # language models: per-token costs
        lm = result.lm
        print(
            f"  per token: prefill {lm['macs_per_token_prefill'] / 1e6:.1f} M MACs (T={lm['seq_len']}), decode "
            f"{lm['macs_per_token_decode'] / 1e6:.1f} M MACs after {lm['seq_len']} cached; KV cache "
            f"{lm['kv_cache_bytes_per_token']:,} B/token"
        )
    if result.flop_counter_check:
        c = result.flop_counter_check
        rest = result.macs - c["fvcore_macs"]
        print(
            f"  cross-check of the products alone ({c['ops']}): this count {c['fvcore_macs'] / 1e9:.3f} G, "
            f"FlopCounterMode {c['flop_counter_macs'] / 1e9:.3f} G ({c['rel_diff']:.3%} apart); the MACs above add "
            f"{rest / 1e9:.3f} G of the other ops (norms, pooling, activations), which FlopCounterMode does not count"
        )
    for t in result.latency:
        print(f"  batch {t['batch_size']}: {t['median_ms']:.2f} ms median of {t['runs']}, {t['throughput']:.1f} img/s")
    if result.peak_memory:
        print(f"  peak memory: {result.peak_memory['bytes'] / 2**20:.1f} MiB ({result.peak_memory['method']})")
    if result.module_table:
        print(result.module_table)
    print(f"  tools: {', '.join(f'{k} {v}' for k, v in result.tools.items())}")
    return 0
