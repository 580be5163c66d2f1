"""Registry, public API, timm registration and input validation."""

import sys
import types

import pytest
import timm
import torch

import zoo
from zoo.registry import get_entry, register_model, unregister_model


def test_list_models_patterns_families_and_tasks():
    """Families and tasks partition the registry; patterns select by name (the counts per family are in each
    family's own test file)."""
    names = zoo.list_models()
    by_family = [n for f in zoo.list_families() for n in zoo.list_models(family=f)]
    assert sorted(by_family) == names
    by_task = [n for t in ("image-classification", "text-generation") for n in zoo.list_models(task=t)]
    assert sorted(by_task) == names
    for family in zoo.list_families():
        assert {zoo.model_info(n)["family"] for n in zoo.list_models(family=family)} == {family}
    prefix = names[0].split("_", 1)[0] + "_*"
    assert zoo.list_models(prefix) == [n for n in names if n.startswith(prefix[:-1])]
    with pytest.raises(ValueError, match="unknown family"):
        zoo.list_models(family="nope")


def test_every_builder_is_a_plain_function_of_its_family_module():
    """One registration style: each builder is a module-level function under its own name; a registered name that
    is not an identifier (``mobilellm_1.5b``) differs from it by its dots only."""
    for name in zoo.list_models():
        fn = get_entry(name).fn
        assert fn.__name__ == name.replace(".", "_") and fn.__qualname__ == fn.__name__
        assert getattr(sys.modules[fn.__module__], fn.__name__) is fn


def test_register_model_takes_an_explicit_name(monkeypatch):
    module = types.ModuleType("zoo_test_named")
    module.FAMILY = dict(name="named", task="image-classification")
    module.default_cfgs = {"named_1.5b": dict(license="mit")}
    monkeypatch.setitem(sys.modules, module.__name__, module)

    def named_1_5b(pretrained=False, **kwargs):
        raise AssertionError("not built here")

    named_1_5b.__module__ = module.__name__
    try:
        assert register_model(name="named_1.5b")(named_1_5b) is named_1_5b
        entry = get_entry("named_1.5b")
        assert entry.fn is named_1_5b and entry.family == "named"
        assert entry.pretrained_cfg == {"license": "mit", "architecture": "named_1.5b"}
        assert "named_1.5b" in zoo.list_models("named_*") and "named_1_5b" not in zoo.list_models()
        with pytest.raises(ValueError, match="registered twice"):
            register_model(named_1_5b, name="named_1.5b")
        with pytest.raises(ValueError, match="lowercase letters"):
            register_model(named_1_5b, name="Named/1.5b")
    finally:
        unregister_model("named_1.5b")
    assert "named_1.5b" not in zoo.list_models()


def test_list_pretrained_are_models_with_a_weight_source():
    names = zoo.list_pretrained()
    assert "poolformer_s12" in names and "identityformer_s12" in names
    for name in names:
        cfg = zoo.model_info(name)["pretrained_cfg"]
        assert cfg.get("hf_hub_id") and cfg.get("hf_hub_filename")


# the authors' code licenses, per vision family
LICENSES = {"metaformer": "apache-2.0", "sret": "apache-2.0", "slak": "mit", "convnet": "mit"}
# the smallest (params, GMACs) per vision family: the ImageNet backbones are above 1M params and 1 GMAC; ConvNet-D,
# the evaluation network of dataset distillation, is small by design (ConvNet-3: 0.32M params, 0.05 GMACs at 32x32)
SMALLEST = {"convnet": (3e5, 0.04)}


@pytest.mark.parametrize("name", zoo.list_models(task="image-classification"))
def test_model_info_and_pretrained_cfg(name):
    info = zoo.model_info(name)
    assert info["family"] in zoo.list_families() and info["task"] == "image-classification"
    assert info["paper"] and info["paper_ids"].startswith("arXiv:")
    assert info["license"] == LICENSES[info["family"]]
    ref = info["reference"]
    min_params, min_gmacs = SMALLEST.get(info["family"], (1e6, 1))
    assert ref["params"] > min_params and ref["gmacs"] > min_gmacs
    assert ref["top1"] is None or 70 < ref["top1"] < 90
    cfg = info["pretrained_cfg"]
    for key in (
        "input_size",
        "mean",
        "std",
        "crop_pct",
        "interpolation",
        "num_classes",
        "first_conv",
        "classifier",
        "license",
        "paper_name",
        "origin_url",
        "notes",
    ):
        assert cfg.get(key) is not None, f"{name} cfg lacks {key}"
    assert bool(cfg.get("hf_hub_id")) == (name in zoo.list_pretrained())


def test_unknown_name_suggests_close_names():
    with pytest.raises(zoo.UnknownModelError, match="poolformer_s12") as err:
        zoo.create_model("poolformer_s1")
    assert "Did you mean" in str(err.value)
    with pytest.raises(zoo.UnknownModelError, match="caformer_s18"):
        zoo.model_info("caformer_s81")


def test_wrong_kwargs_are_named():
    with pytest.raises(TypeError, match="drop_path_rat.*did you mean 'drop_path_rate'"):
        zoo.create_model("poolformer_s12", drop_path_rat=0.1)


@pytest.mark.parametrize("bad", [-1, 2.5, "ten", True])
def test_impossible_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        zoo.create_model("poolformer_s12", num_classes=bad)


def test_num_classes_zero_is_a_backbone():
    model = zoo.create_model("convformer_s18", num_classes=0).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 512)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((3, 64, 64), r"expected input of shape \(B, 3, H, W\).*unsqueeze"),
        ((1, 1, 64, 64), r"expected input of shape \(B, 3, H, W\).*in_chans=1"),
        ((1, 3, 16, 16), "needs >= 32x32"),
    ],
)
def test_bad_inputs_get_clear_errors(shape, match):
    model = zoo.create_model("poolformer_s12").eval()
    with pytest.raises(ValueError, match=match):
        model(torch.randn(*shape))


def test_randformer_needs_its_fixed_size():
    model = zoo.create_model("randformer_s12").eval()
    assert model.pretrained_cfg["fixed_input_size"]
    with pytest.raises(ValueError, match="RandFormer only runs on its fixed input size"):
        model(torch.randn(1, 3, 256, 256))


def test_timm_builds_zoo_models_it_lacks_and_keeps_its_own():
    from zoo.models.metaformer import MetaFormer

    for name in ("identityformer_s12", "randformer_s12"):
        assert zoo.model_info(name)["timm_owns_name"] is False
        model = timm.create_model(name, num_classes=5)
        assert isinstance(model, MetaFormer) and model.num_classes == 5
    # names timm owns keep timm's own implementation
    for name in ("poolformer_s12", "convformer_s18", "caformer_s18", "poolformerv2_s12"):
        assert zoo.model_info(name)["timm_owns_name"] is True
        assert not isinstance(timm.create_model(name), MetaFormer)
    assert "identityformer_m48" in timm.list_models("identityformer*")


def test_timm_features_only_on_a_zoo_model():
    model = timm.create_model("identityformer_s12", features_only=True, out_indices=(2, 3))
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [320, 512]


def test_docs_model_table_matches_registry():
    import pathlib
    import re

    readme = (pathlib.Path(__file__).parents[2] / "docs" / "models" / "index.md").read_text()
    rows = re.findall(
        r"^\| `(\w+)` \| ([\d,]+)(?: \(dense\))? \| ([\d.]+)(?: \(@\d+x\d+\))?(?: \(dense\))? \| ([\d.]+|-) \|",
        readme,
        flags=re.M,
    )
    assert sorted(r[0] for r in rows) == zoo.list_models(task="image-classification")
    for name, params, gmacs, top1 in rows:
        ref = zoo.model_info(name)["reference"]
        assert int(params.replace(",", "")) == ref["params"]
        # the table's GMACs are measured (zoo.profile), rounded to 2 decimals (3 significant digits below 1 GMAC); the
        # exact check is in tests/profile/test_cards.py
        assert abs(float(gmacs) * 1e9 / ref["macs"] - 1) < 0.02, (name, gmacs, ref["gmacs"])
        assert (None if top1 == "-" else float(top1)) == ref["top1"]
