"""The command table of README.md and docs/getting_started.md, generated from ``zoo/cli.py``'s table.

A maintainer's tool of the zoo's checkout: every ``zoo`` command of :data:`zoo.cli.COMMANDS` and every benchmark of
:data:`zoo.bench.BENCHMARKS` (``zoo bench -h``) appears once, in their order, with its help line, between the lines
``<!-- command-table:start -->`` and ``<!-- command-table:end -->`` of each page. A command added to the table is a
row of the pages at the next ``--write``; ``--check`` (and ``tests/library/test_docs.py``) fails while a page differs.

    python tools/commands.py            # print the table
    python tools/commands.py --write    # rewrite it on the pages
    python tools/commands.py --check    # exit 1 naming each page whose table differs
"""

import argparse
import re
import sys
from pathlib import Path

from zoo.bench import BENCHMARKS
from zoo.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]  # the checkout this tool sits in
PAGES = ("README.md", "docs/getting_started.md")
START, END = "<!-- command-table:start -->", "<!-- command-table:end -->"
_REGION = re.compile(rf"({re.escape(START)}\n)(.*?)({re.escape(END)})", re.S)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def render() -> str:
    """The table: one row per command, the benchmarks after ``zoo bench``'s own row."""
    rows = ["| command | what it does |", "|---|---|"]
    for name, help_text, *_ in COMMANDS:
        rows.append(f"| `zoo {name}` | {_cell(help_text)} |")
        if name == "bench":
            rows += [f"| `zoo bench {bench}` | {_cell(text)} |" for bench, text, *_ in BENCHMARKS]
    return "\n".join(rows)


def refresh(text: str, where: str) -> str:
    """``text`` with its table rendered again; ValueError when ``where`` has not exactly one pair of markers."""
    if len(_REGION.findall(text)) != 1:
        raise ValueError(f"{where} needs one {START} ... {END} block (on lines of their own)")
    return _REGION.sub(lambda m: f"{m.group(1)}{render()}\n{m.group(3)}", text)


def check(repo: Path = REPO) -> list[str]:
    """The pages (relative paths) whose table differs from :func:`render`."""
    return [page for page in PAGES if refresh((repo / page).read_text(), page) != (repo / page).read_text()]


def write(repo: Path = REPO) -> list[str]:
    """Rewrite the stale tables; returns the pages changed."""
    changed = check(repo)
    for page in changed:
        path = repo / page
        path.write_text(refresh(path.read_text(), page))
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python tools/commands.py", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the table on every page")
    mode.add_argument("--check", action="store_true", help="exit 1 if a page's table differs from zoo/cli.py's")
    ap.add_argument("--repo", type=Path, default=REPO, help="the checkout holding the pages (default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        if args.write:
            for page in write(args.repo):
                print(f"rewrote {page}")
            return 0
        if args.check:
            stale = check(args.repo)
            for page in stale:
                print(f"stale: {page} (python tools/commands.py --write renders it)", file=sys.stderr)
            return 1 if stale else 0
    except ValueError as e:
        print(f"tools/commands.py: error: {e}", file=sys.stderr)
        return 2
    print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
