"""Benchmarks: every family against its named peer, on the same weights, timed side by side in one run.

``zoo bench NAME`` runs one benchmark; :data:`BENCHMARKS` is their table, each row's options and body beside the
benchmark's own code (as :data:`zoo.cli.COMMANDS` is the ``zoo`` command's). One harness (:mod:`zoo.bench.harness`:
interleaved rounds, warm-up, medians, one run-count rule, one result type and table) and a table of peers per family
(:mod:`zoo.bench.peers`). The authors' code, rendered plainly for parity tests and as peers, lives in
:mod:`zoo.bench.reference`.

    zoo bench vision                           # poolformer_s12, convformer_s18 against timm
    zoo bench slak --models slak_tiny          # SLaK's inference form against the authors' formulation
    zoo bench sret --models sret_tiny,sret_small   # SReT against the authors' forward
    zoo bench lm --models mobilellm_125m       # prefill / decode against transformers' LlamaForCausalLM
    zoo bench mor --models mor_135m            # Mixture-of-Recursions against the vanilla stack
    zoo bench deployed                         # onnxruntime / torch.compile against eager (and timm's ONNX)
    zoo bench formats --models mobilellm_125m --formats fp32,bf16,int8,int4   # weight formats vs llama.cpp
    zoo bench train [--models convformer_s18] [--amp bf16 --channels-last --compile]   # training steps vs timm
    zoo bench data-pruning --data mnist --data-path DIR --models convnet_d3,quickstart   # InfoBatch vs full data

``--out FILE`` (``train``, ``deployed``, ``formats``, ``prune``) merges the run into a results file under the run's
provenance (the zoo's checkout keeps its own in ``results/`` and renders its pages' tables from them with
``tools/headline.py``); without it a benchmark writes nothing. ``--json`` keeps every timed pass instead. The old spellings still run: ``zoo bench --train ...`` is ``zoo bench train ...`` (:func:`legacy_argv`),
and every ``python -m zoo.bench.NAME`` is ``zoo bench NAME``.
"""

import argparse
import sys
import warnings
from collections.abc import Sequence

import torch

from ..registry import get_entry, list_models
from . import condense, data, data_pruning, formats_report, kv_memory, peers, prune, quant_kernels, table
from . import train as train_bench
from .peers import DEPLOYED, FAMILIES, PEERS, Peer
from .table import run_table

__all__ = ["BENCHMARKS", "DEPLOYED", "PEERS", "Peer", "add_arguments", "legacy_argv", "main", "run", "run_table"]

# `python -m zoo.bench.NAME` runs that module afresh after this package imported it for the table below: as intended
warnings.filterwarnings("ignore", message=r".*'zoo\.bench\.\w+' found in sys\.modules", category=RuntimeWarning)


def _family(family: str):
    return lambda parser: peers.add_arguments(parser, family)


# (name, help, add_arguments, run), in the order `zoo bench -h` lists them
BENCHMARKS = (
    (
        "vision",
        "MetaFormer against timm on the same weights: throughput and agreement",
        _family("metaformer"),
        peers.run,
    ),
    ("slak", "SLaK's inference form against the authors' three-branch formulation", _family("slak"), peers.run),
    ("sret", "SReT against a plain rendition of the authors' forward", _family("sret"), peers.run),
    ("lm", "MobileLLM prefill and decode against transformers' LlamaForCausalLM", _family("mobilellm"), peers.run),
    ("mor", "Mixture-of-Recursions against the vanilla stack of the same depth", _family("recursive"), peers.run),
    (
        "deployed",
        "the deployed forms against eager: onnxruntime, torch.compile, llama.cpp, the pte artefact",
        peers.add_deployed_arguments,
        peers.run,
    ),
    (
        "formats",
        "LM weight formats side by side: zoo eager / compiled, transformers, llama.cpp, perplexity",
        formats_report.add_arguments,
        formats_report.run,
    ),
    (
        "train",
        "training steps (forward, backward, AdamW) against timm / transformers; --e2e: train.py",
        train_bench.add_arguments,
        train_bench.run,
    ),
    (
        "data-pruning",
        "full-data training against InfoBatch and the static pruning baselines",
        data_pruning.add_arguments,
        data_pruning.run,
    ),
    (
        "table",
        "the model table: params, MACs, latency and top-1 of a family or of every model",
        table.add_arguments,
        table.run,
    ),  # fmt: skip
    ("prune", "dense against structurally pruned to half the MACs, batch 1 and 32", prune.add_arguments, prune.run),
    (
        "condense",
        "the dataset-distillation protocol: every method's condensed sets, accuracy against the published",
        condense.add_arguments,
        condense.run,
    ),
    (
        "condense-speed",
        "DM, DSA and MTT seconds per iteration against the authors' loops",
        condense.add_speed_arguments,
        condense.run_speed,
    ),
    ("loader", "images/s per loader worker: image folder against shards", data.add_arguments, data.run),
    (
        "kv-memory",
        "KV-cache memory of a long generation, full-length against windowed / capacity-sized",
        kv_memory.add_arguments,
        kv_memory.run,
    ),
    (
        "quant-kernels",
        "the weight-only int8 / int4 kernels of one decoded token, timed on this machine",
        quant_kernels.add_arguments,
        quant_kernels.run,
    ),
)
NAMES = tuple(name for name, *_ in BENCHMARKS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``zoo bench NAME``: one subcommand per benchmark, in the order of :data:`BENCHMARKS`."""
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, help_text, add, body in BENCHMARKS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(bench_run=body)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "threads", None) is not None:
        torch.set_num_threads(args.threads)
    return args.bench_run(args)


# the old flag modes of `zoo bench`, in the order the old command chose between them: (flag, benchmark, flag kept)
LEGACY_MODES = (
    ("--data-pruning", "data-pruning", False),
    ("--family", "table", True),
    ("--all", "table", True),
    ("--formats", "formats", True),
    ("--train", "train", False),
    ("--deployed", "deployed", False),
)
NO_RESULTS_FILE = "--out writes the --train, --deployed and --formats results files"


def _given(argv: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _value(argv: Sequence[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _peer_benchmark(argv: Sequence[str]) -> str:
    """The comparison an old ``zoo bench --models ...`` ran: the first model's family's (vision when unknown)."""
    first = (_value(argv, "--models") or "").split(",")[0].strip()
    family = get_entry(first).family if first in list_models() else "metaformer"
    return next((name for name, f in FAMILIES.items() if f == family), "vision")


def legacy_argv(argv: Sequence[str]) -> list[str]:
    """``zoo bench``'s old flag modes as today's subcommands: ``--train ...`` -> ``train ...``, ``--formats F ...`` ->
    ``formats --formats F ...``, ``--family F`` / ``--all`` -> ``table ...``, ``--data-pruning ...`` ->
    ``data-pruning ...``, ``--deployed ...`` -> ``deployed ...``, and no mode -> the family's comparison (``vision``,
    ``slak``, ``sret``, ``lm``, ``mor``, by the first of ``--models``). A command line that names a benchmark is
    returned as it is. ValueError for an old ``--out`` that no results file takes (said before any work)."""
    argv = list(argv)
    if not argv or argv[0] in NAMES or argv[0] in ("-h", "--help"):
        return argv or ["vision"]
    flag, name, kept = next(((f, n, k) for f, n, k in LEGACY_MODES if _given(argv, f)), (None, None, True))
    if _given(argv, "--out") and name in ("data-pruning", "table"):
        raise ValueError(f"{NO_RESULTS_FILE} (--data-pruning writes its own)")
    if _given(argv, "--out") and name is None:
        raise ValueError(f"{NO_RESULTS_FILE}; add one of them, or use --json")
    if name is None:
        return [_peer_benchmark(argv), *argv]
    return [name, *(a for a in argv if kept or a != flag)]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoo.bench``: ``zoo bench`` (its old flag modes too)."""
    typed = list(sys.argv[1:] if argv is None else argv)
    try:
        translated = legacy_argv(typed)
    except ValueError as e:
        print(f"zoo bench: error: {e}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m zoo.bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(translated)
    args.typed = typed
    return run(args)
