"""The ``zoo`` command (also ``python -m zoo``): a table of subcommands.

Each command's ``add_arguments(parser)`` declares its options and its ``run(args)`` does the work, beside the code it
drives; this module mounts them in the order of :data:`COMMANDS` and turns the errors a user can cause (an unknown
model, a checkpoint that does not load, a bad value) into one line on stderr and exit status 2, and Ctrl-C into one
line and status 130 (as ``train.py``). Adding a command is one row here. ``zoo train`` and ``zoo eval`` hand their
whole command line to the training engine and the evaluator (:data:`PASSTHROUGH`), which ``train.py`` and ``eval.py``
run too. The README's and the docs' command tables are generated from this table (``tools/commands.py``).
"""

import argparse
import sys

from . import bench, evaluate, profile_cli, publish_cli, registry_cli, run_cli
from .compress import cli as prune_cli
from .condense import cli as condense_cli
from .data import cli as data_cli
from .export import cli as export_cli
from .registry import UnknownModelError
from .train import cli as train_cli
from .weights import CheckpointError


def _passthrough(parser: argparse.ArgumentParser) -> None:
    """The rest of the command line, as typed, for the entry point's own parser (its ``--help`` too)."""
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="the options of the command (--help lists them)")


def _train(args: argparse.Namespace) -> int:
    return train_cli.main(args.argv, prog="zoo train")


def _eval(args: argparse.Namespace) -> int:
    return evaluate.main(args.argv, prog="zoo eval")


# (name, help, add_arguments, run), in the order `zoo --help` lists them
COMMANDS = (
    (
        "list",
        "list registered models with reference params / MACs / top-1",
        registry_cli.add_list_arguments,
        registry_cli.run_list,
    ),
    (
        "info",
        "family, paper, reference figures and pretrained cfg of a model",
        registry_cli.add_info_arguments,
        registry_cli.run_info,
    ),
    (
        "run",
        "build a model and run it on a seeded synthetic input (images, or a language model's prompt)",
        run_cli.add_arguments,
        run_cli.run,
    ),
    ("profile", "params, MACs (fvcore), latency and memory", profile_cli.add_arguments, profile_cli.run),
    (
        "train",
        "train a model from a YAML recipe and overrides (as python train.py: --config FILE, --help for the options)",
        _passthrough,
        _train,
    ),
    (
        "eval",
        "evaluate models on held-out data: top-1 / perplexity, params, MACs (as python eval.py)",
        _passthrough,
        _eval,
    ),
    (
        "condense",
        "dataset distillation: a few synthetic images per class that train almost like the data",
        condense_cli.add_arguments,
        condense_cli.run,
    ),
    (
        "data",
        "datasets: `zoo data shard FOLDER --out DIR` writes an image folder as shards",
        data_cli.add_arguments,
        data_cli.run,
    ),
    (
        "bench",
        "the benchmarks, one subcommand each: families against their peers, deployed forms, weight formats, training, "
        "data pruning, condensation, the model table (zoo bench -h lists them)",
        bench.add_arguments,
        bench.run,
    ),
    (
        "convert",
        "convert a checkpoint of any supported origin (the authors', timm's, transformers') into a zoo folder: "
        "model.safetensors, config.json, card",
        publish_cli.add_convert_arguments,
        publish_cli.run_convert,
    ),
    (
        "export",
        "write a deployment artefact (torch.export pt2, ONNX, the LMs' compiled pte, GGUF) with its card",
        export_cli.add_arguments,
        export_cli.run,
    ),
    (
        "prune",
        "structurally prune a model, folder or run (Torch-Pruning's dependency graph) into a loadable folder",
        prune_cli.add_arguments,
        prune_cli.run,
    ),
    (
        "publish",
        "export a training run (weights, config.json, model card) and upload it to the Hub",
        publish_cli.add_publish_arguments,
        publish_cli.run_publish,
    ),
)


# the commands whose whole command line (--help included) is their entry point's own: no option is read here
PASSTHROUGH = ("train", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="A model zoo of compact, efficient backbones.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add_arguments, run in COMMANDS:
        # a pass-through command reads no option itself: every word after its name is handed on, --help included
        own = {"add_help": False, "prefix_chars": "\0"} if name in PASSTHROUGH else {}
        p = sub.add_parser(name, help=help_text, description=help_text, **own)
        add_arguments(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    typed = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(typed)
    args.typed = typed[1:]  # the command line after the command's name, as typed (a results file records it)
    try:
        return args.func(args)
    except (UnknownModelError, CheckpointError, ValueError, TypeError) as e:
        print(f"zoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # every command writes its outputs whole (a folder swapped in, a file replaced)
        print(f"zoo {args.command}: interrupted; nothing half-written was kept: run the command again", file=sys.stderr)
        return 130
