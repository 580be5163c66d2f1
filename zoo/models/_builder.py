"""Building a vision model from its class and pretrained cfg with timm's ``build_model_with_cfg`` (no weights).

Weights are :mod:`zoo.factory`'s job: it resolves the source once for every family, builds through the family's
registered builder, then loads. The builder therefore only builds.
"""

import inspect
from collections.abc import Callable
from typing import Any

from timm.models import build_model_with_cfg
from torch import nn

from ..registry import check_known_keys, get_entry

__all__ = ["build_vision_model"]


def _check_kwargs(model_cls: type, variant: str, kwargs: dict[str, Any]) -> None:
    params = inspect.signature(model_cls.__init__).parameters
    accepted = {n for n, p in params.items() if n != "self" and p.kind != p.VAR_KEYWORD}
    check_known_keys(kwargs, accepted, variant)


def build_vision_model(
    model_cls: type,
    variant: str,
    pretrained: bool = False,
    pretrained_filter_fn: Callable | None = None,
    pretrained_cfg: Any | None = None,
    **kwargs,
) -> nn.Module:
    """``model_cls(**kwargs)`` for ``variant`` with its pretrained cfg attached (timm's ``build_model_with_cfg``).

    ``pretrained_filter_fn`` is accepted for timm's builder signature; the registry takes the family's
    ``checkpoint_filter_fn`` from its module, and :func:`zoo.create_model` applies it when it loads weights.
    """
    if pretrained:
        raise ValueError(
            f"the builder of {variant} builds only; load weights with zoo.create_model({variant!r}, pretrained=True)"
        )
    if kwargs.pop("output_stride", None) not in (None, 32):
        raise ValueError(f"{variant} supports only output_stride=32")
    _check_kwargs(model_cls, variant, kwargs)
    if isinstance(pretrained_cfg, dict):
        cfg = dict(pretrained_cfg)
    elif hasattr(pretrained_cfg, "to_dict"):
        cfg = pretrained_cfg.to_dict()
    else:
        cfg = dict(get_entry(variant).pretrained_cfg)
    cfg.setdefault("architecture", variant)
    return build_model_with_cfg(model_cls, variant, pretrained=False, pretrained_cfg=cfg, **kwargs)
