"""Each family against its named peer, on the same weights, timed side by side: ``zoo bench vision|slak|sret|lm|mor``,
and the deployed forms against eager: ``zoo bench deployed``.

A table of peers per family (:data:`PEERS`, :data:`DEPLOYED`) says what a family is measured against, how, and what
counts as agreement; every comparison runs through one :func:`run`.
"""

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..layers.args import int_between
from ..registry import get_entry, list_models
from . import deployed, lm, mor, slak, sret, vision
from .harness import Row, environment, print_header, report
from .options import add_common, add_out, check_out, csv_of, recorded_command, refuse

__all__ = ["DEPLOYED", "FAMILIES", "PEERS", "Peer", "add_arguments", "run"]


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


# family -> its peer; a family without an entry has no comparison yet (`zoo bench table --family F` still profiles it)
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


# `zoo bench deployed`: family -> the deployed forms against eager
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

# subcommand -> the family it compares with its peer (`zoo bench vision` is MetaFormer against timm, ...)
FAMILIES = {"vision": "metaformer", "slak": "slak", "sret": "sret", "lm": "mobilellm", "mor": "recursive"}


def _option(parser: argparse.ArgumentParser, shown: bool, flag: str, **kwargs) -> None:
    """``flag`` where the benchmark reads it from the command line; elsewhere only its default, so the body reads one
    namespace and a flag of another family is refused as argparse refuses any unknown one."""
    if shown:
        parser.add_argument(flag, **kwargs)
    else:
        parser.set_defaults(**{flag.lstrip("-").replace("-", "_"): kwargs.get("default")})


def _img_size(parser: argparse.ArgumentParser, shown: bool = True) -> None:
    _option(
        parser, shown, "--img-size", type=int_between(8, 4096), default=224, help="input height and width (default 224)"
    )


def _decode_lengths(parser: argparse.ArgumentParser, prompt: int | None, new: int | None) -> None:
    shown = prompt is not None
    _option(parser, shown, "--prompt-tokens", type=int, default=None, help=f"decode prompt (default {prompt})")
    _option(parser, shown, "--new-tokens", type=int, default=None, help=f"greedy tokens decoded (default {new})")


def add_arguments(parser: argparse.ArgumentParser, family: str) -> None:
    """The options of ``zoo bench SUBCOMMAND`` comparing ``family`` (a key of :data:`PEERS`) with its peer: the
    shared ones and the family's own."""
    peer = PEERS[family]
    add_common(parser, f"comma-separated model names of the family (default: {','.join(peer.default_models)})")
    parser.add_argument("--check", action="store_true", help="exit 1 if any output differs beyond tolerance")
    parser.set_defaults(family=family, deployed=False)
    _img_size(parser, family == "metaformer")
    _option(parser, family == "slak", "--impls", type=csv_of(str), default=["auto"],
            help=f"zoo paths to time ({', '.join(slak.IMPLS)})")  # fmt: skip
    lm_family = family == "mobilellm"
    _option(
        parser, lm_family, "--dtype", default="float32", choices=sorted(lm.DTYPES), help="both implementations' dtype"
    )
    _option(parser, lm_family, "--prefill-tokens", type=int, default=512, help="prompt tokens of the prefill rows")
    lengths = {"mobilellm": (32, 128), "recursive": (128, 32)}.get(family, (None, None))
    _decode_lengths(parser, *lengths)
    _option(parser, family == "recursive", "--layers", type=int, default=None,
            help="dense base depth (reduce for a quicker run)")  # fmt: skip


def add_deployed_arguments(parser: argparse.ArgumentParser) -> None:
    """``zoo bench deployed``: onnxruntime / torch.compile (vision), llama.cpp and the pte artefact (LM) vs eager."""
    add_common(parser, f"comma-separated model names, one family (default: {','.join(deployed.DEFAULT_MODELS)})")
    parser.add_argument("--check", action="store_true", help="exit 1 if any output differs beyond tolerance")
    _img_size(parser)
    _decode_lengths(parser, 32, 128)
    add_out(parser, "results/deployed.json")
    parser.set_defaults(family=None, deployed=True)


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
        refuse(why)
        return None
    return peers[next(iter(families))]


def _wrong_family(models: Sequence[str], family: str | None) -> str | None:
    """Why ``models`` are not this subcommand's family (their own subcommand named), or None."""
    found = get_entry(models[0]).family
    if family is None or found == family:
        return None
    other = next((name for name, f in FAMILIES.items() if f == found), None)
    return f"{', '.join(models)}: {found} models; `zoo bench {other}` compares them" if other else None


def run(args: argparse.Namespace) -> int:
    """Time ``--models`` (one family) against the family's peer, or their deployed forms against eager."""
    misplaced = check_out(getattr(args, "out", None), "deployed")
    if misplaced:
        return refuse(misplaced)
    default = (DEPLOYED if args.deployed else PEERS).get(args.family or "metaformer")
    models = args.models or list(default.default_models)
    peer = _peer_of(models, args.deployed)
    if peer is None:
        return 2
    wrong = _wrong_family(models, args.family)
    if wrong:
        return refuse(wrong)
    if peer.compare in (_lm, _deployed_lm):
        args.prompt_tokens, args.new_tokens = args.prompt_tokens or 32, args.new_tokens or 128
    env = environment()
    print_header(peer.title, env, [f"warm-up {args.warmup}; medians of rounds alternating the candidates"])
    try:
        rows = [row for name in models for row in peer.compare(name, args)]
    except ValueError as e:  # a model the peer cannot run (e.g. no timm twin, no stock Llama twin)
        return refuse(str(e))
    report(rows, peer.notes(rows), args.json, env, models=models)
    if getattr(args, "out", None) is not None:
        deployed.write_results(args.out, rows, recorded_command(args))
    failed = [r for r in rows if not peer.check(r)]
    for r in failed:
        print(f"CHECK FAILED: {r.model} {r.setting} {r.candidate}: outputs differ from {r.peer}", file=sys.stderr)
    if failed and (args.check or peer.compare not in (_vision, _deployed_vision)):
        return 1
    return 0
