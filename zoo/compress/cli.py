"""``zoo prune``: structural pruning from the command line, into a folder ``zoo.create_model`` loads.

``add_arguments(parser)`` declares the options and ``run(args)`` does the work; ``zoo/cli.py`` mounts the pair. The
model's ``save_pretrained`` (:func:`zoo.publish.export_pretrained`, registered there) writes the folder, with
``prune.json`` beside it (what was pruned, how, and the size before and after), swapped in whole
(:func:`zoo.output_folder.write_folder`); the folder is reloaded to check that it rebuilds the very model pruned.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from ..factory import create_model, resolve_weight_source
from ..hub import WEIGHTS_NAME
from ..layers.args import parse_json_object
from ..lm.decoder import DecoderLM
from ..output_folder import check_output_folder, write_folder
from .prune import IMPORTANCES, PruneError, prune

__all__ = ["PRUNE_RECORD", "add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``zoo prune``'s arguments."""
    p.add_argument("source", help="registered name, hf-hub:ORG/NAME, a model folder or a training run folder")
    p.add_argument("--ratio", default=None, help="fraction of channels and heads to remove, e.g. 0.3")
    p.add_argument("--target-macs", default=None, help="MACs to reach: 0.5 / 50%% of the dense model's, or 900M")
    p.add_argument("--target-params", default=None, help="parameters to reach: 0.5 / 50%% or a count such as 6M")
    p.add_argument("--importance", default="magnitude", choices=list(IMPORTANCES), help="criterion (default L2)")
    p.add_argument("--round-to", type=int, default=8, help="kept widths are multiples of this (default 8; 0: exact)")
    p.add_argument("--iterative-steps", type=int, default=1, help="prune in N steps, importance re-estimated")
    p.add_argument("--out", default=None, help="the folder to write (default ./NAME-pruned)")
    p.add_argument("--weights", default=None, help="checkpoint to load into a registered name (any supported origin)")
    p.add_argument("--model-args", default=None, help="JSON model arguments, e.g. '{\"num_classes\": 10}'")
    p.add_argument("--input-size", default=None, help="vision: C,H,W MACs are counted at (default: the model's)")
    p.add_argument(
        "--tokens",
        type=int,
        default=None,
        help="LMs: tokens MACs are counted at (default 128, or the context if shorter)",
    )
    p.add_argument("--latency-runs", type=int, default=0, help="time N CPU passes for the card (default: none)")


def _count(text: str, flag: str) -> float:
    """``0.5`` or ``50%`` (a fraction of the dense model's), or a count with an optional K/M/G suffix."""
    t = text.strip().upper()
    try:
        if t.endswith("%"):
            percent = float(t[:-1])
        else:
            scale = {"K": 1e3, "M": 1e6, "G": 1e9}.get(t[-1:], 1)
            return float(t[:-1] if scale != 1 else t) * scale
    except ValueError:
        raise ValueError(f"{flag} must be a fraction (0.5, 50%) or a count (900M, 1.2G), got {text!r}") from None
    if not 0 < percent < 100:
        raise ValueError(
            f"{flag} {text} is not a share of the dense model's below 100% and above 0%: pruning only removes; give "
            "e.g. 50% (or a count such as 900M)"
        )
    return percent / 100


def _ratio(text: str) -> float:
    """``--ratio``: ``0.3`` or ``30%``, the fraction of channels and heads removed."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise ValueError(
            f"--ratio must be a fraction in (0, 1) such as 0.3, or a percent such as 30%, got {text!r}"
        ) from None
    if not 0 < value < 1:
        raise ValueError(
            f"--ratio must be a fraction of the channels in (0, 1), got {text}: 0.3 or 30% removes 30%, and 1 or 100% "
            "would remove everything"
        )
    return value


PRUNE_RECORD = "prune.json"  # what zoo prune did; it marks the folder as zoo prune's output
_PRUNE_NAMES = (WEIGHTS_NAME, "config.json", "README.md", "generation_config.json", "tokenizer.model", PRUNE_RECORD)


def _previous_prune(folder: Path) -> bool:
    """``folder`` holds an earlier ``zoo prune`` output and nothing else (hidden leftovers aside)."""
    if not (folder / PRUNE_RECORD).is_file():
        return False
    return all(
        p.name in _PRUNE_NAMES or p.name.startswith(".") or (p.name.startswith("tokenizer") and p.suffix == ".json")
        for p in folder.iterdir()
    )


def _tokenizer_beside(folder) -> Path | None:
    files = sorted(Path(folder).glob("tokenizer*.json")) if folder else []
    return files[0] if files else None


def _load_model_to_prune(args, source, model_args):
    """The model to prune and the folder its weights came from (None for a random init)."""
    if source.pretrained:
        model = create_model(args.source, pretrained=True, **model_args)
        folder = source.cfg_overlay.get("file")
    elif args.weights:
        model = create_model(args.source, pretrained=True, pretrained_cfg_overlay={"file": args.weights}, **model_args)
        folder = Path(args.weights).parent
    else:
        model = create_model(args.source, **model_args)
        folder = None
        print(f"note: {args.source} has no weights here: pruning a random init (give --weights or a model folder)")
    return model, folder


def _prune_example_inputs(model, args, is_lm: bool) -> torch.Tensor:
    """A seeded example input: random tokens for a language model, a random image otherwise."""
    if is_lm:
        context = getattr(model.config, "max_position_embeddings", None) or 128
        tokens = min(128, context) if args.tokens is None else args.tokens
        if not 1 <= tokens <= context:
            raise ValueError(f"--tokens {tokens}: give 1 to {context} (this model's context, max_position_embeddings)")
        return torch.randint(0, model.config.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0))
    size = tuple(int(s) for s in args.input_size.split(",")) if args.input_size else None
    size = size or tuple((model.pretrained_cfg or {}).get("input_size") or (3, 224, 224))
    return torch.randn(1, *size, generator=torch.Generator().manual_seed(0))


def _prune_target(args) -> dict:
    """The one size target given (--ratio, --target-macs or --target-params) as prune()'s keyword."""
    if args.ratio:
        return {"ratio": _ratio(args.ratio)}
    if args.target_macs:
        return {"target_macs": _count(args.target_macs, "--target-macs")}
    return {"target_params": _count(args.target_params, "--target-params")}


def _reloads_identically(model, out: Path, inputs: torch.Tensor) -> bool:
    """The folder must rebuild this very model: checked here, on the example input."""
    reloaded = create_model(out, pretrained=True).eval()
    with torch.no_grad():
        a, b = model(inputs), reloaded(inputs)
    return torch.equal(getattr(a, "logits", a), getattr(b, "logits", b))


def _print_prune_report(args, name: str, report, out: Path, same: bool, is_lm: bool) -> None:
    shape = "x".join(str(s) for s in report.input_size[1:]) + (" tokens" if is_lm else "")
    print(
        f"pruned {args.source} ({name}) at ratio {report.ratio:.3f}, {report.importance} importance, widths "
        f"rounded to {report.round_to or 1}"
        + (f"; MLP widths at ratio {report.mlp_ratio:.3f}" if report.mlp_ratio is not None else "")
    )
    print(
        f"  params {report.params_before / 1e6:.3f}M -> {report.params_after / 1e6:.3f}M "
        f"({report.params_after / report.params_before:.1%})"
    )
    print(
        f"  MACs   {report.macs_before / 1e9:.4f}G -> {report.macs_after / 1e9:.4f}G "
        f"({report.macs_after / report.macs_before:.1%}) at {shape}"
    )
    print(f"  wrote {out}: " + ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith("."))))
    print(f"  reloads with zoo.create_model({str(out)!r}, pretrained=True): identical outputs {same}")


def run(args: argparse.Namespace) -> int:
    """``zoo prune``: a registered name, model folder, training run or hf-hub: name -> a pruned, loadable folder.

    Bad arguments raise ValueError (the ``zoo`` command prints it in one line, exit status 2); a model pruning
    cannot handle is one line and exit status 2; 1 when the written folder does not reload identically."""
    model_args = parse_json_object(args.model_args, "--model-args")
    given = [
        f
        for f, v in (
            ("--ratio", args.ratio),
            ("--target-macs", args.target_macs),
            ("--target-params", args.target_params),
        )
        if v
    ]
    if len(given) != 1:
        raise ValueError("give exactly one of --ratio, --target-macs, --target-params")
    target = _prune_target(args)
    source = resolve_weight_source(args.source)
    sources = [args.weights, source.cfg_overlay.get("file"), args.source if Path(args.source).exists() else None]
    out = check_output_folder(
        args.out or f"{source.name}-pruned", "zoo prune", sources=sources, previous=_previous_prune, what="output"
    )
    recorded = dict((source.config or {}).get("model_args") or {})  # a folder's architecture, kept in the output
    model, folder = _load_model_to_prune(args, source, model_args)
    name = model.pretrained_cfg["architecture"]
    is_lm = isinstance(model, DecoderLM)
    inputs = _prune_example_inputs(model, args, is_lm)
    try:
        prune(
            model,
            **target,
            importance=args.importance,
            example_inputs=inputs,
            round_to=None if args.round_to == 0 else args.round_to,
            iterative_steps=args.iterative_steps,
        )
    except PruneError as e:
        print(f"zoo prune: error: {e}", file=sys.stderr)
        return 2
    report = model.prune_report
    model.eval()

    def write(tmp: Path) -> None:
        model.save_pretrained(
            tmp,
            model_name=name,
            model_kwargs={**recorded, **model_args},
            tokenizer_file=_tokenizer_beside(folder) if is_lm and folder and Path(folder).is_dir() else None,
            latency_runs=args.latency_runs,
        )
        record = {"source": args.source, "weights": args.weights, **report.to_dict()}
        (tmp / PRUNE_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")

    write_folder(out, write)
    same = _reloads_identically(model, out, inputs)
    _print_prune_report(args, name, report, out, same, is_lm)
    return 0 if same else 1
