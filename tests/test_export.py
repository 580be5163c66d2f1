"""torch.export with a dynamic batch dimension and ONNX + onnxruntime, registry-driven: one model per family by
default (reduced widths), every registered vision model under ``-m slow``; outputs equal to eager at two batch
sizes (and two image sizes where the architecture allows a dynamic one).

The fast paths (oneDNN linear on the row count, the models' Python-side input checks) are traced as plain ops, so
the exported program holds no shape-dependent branch; SReT's seeded token permutations become constants of the
graph (``prepare_export``), so its export matches eager at any batch size.
"""

import pytest
import torch
from torch.export import Dim, export

import zoo
from zoo.export import ExportError
from zoo.registry import get_entry

SMALL_LM = dict(
    num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2
)


def _export_dynamic_batch(model, example, batch_sizes=(1, 3)):
    with torch.no_grad():  # as a user exports for inference (the inference fast paths are live)
        program = export(model, (example,), dynamic_shapes=({0: Dim("batch", min=1, max=64)},))
    for b in batch_sizes:
        x = example[:1].expand(b, *example.shape[1:]).clone()
        x = torch.randn_like(x) if x.is_floating_point() else torch.randint_like(x, 0, 100)
        with torch.no_grad():
            want, got = model(x), program.module()(x)
        want = want if isinstance(want, torch.Tensor) else want.logits
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= 1e-4 * max(want.abs().max().item(), 1.0), b


# one model per vision family (reduced where the widths are arguments) through zoo.export, both formats
FAMILIES = {
    "poolformer_s12": dict(num_classes=3, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
    "randformer_s12": dict(num_classes=3, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), img_size=64),
    "caformer_s18": dict(num_classes=3, dims=(8, 16, 32, 64), depths=(1, 1, 1, 1)),
    "slak_tiny": dict(num_classes=3, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
    # fewer recursions and heads: the same sliced group attention and recorded permutations, a quarter the graph
    "sret_tiny": dict(num_classes=3, img_size=64, heads=(1, 2, 4), recursive_num=(1, 2, 1)),
    "sret_tiny_distill": dict(num_classes=3, img_size=64, heads=(1, 2, 4), recursive_num=(1, 2, 1)),
}
DYNAMIC_SIZE = ("poolformer_s12", "caformer_s18", "slak_tiny")
VISION_MODELS = [n for n in zoo.list_models() if get_entry(n).task == "image-classification"]


def _checked_export(model, fmt, tmp_path, **kwargs):
    result = zoo.export(model, fmt, tmp_path / fmt, input_size=(3, 64, 64), check=True, **kwargs)
    check = result.check if fmt == "pt2" else result.check["model.onnx"]
    assert result.check["ok"] and check["max_rel_diff"] <= 1e-4, result.check
    return [tuple(i["input_shape"]) for i in check["inputs"]]


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_exports_with_a_dynamic_batch(name, fmt, tmp_path):
    model = zoo.create_model(name, **FAMILIES[name]).eval()
    shapes = _checked_export(model, fmt, tmp_path, dynamic_size=name in DYNAMIC_SIZE)
    assert [s[0] for s in shapes[:2]] == [1, 3]  # two batch sizes through one artefact
    if name in DYNAMIC_SIZE:
        assert shapes[2][2:] != shapes[0][2:]  # and another image size
    assert not hasattr(model, "permutation_0")  # SReT's recorded permutations live on export's copy only


@pytest.mark.parametrize("name", ["randformer_s12", "sret_tiny"])
def test_a_fixed_size_architecture_refuses_a_dynamic_size(name, tmp_path):
    model = zoo.create_model(name, **FAMILIES[name]).eval()
    with pytest.raises(ExportError, match="configured input size"):
        zoo.export(model, "pt2", tmp_path, dynamic_size=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", VISION_MODELS)
def test_every_vision_model_exports_to_onnx(name, tmp_path):
    """Every registered vision model at its full width, 64x64 inputs (SReT and RandFormer built for 64x64):
    dynamic-batch ONNX through torch.export, equal to eager in onnxruntime."""
    fixed = getattr(zoo.create_model(name, pretrained=False), "fixed_input_size", False)
    model = zoo.create_model(name, **({"img_size": 64} if fixed else {})).eval()
    _checked_export(model, "onnx", tmp_path)


class _Logits(torch.nn.Module):
    """The logits of a language model's cache-free forward (what an exported prefill returns)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        out = self.model(ids)
        return out if isinstance(out, torch.Tensor) else out.logits


@pytest.mark.parametrize("name", ["mobilellm_125m", "mobilellm_125m_ls"])
def test_language_model_exports_with_a_dynamic_batch(name):
    model = _Logits(zoo.create_model(name, vocab_size=128, **SMALL_LM).eval())
    _export_dynamic_batch(model, torch.randint(0, 128, (2, 8)))
