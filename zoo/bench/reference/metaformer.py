"""Independent reference implementation of the MetaFormer family forward pass.

This module is used ONLY by the parity tests.  It is an independent, plain,
functional transcription of the numerics of the authors' original code:

* PoolFormer v1 -- sail-sg/poolformer ``models/poolformer.py``
  (NCHW, GroupNorm(1) block norms, layer scale, GELU MLP as 1x1 convs,
  final GroupNorm on the full map *before* global pooling).
* MetaFormer baselines -- sail-sg/metaformer ``metaformer_baselines.py``
  (IdentityFormer, RandFormer, PoolFormerV2, ConvFormer, CAFormer; NHWC inside
  the stages, no-bias LayerNorms, StarReLU, res-scale in stages 3-4, global
  pooling *before* the final LayerNorm, Linear or MlpHead classifier).

It deliberately does not share code with ``zoo`` or with timm and uses no
fusions or algebraic shortcuts: every layer is written out step by step with
``torch`` / ``torch.nn.functional`` so that it is obviously the authors'
computation.  State dicts use the AUTHORS' key layout (not timm's, not zoo's).

Public API
----------
``ARCHS``                         name -> architecture spec (dict) for all 28 variants
``make_authors_state_dict(name, num_classes=1000, seed=0)``
                                  random state dict in the authors' key layout,
                                  with realistic (fan-in scaled) magnitudes
``reference_forward(name, state_dict, x, return_features=False)``
                                  logits (B, num_classes) [, list of 4 NCHW stage outputs]
``AUTHORS_PARAM_COUNTS``          parameter counts measured with the authors' code

Run ``python -m zoo.bench.reference.metaformer [--all]`` for a self-check
(parameter counts, forwards, and a cross-check against timm where timm has the
variant; ``--all`` cross-checks every timm variant instead of only s12/s18).
"""

import math

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# Architecture table
# ---------------------------------------------------------------------------
#
# Every spec has:
#   family       "poolformer_v1" (sail-sg/poolformer) or "metaformer" (sail-sg/metaformer)
#   depths       blocks per stage
#   dims         channels per stage
#   mixers       token mixer per stage: "pool" | "identity" | "random" | "sepconv" | "attention"
#   block_norm   "groupnorm1"  : nn.GroupNorm(1, C), eps 1e-5, weight + bias   (v1)
#                "ln_hwc"      : LayerNormGeneral over (H, W, C), eps 1e-6, weight [C], no bias
#                "ln_c"        : LayerNormWithoutBias = F.layer_norm over C, eps 1e-6, weight, no bias
#                                (stem / downsampling norms are LayerNormGeneral over C in all baselines)
#   head         "linear" | "mlp"  (MlpHead: fc1 -> SquaredReLU -> LayerNorm(eps 1e-5) -> fc2)
#   res_scale    per stage: whether res_scale1/2 exist (baselines: stages 3, 4 only)
#   layer_scale_init  v1 only: authors' init value of layer_scale_1/2 (informational;
#                     the random dicts below do NOT use it, see make_authors_state_dict)
#   random_tokens per stage: N of RandomMixing's N x N matrix (None where unused)

_S12 = dict(depths=(2, 2, 6, 2), dims=(64, 128, 320, 512))
_S24 = dict(depths=(4, 4, 12, 4), dims=(64, 128, 320, 512))
_S36 = dict(depths=(6, 6, 18, 6), dims=(64, 128, 320, 512))
_M36 = dict(depths=(6, 6, 18, 6), dims=(96, 192, 384, 768))
_M48 = dict(depths=(8, 8, 24, 8), dims=(96, 192, 384, 768))

_CS18 = dict(depths=(3, 3, 9, 3), dims=(64, 128, 320, 512))
_CS36 = dict(depths=(3, 12, 18, 3), dims=(64, 128, 320, 512))
_CM36 = dict(depths=(3, 12, 18, 3), dims=(96, 192, 384, 576))
_CB36 = dict(depths=(3, 12, 18, 3), dims=(128, 256, 512, 768))

_V1_LAYER_SCALE = {"s12": 1e-5, "s24": 1e-5, "s36": 1e-6, "m36": 1e-6, "m48": 1e-6}
_SIZES_12_48 = {"s12": _S12, "s24": _S24, "s36": _S36, "m36": _M36, "m48": _M48}
_SIZES_18_36 = {"s18": _CS18, "s36": _CS36, "m36": _CM36, "b36": _CB36}

ARCHS = {}

for _size, _cfg in _SIZES_12_48.items():
    ARCHS["poolformer_" + _size] = dict(
        family="poolformer_v1",
        depths=_cfg["depths"],
        dims=_cfg["dims"],
        mixers=("pool", "pool", "pool", "pool"),
        block_norm="groupnorm1",
        head="linear",
        res_scale=(False, False, False, False),
        layer_scale_init=_V1_LAYER_SCALE[_size],
        random_tokens=(None, None, None, None),
    )
for _prefix, _mixers, _tokens in (
    ("identityformer_", ("identity",) * 4, (None,) * 4),
    ("randformer_", ("identity", "identity", "random", "random"), (None, None, 196, 49)),
    ("poolformerv2_", ("pool",) * 4, (None,) * 4),
):
    for _size, _cfg in _SIZES_12_48.items():
        ARCHS[_prefix + _size] = dict(
            family="metaformer",
            depths=_cfg["depths"],
            dims=_cfg["dims"],
            mixers=_mixers,
            block_norm="ln_hwc",
            head="linear",
            res_scale=(False, False, True, True),
            layer_scale_init=None,
            random_tokens=_tokens,
        )
for _prefix, _mixers in (
    ("convformer_", ("sepconv",) * 4),
    ("caformer_", ("sepconv", "sepconv", "attention", "attention")),
):
    for _size, _cfg in _SIZES_18_36.items():
        ARCHS[_prefix + _size] = dict(
            family="metaformer",
            depths=_cfg["depths"],
            dims=_cfg["dims"],
            mixers=_mixers,
            block_norm="ln_c",
            head="mlp",
            res_scale=(False, False, True, True),
            layer_scale_init=None,
            random_tokens=(None,) * 4,
        )

MLP_RATIO = 4
SEPCONV_EXPANSION = 2
SEPCONV_KERNEL = 7
ATTN_HEAD_DIM = 32

# Parameter counts measured with the authors' original code
# (sum(p.numel() for p in model.parameters()), randformer's frozen matrices included).
AUTHORS_PARAM_COUNTS = {
    "poolformer_s12": 11_915_176,
    "poolformer_s24": 21_388_968,
    "poolformer_s36": 30_862_760,
    "poolformer_m36": 56_172_520,
    "poolformer_m48": 73_473_448,
    "identityformer_s12": 11_891_712,
    "identityformer_s24": 21_341_464,
    "identityformer_s36": 30_791_216,
    "identityformer_m36": 56_077_168,
    "identityformer_m48": 73_346_056,
    "randformer_s12": 12_127_010,
    "randformer_s24": 21_812_060,
    "randformer_s36": 31_497_110,
    "randformer_m36": 56_783_062,
    "randformer_m48": 74_287_248,
    "poolformerv2_s12": 11_891_712,
    "poolformerv2_s24": 21_341_464,
    "poolformerv2_s36": 30_791_216,
    "poolformerv2_m36": 56_077_168,
    "poolformerv2_m48": 73_346_056,
    "convformer_s18": 26_774_448,
    "convformer_s36": 40_012_152,
    "convformer_m36": 57_051_640,
    "convformer_b36": 99_882_616,
    "caformer_s18": 26_341_656,
    "caformer_s36": 39_297_102,
    "caformer_m36": 56_204_878,
    "caformer_b36": 98_753_614,
}

assert set(AUTHORS_PARAM_COUNTS) == set(ARCHS) and len(ARCHS) == 28


# ---------------------------------------------------------------------------
# Random state dicts in the authors' key layout
# ---------------------------------------------------------------------------


class _RandomFiller:
    """Creates tensors with realistic magnitudes from one torch.Generator.

    * conv / linear weights: N(0, 1 / fan_in), fan_in = (in_channels / groups) * kh * kw
    * conv / linear biases:  N(0, 0.05^2)
    * norm weights:          1 + 0.1 * N(0, 1);  norm biases: 0.1 * N(0, 1)
    * layer / res scales:    1 + 0.1 * N(0, 1)
    * StarReLU scale / bias: 1 + 0.1 * N(0, 1) / 0.1 * N(0, 1)
    * random mixing matrix:  softmax(U(0, 1)^{N x N}, dim=-1)
    """

    def __init__(self, seed):
        self.gen = torch.Generator(device="cpu")
        self.gen.manual_seed(seed)
        self.sd = {}

    def _randn(self, *shape):
        return torch.randn(*shape, generator=self.gen, dtype=torch.float32)

    def weight(self, key, *shape):
        # shape = (out, in_per_group, kh, kw) or (out, in)
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        self.sd[key] = self._randn(*shape) / math.sqrt(fan_in)

    def bias(self, key, n):
        self.sd[key] = 0.05 * self._randn(n)

    def norm_weight(self, key, n):
        self.sd[key] = 1.0 + 0.1 * self._randn(n)

    def norm_bias(self, key, n):
        self.sd[key] = 0.1 * self._randn(n)

    def scale(self, key, n):
        self.sd[key] = 1.0 + 0.1 * self._randn(n)

    def star_relu(self, prefix):
        self.sd[prefix + ".scale"] = 1.0 + 0.1 * self._randn(1)
        self.sd[prefix + ".bias"] = 0.1 * self._randn(1)

    def random_matrix(self, key, n):
        u = torch.rand(n, n, generator=self.gen, dtype=torch.float32)
        self.sd[key] = torch.softmax(u, dim=-1)


def _v1_state_dict(arch, num_classes, f):
    depths, dims = arch["depths"], arch["dims"]
    f.weight("patch_embed.proj.weight", dims[0], 3, 7, 7)
    f.bias("patch_embed.proj.bias", dims[0])
    for i in range(4):
        c = dims[i]
        hidden = MLP_RATIO * c
        for j in range(depths[i]):
            p = "network.%d.%d." % (2 * i, j)
            # direct parameters of the block come first in the authors' state_dict
            f.scale(p + "layer_scale_1", c)
            f.scale(p + "layer_scale_2", c)
            f.norm_weight(p + "norm1.weight", c)
            f.norm_bias(p + "norm1.bias", c)
            f.norm_weight(p + "norm2.weight", c)
            f.norm_bias(p + "norm2.bias", c)
            f.weight(p + "mlp.fc1.weight", hidden, c, 1, 1)
            f.bias(p + "mlp.fc1.bias", hidden)
            f.weight(p + "mlp.fc2.weight", c, hidden, 1, 1)
            f.bias(p + "mlp.fc2.bias", c)
        if i < 3:
            p = "network.%d.proj." % (2 * i + 1)
            f.weight(p + "weight", dims[i + 1], c, 3, 3)
            f.bias(p + "bias", dims[i + 1])
    f.norm_weight("norm.weight", dims[3])
    f.norm_bias("norm.bias", dims[3])
    f.weight("head.weight", num_classes, dims[3])
    f.bias("head.bias", num_classes)


def _metaformer_state_dict(arch, num_classes, f):
    depths, dims = arch["depths"], arch["dims"]
    # stem: conv then post-norm
    f.weight("downsample_layers.0.conv.weight", dims[0], 3, 7, 7)
    f.bias("downsample_layers.0.conv.bias", dims[0])
    f.norm_weight("downsample_layers.0.post_norm.weight", dims[0])
    # downsampling: pre-norm then conv
    for i in range(1, 4):
        p = "downsample_layers.%d." % i
        f.norm_weight(p + "pre_norm.weight", dims[i - 1])
        f.weight(p + "conv.weight", dims[i], dims[i - 1], 3, 3)
        f.bias(p + "conv.bias", dims[i])
    for i in range(4):
        c = dims[i]
        hidden = MLP_RATIO * c
        mixer = arch["mixers"][i]
        for j in range(depths[i]):
            p = "stages.%d.%d." % (i, j)
            f.norm_weight(p + "norm1.weight", c)
            t = p + "token_mixer."
            if mixer == "sepconv":
                med = SEPCONV_EXPANSION * c
                f.weight(t + "pwconv1.weight", med, c)
                f.star_relu(t + "act1")
                f.weight(t + "dwconv.weight", med, 1, SEPCONV_KERNEL, SEPCONV_KERNEL)
                f.weight(t + "pwconv2.weight", c, med)
            elif mixer == "attention":
                attn_dim = (c // ATTN_HEAD_DIM) * ATTN_HEAD_DIM
                f.weight(t + "qkv.weight", 3 * attn_dim, c)
                f.weight(t + "proj.weight", c, attn_dim)
            elif mixer == "random":
                f.random_matrix(t + "random_matrix", arch["random_tokens"][i])
            elif mixer in ("identity", "pool"):
                pass  # no parameters
            else:
                raise ValueError(mixer)
            if arch["res_scale"][i]:
                f.scale(p + "res_scale1.scale", c)
            f.norm_weight(p + "norm2.weight", c)
            f.weight(p + "mlp.fc1.weight", hidden, c)
            f.star_relu(p + "mlp.act")
            f.weight(p + "mlp.fc2.weight", c, hidden)
            if arch["res_scale"][i]:
                f.scale(p + "res_scale2.scale", c)
    c = dims[3]
    f.norm_weight("norm.weight", c)
    f.norm_bias("norm.bias", c)
    if arch["head"] == "linear":
        f.weight("head.weight", num_classes, c)
        f.bias("head.bias", num_classes)
    else:
        hidden = MLP_RATIO * c
        f.weight("head.fc1.weight", hidden, c)
        f.bias("head.fc1.bias", hidden)
        f.norm_weight("head.norm.weight", hidden)
        f.norm_bias("head.norm.bias", hidden)
        f.weight("head.fc2.weight", num_classes, hidden)
        f.bias("head.fc2.bias", num_classes)


def make_authors_state_dict(name, num_classes=1000, seed=0):
    """Random float32 CPU state dict for ``name`` in the authors' exact key layout.

    Deterministic for a given (name, num_classes, seed).  Magnitudes are
    realistic (see ``_RandomFiller``); in particular v1 layer scales and
    res-scales are ~1, not the tiny training-init values, so that an error in
    any block shows up in the output.
    """
    arch = ARCHS[name]
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    f = _RandomFiller(seed)
    if arch["family"] == "poolformer_v1":
        _v1_state_dict(arch, num_classes, f)
    else:
        _metaformer_state_dict(arch, num_classes, f)
    return f.sd


def count_params(state_dict):
    return sum(v.numel() for v in state_dict.values())


# ---------------------------------------------------------------------------
# Building blocks (plain transcriptions)
# ---------------------------------------------------------------------------


def _layer_norm_general(x, weight, normalized_dims, eps):
    """The authors' LayerNormGeneral with scale and without bias.

    c = x - mean(x); s = mean(c^2); y = c / sqrt(s + eps) * weight,
    statistics over ``normalized_dims``, weight broadcast along the last dim.
    """
    c = x - x.mean(dim=normalized_dims, keepdim=True)
    s = c.pow(2).mean(dim=normalized_dims, keepdim=True)
    y = c / torch.sqrt(s + eps)
    return y * weight


def _star_relu(x, scale, bias):
    """StarReLU: scale * relu(x) ** 2 + bias (scale, bias have shape [1])."""
    return scale * F.relu(x) ** 2 + bias


def _squared_relu(x):
    return torch.square(F.relu(x))


def _avg_pool_3x3(x_nchw):
    return F.avg_pool2d(x_nchw, kernel_size=3, stride=1, padding=1, count_include_pad=False)


# ----- PoolFormer v1 (NCHW) ------------------------------------------------


def _v1_group_norm(x, sd, prefix):
    return F.group_norm(x, 1, sd[prefix + ".weight"], sd[prefix + ".bias"], eps=1e-5)


def _v1_block(x, sd, p):
    ls1 = sd[p + "layer_scale_1"]
    ls2 = sd[p + "layer_scale_2"]

    # token mixing: pool(norm1(x)) - norm1(x)
    y = _v1_group_norm(x, sd, p + "norm1")
    y = _avg_pool_3x3(y) - y
    x = x + ls1.unsqueeze(-1).unsqueeze(-1) * y

    # channel MLP with 1x1 convs and exact GELU
    y = _v1_group_norm(x, sd, p + "norm2")
    y = F.conv2d(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])
    y = F.gelu(y)  # approximate='none' (erf), as nn.GELU()
    y = F.conv2d(y, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    x = x + ls2.unsqueeze(-1).unsqueeze(-1) * y
    return x


def _v1_forward(arch, sd, x):
    x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=4, padding=2)
    features = []
    for i in range(4):
        for j in range(arch["depths"][i]):
            x = _v1_block(x, sd, "network.%d.%d." % (2 * i, j))
        features.append(x)
        if i < 3:
            p = "network.%d.proj." % (2 * i + 1)
            x = F.conv2d(x, sd[p + "weight"], sd[p + "bias"], stride=2, padding=1)
    # final GroupNorm on the full map, then global average pool, then Linear
    x = F.group_norm(x, 1, sd["norm.weight"], sd["norm.bias"], eps=1e-5)
    x = x.mean(dim=[-2, -1])
    logits = F.linear(x, sd["head.weight"], sd["head.bias"])
    return logits, features


# ----- MetaFormer baselines (NHWC inside stages) ---------------------------


def _mf_block_norm(x, weight, block_norm):
    if block_norm == "ln_hwc":
        return _layer_norm_general(x, weight, (1, 2, 3), eps=1e-6)
    if block_norm == "ln_c":
        # authors' LayerNormWithoutBias: F.layer_norm over C, weight only
        return F.layer_norm(x, (x.shape[-1],), weight, None, eps=1e-6)
    raise ValueError(block_norm)


def _mixer_pool(x):
    y = x.permute(0, 3, 1, 2)
    y = _avg_pool_3x3(y)
    y = y.permute(0, 2, 3, 1)
    return y - x


def _mixer_random(x, matrix):
    B, H, W, C = x.shape
    n = matrix.shape[0]
    if H * W != n:
        raise ValueError("RandomMixing expects %d tokens, got %dx%d" % (n, H, W))
    y = x.reshape(B, H * W, C)
    y = torch.einsum("mn,bnc->bmc", matrix, y)
    return y.reshape(B, H, W, C)


def _mixer_sepconv(x, sd, t):
    y = F.linear(x, sd[t + "pwconv1.weight"])
    y = _star_relu(y, sd[t + "act1.scale"], sd[t + "act1.bias"])
    y = y.permute(0, 3, 1, 2)
    channels = y.shape[1]
    y = F.conv2d(y, sd[t + "dwconv.weight"], None, stride=1, padding=SEPCONV_KERNEL // 2, groups=channels)
    y = y.permute(0, 2, 3, 1)
    # act2 is Identity
    y = F.linear(y, sd[t + "pwconv2.weight"])
    return y


def _mixer_attention(x, sd, t):
    B, H, W, C = x.shape
    N = H * W
    qkv_w = sd[t + "qkv.weight"]
    attn_dim = qkv_w.shape[0] // 3
    heads = attn_dim // ATTN_HEAD_DIM
    qkv = F.linear(x, qkv_w)  # (B, H, W, 3 * attn_dim)
    qkv = qkv.reshape(B, N, 3, heads, ATTN_HEAD_DIM).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, heads, N, head_dim)
    attn = (q @ k.transpose(-2, -1)) * (ATTN_HEAD_DIM**-0.5)
    attn = attn.softmax(dim=-1)
    y = attn @ v  # (B, heads, N, head_dim)
    y = y.transpose(1, 2).reshape(B, H, W, attn_dim)
    y = F.linear(y, sd[t + "proj.weight"])
    return y


def _mf_mixer(x, sd, t, mixer):
    if mixer == "identity":
        return x
    if mixer == "pool":
        return _mixer_pool(x)
    if mixer == "random":
        return _mixer_random(x, sd[t + "random_matrix"])
    if mixer == "sepconv":
        return _mixer_sepconv(x, sd, t)
    if mixer == "attention":
        return _mixer_attention(x, sd, t)
    raise ValueError(mixer)


def _mf_block(x, sd, p, mixer, block_norm, has_res_scale):
    # x = res_scale1(x) + mixer(norm1(x))
    y = _mf_block_norm(x, sd[p + "norm1.weight"], block_norm)
    y = _mf_mixer(y, sd, p + "token_mixer.", mixer)
    skip = x * sd[p + "res_scale1.scale"] if has_res_scale else x
    x = skip + y

    # x = res_scale2(x) + mlp(norm2(x))
    y = _mf_block_norm(x, sd[p + "norm2.weight"], block_norm)
    y = F.linear(y, sd[p + "mlp.fc1.weight"])
    y = _star_relu(y, sd[p + "mlp.act.scale"], sd[p + "mlp.act.bias"])
    y = F.linear(y, sd[p + "mlp.fc2.weight"])
    skip = x * sd[p + "res_scale2.scale"] if has_res_scale else x
    x = skip + y
    return x


def _mf_forward(arch, sd, x):
    # stem: conv 7x7 s4 p2 (NCHW) -> NHWC -> channel LN (no bias, eps 1e-6)
    x = F.conv2d(x, sd["downsample_layers.0.conv.weight"], sd["downsample_layers.0.conv.bias"], stride=4, padding=2)
    x = x.permute(0, 2, 3, 1)
    x = _layer_norm_general(x, sd["downsample_layers.0.post_norm.weight"], (-1,), eps=1e-6)
    features = []
    for i in range(4):
        if i > 0:
            # downsampling: channel LN (no bias, eps 1e-6) -> NCHW -> conv 3x3 s2 p1 -> NHWC
            p = "downsample_layers.%d." % i
            x = _layer_norm_general(x, sd[p + "pre_norm.weight"], (-1,), eps=1e-6)
            x = x.permute(0, 3, 1, 2)
            x = F.conv2d(x, sd[p + "conv.weight"], sd[p + "conv.bias"], stride=2, padding=1)
            x = x.permute(0, 2, 3, 1)
        for j in range(arch["depths"][i]):
            x = _mf_block(x, sd, "stages.%d.%d." % (i, j), arch["mixers"][i], arch["block_norm"], arch["res_scale"][i])
        features.append(x.permute(0, 3, 1, 2))
    # head: global mean over H, W first, then LayerNorm(C, eps 1e-6, with bias)
    c = arch["dims"][3]
    x = x.mean(dim=[1, 2])
    x = F.layer_norm(x, (c,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    if arch["head"] == "linear":
        logits = F.linear(x, sd["head.weight"], sd["head.bias"])
    else:
        # MlpHead: fc1 -> SquaredReLU -> nn.LayerNorm (default eps 1e-5) -> fc2
        y = F.linear(x, sd["head.fc1.weight"], sd["head.fc1.bias"])
        y = _squared_relu(y)
        y = F.layer_norm(y, (y.shape[-1],), sd["head.norm.weight"], sd["head.norm.bias"], eps=1e-5)
        logits = F.linear(y, sd["head.fc2.weight"], sd["head.fc2.bias"])
    return logits, features


def reference_forward(name, state_dict, x, return_features=False):
    """Authors' forward pass of ``name`` (eval mode: no dropout / drop-path).

    ``state_dict`` uses the authors' key layout (see ``make_authors_state_dict``);
    its tensors must be on the same device / dtype as ``x`` (B, 3, H, W).
    Returns logits (B, num_classes); with ``return_features=True`` returns
    ``(logits, [f1, f2, f3, f4])``, the four stage outputs as NCHW tensors
    (after each stage's blocks, before any final norm).
    """
    arch = ARCHS[name]
    if arch["family"] == "poolformer_v1":
        logits, features = _v1_forward(arch, state_dict, x)
    else:
        logits, features = _mf_forward(arch, state_dict, x)
    if return_features:
        return logits, features
    return logits


# ---------------------------------------------------------------------------
# Self-check
# ---------------------------------------------------------------------------

_TIMM_HAS = ("poolformer_", "poolformerv2_", "convformer_", "caformer_")


def _timm_cross_check(name, sd, x):
    """Compare this reference with timm on the same authors'-format weights.

    Returns a dict of max-abs-differences.  Known, documented divergences of
    timm from the authors are accounted for:
      * timm's MlpHead LayerNorm uses eps 1e-6 (authors: nn.LayerNorm default 1e-5);
        the 'logits' entry is with timm's eps patched to 1e-5, 'logits_unpatched' without.
      * timm's PoolFormer v1 pools BEFORE its final GroupNorm(1) (authors: after);
        'logits_timm_head_order' compares timm against this reference's features
        pushed through timm's head order, 'logits_unpatched' is timm vs the authors' order.
    """
    import timm
    from timm.models.metaformer import checkpoint_filter_fn

    arch = ARCHS[name]
    model = timm.create_model(name, pretrained=False, num_classes=sd_num_classes(name, sd))
    model.load_state_dict(checkpoint_filter_fn(sd, model), strict=True)
    model.eval()

    out = {}
    with torch.no_grad():
        ref_logits, ref_feats = reference_forward(name, sd, x, return_features=True)

        y = model.stem(x)
        feat_diffs = []
        for i, stage in enumerate(model.stages):
            y = stage(y)
            if y.ndim == 4 and y.shape[1] != arch["dims"][i]:  # defensive: NHWC
                y = y.permute(0, 3, 1, 2)
            feat_diffs.append((y - ref_feats[i]).abs().max().item())
        out["features"] = max(feat_diffs)
        out["feature_scale"] = max(f.abs().max().item() for f in ref_feats)

        timm_logits = model(x)
        out["logits_unpatched"] = (timm_logits - ref_logits).abs().max().item()

        if arch["head"] == "mlp":
            model.head.fc.norm.eps = 1e-5
            out["logits"] = (model(x) - ref_logits).abs().max().item()
        elif arch["family"] == "poolformer_v1":
            # timm order: mean over H,W -> GroupNorm(1) on (B,C,1,1) -> Linear
            z = ref_feats[3].mean(dim=[-2, -1], keepdim=True)
            z = F.group_norm(z, 1, sd["norm.weight"], sd["norm.bias"], eps=1e-5).flatten(1)
            z = F.linear(z, sd["head.weight"], sd["head.bias"])
            out["logits_timm_head_order"] = (timm_logits - z).abs().max().item()
        else:
            out["logits"] = out["logits_unpatched"]
        out["logit_scale"] = ref_logits.abs().max().item()
    return out


def sd_num_classes(name, sd):
    if ARCHS[name]["head"] == "mlp":
        return sd["head.fc2.weight"].shape[0]
    return sd["head.weight"].shape[0]


def _self_check(cross_check_all=False):
    torch.manual_seed(0)
    ok = True
    gen = torch.Generator().manual_seed(123)
    x = torch.randn(1, 3, 224, 224, generator=gen)
    try:
        import timm  # noqa: F401

        have_timm = True
    except ImportError:
        have_timm = False

    for name in ARCHS:
        sd = make_authors_state_dict(name)
        n = count_params(sd)
        expected = AUTHORS_PARAM_COUNTS[name]
        status = "ok" if n == expected else "MISMATCH"
        ok &= n == expected
        # determinism
        sd2 = make_authors_state_dict(name)
        same = all(torch.equal(sd[k], sd2[k]) for k in sd) and list(sd) == list(sd2)
        ok &= same
        line = "%-20s params %11d (authors %11d) %s%s" % (
            name,
            n,
            expected,
            status,
            "" if same else " NONDETERMINISTIC",
        )

        small = name.endswith("_s12") or name.endswith("_s18")
        if small:
            with torch.no_grad():
                logits, feats = reference_forward(name, sd, x, return_features=True)
            shapes = [tuple(f.shape) for f in feats]
            finite = bool(torch.isfinite(logits).all())
            ok &= finite and logits.shape == (1, 1000)
            line += "  logits |max| %.3g std %.3g finite=%s feats=%s" % (
                logits.abs().max().item(),
                logits.std().item(),
                finite,
                shapes,
            )

        if have_timm and name.startswith(_TIMM_HAS) and (small or cross_check_all):
            diffs = _timm_cross_check(name, sd, x)
            line += "\n    timm: " + ", ".join("%s=%.3g" % kv for kv in diffs.items())
        print(line, flush=True)
    print("ALL OK" if ok else "FAILURES")
    return ok


if __name__ == "__main__":
    import sys

    sys.exit(0 if _self_check(cross_check_all="--all" in sys.argv) else 1)
