"""Weights and configs that must not load, or not silently: each row an input, the error class, a fragment of the
message, and that the model (or the disk) did not change.

- files that are not weights say what they are (LFS pointer, web page, JSON, empty, text, unknown bytes);
  safetensors content loads whatever its suffix;
- another architecture's weights of the same shapes are refused with both names (unless allowed on purpose);
- NaN/inf values (unless allowed) and integer tensors for floating-point weights are refused by name;
- a config.json beside weights (a folder's, a Hub repo's) may describe an architecture only: keys that name files,
  folders, URLs, devices or loading are refused by name, without saying whether any path exists; sizes are bounded;
- written weights get the umask's mode and the same bytes for the same weights.
"""

import json
import os
import random
import struct

import pytest
import torch
from model_checks import weights_snapshot, weights_unchanged
from small_lms import SMALL
from torch import nn

import zoo
from zoo.models.mobilellm import MobileLLM
from zoo.weights import (
    CheckpointError,
    CheckpointMismatchError,
    load_state_dict_checked,
    read_metadata,
    read_state_dict,
)

TINY = {"depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32), "num_classes": 5}
ARCH, TWIN = "identityformer_s12", "poolformerv2_s12"  # the same layout and shapes, different token mixers


def _tiny(name=ARCH, seed=0):
    torch.manual_seed(seed)
    return zoo.create_model(name, **TINY)


@pytest.fixture(scope="module")
def donor():
    """A state dict of the tiny model, other values than a fresh build's."""
    return _tiny(seed=1).state_dict()


# ------------------------------------------------------------------------------------------------------------------
# Files that are not weights (read_state_dict sniffs the first bytes)
# ------------------------------------------------------------------------------------------------------------------

_LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 45260416\n"
_HTML = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"
_BYTES = bytes([0x13]) + random.Random(0).randbytes(4095)  # no format's magic

NOT_WEIGHTS = [
    # (file name, content, fragment)
    ("model.safetensors", _LFS, "Git LFS pointer.*git lfs pull"),
    ("pytorch_model.bin", _LFS, "Git LFS pointer"),
    ("model.safetensors", _HTML, "web page.*the download failed"),
    ("weights.pth", b"  <html><body>Access denied</body></html>", "web page"),
    ("weights.pth", _BYTES, "not a weight file"),
    ("model.safetensors", _BYTES, "not a weight file"),
    ("weights.bin", b'{"architecture": "identityformer_s12", "num_classes": 5}', "JSON file, not weights"),
    ("model.safetensors.index.json", b'{"weight_map": {"a": "x.safetensors"}}', "index of a sharded checkpoint"),
    ("weights.pth", b"", r"empty \(0 bytes\)"),
    ("weights.pth", b"epoch,loss\n1,0.5\n2,0.25\n", "text file, not weights"),
    ("weights.pth", b"\x1f\x8b\x08\x00" + bytes(60), "gzip-compressed"),
]


@pytest.mark.parametrize("filename, content, fragment", NOT_WEIGHTS, ids=lambda v: str(v)[:24])
def test_a_file_that_is_not_weights_says_what_it_is(tmp_path, filename, content, fragment):
    path = tmp_path / filename
    path.write_bytes(content)
    model = _tiny()
    snap = weights_snapshot(model)
    with pytest.raises(CheckpointError, match=fragment) as err:
        zoo.load_checkpoint(model, path)
    assert str(path) in str(err.value) and "re-save" not in str(err.value)
    assert weights_unchanged(model, snap)


def test_safetensors_content_loads_whatever_its_suffix(tmp_path, donor):
    path = zoo.save_state_dict(donor, tmp_path / "model.safetensors").rename(tmp_path / "weights.pth")
    model = _tiny()
    zoo.load_checkpoint(model, path)
    assert all(torch.equal(v, donor[k]) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------------------------------
# Values: NaN/inf and integer tensors, refused before anything is copied
# ------------------------------------------------------------------------------------------------------------------


def _with(donor, **changes):
    sd = {k: v.clone() for k, v in donor.items()}
    for key, value in changes.items():
        sd[key.replace("__", ".")] = value(sd[key.replace("__", ".")])
    return sd


def _nan(t):
    return t.index_put_((torch.tensor([0]),), torch.tensor(float("nan")))


VALUES = [
    # (state dict change, fragment, load switches)
    (dict(stem__conv__weight=_nan), r"1 tensor\(s\) holding NaN or inf: stem\.conv\.weight", {}),
    (
        dict(stem__conv__bias=lambda t: t.fill_(float("inf")), head__fc__weight=_nan),
        r"2 tensor\(s\) holding NaN or inf: head\.fc\.weight, stem\.conv\.bias.*allow_nonfinite=True",
        {},
    ),
    (
        dict(head__fc__weight=lambda t: t.to(torch.int8)),
        r"1 integer tensor\(s\) where identityformer_s12 has floating-point weights: head\.fc\.weight \(int8\)"
        r".*dequantize",
        {"allow_nonfinite": True},
    ),
]


@pytest.mark.parametrize("changes, fragment, switches", VALUES, ids=["nan", "inf and nan", "int8"])
def test_bad_values_are_refused_by_name(tmp_path, donor, changes, fragment, switches):
    path = zoo.save_state_dict(_with(donor, **changes), tmp_path / "bad.safetensors")
    model = _tiny()
    snap = weights_snapshot(model)
    with pytest.raises(CheckpointMismatchError, match=fragment):
        zoo.load_checkpoint(model, path, **switches)
    assert weights_unchanged(model, snap)
    with pytest.raises(CheckpointMismatchError, match=fragment):
        zoo.create_model(ARCH, **TINY, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **switches)


def test_nonfinite_values_load_when_allowed(tmp_path, donor):
    path = zoo.save_state_dict(_with(donor, stem__conv__weight=_nan), tmp_path / "nan.safetensors")
    model = _tiny()
    zoo.load_checkpoint(model, path, allow_nonfinite=True)
    assert torch.isnan(model.state_dict()["stem.conv.weight"]).any()


def test_integer_tensors_are_refused_only_for_floating_point_weights():
    """BatchNorm's num_batches_tracked is int64 in the model too: not a quantized tensor."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["1.num_batches_tracked"] = torch.tensor(7)
    quantized = {**sd, "0.weight": sd["0.weight"].to(torch.int8)}
    with pytest.raises(CheckpointMismatchError, match=r"1 integer tensor\(s\) .*: 0\.weight \(int8\); nothing"):
        load_state_dict_checked(model, quantized, "bn")
    assert model.state_dict()["1.num_batches_tracked"].item() == 0
    load_state_dict_checked(model, sd, "bn")
    assert model.state_dict()["1.num_batches_tracked"].item() == 7


# ------------------------------------------------------------------------------------------------------------------
# Quantized codes: the dtype the format records, values its bit width holds (a wider dtype would wrap)
# ------------------------------------------------------------------------------------------------------------------

QKEY = "model.layers.0.self_attn.q_proj.qweight"


@pytest.fixture(scope="module")
def quantized_folders(tmp_path_factory):
    """Tiny MobileLLM folders with int8 and int4 codes (config.json records the format)."""
    root = tmp_path_factory.mktemp("quantized")
    for fmt in ("int8", "int4"):
        torch.manual_seed(0)
        zoo.create_model("mobilellm_125m", **SMALL, quantize=fmt).save_pretrained(root / fmt)
    return root


def _set(value, dtype):
    def change(q):
        q = q.to(dtype)
        q.view(-1)[0] = value
        return q

    return change


CODES = [
    # (id, format, change of QKEY's codes, fragment)
    (
        "int8 as int16, 300",
        "int8",
        _set(300, torch.int16),
        r"q_proj\.qweight \(int16, values -?\d+\.\.300, outside -128",
    ),
    ("int8 as int32, -200", "int8", _set(-200, torch.int32), r"q_proj\.qweight \(int32, values -200\.\.\d+, outside"),
    (
        "int8 as int16, in range",
        "int8",
        _set(5, torch.int16),
        r"q_proj\.qweight \(int16, values -?\d+\.\.\d+; the model",
    ),
    ("int8 as uint8", "int8", lambda q: q.clamp(min=0).to(torch.uint8), r"q_proj\.qweight \(uint8, .*holds int8\)"),
    ("int4 as int8", "int4", lambda q: q.view(torch.int8), r"q_proj\.qweight \(int8, values -\d+\.\..*holds uint8\)"),
    ("int4 as int16, 256", "int4", _set(256, torch.int16), r"q_proj\.qweight \(int16, .*256, outside 0\.\.255"),
]


@pytest.mark.parametrize("fmt, change, fragment", [c[1:] for c in CODES], ids=[c[0] for c in CODES])
def test_quantized_codes_must_fit_their_dtype(quantized_folders, tmp_path, fmt, change, fragment):
    folder = tmp_path / fmt
    folder.mkdir()
    for name in ("config.json", "generation_config.json"):
        (folder / name).write_bytes((quantized_folders / fmt / name).read_bytes())
    sd = read_state_dict(quantized_folders / fmt / "model.safetensors")
    sd[QKEY] = change(sd[QKEY])
    zoo.save_state_dict(
        sd, folder / "model.safetensors", metadata=read_metadata(quantized_folders / fmt / "model.safetensors")
    )
    with pytest.raises(CheckpointMismatchError, match=fragment) as err:
        zoo.create_model(str(folder))
    assert "would wrap around" in str(err.value) and "nothing was loaded" in str(err.value)
    assert zoo.create_model(str(quantized_folders / fmt)) is not None  # the folder as written loads


# ------------------------------------------------------------------------------------------------------------------
# Another architecture's weights with the same shapes
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """poolformerv2_s12 weights (the tiny shapes, the same as identityformer_s12's): a file and a folder."""
    root = tmp_path_factory.mktemp("twin")
    model = _tiny(TWIN, seed=2)
    file = zoo.save_state_dict(model, root / "twin.safetensors", metadata={"architecture": TWIN})
    folder = root / "folder"
    zoo.save_state_dict(model, folder / "model.safetensors")  # no metadata: the config.json names it
    (folder / "config.json").write_text(json.dumps({"architecture": TWIN, "model_args": TINY}))
    return model.state_dict(), file, folder


LOADS = {
    "load_checkpoint": lambda model, path, **kw: zoo.load_checkpoint(model, path, **kw),
    "overlay file": lambda model, path, **kw: zoo.create_model(
        ARCH, **TINY, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kw
    ),
    "checkpoint_path": lambda model, path, **kw: zoo.create_model(ARCH, **TINY, checkpoint_path=str(path), **kw),
}


@pytest.mark.parametrize("source", ["file", "folder"])
@pytest.mark.parametrize("how", sorted(LOADS))
def test_another_architectures_weights_are_refused_with_both_names(twin, how, source):
    weights, file, folder = twin
    path = file if source == "file" else folder
    model = _tiny()
    snap = weights_snapshot(model)
    with pytest.raises(CheckpointMismatchError, match=f"holds weights for {TWIN}, not {ARCH}.*allow_architecture"):
        LOADS[how](model, path)
    assert weights_unchanged(model, snap)
    result = LOADS[how](model, path, allow_architecture_mismatch=True)
    loaded = model if how == "load_checkpoint" else result
    assert all(torch.equal(v, weights[k]) for k, v in loaded.state_dict().items())


def test_a_repo_whose_weights_name_another_architecture_is_refused(hub, twin, tmp_path):
    weights, file, _ = twin
    config = {"architecture": ARCH, "model_args": TINY}
    hub.repos["someone/mislabelled"] = {
        "config.json": json.dumps(config).encode(),
        "model.safetensors": file.read_bytes(),
    }
    with pytest.raises(CheckpointMismatchError, match=f"{TWIN}, not {ARCH}"):
        zoo.create_model("hf-hub:someone/mislabelled")


# ------------------------------------------------------------------------------------------------------------------
# config.json: an architecture and nothing else
# ------------------------------------------------------------------------------------------------------------------


def _bait(tmp_path, donor):
    """A valid weight file of the model on the user's disk: what a hostile config.json would point at."""
    return zoo.save_state_dict(donor, tmp_path / "private" / "secret.safetensors")


CONFIGS = [
    # (id, what the config.json sets (bait: the path of a local weight file), error class, fragment)
    ("cfg file", {"pretrained_cfg": {"file": "BAIT"}}, CheckpointError, r"sets pretrained_cfg\.file"),
    ("cfg state_dict", {"pretrained_cfg": {"state_dict": "BAIT"}}, CheckpointError, r"pretrained_cfg\.state_dict"),
    ("cfg hub id", {"pretrained_cfg": {"hf_hub_id": "other/repo"}}, CheckpointError, r"pretrained_cfg\.hf_hub_id"),
    ("cfg url", {"pretrained_cfg": {"url": "http://127.0.0.1:9/x.pth"}}, CheckpointError, r"pretrained_cfg\.url"),
    ("cfg unknown", {"pretrained_cfg": {"loader": "x"}}, CheckpointError, r"pretrained_cfg\.loader"),
    ("cfg bad mean", {"pretrained_cfg": {"mean": "0.5"}}, CheckpointError, r"pretrained_cfg\.mean must be"),
    ("args cfg file", {"model_args": {"pretrained_cfg": {"file": "BAIT"}}}, CheckpointError, r"model_args\.pretr"),
    ("args cache_dir", {"model_args": {"cache_dir": "CACHE"}}, CheckpointError, r"model_args\.cache_dir"),
    ("args checkpoint", {"model_args": {"checkpoint_path": "BAIT"}}, CheckpointError, r"model_args\.checkpoint_p"),
    ("args weights_path", {"model_args": {"weights_path": "BAIT"}}, CheckpointError, r"model_args\.weights_path"),
    ("args device", {"model_args": {"device": "cuda"}}, CheckpointError, r"model_args\.device"),
    ("args features", {"model_args": {"features_only": True}}, CheckpointError, r"model_args\.features_only"),
    ("args unknown", {"model_args": {"loader": "x"}}, CheckpointError, r"model_args\.loader.*does not take"),
    ("args object", {"model_args": {"token_mixers": {"a": 1}}}, CheckpointError, r"model_args\.token_mixers"),
    ("1e9 classes", {"num_classes": 10**9}, CheckpointError, r"num_classes=1000000000 is not a plausible size"),
    ("1e9 classes args", {"model_args": {"num_classes": 10**9}}, CheckpointError, "not a plausible size"),
    ("negative dims", {"model_args": {"dims": [8, -16, 24, 32]}}, CheckpointError, r"model_args\.dims=-16"),
    ("float depths", {"model_args": {"depths": [1, 1.5, 1, 1]}}, CheckpointError, r"model_args\.depths=1\.5"),
    ("huge int", {"model_args": {"head_dim": 10**400}}, CheckpointError, "not a plausible size"),
    ("bool classes", {"num_classes": True}, CheckpointError, "not a plausible size"),
]


def _config(tmp_path, donor, sets) -> tuple[str, str]:
    """config.json text with the placeholders filled in: BAIT (an existing weight file), CACHE (a folder)."""
    bait = str(_bait(tmp_path, donor))
    text = json.dumps({"architecture": ARCH, "num_classes": 5, "model_args": TINY, **sets})
    return text.replace("BAIT", bait).replace("CACHE", str(tmp_path / "private" / "cache")), bait


def _folder(tmp_path, donor, sets):
    config, bait = _config(tmp_path, donor, sets)
    folder = tmp_path / "downloaded"
    zoo.save_state_dict(_tiny(seed=3), folder / "model.safetensors")
    (folder / "config.json").write_text(config)
    return folder, bait


def _check_refused(err, bait, tmp_path):
    msg = str(err.value)
    assert bait not in msg and "secret" not in msg and "exist" not in msg  # nothing said about the user's files
    assert sorted(p.name for p in (tmp_path / "private").iterdir()) == ["secret.safetensors"]  # nothing written


@pytest.mark.parametrize("sets, error, fragment", [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_a_folders_config_describes_an_architecture_only(tmp_path, donor, sets, error, fragment):
    folder, bait = _folder(tmp_path, donor, sets)
    with pytest.raises(error, match=fragment) as err:
        zoo.create_model(str(folder))
    assert str(folder) in str(err.value)
    _check_refused(err, bait, tmp_path)
    # the same config beside weights loaded into a registered name
    with pytest.raises(error, match=fragment):
        zoo.create_model(ARCH, **TINY, pretrained=True, pretrained_cfg_overlay={"file": str(folder)})


HUB_ROWS = [c for c in CONFIGS if c[0] in ("cfg file", "args cfg file", "args cache_dir", "1e9 classes", "cfg url")]


@pytest.mark.parametrize("sets, error, fragment", [c[1:] for c in HUB_ROWS], ids=[c[0] for c in HUB_ROWS])
def test_a_hub_repos_config_describes_an_architecture_only(hub, tmp_path, donor, sets, error, fragment):
    config, bait = _config(tmp_path, donor, sets)
    weights = zoo.save_state_dict(_tiny(seed=3), tmp_path / "served.safetensors").read_bytes()
    hub.repos["evil/repo"] = {"config.json": config.encode(), "model.safetensors": weights}
    with pytest.raises(error, match=fragment) as err:
        zoo.create_model("hf-hub:evil/repo", pretrained=True)
    assert "hf-hub:evil/repo/config.json" in str(err.value)
    _check_refused(err, bait, tmp_path)
    assert not any("model.safetensors" in line for line in hub.log)  # refused before the weights were fetched


# sizes bounded per model: the config's model counted on the meta device, refused above max_params (the caller's to raise)
HUGE = {"model_args": {**TINY, "dims": [16, 32, 64, 30000]}}  # each value plausible; 14.4 GB for one tensor
TINY_PARAMS = sum(p.numel() for p in _tiny().parameters()) + sum(b.numel() for b in _tiny().buffers())

SIZES = [
    # (id, config.json sets, create_model keywords, environment, fragment: None = it loads)
    (
        "huge dims",
        HUGE,
        {},
        {},
        r"describes a identityformer_s12 of 7,\d{3},\d{3},\d{3} parameters .*dims=\[16, 32, 64, 30000\].*more than max_params=2,500,000,000",
    ),
    ("below max_params", {}, {"max_params": TINY_PARAMS - 1}, {}, f"of {TINY_PARAMS:,} parameters"),
    ("at max_params", {}, {"max_params": TINY_PARAMS}, {}, None),
    (
        "below the variable",
        {},
        {},
        {"ZOO_MAX_PARAMS": str(TINY_PARAMS - 1)},
        f"more than max_params={TINY_PARAMS - 1:,}",
    ),
    ("the variable raised", {}, {}, {"ZOO_MAX_PARAMS": "1e5"}, None),
    ("max_params wins", {}, {"max_params": 10**9}, {"ZOO_MAX_PARAMS": "10"}, None),
]


@pytest.mark.parametrize("sets, kwargs, env, fragment", [c[1:] for c in SIZES], ids=[c[0] for c in SIZES])
def test_a_configs_model_is_counted_before_it_is_built(tmp_path, donor, monkeypatch, sets, kwargs, env, fragment):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    folder, _ = _folder(tmp_path, donor, sets)
    if fragment is None:
        assert zoo.create_model(str(folder), **kwargs).num_classes == 5
        return
    with pytest.raises(CheckpointError, match=fragment) as err:
        zoo.create_model(str(folder), **kwargs)
    assert str(folder / "config.json") in str(err.value) and "nothing was built" in str(err.value)
    assert "max_params=N" in str(err.value) and "ZOO_MAX_PARAMS=N" in str(err.value)


def test_a_hub_repos_model_is_counted_before_it_is_built(hub, tmp_path, donor):
    config, _ = _config(tmp_path, donor, HUGE)
    weights = zoo.save_state_dict(_tiny(seed=3), tmp_path / "served.safetensors").read_bytes()
    hub.repos["evil/huge"] = {"config.json": config.encode(), "model.safetensors": weights}
    with pytest.raises(CheckpointError, match=r"hf-hub:evil/huge/config\.json describes .* more than max_params"):
        zoo.create_model("hf-hub:evil/huge")


@pytest.mark.parametrize("value", [0, -5, 2.5, "many", True])
def test_max_params_is_a_positive_whole_number(tmp_path, donor, monkeypatch, value):
    folder, _ = _folder(tmp_path, donor, {})
    with pytest.raises(ValueError, match="max_params must be a positive whole number"):
        zoo.create_model(str(folder), max_params=value)
    monkeypatch.setenv("ZOO_MAX_PARAMS", str(value))
    with pytest.raises(ValueError, match="ZOO_MAX_PARAMS must be a positive whole number"):
        zoo.create_model(str(folder))


def test_the_callers_own_arguments_are_not_counted():
    assert zoo.create_model(ARCH, **TINY, max_params=10).num_classes == 5


def test_a_language_models_config_is_bounded_too(tmp_path):
    """MobileLLM reads its own config fields (a transformers Llama config): sizes there are bounded the same way."""
    folder = tmp_path / "lm"
    zoo.save_state_dict({"model.embed_tokens.weight": torch.zeros(4, 4)}, folder / "model.safetensors")
    config = {"architecture": "mobilellm_125m", "model_type": "llama", "vocab_size": 10**9, "hidden_size": 64}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.vocab_size=1000000000 is not a plausible size"):
        zoo.create_model(str(folder))


def test_timms_config_schema_still_loads(tmp_path, donor):
    """Every pretrained-cfg field timm writes (and label names) is accepted; training-only options are skipped."""
    folder = tmp_path / "timm"
    zoo.save_state_dict(donor, folder / "model.safetensors")
    config = {
        "architecture": ARCH,
        "num_classes": 5,
        "num_features": 32,
        "global_pool": "avg",
        "model_args": {**TINY, "drop_path_rate": 0.1},
        "pretrained_cfg": {
            "tag": "sail_in1k",
            "custom_load": False,
            "input_size": [3, 64, 64],
            "test_input_size": [3, 96, 96],
            "fixed_input_size": False,
            "interpolation": "bicubic",
            "crop_pct": 0.95,
            "test_crop_pct": 1.0,
            "crop_mode": "center",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "num_classes": 5,
            "pool_size": [2, 2],
            "first_conv": "stem.conv",
            "classifier": "head.fc",
            "label_names": ["a", "b", "c", "d", "e"],
            "license": "apache-2.0",
            "origin_url": "https://github.com/sail-sg/metaformer",
            "paper_ids": "arXiv:2210.13452",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    model = zoo.create_model(str(folder))
    assert model.pretrained_cfg["label_names"] == list("abcde") and model.pretrained_cfg["tag"] == "sail_in1k"
    assert all(block.drop_path == 0 for stage in model.stages for block in stage.blocks)  # the caller's to set
    assert all(torch.equal(v, donor[k]) for k, v in model.state_dict().items())


def test_an_index_may_name_only_the_files_beside_it(tmp_path, donor):
    bait = _bait(tmp_path, donor)
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": ARCH, "model_args": TINY}))
    index = {"weight_map": {k: f"../private/{bait.name}" for k in donor}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="outside its folder"):
        zoo.create_model(str(folder))


def test_a_language_models_own_folder_reader_holds_its_index_to_the_same_rule(tmp_path):
    """MobileLLM.from_pretrained reads a folder through the same reader as create_model: a sharded folder's index
    that names a file outside it is refused there too, and one that names its own shards loads them."""
    model = zoo.create_model("mobilellm_125m", **SMALL).eval()
    folder = model.save_pretrained(tmp_path / "sharded")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    keys = list(model.state_dict())
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": dict.fromkeys(keys, "model-00001-of-00001.safetensors")}))
    x = torch.tensor([[3, 5, 7, 9]])
    with torch.no_grad():
        assert torch.equal(MobileLLM.from_pretrained(folder).eval()(x), model(x))
    bait = zoo.save_state_dict(model, tmp_path / "private" / "secret.safetensors")
    index.write_text(json.dumps({"weight_map": dict.fromkeys(keys, f"../private/{bait.name}")}))
    with pytest.raises(CheckpointError, match="outside its folder"):
        MobileLLM.from_pretrained(folder)


# ------------------------------------------------------------------------------------------------------------------
# Written weights: the umask's mode, the same bytes for the same weights
# ------------------------------------------------------------------------------------------------------------------


def test_written_weights_get_the_umasks_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = zoo.save_state_dict({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        path = zoo.save_state_dict({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "other.safetensors"]


def test_metadata_is_written_in_a_fixed_order(tmp_path):
    metadata = {k: k.upper() for k in ("zeta", "architecture", "mid", "alpha", "omega", "beta")}
    files = [zoo.save_state_dict({"w": torch.ones(3)}, tmp_path / f"{i}.safetensors", metadata) for i in range(4)]
    assert len({f.read_bytes() for f in files}) == 1
    data = files[0].read_bytes()
    header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])
    assert torch.equal(read_state_dict(files[0])["w"], torch.ones(3))
