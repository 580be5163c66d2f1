"""LM building blocks (zoo.lm.blocks, zoo.lm.cache) against plain reference formulas and transformers' Llama pieces."""

import math

import pytest
import torch
import torch.nn.functional as F
from tolerances import assert_float32_close, float32_bound, in_float64

from zoo.lm import (
    DecoderLayer,
    GroupedQueryAttention,
    KVCache,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    apply_rotary,
    attention_mask,
    build_attention_masks,
)


def _naive_attention(q, k, v, allowed):
    """softmax(q k^T / sqrt(d)) v with key/value heads repeated; ``allowed`` (B, 1, T, S) booleans."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


def test_rmsnorm_matches_llama():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    x = torch.randn(2, 5, 64) * 3
    ours, ref = RMSNorm(64, eps=1e-5), LlamaRMSNorm(64, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
    # F.rms_norm's fused reduction against Llama's mean/rsqrt: within 4x Llama's own float32 error against float64
    assert_float32_close(ours(x), ref(x), in_float64(ref)(x.double()), msg="rmsnorm")
    assert ours.eps == 1e-5 and RMSNorm(8).eps == 1e-5


def test_rope_matches_llama_rotate_half():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    cfg = LlamaConfig(
        hidden_size=256, num_attention_heads=4, head_dim=64, rope_theta=10000.0, max_position_embeddings=64
    )
    ref = LlamaRotaryEmbedding(cfg)
    pos = torch.tensor([[0, 1, 2, 7, 40, 3]])
    q, k = torch.randn(1, 4, 6, 64), torch.randn(1, 2, 6, 64)
    cos_ref, sin_ref = ref(q, pos)
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos_ref, sin_ref)
    rope = RotaryEmbedding(64, theta=10000.0, initial_length=8)  # grows past its first table
    cos, sin = rope(pos)
    # the same float32 formula on both sides, but cos/sin of tables of other lengths may take a vector kernel's
    # body or its scalar tail (each within an ulp): two terms q*cos + rotate_half(q)*sin, each off by one float32
    # step of the table and of the product: 2 x 2 x EPS32 x max |q| (2e-6 here)
    for x, ref in ((q, q_ref), (k, k_ref)):
        torch.testing.assert_close(apply_rotary(x, cos, sin), ref, rtol=0, atol=float32_bound(x, depth=2, factor=2))
    # the slice path (consecutive positions) equals the gather path
    c1, s1 = rope.slice(3, 4, "cpu", torch.float32)
    c2, s2 = rope(torch.arange(3, 7))
    assert torch.equal(c1, c2) and torch.equal(s1, s2)
    # position 0 is the identity; another theta gives other angles
    assert torch.equal(apply_rotary(q[:, :, :1], *rope(torch.tensor([0]))), q[:, :, :1])
    assert not torch.allclose(RotaryEmbedding(64, theta=5e5)(pos)[0], cos)
    with pytest.raises(ValueError, match="even head_dim"):
        RotaryEmbedding(63)


def test_swiglu_is_down_silu_gate_times_up():
    mlp = SwiGLU(16, 40)
    assert mlp.gate_proj.bias is None and mlp.down_proj.bias is None
    x = torch.randn(3, 16)
    expected = mlp.down_proj(F.silu(mlp.gate_proj(x)) * mlp.up_proj(x))
    torch.testing.assert_close(mlp(x), expected, rtol=0, atol=0)  # the same ops: bit for bit
    with torch.no_grad():  # the in-place inference path gives the same numbers (the same elementwise kernels)
        torch.testing.assert_close(mlp(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("window", [None, 3])
def test_gqa_matches_naive_attention_with_window_and_padding(window):
    torch.manual_seed(0)
    attn = GroupedQueryAttention(32, num_heads=4, num_kv_heads=2, sliding_window=window).eval()
    rope = RotaryEmbedding(8)
    x = torch.randn(2, 7, 32)
    padding = torch.ones(2, 7, dtype=torch.long)
    padding[1, :2] = 0
    masks = build_attention_masks(0, 7, [window], padding)
    mask, causal = masks.get(window)
    with torch.no_grad():
        out = attn(x, rope.slice(0, 7, "cpu", torch.float32), mask=mask, is_causal=causal)
        cos, sin = rope.slice(0, 7, "cpu", torch.float32)
        q = apply_rotary(attn.q_proj(x).view(2, 7, 4, 8).transpose(1, 2), cos, sin)
        k = apply_rotary(attn.k_proj(x).view(2, 7, 2, 8).transpose(1, 2), cos, sin)
        v = attn.v_proj(x).view(2, 7, 2, 8).transpose(1, 2)
        i = torch.arange(7)
        allowed = i[None, :] <= i[:, None]
        if window is not None:
            allowed &= i[:, None] - i[None, :] < window
        allowed = allowed[None, None] & padding.bool()[:, None, None, :]
        allowed |= ~allowed.any(-1, keepdim=True)
        ref = attn.o_proj(_naive_attention(q, k, v, allowed).transpose(1, 2).reshape(2, 7, 32))
        a64 = in_float64(attn)  # the naive formula in float64 on the same inputs: the truth of both float32 paths
        c64, s64 = cos.double(), sin.double()
        q = apply_rotary(a64.q_proj(x.double()).view(2, 7, 4, 8).transpose(1, 2), c64, s64)
        k = apply_rotary(a64.k_proj(x.double()).view(2, 7, 2, 8).transpose(1, 2), c64, s64)
        v = a64.v_proj(x.double()).view(2, 7, 2, 8).transpose(1, 2)
        ref64 = a64.o_proj(_naive_attention(q, k, v, allowed).transpose(1, 2).reshape(2, 7, 32))
    # SDPA's kernel against the naive softmax: within 4x the naive float32's own error
    assert_float32_close(out, ref, ref64, msg=f"window {window}")
    assert torch.isfinite(out).all()  # the padding query rows see something: no NaN


def test_attention_mask_rows_and_window():
    m = attention_mask(torch.arange(3, 6), torch.arange(6), sliding_window=2)[0, 0]
    expected = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(m, expected)
    pad = torch.tensor([[0, 0, 1]])
    m = attention_mask(torch.arange(3), torch.arange(3), pad)[0, 0]
    assert m[0].all() and m[1].all() and m[2].tolist() == [False, False, True]  # empty rows see every key
    masks = build_attention_masks(0, 4, [None, 2])
    assert masks.get(None) == (None, True) and masks.get(2)[0] is not None
    assert build_attention_masks(9, 1, [None]).get(None) == (None, False)
    with pytest.raises(ValueError, match="past \\+ new tokens"):
        build_attention_masks(2, 1, [None], torch.ones(1, 2))


def test_kv_cache_is_static_with_per_slot_lengths_and_positions():
    cache = KVCache(num_slots=3, batch_size=2, num_kv_heads=2, max_length=6, head_dim=4, track_positions=True)
    keys_ptr, shape = cache.keys.data_ptr(), tuple(cache.keys.shape)
    k, v = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    ck, cv = cache.update(0, k, v)
    assert torch.equal(ck, k) and torch.equal(cv, v) and cache.seq_length == 4
    ck, _ = cache.update(0, k[:, :, :1], v[:, :, :1])
    assert ck.shape[2] == 5 and torch.equal(ck[:, :, 4], k[:, :, 0])
    # a routed subset: slot 2 caches two tokens with their original sequence indices
    cache.update(2, k[:, :, :2], v[:, :, :2], positions=torch.tensor([[1, 3], [0, 2]]))
    assert cache.lengths == [5, 0, 2] and cache.positions(2).tolist() == [[1, 3], [0, 2]]
    assert cache.positions(0)[0].tolist() == [0, 1, 2, 3, 4]
    assert cache.bytes_per_token == 2 * 3 * 2 * 4 * 4
    with pytest.raises(ValueError, match="cache is full"):
        cache.update(0, k, v)
    with pytest.raises(ValueError, match="got keys of shape"):
        cache.update(1, torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))
    cache.crop(3)
    assert cache.lengths == [3, 0, 2]
    cache.reset()
    assert cache.lengths == [0, 0, 0]
    assert cache.keys.data_ptr() == keys_ptr and tuple(cache.keys.shape) == shape  # never reallocated
    with pytest.raises(ValueError, match="positive int"):
        KVCache(0, 1, 1, 1, 1)


def test_decoder_layer_cached_equals_full_and_keeps_its_input():
    torch.manual_seed(0)
    layer = DecoderLayer(32, 4, 2, 64, sliding_window=4).eval()
    rope = RotaryEmbedding(8)
    x = torch.randn(1, 9, 32)
    x_copy = x.clone()
    with torch.no_grad():
        full = layer(
            x, rope.slice(0, 9, "cpu", torch.float32), mask=build_attention_masks(0, 9, [4]).get(4)[0], is_causal=False
        )
        assert torch.equal(x, x_copy)
        cache = KVCache(1, 1, 2, 9, 8)
        outs = [
            layer(x[:, :5], rope.slice(0, 5, "cpu", torch.float32), cache, 0, *build_attention_masks(0, 5, [4]).get(4))
        ]
        for t in range(5, 9):
            mask, causal = build_attention_masks(t, 1, [4]).get(4)
            outs.append(layer(x[:, t : t + 1], rope.slice(t, 1, "cpu", torch.float32), cache, 0, mask, causal))
        full64 = in_float64(layer)(
            x.double(),
            rope.slice(0, 9, "cpu", torch.float64),
            mask=build_attention_masks(0, 9, [4]).get(4)[0],
            is_causal=False,
        )
    # the cached steps and the full pass differ in float32 summation order only
    assert_float32_close(torch.cat(outs, 1), full, full64, msg="cached steps")
    out = layer(x, rope.slice(0, 9, "cpu", torch.float32))  # training path: gradients reach every weight
    out.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_layer_forward_with_ops_reuses_only_its_own_memory_and_keeps_the_values():
    """layer_forward through a LayerOps (the static decoder's prompt): without a graph the MLP takes the gate's
    memory and the layer's own residual sum for its results, as the eager MLP does; the caller's input is kept, the
    values are the layer's own, and with a graph the same call still backpropagates."""
    from zoo.lm.routing import LayerOps, layer_forward

    torch.manual_seed(0)
    layer = DecoderLayer(32, 4, 2, 64).eval()
    rope = RotaryEmbedding(8).slice(0, 9, "cpu", torch.float32)
    x = torch.randn(1, 9, 32)
    x_copy = x.clone()
    with torch.no_grad():
        want = layer(x, rope)
        got = layer_forward(layer, x, rope, ops=LayerOps())
    assert torch.equal(x, x_copy)
    assert torch.equal(got, want)  # the same ops in the same order: the same bits
    out = layer_forward(layer, x.requires_grad_(), rope, ops=LayerOps())
    assert torch.equal(out.detach(), want)
    out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in layer.parameters())


def test_training_after_generate_works():
    """generate builds the RoPE tables under inference_mode; a later forward with grad must still backpropagate."""
    from small_lms import SMALL

    import zoo

    model = zoo.create_model("mobilellm_125m", **SMALL)
    ids = torch.tensor([[1, 2, 3]])
    model.generate(ids, max_new_tokens=2)
    model(ids).sum().backward()
    assert model.model.embed_tokens.weight.grad is not None


def test_the_blocks_live_in_the_lm_package_and_layers_does_not_import_it():
    """The LM blocks and the cache are the LM package's (one front door); zoo.layers, which zoo.lm builds on, never
    imports zoo.lm back: the arrow between the two packages points one way."""
    import ast
    from pathlib import Path

    import zoo.lm
    from zoo.lm import blocks, cache

    for name in ("DecoderLayer", "GroupedQueryAttention", "RMSNorm", "RotaryEmbedding", "SwiGLU", "KVCache"):
        assert getattr(zoo.lm, name) is getattr(blocks if name != "KVCache" else cache, name)
    layers = Path(zoo.lm.__file__).parents[1] / "layers"
    for path in sorted(layers.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = "." * node.level + (node.module or "")
                assert not target.startswith(("..lm", "zoo.lm")), f"{path.name} imports {target}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("zoo.lm") for a in node.names), path.name
