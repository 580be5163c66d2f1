"""No write replaces a user's file: ``save_pretrained`` into a folder keeps a README the zoo did not write, refuses
a config.json it did not write (before writing anything), removes the zoo's own files of an earlier save that the
new one does not write; ``push_to_hub`` / ``zoo publish`` write cards into the zoo's own checkout only, and name no
temporary folder that is gone; a language model's ``save_pretrained`` takes the documented ``tokenizer_file=``.
"""

import inspect
import json
from pathlib import Path

import pytest
from small_lms import SMALL, tiny_lm_args

import zoo
from zoo import publish
from zoo.publish import PublishError

USERS_README = "# My notes\n\nwritten by hand\n"
USERS_CONFIG = '{"my": "settings"}\n'


def _vision():
    return zoo.create_model("convnet_d3", num_classes=3)


def _lm():
    return zoo.create_model("mobilellm_125m", **dict(SMALL, vocab_size=64))  # the tokenizer's vocabulary


def _tokenizer(tmp_path):
    from zoo.data.text import bundled_corpus, train_bpe_tokenizer

    path = tmp_path / "tok" / "tokenizer.json"
    path.parent.mkdir()
    train_bpe_tokenizer(list(bundled_corpus().values())[:20], 64, path)
    return path


def test_a_users_readme_is_kept(tmp_path):
    (tmp_path / "README.md").write_text(USERS_README)
    _vision().save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == USERS_README
    assert zoo.create_model(str(tmp_path), pretrained=True).num_classes == 3


FOREIGN_CONFIGS = [
    ("a user's config.json", USERS_CONFIG),
    ("a config.json that is not JSON", "not json"),
    ("a config.json that is a list", "[1, 2]"),
]


@pytest.mark.parametrize("what, text", FOREIGN_CONFIGS, ids=[c[0] for c in FOREIGN_CONFIGS])
@pytest.mark.parametrize("make", [_vision, _lm], ids=["vision", "lm"])
def test_a_config_the_zoo_did_not_write_is_refused_before_anything_is_written(tmp_path, what, text, make):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(PublishError, match="was not written by the zoo"):
        publish.export_pretrained(make(), tmp_path, latency_runs=0)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"] and (tmp_path / "config.json").read_text() == text


LEFTOVERS = [
    ("an LM's generation_config.json beside a vision save", _lm, ["generation_config.json", "tokenizer.json"]),
]


@pytest.mark.parametrize("what, first, gone", LEFTOVERS, ids=[c[0] for c in LEFTOVERS])
def test_the_zoos_files_of_an_earlier_save_are_removed(tmp_path, what, first, gone):
    folder = tmp_path / "m"
    first().save_pretrained(folder, tokenizer_file=_tokenizer(tmp_path))
    assert all((folder / n).is_file() for n in gone)
    (folder / "notes.txt").write_text("mine")
    _vision().save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "notes.txt"]
    assert json.loads((folder / "config.json").read_text())["architecture"] == "convnet_d3"


def test_a_file_as_the_folder_is_refused(tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(PublishError, match="is a file"):
        _vision().save_pretrained(tmp_path / "f")
    assert (tmp_path / "f").read_text() == "mine"


def test_an_lm_save_pretrained_takes_tokenizer_file(tmp_path):
    tok = _tokenizer(tmp_path)
    _lm().save_pretrained(tmp_path / "m", tokenizer_file=tok)
    assert (tmp_path / "m" / "tokenizer.json").read_bytes() == tok.read_bytes()
    assert zoo.create_model(str(tmp_path / "m"), pretrained=True).config.vocab_size == 64


def test_a_card_is_written_only_where_asked_even_from_the_zoo_s_checkout(tmp_path, monkeypatch):
    checkout = Path(zoo.__file__).resolve().parents[1]
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "README.md").write_text("card")
    monkeypatch.chdir(checkout)  # the working directory decides nothing
    before = sorted(p.name for p in checkout.iterdir())
    assert publish.save_published_card(tmp_path / "export", "org/name", None) is None
    assert sorted(p.name for p in checkout.iterdir()) == before
    assert not (checkout / "model_cards" / "published").exists()
    card = publish.save_published_card(tmp_path / "export", "org/name", tmp_path / "cards")
    assert card == tmp_path / "cards" / "org--name.md" and card.read_text() == "card"
    assert inspect.signature(publish.publish_run).parameters["cards_dir"].default is None


def test_a_push_message_names_no_temporary_folder(tmp_path, monkeypatch):
    seen = []

    def fails(folder, *args, **kwargs):
        seen.append(str(folder))
        raise PublishError(f"{folder}/model.safetensors no longer matches: export the folder again")

    monkeypatch.setattr(publish, "upload_folder", fails)
    with pytest.raises(PublishError) as e:
        publish.push_to_hub(_vision(), "org/name", latency_runs=0, cards_dir=None)
    assert seen and seen[0] not in str(e.value) and "pass out_dir= to keep it" in str(e.value)


def _recursive():
    return zoo.create_model("recursive_135m", **tiny_lm_args("recursive_135m"))


PLAIN_LM_SAVES = [("mobilellm", _lm), ("recursive", _recursive)]


@pytest.mark.parametrize("what, text", FOREIGN_CONFIGS, ids=[c[0] for c in FOREIGN_CONFIGS])
@pytest.mark.parametrize("family, make", PLAIN_LM_SAVES, ids=[c[0] for c in PLAIN_LM_SAVES])
def test_a_plain_lm_save_refuses_a_config_the_zoo_did_not_write(tmp_path, family, make, what, text):
    (tmp_path / "config.json").write_text(text)
    (tmp_path / "notes.txt").write_text("mine")
    model = make()
    # (a family without a plain folder of its own saves through zoo.publish: its PublishError)
    with pytest.raises(
        (ValueError, PublishError), match="config.json was not written by the zoo .*Nothing was written"
    ):
        model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "notes.txt"]
    assert (tmp_path / "config.json").read_text() == text
    model.save_pretrained(tmp_path / "m")  # a new folder, and the zoo's own earlier save, are written
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["architecture"]
    with pytest.raises((ValueError, PublishError), match="is a file: save into a folder"):
        model.save_pretrained(tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "mine"
