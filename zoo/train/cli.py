"""``python train.py --config RECIPE.yaml [--resume PATH|auto | --overwrite] [--push-to-hub ORG/NAME]
[--section.key value ...]``."""

import argparse
import errno
import json
import logging
import sys
from pathlib import Path

import yaml

from ..data.errors import DataError
from ..publish import PublishError
from ..registry import UnknownModelError
from ..weights import CheckpointError
from .checkpoint import CheckpointCorruptError, DiskFullError, disk_full_message
from .config import RecipeError, load_recipe, load_run_recipe, recipe_to_dict
from .loop import NonFiniteLossError, train
from .run_folder import RunFolderError, run_dir_of

__all__ = ["main"]

EPILOG = """\
Overrides: any recipe key, as --key value (top level) or --section.key value, e.g.
  --train.epochs 5 --optim.lr 1e-3 --output_dir runs/try --model_kwargs.drop_rate 0.1
Start from a model folder (a pruned, published or run folder: its architecture and weights): --init-from DIR.
Distill from a teacher (a registered name, a model or run folder, hf-hub:ORG/NAME): --distill.teacher NAME
  [--distill.alpha 0.5 --distill.temperature 4 --distill.kind soft|hard]; --distill null turns a recipe's off.
Batch sizes are global (per optimizer step, all processes together). Many processes:
  torchrun --nproc_per_node 2 train.py --config configs/quickstart_digits.yaml
Run folder (output_dir): a new run needs an empty or new folder; --overwrite replaces the run a folder holds
(its checkpoints, logs, weights, tokenizer and export/ are removed first). While a run writes, RUN_DIR/.lock
names its pid: a second run into the folder is refused; a lock left by a killed run is taken over.
Resume: --resume auto (RUN_DIR/checkpoints/last.pt) or --resume PATH; with only --resume PATH, the recipe
is read from the run folder's args.yaml. --resume auto on a finished run says so and changes nothing. A
checkpoint from another run folder continues in an empty or new output_dir (or one --overwrite empties).
A run's sources (init_from, the teacher, start weights, data.tokenizer) may not lie in its output_dir.
Threads: train.threads sets torch's intra-op threads; unset, the run takes the cores free now (the cores it
may use minus the 1-minute load average, shared among torchrun's processes on the host, or OMP_NUM_THREADS
when set) and logs the choice. Set it (e.g. --train.threads 1) where other work shares the cores.
Exit status: 0 done, 2 unusable recipe, data, run folder or checkpoint (or a full disk), 3 the loss became
NaN/inf (a checkpoint is saved), 4 the run finished but --push-to-hub failed (publish it later with
`zoo publish RUN_DIR --repo ORG/NAME`).
"""


def _parser(prog: str = "train.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train a zoo model from a YAML recipe (configs/).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", help="recipe YAML file (configs/*.yaml)")
    p.add_argument("--resume", help="checkpoint to continue from, or 'auto' for RUN_DIR/checkpoints/last.pt")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the run that output_dir holds (its files are removed)"
    )
    p.add_argument(
        "--push-to-hub",
        dest="push_to_hub",
        metavar="ORG/NAME",
        help="after training, publish the run to this Hub repo (zoo.hub.publish_run)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


# User errors: one line and exit status 2 (a bug keeps its traceback).
USER_ERRORS = (
    RecipeError,
    DataError,
    UnknownModelError,
    RunFolderError,
    CheckpointError,
    CheckpointCorruptError,
    DiskFullError,
    FileNotFoundError,
    PermissionError,
)


def _error(message: str, prog: str = "train.py") -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None, prog: str = "train.py") -> int:
    """``train.py`` (and ``zoo train``, ``prog`` naming it in its messages): 2 with one line for what the user can
    fix, 130 for Ctrl-C."""
    args, overrides = _parser(prog).parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.resume == "auto" and args.overwrite:  # --resume PATH: train() decides (another run's checkpoint may)
        return _error("--resume continues the run in output_dir and --overwrite replaces it: give one of them", prog)
    recipe = None
    try:
        if args.config:
            recipe = load_recipe(args.config, overrides)
        elif args.resume and args.resume != "auto":
            run_dir = Path(args.resume).resolve().parent.parent
            base = recipe_to_dict(load_run_recipe(run_dir))
            recipe = load_recipe(None, overrides, base=base)
        else:
            _parser(prog).print_usage(sys.stderr)
            return _error(
                "give --config RECIPE.yaml (recipes are in configs/), or --resume RUN_DIR/checkpoints/last.pt", prog
            )
        if args.print_config:
            print(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
            return 0
        try:
            summary = train(
                recipe,
                resume=args.resume,
                push_to_hub=args.push_to_hub,
                progress=not args.no_progress,
                overwrite=args.overwrite,
            )
        except NonFiniteLossError as e:
            print(f"{prog}: {e}", file=sys.stderr)
            return 3
    except USER_ERRORS as e:
        return _error(str(e), prog)
    except KeyboardInterrupt:  # the checkpoints are written atomically: the last complete one is intact
        print(f"{prog}: interrupted; {_resume_hint(recipe)}", file=sys.stderr)
        return 130
    except PublishError as e:  # the run itself finished; the message says how to publish it again
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 4
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        return _error(disk_full_message(Path(e.filename or getattr(recipe, "output_dir", None) or ".")), prog)
    if summary.get("complete"):
        print(
            f"{summary['run_dir']} holds this recipe's finished run ({summary['steps']} optimizer steps); "
            "nothing was changed. Train it again with --overwrite, or elsewhere with --output_dir."
        )
    if summary.get("paths"):
        _print_summary(summary)
    return 0


def _resume_hint(recipe) -> str:
    """Where an interrupted run can go on from: its last complete checkpoint, or none yet."""
    if recipe is None:
        return "nothing was started"
    last = run_dir_of(recipe) / "checkpoints" / "last.pt"
    if last.is_file():
        return f"its last complete checkpoint is {last}: go on with --resume auto (the same command plus --resume auto)"
    return "it stopped before its first checkpoint: run the same command again to start over"


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
    print("results:" if summary.get("complete") else "written:")
    for k, v in summary["paths"].items():
        print(f"  {k:<12} {v}")
    print("=" * 72)
