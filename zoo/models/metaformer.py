"""MetaFormer family: PoolFormer v1, IdentityFormer, RandFormer, PoolFormerV2, ConvFormer, CAFormer.

Papers:
  * "MetaFormer Is Actually What You Need for Vision" (CVPR 2022), https://arxiv.org/abs/2111.11418
  * "MetaFormer Baselines for Vision" (TPAMI 2024), https://arxiv.org/abs/2210.13452
Original code (Apache-2.0): https://github.com/sail-sg/poolformer, https://github.com/sail-sg/metaformer

Numerics follow the authors' code, not timm's port. The differences that matter:
  * PoolFormer v1 applies GroupNorm(1, eps 1e-5) to the full final map and then averages; timm averages first
    and uses a LayerNorm with eps 1e-6.
  * The ConvFormer/CAFormer ``MlpHead`` LayerNorm uses eps 1e-5 (PyTorch's default); timm uses 1e-6.

Layout: stages run channels-last, (B, H, W, C), as the authors' baselines do; pointwise layers are
``nn.Linear``. ``forward_features`` returns the usual (B, C, H, W) view of that memory (no copy).

Saved layout: timm's, key for key and shape for shape, for every model (the names timm registers too and the zoo's
own). timm runs the stages without attention channels-first, with their pointwise layers (the MLP's ``fc1``/``fc2``,
SepConv's ``pwconv1``/``pwconv2``) as 1x1 convolutions, so those weights are saved as ``(out, in, 1, 1)``
(:func:`zoo.layers.save_as_conv1x1`); the attention stages' are ``(out, in)`` in both. ``torch.save``, safetensors
and timm's training checkpoints of either build load into the other with ``load_state_dict`` alone.

Speed: the pooling and identity token mixers are memory-bound, so their blocks are computed in one or two
passes over the map instead of five or six. With ``n = GroupNorm1(x) = w * (x - mean) * rstd + b`` and an
average pool that maps constants to themselves (``count_include_pad=False``),
``pool(n) - n == w * rstd * (pool(x) - x)``, so the mixer branch becomes a single ``lerp`` of ``x`` towards
``pool(x)`` with a per-(sample, channel) weight that also carries layer scale and stochastic depth.
"""

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import (
    GELU,
    ChannelLayerNorm,
    DepthwiseConv2d,
    Linear,
    PatchConv2d,
    SpatialLayerNorm,
    SquaredReLU,
    StarReLU,
    drop_path_gain,
    needs_grad,
    residual_add,
    save_as_conv1x1,
)
from ..layers.attention import attention_on_kernels, trains_on_kernels
from ..layers.backbone import GLOBAL_POOLS, VisionBackbone, global_pool_nchw, imagenet_cfg
from ..layers.features import check_drop_rates, check_head_args
from ..layers.mlp import Mlp
from ..layers.pruning import PrunePlan, classifier_layers, fused_qkv_heads, per_block, sync_stage_widths
from ..layers.tracing import is_eager
from ..registry import reference_table, register_model
from ._builder import build_vision_model

__all__ = ["MetaFormer", "checkpoint_filter_fn"]


# --------------------------------------------------------------------------------------------------------------
# Blocks. Every tensor inside a stage is channels-last: (B, H, W, C).
# --------------------------------------------------------------------------------------------------------------


class Scale(nn.Module):
    """Learnable per-channel scale (layer scale or res scale); parameter stored as ``scale``."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.init_value = float(init_value)
        self.scale = nn.Parameter(torch.full((dim,), self.init_value))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.scale, self.init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Stem(nn.Module):
    """Conv 7x7 stride 4 (padding 2), then a channel LayerNorm without bias in the baselines (none in v1)."""

    def __init__(self, in_chans: int, out_chs: int, norm: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chs, kernel_size=7, stride=4, padding=2)
        self.norm = ChannelLayerNorm(out_chs, eps=1e-6, bias=False) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.contiguous(memory_format=torch.channels_last))  # (B, C, H, W), channels-last memory
        return self.norm(x.permute(0, 2, 3, 1).contiguous())


class Downsampling(nn.Module):
    """(Channel LayerNorm without bias in the baselines) then conv 3x3 stride 2, on a channels-last map."""

    def __init__(self, in_chs: int, out_chs: int, norm: bool):
        super().__init__()
        self.norm = ChannelLayerNorm(in_chs, eps=1e-6, bias=False) if norm else nn.Identity()
        self.conv = PatchConv2d(in_chs, out_chs, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.norm(x).permute(0, 3, 1, 2))
        return x.permute(0, 2, 3, 1).contiguous()


class Pooling(nn.Module):
    """PoolFormer's token mixer: ``AvgPool2d(3, 1, 1, count_include_pad=False)(x) - x``."""

    def __init__(self, pool_size: int = 3):
        super().__init__()
        self.pool_size = pool_size

    @torch.jit.export
    def pool(self, x: torch.Tensor) -> torch.Tensor:
        k = self.pool_size
        y = F.avg_pool2d(x.permute(0, 3, 1, 2), k, stride=1, padding=k // 2, count_include_pad=False)
        return y.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class RandomMixing(nn.Module):
    """RandFormer's token mixer: a frozen row-softmaxed random (N, N) matrix applied over the H*W tokens.

    The matrix is a parameter with ``requires_grad=False``, so it is saved with the weights; N is fixed,
    so the stage must see exactly N tokens (14x14 and 7x7 for a 224x224 input).
    """

    def __init__(self, num_tokens: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.random_matrix = nn.Parameter(
            torch.softmax(torch.rand(num_tokens, num_tokens), dim=-1), requires_grad=False
        )

    def reset_parameters(self) -> None:
        """A new draw, as at build time (the matrix stays frozen)."""
        self.random_matrix.copy_(torch.softmax(torch.rand_like(self.random_matrix), dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        if not torch.jit.is_scripting() and is_eager() and H * W != self.num_tokens:
            side = math.isqrt(self.num_tokens)
            raise ValueError(
                f"RandomMixing was built for {self.num_tokens} tokens ({side}x{side}) but got a {H}x{W} map: "
                f"RandFormer only runs on its fixed input size (224x224 for the released models)."
            )
        x = torch.einsum("mn,bnc->bmc", self.random_matrix, x.reshape(B, H * W, C))  # (B, N, C)
        return x.reshape(B, H, W, C)


class SepConv(nn.Module):
    """Inverted separable conv (ConvFormer's mixer): Linear(C, 2C) -> StarReLU -> dwconv 7x7 -> Linear(2C, C)."""

    def __init__(self, dim: int, expansion_ratio: float = 2, kernel_size: int = 7, hidden: int | None = None):
        super().__init__()
        mid = hidden or int(expansion_ratio * dim)  # ``hidden``: a pruned width (zoo.prune)
        self.pwconv1 = Linear(dim, mid, bias=False)
        self.act1 = StarReLU()
        self.dwconv = DepthwiseConv2d(mid, kernel_size, padding=kernel_size // 2, bias=False)
        self.pwconv2 = Linear(mid, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pwconv1(x)
        x = self.act1(x) if needs_grad(x) else self.act1.forward_(x)
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.pwconv2(x)


class Attention(nn.Module):
    """Multi-head self-attention over the flattened H*W tokens (CAFormer stages 3-4); head_dim 32, no biases. Eager
    float32 CPU training runs :func:`zoo.layers.attention.attention_on_kernels`; the rest
    ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, head_dim: int = 32, num_heads: int | None = None):
        super().__init__()
        self.head_dim = head_dim
        self.num_heads = num_heads or max(dim // head_dim, 1)  # ``num_heads``: after head pruning (zoo.prune)
        self.attention_dim = self.num_heads * head_dim
        self.qkv = Linear(dim, self.attention_dim * 3, bias=False)
        self.proj = Linear(self.attention_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3 * self.attention_dim)
        # softmax(q k^T / sqrt(hd)) v
        if not torch.jit.is_scripting() and is_eager() and self.training and trains_on_kernels(qkv, self.head_dim):
            x = attention_on_kernels(qkv, self.num_heads)
        else:
            q, k, v = qkv.reshape(B, H * W, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)  # (B, N, nh, hd)
        return self.proj(x.reshape(B, H, W, self.attention_dim))


class MlpHead(nn.Module):
    """ConvFormer/CAFormer classifier: Linear(C, 4C) -> SquaredReLU -> LayerNorm(eps 1e-5) -> Linear(4C, classes)."""

    def __init__(
        self, dim: int, num_classes: int, mlp_ratio: float = 4, head_dropout: float = 0.0, hidden: int | None = None
    ):
        super().__init__()
        hidden = hidden or int(mlp_ratio * dim)  # ``hidden``: a pruned model's width (zoo.prune)
        self.fc1 = Linear(dim, hidden)
        self.act = SquaredReLU()
        self.norm = nn.LayerNorm(hidden, eps=1e-5)
        self.head_drop = nn.Dropout(head_dropout)
        self.fc2 = Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.head_drop(self.norm(self.act(self.fc1(x)))))


def _make_mixer(
    kind: str, dim: int, num_tokens: int | None, head_dim: int, hidden: int | None = None, num_heads: int | None = None
) -> nn.Module:
    if kind == "identity":
        return nn.Identity()
    if kind == "pool":
        return Pooling(3)
    if kind == "random":
        if num_tokens is None:
            raise ValueError("the 'random' token mixer needs num_tokens for its stage")
        return RandomMixing(num_tokens)
    if kind == "sepconv":
        return SepConv(dim, hidden=hidden)
    if kind == "attention":
        return Attention(dim, head_dim=head_dim, num_heads=num_heads)
    raise ValueError(f"unknown token mixer {kind!r}; expected identity, pool, random, sepconv or attention")


class MetaFormerBlock(nn.Module):
    """``x = rs1 * x + ls1 * mixer(norm1(x)); x = rs2 * x + ls2 * mlp(norm2(x))`` on a (B, H, W, C) map.

    ``ls`` (layer scale, v1) and ``rs`` (res scale, baselines stages 3-4) are optional per-channel scales.
    """

    __jit_unused_properties__ = ["nchw_ok"]

    def __init__(
        self,
        dim: int,
        token_mixer: str,
        norm: str,
        mlp_act: str,
        mlp_bias: bool,
        layer_scale_init_value: float | None = None,
        res_scale_init_value: float | None = None,
        drop_path: float = 0.0,
        num_tokens: int | None = None,
        head_dim: int = 32,
        mlp_hidden: int | None = None,
        mixer_hidden: int | None = None,
        num_heads: int | None = None,
    ):
        super().__init__()
        if norm == "group":  # PoolFormer v1: GroupNorm(1, C), eps 1e-5, with bias
            norm_layer = lambda: SpatialLayerNorm(dim, eps=1e-5, bias=True)  # noqa: E731
        elif norm == "spatial":  # baselines: LayerNorm over (H, W, C), eps 1e-6, no bias
            norm_layer = lambda: SpatialLayerNorm(dim, eps=1e-6, bias=False)  # noqa: E731
        elif norm == "channel":  # ConvFormer / CAFormer: LayerNorm over C, eps 1e-6, no bias
            norm_layer = lambda: ChannelLayerNorm(dim, eps=1e-6, bias=False)  # noqa: E731
        else:
            raise ValueError(f"unknown block norm {norm!r}; expected group, spatial or channel")
        act_layer = {"gelu": GELU, "starrelu": StarReLU}[mlp_act]

        self.norm1 = norm_layer()
        self.token_mixer = _make_mixer(token_mixer, dim, num_tokens, head_dim, mixer_hidden, num_heads)
        self.layer_scale1 = Scale(dim, layer_scale_init_value) if layer_scale_init_value is not None else None
        self.res_scale1 = Scale(dim, res_scale_init_value) if res_scale_init_value is not None else None
        self.norm2 = norm_layer()
        self.mlp = Mlp(dim, hidden=mlp_hidden, mlp_ratio=4, act_layer=act_layer, bias=mlp_bias)
        self.layer_scale2 = Scale(dim, layer_scale_init_value) if layer_scale_init_value is not None else None
        self.res_scale2 = Scale(dim, res_scale_init_value) if res_scale_init_value is not None else None
        self.drop_path = drop_path
        if token_mixer != "attention":  # timm's channels-first stages: 1x1 convolutions in its state dict
            pointwise = [self.mlp.fc1, self.mlp.fc2]
            if isinstance(self.token_mixer, SepConv):
                pointwise += [self.token_mixer.pwconv1, self.token_mixer.pwconv2]
            for layer in pointwise:
                save_as_conv1x1(layer)

    def _gain(self, layer_scale: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        """Layer scale times the stochastic-depth factor; None when both are 1."""
        gain = drop_path_gain(x, self.drop_path, self.training)
        if layer_scale is not None:
            gain = layer_scale if gain is None else gain * layer_scale
        return gain

    def _mix_tokens(self, x: torch.Tensor) -> torch.Tensor:
        gain = self._gain(self.layer_scale1.scale if self.layer_scale1 is not None else None, x)
        res_scale = self.res_scale1.scale if self.res_scale1 is not None else None
        # pooling and identity mixers after a (H, W, C) norm are computed in closed form (module docstring)
        # the layers are told apart by what they have (a SpatialLayerNorm its scale_shift, Pooling its pool_size):
        # TorchScript decides hasattr statically, while its isinstance on a module class fails for a class the model
        # does not hold or holds in several configurations
        if hasattr(self.norm1, "scale_shift") and hasattr(self.token_mixer, "pool_size"):
            # pool(norm(x)) - norm(x) == w * rstd * (pool(x) - x): the norm's mean and bias cancel
            _, rstd = self.norm1.stats(x)
            g = self.norm1.weight * rstd  # (B, 1, 1, C)
            bias = self.norm1.bias
            if bias is not None:  # (nested: TorchScript compiles no branch of a bias that is None by build)
                if needs_grad(bias):
                    # the bias cancels; keep it in the graph with its exact (zero) gradient, as in the authors'
                    # code, so that optimisers and DDP see every parameter used
                    g = g + (bias - bias)
            if gain is not None:
                g = g * gain
            g = g.to(x.dtype)  # statistics are float32 under autocast; the map may be bfloat16
            pooled = self.token_mixer.pool(x)
            if res_scale is None:
                return torch.lerp(x, pooled, g)  # x + g * (pooled - x)
            return torch.addcmul(x * (res_scale - g), pooled, g)  # rs * x + g * (pooled - x)
        if hasattr(self.norm1, "scale_shift") and isinstance(self.token_mixer, nn.Identity):
            # rs * x + gain * (x * scale + shift) == x * (rs + gain * scale) + gain * shift
            scale, shift = self.norm1.scale_shift(x)
            if gain is not None:
                scale, shift = scale * gain, shift * gain
            if res_scale is None:
                scale = scale + 1.0
            else:
                scale = scale + res_scale
            return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))
        return residual_add(x, self.token_mixer(self.norm1(x)), gain, res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._mix_tokens(x)
        gain = self._gain(self.layer_scale2.scale if self.layer_scale2 is not None else None, x)
        res_scale = self.res_scale2.scale if self.res_scale2 is not None else None
        return residual_add(x, self.mlp(self.norm2(x)), gain, res_scale)

    @property
    def nchw_ok(self) -> bool:
        """Whether :meth:`forward_nchw` computes this block: (H, W, C) norms with pooling or identity mixers."""
        closed_form = isinstance(self.token_mixer, (Pooling, nn.Identity))
        return closed_form and isinstance(self.norm1, SpatialLayerNorm) and isinstance(self.norm2, SpatialLayerNorm)

    def forward_nchw(self, x: torch.Tensor) -> torch.Tensor:
        """The same block on a (B, C, H, W) map, in plain ops (group norm, average pooling, 1x1 convolutions):
        what an exported graph runs (see :meth:`MetaFormerStage.forward`). Inference only (no drop path)."""

        def channel(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.view(-1, 1, 1)

        def residual(x, branch, layer_scale, res_scale):
            x = x if res_scale is None else x * channel(res_scale.scale)
            return x + (branch if layer_scale is None else branch * channel(layer_scale.scale))

        n1, n2 = self.norm1, self.norm2
        h = F.group_norm(x, 1, n1.weight, n1.bias, n1.eps)
        if isinstance(self.token_mixer, Pooling):
            k = self.token_mixer.pool_size
            h = F.avg_pool2d(h, k, stride=1, padding=k // 2, count_include_pad=False) - h
        x = residual(x, h, self.layer_scale1, self.res_scale1)
        fc1, fc2 = self.mlp.fc1, self.mlp.fc2
        h = F.conv2d(F.group_norm(x, 1, n2.weight, n2.bias, n2.eps), fc1.weight[:, :, None, None], fc1.bias)
        h = F.conv2d(self.mlp.act(h), fc2.weight[:, :, None, None], fc2.bias)
        return residual(x, h, self.layer_scale2, self.res_scale2)


class MetaFormerStage(nn.Module):
    __jit_unused_properties__ = ["nchw_ok"]

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int,
        downsample: bool,
        downsample_norm: bool,
        dp_rates: Sequence[float],
        widths: Sequence[dict] | None = None,
        **block_kwargs,
    ):
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsampling(in_chs, out_chs, downsample_norm) if downsample else nn.Identity()
        widths = widths or [{}] * depth  # per block: mlp_hidden / mixer_hidden / num_heads of a pruned model
        self.blocks = nn.Sequential(
            *[MetaFormerBlock(out_chs, drop_path=dp_rates[i], **widths[i], **block_kwargs) for i in range(depth)]
        )

    @property
    def nchw_ok(self) -> bool:
        return all(block.nchw_ok for block in self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if not torch.jit.is_scripting():
            if torch.compiler.is_exporting() and self.nchw_ok:
                return self._forward_nchw(x)
            if is_eager() and self.grad_checkpointing and torch.is_grad_enabled():
                for block in self.blocks:
                    x = checkpoint(block, x, use_reentrant=False)
                return x
        return self.blocks(x)

    def _forward_nchw(self, x: torch.Tensor) -> torch.Tensor:
        # an exported graph runs pooling stages channels-first: two transposes per stage instead of four per
        # block (ONNX's pooling and group norm are channels-first ops; eager keeps its channels-last kernels)
        x = x.permute(0, 3, 1, 2)
        for block in self.blocks:
            x = block.forward_nchw(x)
        return x.permute(0, 2, 3, 1)


class MetaFormerHead(nn.Module):
    """Final norm, global average pool and classifier.

    v1 (``norm_first``): GroupNorm(1, eps 1e-5) on the full map, then the average (computed in closed form:
    ``mean_hw(GN(x)) = w * (mean_hw(x) - mean) * rstd + b``). Baselines: average, then LayerNorm(eps 1e-6).
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        norm_first: bool,
        mlp_head: bool,
        drop_rate: float = 0.0,
        head_dropout: float = 0.0,
        head_hidden: int | None = None,
    ):
        super().__init__()
        self.dim = dim
        self.norm_first = norm_first
        self.mlp_head = mlp_head
        self.head_dropout = head_dropout
        self.head_hidden = head_hidden
        self.global_pool = "avg"
        self.norm = SpatialLayerNorm(dim, eps=1e-5) if norm_first else ChannelLayerNorm(dim, eps=1e-6)
        self.drop = nn.Dropout(drop_rate)
        self.fc = self._make_fc(dim, num_classes)

    def _make_fc(self, dim: int, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        if self.mlp_head:
            return MlpHead(dim, num_classes, head_dropout=self.head_dropout, hidden=self.head_hidden)
        return Linear(dim, num_classes)

    def reset(self, num_classes: int, global_pool: str | None = None, dim: int | None = None):
        """A new classifier for ``num_classes`` on ``dim`` features (None: the current width; another width, after
        :meth:`MetaFormer.prune_intermediate_layers`, gives the MLP head its default hidden width)."""
        check_head_args(global_pool=global_pool, pools=GLOBAL_POOLS)
        if global_pool is not None:
            self.global_pool = global_pool
        if dim is not None and dim != self.dim:
            self.dim, self.head_hidden = dim, None
        self.fc = self._make_fc(self.dim, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C) view of the channels-last features
        if self.global_pool == "":
            x = self.norm(x)  # per-map GroupNorm (v1) or per-position LayerNorm
            x = self.drop(x)
            x = x if pre_logits else self.fc(x)
            return x.permute(0, 3, 1, 2)
        if hasattr(self.norm, "scale_shift"):  # v1 (SpatialLayerNorm): the norm over the full map, then the pooling
            if self.global_pool == "avg":  # mean_hw(GN(x)) in closed form
                mean, rstd = self.norm.stats(x)
                x = (x.mean((1, 2)) - mean.flatten(1)) * (rstd.flatten(1) * self.norm.weight)
                bias = self.norm.bias
                if bias is not None:
                    x = x + bias
            else:
                x = global_pool_nchw(self.norm(x), self.global_pool, [1, 2])
        else:
            x = self.norm(global_pool_nchw(x, self.global_pool, [1, 2]))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


def _block_widths(total: int, **lists: Sequence[int | None] | None) -> list[dict]:
    """Per-block width arguments from per-block lists (a pruned model's; None entries keep the default)."""
    widths = [{} for _ in range(total)]
    for name, values in lists.items():
        if values is None:
            continue
        if not isinstance(values, (list, tuple)):
            raise ValueError(
                f"{name} is a list of one width per block ({total} entries, None: the default), got {values!r}"
            )
        if len(values) != total:
            raise ValueError(f"{name} needs one entry per block ({total}), got {len(values)}")
        for i, v in enumerate(values):
            if v is not None:
                if not isinstance(v, int) or v < 1:
                    raise ValueError(f"{name}[{i}] must be a positive int or None, got {v!r}")
                widths[i][name] = v
    return widths


def _tokens_per_stage(img_size: int | tuple[int, int], num_stages: int) -> list[int]:
    """The H * W tokens each stage sees at input size ``img_size`` (what sizes RandomMixing's matrices)."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    h, w = (h - 3) // 4 + 1, (w - 3) // 4 + 1  # after the stem (k7, s4, p2)
    num_tokens = []
    for i in range(num_stages):
        if i > 0:
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1  # after downsampling (k3, s2, p1)
        num_tokens.append(h * w)
    return num_tokens


def _stage_args(v1: bool, block_norm: str, layer_scale_init_value: float | None, head_dim: int) -> dict:
    """What every stage takes from the layout: PoolFormer v1's (GroupNorm blocks, GELU MLPs with biases, layer
    scale, no downsampling norm) or the baselines'."""
    return dict(
        downsample_norm=not v1,
        norm="group" if v1 else block_norm,
        mlp_act="gelu" if v1 else "starrelu",
        mlp_bias=v1,
        layer_scale_init_value=layer_scale_init_value if v1 else None,
        head_dim=head_dim,
    )


def _make_stages(
    depths: Sequence[int],
    dims: Sequence[int],
    drop_path_rate: float,
    widths: list[dict],
    token_mixers: Sequence[str],
    res_scale_init_values: Sequence[float | None],
    num_tokens: Sequence[int],
    **stage_args,
) -> tuple[nn.Sequential, list[dict]]:
    """The stages and their feature info; ``widths``: the per-block width arguments, all stages in order."""
    total = sum(depths)  # stochastic depth grows linearly from 0 to drop_path_rate over all blocks
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    stages, feature_info = [], []
    for i in range(len(depths)):
        blocks = slice(sum(depths[:i]), sum(depths[: i + 1]))
        stages.append(
            MetaFormerStage(
                dims[i - 1] if i > 0 else dims[0],
                dims[i],
                depths[i],
                downsample=i > 0,
                dp_rates=rates[blocks],
                widths=widths[blocks],
                token_mixer=token_mixers[i],
                res_scale_init_value=res_scale_init_values[i],
                num_tokens=num_tokens[i],
                **stage_args,
            )
        )
        feature_info.append(dict(num_chs=dims[i], reduction=4 * 2**i, module=f"stages.{i}"))
    return nn.Sequential(*stages), feature_info


# --------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------


class MetaFormerPrunePlan(PrunePlan):
    """zoo.prune on MetaFormer: stage widths, MLP widths, SepConv widths and attention heads (the classifier keeps
    its width; RandFormer's token-mixing matrices are sized by tokens)."""

    def blocks(self) -> list[nn.Module]:
        return [b for stage in self.model.stages for b in stage.blocks]

    def ignored(self) -> list[nn.Module]:
        attn = [b.token_mixer.qkv for b in self.blocks() if isinstance(b.token_mixer, Attention)]
        return classifier_layers(self.model) + attn

    def ignored_params(self) -> list[nn.Parameter]:
        return [m.random_matrix for m in self.model.modules() if hasattr(m, "random_matrix")]

    def heads(self, ratio: float, importance: str, generator: torch.Generator, kept: set[int]) -> None:
        for b in self.blocks():
            if isinstance(b.token_mixer, Attention) and id(b.token_mixer.qkv) not in kept:
                fused_qkv_heads(b.token_mixer, b.token_mixer.qkv, b.token_mixer.proj, ratio, importance, generator)

    def mlps(self) -> list[nn.Module]:
        return [b.mlp.fc1 for b in self.blocks()]

    def finish(self) -> None:
        sync_stage_widths(self.model, [stage.blocks[0].mlp.fc1.in_features for stage in self.model.stages])

    def widths(self) -> dict:
        model, blocks = self.model, self.blocks()
        dims = [stage.blocks[0].mlp.fc1.in_features for stage in model.stages]
        args: dict = {"dims": dims, "mlp_hidden": [b.mlp.fc1.out_features for b in blocks]}
        mixer = per_block(
            [b.token_mixer.pwconv1.out_features if isinstance(b.token_mixer, SepConv) else None for b in blocks]
        )
        heads = per_block([b.token_mixer.num_heads if isinstance(b.token_mixer, Attention) else None for b in blocks])
        if mixer:
            args["mixer_hidden"] = mixer
        if isinstance(model.head.fc, MlpHead):
            args["head_hidden"] = model.head.fc.fc1.out_features
        if heads:
            args["num_heads"] = heads
        return args


class MetaFormer(VisionBackbone, nn.Module):
    """MetaFormer backbone + classifier covering PoolFormer v1 (``v1=True``) and the MetaFormer baselines.

    Args:
        depths, dims: blocks and channels per stage.
        token_mixers: per stage, one of identity, pool, random, sepconv, attention.
        v1: PoolFormer v1 layout: GroupNorm(1) block norms with bias, GELU MLP with biases, layer scale,
            no stem/downsampling norms, final GroupNorm on the full map before pooling.
        block_norm: for the baselines, 'spatial' (LayerNorm over H, W, C; identity/rand/poolformerv2) or
            'channel' (LayerNorm over C; convformer/caformer).
        layer_scale_init_value: v1 layer scale init (1e-5 for s12/s24, 1e-6 for the rest).
        res_scale_init_values: per-stage res-scale init, None for no res scale.
        mlp_head: ConvFormer/CAFormer MLP classifier head.
        img_size: input size that fixes RandomMixing's token counts (RandFormer only runs at this size).
        mlp_hidden, mixer_hidden, num_heads: per block (all stages in order), the MLP width, the SepConv
            mixer's width and the attention mixer's heads of a pruned model (``zoo.prune``); None (or a None
            entry) keeps the architecture's own; head_hidden: the MLP classifier head's width (4 x the last dim).
    """

    stage_output_fmt = "NHWC"  # the stages run channels-last; timm's list/dict/hook feature wrappers say so
    prune_plan = MetaFormerPrunePlan
    __jit_unused_properties__ = ["fixed_input_size"]

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (2, 2, 6, 2),
        dims: Sequence[int] = (64, 128, 320, 512),
        token_mixers: str | Sequence[str] = "pool",
        v1: bool = False,
        block_norm: str = "spatial",
        layer_scale_init_value: float | None = None,
        res_scale_init_values: Sequence[float | None] = (None, None, 1.0, 1.0),
        mlp_head: bool = False,
        img_size: int | tuple[int, int] = 224,
        head_dim: int = 32,
        drop_rate: float = 0.0,
        head_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        onednn_linear: bool | None = None,
        mlp_hidden: Sequence[int | None] | None = None,
        mixer_hidden: Sequence[int | None] | None = None,
        num_heads: Sequence[int | None] | None = None,
        head_hidden: int | None = None,
    ):
        super().__init__()
        check_head_args(num_classes, global_pool, GLOBAL_POOLS)
        check_drop_rates(drop_rate=drop_rate, head_dropout=head_dropout, drop_path_rate=drop_path_rate)
        if not isinstance(in_chans, int) or in_chans < 1:
            raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
        num_stages = len(depths)
        if len(dims) != num_stages:
            raise ValueError(f"depths and dims need one entry per stage, got {len(depths)} and {len(dims)}")
        if isinstance(token_mixers, str):
            token_mixers = (token_mixers,) * num_stages
        if v1:
            res_scale_init_values = (None,) * num_stages
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = dims[-1]
        self.grad_checkpointing = False

        self.stem = Stem(in_chans, dims[0], norm=not v1)
        num_tokens = _tokens_per_stage(img_size, num_stages)
        widths = _block_widths(sum(depths), mlp_hidden=mlp_hidden, mixer_hidden=mixer_hidden, num_heads=num_heads)
        self.stages, self.feature_info = _make_stages(
            depths,
            dims,
            drop_path_rate,
            widths,
            token_mixers=token_mixers,
            res_scale_init_values=res_scale_init_values,
            num_tokens=num_tokens,
            **_stage_args(v1, block_norm, layer_scale_init_value, head_dim),
        )
        self.head = MetaFormerHead(
            dims[-1],
            num_classes,
            norm_first=v1,
            mlp_head=mlp_head,
            drop_rate=drop_rate,
            head_dropout=head_dropout,
            head_hidden=head_hidden,
        )
        self.head.global_pool = global_pool
        self.apply(self._init_weights)
        if onednn_linear is not None:  # else each Linear takes ZOO_ONEDNN_LINEAR (default on)
            self.set_onednn_linear(onednn_linear)

    @staticmethod
    def _init_weights(m: nn.Module):
        # the authors' init: truncated normal(0.02) for linear (and, in the baselines, conv) weights, zero biases
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ---- what differs from the shared face (zoo.layers.VisionBackbone) ----------------------------------------
    def _to_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)  # (B, C, H, W) view, channels-last memory

    def _reset_head(self, num_classes: int, global_pool: str | None) -> None:
        self.head.reset(num_classes, global_pool, self.num_features)

    def _init_family_weights(self) -> None:
        self.apply(self._init_weights)

    @property
    def fixed_input_size(self) -> bool:
        """True when the architecture only takes its configured height and width (RandFormer's token-mixing
        matrices are sized by the token count)."""
        return any(isinstance(m, RandomMixing) for m in self.modules())

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)


# --------------------------------------------------------------------------------------------------------------
# Checkpoint conversion: the authors' layouts -> the zoo's (timm's)
# --------------------------------------------------------------------------------------------------------------


def _rename_poolformer_v1(key: str) -> str:
    """sail-sg/poolformer keys: network.{0,2,4,6}.j (blocks), network.{1,3,5}.proj (downsampling)."""
    key = key.replace("patch_embed.proj.", "stem.conv.")
    m = re.match(r"network\.(\d+)\.(.*)", key)
    if m:
        idx, rest = int(m.group(1)), m.group(2)
        if idx % 2 == 0:  # blocks of stage idx // 2
            j, rest = rest.split(".", 1)
            rest = re.sub(r"^layer_scale_(\d)", r"layer_scale\1.scale", rest)
            key = f"stages.{idx // 2}.blocks.{j}.{rest}"
        else:  # downsampling into stage (idx + 1) // 2
            key = f"stages.{(idx + 1) // 2}.downsample.{rest.replace('proj.', 'conv.')}"
    return _rename_head(key)


def _rename_baselines(key: str) -> str:
    """sail-sg/metaformer keys: downsample_layers.i.{conv,pre_norm,post_norm}, stages.i.j."""
    key = key.replace("downsample_layers.0.conv.", "stem.conv.").replace("downsample_layers.0.post_norm.", "stem.norm.")
    key = re.sub(r"^downsample_layers\.(\d+)\.pre_norm\.", r"stages.\1.downsample.norm.", key)
    key = re.sub(r"^downsample_layers\.(\d+)\.conv\.", r"stages.\1.downsample.conv.", key)
    key = re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", key)
    return _rename_head(key)


def _rename_head(key: str) -> str:
    """Authors' ``norm.*`` (final norm) -> ``head.norm.*``; ``head.*`` (Linear or MlpHead) -> ``head.fc.*``."""
    if key.startswith("head."):
        return "head.fc." + key[len("head.") :]
    if key.startswith("norm."):
        return "head." + key
    return key


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Convert a MetaFormer state dict of any supported origin to the zoo's keys and shapes (timm's).

    Origins: the authors' PoolFormer v1 files (``network.N.*``), the authors' baselines files
    (``downsample_layers.*``), both with linear pointwise weights of shape [out, in], and timm's checkpoints, which
    are the zoo's own layout. Shapes that differ only by singleton dims (linear vs conv 1x1) are reshaped; anything
    else is left for the loader to report.
    """
    if any(k.startswith("network.") for k in state_dict):
        rename = _rename_poolformer_v1
    elif any(k.startswith("downsample_layers.") for k in state_dict):
        rename = _rename_baselines
    else:
        rename = None
    target = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        k = rename(k) if rename else k
        t = target.get(k)
        if (
            t is not None
            and v.shape != t.shape
            and v.numel() == t.numel()
            and [d for d in v.shape if d != 1] == [d for d in t.shape if d != 1]
        ):
            v = v.reshape(t.shape)
        out[k] = v
    return out


# --------------------------------------------------------------------------------------------------------------
# Pretrained configs and registered models
# --------------------------------------------------------------------------------------------------------------

FAMILY = dict(
    name="metaformer",
    task="image-classification",
)

_V1_PAPER = dict(
    paper_name="MetaFormer Is Actually What You Need for Vision",
    paper_ids="arXiv:2111.11418",
    origin_url="https://github.com/sail-sg/poolformer",
)
_V2_PAPER = dict(
    paper_name="MetaFormer Baselines for Vision",
    paper_ids="arXiv:2210.13452",
    origin_url="https://github.com/sail-sg/metaformer",
)


def _cfg(paper: dict, **kwargs) -> dict:
    return imagenet_cfg(**{"crop_pct": 1.0, "license": "apache-2.0", **paper, **kwargs})


def _timm_weights(name: str, origin: str, tag: str = "sail_in1k") -> dict:
    # timm's Hub copies of the authors' weights (timm key layout; converted on load)
    data = {
        "sail_in1k": "ImageNet-1k",
        "sail_in1k_384": "ImageNet-1k at 384x384",
        "sail_in22k_ft_in1k": "ImageNet-21k, fine-tuned on ImageNet-1k,",
        "sail_in22k_ft_in1k_384": "ImageNet-21k, fine-tuned on ImageNet-1k at 384x384,",
        "sail_in22k": "ImageNet-21k",
    }[tag]
    return dict(
        hf_hub_id=f"timm/{name}.{tag}",
        hf_hub_filename="model.safetensors",
        notes=(f"{data} weights trained by the authors ({origin}), as republished by timm",),
    )


# ConvFormer's and CAFormer's releases besides ImageNet-1k at 224 (the default): tag -> what differs in the cfg
_CONVFORMER_TAGS = {
    "sail_in1k_384": dict(input_size=(3, 384, 384), pool_size=(12, 12)),
    "sail_in22k_ft_in1k": {},
    "sail_in22k_ft_in1k_384": dict(input_size=(3, 384, 384), pool_size=(12, 12)),
    "sail_in22k": dict(num_classes=21841),
}


def _sail_weights(family: str, name: str) -> dict:
    # the authors' own files (flat state dicts, authors' key layout; converted on load)
    return dict(
        hf_hub_id="sail/dl",
        hf_hub_filename=f"{family}/{name}.pth",
        notes=("ImageNet-1k weights released by the authors at https://huggingface.co/sail/dl",),
    )


default_cfgs: dict[str, dict] = {}
for _n in ("s12", "s24", "s36", "m36", "m48"):
    default_cfgs[f"poolformer_{_n}"] = _cfg(
        _V1_PAPER, crop_pct=0.9 if _n[0] == "s" else 0.95, **_timm_weights(f"poolformer_{_n}", "sail-sg/poolformer")
    )
    default_cfgs[f"poolformerv2_{_n}"] = _cfg(_V2_PAPER, **_timm_weights(f"poolformerv2_{_n}", "sail-sg/metaformer"))
    default_cfgs[f"identityformer_{_n}"] = _cfg(_V2_PAPER, **_sail_weights("identityformer", f"identityformer_{_n}"))
    default_cfgs[f"randformer_{_n}"] = _cfg(
        _V2_PAPER, fixed_input_size=True, **_sail_weights("randformer", f"randformer_{_n}")
    )
for _n in ("s18", "s36", "m36", "b36"):
    for _fam in ("convformer", "caformer"):
        default_cfgs[f"{_fam}_{_n}"] = _cfg(
            _V2_PAPER, classifier="head.fc.fc2", **_timm_weights(f"{_fam}_{_n}", "sail-sg/metaformer")
        )
        # the authors' other releases of the same network, as timm tags its copies of them (name.tag)
        for _tag, _extra in _CONVFORMER_TAGS.items():
            default_cfgs[f"{_fam}_{_n}.{_tag}"] = _cfg(
                _V2_PAPER,
                classifier="head.fc.fc2",
                **{**_timm_weights(f"{_fam}_{_n}", "sail-sg/metaformer", _tag), **_extra},
            )

# Reference figures: exact parameter counts and fvcore MACs (1x3x224x224, one multiply-add = 1) of the
# authors' models, and the papers' ImageNet-1k top-1.
reference_figures: dict[str, dict] = reference_table(
    [
        ("poolformer_s12", 11_915_176, 1_822_678_528, 77.2),
        ("poolformer_s24", 21_388_968, 3_412_906_496, 80.3),
        ("poolformer_s36", 30_862_760, 5_003_134_464, 81.4),
        ("poolformer_m36", 56_172_520, 8_801_876_736, 82.1),
        ("poolformer_m48", 73_473_448, 11_590_708_992, 82.5),
        ("identityformer_s12", 11_891_712, 1_812_269_568, 74.6),
        ("identityformer_s24", 21_341_464, 3_392_211_456, 78.2),
        ("identityformer_s36", 30_791_216, 4_972_153_344, 79.3),
        ("identityformer_m36", 56_077_168, 8_758_791_936, 80.0),
        ("identityformer_m48", 73_346_056, 11_533_324_032, 80.4),
        ("randformer_s12", 12_127_010, 1_888_498_568, 76.6),
        ("randformer_s24", 21_812_060, 3_544_669_456, 78.2),
        ("randformer_s36", 31_497_110, 5_200_840_344, 79.5),
        ("randformer_m36", 56_783_062, 9_035_355_936, 81.2),
        ("randformer_m48", 74_287_248, 11_902_076_032, 81.4),
        ("poolformerv2_s12", 11_891_712, 1_812_269_568, 78.0),
        ("poolformerv2_s24", 21_341_464, 3_392_211_456, 80.7),
        ("poolformerv2_s36", 30_791_216, 4_972_153_344, 81.6),
        ("poolformerv2_m36", 56_077_168, 8_758_791_936, 82.2),
        ("poolformerv2_m48", 73_346_056, 11_533_324_032, 82.6),
        ("convformer_s18", 26_774_448, 3_956_426_240, 83.0),
        ("convformer_s36", 40_012_152, 7_669_801_472, 84.1),
        ("convformer_m36", 57_051_640, 12_883_837_248, 84.5),
        ("convformer_b36", 99_882_616, 22_684_751_616, 84.8),
        ("caformer_s18", 26_341_656, 4_122_383_360, 83.6),
        ("caformer_s36", 39_297_102, 8_001_715_712, 84.5),
        ("caformer_m36", 56_204_878, 13_282_134_336, 85.2),
        ("caformer_b36", 98_753_614, 23_215_814_400, 85.5),
    ]
)


def _create_metaformer(variant: str, pretrained: bool, model_args: dict, kwargs: dict) -> MetaFormer:
    """The variant's architecture arguments, overridable as in timm (e.g. smaller ``depths``/``dims``)."""
    return build_vision_model(
        MetaFormer, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **{**model_args, **kwargs}
    )


_S12, _S24, _S36, _M48 = (2, 2, 6, 2), (4, 4, 12, 4), (6, 6, 18, 6), (8, 8, 24, 8)
_S_DIMS, _M_DIMS = (64, 128, 320, 512), (96, 192, 384, 768)
_C18, _C36 = (3, 3, 9, 3), (3, 12, 18, 3)
_RAND = ("identity", "identity", "random", "random")
_CA = ("sepconv", "sepconv", "attention", "attention")


@register_model
def poolformer_s12(pretrained=False, **kwargs):
    return _create_metaformer(
        "poolformer_s12", pretrained, dict(depths=_S12, dims=_S_DIMS, v1=True, layer_scale_init_value=1e-5), kwargs
    )


@register_model
def poolformer_s24(pretrained=False, **kwargs):
    return _create_metaformer(
        "poolformer_s24", pretrained, dict(depths=_S24, dims=_S_DIMS, v1=True, layer_scale_init_value=1e-5), kwargs
    )


@register_model
def poolformer_s36(pretrained=False, **kwargs):
    return _create_metaformer(
        "poolformer_s36", pretrained, dict(depths=_S36, dims=_S_DIMS, v1=True, layer_scale_init_value=1e-6), kwargs
    )


@register_model
def poolformer_m36(pretrained=False, **kwargs):
    return _create_metaformer(
        "poolformer_m36", pretrained, dict(depths=_S36, dims=_M_DIMS, v1=True, layer_scale_init_value=1e-6), kwargs
    )


@register_model
def poolformer_m48(pretrained=False, **kwargs):
    return _create_metaformer(
        "poolformer_m48", pretrained, dict(depths=_M48, dims=_M_DIMS, v1=True, layer_scale_init_value=1e-6), kwargs
    )


@register_model
def identityformer_s12(pretrained=False, **kwargs):
    return _create_metaformer(
        "identityformer_s12", pretrained, dict(depths=_S12, dims=_S_DIMS, token_mixers="identity"), kwargs
    )


@register_model
def identityformer_s24(pretrained=False, **kwargs):
    return _create_metaformer(
        "identityformer_s24", pretrained, dict(depths=_S24, dims=_S_DIMS, token_mixers="identity"), kwargs
    )


@register_model
def identityformer_s36(pretrained=False, **kwargs):
    return _create_metaformer(
        "identityformer_s36", pretrained, dict(depths=_S36, dims=_S_DIMS, token_mixers="identity"), kwargs
    )


@register_model
def identityformer_m36(pretrained=False, **kwargs):
    return _create_metaformer(
        "identityformer_m36", pretrained, dict(depths=_S36, dims=_M_DIMS, token_mixers="identity"), kwargs
    )


@register_model
def identityformer_m48(pretrained=False, **kwargs):
    return _create_metaformer(
        "identityformer_m48", pretrained, dict(depths=_M48, dims=_M_DIMS, token_mixers="identity"), kwargs
    )


@register_model
def randformer_s12(pretrained=False, **kwargs):
    return _create_metaformer("randformer_s12", pretrained, dict(depths=_S12, dims=_S_DIMS, token_mixers=_RAND), kwargs)


@register_model
def randformer_s24(pretrained=False, **kwargs):
    return _create_metaformer("randformer_s24", pretrained, dict(depths=_S24, dims=_S_DIMS, token_mixers=_RAND), kwargs)


@register_model
def randformer_s36(pretrained=False, **kwargs):
    return _create_metaformer("randformer_s36", pretrained, dict(depths=_S36, dims=_S_DIMS, token_mixers=_RAND), kwargs)


@register_model
def randformer_m36(pretrained=False, **kwargs):
    return _create_metaformer("randformer_m36", pretrained, dict(depths=_S36, dims=_M_DIMS, token_mixers=_RAND), kwargs)


@register_model
def randformer_m48(pretrained=False, **kwargs):
    return _create_metaformer("randformer_m48", pretrained, dict(depths=_M48, dims=_M_DIMS, token_mixers=_RAND), kwargs)


@register_model
def poolformerv2_s12(pretrained=False, **kwargs):
    return _create_metaformer(
        "poolformerv2_s12", pretrained, dict(depths=_S12, dims=_S_DIMS, token_mixers="pool"), kwargs
    )


@register_model
def poolformerv2_s24(pretrained=False, **kwargs):
    return _create_metaformer(
        "poolformerv2_s24", pretrained, dict(depths=_S24, dims=_S_DIMS, token_mixers="pool"), kwargs
    )


@register_model
def poolformerv2_s36(pretrained=False, **kwargs):
    return _create_metaformer(
        "poolformerv2_s36", pretrained, dict(depths=_S36, dims=_S_DIMS, token_mixers="pool"), kwargs
    )


@register_model
def poolformerv2_m36(pretrained=False, **kwargs):
    return _create_metaformer(
        "poolformerv2_m36", pretrained, dict(depths=_S36, dims=_M_DIMS, token_mixers="pool"), kwargs
    )


@register_model
def poolformerv2_m48(pretrained=False, **kwargs):
    return _create_metaformer(
        "poolformerv2_m48", pretrained, dict(depths=_M48, dims=_M_DIMS, token_mixers="pool"), kwargs
    )


@register_model
def convformer_s18(pretrained=False, **kwargs):
    return _create_metaformer(
        "convformer_s18",
        pretrained,
        dict(depths=_C18, dims=_S_DIMS, token_mixers="sepconv", block_norm="channel", mlp_head=True),
        kwargs,
    )


@register_model
def convformer_s36(pretrained=False, **kwargs):
    return _create_metaformer(
        "convformer_s36",
        pretrained,
        dict(depths=_C36, dims=_S_DIMS, token_mixers="sepconv", block_norm="channel", mlp_head=True),
        kwargs,
    )


@register_model
def convformer_m36(pretrained=False, **kwargs):
    return _create_metaformer(
        "convformer_m36",
        pretrained,
        dict(depths=_C36, dims=(96, 192, 384, 576), token_mixers="sepconv", block_norm="channel", mlp_head=True),
        kwargs,
    )


@register_model
def convformer_b36(pretrained=False, **kwargs):
    return _create_metaformer(
        "convformer_b36",
        pretrained,
        dict(depths=_C36, dims=(128, 256, 512, 768), token_mixers="sepconv", block_norm="channel", mlp_head=True),
        kwargs,
    )


@register_model
def caformer_s18(pretrained=False, **kwargs):
    return _create_metaformer(
        "caformer_s18",
        pretrained,
        dict(depths=_C18, dims=_S_DIMS, token_mixers=_CA, block_norm="channel", mlp_head=True),
        kwargs,
    )


@register_model
def caformer_s36(pretrained=False, **kwargs):
    return _create_metaformer(
        "caformer_s36",
        pretrained,
        dict(depths=_C36, dims=_S_DIMS, token_mixers=_CA, block_norm="channel", mlp_head=True),
        kwargs,
    )


@register_model
def caformer_m36(pretrained=False, **kwargs):
    return _create_metaformer(
        "caformer_m36",
        pretrained,
        dict(depths=_C36, dims=(96, 192, 384, 576), token_mixers=_CA, block_norm="channel", mlp_head=True),
        kwargs,
    )


@register_model
def caformer_b36(pretrained=False, **kwargs):
    return _create_metaformer(
        "caformer_b36",
        pretrained,
        dict(depths=_C36, dims=(128, 256, 512, 768), token_mixers=_CA, block_norm="channel", mlp_head=True),
        kwargs,
    )
