"""README.md and the documentation site: links that resolve, the commands CI runs, the length of the tour.

``mkdocs build --strict`` (in .ci/run, with the ``docs`` extra) checks the site's own links and pages; these checks
cover what MkDocs does not read: the README.
"""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _relative_links(text):
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
            yield target.split("#", 1)[0]


def test_readme_links_resolve():
    missing = [t for t in _relative_links(README) if not (REPO / t).exists()]
    assert missing == [], f"README.md links to missing files: {missing}"


def test_readme_is_a_short_tour():
    assert len(README.splitlines()) <= 300


def test_readme_installs_and_tests_the_way_ci_does():
    ci = (REPO / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"' in ci and 'pip install -e ".[dev]"' in README
    assert "\npython -m pytest\n" in ci and "python -m pytest\n" in README


def test_every_docs_page_is_in_the_nav():
    nav = (REPO / "mkdocs.yml").read_text()
    pages = sorted(p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md") if not p.is_symlink())
    pages = [p for p in pages if not p.startswith(("model_cards/", "results/"))]
    assert pages and [p for p in pages if p not in nav] == []
