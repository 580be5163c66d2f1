"""MACs within 2% of the authors' fvcore totals, and no arithmetic-heavy op left uncounted."""
import pytest
import torch

import zoo


@pytest.mark.parametrize("name", zoo.list_models())
def test_macs_match_authors_fvcore_totals(name):
    result = zoo.profile(name)
    ref = zoo.model_info(name)["reference"]["macs"]
    assert abs(result.macs / ref - 1) < 0.02, f"{name}: {result.macs / 1e9:.3f} GMACs vs {ref / 1e9:.2f}"
    assert result.params == zoo.model_info(name)["reference"]["params"]
    assert not [op for op in result.uncounted_ops if "matmul" in op or "conv" in op or "attention" in op]


def test_attention_is_counted():
    """fvcore counts SDPA as zero; the zoo's handle counts q k^T and the weighted sum."""
    from zoo.profile import count_macs
    model = zoo.create_model("caformer_s18").stages[2].blocks[0].token_mixer.eval()
    x = torch.randn(1, 14, 14, 320)
    macs, skipped = count_macs(model, x)
    n, c = 196, 320
    assert macs == n * c * 3 * c + 2 * n * n * c + n * c * c
    assert "aten::scaled_dot_product_attention" not in skipped
