"""Model cards and the model table (docs/models/index.md) are generated from the code and stay in sync with it
(zoo/cards/).

Profiling every model is the slow part: ``collect()`` runs once for this module, by default on the series that
tests/profile/test_profile.py does not measure by default and one MetaFormer (``rows``), under ``-m slow`` (CI) on the
smallest model of every series (``series_rows``: their cards, and the table's and index's rows against the registry
with every model's params counted on the meta device), and on every model under ``-m sweep`` (``all_rows``: the full
drift check against the committed files, as ``python tools/cards.py --check`` runs it). The other sizes of a series
run the same code at other widths and depths.
"""

import copy
import re
import shutil
from pathlib import Path

import pytest
import torch
from maintainer_tools import load
from model_checks import PROFILED_BY_DEFAULT
from model_groups import series, smallest_of_each

import zoo
from zoo import cards
from zoo.profile import count_params

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rows():
    """The series whose params and MACs tests/profile/test_profile.py does not measure by default, and one
    MetaFormer."""
    measured = set(PROFILED_BY_DEFAULT)
    return cards.collect(
        [n for n in smallest_of_each(zoo.list_models(task="image-classification"), series) if n not in measured]
        + ["poolformer_s12"],
        progress=False,
    )


@pytest.fixture(scope="module")
def series_rows():
    """The smallest model of every vision series, measured."""
    return cards.collect(smallest_of_each(zoo.list_models(task="image-classification"), series), progress=False)


@pytest.fixture(scope="module")
def all_rows():
    return cards.collect(progress=False)


@pytest.fixture(scope="module")
def counted_rows():
    """Every vision model's table fields but its MACs: params counted on the meta device, the rest from the
    registry (what orders the table and fills its other columns)."""
    rows = []
    for name in zoo.list_models(task="image-classification"):
        info = zoo.model_info(name)
        with torch.device("meta"):
            params = count_params(zoo.create_model(name))["params"]
        rows.append(
            dict(
                name=name,
                family=info["family"],
                task=info["task"],
                params=params,
                top1=info["reference"]["top1"],
                timm_owns_name=bool(info["timm_owns_name"]),
            )
        )
    return rows


@pytest.fixture(scope="module")
def lm_rows():
    """Every language model: counted on the meta device, so cheap enough for the default run."""
    return cards.collect(zoo.list_models(task="text-generation"), progress=False)


def _vision(rows):
    return [r for r in rows if r["task"] == "image-classification"]


@pytest.mark.slow  # one model of every series built and counted: outside the 4-minute default run
def test_cards_of_one_model_per_series_match_the_committed_files(series_rows):
    """CI's drift test of the cards; the full one (every card, the index, the table) is -m sweep."""
    for row in series_rows:
        assert cards.render_card(row) == (REPO / "model_cards" / f"{row['name']}.md").read_text(), row["name"]


def _check_measured(rows):
    for row in rows:
        ref = zoo.model_info(row["name"])["reference"]
        assert row["params"] == ref["params"], row["name"]
        assert abs(row["macs"] / ref["macs"] - 1) < 0.02, row["name"]
        cfg_size = list(zoo.model_info(row["name"])["pretrained_cfg"]["input_size"])
        assert row["flops"] == 2 * row["macs"] and row["input_size"] == cfg_size


@pytest.mark.slow  # one model of every series built and counted (outside the 4-minute default run)
def test_rows_measure_their_models(series_rows):
    _check_measured(series_rows)


@pytest.fixture
def tree(tmp_path):
    """A copy of the committed table page and model_cards/."""
    root = tmp_path / "repo"
    (root / cards.TABLE_PAGE).parent.mkdir(parents=True)
    shutil.copy(REPO / cards.TABLE_PAGE, root / cards.TABLE_PAGE)
    shutil.copytree(REPO / "model_cards", root / "model_cards")
    return root


def _readme_table_rows(text):
    block = text.split(cards.TABLE_START, 1)[1].split(cards.TABLE_END, 1)[0]
    return re.findall(
        r"^\| `(\w+)` \| ([\d,]+)(?: \(dense\))? \| ([\d.]+)(?: \(@\d+x\d+\))?(?: \(dense\))? \| "
        r"([\d.]+|-) \| ([^|]+) \|$",
        block,
        flags=re.M,
    )


@pytest.mark.slow
@pytest.mark.sweep  # every model profiled: CI checks one of each series (above) and the table's rows (below)
def test_committed_cards_and_readme_are_in_sync_with_the_code(all_rows):
    """The drift test: regenerate everything in memory and compare with the committed files."""
    assert cards.check(REPO, rows=all_rows) == [], "run `python tools/cards.py` and commit the result"


@pytest.mark.slow
@pytest.mark.sweep
def test_rows_measure_every_registered_model(all_rows):
    assert sorted(r["name"] for r in all_rows) == zoo.list_models()
    _check_measured(_vision(all_rows))


def _series_tree(root, series_rows):
    """``root`` (a copy of the committed files) kept to the cards of ``series_rows`` and their table and index:
    ``cards.check`` with those rows then compares exactly what they render."""
    for card in (root / "model_cards").glob("*_*.md"):
        if card.stem not in {r["name"] for r in series_rows}:
            card.unlink()
    files = cards.render_all(series_rows, (root / cards.TABLE_PAGE).read_text())
    for rel in (cards.TABLE_PAGE, "model_cards/README.md"):
        (root / rel).write_text(files[rel])
    assert cards.check(root, rows=series_rows) == []
    return root


@pytest.mark.slow
def test_a_card_edited_by_hand_is_detected(series_rows, tree):
    root = _series_tree(tree, series_rows)
    card = root / "model_cards" / "poolformer_s12.md"
    text = card.read_text()
    line = next(row for row in text.splitlines() if row.startswith("| Params (measured) |"))
    assert "11,915,176" in line
    card.write_text(text.replace(line, line.replace("11,915,176", "11,915,177")))
    assert cards.check(root, rows=series_rows) == ["model_cards/poolformer_s12.md"]


@pytest.mark.slow
def test_code_that_changes_params_or_macs_is_detected(series_rows, tree):
    """The files against rows as if the code had changed: the card, the index and the table differ."""
    root = _series_tree(tree, series_rows)
    changed = copy.deepcopy(series_rows)
    row = next(r for r in changed if r["name"] == "caformer_s18")
    row["params"] += 1
    assert cards.check(root, rows=changed) == [cards.TABLE_PAGE, "model_cards/README.md", "model_cards/caformer_s18.md"]
    changed = copy.deepcopy(series_rows)
    row = next(r for r in changed if r["name"] == "randformer_s12")
    row["macs"] += 10_000_000  # 0.010 GMACs: shows in the card (3 decimals) and the table (2 decimals)
    row["flops"] = 2 * row["macs"]
    assert cards.check(root, rows=changed) == [
        cards.TABLE_PAGE,
        "model_cards/README.md",
        "model_cards/randformer_s12.md",
    ]


@pytest.mark.parametrize("name", zoo.list_models(task="image-classification"))
def test_card_front_matter_parses_and_carries_the_paper_top1(name):
    from huggingface_hub import ModelCard

    info = zoo.model_info(name)
    card = ModelCard.load(REPO / "model_cards" / f"{name}.md")
    data = card.data
    assert data.model_name == name and data.license == info["license"] and data.library_name == "zoo"
    assert data.tags == ["image-classification", "zoo", info["family"]]
    if info["reference"]["top1"] is None:  # the authors give no figure: no eval result is claimed
        assert not data.eval_results
    else:
        (result,) = data.eval_results
        assert result.metric_value == info["reference"]["top1"]
        assert (result.task_type, result.dataset_type, result.metric_type, result.metric_name) == (
            "image-classification",
            "imagenet-1k",
            "accuracy",
            "top-1",
        )
        assert result.verified is False and info["paper_ids"] in result.source_name
    usage = (
        f'zoo.create_model("{name}", pretrained=True)'
        if name in zoo.list_pretrained()
        else f'zoo.create_model("{name}", pretrained=True,'
    )
    assert usage in card.text


def _check_table(rows, measured):
    """The committed table against ``rows`` (every vision model): names, order, params, top-1 and timm status; the
    GMACs of the models in ``measured``."""
    table = _readme_table_rows((REPO / cards.TABLE_PAGE).read_text())
    by_name = {r["name"]: r for r in rows}
    macs = {r["name"]: r["macs"] for r in _vision(measured)}
    assert sorted(r[0] for r in table) == zoo.list_models(task="image-classification")
    assert [r[0] for r in table] == [r["name"] for r in cards.ordered(_vision(rows))]
    for name, params, gmacs, top1, in_timm in table:
        assert int(params.replace(",", "")) == by_name[name]["params"], name
        if name in macs:  # 2 decimals; 3 significant digits below 1 GMAC
            assert gmacs == cards.text._gmacs(macs[name], 2), name
        assert (None if top1 == "-" else float(top1)) == by_name[name]["top1"], name
        assert in_timm == ("yes (timm keeps its own)" if by_name[name]["timm_owns_name"] else "no (registered by zoo)")
    assert set(macs) <= set(by_name)


@pytest.mark.slow
def test_readme_table_rows_are_the_registry_with_counted_params(counted_rows, series_rows):
    """CI's drift test of the table: every model's row (params counted on the meta device), one model of each
    series' GMACs."""
    _check_table(counted_rows, series_rows)


@pytest.mark.slow
@pytest.mark.sweep
def test_readme_table_rows_are_the_registry_with_measured_figures(all_rows):
    _check_table(all_rows, all_rows)


@pytest.mark.slow
def test_table_order_is_family_variant_size(counted_rows):
    names = [r["name"] for r in cards.ordered(counted_rows)]
    assert names[:6] == [
        "poolformer_s12",
        "poolformer_s24",
        "poolformer_s36",
        "poolformer_m36",
        "poolformer_m48",
        "identityformer_s12",
    ]
    metaformer = [n for n in names if n in zoo.list_models(family="metaformer")]
    assert metaformer[-4:] == ["caformer_s18", "caformer_s36", "caformer_m36", "caformer_b36"]
    assert names.index("caformer_b36") < names.index("sret_tiny")  # families in order, MetaFormer first
    assert names.index("randformer_m48") < names.index("poolformerv2_s12") < names.index("convformer_s18")


def test_cards_are_deterministic_and_carry_no_tool_versions(rows):
    import huggingface_hub
    import torch

    for row in rows[:3]:
        text = cards.render_card(row)
        assert text == cards.render_card(copy.deepcopy(row))
        assert torch.__version__ not in text and huggingface_hub.__version__ not in text
    assert cards.render_readme_table(rows) == cards.render_readme_table(list(reversed(rows)))


def test_write_all_only_touches_the_marked_block(rows, tmp_path):
    before, after = "# title\n\nintro  \n\n", "\ntail\r\n"
    readme = f"{before}{cards.TABLE_START}\nold table\n{cards.TABLE_END}{after}"
    page = tmp_path / cards.TABLE_PAGE
    page.parent.mkdir(parents=True)
    page.write_bytes(readme.encode())
    written = cards.write_all(tmp_path, rows=rows)
    assert len(written) == len(rows) + 2 and cards.TABLE_PAGE in written
    text = page.read_bytes().decode()
    assert text.startswith(before + cards.TABLE_START + "\n") and text.endswith(cards.TABLE_END + after)
    assert "old table" not in text and cards.render_readme_table(rows) in text
    assert cards.check(tmp_path, rows=rows) == []
    assert cards.write_all(tmp_path, rows=rows) == []  # nothing to do the second time
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files


def test_write_all_refuses_a_readme_without_markers(rows, tmp_path):
    (tmp_path / cards.TABLE_PAGE).parent.mkdir(parents=True)
    (tmp_path / cards.TABLE_PAGE).write_text("# no table markers here\n")
    with pytest.raises(ValueError, match="model-table:start"):
        cards.write_all(tmp_path, rows=rows)
    assert not (tmp_path / "model_cards").exists()
    assert cards.TABLE_PAGE in cards.check(tmp_path, rows=rows)


@pytest.mark.slow
def test_stale_and_missing_cards_are_reported(series_rows, tree):
    root = _series_tree(tree, series_rows)
    (root / "model_cards" / "gone_s12.md").write_text(f"{cards.GENERATED}\n# gone_s12\n")
    (root / "model_cards" / "NOTES.md").write_text("hand-written, not generated\n")
    (root / "model_cards" / "convformer_s18.md").unlink()
    assert cards.check(root, rows=series_rows) == ["model_cards/convformer_s18.md", "model_cards/gone_s12.md"]
    cards.write_all(root, rows=series_rows)
    assert not (root / "model_cards" / "gone_s12.md").exists() and (root / "model_cards" / "NOTES.md").exists()
    assert cards.check(root, rows=series_rows) == []


@pytest.mark.slow
def test_command_line_check(series_rows, tree, monkeypatch, capsys):
    root = _series_tree(tree, series_rows)
    tool = load("cards")  # tools/cards.py: the checkout's cards, a maintainer's tool
    monkeypatch.setattr(cards, "collect", lambda names=None, progress=True: series_rows)
    assert tool.main(["--check", "--root", str(root), "--no-progress"]) == 0
    (root / "model_cards" / "poolformer_s12.md").write_text("edited\n")
    assert tool.main(["--check", "--root", str(root), "--no-progress"]) == 1
    assert "model_cards/poolformer_s12.md" in capsys.readouterr().err
    assert tool.main(["--root", str(root), "--no-progress"]) == 0
    assert cards.check(root, rows=series_rows) == []


def test_sparse_models_show_dense_and_the_papers_nonzero_figures(rows):
    """SLaK: measured figures are dense; the card, the index and the table's note carry the paper's non-zero ones."""
    text = (REPO / cards.TABLE_PAGE).read_text()
    block = text.split(cards.TABLE_START, 1)[1].split(cards.TABLE_END, 1)[0]
    index = (REPO / "model_cards" / "README.md").read_text()
    for row in rows:
        ref = zoo.model_info(row["name"])["reference"]
        line = next(x for x in block.splitlines() if x.startswith(f"| `{row['name']}` |"))
        card = (REPO / "model_cards" / f"{row['name']}.md").read_text()
        entry = next(x for x in index.splitlines() if x.startswith(f"- [`{row['name']}`]"))
        if "nonzero_params" not in ref:
            assert "(dense)" not in line and "non-zero" not in card and "non-zero" not in entry
            continue
        params, gmacs = f"{ref['nonzero_params'] / 1e6:g}M", f"{ref['nonzero_macs'] / 1e9:.1f}"
        assert f"| {row['params']:,} (dense) | {row['macs'] / 1e9:.2f} (dense) |" in line
        assert f"`{row['name']}` {params} / {gmacs}" in block  # the note under the table
        assert f"| Params (measured, dense) | {row['params']:,} |" in card
        assert f"| Params, non-zero (paper, 40% sparse) | {params} |" in card
        assert f"| GMACs, non-zero (paper, 40% sparse) | {gmacs} |" in card
        assert "**Dense vs non-zero**" in card and "count every weight, zeros included" in card
        assert f"{params} params, {gmacs} GMACs" in entry
    assert "(dense): a sparse model" in block and "counts only the non-zero weights" in block


def test_every_language_model_has_its_committed_card(lm_rows):
    """The language models' cards against the committed files (cheap: params counted on the meta device)."""
    assert [r["name"] for r in lm_rows] == zoo.list_models(task="text-generation") and len(lm_rows) == 20
    index = (REPO / "model_cards" / "README.md").read_text()
    for row in lm_rows:
        assert cards.render_card(row) == (REPO / "model_cards" / f"{row['name']}.md").read_text(), row["name"]
        assert f"- [`{row['name']}`]({row['name']}.md): {row['params']:,} params" in index
    # the LMs are not in the image classifiers' table
    assert "mobilellm_125m" not in cards.render_readme_table(lm_rows)


def test_language_model_rows_count_the_authors_params(lm_rows):
    for row in lm_rows:
        info = zoo.model_info(row["name"])
        assert row["params"] == info["reference"]["params"], row["name"]
        assert row["family"] in ("mobilellm", "recursive") and row["task"] == "text-generation"
    by_name = {r["name"]: r for r in lm_rows}
    # MobileLLM-125M: 30 layers x 3 KV heads x 64 x (keys + values) x 4 bytes
    assert by_name["mobilellm_125m"]["kv_cache_bytes_per_token"] == 30 * 3 * 64 * 2 * 4
    assert by_name["mobilellm_125m_ls"]["kv_cache_bytes_per_token"] == 2 * 30 * 3 * 64 * 2 * 4  # each layer run twice


@pytest.mark.parametrize("name", zoo.list_models(task="text-generation"))
def test_language_model_card_front_matter_and_usage(name):
    from huggingface_hub import ModelCard

    info = zoo.model_info(name)
    card = ModelCard.load(REPO / "model_cards" / f"{name}.md")
    data = card.data
    assert data.model_name == name and data.license == info["license"] and data.library_name == "zoo"
    assert data.tags == ["text-generation", "zoo", info["family"]] and data.pipeline_tag == "text-generation"
    assert cards.FAMILY_TITLES[info["family"]] in card.text
    pretrained = "hf_hub_id" in info["pretrained_cfg"]
    assert (f'zoo.create_model("{name}", pretrained=True)' in card.text) == pretrained
    assert "model.generate(ids" in card.text


def test_family_names_are_written_one_way():
    """Every family has a display name; the cards index heads each family with it."""
    index = (REPO / "model_cards" / "README.md").read_text()
    for family in {zoo.model_info(n)["family"] for n in zoo.list_models()}:
        assert f"## {cards.FAMILY_TITLES[family]}" in index, family
