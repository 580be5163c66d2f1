"""The generic suite, run on every registered model (like timm's tests/test_models.py); nothing here names a family.

Every model: parameter count against the authors' (meta device, no memory), cfg consistency. The full interface
(forward/backward with a new head, features, grad checkpointing, safetensors round trip, autocast) runs by default
on one model per series -- the smallest of the names that share a prefix, e.g. the ``poolformer_*`` or
``slak_*`` models -- and on every other variant under ``-m slow``. Inputs are 64x64 except for models with a fixed
input size (learned position tables, frozen mixing matrices), which run at their cfg size.

The check functions take a model name, so a family registered at run time goes through the same checks
(tests/test_family_contract.py).
"""

import inspect
from collections import defaultdict

import pytest
import torch
from timm.models import group_parameters

import zoo
from zoo.registry import get_entry, list_models
from zoo.weights import save_state_dict

VISION = list_models(task="image-classification")


def series(name: str) -> str:
    return name.split("_", 1)[0]


def representatives(names):
    """The smallest model (reference params, then name) of each series."""
    by_series = defaultdict(list)
    for name in names:
        by_series[series(name)].append(name)
    return sorted(
        min(group, key=lambda n: (get_entry(n).reference.get("params") or 0, n)) for group in by_series.values()
    )


DEFAULT = representatives(VISION)
# every vision model: the representatives by default, the others under -m slow
ALL_VISION = [name if name in DEFAULT else pytest.param(name, marks=pytest.mark.slow) for name in VISION]


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


# ----------------------------------------------------------------------------------------------------------------
# The suite


@pytest.mark.parametrize("name", list_models())
def test_param_count_matches_authors(name):
    check_param_count(name)


@pytest.mark.parametrize("name", VISION)
def test_cfg_consistency(name):
    check_cfg(name)


@pytest.mark.parametrize("name", ALL_VISION)
def test_train_step(name):
    check_train_step(name)


@pytest.mark.parametrize("name", ALL_VISION)
def test_interface(name, tmp_path):
    check_interface(name, tmp_path)


@pytest.mark.parametrize("name", ALL_VISION)
def test_features_only(name):
    check_features(name)


@pytest.mark.parametrize("name", DEFAULT)
def test_regularisation(name):
    check_regularisation(name)


# CPU bfloat16 is slowest for these (RandFormer's full-size token mix, SReT, SLaK's 31x31 kernels): under -m slow
SLOW_AUTOCAST = {"randformer_s12", "sret_tiny", "slak_tiny_31"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_AUTOCAST else n for n in DEFAULT]
)
def test_autocast_bfloat16(name):
    check_autocast(name)


def test_every_series_has_a_default_representative():
    assert {series(n) for n in DEFAULT} == {series(n) for n in VISION}


def test_star_relu_gradients_are_autograds():
    """StarReLU's written-out backward (relu(x) kept alone, four passes) gives autograd's gradients of
    ``bias + scale * relu(x)**2``, for a contiguous and a permuted gradient, and under bf16 autocast."""
    from zoo.layers.activations import StarReLU, _StarReLUFunction

    torch.manual_seed(0)
    m = StarReLU(1.3, -0.2).double()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_StarReLUFunction.apply, (x, m.scale, m.bias))
    for permuted in (False, True):
        x = torch.randn(2, 6, 5, 4, dtype=torch.float64, requires_grad=True)
        inp = x.permute(0, 2, 3, 1) if permuted else x
        grads = []
        for fn in (m, lambda t: m.bias + m.scale * torch.relu(t) ** 2):
            y = fn(inp)
            grads.append(torch.autograd.grad((y * torch.arange(y.numel()).view_as(y)).sum(), (x, m.scale, m.bias)))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b)
    lin, x = torch.nn.Linear(8, 8), torch.randn(4, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = StarReLU()(lin(x))
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
