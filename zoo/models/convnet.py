"""ConvNet-D: the evaluation network of dataset distillation.

Papers: "Dataset Condensation with Gradient Matching" (Zhao, Mopuri, Bilen; ICLR 2021), and every dataset-distillation
paper after it (DSA, DM, MTT, HaBa), which train and report on this network.
Original code (MIT): https://github.com/VICO-UoE/DatasetCondensation (``networks.py``, ``ConvNet``)

``depth`` blocks of ``Conv2d(3x3, width, padding=1) -> instance norm -> ReLU -> AvgPool2d(2, 2)``, then one
``Linear`` on the flattened ``width x H/2^depth x W/2^depth`` map. "Instance norm" is ``GroupNorm(width, width)``
with an affine transform, as in the authors' code. ConvNet-3 ("ConvNetD3", width 128) is the field's network at
32x32 (CIFAR, MNIST); depth 4 at 64x64 (Tiny-ImageNet), depth 5 at 128x128 (ImageNet subsets). The authors handle
single-channel 28x28 images by padding the first conv by 3 (28 -> 32); ``in_chans=1`` does the same here.

The head flattens (``global_pool="flatten"``, the authors'), so the input size is fixed by ``img_size``;
``global_pool="avg"`` averages the last map instead and takes any size, and ``""`` keeps the map (timm's no
pooling). As in timm, ``num_features`` is the channels of ``forward_features``' map (``width``) and
``head_hidden_size`` the width of ``forward_head(x, pre_logits=True)``: the flattened map, ``width x 4 x 4`` for
ConvNet-3 at 32x32. That pre-logits output is the authors' ``embed``: the features distribution matching compares.
``drop_rate`` is dropout before the classifier (0, as the authors train). ``widths`` sets every block's channels
(what ``zoo.prune`` records).
"""

from collections.abc import Sequence

import torch
from torch import nn

from ..layers.backbone import VisionBackbone, global_pool_nchw, imagenet_cfg
from ..layers.features import check_drop_rates, check_head_args
from ..layers.pruning import PrunePlan
from ..registry import reference_table, register_model
from ._builder import build_vision_model

__all__ = ["ConvNet", "checkpoint_filter_fn"]

NORMS = ("instancenorm", "batchnorm", "none")
GLOBAL_POOLS = ("flatten", "avg", "max", "avgmax", "")


class ConvBlock(nn.Module):
    """conv 3x3 -> norm -> ReLU -> 2x2 average pooling."""

    # the forward ends pool(act(norm(.))): zoo.condense.fast_convs.fast_backward may run the three as one module
    fused_tail = ("norm", "act", "pool")

    def __init__(self, in_chs: int, out_chs: int, padding: int, norm: str, pool: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, padding=padding)
        if norm == "instancenorm":
            self.norm = nn.GroupNorm(out_chs, out_chs, affine=True)
        elif norm == "batchnorm":
            self.norm = nn.BatchNorm2d(out_chs)
        else:
            self.norm = nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d(2, 2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class ConvNetPrunePlan(PrunePlan):
    """zoo.prune on ConvNet-D: every block's width (the instance norm keeps one group per kept channel; the
    flattened classifier loses the columns of the removed channels' positions); the classifier keeps its width."""

    def widths(self) -> dict:
        return {"widths": self.model.widths}

    def finish(self) -> None:
        model = self.model
        for entry, width in zip(model.feature_info, model.widths):
            entry["num_chs"] = width
        model.num_features = model.widths[-1]
        model.head_hidden_size = model._head_width(model.global_pool)


class ConvNet(VisionBackbone, nn.Module):
    """The dataset-distillation ConvNet with the timm model interface.

    Args:
        depth: conv blocks (3 for 32x32 images).
        width: channels of every block (128).
        widths: channels per block (``depth`` ints), instead of ``width``: what ``zoo.prune`` records.
        img_size: input edge; fixes the flattened head's size (``global_pool="flatten"``).
        norm: ``instancenorm`` (the field's), ``batchnorm`` (the BN variant DC reports) or ``none``.
        global_pool: ``"flatten"`` flattens the last map (the authors'), ``"avg"`` averages it (any input size;
            ``"max"`` and ``"avgmax"`` as in timm), ``""`` keeps it (the classifier then runs at every position).
        drop_rate: dropout before the classifier.
    """

    global_pools = GLOBAL_POOLS
    prune_plan = ConvNetPrunePlan
    block_patterns = (r"^stages\.(\d+)",)  # group_matcher: one group per conv block (the head after them)
    __jit_unused_properties__ = ["fixed_input_size", "widths"]

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 10,
        global_pool: str = "flatten",
        depth: int = 3,
        width: int = 128,
        widths: Sequence[int] | None = None,
        img_size: int | Sequence[int] = 32,
        norm: str = "instancenorm",
        drop_rate: float = 0.0,
    ):
        super().__init__()
        check_head_args(num_classes, global_pool, GLOBAL_POOLS)
        check_drop_rates(drop_rate=drop_rate)
        if not isinstance(depth, int) or depth < 1 or not isinstance(width, int) or width < 1:
            raise ValueError(f"depth and width must be positive ints, got depth={depth!r}, width={width!r}")
        widths = [width] * depth if widths is None else list(widths)
        if len(widths) != depth or not all(isinstance(w, int) and w >= 1 for w in widths):
            raise ValueError(f"widths must be {depth} positive ints (one per block), got {widths!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        pad0 = 3 if in_chans == 1 and (h, w) == (28, 28) else 1  # the authors' 28 -> 32 for single-channel digits
        self.img_size = (h, w)
        h, w = h + 2 * (pad0 - 1), w + 2 * (pad0 - 1)
        if min(h, w) < 2**depth:
            raise ValueError(f"img_size {self.img_size} is too small for {depth} 2x2 poolings (>= {2**depth})")
        self.num_classes, self.global_pool, self.in_chans, self.depth = num_classes, global_pool, in_chans, depth
        self.drop_rate = drop_rate
        self.min_input_size = min(self.img_size)
        self.stem = nn.Identity()
        blocks, self.feature_info = [], []
        for i, out_chs in enumerate(widths):
            blocks.append(ConvBlock(in_chans if i == 0 else widths[i - 1], out_chs, pad0 if i == 0 else 1, norm, True))
            self.feature_info.append(dict(num_chs=out_chs, reduction=2 ** (i + 1), module=f"stages.{i}"))
        self.stages = nn.Sequential(*blocks)
        self.grad_checkpointing = False
        self.feat_hw = (h // 2**depth, w // 2**depth)
        self.head = nn.Module()
        self.head.flatten = nn.Flatten(1)
        self.head.drop = nn.Dropout(drop_rate)
        self.num_features = widths[-1]
        self.head_hidden_size = self._head_width(global_pool)
        self.head.fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    @property
    def widths(self) -> list[int]:
        return [block.conv.out_channels for block in self.stages]

    @property
    def fixed_input_size(self) -> bool:
        """The flattened classifier is sized by the input; the averaged or unpooled head is not."""
        return self.global_pool == "flatten"

    def _head_width(self, global_pool: str) -> int:
        """The pre-logits width: the flattened map, or its channels (averaged, or at every position)."""
        return self.num_features * (self.feat_hw[0] * self.feat_hw[1] if global_pool == "flatten" else 1)

    def check_input(self, x: torch.Tensor) -> None:
        self._check_fixed(x) if self.fixed_input_size else super().check_input(x)

    def _check_fixed(self, x: torch.Tensor) -> None:
        expected = (self.in_chans, *self.img_size)
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != expected:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"ConvNet (flattened head) takes (B, {', '.join(map(str, expected))}) images, got {got}; build it "
                "with img_size=/in_chans= for other sizes, or global_pool='avg' for any size"
            )

    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable  # three small blocks: nothing worth recomputing

    def _reset_head(self, num_classes: int, global_pool: str | None) -> None:
        if global_pool is not None:
            self.global_pool = global_pool
        self.head_hidden_size = self._head_width(self.global_pool)
        self.head.fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "":  # the map; the classifier at every position
            x = self.head.drop(x.permute(0, 2, 3, 1))
            return (x if pre_logits else self.head.fc(x)).permute(0, 3, 1, 2)
        x = self.head.flatten(x) if self.global_pool == "flatten" else global_pool_nchw(x, self.global_pool, [2, 3])
        x = self.head.drop(x)
        return x if pre_logits else self.head.fc(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The authors' ``embed``: the features before the classifier (flattened, with the default head)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: ConvNet) -> dict[str, torch.Tensor]:
    """The authors' keys (``features.<i>.*`` of one ``nn.Sequential``, ``classifier.*``) -> the zoo's.

    Their Sequential holds conv, norm, act, pool per block (4 entries; 3 without a norm layer)."""
    state_dict = state_dict.get("model", state_dict.get("state_dict", state_dict))
    if not any(k.startswith("features.") or k.startswith("classifier.") for k in state_dict):
        return state_dict
    per_block = 3 if isinstance(model.stages[0].norm, nn.Identity) else 4
    out = {}
    for k, v in state_dict.items():
        if k.startswith("classifier."):
            out["head.fc." + k.split(".", 1)[1]] = v
            continue
        _, idx, rest = k.split(".", 2)
        block, pos = divmod(int(idx), per_block)
        out[f"stages.{block}.{'conv' if pos == 0 else 'norm'}.{rest}"] = v
    return out


# --------------------------------------------------------------------------------------------------------------
# Pretrained configs and registered models
# --------------------------------------------------------------------------------------------------------------

FAMILY = dict(name="convnet", task="image-classification")


def _cfg(size: int, **kwargs) -> dict:
    return imagenet_cfg(
        **{
            "num_classes": 10,
            "input_size": (3, size, size),
            "pool_size": (4, 4),  # every variant at its input size: 32 / 2^3, 64 / 2^4, 128 / 2^5
            "fixed_input_size": True,
            "crop_pct": 1.0,
            "first_conv": "stages.0.conv",
            "license": "mit",
            "paper_name": "Dataset Condensation with Gradient Matching",
            "paper_ids": "arXiv:2006.05929",
            "origin_url": "https://github.com/VICO-UoE/DatasetCondensation",
            "hf_hub_id": None,
            "notes": ("the evaluation network of dataset distillation (zoo condense); no released weights",),
            **kwargs,
        }
    )


default_cfgs: dict[str, dict] = {
    "convnet_d3": _cfg(32),
    "convnet_d4": _cfg(64),
    "convnet_d5": _cfg(128),
}

# Parameters of the authors' ConvNet (10 classes, 3 channels) and plain fvcore's count of it at its input size
# (convs, linear, GroupNorm; fvcore has no handle for the poolings and ReLU, which the zoo's profile adds). No
# ImageNet-1k top-1: the network is evaluated on condensed sets (CIFAR-10 whole data: 84.8).
reference_figures: dict[str, dict] = reference_table(
    [
        ("convnet_d3", 320_010, 51_605_504, None),
        ("convnet_d4", 467_850, 215_838_720, None),
        ("convnet_d5", 615_690, 872_771_584, None),
    ]
)
for _name, _size in (("convnet_d3", 32), ("convnet_d4", 64), ("convnet_d5", 128)):
    reference_figures[_name]["convention"] = (
        f"params: sum(p.numel()) of the authors' model (10 classes); MACs: fvcore total at 1x3x{_size}x{_size}, "
        "the model's input size (one multiply-add = 1); no ImageNet-1k top-1"
    )


def _create_convnet(variant: str, pretrained: bool = False, **kwargs) -> ConvNet:
    return build_vision_model(ConvNet, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


@register_model
def convnet_d3(pretrained=False, **kwargs):
    return _create_convnet("convnet_d3", pretrained, **{"depth": 3, "width": 128, "img_size": 32, **kwargs})


@register_model
def convnet_d4(pretrained=False, **kwargs):
    return _create_convnet("convnet_d4", pretrained, **{"depth": 4, "width": 128, "img_size": 64, **kwargs})


@register_model
def convnet_d5(pretrained=False, **kwargs):
    return _create_convnet("convnet_d5", pretrained, **{"depth": 5, "width": 128, "img_size": 128, **kwargs})
