"""The generic checks, by model name: what tests/test_models.py runs on every registered model and
tests/test_family_contract.py on a family registered at run time. Inputs are 64x64 except for models with a fixed
input size (learned position tables, frozen mixing matrices), which run at their cfg size."""

import inspect

import pytest
import torch
from timm.models import group_parameters

import zoo
from zoo.weights import save_state_dict


def input_size(name: str, variable: int = 64) -> int:
    cfg = zoo.model_info(name)["pretrained_cfg"]
    return cfg["input_size"][-1] if cfg.get("fixed_input_size") else variable


def sample(name: str, batch: int = 2, variable: int = 64) -> torch.Tensor:
    s = input_size(name, variable)
    return torch.randn(batch, 3, s, s, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------------------------------------------
# The checks, by model name


def check_param_count(name: str) -> None:
    with torch.device("meta"):
        model = zoo.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == zoo.model_info(name)["reference"]["params"]


def check_cfg(name: str) -> None:
    """The pretrained cfg names modules that exist (meta device: nothing is allocated)."""
    with torch.device("meta"):
        model = zoo.create_model(name, num_classes=42)
    cfg, sd = model.pretrained_cfg, model.state_dict()
    assert cfg["architecture"] == name
    assert cfg["first_conv"] + ".weight" in sd
    assert sd[cfg["classifier"] + ".weight"].shape[0] == 42
    assert len(cfg["input_size"]) == 3 and len(cfg["mean"]) == len(cfg["std"]) == cfg["input_size"][0]


def check_train_step(name: str) -> None:
    """Backward with a new head: every trainable parameter gets a gradient; only frozen buffers-by-design freeze."""
    model = zoo.create_model(name, num_classes=42)
    out = model(sample(name))
    assert out.shape == (2, 42) and torch.isfinite(out).all()
    out.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all("random_matrix" in n for n in frozen)


@torch.no_grad()
def check_interface(name: str, tmp_path) -> None:
    """timm's face: features (at the last feature_info reduction), head with pre_logits, grad checkpointing,
    classifier reset, safetensors round trip. ``num_features`` is the map's channels, ``head_hidden_size`` the
    pre-logits width (the same, except for a head that flattens the map)."""
    model = zoo.create_model(name, num_classes=42).eval()
    cfg, x, s = model.pretrained_cfg, sample(name), input_size(name)
    m = s // model.feature_info[-1]["reduction"]
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features, m, m)
    if s == cfg["input_size"][-1]:
        assert tuple(feats.shape[-2:]) == tuple(cfg["pool_size"])
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
    ref = model(x)
    assert torch.equal(model.forward_head(feats), ref)  # eval is deterministic
    model.set_grad_checkpointing(True)
    assert torch.allclose(model(x), ref, rtol=1e-5, atol=1e-5)
    model.set_grad_checkpointing(False)

    path = save_state_dict(model, tmp_path / "w.safetensors")
    assert torch.equal(zoo.create_model(name, num_classes=42, checkpoint_path=str(path)).eval()(x), ref)

    model.reset_classifier(0)
    assert model(x).shape == (2, model.head_hidden_size)
    model.reset_classifier(0, "")
    assert model(x).shape == (2, model.num_features, m, m)
    model.reset_classifier(7, "avg")
    assert model(x).shape == (2, 7)
    assert model.get_classifier() is not None


@torch.no_grad()
def check_features(name: str) -> None:
    """features_only: one map per feature_info entry, channels and strides as declared, equal to
    forward_intermediates; out_indices picks a subset."""
    model = zoo.create_model(name).eval()
    feat_model = zoo.create_model(name, features_only=True).eval()
    feat_model.model.load_state_dict(model.state_dict(), strict=False)
    x = sample(name, batch=1)
    feats = feat_model(x)
    info = feat_model.feature_info
    assert len(feats) == len(info) and info.channels() == [f.shape[1] for f in feats]
    for f, r in zip(feats, info.reduction()):
        assert f.shape[-2:] == (x.shape[-2] // r, x.shape[-1] // r)
    for a, b in zip(feats, model.forward_intermediates(x, intermediates_only=True)):
        assert torch.equal(a, b)
    final, inter = model.forward_intermediates(x)
    assert torch.equal(final, model.forward_features(x)) and torch.equal(inter[-1], final)
    last = len(info) - 1
    sub = zoo.create_model(name, features_only=True, out_indices=(0, last)).eval()
    assert [f.shape[1] for f in sub(x)] == sub.feature_info.channels() == [info.channels()[0], info.channels()[-1]]
    for bad in [(0, last + 1), (-(last + 2),)]:
        with pytest.raises(ValueError, match="out of range"):
            zoo.create_model(name, features_only=True, out_indices=bad)


def check_regularisation(name: str) -> None:
    """Stochastic depth (dropout before the classifier for a model without residual branches to drop) is active
    in training and off in eval; group_matcher covers every parameter."""
    with torch.device("meta"):
        model_cls = type(zoo.create_model(name))
    rate = "drop_path_rate" if "drop_path_rate" in inspect.signature(model_cls.__init__).parameters else "drop_rate"
    model = zoo.create_model(name, **{rate: 0.3})
    x = sample(name, batch=4)
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    grouped = {n for names in group_parameters(model, model.group_matcher()).values() for n in names}
    assert grouped == {n for n, _ in model.named_parameters()}


def check_autocast(name: str) -> None:
    """CPU autocast (bfloat16): forward and backward run and stay close to float32 (at the smallest input: CPU
    bfloat16 convolutions with large kernels are slow)."""
    model = zoo.create_model(name)
    x = sample(name, variable=32)
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
