"""``zoo convert`` and ``zoo publish``: a checkpoint, or a training run, as a zoo folder (safetensors, config.json,
model card); ``publish`` also uploads the folder to the Hub.

Each command is an ``add_*_arguments(parser)`` / ``run_*(args)`` pair; ``zoo/cli.py`` mounts them.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from . import publish
from .factory import create_model
from .hub import WEIGHTS_NAME
from .publish import PublishError
from .registry import get_entry
from .weights import CheckpointError, sha256_file

__all__ = ["add_convert_arguments", "add_publish_arguments", "run_convert", "run_publish"]


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    """``zoo convert``'s arguments."""
    p.add_argument("model", help="registered name, e.g. slak_tiny")
    p.add_argument("checkpoint", help="the checkpoint file (or a transformers folder for LMs)")
    p.add_argument("out_dir")
    p.add_argument(
        "--model-args",
        default=None,
        help="JSON model arguments, e.g. '{\"num_classes\": 10}' or '{\"deploy\": true}' for SLaK",
    )
    p.add_argument("--latency-runs", type=int, default=0, help="time N CPU passes for the card (default: none)")


def run_convert(args: argparse.Namespace) -> int:
    """An authors' (or timm's, or transformers') checkpoint -> a zoo folder: safetensors, config.json, model card
    (a language model's also its tokenizer, when one is beside the checkpoint, with transformers' config of it)."""
    try:
        model_args = json.loads(args.model_args) if args.model_args else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-args must be a JSON object, e.g. '{{\"num_classes\": 10}}' ({e})") from None
    if not isinstance(model_args, dict):
        raise ValueError("--model-args must be a JSON object, e.g. '{\"num_classes\": 10}'")
    model = create_model(
        args.model, pretrained=True, pretrained_cfg_overlay={"file": args.checkpoint}, **model_args
    ).eval()
    out = publish.export_pretrained(
        model,
        args.out_dir,
        model_name=args.model,
        model_kwargs=model_args,
        latency_runs=args.latency_runs,
        tokenizer_file=_tokenizer_beside(Path(args.checkpoint))
        if get_entry(args.model).task == "text-generation"
        else None,
    )
    print(f"converted {args.checkpoint} ({args.model}) -> {out}: " + ", ".join(sorted(f.name for f in out.iterdir())))
    return 0


def _tokenizer_beside(checkpoint: Path) -> Path | None:
    """A language model checkpoint's tokenizer (``tokenizer.json`` first, else ``tokenizer.model``): in the folder
    given, or beside the file given; None where there is none."""
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    return next((folder / n for n in ("tokenizer.json", "tokenizer.model") if (folder / n).is_file()), None)


def add_publish_arguments(p: argparse.ArgumentParser) -> None:
    """``zoo publish``'s arguments."""
    p.add_argument("run_dir", help="a training run folder (args.yaml, model.safetensors, metrics.json)")
    p.add_argument("--repo", required=True, help="the Hub repo, ORG/NAME (created if it does not exist)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument(
        "--token-env",
        default=None,
        metavar="VAR",
        help="read the write token from environment variable VAR (default: HF_TOKEN or the token of `hf auth login`)",
    )
    p.add_argument("--out-dir", default=None, help="where to write the exported folder (default RUN_DIR/publish)")
    p.add_argument(
        "--cards-dir",
        default=None,
        help="also copy the model card to DIR/ORG--NAME.md (default: nowhere)",
    )
    p.add_argument("--license", default=None, help="the weights' license (default: the architecture's)")
    p.add_argument(
        "--latency-runs",
        type=int,
        default=10,
        help="timed CPU passes for the card's latency figure (0: leave latency out)",
    )
    p.add_argument("--no-push", action="store_true", help="export only; upload nothing")


def run_publish(args: argparse.Namespace) -> int:
    """Export the run and (unless --no-push) upload it; 2 with one line, the token scrubbed, for what went wrong."""
    token = None
    try:
        if args.token_env:
            token = os.environ.get(args.token_env)
            if not token:
                raise PublishError(f"environment variable {args.token_env} (--token-env) is not set or empty")
        publish.check_repo_id(args.repo)
        folder = publish.export_run(
            args.run_dir, args.out_dir, repo_id=args.repo, license=args.license, latency_runs=args.latency_runs
        )
        print(f"exported {folder}: {', '.join(publish.exported_files(folder))}")
        print(f"  sha256 of {WEIGHTS_NAME}: {sha256_file(folder / WEIGHTS_NAME)}")
        if args.no_push:
            return 0
        url = publish.upload_folder(
            folder,
            args.repo,
            private=args.private,
            token=token,
            commit_message=f"Upload {args.repo} from run {Path(args.run_dir).name}",
        )
        card = publish.save_published_card(folder, args.repo, args.cards_dir)
        print(f"published {url}" + (" (private)" if args.private else ""))
        if card is not None:
            print(f"  model card also written to {card}")
        print(f'  load it with zoo.create_model("hf-hub:{args.repo}", pretrained=True)')
        return 0
    except (PublishError, CheckpointError, ValueError, TypeError) as e:
        print(f"zoo publish: error: {publish.scrub_token(str(e), token)}", file=sys.stderr)
        return 2
