"""ConvNet-D: parity with a plain rendition of the authors' ConvNet on the same weights (through the family's
``checkpoint_filter_fn``), the reference figures, the head modes, and the pruned widths as builder arguments."""

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from tolerances import assert_float32_close, in_float64

import zoo
from zoo.bench.reference.convnet import ReferenceConvNet
from zoo.models.convnet import checkpoint_filter_fn, reference_figures

SIZES = {"convnet_d3": (3, 32), "convnet_d4": (4, 64), "convnet_d5": (5, 128)}


def _reference(depth=3, channels=3, size=32, norm="instancenorm", width=128, num_classes=10, seed=0):
    """The authors' network with random weights (and, for BatchNorm, random running statistics), in eval mode."""
    torch.manual_seed(seed)
    ref = ReferenceConvNet(channels, num_classes, width, depth, norm, (size, size))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, t in ref.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():  # norm affines away from their 1 / 0 init
                t.copy_(torch.randn(t.shape, generator=g) * (0.1 if t.ndim > 1 else 0.5))
    return ref.eval()


def _input(channels=3, size=32, batch=2):
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize(
    "channels, size, norm",
    [
        (3, 32, "instancenorm"),
        (1, 28, "instancenorm"),  # the authors pad the first conv by 3: 28 -> 32
        (3, 32, "batchnorm"),
        (3, 32, "none"),
        (1, 28, "batchnorm"),
    ],
)
def test_matches_the_authors_convnet(channels, size, norm, tmp_path):
    """Logits and embeddings equal the reference's, loaded from the authors' state dict by zoo.create_model."""
    ref = _reference(channels=channels, size=size, norm=norm)
    path = tmp_path / "convnet.pt"
    torch.save(ref.state_dict(), path)
    model = zoo.create_model(
        "convnet_d3",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path)},
        in_chans=channels,
        img_size=size,
        norm=norm,
    ).eval()
    x = _input(channels, size)
    with torch.no_grad():  # within 4x the authors' own float32 error against their network in float64
        ref64 = in_float64(ref)
        assert_float32_close(model(x), ref(x), ref64(x.double()), msg="logits")
        emb = model.embed(x)
        assert_float32_close(emb, ref.embed(x), ref64.embed(x.double()), msg="embeddings")
        assert emb.shape == (2, model.head_hidden_size) == (2, 128 * 4 * 4)
        pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(pre_logits, emb, rtol=0, atol=0)  # the same modules: bit for bit


@pytest.mark.parametrize("norm", ["instancenorm", "batchnorm", "none"])
def test_filter_maps_every_key_of_the_authors_layout(norm):
    ref = _reference(norm=norm, width=16)
    model = zoo.models.convnet.convnet_d3(width=16, norm=norm)
    mapped = checkpoint_filter_fn(ref.state_dict(), model)
    assert mapped.keys() == model.state_dict().keys()
    model.load_state_dict(mapped)
    x = _input()
    with torch.no_grad():  # within 4x the authors' own float32 error against float64
        assert_float32_close(model.eval()(x), ref(x), in_float64(ref)(x.double()), msg=norm)


@pytest.mark.parametrize("name", list(SIZES))
def test_reference_figures(name):
    """Parameters and plain fvcore's MACs of the authors' network equal the figures the family records; the
    zoo's model has the same parameters, and zoo.profile counts at least fvcore's MACs (plus pooling and ReLU)."""
    depth, size = SIZES[name]
    ref = ReferenceConvNet(3, 10, 128, depth, "instancenorm", (size, size)).eval()
    figures = reference_figures[name]
    assert sum(p.numel() for p in ref.parameters()) == figures["params"]
    flops = FlopCountAnalysis(ref, torch.randn(1, 3, size, size))
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert flops.total() == figures["macs"]
    profile = zoo.profile(name)
    assert profile.params == figures["params"] and figures["macs"] < profile.macs < 1.02 * figures["macs"]
    assert zoo.create_model(name).pretrained_cfg["input_size"] == (3, size, size)


def test_head_modes():
    """flatten (the authors', fixed size), avg (any size) and no pooling (the map); timm's num_features /
    head_hidden_size; reset_classifier moves between them."""
    model = zoo.create_model("convnet_d3").eval()
    assert (model.num_features, model.head_hidden_size, model.fixed_input_size) == (128, 2048, True)
    with pytest.raises(ValueError, match=r"takes \(B, 3, 32, 32\) images.*global_pool='avg'"):
        model(torch.randn(1, 3, 64, 64))
    model.reset_classifier(5, "avg")
    assert (model.head_hidden_size, model.fixed_input_size) == (128, False)
    assert model(torch.randn(2, 3, 64, 48)).shape == (2, 5)
    model.reset_classifier(5, "")
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5, 8, 8)
    model.reset_classifier(5, "flatten")
    assert model(_input()).shape == (2, 5) and model.head.fc.in_features == 2048
    model.reset_classifier(5, "max")  # timm's pooling names: the map's maximum, the same width
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(
        model.forward_head(model.forward_features(x), pre_logits=True), model.forward_features(x).amax((2, 3))
    )
    with pytest.raises(ValueError, match="global_pool must be 'flatten' or 'avg' or 'max' or 'avgmax' or ''"):
        model.reset_classifier(5, "catavgmax")  # would double the classifier's width


def test_drop_rate_is_dropout_before_the_classifier():
    model = zoo.create_model("convnet_d3", drop_rate=0.5)
    x = _input()
    torch.manual_seed(0)
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    with pytest.raises(ValueError, match="drop_rate"):
        zoo.create_model("convnet_d3", drop_rate=1.0)


def test_norm_and_widths_are_architecture_arguments():
    """``norm="batchnorm"`` reaches the model (not timm's feature-wrapper switch); ``widths`` sets every block."""
    model = zoo.create_model("convnet_d3", norm="batchnorm", widths=(16, 24, 8), num_classes=3)
    assert all(isinstance(s.norm, torch.nn.BatchNorm2d) for s in model.stages)
    assert model.widths == [16, 24, 8] and model.head.fc.in_features == 8 * 4 * 4
    assert [f["num_chs"] for f in model.feature_info] == [16, 24, 8]
    with pytest.raises(ValueError, match="widths must be 3 positive ints"):
        zoo.create_model("convnet_d3", widths=(16, 24))
    with pytest.raises(ValueError, match="norm must be one of"):
        zoo.create_model("convnet_d3", norm="layernorm")


def test_pruning_removes_dead_channels_exactly():
    """Channels whose conv and norm are zero go first and the logits do not move: the instance norms keep a group
    per kept channel and the flattened classifier loses exactly the removed channels' columns."""
    model = zoo.create_model("convnet_d3", width=16, num_classes=5).eval()
    with torch.no_grad():
        for block, dead in zip(model.stages, ([1, 5, 9, 12], [0, 2, 3, 15], [4, 7, 8, 11])):
            for t in (block.conv.weight, block.conv.bias, block.norm.weight, block.norm.bias):
                t[dead] = 0
    x = _input(batch=3)
    with torch.no_grad():
        dense, dense64 = model(x), in_float64(model)(x.double())
    zoo.prune(model, ratio=0.25, example_inputs=x[:1], round_to=None)
    assert model.pruned_args == {"widths": [12, 12, 12]}
    assert [(s.norm.num_groups, s.norm.num_channels) for s in model.stages] == [(12, 12)] * 3
    assert model.head.fc.in_features == model.head_hidden_size == 12 * 4 * 4
    with torch.no_grad():
        # fewer (zero) terms in each conv and classifier sum: within 4x the dense float32's own error
        assert_float32_close(model(x), dense, dense64, msg="pruned")
