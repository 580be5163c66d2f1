"""The parts of timm's model contract that a timm user meets first, on the zoo's vision models: the factory's
``device`` / ``dtype``, pretrained cfgs and ``name.tag`` in both registries, the pooling names, a classifier reset
on the model's device and dtype, the default feature wrapper's gradient checkpointing, and pretrained weights loaded
headless, with another head, another input width or as a feature backbone (from a Hub stand-in on 127.0.0.1)."""

import pytest
import timm
import torch
from safetensors.torch import save

import zoo

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- device and dtype --------------------------------------------------------------------------------------------
def test_meta_device_build_allocates_nothing():
    model = zoo.create_model("caformer_s18", device="meta")
    assert {t.device.type for t in (*model.parameters(), *model.buffers())} == {"meta"}
    assert sum(p.numel() for p in model.parameters()) == zoo.model_info("caformer_s18")["reference"]["params"]


def test_timm_create_model_takes_device_and_dtype():
    model = timm.create_model("identityformer_s12", device="meta", dtype=torch.float32)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    model = timm.create_model("convnet_d3", num_classes=10, dtype=torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert torch.get_default_dtype() == torch.float32  # the build's default dtype does not leak
    out = model(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (2, 10)


@pytest.mark.parametrize(
    "kwargs, words", [({"device": "nowhere"}, "device='nowhere'"), ({"dtype": torch.int8}, "dtype")]
)
def test_bad_device_or_dtype_is_named(kwargs, words):
    with pytest.raises(ValueError, match=words):
        zoo.create_model("convnet_d3", **kwargs)


def test_reset_classifier_follows_the_models_dtype_and_mode():
    model = zoo.create_model("identityformer_s12").double().eval()
    model.reset_classifier(5)
    assert {p.dtype for p in model.head.parameters()} == {torch.float64}
    assert not any(m.training for m in model.head.modules())
    assert model(torch.randn(1, 3, 64, 64, dtype=torch.float64)).shape == (1, 5)


# ---- pooling ------------------------------------------------------------------------------------------------------
def _pool(model) -> str:
    return model.global_pool if hasattr(model, "global_pool") else model.head.global_pool  # MetaFormer: the head's


def _pre_logits(model, x):
    return model.forward_head(model.forward_features(x), pre_logits=True)


# avgmax (both reductions) on each head's layout, max alone on CAFormer's; the other max cases under -m slow
@pytest.mark.parametrize(
    "name, pool",
    [(n, "avgmax") for n in ("caformer_s18", "poolformer_s12", "sret_tiny", "convnet_d3")]
    + [("caformer_s18", "max")]
    + [pytest.param(n, "max", marks=pytest.mark.slow) for n in ("poolformer_s12", "sret_tiny", "convnet_d3")],
)
def test_global_pool_names_pool_the_features(name, pool):
    """timm's pooling names: the pooled features (before the head's norm where the authors pool first, after it
    for PoolFormer v1, which normalises the map); a reset without a pool keeps it (timm's
    test_reset_classifier_keeps_pool)."""
    model = zoo.create_model(name, global_pool=pool).eval()
    size = model.pretrained_cfg["input_size"][-1] if name == "sret_tiny" else 64
    x = torch.randn(2, model.pretrained_cfg["input_size"][0], size, size)

    def pooled(f, dims):
        return f.amax(dims) if pool == "max" else 0.5 * (f.mean(dims) + f.amax(dims))

    with torch.no_grad():
        features = model.forward_features(x)
        expected = _pre_logits(model, x)
        if name == "convnet_d3":  # no head norm
            torch.testing.assert_close(expected, pooled(features, (2, 3)))
        elif name == "poolformer_s12":  # v1: GroupNorm of the whole map, then the pooling
            torch.testing.assert_close(expected, pooled(model.head.norm(features.permute(0, 2, 3, 1)), (1, 2)))
        else:
            torch.testing.assert_close(expected, model.head.norm(pooled(features, (2, 3))))
        model.reset_classifier(5)
        assert _pool(model) == pool
        torch.testing.assert_close(_pre_logits(model, x), expected)
        assert model(x).shape == (2, 5)
        model.reset_classifier(5, "avg")
        assert _pool(model) == "avg" and not torch.allclose(_pre_logits(model, x), expected)


def test_concatenating_pool_is_refused_with_the_names_taken():
    """A ValueError naming the pools taken, and an AssertionError as timm's models give (timm catches that)."""
    with pytest.raises(ValueError, match="'avgmax'"):
        zoo.create_model("caformer_s18", global_pool="catavgmax")
    model = zoo.create_model("convnet_d3")
    with pytest.raises(AssertionError, match="catavgmax"):
        model.reset_classifier(7, "catavgmax")


# ---- pretrained cfgs and tags ------------------------------------------------------------------------------------
def test_timm_lists_the_zoos_pretrained_tags():
    assert "identityformer_s12.sail_in1k" in timm.list_pretrained("identityformer*")
    assert timm.get_pretrained_cfg_value("slak_tiny", "input_size") == (3, 224, 224)
    assert timm.get_pretrained_cfg_value("sret_small_wo_slice_384", "input_size") == (3, 384, 384)
    tags = zoo.model_info("caformer_s18")["tags"]
    assert tags[0] == "sail_in1k" and "sail_in22k_ft_in1k_384" in tags


def test_name_tag_picks_that_tags_cfg():
    model = zoo.create_model("caformer_s18.sail_in1k_384")
    assert model.pretrained_cfg["input_size"] == (3, 384, 384)
    assert model.pretrained_cfg["hf_hub_id"] == "timm/caformer_s18.sail_in1k_384"
    assert zoo.create_model("caformer_s18.sail_in22k").num_classes == 21841
    assert timm.create_model("identityformer_s12.sail_in1k").pretrained_cfg["tag"] == "sail_in1k"


def test_unknown_tag_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"caformer_s18\.sail_in1k\b.*Did you mean caformer_s18\.sail_in1k\?"):
        zoo.create_model("caformer_s18.sail_in1kk")


# ---- features_only ------------------------------------------------------------------------------------------------
def test_default_feature_wrapper_checkpoints_with_the_same_gradients():
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = zoo.create_model("identityformer_s12", features_only=True).train()
        model.set_grad_checkpointing(checkpointing)
        assert model.model.grad_checkpointing is checkpointing
        sum(f.pow(2).mean() for f in model(x)).backward()
        grads.append([p.grad for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for g0, g1 in zip(*grads, strict=True):
        torch.testing.assert_close(g1, g0)


# ---- pretrained weights adapted as timm adapts them --------------------------------------------------------------
@pytest.fixture(scope="module")
def convformer_weights():
    """timm's own convformer_s18 (the layout of timm's Hub copies) and its safetensors bytes."""
    torch.manual_seed(3)
    reference = timm.create_model("convformer_s18").eval()
    return reference, save({k: v.contiguous() for k, v in reference.state_dict().items()})


def _serve(hub, weights):
    cfg = zoo.model_info("convformer_s18")["pretrained_cfg"]
    hub.repos[cfg["hf_hub_id"]] = {cfg["hf_hub_filename"]: weights}


def test_headless_pretrained_backbone_loads_every_other_weight(hub, convformer_weights):
    reference, weights = convformer_weights
    _serve(hub, weights)
    model = zoo.create_model("convformer_s18", pretrained=True, num_classes=0).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.forward_head(reference.forward_features(x), pre_logits=True))
    assert not any(k.startswith("head.fc.") for k in model.state_dict())


def test_pretrained_with_other_head_or_input_width_or_as_features(hub, convformer_weights):
    reference, weights = convformer_weights
    _serve(hub, weights)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = reference.forward_features(x)
        model = zoo.create_model("convformer_s18", pretrained=True, num_classes=10).eval()
        assert model(x).shape == (1, 10)
        torch.testing.assert_close(model.forward_features(x), want)
        fc1 = reference.state_dict()["head.fc.fc1.weight"]  # the MLP head's hidden layer is kept
        torch.testing.assert_close(model.state_dict()["head.fc.fc1.weight"], fc1)
        grey = zoo.create_model("convformer_s18", pretrained=True, in_chans=1).eval()
        torch.testing.assert_close(grey.stem.conv.weight, reference.stem.conv.weight.sum(1, keepdim=True))
        backbone = zoo.create_model("convformer_s18", pretrained=True, features_only=True).eval()
        torch.testing.assert_close(backbone(x)[-1], want)


def test_pretrained_into_a_meta_build_takes_the_checkpoints_tensors(hub, convformer_weights):
    reference, weights = convformer_weights
    _serve(hub, weights)
    model = zoo.create_model("convformer_s18", pretrained=True, device="meta", num_classes=3).eval()
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), reference.forward_features(x))
        assert torch.isfinite(model(x)).all()
