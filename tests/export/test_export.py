"""Export of every registered model, registry-driven (as timm's tests): ``torch.export`` with a dynamic batch (and a
dynamic height/width where the architecture allows one) and ONNX + onnxruntime, each checked against eager.

By default one model of each vision family at reduced widths and depths (the same code paths as the registered
sizes) goes through ``zoo.export(..., check=True)`` in both formats; under ``-m slow`` every registered vision model
does, at full size and its configured input size. RandFormer (token-mixing matrices) and SReT (learned position
table) are sized by the token count, ConvNet (flattened classifier) by the input: a dynamic size is refused for
them, with the reason.

The fast paths (oneDNN linear on the row count, the models' Python-side input checks) are traced as plain ops, so
the exported program holds no shape-dependent branch; SReT's seeded token permutations are buffers drawn when the
model is built, so its graph holds them as constants and matches eager at any batch size.
"""

import pytest
import torch
from small_lms import SMALL
from torch.export import Dim, export

import zoo
from zoo.export import ExportError
from zoo.export.program import min_dynamic_size
from zoo.registry import get_entry

pytestmark = pytest.mark.export

TOLERANCE = 1e-4  # max difference relative to the largest eager logit
VISION_MODELS = [n for n in zoo.list_models() if get_entry(n).task == "image-classification"]


# one model of each registry family at reduced widths and depths (64x64 inputs); of the MetaFormers, CAFormer
# (separable convs, then attention over a dynamic token count) and RandFormer (token mixing sized by the token
# count: a fixed input size). PoolFormer's pooling stages and ConvFormer go through export in test_export_cli.
# ConvNet-3's flattened classifier is sized by the input: a fixed input size too.
_METAFORMER = dict(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1))
REDUCED = {
    "caformer_s18": _METAFORMER,
    "randformer_s12": {**_METAFORMER, "img_size": 64},
    "slak_tiny": dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
    # sliced group attention with one recorded permutation (stage 0, the second application)
    "sret_tiny": dict(img_size=64, heads=(1, 2, 4), recursive_num=(1, 1, 1)),
    "convnet_d3": dict(width=8, img_size=64),
}
# sized by the token count (or, ConvNet, by the flattened map): no dynamic height/width
FIXED_SIZE = ("randformer_s12", "sret_tiny", "convnet_d3")


def _reduced(name: str, **kwargs) -> torch.nn.Module:
    return zoo.create_model(name, num_classes=3, **REDUCED[name], **kwargs).eval()


def _checked(result) -> dict:
    """The check of the artefact itself (ONNX: ``model.onnx``), asserted within tolerance."""
    check = result.check["model.onnx"] if result.format == "onnx" else result.check
    assert result.check["ok"] and check["max_rel_diff"] <= TOLERANCE, result.check
    return check


def test_every_vision_family_has_a_reduced_model():
    families = {zoo.model_info(n)["family"] for n in VISION_MODELS}
    assert families == {zoo.model_info(n)["family"] for n in REDUCED}
    fixed = {n for n in VISION_MODELS if zoo.model_info(n)["pretrained_cfg"].get("fixed_input_size")}
    assert set(FIXED_SIZE) <= fixed and {n.split("_")[0] for n in fixed} == {"randformer", "sret", "convnet"}


# caformer (attention) and the fixed-size ONNX graphs take 8-16 s each: those in the slow run
HEAVY_EXPORTS = {
    ("caformer_s18", "pt2"),
    ("caformer_s18", "onnx"),
    ("randformer_s12", "onnx"),
    ("randformer_s12", "pt2"),
    ("sret_tiny", "onnx"),
    ("slak_tiny", "onnx"),
    ("slak_tiny", "pt2"),
    ("sret_tiny", "pt2"),
}


@pytest.mark.parametrize(
    "name,fmt",
    [
        pytest.param(n, f, marks=pytest.mark.slow) if (n, f) in HEAVY_EXPORTS else (n, f)
        for n in REDUCED
        for f in ("pt2", "onnx")
    ],
)
def test_each_family_exports(name, fmt, tmp_path):
    """Dynamic batch everywhere, dynamic height/width where allowed: two batch sizes (and a second image size, not
    a multiple of 32) through one artefact, equal to eager."""
    model = _reduced(name)
    dynamic_size = name not in FIXED_SIZE
    result = zoo.export(model, fmt, tmp_path, input_size=(3, 64, 64), dynamic_size=dynamic_size, check=True)
    shapes = [tuple(i["input_shape"]) for i in _checked(result)["inputs"]]
    assert [s[0] for s in shapes[:2]] == [1, 3]
    # and another size: from two stride-32 cells up (the last stage at least 2x2), no multiple of 32 needed
    assert [s[2:] for s in shapes[2:]] == ([(96, 112)] if dynamic_size else [])
    if dynamic_size:
        assert min_dynamic_size(model) == 64


@pytest.mark.parametrize("name", FIXED_SIZE)
@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_a_fixed_size_architecture_refuses_a_dynamic_size(name, fmt, tmp_path):
    with pytest.raises(ExportError, match="configured input size.*export without dynamic_size"):
        zoo.export(_reduced(name), fmt, tmp_path / "out", input_size=(3, 64, 64), dynamic_size=True)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_a_dynamic_size_needs_a_large_enough_example(tmp_path):
    with pytest.raises(ExportError, match="at least 64x64"):
        zoo.export(_reduced("slak_tiny"), "pt2", tmp_path, input_size=(3, 48, 48), dynamic_size=True)


@pytest.mark.slow
@pytest.mark.sweep  # about 25 CPU-minutes: run by hand (pytest -m sweep) when export or a model changes
@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
@pytest.mark.parametrize("name", VISION_MODELS)
def test_every_vision_model_exports(name, fmt, tmp_path, record_property):
    """Every registered vision model at full size and its configured input size: a dynamic batch (and a dynamic
    height/width where the architecture allows one), equal to eager within 1e-4 (ONNX: in onnxruntime)."""
    model = zoo.create_model(name).eval()
    dynamic_size = not getattr(model, "fixed_input_size", False)
    check = _checked(zoo.export(model, fmt, tmp_path, dynamic_size=dynamic_size, check=True))
    record_property(f"{fmt}_max_rel_diff", check["max_rel_diff"])
    assert len(check["inputs"]) == (3 if dynamic_size else 2)


# ---- language models: torch.export of the cache-free forward ----------------------------------------------------


class _Logits(torch.nn.Module):
    """The logits of a language model's cache-free forward (what an exported prefill returns)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        out = self.model(ids)
        return out if isinstance(out, torch.Tensor) else out.logits


def _export_dynamic_batch(model, example, batch_sizes=(1, 3)):
    with torch.no_grad():  # as a user exports for inference (the inference fast paths are live)
        program = export(model, (example,), dynamic_shapes=({0: Dim("batch", min=1, max=64)},))
    for b in batch_sizes:
        x = example[:1].expand(b, *example.shape[1:]).clone()
        x = torch.randn_like(x) if x.is_floating_point() else torch.randint_like(x, 0, SMALL["vocab_size"])
        with torch.no_grad():
            want, got = model(x), program.module()(x)
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= TOLERANCE * max(want.abs().max().item(), 1.0), b


@pytest.mark.parametrize("name", ["mobilellm_125m", "mobilellm_125m_ls"])
def test_language_model_exports_with_a_dynamic_batch(name):
    model = _Logits(zoo.create_model(name, **SMALL).eval())
    _export_dynamic_batch(model, torch.randint(0, SMALL["vocab_size"], (2, 8)))
