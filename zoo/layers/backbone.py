"""timm's face of a staged vision backbone, written once: the families keep only their stem, stages and head.

A family's model class mixes in :class:`VisionBackbone` and provides ``stem``, ``stages`` (run in order),
``head`` (with ``fc``), ``in_chans``, ``num_classes``, ``num_features``, ``feature_info``, its own
``forward_head``, and where it differs: ``_embed`` (what runs before the stages), ``_stage_context`` (state shared by
the stages of one forward), ``_run_stage``, ``_to_nchw`` (the stages' layout to (B, C, H, W)) and ``_reset_head``.
:func:`imagenet_cfg` is the pretrained cfg of an ImageNet-1k classifier with timm's constants.
"""

from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from .features import StagePruningMixin, check_head_args, take_indices
from .linear import Linear
from .saving import HubMixin

__all__ = ["VisionBackbone", "imagenet_cfg"]


def imagenet_cfg(**kwargs) -> dict[str, Any]:
    """A pretrained cfg for an ImageNet-1k classifier at 224 (timm's mean/std), updated with ``kwargs``."""
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv",
        "classifier": "head.fc",
        **kwargs,
    }


class VisionBackbone(StagePruningMixin, HubMixin):
    """The timm interface over ``stem -> stages -> head``: features, intermediates, head, classifier, checks."""

    min_input_size = 32  # the backbone downsamples by 32
    stage_output_fmt = "NCHW"  # the stages' own layout (recorded by timm's list/dict/hook feature wrappers)
    no_weight_decay_keys: tuple[str, ...] = ()
    block_patterns: tuple[str, ...] = (r"^stages\.(\d+)\.blocks\.(\d+)",)  # group_matcher's fine-grained blocks
    global_pools: tuple[str, ...] = ("avg", "")  # the pooling modes reset_classifier takes ("": no pooling)

    # ---- checks and the stage pipeline ------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """A clear error for a non-tensor, a missing batch dimension, the wrong channel count or a too small image."""
        expected = f"(B, {self.in_chans}, H, W)"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected an image tensor of shape {expected}, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            hint = " (add a batch dim with x.unsqueeze(0))" if x.ndim == 3 else ""
            raise ValueError(
                f"expected input of shape {expected}, got {tuple(x.shape)}{hint}; build the model with "
                f"in_chans={x.shape[1] if x.ndim == 4 else '...'} for other channel counts"
            )
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(
                f"input is {x.shape[-2]}x{x.shape[-1]}; {type(self).__name__} downsamples by 32 and "
                f"needs >= {self.min_input_size}x{self.min_input_size}"
            )

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.stem(x)

    def _stage_context(self) -> Any:
        return None

    def _run_stage(self, stage: nn.Module, x: torch.Tensor, context: Any) -> torch.Tensor:
        return stage(x)

    def _to_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        context = self._stage_context()
        x = self._embed(x)
        for stage in self.stages:
            x = self._run_stage(stage, x, context)
        return self._to_nchw(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs at ``indices`` (int: the last n; None: all), like timm's models."""
        formats = ("NCHW", "NHWC") if self.stage_output_fmt == "NHWC" else ("NCHW",)
        if output_fmt not in formats:
            raise ValueError(f"output_fmt must be one of {', '.join(formats)}, got {output_fmt!r}")
        take = take_indices(len(self.stages), indices)
        context = self._stage_context()
        x = self._embed(x)
        last = max(take) if (stop_early or intermediates_only) else len(self.stages) - 1
        intermediates = []
        for i, stage in enumerate(self.stages[: last + 1]):
            x = self._run_stage(stage, x, context)
            if i in take:
                intermediates.append(self._to_nchw(x) if output_fmt == "NCHW" else x)
        return intermediates if intermediates_only else (self._to_nchw(x), intermediates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ---- training interface -------------------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        blocks = [(r"^stages\.(\d+)\.downsample", (0,))] + [(p, None) for p in self.block_patterns]
        return dict(
            stem=r"^stem|^pos_embed", blocks=r"^stages\.(\d+)" if coarse else blocks + [(r"^head\.norm", (99999,))]
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return set(self.no_weight_decay_keys)

    def set_onednn_linear(self, enable: bool) -> None:
        """Run every zoo ``Linear`` of the model through oneDNN on CPU inference (True) or ``F.linear`` (False)."""
        for m in self.modules():
            if isinstance(m, Linear):
                m.onednn = bool(enable)

    # ---- classifier -----------------------------------------------------------------------------------------------
    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None):
        check_head_args(num_classes, global_pool, self.global_pools)
        self.num_classes = num_classes
        self._reset_head(num_classes, global_pool)

    def _reset_head(self, num_classes: int, global_pool: str | None) -> None:
        if global_pool is not None:
            self.global_pool = global_pool
        self.head.fc = Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
