"""README.md and the documentation site: links that resolve, the commands CI runs, the length of the tour.

``mkdocs build --strict`` (in .ci/run, with the ``docs`` extra) checks the site's own links and pages; these checks
cover what MkDocs does not read: the README.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
from maintainer_tools import load

import zoo.bench
import zoo.cli

headline = load("headline")
commands = load("commands")

REPO = Path(__file__).resolve().parents[2]
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


# the results tables on the pages are generated from results/ (tools/headline.py, driven by results/manifest.json):
# a figure typed by hand fails here


def test_generated_tables_match_their_results_files():
    stale = headline.check(REPO)
    assert stale == [], f"tables that differ from results/: {stale}; run `python tools/headline.py --write`"


def test_a_figure_typed_by_hand_is_caught():
    page = REPO / "docs" / "benchmarks.md"
    text = page.read_text()
    assert "<!-- headline:start -->" in text and "| 88.4% top-1 |" in text
    edited = text.replace("| 88.4% top-1 |", "| 88.5% top-1 |")
    assert headline.refresh(edited, REPO / "results") == text  # the file's figure comes back


def test_every_marked_table_is_one_the_generator_knows():
    with pytest.raises(headline.ResultsError, match="names no generated table"):
        headline.refresh("<!-- model_tabel:start -->\n| x |\n<!-- model_tabel:end -->\n", REPO / "results")


def test_the_manifest_lists_every_table_s_files_and_a_table_reads_no_other(tmp_path):
    listed = headline.manifest(REPO / "results")["tables"]
    assert sorted(listed) == sorted(headline.TABLES)
    missing = [f for files in listed.values() for f in files if not (REPO / "results" / f).is_file()]
    assert missing == []
    results = tmp_path / "results"
    shutil.copytree(REPO / "results", results)
    doc = json.loads((results / headline.MANIFEST).read_text())
    doc["tables"]["train_step"] = ["compress.json"]  # the table still reads train_throughput.json
    (results / headline.MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(headline.ResultsError, match="train_step read train_throughput.json, which .* does not list"):
        headline.refresh("<!-- train_step:start -->\n<!-- train_step:end -->\n", results)


def test_a_new_run_is_one_line_of_the_manifest(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(REPO / "results", results)
    doc = json.loads((results / headline.MANIFEST).read_text())
    before = headline.TABLES["condense_scripts_gpu"](results)
    newer = json.loads((results / "condense/speed_scripts_gpu.json").read_text())
    newer["provenance"]["date"] = "2099-01-01 00:00 UTC"
    for r in newer["scripts"]:
        r["zoo_wall"] = 0.01
    (results / "condense/speed_scripts_gpu_b.json").write_text(json.dumps(newer))
    doc["tables"]["condense_scripts_gpu"].append("condense/speed_scripts_gpu_b.json")
    (results / headline.MANIFEST).write_text(json.dumps(doc))
    assert headline.TABLES["condense_scripts_gpu"](results) != before


def test_the_command_tables_are_zoo_cli_s_table():
    """README.md's and getting_started's command tables are generated from zoo/cli.py: every command and every
    benchmark (`zoo bench -h`) once, `zoo train` and `zoo eval` among them."""
    assert commands.check(REPO) == [], "run `python tools/commands.py --write`"
    table = commands.render()
    names = [name for name, *_ in zoo.cli.COMMANDS] + [f"bench {b}" for b, *_ in zoo.bench.BENCHMARKS]
    assert {"train", "eval"} <= set(names) and "cards" not in names and "bench headline" not in names
    for page in commands.PAGES:
        text = (REPO / page).read_text()
        for name in names:
            assert table.count(f"| `zoo {name}` |") == 1 and text.count(f"| `zoo {name}` |") == 1, (page, name)


def test_a_command_added_to_the_table_makes_the_pages_stale(tmp_path, monkeypatch):
    for page in commands.PAGES:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / page, tmp_path / page)
    assert commands.check(tmp_path) == []
    monkeypatch.setattr(commands, "COMMANDS", (*zoo.cli.COMMANDS, ("hello", "say hello", None, None)))
    assert commands.check(tmp_path) == list(commands.PAGES)
    assert commands.write(tmp_path) == list(commands.PAGES) and commands.check(tmp_path) == []
    assert "| `zoo hello` | say hello |" in (tmp_path / "README.md").read_text()


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
    files = sorted(f for f in (REPO / "results").rglob("*.json") if f.name != headline.MANIFEST)
    assert len(files) >= 3
    for f in files:
        doc = json.loads(f.read_text())
        provs = [doc["provenance"]] if "provenance" in doc else []
        provs += [part["provenance"] for part in doc.get("runs", []) if isinstance(part, dict)]
        provs += [part["provenance"] for part in doc.values() if isinstance(part, dict) and "provenance" in part]
        assert provs, f"{f.name} has no provenance"
        for p in provs:
            assert {"date", "commit", "cpu", "threads", "torch"} <= p.keys(), (f.name, sorted(p))
