"""The two builders every registered model goes through: :func:`build_vision_model` (timm's
``build_model_with_cfg``) and :func:`build_lm` (a decoder LM from its config class). Neither loads weights.

Weights are :mod:`zoo.factory`'s job: it resolves the source once for every family, builds through the family's
registered builder, then loads. The builders therefore only build.

``device`` and ``dtype`` (the factory arguments timm's models take since 1.0.21) are honoured for every vision
family: the model is built under ``with torch.device(device):`` with ``dtype`` as torch's default floating
dtype, so every parameter and buffer is allocated where and as asked, with no float32 or CPU copy first (on
``"meta"`` nothing is allocated at all). Tensors a layer creates with an explicit dtype are cast afterwards.
"""

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
from timm.models import build_model_with_cfg
from torch import nn

from ..registry import check_known_keys, get_entry

__all__ = ["build_lm", "build_vision_model", "check_device", "check_dtype"]


def _check_kwargs(model_cls: type, variant: str, kwargs: dict[str, Any]) -> None:
    params = inspect.signature(model_cls.__init__).parameters
    accepted = {n for n, p in params.items() if n != "self" and p.kind != p.VAR_KEYWORD}
    check_known_keys(kwargs, accepted, variant)


def check_device(device: Any, variant: str = "the model") -> torch.device | None:
    """``device`` as a :class:`torch.device` (None stays None), refused in one line when torch cannot allocate
    there (an unknown name, no driver, a backend torch was built without)."""
    if device is None:
        return None
    if not isinstance(device, (str, int, torch.device)) or isinstance(device, bool):
        raise TypeError(f"device must be a str or torch.device (e.g. 'cpu', 'cuda:0', 'meta'), got {device!r}")
    try:
        found = torch.device(device)
        torch.empty(0, device=found)  # allocates nothing; raises where the backend is absent
    except (RuntimeError, AssertionError, NotImplementedError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"device={device!r} cannot hold {variant}: {first[:200]}. Use 'cpu', 'meta' (shapes only, no "
            "memory), or an accelerator this machine has ('cuda', 'cuda:1', 'mps', ...)."
        ) from None
    return found


def check_dtype(dtype: Any) -> torch.dtype | None:
    """``dtype`` as a floating-point :class:`torch.dtype` (None stays None); ``"bfloat16"`` names one too."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), dtype)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(
            f"dtype={dtype!r}: a model is built in a floating-point dtype (torch.float32, torch.bfloat16, "
            "torch.float16, torch.float64); quantize a built model for integer weights"
        )
    return dtype


def _builds_only(variant: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(
            f"the builder of {variant} builds only; load weights with zoo.create_model({variant!r}, pretrained=True)"
        )


def _pretrained_cfg(variant: str, pretrained_cfg: Any | None) -> dict[str, Any]:
    """The cfg a build attaches: ``pretrained_cfg`` (a dict or timm's ``PretrainedCfg``), else the registered one."""
    if isinstance(pretrained_cfg, dict):
        return dict(pretrained_cfg)
    if hasattr(pretrained_cfg, "to_dict"):
        return pretrained_cfg.to_dict()
    return dict(get_entry(variant).pretrained_cfg)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype | None) -> Iterator[None]:
    """torch's default floating dtype set to ``dtype`` for the build, restored after (process-wide, as torch's
    setting is)."""
    if dtype is None:
        yield
        return
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_vision_model(
    model_cls: type,
    variant: str,
    pretrained: bool = False,
    pretrained_filter_fn: Callable | None = None,
    pretrained_cfg: Any | None = None,
    device: Any = None,
    dtype: Any = None,
    **kwargs,
) -> nn.Module:
    """``model_cls(**kwargs)`` for ``variant`` with its pretrained cfg attached (timm's ``build_model_with_cfg``).

    ``device`` / ``dtype``: where and in which floating dtype every parameter and buffer is created (see the
    module's docstring); ``device="meta"`` builds shapes only, for ``model.to_empty(device=...)`` and
    ``model.init_weights()`` or for loading weights with ``assign``. ``pretrained_filter_fn`` is accepted for
    timm's builder signature; the registry takes the family's ``checkpoint_filter_fn`` from its module, and
    :func:`zoo.create_model` applies it when it loads weights.
    """
    _builds_only(variant, pretrained)
    if kwargs.pop("output_stride", None) not in (None, 32):
        raise ValueError(f"{variant} supports only output_stride=32")
    _check_kwargs(model_cls, variant, kwargs)
    device, dtype = check_device(device, variant), check_dtype(dtype)
    cfg = _pretrained_cfg(variant, pretrained_cfg)
    cfg.setdefault("architecture", variant)
    place = torch.device(device) if device is not None else contextlib.nullcontext()
    with place, _default_dtype(dtype):
        model = build_model_with_cfg(model_cls, variant, pretrained=False, pretrained_cfg=cfg, **kwargs)
    if dtype is not None:
        model.to(dtype=dtype)  # only what a layer made in another floating dtype on purpose; a no-op otherwise
    return model


def build_lm(
    model_cls: type[nn.Module],
    archs: dict[str, dict[str, Any]],
    variant: str,
    pretrained: bool = False,
    pretrained_cfg: Any | None = None,
    **kwargs,
) -> nn.Module:
    """``model_cls(model_cls.config_class(**archs[variant], **kwargs))``, its pretrained cfg attached: the one
    builder of every language-model family.

    ``model_cls`` is a :class:`zoo.lm.DecoderLM` subclass naming its config dataclass in ``config_class``;
    ``archs`` the family's table of architectures by registered name, and ``kwargs`` override any field of the
    variant's (``num_hidden_layers=2``); a key that is no field of the config is refused by name with the closest
    ones.
    """
    _builds_only(variant, pretrained)
    config_cls = model_cls.config_class
    config_cls.check_keys(kwargs, variant)
    model = model_cls(config_cls(**{**archs[variant], **kwargs}))
    model.pretrained_cfg = dict(_pretrained_cfg(variant, pretrained_cfg), architecture=variant)
    return model
