"""Dense vs non-zero counts of ``zoo.profile`` on a reduced SLaK with 40% of every conv weight zeroed at random.

Expected figures come from the model itself (forward hooks for each conv's output size, the masks for its zeros),
not from the counting code under test: a depthwise or dense conv does ``out_numel * weight[0].numel()`` MACs, so
its MACs scaled by the weight density ``nnz / numel`` drop by exactly ``out_numel / C_out * zeros``.
"""

import pytest
import torch
from torch import nn

import zoo

# the reduced SLaK of tests/models/test_slak.py: three branches per block, 5x5 in every stage, odd widths
KWARGS = dict(depths=(1, 2, 1, 1), dims=(16, 24, 40, 56), kernel_size=(13, 11, 9, 7, 5), num_classes=10)
SIZE = (3, 64, 64)
SPARSITY = 0.4


def _mask_convs(model: nn.Module, sparsity: float, seed: int = 0) -> int:
    """Zero ``round(sparsity * numel)`` random entries of every conv weight (all non-zero before); returns how many."""
    gen = torch.Generator().manual_seed(seed)
    zeroed = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                w = module.weight
                assert int(torch.count_nonzero(w)) == w.numel()  # trunc-normal init: no exact zeros yet
                k = round(sparsity * w.numel())
                w.view(-1)[torch.randperm(w.numel(), generator=gen)[:k]] = 0
                zeroed += k
    return zeroed


def _conv_macs(model: nn.Module):
    """(dense MACs, MACs at weight density) summed over the conv layers, from one forward with hooks."""
    seen = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.append((m, o.numel())))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(torch.randn(1, *SIZE))
    finally:
        for h in hooks:
            h.remove()
    assert seen, "no conv ran"
    dense = sum(n * m.weight[0].numel() for m, n in seen)
    removed = sum(n // m.out_channels * (m.weight.numel() - int(torch.count_nonzero(m.weight))) for m, n in seen)
    return dense, dense - removed


@pytest.mark.parametrize("fused", [False, True], ids=["training_form", "fused_form"])
def test_nonzero_params_and_macs_of_a_40_percent_sparse_slak(fused):
    model = zoo.create_model("slak_tiny", **KWARGS).eval()
    params = sum(p.numel() for p in model.parameters())
    zeros_before = sum(int((p == 0).sum()) for p in model.parameters())  # zero-initialised biases
    dense = zoo.profile(model, input_size=SIZE)
    conv_dense, conv_at_density = _conv_macs(model)
    assert conv_at_density == conv_dense  # nothing masked yet
    assert dense.nonzero_macs == dense.macs and dense.nonzero_params == params - zeros_before

    zeroed = _mask_convs(model, SPARSITY)
    if fused:  # BN folding keeps zeros; the 5x5 kernel lands in the centre of the K x 5 one
        model.reparameterize()
    conv_dense, conv_at_density = _conv_macs(model)
    sparse = zoo.profile(model, input_size=SIZE)

    # non-zero params: exactly the weights that are not zero
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    assert sparse.nonzero_params == nonzero
    if not fused:
        assert sparse.params == params and sparse.nonzero_params == params - zeros_before - zeroed
    assert sparse.nonzero_params < sparse.params

    # non-zero MACs: every conv's MACs scaled by its weight density, everything else in full (the exact formula)
    if not fused:
        assert sparse.macs == dense.macs  # dense MACs do not see the zeros
    assert sparse.nonzero_macs == sparse.macs - (conv_dense - conv_at_density)
    # the masked layers run at ~0.6 of their dense MACs (fused: a little more, the 5x5 taps fill some zeros of the
    # K x 5 kernel); the model as a whole somewhat above that (norms, linears and element-wise ops stay dense)
    if fused:
        assert 1 - SPARSITY < conv_at_density / conv_dense < 1 - SPARSITY + 0.1
    else:
        assert conv_at_density / conv_dense == pytest.approx(1 - SPARSITY, abs=0.001)
    assert 1 - SPARSITY < sparse.nonzero_macs / sparse.macs < 1.0
