"""timm-style checks on every registered model (like timm's tests/test_models.py).

Inputs are reduced (64x64) to keep the run short on 2 CPU cores, except for models with a fixed input size
(RandFormer's frozen mixing matrices, SReT's learned position embedding), which run at their cfg size.
"""
import pytest
import torch

import zoo
from zoo.weights import save_state_dict

MODELS = zoo.list_models(task="image-classification")  # language models: tests/test_mobilellm.py


def _size(name):
    cfg = zoo.model_info(name)["pretrained_cfg"]
    return cfg["input_size"][-1] if cfg.get("fixed_input_size") else 64


def _x(name, batch=2):
    s = _size(name)
    return torch.randn(batch, 3, s, s, generator=torch.Generator().manual_seed(0))


def test_all_28_metaformer_variants_are_registered():
    expected = ([f"poolformer_{s}" for s in ("s12", "s24", "s36", "m36", "m48")]
                + [f"{f}_{s}" for f in ("identityformer", "randformer", "poolformerv2")
                   for s in ("s12", "s24", "s36", "m36", "m48")]
                + [f"{f}_{s}" for f in ("convformer", "caformer") for s in ("s18", "s36", "m36", "b36")])
    assert sorted(expected) == zoo.list_models(family="metaformer")


@pytest.mark.parametrize("name", zoo.list_models())
def test_param_count_matches_authors(name):
    with torch.device("meta"):
        model = zoo.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == zoo.model_info(name)["reference"]["params"]


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_and_interface(name, tmp_path):
    model = zoo.create_model(name, num_classes=42)
    cfg = model.pretrained_cfg
    x = _x(name)

    # backward with a new head: every trainable parameter gets a gradient
    out = model(x)
    assert out.shape == (2, 42) and torch.isfinite(out).all()
    out.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all("random_matrix" in n for n in frozen)

    model.eval()
    with torch.no_grad():
        # cfg consistency: first_conv and classifier exist, pool_size is the feature map size at cfg input
        sd = model.state_dict()
        assert cfg["first_conv"] + ".weight" in sd
        assert cfg["classifier"] + ".weight" in sd
        assert sd[cfg["classifier"] + ".weight"].shape[0] == 42
        feats = model.forward_features(x)
        s = _size(name)
        assert feats.shape == (2, model.num_features, s // 32, s // 32)
        if s == cfg["input_size"][-1]:
            assert tuple(feats.shape[-2:]) == tuple(cfg["pool_size"])
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
        assert torch.equal(model.forward_head(feats), model(x))  # eval is deterministic

        # grad checkpointing leaves outputs unchanged
        ref = model(x)
        model.set_grad_checkpointing(True)
        assert torch.allclose(model(x), ref, rtol=1e-5, atol=1e-5)
        model.set_grad_checkpointing(False)

        # safetensors round trip is exact
        path = save_state_dict(model, tmp_path / "w.safetensors")
        other = zoo.create_model(name, num_classes=42, checkpoint_path=str(path)).eval()
        assert torch.equal(other(x), ref)

        # classifier reset
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
        model.reset_classifier(0, "")
        unpooled = model(x)
        assert unpooled.shape == (2, model.num_features, s // 32, s // 32)
        model.reset_classifier(7, "avg")
        assert model(x).shape == (2, 7)


@pytest.mark.parametrize("name", MODELS)
def test_features_only(name):
    model = zoo.create_model(name, features_only=True).eval()
    x = _x(name, batch=1)
    with torch.no_grad():
        feats = model(x)
    expected = [8, 16, 32] if name.startswith("sret") else [4, 8, 16, 32]
    assert len(feats) == len(expected)
    assert model.feature_info.reduction() == expected
    assert model.feature_info.channels() == [f.shape[1] for f in feats]
    for f, r in zip(feats, model.feature_info.reduction()):
        assert f.shape[-2:] == (x.shape[-2] // r, x.shape[-1] // r)


@pytest.mark.parametrize("name", ["poolformer_s12", "randformer_s12", "caformer_s18"])
def test_features_only_out_indices(name):
    model = zoo.create_model(name, features_only=True).eval()
    x = _x(name, batch=1)
    sub = zoo.create_model(name, features_only=True, out_indices=(1, 3)).eval()
    with torch.no_grad():
        feats13 = sub(x)
    assert [f.shape[1] for f in feats13] == sub.feature_info.channels() == model.feature_info.channels()[1::2]


@pytest.mark.parametrize("bad", [(0, 4), (5,), (-5,)])
def test_features_only_out_of_range_raises(bad):
    with pytest.raises(ValueError, match="out of range"):
        zoo.create_model("poolformer_s12", features_only=True, out_indices=bad)


def test_features_match_forward_intermediates():
    model = zoo.create_model("caformer_s18").eval()
    feat_model = zoo.create_model("caformer_s18", features_only=True).eval()
    feat_model.model.load_state_dict(model.state_dict(), strict=False)
    x = _x("caformer_s18", batch=1)
    with torch.no_grad():
        for a, b in zip(feat_model(x), model.forward_intermediates(x, intermediates_only=True)):
            assert torch.equal(a, b)
        final, inter = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert torch.equal(inter[-1], final)


def test_drop_path_trains_and_is_off_in_eval():
    model = zoo.create_model("poolformerv2_s12", drop_path_rate=0.3)
    x = _x("poolformerv2_s12", batch=4)
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    b = model(x)
    assert not torch.allclose(a, b)  # stochastic depth is active in training
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_group_matcher_covers_every_parameter():
    from timm.models import group_parameters
    model = zoo.create_model("caformer_s18")
    groups = group_parameters(model, model.group_matcher())
    grouped = {n for names in groups.values() for n in names}
    assert grouped == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("name", ["poolformer_s12", "identityformer_s12", "randformer_s12", "poolformerv2_s12",
                                  "convformer_s18", "caformer_s18"])
def test_autocast_bfloat16(name):
    """Mixed precision (CPU autocast, bfloat16): forward and backward run and stay close to float32."""
    model = zoo.create_model(name)
    x = _x(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).float()
    assert (low - ref).abs().max() <= 0.1 * ref.abs().max()
