"""Plain functional rendition of the authors' SReT forward pass.

SReT is the "Sliced Recursive Transformer" (Shen et al., ECCV 2022). The
authors' code is github.com/szq0214/SReT, files ``SReT.py`` (sliced group
attention) and ``SReT_wo_slice.py`` (plain multi-head attention).

The parity tests use this module as an independent reference, and the SReT
benchmark uses it as "the authors' forward". It repeats the authors' numerics
step by step, in eval mode, using only ``torch`` and ``torch.nn.functional``
(no nn.Module, no einops, no fusions or algebraic shortcuts):

* Stem: three times conv3x3 (stride 2, pad 1, bias), BatchNorm (running
  stats, eps 1e-5), ReLU. Then ``+ pos_embed``, a [1, C0, S/8, S/8] parameter
  that is never interpolated.
* Each stage flattens ``b c h w -> b (h w) c`` and runs the authors'
  ModuleList ``[blk0, nll0, blk0, nll1, blk1, nll2, blk1, nll3, ...]``. Every
  shared block is applied ``depth/recursive_num`` (= 2) times, and each
  application is followed by its own non-linear projection layer (NLL). The
  list index ``i`` is a "recursive" application when ``(i + 2) % 4 == 0``.
* Block: ``x = x*c1 + attn(LN1(x))*c2`` then ``x = x*c3 + mlp(LN2(x))*c4``.
  NLL: ``x = x*c1 + mlp(LN(x))*c2``. The ``c*`` are learnable scalar
  coefficients, LN eps is 1e-6 and GELU is exact.
* Sliced attention: a first application uses ``groups1`` contiguous token
  groups. A recursive application uses ``groups2``; when that is not 1, the
  tokens are first shuffled by ``torch.randperm(N)`` from the GLOBAL RNG (one
  permutation for the whole batch), and the shuffle is undone with
  ``argsort`` before ``proj``. Attention itself is the manual
  ``softmax((q @ k^T) * scale) @ v``.
* Between stages: depthwise-style conv3x3, stride 2, ``groups=C_in``,
  ``C_out = 2*C_in``, with bias.
* Head: global average pool, then LayerNorm (eps 1e-6), then Linear.

Because ``torch.randperm`` is drawn where and in the order the authors draw
it, ``torch.manual_seed(s)`` before a call gives the same logits as
``torch.manual_seed(s)`` before the authors' ``model.eval()(x)``.

State dicts use the AUTHORS' key layout. ``SReT.state_dict()`` lists each
shared block under every alias (``transformers.0.blocks.0.*`` and
``transformers.0.blocks.2.*``). When several aliases are present,
``load_state_dict`` lets the later one win, and so does ``reference_forward``.

Public API
----------
``SRET_ARCHS``
    name -> architecture spec (dict).
``EXPECTED_UNIQUE_PARAMS``
    name -> parameter count with shared blocks counted once.
``make_authors_state_dict(name, num_classes=1000, seed=0, duplicate_aliases=True)``
    Random state dict in the authors' exact layout, with realistic scales.
``count_unique_params(state_dict, name)``
    Parameters, with each shared block counted once and buffers left out.
``reference_forward(name, state_dict, x, return_features=False)``
    logits (B, num_classes), plus optionally the list of the 3 stage outputs.

``python -m zoo.reference.sret`` runs a self-check (parameter counts and forwards).
"""

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# Architecture table (values read off the authors' constructors)
# ---------------------------------------------------------------------------


def _arch(size, sliced, mlp_ratio, np_mlp_ratio, distilled=False, image_size=224):
    if size == "tiny":  # SReT_T and SReT_LT share the widths
        base_dims, heads = (32, 32, 32), (2, 4, 8)
    else:  # small
        base_dims, heads = (42, 42, 42), (3, 6, 12)
    return dict(
        image_size=image_size,
        base_dims=base_dims,
        depth=(4, 10, 6),
        recursive_num=(2, 5, 3),
        heads=heads,
        # None = no grouping at all: plain MHSA (SReT_wo_slice.py)
        groups1=(8, 4, 1) if sliced else None,
        groups2=(2, 1, 1) if sliced else None,
        mlp_ratio=mlp_ratio,
        np_mlp_ratio=np_mlp_ratio,
        distilled=distilled,  # Distilled_* classes: identical forward
    )


SRET_ARCHS = {
    "sret_tiny": _arch("tiny", True, 3.6, 1),
    "sret_tiny_distill": _arch("tiny", True, 3.6, 1, distilled=True),
    "sret_lt": _arch("tiny", True, 4.0, 1),
    "sret_lt_distill": _arch("tiny", True, 4.0, 1, distilled=True),
    "sret_small": _arch("small", True, 3.0, 2),
    "sret_small_distill": _arch("small", True, 3.0, 2, distilled=True),
    # The authors' T/LT wo_slice constructors do not pass np_mlp_ratio
    # (TypeError); it must be supplied as 1.
    "sret_tiny_wo_slice": _arch("tiny", False, 3.6, 1),
    "sret_lt_wo_slice": _arch("tiny", False, 4, 1),
    "sret_small_wo_slice": _arch("small", False, 3, 2),
    "sret_small_wo_slice_384": _arch("small", False, 3, 2, distilled=True, image_size=384),
}

# Slicing adds no parameters, and neither does the distilled class.
EXPECTED_UNIQUE_PARAMS = {
    "sret_tiny": 4_755_979,
    "sret_tiny_distill": 4_755_979,
    "sret_lt": 4_988_024,
    "sret_lt_distill": 4_988_024,
    "sret_small": 20_899_692,
    "sret_small_distill": 20_899_692,
    "sret_tiny_wo_slice": 4_755_979,
    "sret_lt_wo_slice": 4_988_024,
    "sret_small_wo_slice": 20_899_692,
    "sret_small_wo_slice_384": 21_091_212,
}

_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _spec(name):
    try:
        return SRET_ARCHS[name]
    except KeyError:
        raise KeyError(f"unknown SReT variant {name!r}; known: {sorted(SRET_ARCHS)}") from None


def _stage_layout(spec, stage):
    """The authors' ``Transformer.blocks`` ModuleList, as a list of
    ("block", shared index) / ("nll", index) entries."""
    depth, rec = spec["depth"][stage], spec["recursive_num"][stage]
    loops = int(depth / rec)
    layout = []
    for rn in range(rec):
        for rl in range(loops):
            layout.append(("block", rn))
            layout.append(("nll", rn * loops + rl))
    return layout


def _block_aliases(layout, rn):
    """ModuleList positions under which shared block ``rn`` appears."""
    return [i for i, entry in enumerate(layout) if entry == ("block", rn)]


# ---------------------------------------------------------------------------
# State dict in the authors' layout
# ---------------------------------------------------------------------------


def _entry(key, shape, kind, fan_in=None, canonical=None):
    """One (key, shape, init, canonical_key) entry of :func:`_authors_entries`."""
    return (key, tuple(shape), (kind, fan_in), canonical or key)


def _stem_entries(c0):
    """conv_embedding: conv1, bn1, conv2, bn2, conv3, bn3 (registration order)."""
    out = []
    half = int(c0 / 2)
    for k, (cin, cout) in enumerate([(3, half), (half, c0), (c0, c0)], start=1):
        out.append(_entry(f"patch_embed.conv{k}.weight", (cout, cin, 3, 3), "w", cin * 9))
        out.append(_entry(f"patch_embed.conv{k}.bias", (cout,), "b"))
        for field, kind in [
            ("weight", "bn_w"),
            ("bias", "bn_b"),
            ("running_mean", "bn_rm"),
            ("running_var", "bn_rv"),
            ("num_batches_tracked", "bn_nbt"),
        ]:
            shape = () if kind == "bn_nbt" else (cout,)
            out.append(_entry(f"patch_embed.bn{k}.{field}", shape, kind))
    return out


def _block_fields(dim, hidden):
    """(suffix, shape, init kind, fan_in) of a shared block."""
    return [
        ("norm1.weight", (dim,), "ln_w", None),
        ("norm1.bias", (dim,), "ln_b", None),
        ("attn.qkv.weight", (3 * dim, dim), "w", dim),
        ("attn.qkv.bias", (3 * dim,), "b", None),
        ("attn.proj.weight", (dim, dim), "w", dim),
        ("attn.proj.bias", (dim,), "b", None),
        ("norm2.weight", (dim,), "ln_w", None),
        ("norm2.bias", (dim,), "ln_b", None),
        ("mlp.fc1.weight", (hidden, dim), "w", dim),
        ("mlp.fc1.bias", (hidden,), "b", None),
        ("mlp.fc2.weight", (dim, hidden), "w", hidden),
        ("mlp.fc2.bias", (dim,), "b", None),
    ] + [(f"coefficient{c}.bias", (1,), "coef", None) for c in range(1, 5)]


def _nll_fields(dim, hidden):
    """(suffix, shape, init kind, fan_in) of a non-linear projection layer."""
    return [
        ("norm1.weight", (dim,), "ln_w", None),
        ("norm1.bias", (dim,), "ln_b", None),
        ("mlp.fc1.weight", (hidden, dim), "w", dim),
        ("mlp.fc1.bias", (hidden,), "b", None),
        ("mlp.fc2.weight", (dim, hidden), "w", hidden),
        ("mlp.fc2.bias", (dim,), "b", None),
        ("coefficient1.bias", (1,), "coef", None),
        ("coefficient2.bias", (1,), "coef", None),
    ]


def _stage_entries(spec, s):
    """Stage ``s``'s ModuleList, every shared block under each of its aliases."""
    dim = spec["base_dims"][s] * spec["heads"][s]
    layout = _stage_layout(spec, s)
    out = []
    for i, (kind, idx) in enumerate(layout):
        prefix = f"transformers.{s}.blocks.{i}."
        if kind == "block":
            first = _block_aliases(layout, idx)[0]
            canon = f"transformers.{s}.blocks.{first}."
            fields = _block_fields(dim, int(dim * spec["mlp_ratio"]))
        else:
            canon = prefix
            fields = _nll_fields(dim, int(dim * spec["np_mlp_ratio"]))
        for suffix, shape, init, fan_in in fields:
            out.append(_entry(prefix + suffix, shape, init, fan_in, canon + suffix))
    return out


def _authors_entries(spec, num_classes):
    """Yield (key, shape, init, canonical_key), in ``SReT.state_dict()`` order.

    ``init`` is a (kind, fan_in) pair. ``canonical_key`` names a shared block
    by its FIRST alias, so that every alias maps to one tensor.
    """
    c0 = spec["base_dims"][0] * spec["heads"][0]
    width = int(spec["image_size"] / 8)
    out = [_entry("pos_embed", (1, c0, width, width), "pos")]
    out += _stem_entries(c0)
    for s in range(len(spec["depth"])):
        out += _stage_entries(spec, s)

    n_stages = len(spec["depth"])
    for s in range(n_stages - 1):
        cout = spec["base_dims"][s + 1] * spec["heads"][s + 1]
        # groups = input channels -> weight [cout, cin/groups = 1, 3, 3]
        out.append(_entry(f"pools.{s}.conv.weight", (cout, 1, 3, 3), "w", 9))
        out.append(_entry(f"pools.{s}.conv.bias", (cout,), "b"))

    c_last = spec["base_dims"][-1] * spec["heads"][-1]
    out.append(_entry("norm.weight", (c_last,), "ln_w"))
    out.append(_entry("norm.bias", (c_last,), "ln_b"))
    if num_classes > 0:
        out.append(_entry("head.weight", (num_classes, c_last), "w", c_last))
        out.append(_entry("head.bias", (num_classes,), "b"))
    return out


def _random_tensor(shape, init, g):
    kind, fan_in = init
    if kind == "bn_nbt":
        return torch.tensor(0, dtype=torch.long)
    if kind == "bn_rv":
        return 0.5 + torch.rand(shape, generator=g)  # uniform(0.5, 1.5)
    r = torch.randn(shape, generator=g)
    if kind == "w":
        return r * fan_in**-0.5  # N(0, 1/fan_in)
    if kind == "b":
        return 0.05 * r
    if kind in ("ln_w", "bn_w", "coef"):
        return 1.0 + 0.1 * r
    if kind in ("ln_b", "bn_b", "bn_rm", "pos"):
        return 0.1 * r
    raise ValueError(kind)


def make_authors_state_dict(name, num_classes=1000, seed=0, duplicate_aliases=True):
    """Random state dict with the keys, order, shapes and dtypes of the authors'
    ``model.state_dict()``.

    Shared blocks appear under all their aliases, holding equal values (as
    separate clones, so that a test can replace one alias alone). With
    ``duplicate_aliases=False``, only the first alias is kept. Values are
    drawn from ``torch.Generator().manual_seed(seed)`` in key order, so they
    do not depend on ``duplicate_aliases``.
    """
    spec = _spec(name)
    g = torch.Generator().manual_seed(seed)
    canonical = {}
    sd = {}
    for key, shape, init, canon in _authors_entries(spec, num_classes):
        if canon not in canonical:
            canonical[canon] = _random_tensor(shape, init, g)
            sd[key] = canonical[canon]
        elif duplicate_aliases:
            sd[key] = canonical[canon].clone()
    return sd


def _canonical_key(spec, key):
    """Map a shared-block key (any alias) to its first alias."""
    parts = key.split(".")
    if len(parts) > 4 and parts[0] == "transformers" and parts[2] == "blocks":
        s, i = int(parts[1]), int(parts[3])
        kind, idx = _stage_layout(spec, s)[i]
        if kind == "block":
            parts[3] = str(_block_aliases(_stage_layout(spec, s), idx)[0])
    return ".".join(parts)


def count_unique_params(state_dict, name):
    """Sum of the parameters' numel, counting each shared block once. BatchNorm
    running stats and ``num_batches_tracked`` are buffers, not parameters."""
    spec = _spec(name)
    seen = {}
    for key, t in state_dict.items():
        if key.endswith(_BUFFER_SUFFIXES):
            continue
        seen.setdefault(_canonical_key(spec, key), t.numel())
    return sum(seen.values())


# ---------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------


def _linear(x, p, prefix):
    return F.linear(x, p(prefix + "weight"), p(prefix + "bias"))


def _layer_norm(x, p, prefix):
    return F.layer_norm(x, (x.shape[-1],), p(prefix + "weight"), p(prefix + "bias"), 1e-6)


def _mlp(x, p, prefix):
    # Mlp: fc1 -> GELU (exact) -> dropout(0) -> fc2 -> dropout(0)
    x = _linear(x, p, prefix + "fc1.")
    x = F.gelu(x)
    return _linear(x, p, prefix + "fc2.")


def _group_attention(x, p, prefix, num_heads, groups1, groups2, recursive):
    """``Group_Attention.forward`` of SReT.py."""
    B, N, C = x.shape
    shuffled = False
    if not recursive:
        num_groups = groups1
    else:
        num_groups = groups2
        if num_groups != 1:
            idx = torch.randperm(N)  # global RNG, one permutation for the batch
            x = x[:, idx, :]
            inverse = torch.argsort(idx)
            shuffled = True
    scale = (C // num_heads) ** -0.5
    n = N // num_groups
    qkv = _linear(x, p, prefix + "qkv.")
    # (B, N, 3C) -> (3, B, groups, heads, N/groups, head_dim); groups are
    # contiguous runs of tokens
    qkv = qkv.reshape(B, num_groups, n, 3, num_heads, C // num_heads).permute(3, 0, 1, 4, 2, 5)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)) * scale
    attn = attn.softmax(dim=-1)
    x = (attn @ v).transpose(2, 3).reshape(B, num_groups, n, C)
    x = x.permute(0, 3, 1, 2).reshape(B, C, N).transpose(1, 2)
    if shuffled:
        x = x[:, inverse, :]
    return _linear(x, p, prefix + "proj.")


def _plain_attention(x, p, prefix, num_heads):
    """``Attention.forward`` of SReT_wo_slice.py."""
    B, N, C = x.shape
    scale = (C // num_heads) ** -0.5
    qkv = _linear(x, p, prefix + "qkv.")
    qkv = qkv.reshape(B, N, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)) * scale
    attn = attn.softmax(dim=-1)
    x = (attn @ v).transpose(1, 2).reshape(B, N, C)
    return _linear(x, p, prefix + "proj.")


def _transformer_block(x, p, prefix, spec, stage, recursive):
    heads = spec["heads"][stage]
    h = _layer_norm(x, p, prefix + "norm1.")
    if spec["groups1"] is None:
        h = _plain_attention(h, p, prefix + "attn.", heads)
    else:
        h = _group_attention(h, p, prefix + "attn.", heads, spec["groups1"][stage], spec["groups2"][stage], recursive)
    x = x * p(prefix + "coefficient1.bias") + h * p(prefix + "coefficient2.bias")
    h = _mlp(_layer_norm(x, p, prefix + "norm2."), p, prefix + "mlp.")
    x = x * p(prefix + "coefficient3.bias") + h * p(prefix + "coefficient4.bias")
    return x


def _non_proj(x, p, prefix):
    h = _mlp(_layer_norm(x, p, prefix + "norm1."), p, prefix + "mlp.")
    return x * p(prefix + "coefficient1.bias") + h * p(prefix + "coefficient2.bias")


def _transformer_stage(x, p, spec, stage):
    B, C, H, W = x.shape
    x = x.permute(0, 2, 3, 1).reshape(B, H * W, C)  # b c h w -> b (h w) c
    layout = _stage_layout(spec, stage)
    for i, (kind, idx) in enumerate(layout):
        recursive = (i + 2) % 4 == 0  # the authors' marker of recursive layers
        if kind == "block":
            # One shared module: the weights are the same whichever alias is
            # being applied. The resolver lets the later alias win.
            prefix = f"transformers.{stage}.blocks.{_block_aliases(layout, idx)[0]}."
            x = _transformer_block(x, p, prefix, spec, stage, recursive)
        else:
            x = _non_proj(x, p, f"transformers.{stage}.blocks.{i}.")
    return x.reshape(B, H, W, C).permute(0, 3, 1, 2)  # b (h w) c -> b c h w


def _resolver(spec, state_dict, like):
    """key (first alias for shared blocks) -> tensor. Among a shared block's
    aliases, the LATEST one present wins (the ``load_state_dict`` behaviour)."""
    later = {}
    for key in state_dict:
        later[_canonical_key(spec, key)] = key  # dict order: later aliases overwrite

    def p(key):
        t = state_dict[later[key]]
        if t.is_floating_point():
            t = t.to(device=like.device, dtype=like.dtype)
        return t

    return p


def reference_forward(name, state_dict, x, return_features=False):
    """The authors' eval-mode forward. ``x`` is (B, 3, S, S), S = image_size.

    Returns the logits (B, num_classes). With ``return_features``, also
    returns the list of the three stage outputs (B, C, H, W), each taken
    after the stage's Transformer (for stages 0 and 1, before the pooling
    conv). Draws ``torch.randperm`` from the global RNG as the authors do:
    once per recursive application in a stage whose ``groups2 != 1``.
    """
    spec = _spec(name)
    p = _resolver(spec, state_dict, x)

    # conv_embedding
    for k in (1, 2, 3):
        x = F.conv2d(x, p(f"patch_embed.conv{k}.weight"), p(f"patch_embed.conv{k}.bias"), stride=2, padding=1)
        bn = f"patch_embed.bn{k}."
        x = F.batch_norm(
            x,
            p(bn + "running_mean"),
            p(bn + "running_var"),
            p(bn + "weight"),
            p(bn + "bias"),
            training=False,
            momentum=0.1,
            eps=1e-5,
        )
        x = F.relu(x)
    x = x + p("pos_embed")  # pos_drop: p=0

    features = []
    n_stages = len(spec["depth"])
    for s in range(n_stages - 1):
        x = _transformer_stage(x, p, spec, s)
        features.append(x)
        # conv_head_pooling: kernel stride+1 = 3, padding stride//2 = 1, groups = C_in
        x = F.conv2d(x, p(f"pools.{s}.conv.weight"), p(f"pools.{s}.conv.bias"), stride=2, padding=1, groups=x.shape[1])
    x = _transformer_stage(x, p, spec, n_stages - 1)
    features.append(x)

    x = F.adaptive_avg_pool2d(x, (1, 1))
    x = torch.flatten(x, 1)
    x = _layer_norm(x, p, "norm.")
    if "head.weight" in state_dict:
        x = _linear(x, p, "head.")
    return (x, features) if return_features else x


# ---------------------------------------------------------------------------
# Self-check
# ---------------------------------------------------------------------------


def _self_check():
    ok = True
    for name, spec in SRET_ARCHS.items():
        size = spec["image_size"]
        sd = make_authors_state_dict(name)
        count = count_unique_params(sd, name)
        good = count == EXPECTED_UNIQUE_PARAMS[name]
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            torch.manual_seed(0)
            logits = reference_forward(name, sd, x)
        good &= bool(torch.isfinite(logits).all())
        ok &= good
        print(f"{name:<26} unique params {count:>11,}  logits std {logits.std():.3f}  {'ok' if good else 'FAIL'}")
    print("ALL OK" if ok else "FAILURES")
    return ok


if __name__ == "__main__":
    import sys

    sys.exit(0 if _self_check() else 1)
