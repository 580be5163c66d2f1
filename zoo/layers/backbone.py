"""timm's face of a staged vision backbone, written once: the families keep only their stem, stages and head.

A family's model class mixes in :class:`VisionBackbone` and provides ``stem``, ``stages`` (run in order),
``head`` (with ``fc``), ``in_chans``, ``num_classes``, ``num_features``, ``feature_info``, its own
``forward_head``, and where it differs: ``_embed`` (what runs before the stages), ``_run_stages`` (the stages of
one forward, in order), ``_stage_context`` and ``_run_stage`` (the same, one stage at a time, for
``forward_intermediates``), ``_to_nchw`` (the stages' layout to (B, C, H, W)), ``_reset_head``, ``_drop_head_norm``
and ``_init_family_weights``.

``forward`` is traceable by ``torch.fx`` and scriptable by TorchScript: the input checks and every eager shortcut
are skipped there (:mod:`zoo.layers.tracing`). :func:`imagenet_cfg` is the pretrained cfg of an ImageNet-1k
classifier with timm's constants; :func:`global_pool_nchw` is timm's pooling by name.
"""

from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from ..platform.allocator import hold_freed_memory
from .features import GLOBAL_POOLS, StagePruningMixin, check_head_args, take_indices
from .linear import Linear
from .saving import HubMixin
from .tracing import is_eager

__all__ = ["GLOBAL_POOLS", "VisionBackbone", "global_pool_nchw", "imagenet_cfg"]


def global_pool_nchw(x: torch.Tensor, pool: str, dims: list[int]) -> torch.Tensor:
    """``x`` pooled over ``dims`` by timm's pooling name: ``avg``, ``max`` or ``avgmax`` (their mean)."""
    if pool == "max":
        return x.amax(dims)
    if pool == "avgmax":
        return 0.5 * (x.mean(dims) + x.amax(dims))
    return x.mean(dims)


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


def _hold_training_memory(x: torch.Tensor) -> None:
    """A training step on the CPU allocates and frees the same activations at every step: their pages are kept for
    the next one (:func:`~zoo.platform.allocator.hold_freed_memory`), not faulted in again; not while a graph is
    traced or compiled (the call is no operator)."""
    if (
        is_eager()
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and x.device.type == "cpu"
    ):
        hold_freed_memory()


class VisionBackbone(StagePruningMixin, HubMixin):
    """The timm interface over ``stem -> stages -> head``: features, intermediates, head, classifier, checks."""

    min_input_size = 32  # the backbone downsamples by 32
    stage_output_fmt = "NCHW"  # the stages' own layout (recorded by timm's list/dict/hook feature wrappers)
    no_weight_decay_keys: tuple[str, ...] = ()
    block_patterns: tuple[str, ...] = (r"^stages\.(\d+)\.blocks\.(\d+)",)  # group_matcher's fine-grained blocks
    global_pools: tuple[str, ...] = GLOBAL_POOLS  # the pooling modes the model and reset_classifier take

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
        if not torch.jit.is_scripting() and is_eager():  # a traced or scripted graph takes its input's word
            self.check_input(x)
        return self.stem(x)

    def _run_stages(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def _stage_context(self) -> Any:
        return None

    def _run_stage(self, stage: nn.Module, x: torch.Tensor, context: Any) -> torch.Tensor:
        return stage(x)

    def _to_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._to_nchw(self._run_stages(self._embed(x)))

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
        if not torch.jit.is_scripting() and self.training and torch.is_grad_enabled():
            _hold_training_memory(x)
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
        """A new classifier of ``num_classes`` (0: none) on the model's device and dtype, in its train/eval mode;
        ``global_pool`` (None: the current one) is timm's pooling name, kept by later resets."""
        check_head_args(num_classes, global_pool, self.global_pools)
        reference = next(iter(self.parameters()), None)
        self.num_classes = num_classes
        with torch.device(reference.device if reference is not None else "cpu"):
            self._reset_head(num_classes, global_pool)
        if reference is not None:
            self.head.to(dtype=reference.dtype)
        self.head.train(self.training)

    def _reset_head(self, num_classes: int, global_pool: str | None) -> None:
        if global_pool is not None:
            self.global_pool = global_pool
        self.head.fc = Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _drop_head_norm(self) -> None:
        """The head's final norm removed (sized for the last stage; :meth:`prune_intermediate_layers`)."""
        if isinstance(getattr(self.head, "norm", None), nn.Module):
            self.head.norm = nn.Identity()

    # ---- initialisation -------------------------------------------------------------------------------------------
    @torch.jit.ignore
    def init_weights(self) -> None:
        """Every parameter and buffer initialised as a fresh build does: after ``model.to_empty(device=...)`` of a
        model built on the meta device (``create_model(name, device="meta")``), as timm's ``init_weights``."""
        with torch.no_grad():
            for module in self.modules():
                if module is not self and callable(getattr(module, "reset_parameters", None)):
                    module.reset_parameters()
            self._init_family_weights()

    def _init_family_weights(self) -> None:
        """The family's own initialisation on top of each layer's ``reset_parameters``."""
