"""SLaK: parity with a plain rendition of the authors' forward, checkpoint layouts, the fused inference form
(reparameterisation, both execution paths, save/load), and dense vs non-zero counts."""

import pytest
import torch
from model_checks import assert_close_to_scale

import zoo
from zoo.bench.reference.slak import (
    arch,
    count_params,
    make_authors_state_dict,
    reference_forward,
)
from zoo.layers import DecomposedLargeKernel, FusedLargeKernel
from zoo.models.slak import checkpoint_filter_fn
from zoo.weights import CheckpointMismatchError, load_checkpoint, save_state_dict

# a reduced SLaK: every feature of the real one (3 branches per block, 5x5 in every stage, odd widths, kernels
# larger than the maps at the later stages), small enough for the default test run
SPEC = dict(depths=(1, 2, 1, 1), base_dims=(16, 24, 40, 56), kernel_size=(13, 11, 9, 7, 5), num_classes=10)
KWARGS = dict(depths=(1, 2, 1, 1), dims=(16, 24, 40, 56), kernel_size=(13, 11, 9, 7, 5), num_classes=10)


def _input(size=96, batch=2, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _save(obj, tmp_path, name="slak.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def _load(sd, tmp_path, name="slak_tiny", **kwargs):
    path = _save({"model": sd}, tmp_path)  # the authors' files are {"model": state_dict}
    return zoo.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": path}, **kwargs).eval()


def test_widths_truncate_and_params_match_the_reference_layout():
    for name, widths in (("slak_tiny", (124, 249, 499, 998)), ("slak_base", (166, 332, 665, 1331))):
        assert arch(name)["dims"] == widths
        with torch.device("meta"):
            model = zoo.create_model(name)
        assert [f["num_chs"] for f in model.feature_info] == list(widths)
        assert model.feature_info[-1]["reduction"] == 32
    sd = make_authors_state_dict(SPEC)
    assert count_params(sd) == sum(p.numel() for p in zoo.create_model("slak_tiny", **KWARGS).parameters())


def test_matches_authors_forward(tmp_path):
    sd = make_authors_state_dict(SPEC, seed=3)
    model = _load(sd, tmp_path, **KWARGS)
    x = _input()
    with torch.no_grad():
        ref_logits, ref_feats = reference_forward(sd, x, return_features=True)
        logits = model(x)
        feats = model.forward_intermediates(x, intermediates_only=True)
    assert ref_logits.std() > 0.1  # realistic scales: the blocks contribute (gamma ~ 1, not 1e-6)
    assert_close_to_scale(logits, ref_logits, "logits")
    for i, (f, r) in enumerate(zip(feats, ref_feats)):
        assert_close_to_scale(f, r, f"stage {i}")
    # every block matters: zeroing one block's layer scale changes the output
    sd2 = dict(sd, **{"stages.1.1.gamma": torch.zeros_like(sd["stages.1.1.gamma"])})
    assert (reference_forward(sd2, x) - ref_logits).abs().max() > 1e-3


def test_older_key_names_and_wrappers(tmp_path):
    sd = make_authors_state_dict(SPEC, seed=4)
    old = {k.replace("LoRA1", "Decom1").replace("LoRA2", "Decom2"): v for k, v in sd.items()}
    x = _input(batch=1)
    with torch.no_grad():
        ref = reference_forward(sd, x)
        assert_close_to_scale(_load(old, tmp_path, **KWARGS)(x), ref, "Decom1/Decom2 keys")
        # an EMA file: {"model": ..., "model_ema": ...}; use_ema picks the EMA weights
        model = zoo.create_model("slak_tiny", **KWARGS).eval()
        noise = {k: v + 1.0 if v.is_floating_point() else v for k, v in sd.items()}
        load_checkpoint(model, _save({"model": noise, "model_ema": sd}, tmp_path, "ema.pth"), use_ema=True)
        assert_close_to_scale(model(x), ref, "model_ema")
        # a state dict still inside its wrapper, handed to the converter directly
        converted = checkpoint_filter_fn({"model_ema": sd}, model)
        assert "stages.0.blocks.0.large_kernel.vertical.conv.weight" in converted


def test_undecomposed_checkpoint_is_a_clear_error(tmp_path):
    sd = make_authors_state_dict(SPEC, seed=5)
    sd = {k.replace("LoRA1", "lkb_origin"): v for k, v in sd.items()}
    with pytest.raises(ValueError, match="lkb_origin"):
        _load(sd, tmp_path, **KWARGS)


@pytest.mark.parametrize("shape", [(1, 7, 20, 20, 13), (3, 5, 9, 14, 11), (2, 4, 6, 5, 9), (1, 3, 24, 8, 5)])
def test_fused_large_kernel_paths_agree(shape):
    """Both execution paths of the fused form equal the three-branch module: kernels larger and smaller than
    the map, non-square maps, batches."""
    n, c, h, w, k = shape
    gen = torch.Generator().manual_seed(k)
    module = DecomposedLargeKernel(c, k, 5).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.2 if p.ndim == 4 else 1.0))
        assert (module.small is None) == (k <= 5)  # no 5x5 branch when the large kernel is 5 wide
        for bn in [m.bn for m in (module.vertical, module.horizontal, module.small) if m is not None]:
            bn.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
            bn.running_var.copy_(0.5 + torch.rand(c, generator=gen))
        x = torch.randn(n, c, h, w, generator=gen)
        ref = module(x)
        for impl in ("conv", "matmul"):
            fused = module.fuse(impl)
            assert isinstance(fused, FusedLargeKernel) and fused.resolve_impl(x) == impl
            assert_close_to_scale(fused(x), ref, impl)
            assert_close_to_scale(fused(x.contiguous(memory_format=torch.channels_last)), ref, impl + " channels-last")


def test_reparameterize_and_deploy_round_trip(tmp_path):
    sd = make_authors_state_dict(SPEC, seed=6)
    model = _load(sd, tmp_path, **KWARGS)
    x = _input(batch=2)
    with torch.no_grad():
        ref = reference_forward(sd, x)
        model.reparameterize()
        assert model.deploy
        blocks = [b for s in model.stages for b in s.blocks]
        assert all(isinstance(b.large_kernel, FusedLargeKernel) for b in blocks)
        lk_params = dict(blocks[0].large_kernel.named_parameters())
        assert sorted(lk_params) == ["horizontal.bias", "horizontal.weight", "vertical.bias", "vertical.weight"]
        for impl in ("conv", "matmul"):
            model.set_large_kernel_impl(impl)
            assert_close_to_scale(model(x), ref, f"reparameterized ({impl})")

        # the deploy form saves and loads into a deploy=True model
        model.set_large_kernel_impl("auto")
        path = save_state_dict(model, tmp_path / "deploy.safetensors")
        deploy = zoo.create_model("slak_tiny", deploy=True, checkpoint_path=str(path), **KWARGS).eval()
        assert torch.equal(deploy(x), model(x))
        # an authors' checkpoint loads straight into a deploy model (fused while loading)
        direct = _load(sd, tmp_path, deploy=True, **KWARGS)
        assert_close_to_scale(direct(x), ref, "deploy=True from the authors' file")
    # the deploy form cannot go back into the training form: a clear mismatch, nothing loaded
    with pytest.raises(CheckpointMismatchError, match="vertical"):
        zoo.create_model("slak_tiny", checkpoint_path=str(path), **KWARGS)


def test_argument_errors():
    with pytest.raises(ValueError, match="odd"):
        zoo.create_model("slak_tiny", kernel_size=(12, 11, 9, 7, 5))
    with pytest.raises(ValueError, match="5 entries"):
        zoo.create_model("slak_tiny", kernel_size=(13, 11, 9, 7))
    with pytest.raises(ValueError, match="large_kernel_impl"):
        zoo.create_model("slak_tiny", large_kernel_impl="fft", **KWARGS)
    with pytest.raises(ValueError, match="bn=True"):
        zoo.create_model("slak_tiny", deploy=True, bn=False, **KWARGS)


def test_dense_and_nonzero_counts():
    info = zoo.model_info("slak_tiny")["reference"]
    assert info["params"] == 50_703_838 and info["gmacs"] == 8.74
    assert info["nonzero_params"] == 30_000_000 and info["nonzero_macs"] == 5_000_000_000
    assert "dense" in info["dense_vs_nonzero"] and "non-zero" in info["nonzero_convention"]

    model = zoo.create_model("slak_tiny", **KWARGS).eval()
    dense = zoo.profile(model, input_size=(3, 64, 64))
    assert dense.nonzero_macs == dense.macs  # no zero weights (biases start at 0: they count in params only)
    assert dense.nonzero_params == dense.params - sum(int((p == 0).sum()) for p in model.parameters())
    gen = torch.Generator().manual_seed(0)
    weights = {n: p for n, p in model.named_parameters() if p.ndim in (2, 4)}
    with torch.no_grad():  # 40% sparse, as the authors' models: masks on every 2-D/4-D weight
        for p in weights.values():
            p.mul_((torch.rand(p.shape, generator=gen) >= 0.4).float())
    sparse = zoo.profile(model, input_size=(3, 64, 64))
    assert sparse.macs == dense.macs and sparse.params == dense.params
    weighted = sum(v for k, v in dense.macs_by_operator.items() if k in ("conv", "linear", "addmm"))
    expected = dense.macs - weighted * 0.4
    assert abs(sparse.nonzero_macs / expected - 1) < 0.01
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    assert sparse.nonzero_params == dense.params - zeros < 0.65 * dense.params


@pytest.mark.slow
@pytest.mark.parametrize("deploy", [False, True])
def test_full_slak_tiny_matches_authors_forward(deploy, tmp_path):
    sd = make_authors_state_dict("slak_tiny", seed=7)
    model = _load(sd, tmp_path, deploy=deploy)
    x = _input(224, batch=1)
    with torch.no_grad():
        ref_logits, ref_feats = reference_forward(sd, x, return_features=True)
        logits, feats = model(x), model.forward_intermediates(x, intermediates_only=True)
    assert_close_to_scale(logits, ref_logits, "logits")
    for i, (f, r) in enumerate(zip(feats, ref_feats)):
        assert_close_to_scale(f, r, f"stage {i}")


def test_all_5_slak_variants_are_registered():
    assert len(zoo.list_models(family="slak")) == 5
