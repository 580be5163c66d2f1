"""The training step on a CUDA device (``zoo bench train --device cuda`` times it; these check what it computes):
the zoo's MetaFormers, given timm's weights, reach their float64 loss and gradients as closely on the GPU as timm's
own builds reach theirs, in float32 (TF32 off) and under bf16 autocast. The float64 truth of each side is its own
model on the CPU (the zoo's and timm's heads differ by design: PoolFormer v1's norm, the MLP head's eps), so each
side is held to its own truth and the bound is timm's own error (:func:`tolerances.bound_of`).

Skipped where torch finds no CUDA device, as on CI; on a GPU machine:
``python -m pytest tests/train/test_cuda.py -n 0 -p no:cacheprovider``."""

import copy

import pytest
import torch
import torch.nn.functional as F
from tolerances import bound_of, relative_error

from zoo.bench.vision import build_pair

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)"),
    pytest.mark.parity,
]

MODELS = ["poolformer_s12", "convformer_s18", "caformer_s18"]  # the families issue 81's training targets name
BATCH, SIZE = 4, 64  # every operator of the 224 px step; the float64 truth on the CPU in about a second


@pytest.fixture
def no_tf32():
    """Float32 on the GPU as float32: no TF32 in cuBLAS's or cuDNN's products while the test runs."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _step(model, x, y, device: str, dtype: torch.dtype, bf16: bool = False) -> dict[str, torch.Tensor]:
    """One training step's loss and every parameter's gradient (float64, on the CPU) of a copy of ``model``."""
    m = copy.deepcopy(model).to(device=device, dtype=dtype).train()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(m(x.to(device, dtype)), y.to(device))
    loss.backward()
    grads = {n: p.grad.double().cpu() for n, p in m.named_parameters()}
    missing = [n for n, g in grads.items() if g is None]
    assert not missing, f"no gradient reached {missing}"
    return {"loss": loss.detach().double().cpu(), **grads}


def _worst(step: dict, truth: dict) -> float:
    """The largest relative error of the step's loss and gradients against the truth's (each tensor's own scale)."""
    return max(relative_error(step[k], truth[k]) for k in truth)


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16"])
@pytest.mark.parametrize("name", MODELS)
def test_the_zoos_training_step_on_cuda_is_as_close_to_float64_as_timms(name, bf16, no_tf32):
    timm_model, zoo_model = build_pair(name)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=gen)
    y = torch.randint(0, zoo_model.num_classes, (BATCH,), generator=gen)
    own = _worst(_step(timm_model, x, y, "cuda", torch.float32, bf16), _step(timm_model, x, y, "cpu", torch.float64))
    zoo_truth = _step(zoo_model, x, y, "cpu", torch.float64)
    zoo = _step(zoo_model, x, y, "cuda", torch.float32, bf16)
    assert zoo.keys() == zoo_truth.keys()
    bound = bound_of(own)
    worst = {k: relative_error(zoo[k], zoo_truth[k]) for k in zoo_truth}
    bad = {k: f"{e:.2e}" for k, e in worst.items() if e > bound}
    assert not bad, (f"bound {bound:.2e} (timm's own {own:.2e})", bad)
    assert torch.isfinite(zoo["loss"]), zoo["loss"]
