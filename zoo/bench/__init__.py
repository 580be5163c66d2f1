"""Benchmarks: every family against its named peer, on the same weights, timed side by side in one run.

One harness (:mod:`zoo.bench.harness`: interleaved rounds, warm-up, medians, one run-count rule, one result type
and table) and a table of peers per family (:data:`PEERS`), so that ``zoo bench --models NAME,...`` reaches every
comparison; ``zoo bench --family F`` / ``--all`` builds the model table instead (:mod:`zoo.bench.table`).
The authors' code, rendered plainly for parity tests and as peers, lives in :mod:`zoo.bench.reference`.

    zoo bench                                  # poolformer_s12, convformer_s18 against timm
    zoo bench --models slak_tiny               # SLaK's inference form against the authors' formulation
    zoo bench --models sret_tiny,sret_small    # SReT against the authors' forward
    zoo bench --models mobilellm_125m          # prefill / decode against transformers' LlamaForCausalLM
    zoo bench --models mor_135m                # Mixture-of-Recursions against the vanilla stack
    zoo bench --deployed                       # onnxruntime / torch.compile against eager (and timm's ONNX)
    zoo bench --models mobilellm_125m --formats fp32,bf16,int8,int4   # weight formats vs transformers, llama.cpp
    zoo bench --train [--models convformer_s18] [--amp bf16 --channels-last --compile]   # training steps vs timm
    zoo bench --data-pruning --data mnist --data-path DIR --models convnet_d3,quickstart   # InfoBatch vs full data

``--out results/NAME.json`` (``--train``, ``--deployed``, ``--formats``) merges the run into the results file the
pages' tables are generated from (:mod:`zoo.bench.headline`), under the run's provenance; ``--json`` keeps every
timed pass instead.
"""

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..layers.args import int_between
from ..registry import get_entry, list_models
from . import data_pruning, deployed, formats, formats_report, lm, mor, slak, sret, vision
from . import train as train_bench
from .harness import Row, check_results_file, command_line, environment, format_rows, print_header, write_json
from .table import run_table

__all__ = ["PEERS", "Peer", "add_arguments", "main", "run"]


@dataclass(frozen=True)
class Peer:
    """What a family is measured against, how, and what counts as agreement."""

    name: str
    title: str
    compare: Callable[..., list[Row]]  # (model name, args) -> rows
    default_models: Sequence[str]
    check: Callable[[Row], bool]  # the fidelity condition every row must meet
    notes: Callable[[Sequence[Row]], list[str]] = lambda rows: []


def _within(tolerance: float) -> Callable[[Row], bool]:
    return lambda row: row.rel_diff is None or row.rel_diff <= tolerance


def _vision(name: str, args) -> list[Row]:
    return vision.compare(name, args.batch_sizes or vision.DEFAULT_BATCH_SIZES, args.runs, args.warmup, args.img_size)


def _deployed_vision(name: str, args) -> list[Row]:
    return deployed.compare(
        name, args.batch_sizes or deployed.DEFAULT_BATCH_SIZES, args.runs, args.warmup, args.img_size
    )


def _deployed_lm(name: str, args) -> list[Row]:
    return deployed.compare_lm(name, args.runs or 5, max(args.warmup, 1), args.prompt_tokens, args.new_tokens)


def _slak(name: str, args) -> list[Row]:
    return slak.compare(name, args.batch_sizes or slak.DEFAULT_BATCH_SIZES, args.runs, args.warmup, args.impls)


def _sret(name: str, args) -> list[Row]:
    return sret.compare(name, args.batch_sizes or sret.DEFAULT_BATCH_SIZES, args.runs, args.warmup)


def _lm(name: str, args) -> list[Row]:
    return lm.compare(
        name,
        lm.DTYPES[args.dtype],
        args.runs or 5,
        max(args.warmup, 1),
        args.prefill_tokens,
        args.prompt_tokens,
        args.new_tokens,
    )


def _mor(name: str, args) -> list[Row]:
    overrides = {"num_hidden_layers": args.layers} if args.layers else {}
    return mor.compare(
        name,
        args.batch_sizes or mor.DEFAULT_BATCH_SIZES,
        args.runs or 3,
        args.warmup,
        args.prompt_tokens or 128,
        args.new_tokens or 32,
        **overrides,
    )


# family -> its peer; a family without an entry has no comparison yet (`zoo bench --family F` still profiles it)
PEERS: dict[str, Peer] = {
    "metaformer": Peer(
        "timm",
        "MetaFormer: zoo vs timm, same weights (fp32, eval, inference_mode)",
        _vision,
        vision.DEFAULT_MODELS,
        _within(vision.TOLERANCE),
        vision.notes,
    ),
    "slak": Peer(
        "authors",
        "SLaK: zoo inference form vs the authors' three-branch formulation, same weights",
        _slak,
        slak.DEFAULT_MODELS,
        _within(slak.TOLERANCE),
    ),
    "sret": Peer(
        "authors",
        "SReT: zoo vs a plain rendition of the authors' forward, same weights",
        _sret,
        sret.DEFAULT_MODELS,
        _within(sret.TOLERANCE),
    ),
    "mobilellm": Peer(
        "transformers",
        "MobileLLM: zoo vs transformers LlamaForCausalLM, same weights (batch 1)",
        _lm,
        lm.DEFAULT_MODELS,
        lambda row: row.extra.get("same tokens", True) is True,
        lambda r: lm.NOTES,
    ),
    "recursive": Peer(
        "vanilla",
        "Mixture-of-Recursions vs the vanilla stack of the same depth (random weights)",
        _mor,
        mor.DEFAULT_MODELS,
        lambda row: True,
    ),
}


# `--deployed`: family -> the deployed forms against eager
DEPLOYED: dict[str, Peer] = {
    "metaformer": Peer(
        "zoo eager",
        "MetaFormer deployed: onnxruntime and torch.compile vs zoo eager, and vs timm's ONNX (same weights, fp32)",
        _deployed_vision,
        deployed.DEFAULT_MODELS,
        _within(deployed.TOLERANCE),
        deployed.notes,
    ),
    "mobilellm": Peer(
        "zoo eager",
        "MobileLLM deployed: greedy decode in llama.cpp (GGUF f32) and the compiled pte artefact vs zoo eager",
        _deployed_lm,
        deployed.LM_DEFAULT_MODELS,
        lambda row: row.extra.get("same tokens", True) is True,
    ),
}


def _csv(kind: type):
    def parse(text: str) -> list:
        try:
            values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if not values or (kind is int and min(values) < 1):
            raise argparse.ArgumentTypeError("expected a comma-separated list of positive values")
        return values

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        type=_csv(str),
        default=None,
        help=f"comma-separated model names, one family (default: {','.join(vision.DEFAULT_MODELS)})",
    )
    parser.add_argument("--batch-sizes", type=_csv(int), default=None, help="comma-separated batch sizes")
    parser.add_argument(
        "--runs", type=int_between(1), default=None, help="timed rounds per candidate (default: by batch size)"
    )
    parser.add_argument("--warmup", type=int_between(0), default=2, help="warm-up passes per candidate (default: 2)")
    parser.add_argument(
        "--threads", type=int_between(1, 1024), default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PATH",
        help="--train, --deployed, --formats: merge the run into this results file (results/train_throughput.json, "
        "results/deployed.json, results/lm_decode.json), replacing the rows it measured again",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if any output differs beyond tolerance")
    parser.add_argument(
        "--deployed", action="store_true", help="time the exported / compiled forms beside eager (zoo export)"
    )
    parser.add_argument(
        "--img-size", type=int_between(8, 4096), default=224, help="vision: input height and width (default 224)"
    )
    parser.add_argument(
        "--impls", type=_csv(str), default=["auto"], help=f"SLaK: zoo paths to time ({', '.join(slak.IMPLS)})"
    )
    lms = parser.add_argument_group("language models")
    lms.add_argument("--dtype", default="float32", choices=sorted(lm.DTYPES), help="both implementations' dtype")
    lms.add_argument("--prefill-tokens", type=int, default=512)
    lms.add_argument("--prompt-tokens", type=int, default=None, help="decode prompt (MobileLLM 32, MoR 128)")
    lms.add_argument("--new-tokens", type=int, default=None, help="greedy tokens decoded (MobileLLM 128, MoR 32)")
    lms.add_argument("--layers", type=int, default=None, help="MoR: dense base depth (reduce for a quicker run)")
    lms.add_argument(
        "--formats",
        type=_csv(str),
        default=None,
        help=f"weight formats side by side ({','.join(formats.FORMATS)}): zoo eager/compiled, transformers fp32, "
        "llama.cpp at the same bits, perplexity and greedy agreement with fp32",
    )
    lms.add_argument(
        "--prefill",
        default=",".join(map(str, formats.PREFILL_LENGTHS)),
        metavar="N[,N...]",
        help="--formats: prompt lengths whose prefill tokens/s is timed beside llama.cpp's prompt processing "
        f"(default {','.join(map(str, formats.PREFILL_LENGTHS))}; 0: none)",
    )
    lms.add_argument(
        "--quality-run",
        type=Path,
        default=formats.QUALITY_RUN,
        metavar="DIR",
        help=f"--formats: the trained LM whose perplexity is measured (default {formats.QUALITY_RUN})",
    )
    lms.add_argument(
        "--backend-only",
        action="store_true",
        help="--formats: only the zoo llama.cpp backend against bare llama.cpp at each format's GGUF type (no "
        "compiling, transformers or quality run)",
    )
    lms.add_argument(
        "--pte",
        action="store_true",
        help="--formats: also the ExecuTorch pte artefacts (int8: 8da8w, int4: 8da4w) against llama.cpp at the same "
        "bits (each export takes minutes)",
    )
    lms.add_argument(
        "--pte-only",
        action="store_true",
        help="--formats: only the pte artefacts against bare llama.cpp (no compiling, transformers or quality run)",
    )
    training = parser.add_argument_group("training steps (--train)")
    training.add_argument(
        "--train",
        action="store_true",
        help="time forward + backward + AdamW step against the peer (timm; transformers for MobileLLM)",
    )
    training.add_argument("--amp", choices=["bf16"], default=None, help="--train: bf16 autocast on both sides")
    training.add_argument("--compile", action="store_true", help="--train: torch.compile both models")
    training.add_argument(
        "--grad-checkpointing", action="store_true", help="--train: both models' gradient checkpointing"
    )
    training.add_argument("--seq-len", type=int, default=512, help="--train, language models: tokens per row")
    training.add_argument(
        "--e2e", action="store_true", help="--train: train.py on a generated image folder against the model-only step"
    )
    training.add_argument("--steps", type=int, default=20, help="--e2e: train.py steps (default 20)")
    training.add_argument("--workers", type=int, default=None, help="--e2e: loader workers (default: the recipe's)")
    table = parser.add_argument_group("model table (instead of a comparison)")
    table.add_argument("--family", default=None, help="profile every model of this family")
    table.add_argument("--all", action="store_true", help="profile every registered model")
    table.add_argument("--csv", type=Path, default=None, metavar="PATH", help="write the table as CSV")
    table.add_argument("--plot", type=Path, default=None, metavar="PATH", help="the top-1 vs cost picture (PNG)")
    table.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    table.add_argument("--channels-last", action="store_true", help="channels-last inputs and weights")
    data_pruning.add_arguments(parser)


def _peer_of(models: Sequence[str], deployed_forms: bool = False) -> Peer | None:
    unknown = [m for m in models if m not in list_models()]
    families = {get_entry(m).family for m in models if m not in unknown}
    peers = DEPLOYED if deployed_forms else PEERS
    if unknown or len(families) != 1 or next(iter(families)) not in peers:
        why = (
            f"not registered: {', '.join(unknown)}"
            if unknown
            else f"one family at a time, with a peer ({', '.join(sorted(peers))}); got {', '.join(sorted(families))}"
        )
        print(f"zoo bench: error: {why}", file=sys.stderr)
        return None
    return peers[next(iter(families))]


def _report(rows: Sequence[Row], notes: Sequence[str], json_path: Path | None, env: dict[str, str], **config) -> None:
    """The table, its notes, and the JSON file when one was asked for."""
    print(format_rows(rows))
    for note in notes:
        print(note)
    write_json(json_path, env, rows, **config)


def _command(args: argparse.Namespace) -> str:
    """The ``zoo bench`` command line of this run, for its results file."""
    argv = getattr(args, "argv", None)
    if argv is None:
        argv = sys.argv[1:]
        argv = argv[1:] if argv[:1] == ["bench"] else argv
    return command_line("zoo bench", argv)


def _out_misplaced(args: argparse.Namespace) -> str | None:
    """Why ``--out`` cannot be honoured for this run's mode, or None."""
    if args.out is None:
        return None
    if args.data_pruning or args.family or args.all:
        return "--out writes the --train, --deployed and --formats results files (--data-pruning writes its own)"
    if args.formats is not None and args.backend_only:
        return "--out writes the formats' decode and pte rows; --backend-only has none (use --json)"
    if args.formats is None and args.train and args.e2e:
        return "--out writes the model-only training steps; --e2e has no results file (drop one of them)"
    if args.formats is None and not (args.train or args.deployed):
        return "--out writes the --train, --deployed and --formats results files; add one of them, or use --json"
    if args.out.suffix != ".json":
        return f"--out {args.out}: a results file is JSON (results/NAME.json)"
    return None


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    misplaced = _out_misplaced(args)
    if misplaced is None and args.out is not None:
        kind = "formats" if args.formats is not None else "train" if args.train else "deployed"
        try:
            check_results_file(args.out, kind)
        except ValueError as e:
            misplaced = str(e)
    if misplaced:
        print(f"zoo bench: error: {misplaced}", file=sys.stderr)
        return 2
    args.models_given = args.models is not None
    if args.data_pruning:
        return data_pruning.run(args)
    if args.family or args.all:
        return run_table(args)
    if args.formats is not None:
        return run_formats(args)
    if args.train:
        return run_train(args)
    models = args.models or list(vision.DEFAULT_MODELS)
    peer = _peer_of(models, args.deployed)
    if peer is None:
        return 2
    args.prompt_tokens = args.prompt_tokens or (32 if peer.compare in (_lm, _deployed_lm) else None)
    args.new_tokens = args.new_tokens or (128 if peer.compare in (_lm, _deployed_lm) else None)
    env = environment()
    print_header(peer.title, env, [f"warm-up {args.warmup}; medians of rounds alternating the candidates"])
    try:
        rows = [row for name in models for row in peer.compare(name, args)]
    except ValueError as e:  # a model the peer cannot run (e.g. no timm twin, no stock Llama twin)
        print(f"zoo bench: error: {e}", file=sys.stderr)
        return 2
    _report(rows, peer.notes(rows), args.json, env, models=models)
    if args.out is not None:
        deployed.write_results(args.out, rows, _command(args))
    failed = [r for r in rows if not peer.check(r)]
    for r in failed:
        print(f"CHECK FAILED: {r.model} {r.setting} {r.candidate}: outputs differ from {r.peer}", file=sys.stderr)
    if failed and (args.check or peer.compare not in (_vision, _deployed_vision)):
        return 1
    return 0


def run_formats(args: argparse.Namespace) -> int:
    """``--formats``: the language models' weight formats side by side (:mod:`zoo.bench.formats`)."""
    models = args.models or ["mobilellm_125m"]
    unknown = [m for m in models if m not in list_models()]
    not_lm = [m for m in models if m not in unknown and get_entry(m).task != "text-generation"]
    if unknown or not_lm:
        why = f"not registered: {', '.join(unknown)}" if unknown else f"not language models: {', '.join(not_lm)}"
        print(f"zoo bench: error: --formats is for the language models; {why}", file=sys.stderr)
        return 2
    try:
        prefill = formats.parse_prefill(args.prefill)
    except ValueError as e:
        print(f"zoo bench: error: {e}", file=sys.stderr)
        return 2
    env = formats.environment()
    title = "LM weight formats: zoo (eager / compiled) vs transformers fp32 and llama.cpp at the same bits, batch 1"
    if args.backend_only:
        title = "LM weight formats: the zoo llama.cpp backend vs the bare llama-cpp-python loop, same GGUF, batch 1"
    if args.pte_only:
        title = "LM weight formats: zoo pte (ExecuTorch, XNNPACK 8da8w / 8da4w) vs bare llama.cpp Q8_0 / Q4_0, batch 1"
    weights = "speed: the named model with deterministic random weights of trained scale (the same in every engine)"
    if not (args.backend_only or args.pte_only):
        weights += f"; perplexity and agreement: the trained LM in {args.quality_run}"
    print_header(title, env, [f"warm-up {max(args.warmup, 1)}; medians of rounds alternating every candidate", weights])
    settings = (max(args.warmup, 1), args.prompt_tokens or 32, args.new_tokens or 128)
    try:
        if args.backend_only:
            rows = [
                r for name in models for r in formats.compare_backend(name, args.formats, args.runs or 9, *settings)
            ]
        elif args.pte_only:
            rows = [r for name in models for r in formats.compare_pte(name, args.formats, args.runs or 5, *settings)]
        else:
            rows = [
                r
                for name in models
                for r in formats.compare(
                    name,
                    args.formats,
                    args.runs or 3,
                    *settings,
                    quality_run=args.quality_run,
                    pte=args.pte,
                    prefill=prefill,
                )
            ]
    except ValueError as e:
        print(f"zoo bench: error: {e}", file=sys.stderr)
        return 2
    _report(
        rows, formats_report.notes(rows), args.json, env, models=models, formats=args.formats, prefill=list(prefill)
    )
    if args.out is not None:
        quality = "" if args.backend_only or args.pte_only else f"; perplexity and agreement: {args.quality_run}"
        described = f"random weights, {settings[2]} greedy tokens after a {settings[1]}-token prompt{quality}"
        formats_report.write_results(args.out, rows, _command(args), described)
    # fp32 compiled computes eager's arithmetic: its tokens must agree (the other formats' agreement is reported)
    wrong = [r for r in rows if r.setting.endswith(" fp32") and r.extra.get("compiled = eager", 1.0) < 1.0]
    for r in wrong:
        print(f"CHECK FAILED: {r.model} {r.setting}: compiled tokens differ from eager", file=sys.stderr)
    return 1 if wrong else 0


def run_train(args: argparse.Namespace) -> int:
    """``--train``: training steps side by side with the peer (:mod:`zoo.bench.train`)."""
    models = args.models or list(train_bench.DEFAULT_MODELS)
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        print(f"zoo bench: error: not registered: {', '.join(unknown)}", file=sys.stderr)
        return 2
    amp = torch.bfloat16 if args.amp == "bf16" else None
    env = environment(device=args.device)
    title = "Training step (forward, backward, AdamW): zoo vs its peer, same weights and batch"
    print_header(title, env, [f"warm-up {args.warmup}; medians of rounds alternating the candidates"])
    rows, results = [], []
    try:
        for name in models:
            lm_model = get_entry(name).task == "text-generation"
            for bs in args.batch_sizes or ([4] if lm_model else [32]):
                settings = train_bench.Settings(
                    batch_size=bs,
                    img_size=args.img_size,
                    seq_len=args.seq_len,
                    amp=amp,
                    channels_last=args.channels_last,
                    compile=args.compile,
                    grad_checkpointing=args.grad_checkpointing,
                    device=args.device,
                )
                if args.e2e:
                    rows.append(train_bench.end_to_end(name, settings, args.steps, args.workers, args.runs or 5))
                else:
                    measured = train_bench.compare(name, settings, args.runs or 5, args.warmup)
                    rows += measured
                    results += [train_bench.result_row(r, settings) for r in measured]
    except ValueError as e:
        print(f"zoo bench: error: {e}", file=sys.stderr)
        return 2
    _report(rows, train_bench.notes(rows), args.json, env, models=models, train=True)
    if args.out is not None:
        train_bench.write_results(args.out, results, _command(args))
    wrong = [r for r in rows if not args.e2e and not train_bench.loss_agrees(r, amp, r.model)]
    for r in wrong:
        print(f"CHECK FAILED: {r.model} {r.setting}: first-step loss differs from {r.peer}", file=sys.stderr)
    return 1 if wrong else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = None if argv is None else list(argv)
    return run(args)
