"""What every benchmark's command shares: its common options, its ``--out`` checks and the command line it records.

Each benchmark module declares its own options (``add_arguments``) beside its code and calls these for the ones the
benchmarks share, so that ``--runs 0`` or a ``--out`` naming a link is refused the same way, before any work, by every
``zoo bench NAME``.
"""

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from ..layers.args import int_between
from .harness import check_results_file, command_line

__all__ = [
    "add_common",
    "add_configs",
    "add_out",
    "check_out",
    "csv_of",
    "recipe_path",
    "recorded_command",
    "refuse",
    "usage_error",
]


def csv_of(kind: type):
    """An argparse type: a comma-separated list of ``kind`` (positive, for ints)."""

    def parse(text: str) -> list:
        try:
            values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if not values or (kind is int and min(values) < 1):
            raise argparse.ArgumentTypeError("expected a comma-separated list of positive values")
        return values

    return parse


def add_common(
    parser: argparse.ArgumentParser,
    models_help: str,
    batch_sizes: bool = True,
    timing: bool = True,
    warmup: int = 2,
) -> None:
    """``--models``, ``--threads``, ``--json`` and, for a timed benchmark, ``--batch-sizes``, ``--runs``, ``--warmup``
    (``warmup`` passes by default)."""
    parser.add_argument("--models", type=csv_of(str), default=None, help=models_help)
    if batch_sizes:
        parser.add_argument("--batch-sizes", type=csv_of(int), default=None, help="comma-separated batch sizes")
    if timing:
        parser.add_argument(
            "--runs", type=int_between(1), default=None, help="timed rounds per candidate (default: by batch size)"
        )
        parser.add_argument(
            "--warmup", type=int_between(0), default=warmup, help=f"warm-up passes per candidate (default: {warmup})"
        )
    parser.add_argument(
        "--threads", type=int_between(1, 1024), default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")


def add_configs(parser: argparse.ArgumentParser, what: str) -> None:
    """``--configs DIR``: the folder of training recipes ``what`` reads; a path like any other, so the default
    ``configs`` is the working directory's (the zoo's checkout keeps its recipes there)."""
    parser.add_argument(
        "--configs",
        type=Path,
        default=Path("configs"),
        metavar="DIR",
        help=f"the folder of recipes (NAME.yaml) that {what} reads (default: ./configs, the zoo checkout's)",
    )


def recipe_path(configs: Path, name: str, why: str) -> Path:
    """``configs/NAME.yaml``; ValueError naming the file and ``--configs`` when it is not there."""
    path = configs / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(
            f"{why} reads the recipe {path}, which is not there: pass --configs DIR, a folder holding {name}.yaml "
            "(configs/ in the zoo's checkout)"
        )
    return path


def add_out(parser: argparse.ArgumentParser, results_file: str) -> None:
    """``--out``: the results file (``results/NAME.json``) a run merges into."""
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"merge the run into this results file ({results_file}), replacing the rows it measured again",
    )


def check_out(out: Path | None, kind: str) -> str | None:
    """Why ``--out`` cannot take this run's results, or None: checked before anything is measured."""
    if out is None:
        return None
    if out.suffix != ".json":
        return f"--out {out}: a results file is JSON (results/NAME.json)"
    try:
        check_results_file(out, kind)
    except ValueError as e:
        return str(e)
    return None


def refuse(message: str) -> int:
    """One line on stderr in ``zoo bench``'s words; the exit status of a refused run."""
    print(f"zoo bench: error: {message}", file=sys.stderr)
    return 2


def recorded_command(args: argparse.Namespace) -> str:
    """The command line of this run as it was typed, for its results file (``zoo bench ...`` by default)."""
    typed = getattr(args, "typed", None)
    if typed is None:
        typed = sys.argv[1:]
        typed = typed[1:] if typed[:1] == ["bench"] else typed
    return command_line("zoo bench", typed)


def usage_error(args: argparse.Namespace, message: str) -> NoReturn:
    """A refused command line, as argparse refuses one: one line naming the command, exit status 2."""
    print(f"zoo bench: error: {message}", file=sys.stderr)
    raise SystemExit(2)
