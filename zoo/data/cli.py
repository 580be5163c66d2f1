"""``zoo data``: dataset commands (``zoo data shard FOLDER --out DIR`` writes an image folder as shards).

``add_arguments(parser)`` declares the subcommands and ``run(args)`` runs the one named; ``zoo/cli.py`` mounts the
pair.
"""

import argparse

from . import shards

__all__ = ["add_arguments", "run"]

# subcommand: (help, add_arguments, run)
SUBCOMMANDS = {
    "shard": ("an image folder as tar shards (WebDataset's layout) with an index", shards.add_arguments, shards.run),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``zoo data``'s subcommands and their arguments."""
    sub = p.add_subparsers(dest="data_command", required=True)
    for name, (help_text, add, _) in SUBCOMMANDS.items():
        add(sub.add_parser(name, help=help_text))


def run(args: argparse.Namespace) -> int:
    """Run the subcommand named."""
    return SUBCOMMANDS[args.data_command][2](args)
