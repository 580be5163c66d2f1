"""SLaK: Sparse Large Kernel Network.

Paper: "More ConvNets in the 2020s: Scaling up Kernels Beyond 51x51 using Sparsity" (ICLR 2023),
https://arxiv.org/abs/2207.03620
Original code (MIT): https://github.com/VITA-Group/SLaK

A ConvNeXt macro design whose 7x7 depthwise conv is a decomposed large kernel: a (K x 5) and a (5 x K) depthwise
conv plus a 5 x 5 one, each followed by BatchNorm and summed in parallel (K = 51, 49, 47, 13 per stage for the
released models; :class:`zoo.layers.DecomposedLargeKernel`). Widths are ``int(d * 1.3)``, truncated (124, 249,
499, 998 for T/S). The stem and downsampling LayerNorms normalise over channels with eps 1e-6 and a biased
variance; layer scale ``gamma`` starts at 1e-6; the final LayerNorm comes after global average pooling.

The authors train with dynamic sparsity (40% of every weight pruned); their checkpoints are dense tensors with
exact zeros. The paper's parameter and FLOP figures count non-zero weights only, the dense model is larger:
``reference_figures`` holds both (``params``/``macs`` dense, ``nonzero_params``/``nonzero_macs`` the paper's).

Layout: every stage runs on channels-last memory; ``forward_features`` returns the (B, C, H, W) view.

Inference form (new in the zoo; the authors never re-parameterise SLaK): ``model.reparameterize()`` or
``create_model(name, deploy=True)`` folds every BN into its conv and the 5x5 kernel into the (K x 5) one, leaving
two depthwise convs with bias per block (:class:`zoo.layers.FusedLargeKernel`). How those convs run is chosen by
``large_kernel_impl``: ``"auto"`` (default) and ``"conv"`` run PyTorch's depthwise conv on channels-last memory
(oneDNN on CPU, cuDNN on CUDA); ``"matmul"`` runs each conv as a batched GEMM with banded matrices (see
:mod:`zoo.layers.large_kernel` for the measurements behind the default). Checkpoints of either form load into a deploy model (the training form is fused on loading).
"""

import re
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import (
    ChannelLayerNorm,
    DecomposedLargeKernel,
    FusedLargeKernel,
    Linear,
    drop_path_gain,
    residual_add,
)
from ..layers.backbone import GLOBAL_POOLS, VisionBackbone, global_pool_nchw, imagenet_cfg
from ..layers.features import check_drop_rates, check_head_args
from ..layers.large_kernel import BN_EPS, IMPLS, default_impl, fold_batchnorm
from ..layers.mlp import Mlp
from ..layers.pruning import PrunePlan, sync_stage_widths
from ..layers.tracing import is_eager
from ..registry import reference_table, register_model
from ._builder import build_vision_model

__all__ = ["SLaK", "checkpoint_filter_fn"]


def _to_channels_last_map(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W, C); a view when the memory is channels-last."""
    return x.permute(0, 2, 3, 1)


class Stem(nn.Module):
    """Conv 4x4 stride 4, then LayerNorm over channels (eps 1e-6)."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, dim, kernel_size=4, stride=4)
        self.norm = ChannelLayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.contiguous(memory_format=torch.channels_last))
        return self.norm(_to_channels_last_map(x)).permute(0, 3, 1, 2)


class Downsample(nn.Module):
    """LayerNorm over channels (eps 1e-6), then conv 2x2 stride 2."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.norm = ChannelLayerNorm(in_dim, eps=1e-6)
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(_to_channels_last_map(x)).permute(0, 3, 1, 2))


class SLaKBlock(nn.Module):
    """``x + gamma * mlp(norm(large_kernel(x)))`` (ConvNeXt block with the decomposed large kernel)."""

    def __init__(
        self,
        dim: int,
        kernel_size: int,
        small_kernel: int = 5,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        bn: bool = True,
        deploy: bool = False,
        large_kernel_impl: str | None = None,
        mlp_hidden: int | None = None,
    ):
        super().__init__()
        if deploy:
            self.large_kernel = FusedLargeKernel(dim, kernel_size, small_kernel, impl=large_kernel_impl)
        else:
            self.large_kernel = DecomposedLargeKernel(dim, kernel_size, small_kernel, bn=bn)
        self.norm = ChannelLayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden or int(dim * mlp_ratio))  # ``mlp_hidden``: a pruned width (zoo.prune)
        self.layer_scale_init_value = float(layer_scale_init_value)
        self.gamma = nn.Parameter(torch.full((dim,), self.layer_scale_init_value))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(_to_channels_last_map(self.large_kernel(x))))
        mask = drop_path_gain(y, self.drop_path, self.training)
        gain = self.gamma if mask is None else self.gamma * mask
        return residual_add(_to_channels_last_map(x), y, gain).permute(0, 3, 1, 2)


class SLaKStage(nn.Module):
    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        kernel_size: int,
        small_kernel: int,
        drop_path: Sequence[float],
        downsample: bool,
        mlp_hidden: Sequence[int | None] | None = None,
        **block_kwargs,
    ):
        super().__init__()
        self.downsample = Downsample(in_dim, dim) if downsample else nn.Identity()
        hidden = mlp_hidden or [None] * depth
        self.blocks = nn.Sequential(
            *[
                SLaKBlock(dim, kernel_size, small_kernel, drop_path=drop_path[i], mlp_hidden=hidden[i], **block_kwargs)
                for i in range(depth)
            ]
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if not torch.jit.is_scripting() and is_eager() and self.grad_checkpointing and torch.is_grad_enabled():
            for block in self.blocks:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return self.blocks(x)


def _check_layout(
    depths: Sequence[int],
    dims: Sequence[int],
    kernel_size: Sequence[int],
    bn: bool,
    deploy: bool,
    large_kernel_impl: str | None,
    mlp_hidden: Sequence[int | None] | None,
) -> str:
    """Refuse an architecture SLaK cannot build; returns ``large_kernel_impl`` with its default resolved."""
    if mlp_hidden is not None and (
        len(mlp_hidden) != sum(depths) or any(h is not None and (not isinstance(h, int) or h < 1) for h in mlp_hidden)
    ):
        raise ValueError(f"mlp_hidden needs one positive int (or None) per block ({sum(depths)}), got {mlp_hidden}")
    if len(depths) != 4 or len(dims) != 4:
        raise ValueError(f"depths and dims need 4 entries (one per stage), got {tuple(depths)} and {tuple(dims)}")
    if len(kernel_size) != 5:
        raise ValueError(
            "kernel_size needs 5 entries: the large kernel of each stage, then the small kernel "
            f"edge, e.g. (51, 49, 47, 13, 5); got {tuple(kernel_size)}"
        )
    if any(k % 2 == 0 or k < 1 for k in kernel_size):
        raise ValueError(f"kernel sizes must be positive odd numbers, got {tuple(kernel_size)}")
    if any(k < kernel_size[-1] for k in kernel_size[:4]):
        raise ValueError(
            f"every large kernel must be at least the small kernel {kernel_size[-1]}, got {tuple(kernel_size)}"
        )
    large_kernel_impl = default_impl() if large_kernel_impl is None else large_kernel_impl
    if large_kernel_impl not in IMPLS:
        raise ValueError(f"large_kernel_impl must be one of {IMPLS}, got {large_kernel_impl!r}")
    if deploy and not bn:
        raise ValueError("deploy=True folds BatchNorm into the convs; it needs bn=True")
    return large_kernel_impl


def _make_stages(
    depths: Sequence[int],
    widths: Sequence[int],
    kernel_size: Sequence[int],
    drop_path_rate: float,
    mlp_hidden: Sequence[int | None] | None,
    **block_kwargs,
) -> tuple[nn.Sequential, list[dict]]:
    """The four stages and their feature info; ``mlp_hidden``: per block, all stages in order."""
    total = sum(depths)  # stochastic depth rises linearly from 0 to drop_path_rate over all blocks
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    stages, feature_info, start = [], [], 0
    for i, depth in enumerate(depths):
        stages.append(
            SLaKStage(
                widths[i - 1] if i else widths[0],
                widths[i],
                depth,
                kernel_size[i],
                kernel_size[-1],
                rates[start : start + depth],
                downsample=i > 0,
                mlp_hidden=None if mlp_hidden is None else mlp_hidden[start : start + depth],
                **block_kwargs,
            )
        )
        start += depth
        feature_info.append(dict(num_chs=widths[i], reduction=4 * 2**i, module=f"stages.{i}"))
    return nn.Sequential(*stages), feature_info


class SLaKPrunePlan(PrunePlan):
    """zoo.prune on SLaK: stage widths and MLP widths (the decomposed and the fused large kernels, BatchNorms
    included); the classifier keeps its width."""

    def mlps(self) -> list[nn.Module]:
        return [b.mlp.fc1 for s in self.model.stages for b in s.blocks]

    def finish(self) -> None:
        for m in self.model.modules():  # the large kernels cache their channel count
            if isinstance(m, (DecomposedLargeKernel, FusedLargeKernel)):
                first = m.vertical.conv if isinstance(m, DecomposedLargeKernel) else m.vertical
                m.dim = first.weight.shape[0]
                if isinstance(m, FusedLargeKernel):
                    m._cache.clear()
        sync_stage_widths(self.model, [stage.blocks[0].norm.weight.shape[0] for stage in self.model.stages])

    def widths(self) -> dict:
        dims = [stage.blocks[0].norm.weight.shape[0] for stage in self.model.stages]
        hidden = [b.mlp.fc1.out_features for stage in self.model.stages for b in stage.blocks]
        return {"dims": dims, "width_factor": 1.0, "mlp_hidden": hidden}


class SLaK(VisionBackbone, nn.Module):
    """SLaK with the timm model interface.

    Args:
        depths: blocks per stage.
        dims: channels per stage before ``width_factor``; the model uses ``int(d * width_factor)``.
        kernel_size: the large kernel of each of the 4 stages, then the small kernel edge (authors' layout:
            ``(51, 49, 47, 13, 5)``).
        width_factor: channel multiplier (1.3 for the released models), truncated.
        layer_scale_init_value, head_init_scale: the authors' init values.
        bn: BatchNorm after each large-kernel branch (the authors' default).
        deploy: build the fused inference form (see the module docstring); ``reparameterize()`` converts later.
        large_kernel_impl: ``"auto"``, ``"conv"`` or ``"matmul"``: how the fused large kernels run.
        mlp_hidden: per block (all stages in order), the MLP width of a pruned model (``zoo.prune``, which also
            records the pruned ``dims`` with ``width_factor=1``); None (or a None entry) keeps ``mlp_ratio``.
    """

    prune_plan = SLaKPrunePlan

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        kernel_size: Sequence[int] = (51, 49, 47, 13, 5),
        width_factor: float = 1.3,
        mlp_ratio: float = 4.0,
        layer_scale_init_value: float = 1e-6,
        head_init_scale: float = 1.0,
        bn: bool = True,
        deploy: bool = False,
        large_kernel_impl: str | None = None,
        onednn_linear: bool | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        mlp_hidden: Sequence[int | None] | None = None,
    ):
        super().__init__()
        check_head_args(num_classes, global_pool, GLOBAL_POOLS)
        check_drop_rates(drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        large_kernel_impl = _check_layout(depths, dims, kernel_size, bn, deploy, large_kernel_impl, mlp_hidden)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.deploy = deploy
        self.large_kernel_impl = large_kernel_impl
        self.kernel_size = tuple(kernel_size)
        widths = [int(d * width_factor) for d in dims]  # truncation, as the authors do: 124, 249, 499, 998
        self.num_features = self.head_hidden_size = widths[-1]
        self.drop_rate = drop_rate
        self.head_init_scale = head_init_scale

        self.stem = Stem(in_chans, widths[0])
        self.stages, self.feature_info = _make_stages(
            depths,
            widths,
            kernel_size,
            drop_path_rate,
            mlp_hidden,
            mlp_ratio=mlp_ratio,
            layer_scale_init_value=layer_scale_init_value,
            bn=bn,
            deploy=deploy,
            large_kernel_impl=large_kernel_impl,
        )
        self.head = nn.Module()
        self.head.norm = nn.LayerNorm(widths[-1], eps=1e-6)
        self.head.drop = nn.Dropout(drop_rate)
        self.head.fc = Linear(widths[-1], num_classes) if num_classes > 0 else nn.Identity()

        with torch.no_grad():
            self._init_family_weights()
        if onednn_linear is not None:  # else each Linear takes ZOO_ONEDNN_LINEAR (default on)
            self.set_onednn_linear(onednn_linear)
        if deploy:  # conv weights in the activations' memory format: no per-call weight reorder
            self.to(memory_format=torch.channels_last)

    @staticmethod
    def _init_weights(m: nn.Module):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, SLaKBlock):
            nn.init.constant_(m.gamma, m.layer_scale_init_value)

    def _init_family_weights(self) -> None:
        self.apply(self._init_weights)
        if isinstance(self.head.fc, nn.Linear):  # the authors' head_init_scale
            self.head.fc.weight.mul_(self.head_init_scale)
            self.head.fc.bias.mul_(self.head_init_scale)

    # ---- inference form --------------------------------------------------------------------------------------
    @torch.no_grad()
    def reparameterize(self, large_kernel_impl: str | None = None) -> "SLaK":
        """Fold every large kernel into its inference form in place (see the module docstring); returns self.

        Uses the BN running statistics, so call it on a trained model; the result is meant for inference.
        """
        impl = large_kernel_impl or self.large_kernel_impl
        if impl not in IMPLS:
            raise ValueError(f"large_kernel_impl must be one of {IMPLS}, got {impl!r}")
        for stage in self.stages:
            for block in stage.blocks:
                if isinstance(block.large_kernel, DecomposedLargeKernel):
                    if isinstance(block.large_kernel.vertical.bn, nn.Identity):
                        raise ValueError("reparameterize() folds BatchNorm into the convs; this model has bn=False")
                    block.large_kernel = block.large_kernel.fuse(impl)
                else:
                    block.large_kernel.impl = impl
        self.deploy, self.large_kernel_impl = True, impl
        return self.to(memory_format=torch.channels_last)  # conv weights like the activations: no reorders

    def set_large_kernel_impl(self, impl: str) -> None:
        """Pick how fused large kernels run: ``"auto"``, ``"conv"`` or ``"matmul"`` (deploy form only)."""
        if impl not in IMPLS:
            raise ValueError(f"large_kernel_impl must be one of {IMPLS}, got {impl!r}")
        self.large_kernel_impl = impl
        for m in self.modules():
            if isinstance(m, FusedLargeKernel):
                m.impl = impl

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool != "":  # the authors average before the LayerNorm
            x = self.head.drop(self.head.norm(global_pool_nchw(x, self.global_pool, [2, 3])))
            return x if pre_logits else self.head.fc(x)
        x = self.head.drop(self.head.norm(_to_channels_last_map(x)))
        return (x if pre_logits else self.head.fc(x)).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------------------------
# Checkpoint conversion
# --------------------------------------------------------------------------------------------------------------

_BRANCHES = {
    "LoRA1": "vertical",
    "Decom1": "vertical",
    "LoRA2": "horizontal",
    "Decom2": "horizontal",
    "small_conv": "small",
}
_BN_STATS = ("weight", "bias", "running_mean", "running_var")


def _rename_authors(key: str) -> str:
    m = re.match(r"downsample_layers\.(\d+)\.(\d+)\.(.+)", key)
    if m:
        layer, index, rest = int(m[1]), int(m[2]), m[3]
        if layer == 0:
            return f"stem.{'conv' if index == 0 else 'norm'}.{rest}"
        return f"stages.{layer}.downsample.{'norm' if index == 0 else 'conv'}.{rest}"
    m = re.match(r"stages\.(\d+)\.(\d+)\.(.+)", key)
    if m:
        rest = m[3]
        for old, new in _BRANCHES.items():
            rest = rest.replace(f"large_kernel.{old}.", f"large_kernel.{new}.")
        rest = rest.replace("pwconv1.", "mlp.fc1.").replace("pwconv2.", "mlp.fc2.")
        return f"stages.{m[1]}.blocks.{m[2]}.{rest}"
    return {
        "norm.weight": "head.norm.weight",
        "norm.bias": "head.norm.bias",
        "head.weight": "head.fc.weight",
        "head.bias": "head.fc.bias",
    }.get(key, key)


def _fuse_entries(sd: dict[str, torch.Tensor], prefix: str, model: nn.Module) -> None:
    """Replace the training-form entries of one large kernel at ``prefix`` by its fused (deploy) entries."""
    module = model.get_submodule(prefix.rstrip("."))
    branches = {}
    for name in ("vertical", "horizontal", "small"):
        p = f"{prefix}{name}."
        if p + "conv.weight" not in sd:
            continue
        w = sd.pop(p + "conv.weight").float()
        stats = {s: sd.pop(f"{p}bn.{s}", None) for s in _BN_STATS}
        sd.pop(p + "bn.num_batches_tracked", None)
        if any(v is None for v in stats.values()):
            missing = [f"{p}bn.{s}" for s, v in stats.items() if v is None]
            raise KeyError(f"cannot fuse {prefix.rstrip('.')}: the checkpoint lacks {', '.join(missing)}")
        branches[name] = fold_batchnorm(w, *(stats[s].float() for s in _BN_STATS), eps=BN_EPS)
    if not branches:
        return
    wv, bv = branches["vertical"]
    wh, bh = branches["horizontal"]
    if "small" in branches:
        ws, bs = branches["small"]
        pad = (wv.shape[-2] - ws.shape[-2]) // 2
        wv = wv.clone()
        wv[:, :, pad : pad + ws.shape[-2], :] += ws
        bv = bv + bs
    dtype = module.vertical.weight.dtype
    sd[prefix + "vertical.weight"], sd[prefix + "vertical.bias"] = wv.to(dtype), bv.to(dtype)
    sd[prefix + "horizontal.weight"], sd[prefix + "horizontal.bias"] = wh.to(dtype), bh.to(dtype)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Convert a SLaK state dict of any supported origin to the zoo's keys.

    Origins: the authors' files (``{"model": ...}``, optionally ``model_ema``, already unwrapped by the loader or
    passed here as such a dict; branch keys ``LoRA1/LoRA2/small_conv`` or the older ``Decom1/Decom2``), the zoo's
    training form and the zoo's deploy form. A training-form checkpoint loaded into a deploy model is fused here
    (BN folded, the small kernel added to the vertical one) with the checkpoint's BN statistics.
    """
    for wrapper in ("model", "model_ema", "state_dict"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
    if any(".lkb_origin." in k for k in state_dict):
        raise ValueError(
            "this checkpoint uses the authors' undecomposed 'lkb_origin' large kernels (an early "
            "SLaK-T file, or a model built without --Decom True); the zoo's SLaK is the decomposed "
            "model of the released checkpoints (LoRA1/LoRA2/small_conv keys)"
        )
    if any(k.startswith("downsample_layers.") for k in state_dict):
        state_dict = {_rename_authors(k): v for k, v in state_dict.items()}
    else:
        state_dict = dict(state_dict)
    if getattr(model, "deploy", False):
        prefixes = sorted(
            {
                k[: k.index("large_kernel.") + len("large_kernel.")]
                for k in state_dict
                if "large_kernel." in k and ".conv.weight" in k
            }
        )
        for prefix in prefixes:
            _fuse_entries(state_dict, prefix, model)
    return state_dict


# --------------------------------------------------------------------------------------------------------------
# Pretrained configs and registered models
# --------------------------------------------------------------------------------------------------------------

FAMILY = dict(name="slak", task="image-classification")


def _cfg(**kwargs) -> dict:
    return imagenet_cfg(
        **{
            "license": "mit",
            "paper_name": "More ConvNets in the 2020s: Scaling up Kernels Beyond 51x51 using Sparsity",
            "paper_ids": "arXiv:2207.03620",
            "origin_url": "https://github.com/VITA-Group/SLaK",
            "hf_hub_id": None,
            **kwargs,
        }
    )


_NOTE_300 = (
    "ImageNet-1k weights (300 epochs, 40% sparse: dense tensors with exact zeros) are linked from the "
    "authors' README (Google Drive), not on the Hugging Face Hub; download the .pth and pass "
    "pretrained_cfg_overlay={'file': PATH} (their {'model': ...} files load as they are)",
)
_NOTE_120 = (
    "ImageNet-1k weights (120 epochs, kernel-size study, 40% sparse) are linked from the authors' README "
    "(SURFdrive), not on the Hugging Face Hub; download the .pth and pass "
    "pretrained_cfg_overlay={'file': PATH}",
)

default_cfgs: dict[str, dict] = {
    "slak_tiny": _cfg(notes=_NOTE_300),
    "slak_small": _cfg(notes=_NOTE_300),
    "slak_base": _cfg(notes=_NOTE_300),
    "slak_tiny_31": _cfg(notes=_NOTE_120),
    "slak_tiny_61": _cfg(notes=_NOTE_120),
}

# Dense figures: parameters of the authors' model (exact) and fvcore's total at 1x3x224x224 (exact for T/S/B as
# measured on the authors' code; for the kernel-size variants plain fvcore on zoo.reference.slak, which
# gives the authors' exact figure for slak_tiny). Top-1: the authors' README (300 epochs for T/S/B, 120 epochs
# for the kernel-size study).
reference_figures: dict[str, dict] = reference_table(
    [
        ("slak_tiny", 50_703_838, 8_735_352_362, 82.5),
        ("slak_small", 91_131_820, 16_653_955_418, 83.8),
        ("slak_base", 157_950_792, 28_575_695_593, 84.0),
        ("slak_tiny_31", 49_581_838, 8_208_857_162, 81.5),
        ("slak_tiny_61", 51_264_838, 8_998_599_962, 81.5),
    ]
)
# The paper's / README's figures for the 40%-sparse models: non-zero parameters and non-zero GFLOPs (MACs).
_NONZERO = {
    "slak_tiny": (30e6, 5.0e9),
    "slak_small": (55e6, 9.8e9),
    "slak_base": (95e6, 17.1e9),
    "slak_tiny_31": (30e6, 4.8e9),
    "slak_tiny_61": (31e6, 5.2e9),
}
for _name, (_params, _macs) in _NONZERO.items():
    reference_figures[_name].update(
        nonzero_params=int(_params),
        nonzero_macs=int(_macs),
        sparsity=0.4,
        nonzero_convention="the paper's table: non-zero weights of the 40%-sparse "
        "model (rounded to 1M params / 0.1 G MACs)",
    )

_T = dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
_S = dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768))
_B = dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024))


def _create_slak(variant: str, pretrained: bool = False, **kwargs) -> SLaK:
    return build_vision_model(SLaK, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


@register_model
def slak_tiny(pretrained=False, **kwargs):
    return _create_slak("slak_tiny", pretrained, **{**_T, "kernel_size": (51, 49, 47, 13, 5), **kwargs})


@register_model
def slak_small(pretrained=False, **kwargs):
    return _create_slak("slak_small", pretrained, **{**_S, "kernel_size": (51, 49, 47, 13, 5), **kwargs})


@register_model
def slak_base(pretrained=False, **kwargs):
    return _create_slak("slak_base", pretrained, **{**_B, "kernel_size": (51, 49, 47, 13, 5), **kwargs})


@register_model
def slak_tiny_31(pretrained=False, **kwargs):
    return _create_slak("slak_tiny_31", pretrained, **{**_T, "kernel_size": (31, 29, 27, 13, 5), **kwargs})


@register_model
def slak_tiny_61(pretrained=False, **kwargs):
    return _create_slak("slak_tiny_61", pretrained, **{**_T, "kernel_size": (61, 59, 57, 13, 5), **kwargs})
