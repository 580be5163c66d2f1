"""Model cards and the model table of the documentation, generated from the code.

One set of rows, built by :func:`collect` from ``zoo.model_info`` (family, paper, reference figures, pretrained
cfg) and ``zoo.profile`` (measured params and MACs), feeds both

* ``model_cards/<name>.md``: a Hugging Face model card per model (YAML front matter built with
  ``huggingface_hub.ModelCardData`` / ``EvalResult``, then a markdown body), plus the ``model_cards/README.md``
  index, and
* the model table of the documentation's models page (``docs/models/index.md``), between the lines ``<!-- model-table:start -->`` and
  ``<!-- model-table:end -->`` (everything outside the markers is left byte-for-byte as it is).

The output depends only on the code: no dates, tool versions or machine details are embedded, so the same code
gives byte-identical files and :func:`check` can tell when a committed card or table has drifted.

    python -m zoo.cards            # (re)write model_cards/ and the model table under the current directory
    python -m zoo.cards --check    # exit 1, listing the files, if any of them differs from what the code gives

The package by job: :mod:`~zoo.cards.rows` (the rows, their order, the families' names), :mod:`~zoo.cards.text`
(the layout and formatting every card shares), :mod:`~zoo.cards.card` and :mod:`~zoo.cards.lm` (an image
classifier's card, a language model's), :mod:`~zoo.cards.table` (the table and the cards index),
:mod:`~zoo.cards.files` (writing and checking the files), :mod:`~zoo.cards.published` (the card of a published
model); the command (``zoo cards`` mounts :func:`add_arguments` / :func:`run`) is here.
"""

import argparse
import sys
from pathlib import Path

from .card import render_card
from .files import _read, check, render_all, write_all
from .lm import render_lm_card
from .published import _latency_text as _latency_text  # the card's latency line, checked by the tests
from .published import render_published_card
from .rows import FAMILY_ORDER, FAMILY_TITLES, collect, ordered
from .table import (
    CARDS_DIR,
    TABLE_END,
    TABLE_PAGE,
    TABLE_START,
    render_cards_index,
    render_readme_table,
    replace_readme_table,
)
from .text import GENERATED

__all__ = [
    "CARDS_DIR",
    "FAMILY_ORDER",
    "FAMILY_TITLES",
    "GENERATED",
    "TABLE_END",
    "TABLE_PAGE",
    "TABLE_START",
    "add_arguments",
    "check",
    "collect",
    "main",
    "ordered",
    "render_all",
    "render_card",
    "render_lm_card",
    "render_cards_index",
    "render_published_card",
    "render_readme_table",
    "replace_readme_table",
    "run",
    "write_all",
]


# ------------------------------------------------------------------------------------------------------------------
# The command (``python -m zoo.cards``; ``zoo cards`` mounts add_arguments / run)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and list the files that differ from what the code gives",
    )
    parser.add_argument(
        "--root",
        default=".",
        help=f"repository root holding {TABLE_PAGE} and model_cards/ (default: the current directory)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not (root / TABLE_PAGE).is_file():
        print(
            f"zoo cards: error: no {TABLE_PAGE} under {root.resolve()} (run from the repository root or pass --root)",
            file=sys.stderr,
        )
        return 2
    if not args.check:
        try:  # fail before the (slow) profiling if the table page has no table markers
            replace_readme_table(_read(root / TABLE_PAGE), "")
        except ValueError as e:
            print(f"zoo cards: error: {e}", file=sys.stderr)
            return 2
    rows = collect(progress=not args.no_progress)
    if args.check:
        differ = check(root, rows=rows)
        if differ:
            print(f"zoo cards: {len(differ)} file(s) out of date with the code:", file=sys.stderr)
            for rel in differ:
                print(f"  {rel}", file=sys.stderr)
            print("run `python -m zoo.cards` (or `zoo cards`) to regenerate them", file=sys.stderr)
            return 1
        print(f"zoo cards: {len(rows)} cards, the cards index and the model table are in sync with the code")
        return 0
    try:
        changed = write_all(root, rows=rows)
    except ValueError as e:
        print(f"zoo cards: error: {e}", file=sys.stderr)
        return 2
    for rel in changed:
        print(f"wrote {rel}" if (root / rel).exists() else f"removed {rel}")
    print(f"zoo cards: {len(rows)} models, {len(changed)} file(s) changed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.cards", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
