"""``python train.py --config RECIPE.yaml [--resume PATH|auto] [--push-to-hub ORG/NAME] [--section.key value ...]``."""

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from ..publish import PublishError
from .checkpoint import CheckpointCorruptError
from .config import RecipeError, load_recipe, load_run_recipe, recipe_to_dict
from .loop import NonFiniteLossError, train

__all__ = ["main"]

EPILOG = """\
Overrides: any recipe key, as --key value (top level) or --section.key value, e.g.
  --train.epochs 5 --optim.lr 1e-3 --output_dir runs/try --model_kwargs.drop_rate 0.1
Batch sizes are global (per optimizer step, all processes together). Many processes:
  torchrun --nproc_per_node 2 train.py --config configs/quickstart_digits.yaml
Resume: --resume auto (RUN_DIR/checkpoints/last.pt) or --resume PATH; with only --resume PATH, the recipe
is read from the run folder's args.yaml.
Exit status: 0 done, 2 unusable recipe or checkpoint, 3 the loss became NaN/inf (a checkpoint is saved),
4 the run finished but --push-to-hub failed (publish it later with `zoo publish RUN_DIR --repo ORG/NAME`).
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train a zoo model from a YAML recipe (configs/).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", help="recipe YAML file (configs/*.yaml)")
    p.add_argument("--resume", help="checkpoint to continue from, or 'auto' for RUN_DIR/checkpoints/last.pt")
    p.add_argument(
        "--push-to-hub",
        dest="push_to_hub",
        metavar="ORG/NAME",
        help="after training, publish the run to this Hub repo (zoo.hub.publish_run)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args, overrides = _parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.config:
            recipe = load_recipe(args.config, overrides)
        elif args.resume and args.resume != "auto":
            run_dir = Path(args.resume).resolve().parent.parent
            base = recipe_to_dict(load_run_recipe(run_dir))
            recipe = load_recipe(None, overrides, base=base)
        else:
            _parser().print_usage(sys.stderr)
            print(
                "train.py: error: give --config RECIPE.yaml (recipes are in configs/), or --resume "
                "RUN_DIR/checkpoints/last.pt",
                file=sys.stderr,
            )
            return 2
        if args.print_config:
            print(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
            return 0
        try:
            summary = train(recipe, resume=args.resume, push_to_hub=args.push_to_hub, progress=not args.no_progress)
        except NonFiniteLossError as e:
            print(f"train.py: {e}", file=sys.stderr)
            return 3
    except (RecipeError, CheckpointCorruptError, FileNotFoundError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    except PublishError as e:  # the run itself finished; the message says how to publish it again
        print(f"train.py: error: {e}", file=sys.stderr)
        return 4
    if summary.get("paths"):
        _print_summary(summary)
    return 0


def _print_summary(summary):
    m = summary["metrics"]
    shown = {
        k: m[k]
        for k in ("top1", "top5", "loss", "perplexity", "unigram_perplexity", "params", "macs", "train_seconds")
        if k in m
    }
    print("\n" + "=" * 72)
    print(f"finished {summary['steps']} optimizer steps; held-out {m.get('dataset')}/{m.get('split')}:")
    print("  " + json.dumps(shown))
    if "unigram_perplexity" in m:
        print(f"  perplexity {m['perplexity']:.2f} vs unigram baseline {m['unigram_perplexity']:.2f}")
    print("written:")
    for k, v in summary["paths"].items():
        print(f"  {k:<12} {v}")
    print("=" * 72)
