"""README.md and the documentation site: links that resolve, the commands CI runs, the length of the tour.

``mkdocs build --strict`` (in .ci/run, with the ``docs`` extra) checks the site's own links and pages; these checks
cover what MkDocs does not read: the README.
"""

import json
import re
from pathlib import Path

import pytest

from zoo.bench import headline

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


# the results tables on the pages are generated from results/ (zoo.bench.headline): a figure typed by hand fails here


def test_generated_tables_match_their_results_files():
    stale = headline.check(REPO)
    assert stale == [], f"tables that differ from results/: {stale}; run `zoo bench headline --write`"


def test_a_figure_typed_by_hand_is_caught():
    page = REPO / "docs" / "benchmarks.md"
    text = page.read_text()
    assert "<!-- headline:start -->" in text and "| 88.4% top-1 |" in text
    edited = text.replace("| 88.4% top-1 |", "| 88.5% top-1 |")
    assert headline.refresh(edited, REPO / "results") == text  # the file's figure comes back


def test_every_marked_table_is_one_the_generator_knows():
    with pytest.raises(headline.ResultsError, match="names no generated table"):
        headline.refresh("<!-- model_tabel:start -->\n| x |\n<!-- model_tabel:end -->\n", REPO / "results")


def test_one_provenance_line_per_machine():
    amd = {"cpu": "AMD EPYC (AVX2), 2 cores", "threads": "2", "torch": None, "date": "2026-11-23"}
    xeon = {"cpu": "Intel(R) Xeon(R) Processor", "threads": "1", "torch": "2.15.0", "date": "2026-11-25 01:30 UTC"}
    assert (
        headline.provenance_line([xeon, {**xeon, "threads": "2"}])
        == "Intel Xeon, 1-2 threads, torch 2.15.0; 2026-11-25"
    )
    assert "torch not recorded" in headline.provenance_line([amd])
    with pytest.raises(ValueError, match="one provenance line per machine"):
        headline.provenance_line([amd, xeon])


def test_results_json_files_carry_provenance():
    files = sorted((REPO / "results").rglob("*.json"))
    assert len(files) >= 3
    for f in files:
        doc = json.loads(f.read_text())
        provs = [doc["provenance"]] if "provenance" in doc else []
        provs += [part["provenance"] for part in doc.get("runs", []) if isinstance(part, dict)]
        provs += [part["provenance"] for part in doc.values() if isinstance(part, dict) and "provenance" in part]
        assert provs, f"{f.name} has no provenance"
        for p in provs:
            assert {"date", "commit", "cpu", "threads", "torch"} <= p.keys(), (f.name, sorted(p))
