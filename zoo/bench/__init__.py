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
``tools/headline.py``); without it a benchmark writes nothing. ``--json`` keeps every timed pass instead.
"""

import argparse

import torch

from . import condense, data, data_pruning, formats_report, kv_memory, peers, prune, quant_kernels, table
from . import train as train_bench
from .peers import DEPLOYED, PEERS, Peer
from .table import run_table

__all__ = ["BENCHMARKS", "DEPLOYED", "NAMES", "PEERS", "Peer", "add_arguments", "run", "run_table"]


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
        "training steps (forward, backward, optimizer) against timm / transformers; --e2e: train.py",
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
