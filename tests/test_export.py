"""torch.export with a dynamic batch dimension: one model per family, outputs equal to eager at two batch sizes.

The fast paths (oneDNN linear on the row count, the models' Python-side input checks) are traced as plain ops, so
the exported program holds no shape-dependent branch. SReT is not here yet: it draws its seeded token
permutations at run time, and an exported program at another batch size differs from eager by about 5e-4 (its
permutations want to become buffers).
"""

import pytest
import torch
from torch.export import Dim, export

import zoo

# small widths, one block per stage: the same code paths as the registered sizes
VISION = {
    "poolformer_s12": dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
    "convformer_s18": dict(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1)),
    "caformer_s18": dict(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1)),
    "slak_tiny": dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1)),
}
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


@pytest.mark.parametrize("name", list(VISION))
def test_vision_model_exports_with_a_dynamic_batch(name):
    model = zoo.create_model(name, num_classes=5, **VISION[name]).eval()
    # 128x128: the first stage has enough rows for the oneDNN linear path, which must not be traced
    _export_dynamic_batch(model, torch.randn(2, 3, 128, 128))


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
