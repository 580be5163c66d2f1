"""Downloads through the real huggingface_hub client against a Hub stand-in on 127.0.0.1."""

import io
import json

import pytest
import torch

import zoo
from zoo.bench.reference.metaformer import make_authors_state_dict, reference_forward
from zoo.weights import CheckpointError, save_state_dict

pytestmark = pytest.mark.hub


def _pth_bytes(state_dict):
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getvalue()


def test_pretrained_downloads_the_authors_file_from_the_cfg_repo(hub):
    cfg = zoo.model_info("identityformer_s12")["pretrained_cfg"]
    sd = make_authors_state_dict("identityformer_s12", seed=7)
    hub.repos[cfg["hf_hub_id"]] = {cfg["hf_hub_filename"]: _pth_bytes(sd)}
    model = zoo.create_model("identityformer_s12", pretrained=True).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = reference_forward("identityformer_s12", sd, x)
        assert (model(x) - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert f"GET /sail/dl/resolve/main/{cfg['hf_hub_filename']}" in hub.log
    # an image classifier's load asks for nothing but its weights (no LM generation_config.json)
    assert not any("generation_config" in line for line in hub.log), hub.log
    # a second build is served from the cache: no second GET
    zoo.create_model("identityformer_s12", pretrained=True)
    assert sum(line.startswith("GET /sail/dl/resolve/") for line in hub.log) == 1, hub.log
    # and so is one with the Hub out of reach
    from huggingface_hub import constants

    constants.ENDPOINT = "http://127.0.0.1:9"
    zoo.create_model("identityformer_s12", pretrained=True)


def test_hf_hub_name_reads_config_and_weights(hub, tmp_path):
    donor = zoo.create_model("caformer_s18", num_classes=10).eval()
    weights = save_state_dict(donor, tmp_path / "model.safetensors").read_bytes()
    config = {
        "architecture": "caformer_s18",
        "num_classes": 10,
        "pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    }
    hub.repos["someone/caformer-flowers"] = {"config.json": json.dumps(config).encode(), "model.safetensors": weights}
    model = zoo.create_model("hf-hub:someone/caformer-flowers").eval()
    assert model.num_classes == 10 and model.pretrained_cfg["mean"] == [0.5, 0.5, 0.5]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), donor(x))


def test_missing_repo_and_file_are_named(hub):
    with pytest.raises(CheckpointError, match="the Hub has no .*identityformer_s12.pth in sail/dl"):
        zoo.create_model("identityformer_s12", pretrained=True)
    hub.repos["sail/dl"] = {}
    with pytest.raises(CheckpointError, match="the Hub has no"):
        zoo.create_model("randformer_s12", pretrained=True)


def test_unreachable_hub_gives_a_clear_message(hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(CheckpointError, match="could not reach the Hub at http://127.0.0.1:9.*pretrained_cfg_overlay"):
        zoo.create_model("randformer_s12", pretrained=True)
