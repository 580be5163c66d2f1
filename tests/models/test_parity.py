"""Outputs equal an independent transcription of the authors' code on the same weights.

Checkpoints are built inside the tests in the authors' key layouts (and timm's, and the zoo's own), with
realistic weight scales (fan-in scaled weights, norm and layer scales near 1), then loaded through
``zoo.create_model(..., pretrained=True, pretrained_cfg_overlay={"file": ...})``.
"""

import pytest
import torch
from model_checks import assert_close_to_scale

import zoo
from zoo.bench.reference.metaformer import make_authors_state_dict, reference_forward
from zoo.weights import read_state_dict, save_state_dict

pytestmark = pytest.mark.parity

# one variant per token mixer type: pool v1, identity, random, pool v2, sepconv, attention
MIXER_VARIANTS = [
    "poolformer_s12",
    "identityformer_s12",
    "randformer_s12",
    "poolformerv2_s12",
    "convformer_s18",
    "caformer_s18",
]


def _input(batch=2, size=224, chans=3):
    return torch.randn(batch, chans, size, size, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def authors_files(tmp_path_factory):
    """name -> (authors' state dict, path of a flat .pth file in the authors' layout)."""
    root = tmp_path_factory.mktemp("authors")
    out = {}
    for name in MIXER_VARIANTS:
        sd = make_authors_state_dict(name, seed=3)
        path = root / f"{name}.pth"
        torch.save(sd, path)
        out[name] = (sd, path)
    return out


@pytest.mark.parametrize("name", MIXER_VARIANTS)
def test_authors_checkpoint_matches_reference(name, authors_files):
    sd, path = authors_files[name]
    model = zoo.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}).eval()
    x = _input()
    with torch.no_grad():
        ref_logits, ref_feats = reference_forward(name, sd, x, return_features=True)
        logits = model(x)
        feats = model.forward_intermediates(x, intermediates_only=True)
    assert_close_to_scale(logits, ref_logits, f"{name} logits")
    for i, (f, r) in enumerate(zip(feats, ref_feats)):
        assert f.shape == r.shape
        assert_close_to_scale(f, r, f"{name} stage {i}")


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_wrapped_pth_tar(wrapper, authors_files, tmp_path):
    sd, _ = authors_files["poolformer_s12"]
    path = tmp_path / "poolformer_s12.pth.tar"
    torch.save({wrapper: sd, "epoch": 300}, path)
    model = zoo.create_model("poolformer_s12", pretrained=True, pretrained_cfg_overlay={"file": str(path)}).eval()
    x = _input(1)
    with torch.no_grad():
        assert_close_to_scale(model(x), reference_forward("poolformer_s12", sd, x), "wrapped checkpoint logits")


# CAFormer holds both of timm's layouts (1x1-conv weights in its SepConv stages, linear ones in its attention
# stages), PoolFormerV2 the pooling blocks: those two by default, the others under -m slow
@pytest.mark.parametrize(
    "name",
    [
        "caformer_s18",
        "poolformerv2_s12",
        *(pytest.param(n, marks=pytest.mark.slow) for n in ("poolformer_s12", "convformer_s18")),
    ],
)
def test_timm_checkpoint_matches_reference(name, authors_files, tmp_path):
    """timm's checkpoints (its own layout, converted from the authors') load and give the authors' outputs."""
    import timm
    from timm.models.metaformer import checkpoint_filter_fn as timm_filter

    sd, _ = authors_files[name]
    timm_model = timm.create_model(name)
    timm_sd = timm_filter(dict(sd), timm_model)
    timm_model.load_state_dict(timm_sd)  # proves the file really is in timm's layout
    path = save_state_dict(timm_sd, tmp_path / "model.safetensors")
    model = zoo.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}).eval()
    x = _input(1)
    with torch.no_grad():
        assert_close_to_scale(model(x), reference_forward(name, sd, x), f"{name} from timm's layout")


def test_zoo_safetensors_roundtrip_is_exact(authors_files, tmp_path):
    sd, path = authors_files["caformer_s18"]
    model = zoo.create_model("caformer_s18", pretrained=True, pretrained_cfg_overlay={"file": str(path)}).eval()
    out = save_state_dict(model, tmp_path / "caformer_s18.safetensors")
    assert set(read_state_dict(out)) == set(model.state_dict())
    again = zoo.create_model("caformer_s18", pretrained=True, pretrained_cfg_overlay={"file": str(out)}).eval()
    x = _input(1)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_new_num_classes_drops_only_the_head(authors_files):
    sd, path = authors_files["convformer_s18"]
    model = zoo.create_model(
        "convformer_s18", pretrained=True, num_classes=10, pretrained_cfg_overlay={"file": str(path)}
    ).eval()
    x = _input(1)
    with torch.no_grad():
        _, ref_feats = reference_forward("convformer_s18", sd, x, return_features=True)
        assert_close_to_scale(model.forward_features(x), ref_feats[-1], "features after head change")
        assert model(x).shape == (1, 10)
    # the MLP head's first layer and norm still come from the checkpoint; only the last layer is new
    assert torch.equal(model.head.fc.fc1.weight, sd["head.fc1.weight"])
    assert not torch.equal(model.head.fc.fc2.weight[:10], sd["head.fc2.weight"][:10])


def test_in_chans_adaptation(authors_files):
    """in_chans=1 sums the stem's RGB filters, as timm does: a grey image equals its RGB replica."""
    sd, path = authors_files["identityformer_s12"]
    model = zoo.create_model(
        "identityformer_s12", pretrained=True, in_chans=1, pretrained_cfg_overlay={"file": str(path)}
    ).eval()
    assert model.stem.conv.weight.shape[1] == 1
    x = _input(1, chans=1)
    with torch.no_grad():
        assert_close_to_scale(model(x), reference_forward("identityformer_s12", sd, x.repeat(1, 3, 1, 1)), "in_chans=1")


def test_randformer_matrices_come_from_the_checkpoint(authors_files):
    sd, path = authors_files["randformer_s12"]
    model = zoo.create_model("randformer_s12", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    mixer = model.stages[2].blocks[0].token_mixer
    assert torch.equal(mixer.random_matrix, sd["stages.2.0.token_mixer.random_matrix"])
    assert not mixer.random_matrix.requires_grad


def test_v1_head_normalises_before_pooling(authors_files):
    """PoolFormer v1: GroupNorm over the full 7x7 map, then the average (timm averages first)."""
    sd, path = authors_files["poolformer_s12"]
    model = zoo.create_model("poolformer_s12", pretrained=True, pretrained_cfg_overlay={"file": str(path)}).eval()
    x = _input(1)
    with torch.no_grad():
        feats = model.forward_features(x)
        gn = torch.nn.functional.group_norm(feats, 1, sd["norm.weight"], sd["norm.bias"], eps=1e-5)
        expected = torch.nn.functional.linear(gn.mean((2, 3)), sd["head.weight"], sd["head.bias"])
        assert_close_to_scale(model.forward_head(feats), expected, "v1 head")


def test_mlp_head_layernorm_eps():
    model = zoo.create_model("caformer_s18")
    assert model.head.fc.norm.eps == 1e-5  # the authors' MlpHead uses PyTorch's default eps
    assert model.head.norm.eps == 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in zoo.list_models(family="metaformer") if n not in MIXER_VARIANTS])
def test_every_variant_matches_reference(name, tmp_path):
    sd = make_authors_state_dict(name, seed=5)
    path = tmp_path / f"{name}.pth"
    torch.save(sd, path)
    model = zoo.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}).eval()
    x = _input(1)
    with torch.no_grad():
        ref_logits, ref_feats = reference_forward(name, sd, x, return_features=True)
        assert_close_to_scale(model(x), ref_logits, f"{name} logits")
        for i, (f, r) in enumerate(zip(model.forward_intermediates(x, intermediates_only=True), ref_feats)):
            assert_close_to_scale(f, r, f"{name} stage {i}")


# PoolFormer v1 in the default run; the other mixers (SepConv and attention: 12-14 s each) in the slow run
@pytest.mark.parametrize(
    "name", [n if n.startswith("poolformer_") else pytest.param(n, marks=pytest.mark.slow) for n in MIXER_VARIANTS]
)
def test_gradients_match_reference(name, authors_files):
    """Training-mode gradients (input and every weight) equal autograd through the reference.

    Both run in float64: gradients of scalar parameters (StarReLU scale/bias) are sums over whole maps with heavy
    cancellation, where two float32 computations legitimately differ by more than 1e-3 relative. At 112x112 (the
    same operators as at 224, a quarter of the float64 work) except where the model's input size is fixed
    (RandFormer's token-mixing matrices); the forward parity above runs at 224.
    """
    from zoo.models.metaformer import _rename_baselines, _rename_poolformer_v1

    sd, path = authors_files[name]
    # both sides in float64, so the comparison sees the math and not float32 summation order
    model = zoo.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}).double().train()
    rename = _rename_poolformer_v1 if name.startswith("poolformer_") else _rename_baselines
    ref_sd = {k: v.double().requires_grad_(not k.endswith("random_matrix")) for k, v in sd.items()}
    x = _input(1, size=224 if zoo.model_info(name)["pretrained_cfg"].get("fixed_input_size") else 112)
    x_ref, x_zoo = x.double().requires_grad_(), x.double().requires_grad_()
    weights = torch.randn(1000, generator=torch.Generator().manual_seed(2))

    (reference_forward(name, ref_sd, x_ref) * weights.double()).sum().backward()
    (model(x_zoo) * weights.double()).sum().backward()

    assert_close_to_scale(x_zoo.grad.double(), x_ref.grad, f"{name} input gradient", rel=1e-4)
    params = dict(model.named_parameters())
    for key, ref_param in ref_sd.items():
        if ref_param.grad is None:
            continue
        grad = params[rename(key)].grad.reshape(ref_param.grad.shape).double()
        if name.startswith("poolformer_") and key.endswith("norm1.bias"):
            # the v1 norm1 bias cancels out of the pooling mixer: its exact gradient is zero
            assert grad.abs().max().item() == 0.0 and ref_param.grad.abs().max().item() < 1e-9
            continue
        assert_close_to_scale(grad, ref_param.grad, f"{name} {key} gradient", rel=5e-3 if grad.numel() == 1 else 1e-3)


def test_all_28_metaformer_variants_are_registered():
    expected = (
        [f"poolformer_{s}" for s in ("s12", "s24", "s36", "m36", "m48")]
        + [
            f"{f}_{s}"
            for f in ("identityformer", "randformer", "poolformerv2")
            for s in ("s12", "s24", "s36", "m36", "m48")
        ]
        + [f"{f}_{s}" for f in ("convformer", "caformer") for s in ("s18", "s36", "m36", "b36")]
    )
    assert sorted(expected) == zoo.list_models(family="metaformer")
