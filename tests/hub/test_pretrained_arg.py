"""``zoo.create_model(NAME, pretrained=...)`` takes True/False, a registered tag, a folder or a file, for every family,
and never fetches other weights than the ones named: a value it cannot honour (a path that does not exist, a tag
that is not registered) is an error before anything is read, built or downloaded.

The Hub is the stand-in of tests/fakehub.py (``hub``): its request log shows what was fetched, and a test that must
not reach the Hub asserts the log is empty (with ``HF_HUB_OFFLINE`` set too, as a user without a network has it).
"""

from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from small_lms import tiny_lm_args

import zoo
from zoo import factory, lm_loading, weight_record
from zoo.lm import GenerationConfig
from zoo.publish import export_pretrained
from zoo.registry import get_entry, list_models
from zoo.weights import CheckpointError

LM = "mobilellm_125m"
LM_ARGS = tiny_lm_args(LM)
VISION = "poolformer_s12"
VISION_ARGS = {"num_classes": 7}
TAGGED = "caformer_s18"  # registered with five weight tags, each its own Hub repo


def _families() -> list[str]:
    """One registered model per family (the error path does not build anything: any size will do)."""
    first = {}
    for name in list_models():
        first.setdefault(get_entry(name).family, name)
    return sorted(first.values())


@pytest.fixture
def offline(hub, monkeypatch):
    """The Hub stand-in (whose log must stay empty) with huggingface_hub told it is offline."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub


@pytest.fixture(scope="module", params=["vision", "lm"])
def saved(request, tmp_path_factory):
    """A model (vision and LM) published to a folder; its weight file; an input and its output."""
    name, args = (VISION, VISION_ARGS) if request.param == "vision" else (LM, LM_ARGS)
    model = zoo.create_model(name, **args).eval()
    with torch.no_grad():
        for p in model.parameters():  # weights no fresh build has
            p.add_(0.01)
    folder = export_pretrained(model, tmp_path_factory.mktemp(request.param) / "export", model_name=name,
                               model_kwargs=args, latency_runs=0)  # fmt: skip
    if request.param == "vision":
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    else:
        x = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    return name, args, folder, folder / "model.safetensors", x, expected


@pytest.mark.parametrize("how", ["folder", "file", "pathlike"])
def test_a_folder_or_file_loads_those_weights_offline(saved, how, offline):
    name, args, folder, file, x, expected = saved
    value = {"folder": str(folder), "file": str(file), "pathlike": Path(file)}[how]
    model = zoo.create_model(name, pretrained=value, **args).eval()
    with torch.no_grad():
        assert torch.equal(model(x), expected)
    assert offline.log == []  # nothing asked of the Hub


@pytest.mark.parametrize("name", _families())
def test_a_path_that_does_not_exist_is_an_error_not_a_download(name, offline, tmp_path):
    missing = tmp_path / "path" / "to" / "folder"
    with pytest.raises(CheckpointError, match=r"neither an existing file or folder .* nor a pretrained tag"):
        zoo.create_model(name, pretrained=str(missing))
    with pytest.raises(CheckpointError, match="Nothing was downloaded"):
        zoo.create_model(name, pretrained="no_such_tag")
    assert offline.log == []


def test_a_tag_fetches_that_tags_weights_and_no_others(hub):
    tag = "sail_in22k"
    repo = get_entry(TAGGED).cfg_for(tag)["hf_hub_id"]
    assert repo != get_entry(TAGGED).pretrained_cfg["hf_hub_id"]
    with pytest.raises(CheckpointError):  # the stand-in holds no such repo: the one request names it
        zoo.create_model(TAGGED, pretrained=tag)
    fetched = [line for line in hub.log if "/resolve/" in line or "/api/models/" in line]  # repo requests
    assert fetched and all(f"/{repo}/" in line for line in fetched), hub.log
    hub.log.clear()
    with pytest.raises(ValueError, match="two pretrained tags"):
        zoo.create_model(f"{TAGGED}.sail_in1k", pretrained=tag)
    with pytest.raises(ValueError, match="name two tags"):
        zoo.create_model(TAGGED, pretrained=tag, pretrained_cfg="sail_in1k")
    assert hub.log == []


def test_two_weight_sources_and_other_types_are_refused(saved, offline):
    name, args, folder, file, _, _ = saved
    with pytest.raises(ValueError, match="both name weights"):
        zoo.create_model(name, pretrained=str(file), pretrained_cfg_overlay={"file": str(folder)}, **args)
    with pytest.raises(ValueError, match="already names weights"):
        zoo.create_model(str(folder), pretrained=str(file))
    with pytest.raises(TypeError, match="pretrained must be True/False, a pretrained tag"):
        zoo.create_model(name, pretrained=1.0, **args)
    model = zoo.create_model(name, pretrained=False, **args)  # False and True keep their meaning
    assert not any(torch.equal(p, q) for p, q in zip(model.state_dict().values(), zoo.create_model(
        str(folder)).state_dict().values()) if p.is_floating_point() and p.numel() > 1)  # fmt: skip
    assert offline.log == []


def test_only_a_language_models_load_goes_through_lm_loading(saved, hub, monkeypatch):
    """create_model decides the task first: an image classifier's folder, file, checkpoint_path and Hub-repo loads
    never enter zoo.lm_loading (every door into it raises here) nor ask for a file beside the weights; a language
    model's load goes through it once per build, and its generation config comes from there."""
    name, args, folder, file, x, expected = saved
    hub.repos["someone/saved"] = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    calls = []

    def refuse(*a, **k):
        raise AssertionError("an image classifier's load entered zoo.lm_loading")

    def counted(*a, **k):
        calls.append(a)
        return real(*a, **k)

    real = lm_loading.read_lm_weights
    if name == VISION:
        for module, attr in ((factory, "read_lm_weights"), (lm_loading, "read_lm_weights")):
            monkeypatch.setattr(module, attr, refuse)
        for attr in ("read_generation_config", "recorded_quantization", "weights_quantization"):
            monkeypatch.setattr(lm_loading, attr, refuse)
        monkeypatch.setattr(weight_record.Weights, "beside", refuse)
    else:
        monkeypatch.setattr(factory, "read_lm_weights", counted)
    loads = [
        zoo.create_model(name, pretrained=str(folder), **args),
        zoo.create_model(name, checkpoint_path=str(file), **args),
        zoo.create_model("hf-hub:someone/saved", **args),
    ]
    for model in loads:
        with torch.no_grad():
            assert torch.equal(model.eval()(x), expected)
    asked = [line for line in hub.log if "generation_config" in line]
    if name == VISION:
        assert not asked, hub.log
    else:
        assert len(calls) == len(loads), calls
        assert asked, hub.log  # the Hub repo's generation config, asked for by zoo.lm_loading
        written = GenerationConfig.from_folder(folder)
        assert all(m.generation_config.to_dict() == written.to_dict() for m in (loads[0], loads[2]))
