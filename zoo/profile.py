"""Params and MACs of a model.

MACs come from fvcore's ``FlopCountAnalysis`` (which counts one multiply-add as one "flop": that number is
MACs, the unit of the MetaFormer tables). The zoo adds handles for ops fvcore would otherwise count as zero
although they do matrix arithmetic (``aten::scaled_dot_product_attention``). ``FLOPs = 2 x MACs``.
Ops fvcore skips are listed in the result; a skipped matmul, conv or attention op is an error.
"""
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

__all__ = ["Profile", "count_macs", "count_params", "profile"]

# ops that do matrix arithmetic: leaving one uncounted would make the total meaningless
_MUST_COUNT = ("matmul", "mm", "bmm", "conv", "linear", "einsum", "attention", "baddbmm", "addmm")


def _shape(v) -> List[int]:
    return list(v.type().sizes())


def _sdpa_macs(inputs: List[Any], outputs: List[Any]) -> int:
    """softmax(q k^T) v: B*h*Nq*Nk*d for q k^T plus B*h*Nq*Nk*dv for the weighted sum."""
    q, k, v = (_shape(t) for t in inputs[:3])
    batch = 1
    for d in q[:-2]:
        batch *= d
    nq, d = q[-2], q[-1]
    nk, dv = k[-2], v[-1]
    return batch * nq * nk * (d + dv)


_EXTRA_HANDLES = {
    "aten::scaled_dot_product_attention": _sdpa_macs,
}


@dataclass
class Profile:
    name: str
    input_size: Tuple[int, ...]
    params: int
    trainable_params: int
    frozen_params: int
    macs: int
    flops: int
    uncounted_ops: Dict[str, int] = field(default_factory=dict)
    convention: str = ("macs: fvcore FlopCountAnalysis total (one multiply-add = 1) with the zoo's handles for "
                       "scaled_dot_product_attention; flops = 2 x macs; params: unique parameters")
    tools: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def count_params(model: nn.Module) -> Tuple[int, int]:
    """(trainable, frozen) counts of unique parameters (tied or shared weights once)."""
    seen, trainable, frozen = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def count_macs(model: nn.Module, inputs: Union[torch.Tensor, Sequence[torch.Tensor]]) -> Tuple[int, Dict[str, int]]:
    """(MACs, uncounted ops) of one forward, via fvcore with the zoo's extra handles."""
    from fvcore.nn import FlopCountAnalysis

    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    analysis = FlopCountAnalysis(model, inputs).set_op_handle(**_EXTRA_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    total = int(analysis.total())
    skipped = dict(analysis.unsupported_ops())
    bad = [op for op in skipped if any(word in op for word in _MUST_COUNT)]
    if bad:
        raise RuntimeError(f"fvcore left arithmetic-heavy ops uncounted: {bad}; add handles in zoo/profile.py")
    return total, skipped


def profile(model_or_name: Union[str, nn.Module], input_size: Optional[Sequence[int]] = None,
            batch_size: int = 1) -> Profile:
    """Params and fvcore MACs of a model (or registered name) at ``input_size`` (C, H, W; default: its cfg's)."""
    import fvcore

    from .registry import create_model

    if isinstance(model_or_name, str):
        name, model = model_or_name, create_model(model_or_name)
    else:
        model = model_or_name
        name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    input_size = tuple(input_size or cfg.get("input_size") or (3, 224, 224))
    model.eval()
    trainable, frozen = count_params(model)
    with torch.no_grad():
        macs, skipped = count_macs(model, torch.randn(batch_size, *input_size))
    return Profile(
        name=name, input_size=(batch_size, *input_size), params=trainable + frozen, trainable_params=trainable,
        frozen_params=frozen, macs=macs, flops=2 * macs, uncounted_ops=skipped,
        tools={"fvcore": getattr(fvcore, "__version__", "unknown"), "torch": torch.__version__},
    )
