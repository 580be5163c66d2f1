"""The float32 parity bound shared by the parity tests (``test_condense_parity*.py``): a step runs in float32 on the
real shapes (MNIST's 1 channel at 28 px, CIFAR's 3 at 32 px) beside the authors' rendition in float32 and float64 on
the same inputs; the zoo's float32 may be off from the float64 truth, and from the authors' float32, by at most
``TIMES`` x the authors' own float32-vs-float64 error plus ``ULPS`` float32 ulps. The bound comes from float32
rounding, not from this machine."""

import pytest
import torch

import zoo
from zoo.bench.reference.convnet import ReferenceConvNet
from zoo.models.convnet import checkpoint_filter_fn

ULPS, TIMES = 4, 4.0
EPS32 = torch.finfo(torch.float32).eps
SHAPES = [pytest.param(1, 28, id="1x28"), pytest.param(3, 32, id="3x32")]


def nets_like(channels, size, dtype, seed, classes, width):
    """The authors' ConvNet-3 and the zoo's with the same weights, in ``dtype`` (made in float32, so that every
    dtype starts from the same values; norm biases moved off their zero start)."""
    torch.manual_seed(seed)
    r = ReferenceConvNet(channels, classes, width, 3, "instancenorm", (size, size))
    with torch.no_grad():
        for t in r.state_dict().values():
            if t.ndim == 1:
                t.add_(torch.randn(t.shape) * 0.3)
    z = zoo.create_model("convnet_d3", num_classes=classes, in_chans=channels, img_size=size, width=width)
    z.load_state_dict(checkpoint_filter_fn(r.state_dict(), z))
    return r.to(dtype), z.to(dtype)


def per_class(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``max |a - b| / max |b|`` over each class's rows (one row per class, ipc 1)."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    return (a - b).abs().amax(1) / b.abs().amax(1).clamp_min(1e-30)


def scalar_error(a, b) -> float:
    a, b = float(a), float(b)
    return abs(a - b) / max(abs(b), 1e-30)


def bound_of(own: float) -> float:
    """The float32 bound for a quantity whose authors' float32 is ``own`` off their float64."""
    return TIMES * float(own) + ULPS * EPS32


def assert_within(zoo32: torch.Tensor, ref32: torch.Tensor, ref64: torch.Tensor, what: str) -> dict:
    """The zoo's float32 per-class rows within :func:`bound_of` the authors' own largest per-class error, against
    the float64 truth and against the authors' float32. Returns the errors (for a report)."""
    own = per_class(ref32, ref64)
    bound = bound_of(own.max())
    truth, authors = per_class(zoo32, ref64), per_class(zoo32, ref32)
    bad = torch.nonzero((truth > bound) | (authors > bound)).flatten().tolist()
    assert not bad, [(what, c, f"zoo {truth[c]:.2e} / {authors[c]:.2e} > {bound:.2e}, authors' own {own.max():.2e}")
                     for c in bad]  # fmt: skip
    return {"own": float(own.max()), "bound": bound, "zoo": float(truth.max())}


def assert_scalar_within(zoo32, ref32, ref64, what: str) -> dict:
    """As :func:`assert_within` for one number (a loss, a learned lr's gradient)."""
    own = scalar_error(ref32, ref64)
    bound = bound_of(own)
    truth, authors = scalar_error(zoo32, ref64), scalar_error(zoo32, ref32)
    assert truth <= bound and authors <= bound, (what, truth, authors, bound, own)
    return {"own": own, "bound": bound, "zoo": truth}


def assert_state_within(zoo32: dict, ref32: dict, ref64: dict, what: str) -> dict:
    """As :func:`assert_within` for a network's weights (``{name: tensor}``, float tensors only): each tensor's
    ``max |a - b| / max |b|``, within :func:`bound_of` the authors' own largest over the network (the bound is the
    network's, as a step's is, not a tensor's: a rounding that crosses a ReLU kink moves every later tensor)."""
    names = [k for k, v in ref64.items() if v.is_floating_point()]
    own = {k: scalar_error_tensor(ref32[k], ref64[k]) for k in names}
    bound = bound_of(max(own.values()))
    errors = {k: max(scalar_error_tensor(zoo32[k], ref64[k]), scalar_error_tensor(zoo32[k], ref32[k])) for k in names}
    bad = [(what, k, f"zoo {errors[k]:.2e} > {bound:.2e}, authors' own {own[k]:.2e}") for k in names
           if errors[k] > bound]  # fmt: skip
    assert not bad, bad
    return {"own": max(own.values()), "bound": bound, "zoo": max(errors.values())}


def scalar_error_tensor(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|`` of one tensor."""
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
