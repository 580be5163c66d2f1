"""The zoo checkout's model cards and model table, regenerated (or checked) from the code.

A maintainer's tool of the checkout, not part of the installed package: it writes ``model_cards/`` and the table of
``docs/models/index.md`` (between its markers) under ``--root``, by default this checkout.

    python tools/cards.py            # (re)write model_cards/ and the model table
    python tools/cards.py --check    # exit 1, listing the files, if any of them differs from what the code gives
"""

import argparse
import sys
from pathlib import Path

from zoo import cards

REPO = Path(__file__).resolve().parents[1]  # the checkout this tool sits in


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and list the files that differ from what the code gives",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO,
        help=f"the checkout holding {cards.TABLE_PAGE} and model_cards/ (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not (root / cards.TABLE_PAGE).is_file():
        print(f"tools/cards.py: error: no {cards.TABLE_PAGE} under {root.resolve()} (pass --root)", file=sys.stderr)
        return 2
    if not args.check:
        try:  # fail before the (slow) profiling if the table page has no table markers
            cards.replace_readme_table((root / cards.TABLE_PAGE).read_text(encoding="utf-8"), "")
        except ValueError as e:
            print(f"tools/cards.py: error: {e}", file=sys.stderr)
            return 2
    rows = cards.collect(progress=not args.no_progress)
    if args.check:
        differ = cards.check(root, rows=rows)
        if differ:
            print(f"tools/cards.py: {len(differ)} file(s) out of date with the code:", file=sys.stderr)
            for rel in differ:
                print(f"  {rel}", file=sys.stderr)
            print("run `python tools/cards.py` to regenerate them", file=sys.stderr)
            return 1
        print(f"tools/cards.py: {len(rows)} cards, the cards index and the model table are in sync with the code")
        return 0
    try:
        changed = cards.write_all(root, rows=rows)
    except ValueError as e:
        print(f"tools/cards.py: error: {e}", file=sys.stderr)
        return 2
    for rel in changed:
        print(f"wrote {rel}" if (root / rel).exists() else f"removed {rel}")
    print(f"tools/cards.py: {len(rows)} models, {len(changed)} file(s) changed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/cards.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
