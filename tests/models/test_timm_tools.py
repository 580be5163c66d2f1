"""timm's and torchvision's tools on the zoo's vision models, as a timm user reaches for them after ``import zoo``:
the data config and transform, layer-wise lr decay, FX feature extraction (torchvision's and timm's
``feature_cls="fx"``), meta-device construction then ``init_weights()``, and weights from a local file through
``pretrained_cfg_overlay``. Small inputs; one small model per family."""

import numpy as np
import pytest
import timm
import timm.data
import timm.optim
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision.models.feature_extraction import create_feature_extractor

import zoo  # noqa: F401  (its vision models join timm's registry)

pytestmark = pytest.mark.usefixtures("one_thread")

# one small model of each family whose names only the zoo has (timm builds them through the zoo)
FAMILIES = ["identityformer_s12", "slak_tiny", "sret_tiny", "convnet_d3"]
# the tools that read or trace the model run on these (slak_tiny takes 3 s to build: its kernels are 51x51)
QUICK = ["identityformer_s12", "sret_tiny", "convnet_d3"]


def _input(model, batch: int = 1, size: int = 64) -> torch.Tensor:
    """A batch at ``size`` pixels, or at the model's own size when it takes only that one."""
    cfg = model.pretrained_cfg
    shape = cfg["input_size"] if cfg.get("fixed_input_size") else (cfg["input_size"][0], size, size)
    return torch.randn(batch, *shape)


@pytest.mark.parametrize("name", ["identityformer_s12", "convnet_d3"])
def test_data_config_transform_feeds_the_model(name):
    """``resolve_model_data_config`` + ``create_transform``: a PIL image becomes a tensor of the model's input size,
    which the model takes."""
    model = timm.create_model(name).eval()
    cfg = timm.data.resolve_model_data_config(model)
    assert cfg["input_size"] == tuple(model.pretrained_cfg["input_size"])
    assert cfg["mean"] == tuple(model.pretrained_cfg["mean"]) and cfg["std"] == tuple(model.pretrained_cfg["std"])
    transform = timm.data.create_transform(**cfg)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 131, 3), dtype=np.uint8))
    x = transform(image)
    assert tuple(x.shape) == cfg["input_size"]
    with torch.no_grad():
        out = model(x.unsqueeze(0))
    assert out.shape == (1, model.num_classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_layer_decay_gives_each_stage_or_block_its_lr(name):
    """``create_optimizer_v2(..., layer_decay=0.65)`` (timm's ``group_matcher(coarse=False)``): a learning-rate scale
    per stage or block, the stem's the lowest, the classifier's 1, every trainable parameter in one group."""
    with torch.device("meta"):  # the groups need names and shapes only
        model = timm.create_model(name)
    opt = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, layer_decay=0.65)
    scale = {}
    for group in opt.param_groups:
        for p in group["params"]:
            assert id(p) not in scale, "a parameter in two groups"
            scale[id(p)] = group["lr_scale"]
    params = dict(model.named_parameters())
    assert {id(p) for p in params.values() if p.requires_grad} == set(scale)
    scales = set(scale.values())
    assert len(scales) > len(model.feature_info), f"{len(scales)} lr scales for {len(model.feature_info)} stages"
    first = scale[id(params[f"{model.pretrained_cfg['first_conv']}.weight"])]
    classifier = scale[id(params[f"{model.pretrained_cfg['classifier']}.weight"])]
    assert first == min(scales) and classifier == max(scales) == 1.0


# SReT under -m slow: test_features_only_fx_runs traces it by default
@pytest.mark.parametrize("name", [n if n != "sret_tiny" else pytest.param(n, marks=pytest.mark.slow) for n in QUICK])
def test_torchvision_feature_extractor_gives_the_intermediates(name):
    """torchvision's ``create_feature_extractor`` (FX) on the stages ``feature_info`` names: the same tensors as
    ``forward_intermediates`` (in the stages' own layout, ``stage_output_fmt``)."""
    model = timm.create_model(name).eval()
    nodes = {info["module"]: str(i) for i, info in enumerate(model.feature_info)}
    extractor = create_feature_extractor(model, return_nodes=nodes)
    x = _input(model)
    with torch.no_grad():
        found = list(extractor(x).values())
        expected = model.forward_intermediates(x, intermediates_only=True)
    assert len(found) == len(expected) == len(model.feature_info)
    nhwc = getattr(model, "stage_output_fmt", "NCHW") == "NHWC"
    for i, (got, want) in enumerate(zip(found, expected, strict=True)):
        got = got.permute(0, 3, 1, 2) if nhwc else got
        torch.testing.assert_close(got, want, msg=f"stage {i}")


@pytest.mark.parametrize("name", QUICK)
def test_features_only_fx_runs(name):
    """``timm.create_model(name, features_only=True, feature_cls="fx")``: timm's FX feature wrapper, one map per
    stage with ``feature_info``'s channels and reductions."""
    model = timm.create_model(name, features_only=True, feature_cls="fx").eval()
    x = _input(model)
    with torch.no_grad():
        features = model(x)
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(features) == len(channels)
    for f, c, r in zip(features, channels, reductions, strict=True):
        assert f.shape[0] == 1 and c in (f.shape[1], f.shape[-1]) and torch.isfinite(f).all()
        assert x.shape[-1] // r in (f.shape[2], f.shape[-1] if f.shape[1] == c else f.shape[2])


@pytest.mark.parametrize("name", [*QUICK, "randformer_s12"])
def test_meta_build_then_init_weights(name):
    """``create_model(name, device="meta")``, ``to_empty``, ``init_weights()``: every parameter and floating buffer
    is set again (the storage is poisoned with NaN first, as timm's own test does), every other buffer equals a
    normal build's, and the output is finite."""
    model = timm.create_model(name, device="meta")
    assert all(t.device.type == "meta" for t in (*model.parameters(), *model.buffers()))
    model = model.to_empty(device="cpu").eval()
    with torch.no_grad():
        for t in (*model.parameters(), *model.buffers()):
            t.fill_(float("nan") if t.is_floating_point() else -7)
    model.init_weights()
    reference = dict(timm.create_model(name).named_buffers())
    for key, t in (*model.named_parameters(), *model.named_buffers()):
        if t.is_floating_point():
            assert torch.isfinite(t).all(), f"{key} not set by init_weights()"
        else:
            assert torch.equal(t, reference[key]), f"{key} not set by init_weights()"
    with torch.no_grad():
        assert torch.isfinite(model(_input(model))).all()


def test_pretrained_cfg_overlay_file_loads_another_instances_weights(tmp_path):
    """``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))`` loads a safetensors file
    written from another instance: the same outputs."""
    name = "identityformer_s12"
    source = timm.create_model(name).eval()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(1)  # a different init, which the file must overwrite
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = _input(source, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)
