"""The generic vision suite, run on every registered image classifier (like timm's tests/test_models.py); nothing
here names a family. The language models' generic suite is tests/models/test_lm_models.py.

Every model: parameter count against the authors' (meta device, no memory), cfg consistency. The full interface
(forward/backward with a new head, features, grad checkpointing, safetensors round trip, autocast) runs by default
on one model per class or series -- the smallest of the names that share a prefix, e.g. the ``poolformer_*`` or
``slak_*`` models -- on the other series under ``-m slow`` (CI), and on every other size under ``-m sweep`` (by hand:
the same code at other widths and depths; each size's parameter count and parity with the authors stay in the
default and slow runs). Inputs are 64x64 except for models with a fixed
input size (learned position tables, frozen mixing matrices), which run at their cfg size.

The check functions (tests/model_checks.py) take a model name, so a family registered at run time goes through the
same checks (tests/models/test_new_family.py).
"""

import pytest
import torch
from model_checks import (
    check_autocast,
    check_cfg,
    check_features,
    check_headless,
    check_interface,
    check_param_count,
    check_regularisation,
    check_train_step,
)
from model_groups import series, smallest_of_each, tiered

import zoo
from zoo.registry import list_models

VISION = list_models(task="image-classification")


DEFAULT = smallest_of_each(VISION, series)  # the smallest of each series
# every vision model: the representatives by default, the other sizes under -m sweep
ALL_VISION = tiered(VISION, DEFAULT)


# ----------------------------------------------------------------------------------------------------------------
# The suite


@pytest.mark.parametrize("name", VISION)  # the language models' are tests/models/test_lm_models.py's
def test_param_count_matches_authors(name):
    check_param_count(name)


@pytest.mark.parametrize("name", VISION)
def test_cfg_consistency(name):
    check_cfg(name)


@pytest.mark.parametrize("name", ALL_VISION)
def test_train_step(name):
    check_train_step(name)


# stochastic depth, group_matcher and timm's face (heads, features, checkpointing, saving) live in the model's class:
# one series of each by default (the MetaFormer series share theirs; CAFormer's blocks have both of its mixers), every
# other series under -m slow, the other sizes under -m sweep; the face also on PoolFormer v1 (its norm of the whole map
# before the head)
BY_CLASS = {"caformer_s18", "convnet_d3", "slak_tiny_31", "sret_tiny"}
FACE = tiered(VISION, BY_CLASS | {"poolformer_s12"}, slow=DEFAULT)


@pytest.mark.parametrize("name", FACE)
def test_interface(name, tmp_path):
    check_interface(name, tmp_path)


@pytest.mark.parametrize("name", ALL_VISION)
def test_headless_output_width(name):
    check_headless(name)


@pytest.mark.parametrize("name", FACE)
def test_features_only(name):
    check_features(name)


@pytest.mark.parametrize("name", [n if n in BY_CLASS else pytest.param(n, marks=pytest.mark.slow) for n in DEFAULT])
def test_regularisation(name):
    check_regularisation(name)


# CPU bfloat16 is slowest for these (RandFormer's full-size token mix, SReT, SLaK's 31x31 kernels): under -m slow;
# so are the MetaFormer series whose layers CAFormer (SepConv, attention, StarReLU) and PoolFormer (pooling) hold
SLOW_AUTOCAST = {
    "randformer_s12",
    "sret_tiny",
    "slak_tiny_31",
    "identityformer_s12",
    "poolformerv2_s12",
    "convformer_s18",
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_AUTOCAST else n for n in DEFAULT]
)
def test_autocast_bfloat16(name):
    check_autocast(name)


def test_every_series_has_a_default_representative():
    assert {series(n) for n in DEFAULT} == {series(n) for n in VISION}
    with torch.device("meta"):  # and every model class its regularisation check
        classes = {type(zoo.create_model(n)) for n in VISION}
        assert {type(zoo.create_model(n)) for n in BY_CLASS} == classes


def test_star_relu_gradients_are_autograds():
    """StarReLU's written-out backward (relu(x) kept alone, four passes) gives autograd's gradients of
    ``bias + scale * relu(x)**2``, for a contiguous and a permuted gradient, and under bf16 autocast."""
    from zoo.layers.activations import StarReLU, _StarReLUFunction

    torch.manual_seed(0)
    m = StarReLU(1.3, -0.2).double()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_StarReLUFunction.apply, (x, m.scale, m.bias))
    for permuted in (False, True):
        x = torch.randn(2, 6, 5, 4, dtype=torch.float64, requires_grad=True)
        inp = x.permute(0, 2, 3, 1) if permuted else x
        grads = []
        for fn in (m, lambda t: m.bias + m.scale * torch.relu(t) ** 2):
            y = fn(inp)
            grads.append(torch.autograd.grad((y * torch.arange(y.numel()).view_as(y)).sum(), (x, m.scale, m.bias)))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b)
    lin, x = torch.nn.Linear(8, 8), torch.randn(4, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = StarReLU()(lin(x))
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
