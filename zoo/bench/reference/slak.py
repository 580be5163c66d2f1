"""Plain functional rendition of the authors' SLaK forward pass.

SLaK is "More ConvNets in the 2020s: Scaling up Kernels Beyond 51x51 using Sparsity" (Liu et al., ICLR 2023);
the authors' code is github.com/VITA-Group/SLaK, file ``models/SLaK.py``. The parity tests use this module as an
independent reference and the SLaK benchmark uses it as "the authors' formulation". It repeats the authors'
numerics step by step, in eval mode, with ``torch`` and ``torch.nn.functional`` only (no nn.Module, no fusions):

* Stem: conv 4x4 stride 4 (bias), then the authors' channels-first LayerNorm: ``u = mean_c(x)``,
  ``s = mean_c((x - u)^2)`` (biased), ``(x - u) / sqrt(s + 1e-6)``, then ``weight * x + bias``.
* Downsampling i = 1..3: channels-first LayerNorm, then conv 2x2 stride 2 (bias).
* Block: ``x + gamma * pwconv2(GELU(pwconv1(LN(LK(x)))))`` where the LayerNorm runs on (N, H, W, C) with eps 1e-6,
  ``pwconv1/2`` are Linear layers (MLP ratio 4) and GELU is exact.
* LK is the decomposed large kernel with three parallel depthwise branches, each conv (no bias) then BatchNorm
  with running statistics (eps 1e-5): ``LoRA1`` (K x 5), ``LoRA2`` (5 x K) and ``small_conv`` (5 x 5), summed.
  Convolutions are ``F.conv2d(..., groups=C)`` with per-axis "same" padding ``(kh // 2, kw // 2)`` -- what the
  authors' CUDA kernel does whatever padding it is given.
* Head: global average pool, LayerNorm (eps 1e-6), Linear.

State dicts use the AUTHORS' key layout (``downsample_layers.*``, ``stages.S.B.large_kernel.LoRA1.conv.weight``,
...). ``make_authors_state_dict`` builds one with realistic scales: layer scale and norm weights near 1 (with
the authors' 1e-6 layer scale init every block would vanish and a parity check would prove nothing), BN
running statistics away from (0, 1).
"""

import math

import torch
import torch.nn.functional as F

__all__ = ["SLAK_ARCHS", "arch", "count_params", "large_kernel", "make_authors_state_dict", "reference_forward"]

_T = dict(depths=(3, 3, 9, 3), base_dims=(96, 192, 384, 768))
_S = dict(depths=(3, 3, 27, 3), base_dims=(96, 192, 384, 768))
_B = dict(depths=(3, 3, 27, 3), base_dims=(128, 256, 512, 1024))

SLAK_ARCHS: dict[str, dict] = {
    "slak_tiny": dict(**_T, kernel_size=(51, 49, 47, 13, 5)),
    "slak_small": dict(**_S, kernel_size=(51, 49, 47, 13, 5)),
    "slak_base": dict(**_B, kernel_size=(51, 49, 47, 13, 5)),
    "slak_tiny_31": dict(**_T, kernel_size=(31, 29, 27, 13, 5)),
    "slak_tiny_61": dict(**_T, kernel_size=(61, 59, 57, 13, 5)),
}


def arch(name_or_spec: str | dict, width_factor: float = 1.3) -> dict:
    """``{depths, dims, kernel_size}`` for a registered name or a spec with ``depths``, ``base_dims`` (or
    ``dims``) and ``kernel_size``; widths are ``int(d * width_factor)``, truncated as the authors do."""
    spec = SLAK_ARCHS[name_or_spec] if isinstance(name_or_spec, str) else dict(name_or_spec)
    dims = spec.get("dims") or [int(d * spec.get("width_factor", width_factor)) for d in spec["base_dims"]]
    return dict(
        depths=tuple(spec["depths"]),
        dims=tuple(dims),
        kernel_size=tuple(spec["kernel_size"]),
        in_chans=spec.get("in_chans", 3),
        num_classes=spec.get("num_classes", 1000),
    )


def _branch_shapes(dim: int, k: int, small: int) -> dict[str, tuple[int, int]]:
    return {"LoRA1": (k, small), "LoRA2": (small, k), "small_conv": (small, small)}


def make_authors_state_dict(
    name_or_spec: str | dict, seed: int = 0, num_classes: int | None = None, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """A random state dict in the authors' layout with realistic scales (see the module docstring)."""
    a = arch(name_or_spec)
    if num_classes is not None:
        a["num_classes"] = num_classes
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    def weight(*shape):
        fan_in = math.prod(shape[1:])
        return randn(*shape) / math.sqrt(fan_in)

    def near_one(n):
        return 1.0 + 0.1 * randn(n)

    def bias(n):
        return 0.05 * randn(n)

    sd: dict[str, torch.Tensor] = {}
    dims, small = a["dims"], a["kernel_size"][-1]
    sd["downsample_layers.0.0.weight"] = weight(dims[0], a["in_chans"], 4, 4)
    sd["downsample_layers.0.0.bias"] = bias(dims[0])
    sd["downsample_layers.0.1.weight"], sd["downsample_layers.0.1.bias"] = near_one(dims[0]), bias(dims[0])
    for i in range(1, 4):
        sd[f"downsample_layers.{i}.0.weight"] = near_one(dims[i - 1])
        sd[f"downsample_layers.{i}.0.bias"] = bias(dims[i - 1])
        sd[f"downsample_layers.{i}.1.weight"] = weight(dims[i], dims[i - 1], 2, 2)
        sd[f"downsample_layers.{i}.1.bias"] = bias(dims[i])
    for s, (depth, dim) in enumerate(zip(a["depths"], dims)):
        for b in range(depth):
            p = f"stages.{s}.{b}."
            sd[p + "gamma"] = near_one(dim)
            for branch, (kh, kw) in _branch_shapes(dim, a["kernel_size"][s], small).items():
                if branch == "small_conv" and small >= a["kernel_size"][s]:
                    continue
                q = f"{p}large_kernel.{branch}."
                sd[q + "conv.weight"] = weight(dim, 1, kh, kw)
                sd[q + "bn.weight"], sd[q + "bn.bias"] = near_one(dim), bias(dim)
                sd[q + "bn.running_mean"] = 0.1 * randn(dim)
                sd[q + "bn.running_var"] = 0.5 + torch.rand(dim, generator=gen, dtype=dtype)
                sd[q + "bn.num_batches_tracked"] = torch.tensor(1000)
            sd[p + "norm.weight"], sd[p + "norm.bias"] = near_one(dim), bias(dim)
            sd[p + "pwconv1.weight"], sd[p + "pwconv1.bias"] = weight(4 * dim, dim), bias(4 * dim)
            sd[p + "pwconv2.weight"], sd[p + "pwconv2.bias"] = weight(dim, 4 * dim), bias(dim)
    sd["norm.weight"], sd["norm.bias"] = near_one(dims[-1]), bias(dims[-1])
    sd["head.weight"], sd["head.bias"] = weight(a["num_classes"], dims[-1]), bias(a["num_classes"])
    return sd


def count_params(state_dict: dict[str, torch.Tensor]) -> int:
    """Parameters of an authors' state dict (BN running statistics are buffers, not parameters)."""
    return sum(
        v.numel()
        for k, v in state_dict.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )


def _layer_norm_channels_first(x, weight, bias, eps=1e-6):
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    x = (x - u) / torch.sqrt(s + eps)
    return weight[:, None, None] * x + bias[:, None, None]


def _conv_bn(x, sd, prefix):
    w = sd[prefix + "conv.weight"]
    kh, kw = w.shape[-2:]
    y = F.conv2d(x, w, None, 1, (kh // 2, kw // 2), 1, x.shape[1])
    return F.batch_norm(
        y,
        sd[prefix + "bn.running_mean"],
        sd[prefix + "bn.running_var"],
        sd[prefix + "bn.weight"],
        sd[prefix + "bn.bias"],
        False,
        0.0,
        1e-5,
    )


def large_kernel(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """The authors' three-branch module (``ReparamLargeKernelConv`` with ``Decom=True``) at ``prefix``."""
    out = _conv_bn(x, sd, prefix + "LoRA1.") + _conv_bn(x, sd, prefix + "LoRA2.")
    if prefix + "small_conv.conv.weight" in sd:
        out = out + _conv_bn(x, sd, prefix + "small_conv.")
    return out


def _block(x, sd, p):
    shortcut = x
    x = large_kernel(x, sd, p + "large_kernel.")
    x = x.permute(0, 2, 3, 1)
    x = F.layer_norm(x, (x.shape[-1],), sd[p + "norm.weight"], sd[p + "norm.bias"], 1e-6)
    x = F.linear(x, sd[p + "pwconv1.weight"], sd[p + "pwconv1.bias"])
    x = F.gelu(x)
    x = F.linear(x, sd[p + "pwconv2.weight"], sd[p + "pwconv2.bias"])
    x = sd[p + "gamma"] * x
    return shortcut + x.permute(0, 3, 1, 2)


def _num_blocks(sd, stage):
    return len({k.split(".")[2] for k in sd if k.startswith(f"stages.{stage}.")})


def reference_forward(
    state_dict: dict[str, torch.Tensor], x: torch.Tensor, return_features: bool = False
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits (B, num_classes) of the authors' model with ``state_dict``; optionally the 4 stage outputs."""
    sd = state_dict
    feats = []
    for i in range(4):
        if i == 0:
            x = F.conv2d(x, sd["downsample_layers.0.0.weight"], sd["downsample_layers.0.0.bias"], 4)
            x = _layer_norm_channels_first(x, sd["downsample_layers.0.1.weight"], sd["downsample_layers.0.1.bias"])
        else:
            x = _layer_norm_channels_first(
                x, sd[f"downsample_layers.{i}.0.weight"], sd[f"downsample_layers.{i}.0.bias"]
            )
            x = F.conv2d(x, sd[f"downsample_layers.{i}.1.weight"], sd[f"downsample_layers.{i}.1.bias"], 2)
        for b in range(_num_blocks(sd, i)):
            x = _block(x, sd, f"stages.{i}.{b}.")
        feats.append(x)
    pooled = F.layer_norm(x.mean([-2, -1]), (x.shape[1],), sd["norm.weight"], sd["norm.bias"], 1e-6)
    logits = F.linear(pooled, sd["head.weight"], sd["head.bias"])
    return (logits, feats) if return_features else logits


def _self_check():
    for name in SLAK_ARCHS:
        sd = make_authors_state_dict(name)
        print(f"{name}: {count_params(sd):,} parameters")
    sd = make_authors_state_dict("slak_tiny")
    with torch.inference_mode():
        out = reference_forward(sd, torch.randn(1, 3, 224, 224))
    print("slak_tiny logits", tuple(out.shape), f"std {out.std().item():.3f}")


if __name__ == "__main__":
    _self_check()
