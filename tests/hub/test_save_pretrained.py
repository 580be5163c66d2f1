"""``model.save_pretrained(folder)`` / ``model.push_to_hub(repo)`` on every family: the folder (or repo) rebuilds the
same model with ``zoo.create_model(..., pretrained=True)``, without the caller repeating the build arguments."""

import json
import sys

import pytest
import torch
from small_lms import tiny_lm_args

import zoo
from zoo.layers.saving import HubMixin

# per family: a registered model and arguments that make it small (none of them its registered defaults)
CASES = {
    "poolformer": ("poolformer_s12", dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=5)),
    "caformer": ("caformer_s18", dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 32), num_classes=5)),
    "randformer": ("randformer_s12", dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), img_size=64, num_classes=5)),
    "convnet": ("convnet_d3", dict(width=16, img_size=32, num_classes=5)),
    "slak": (
        "slak_tiny",
        dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), kernel_size=(13, 11, 9, 7, 5), num_classes=5),
    ),
    "sret": ("sret_tiny", dict(img_size=64, recursive_num=(1, 1, 1), num_classes=5)),
    # the language models at their tiny configs (tests/small_lms.py)
    "mobilellm": ("mobilellm_125m", tiny_lm_args("mobilellm_125m")),
    "mobilellm_ls": ("mobilellm_125m_ls", tiny_lm_args("mobilellm_125m_ls")),
    "mor": ("mor_135m", tiny_lm_args("mor_135m")),
}


def _inputs(model):
    if isinstance(model, zoo.lm.decoder.DecoderLM):
        return torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    side = 32 if type(model).__name__ == "ConvNet" else 64  # the ConvNet's flattened classifier fixes its size
    return torch.randn(2, model.in_chans, side, side, generator=torch.Generator().manual_seed(0))


def _outputs(model, x):
    with torch.no_grad():
        out = model.eval()(x)
    return getattr(out, "logits", out)


def _check_same(saved, loaded):
    assert type(loaded) is type(saved)
    assert loaded.state_dict().keys() == saved.state_dict().keys()
    x = _inputs(saved)
    torch.testing.assert_close(_outputs(loaded, x), _outputs(saved, x), rtol=0, atol=0)


# the language models' round trip is tests/models/test_lm_models.py's (every registered LM)
VISION_CASES = [case for case, (name, _) in CASES.items() if zoo.model_info(name)["task"] != "text-generation"]


@pytest.mark.parametrize("case", VISION_CASES)
def test_save_pretrained_round_trips_every_vision_family(case, tmp_path):
    name, kwargs = CASES[case]
    torch.manual_seed(0)
    model = zoo.create_model(name, **kwargs).eval()
    assert isinstance(model, HubMixin)
    folder = model.save_pretrained(tmp_path / case)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    _check_same(model, zoo.create_model(str(folder), pretrained=True))


def test_one_save_pretrained_signature_for_every_family():
    """No family overrides the method: they differ by the two hooks (the family file's ``save_pretrained`` and
    ``SAVE_FORMATS``, and ``_save_plain``)."""
    for name, _ in CASES.values():
        module = sys.modules[zoo.registry.get_entry(name).fn.__module__]
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, HubMixin):
                assert value.save_pretrained is HubMixin.save_pretrained, value
                assert value.push_to_hub is HubMixin.push_to_hub, value


def test_an_lm_format_reaches_the_publishable_folder_and_a_wrong_one_is_refused_first(tmp_path):
    name, kwargs = CASES["mobilellm"]
    torch.manual_seed(0)
    model = zoo.create_model(name, **kwargs).eval()
    plain = model.save_pretrained(tmp_path / "plain", format="zoo")
    # a zoo-format folder carries the remote code its config.json's auto_map names (tests/export/test_hf_folders.py)
    assert sorted(p.name for p in plain.iterdir()) == [
        "config.json",
        "configuration_zoo.py",
        "generation_config.json",
        "model.safetensors",
        "modeling_zoo.py",
    ]
    carded = model.save_pretrained(tmp_path / "card", format="zoo", metrics={"perplexity": 12.5})
    config = json.loads((carded / "config.json").read_text())
    assert config["model_type"] == "mobilellm" and (carded / "README.md").is_file()
    _check_same(model, zoo.create_model(str(carded), pretrained=True))
    default = model.save_pretrained(tmp_path / "default", metrics={"perplexity": 12.5})
    assert json.loads((default / "config.json").read_text())["model_type"] == "llama"
    for bad_model, fmt in (
        (model, "onnx"),
        (zoo.create_model(CASES["convnet"][0], **CASES["convnet"][1]), "transformers"),
    ):
        with pytest.raises(ValueError, match=f"format='{fmt}'"):
            bad_model.save_pretrained(tmp_path / "bad", format=fmt, metrics={"top1": 1.0})
        assert not (tmp_path / "bad").exists()
    mor_name, mor_kwargs = CASES["mor"]
    with pytest.raises(ValueError, match="format='transformers'"):
        zoo.create_model(mor_name, **mor_kwargs).save_pretrained(tmp_path / "bad", format="transformers")
    assert not (tmp_path / "bad").exists()


def test_vision_save_pretrained_writes_the_card_and_the_build_arguments(tmp_path):
    name, kwargs = CASES["poolformer"]
    model = zoo.create_model(name, **kwargs, drop_path_rate=0.1)
    folder = model.save_pretrained(tmp_path / "pf", metrics={"top1": 91.5, "dataset": "digits"})
    config = json.loads((folder / "config.json").read_text())
    # the architecture's arguments are recorded; a training-only option is not
    assert {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32], "num_classes": 5}.items() <= config["model_args"].items()
    assert "drop_path_rate" not in config["model_args"]
    card = (folder / "README.md").read_text()
    assert "91.5" in card and "digits" in card


def test_a_pruned_model_saves_its_own_widths(tmp_path):
    name, kwargs = CASES["caformer"]
    torch.manual_seed(0)
    model = zoo.create_model(name, **{**kwargs, "dims": (16, 32, 48, 64)}).eval()
    pruned = zoo.prune(model, ratio=0.25, example_inputs=torch.randn(1, 3, 64, 64)).eval()
    folder = pruned.save_pretrained(tmp_path / "pruned")
    assert json.loads((folder / "config.json").read_text())["model_args"]["dims"] != [16, 32, 48, 64]
    _check_same(pruned, zoo.create_model(str(folder), pretrained=True))


def test_push_to_hub_then_load_from_the_hub(hub):
    name, kwargs = CASES["convnet"]
    torch.manual_seed(0)
    model = zoo.create_model(name, **kwargs).eval()
    url = model.push_to_hub("me/convnet-small", cards_dir=None)
    assert url == f"{hub.endpoint}/me/convnet-small"
    assert sorted(hub.repos["me/convnet-small"]) == ["README.md", "config.json", "model.safetensors"]
    _check_same(model, zoo.create_model("hf-hub:me/convnet-small", pretrained=True))


@pytest.mark.parametrize("with_card", [False, True])
def test_lm_save_replaces_links_and_leaves_their_targets(tmp_path, with_card):
    """A folder whose files are symbolic links (a Hub cache snapshot, a DVC or git-annex checkout): a save replaces
    each link with its own file and leaves what the link pointed to as it was."""
    name, kwargs = CASES["mobilellm"]
    model = zoo.create_model(name, **kwargs).eval()
    store = model.save_pretrained(tmp_path / "store", format="zoo")
    tokenizer = tmp_path / "store" / "tokenizer.json"
    tokenizer.write_text('{"stored": true}\n')
    for file in ("config.json", "generation_config.json"):  # the stored files differ from what the save writes
        (store / file).write_text(json.dumps({**json.loads((store / file).read_text()), "stored": True}))
    before = {p.name: p.read_bytes() for p in store.iterdir()}
    linked = tmp_path / "linked"
    linked.mkdir()
    for file in before:
        (linked / file).symlink_to(store / file)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(2.0)
    extra = {"metrics": {"perplexity": 12.5}, "tokenizer_file": tokenizer} if with_card else {}
    model.save_pretrained(linked, format="zoo", **extra)
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before  # the targets are untouched
    written = ["config.json", "generation_config.json", "model.safetensors"] + (["tokenizer.json"] if with_card else [])
    for file in written:
        assert not (linked / file).is_symlink(), f"{file} written through its link"
    _check_same(model, zoo.create_model(str(linked), pretrained=True))
