"""Recursive LMs: sharing schedules, exact sizes, MobileLLM-LS as sequence sharing, expert/token routing (capacity,
causal order, a hand-written reference), cached decoding (recursion-wise and recursive KV sharing), relaxed
recursion (SVD-initialised LoRA, conversion), a small training run and MAC counting per application."""

import pytest
import torch
import torch.nn.functional as F
from small_lms import SMALL
from tolerances import assert_float32_close, float32_bound, in_float64

import zoo
from zoo.layers import RecursiveStack, cycle_schedule, sequence_schedule
from zoo.layers.recursion import shared_depth, sharing_schedule
from zoo.lm.routing import LoRA, gather_active
from zoo.models.recursive import RecursiveConfig, RecursiveLM, from_pretrained_dense

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _randomize(model, seed=0):
    """Weights of realistic scale (N(0, 1/fan_in), embeddings N(0, 0.2^2), norms near 1; routers larger, so that
    their decisions are mixed and far from ties)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim == 1:
                p.copy_(1 + 0.1 * noise)
            elif "embed" in name:
                p.copy_(0.2 * noise)
            elif "routers" in name:
                p.copy_(3 * noise / p.shape[1] ** 0.5)
            else:
                p.copy_(noise / p.shape[1] ** 0.5)
    return model.eval()


def _model(seed=0, **kwargs):
    return _randomize(
        RecursiveLM(
            RecursiveConfig(
                **{**SMALL, "num_hidden_layers": 8, "num_recursion": 3, "sharing": "middle_cycle", **kwargs}
            )
        ),
        seed,
    )


def _ids(batch=2, length=12, seed=1, vocab=SMALL["vocab_size"]):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------------
# Schedules and sizes


def test_sharing_schedules_and_layout():
    assert sharing_schedule("cycle", 3, 2) == cycle_schedule(3, 2) == [0, 1, 2, 0, 1, 2]
    assert sharing_schedule("sequence", 3, 2) == sequence_schedule(3, 2) == [0, 0, 1, 1, 2, 2]
    assert sharing_schedule("middle_cycle", 2, 3) == [0, 1, 2, 1, 2, 1, 2, 3]
    assert sharing_schedule("middle_sequence", 2, 3) == [0, 1, 1, 1, 2, 2, 2, 3]
    assert shared_depth("middle_cycle", 32, 3) == 10 and shared_depth("middle_cycle", 30, 3) == 9
    assert shared_depth("cycle", 30, 4) == 7
    with pytest.raises(ValueError, match="sharing"):
        sharing_schedule("zigzag", 2, 2)
    with pytest.raises(ValueError, match="too few"):
        shared_depth("middle_cycle", 3, 2)
    # the existing stack keeps its behaviour
    assert RecursiveStack([torch.nn.Identity()] * 2, sequence_schedule(2, 2)).recursion == [0, 1, 0, 1]

    m = RecursiveLM(**dict(SMALL, num_hidden_layers=8, num_recursion=3, sharing="middle_cycle", mor="expert"))
    assert m.schedule == [0, 1, 2, 1, 2, 1, 2, 3] and len(m.model.layers) == 4
    assert m.prefix == [0] and m.steps == [[1, 2], [3, 4], [5, 6]] and m.suffix == [7]
    assert m.num_slots == 8 and m.new_cache(1, 4).num_slots == 8
    kv = RecursiveLM(**dict(SMALL, num_hidden_layers=8, num_recursion=3, sharing="middle_cycle", kv_sharing=True))
    assert kv.num_slots == 4 and kv.slot_of == [0, 1, 2, 1, 2, 1, 2, 3]
    assert kv.reads_shared == [False, False, False, True, True, True, True, False]
    with pytest.raises(ValueError, match="cycle"):
        RecursiveLM(**dict(SMALL, num_hidden_layers=8, num_recursion=2, sharing="sequence", mor="expert"))
    with pytest.raises(TypeError, match="num_recursion"):
        RecursiveLM(**SMALL, num_recursions=2)


def _layer_params(d, heads, kv, ffn):
    hd = d // heads
    return d * hd * (2 * heads + 2 * kv) + 3 * d * ffn + 2 * d


@pytest.mark.parametrize(
    "size,shape",
    [("135m", (30, 576, 9, 3, 1536)), ("360m", (32, 960, 15, 5, 2560)), ("1.7b", (24, 2048, 32, 32, 8192))],
)
def test_exact_param_counts_on_meta(size, shape):
    L, d, heads, kv, ffn = shape
    layer, embed = _layer_params(d, heads, kv, ffn), 49152 * d
    B = (L - 2) // 3  # middle_cycle, 3 recursions: first + B shared + last unique blocks
    expected = {
        f"vanilla_{size}": embed + L * layer + d,
        f"recursive_{size}": embed + (B + 2) * layer + d,
        f"mor_{size}": embed + (B + 2) * layer + d + 3 * d,
    }  # + one linear router per recursion step
    for name, params in expected.items():
        with torch.device("meta"):
            model = zoo.create_model(name)
        c = model.config
        assert (c.vocab_size, c.tie_word_embeddings, c.hidden_size) == (49152, True, d)
        assert model.num_params() == params == zoo.model_info(name)["reference"]["params"], name
        assert len(model.schedule) == (L if name.startswith("vanilla") else 2 + 3 * B)
    # the published SmolLM sizes
    assert (
        expected["vanilla_135m" if size == "135m" else f"vanilla_{size}"]
        == {"135m": 134_515_008, "360m": 361_821_120, "1.7b": 1_711_376_384}[size]
    )
    # recursion count and sharing are kwargs; shared weights count once
    with torch.device("meta"):
        m4 = zoo.create_model(f"mor_{size}", num_recursion=4, sharing="cycle")
    assert m4.num_params() == embed + (L // 4) * layer + d + 4 * d


# ----------------------------------------------------------------------------------------------------------------
# MobileLLM-LS is sequence sharing with N_r = 2


def test_mobilellm_ls_is_sequence_sharing_with_two_recursions():
    ls = _randomize(zoo.create_model("mobilellm_125m_ls", **dict(SMALL, num_hidden_layers=3)))
    rec = from_pretrained_dense(ls, num_recursion=2, sharing="sequence", init="average")
    assert rec.schedule == [0, 0, 1, 1, 2, 2] and rec.config.num_hidden_layers == 6
    assert rec.num_params() == ls.num_params()
    for a, b in zip(rec.model.layers, ls.model.layers):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)
    ids = _ids()
    with torch.no_grad():
        # the same blocks in the same order, by another module: within 4x MobileLLM-LS's own float32 error
        assert_float32_close(rec(ids), ls(ids), in_float64(ls)(ids), msg="recursive vs LS")
        assert torch.equal(rec.generate(ids, max_new_tokens=6), ls.generate(ids, max_new_tokens=6))
    # the same weights as a cycle schedule compute something else
    cyc = RecursiveLM(rec.config, sharing="cycle").eval()
    cyc.load_state_dict(rec.state_dict())
    with torch.no_grad():
        assert (cyc(ids) - rec(ids)).abs().max() > 1e-2


# ----------------------------------------------------------------------------------------------------------------
# Routing


def test_gather_active_keeps_causal_order_and_pads():
    active = torch.tensor([[False, True, False, True, True], [True, False, False, False, False]])
    idx, valid = gather_active(active)
    assert idx.tolist() == [[1, 3, 4], [0, 5, 5]] and valid.tolist() == [[True] * 3, [True, False, False]]


def test_expert_choice_topk_capacity_is_hierarchical():
    model = _model(mor="expert").train()
    T = 12
    out = model(_ids(3, T), return_routing=True)
    counts = [m.sum(1).tolist() for m in out.routing]
    assert counts == [[12] * 3, [8] * 3, [4] * 3]  # int((3 - r) / 3 * T) per row
    for prev, cur in zip(out.routing, out.routing[1:]):
        assert not (cur & ~prev).any()  # tokens only drop out
    # the selected tokens of a step are the top-k router scores among the still-active ones
    x = model.model.embed_tokens(_ids(3, T))
    assert out.aux_loss is not None and out.aux_loss > 0
    custom = _model(mor="expert", capacity=[1.0, 0.5, 0.25]).train()
    counts = [m.sum(1).tolist() for m in custom(_ids(2, 16), return_routing=True).routing]
    assert counts == [[16, 16], [8, 8], [4, 4]]
    assert x.shape == (3, T, 64)


def _reference_expert(model, ids, masks):
    """A per-row loop over plain DecoderLayer calls: each step runs the selected tokens as a short causal
    sequence with their original RoPE positions and adds ``score * output`` back."""
    c, layers, rows = model.config, model.model.layers, []
    T = ids.shape[1]
    for b in range(ids.shape[0]):
        x = model.model.embed_tokens(ids[b : b + 1])
        rope = model.rotary.slice(0, T, x.device, x.dtype)
        for i in model.prefix:
            x = layers[model.schedule[i]](x, rope)
        for r, apps in enumerate(model.steps):
            score = c.router_alpha * torch.sigmoid(model.routers[r](x)).squeeze(-1)  # (1, T)
            idx = masks[r][b].nonzero().flatten()
            if idx.numel() == 0:
                continue
            h = x[:, idx]
            sub_rope = model.rotary(idx, x.dtype)
            for i in apps:
                h = layers[model.schedule[i]](h, sub_rope)
            x = x.clone()
            x[:, idx] = x[:, idx] + score[:, idx, None] * h
        for i in model.suffix:
            x = layers[model.schedule[i]](x, rope)
        rows.append(F.linear(model.model.norm(x), model.output_weight))
    return torch.cat(rows)


@pytest.mark.parametrize("routing", ["topk", "threshold"])
def test_expert_choice_matches_a_plain_reference(routing):
    model = _model(mor="expert")
    ids = _ids(3, 14)
    with torch.no_grad():
        out = model(ids, routing=routing, return_routing=True)
        ref = _reference_expert(model, ids, out.routing)
        ref64 = _reference_expert(in_float64(model), ids, out.routing)  # the same decisions, in float64
    counts = torch.stack([m.sum(1) for m in out.routing])
    assert (counts[1:] < 14).any() and (counts[1:] > 0).any()  # a real subset was routed
    if routing == "threshold":
        assert len(set(counts[2].tolist())) > 1  # rows with different numbers of active tokens (padding path)
    assert_float32_close(out.logits, ref, ref64, msg=routing)  # within 4x the plain reference's own float32 error


def test_threshold_routing_is_causal_and_topk_is_not():
    model = _model(mor="expert")
    a = _ids(2, 16, seed=3)
    b = a.clone()
    b[:, 10:] = _ids(2, 6, seed=4)  # change the future only
    with torch.no_grad():
        thr_a, thr_b = model(a), model(b)  # eval: threshold routing
        thr_a64 = in_float64(model)(a)  # routed as in float32: the routers' margins are clear
        top_a, top_b = model(a, routing="topk"), model(b, routing="topk")
    # the future changes only the shapes of the routed batches (summation order): within 4x a's own float32 error
    assert_float32_close(thr_b[:, :10], thr_a[:, :10], thr_a64[:, :10], msg="threshold prefix")
    # top-k over the sequence lets later tokens change which earlier ones are selected
    assert (top_a[:, :10] - top_b[:, :10]).abs().max() > 1e-3


CACHE_CASES = {
    "expert": dict(mor="expert"),
    "expert_kv_share": dict(mor="expert", kv_sharing=True),
    "token": dict(mor="token"),
    "token_kv_share_mlp_router": dict(mor="token", kv_sharing=True, router_type="mlp"),
    "recursive_kv_share_lora": dict(kv_sharing=True, lora_rank=4, lora_targets=["q_proj", "k_proj", "down_proj"]),
    "sequence_no_ln_share": dict(sharing="middle_sequence", ln_share=False),
}


@pytest.mark.parametrize("case", sorted(CACHE_CASES))
def test_cached_decoding_equals_full_recompute(case):
    model = _model(**CACHE_CASES[case])
    if model.lora:  # non-zero deltas
        with torch.no_grad():
            for p in model.lora.parameters():
                p.normal_(0, 0.05)
    ids = _ids(2, 7)
    steps = 8
    with torch.no_grad():
        seq = model.generate(ids, max_new_tokens=steps)
        assert seq.shape == (2, 7 + steps)
        full = model(seq, return_routing=True)
        assert torch.equal(full.logits[:, 6:-1].argmax(-1), seq[:, 7:])
        cache = model.new_cache(2, seq.shape[1])
        logits = [model(seq[:, :7], past_key_values=cache).logits]
        for t in range(7, seq.shape[1]):
            logits.append(model(seq[:, t : t + 1], past_key_values=cache).logits)
        cache2 = model.new_cache(2, seq.shape[1])
        chunks = [model(seq[:, i : i + 4], past_key_values=cache2).logits for i in range(0, seq.shape[1], 4)]
        full64 = in_float64(model)(seq)  # routed as in float32: the routers' margins are clear
    # the cached steps differ from the recompute in float32 summation order only
    assert_float32_close(torch.cat(logits, 1), full.logits, full64, msg=f"{case} steps")
    assert_float32_close(torch.cat(chunks, 1), full.logits, full64, msg=f"{case} chunks")
    assert cache.seen == seq.shape[1]
    if model.config.mor is not None:
        counts = torch.stack([m.sum(1) for m in full.routing])
        assert (counts[1:] < seq.shape[1]).any() and (counts[1:] > 0).any()
        if not model.config.kv_sharing:  # recursion-wise: a routed slot holds only its active tokens (+ padding)
            last = model.steps[-1][0]
            held = (cache.positions(last) >= 0).sum(1)
            assert torch.equal(held, full.routing[-1].sum(1)) and cache.lengths[last] < seq.shape[1]
    if model.config.kv_sharing:
        assert cache.num_slots == len(model.model.layers)


def test_topk_prefill_decisions_replayed_with_the_cache():
    model = _model(mor="expert")
    seq = _ids(2, 15, seed=5)
    with torch.no_grad():
        full = model(seq, routing="topk", return_routing=True)
        cache = model.new_cache(2, 15)
        out = [model(seq[:, :9], past_key_values=cache, route_masks=[m[:, :9] for m in full.routing]).logits]
        for t in range(9, 15):
            out.append(
                model(
                    seq[:, t : t + 1], past_key_values=cache, route_masks=[m[:, t : t + 1] for m in full.routing]
                ).logits
            )
        full64 = in_float64(model)(seq, route_masks=full.routing)  # the same decisions, in float64
    assert_float32_close(torch.cat(out, 1), full.logits, full64, msg="top-k replay")


def test_left_padded_batch_generates_like_single_prompts():
    model = _model(mor="expert", kv_sharing=False)
    a, b = _ids(1, 9, seed=6), _ids(1, 5, seed=7)
    batch = torch.cat([a, torch.cat([torch.zeros(1, 4, dtype=torch.long), b], 1)])
    mask = torch.ones_like(batch)
    mask[1, :4] = 0
    with torch.no_grad():
        both = model.generate(batch, max_new_tokens=5, attention_mask=mask)
        assert torch.equal(both[0], model.generate(a, max_new_tokens=5)[0])
        assert torch.equal(both[1, 4:], model.generate(b, max_new_tokens=5)[0])


def test_token_choice_balancing():
    model = _model(mor="token", balancing="loss_free", bias_update_rate=0.05).train()
    ids = _ids(4, 32)
    depths = []
    for _ in range(30):
        with torch.no_grad():
            out = model(ids, return_routing=True)
        depths.append(torch.stack(out.routing).sum(0).flatten() - 1)
    load = [torch.bincount(d, minlength=3).float() / d.numel() for d in (depths[0], depths[-1])]
    assert (load[1] - 1 / 3).abs().max() < (load[0] - 1 / 3).abs().max()  # the bias moved towards equal load
    assert model.router_bias.abs().sum() > 0
    lossy = _model(mor="token").train()
    out = lossy(ids, return_routing=True)
    assert out.aux_loss is not None and out.aux_loss > 0
    out.logits.float().logsumexp(-1).mean().backward()
    assert lossy.routers[0].net.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------------------
# Relaxed recursion


def _dense(layers=4, seed=0):
    return _randomize(zoo.create_model("mobilellm_125m", **dict(SMALL, num_hidden_layers=layers)), seed)


def test_lora_svd_init_is_the_truncated_svd():
    delta = torch.randn(48, 32, generator=torch.Generator().manual_seed(0))
    full = LoRA(32, 48, rank=1000)
    full.init_from_delta(delta)
    assert full.rank == 32
    # each entry sums 32 terms of factors rounded from the float64 SVD: 31 additions, the product and the two
    # factors' roundings, each at most a unit roundoff (EPS32 / 2) of the sum of |terms|
    with torch.no_grad():
        terms = full.scaling * full.lora_B.abs() @ full.lora_A.abs()
    torch.testing.assert_close(full.delta_weight(), delta, rtol=0, atol=float32_bound(terms, depth=32 + 2, factor=0.5))
    errs = []
    for rank in (4, 16):
        lora = LoRA(32, 48, rank=rank, alpha=7.0)
        lora.init_from_delta(delta)
        S = torch.linalg.svdvals(delta.double())
        err = torch.linalg.matrix_norm((lora.delta_weight() - delta).double())
        assert abs(err - S[rank:].square().sum().sqrt()) < 1e-4  # Eckart-Young: the best rank-r error
        errs.append(err)
    assert errs[1] < errs[0]
    x = torch.randn(5, 32)
    # two float32 products through the factors against one: within 4x the direct product's own float32 error
    assert_float32_close(full(x), x @ delta.T, x.double() @ delta.double().T, msg="full-rank LoRA")


@pytest.mark.parametrize("init", ["stepwise", "average", "lower"])
def test_full_rank_lora_conversion_reproduces_the_dense_model(init):
    dense = _dense(6)
    ids = _ids()
    rec = from_pretrained_dense(
        dense,
        num_recursion=2,
        sharing="middle_cycle",
        init=init,
        lora_rank=10**6,
        lora_targets=list(zoo.models.recursive.LORA_TARGETS),
        ln_share=False,
    )
    assert rec.schedule == [0, 1, 2, 1, 2, 3]
    with torch.no_grad():
        # the deltas are the float64 SVD's factors in float32: within 4x the dense model's own float32 error
        assert_float32_close(rec(ids), dense(ids), in_float64(dense)(ids), msg=init)
    # the shared blocks come from the chosen init
    L = dense.model.layers
    q = [layer.self_attn.q_proj.weight for layer in L]
    got = [rec.model.layers[b].self_attn.q_proj.weight for b in (1, 2)]
    want = {"stepwise": [q[1], q[4]], "lower": [q[1], q[2]], "average": [(q[1] + q[3]) / 2, (q[2] + q[4]) / 2]}[init]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)  # a copy, or one rounded sum of two halved: bit for bit
    # without the deltas the recursive model is a different function; low-rank deltas recover part of it
    plain = from_pretrained_dense(dense, num_recursion=2, sharing="middle_cycle", init=init, ln_share=False)
    low = from_pretrained_dense(
        dense,
        num_recursion=2,
        sharing="middle_cycle",
        init=init,
        lora_rank=24,
        lora_targets=list(zoo.models.recursive.LORA_TARGETS),
        ln_share=False,
    )
    with torch.no_grad():
        ref = dense(ids)
        e_plain, e_low = (plain(ids) - ref).abs().mean(), (low(ids) - ref).abs().mean()
    assert e_low < e_plain and e_plain > 1e-2
    assert plain.num_params() < dense.num_params()


def test_conversion_to_a_routed_model_and_bad_inputs():
    dense = _dense(8)
    rec = from_pretrained_dense(dense, num_recursion=3, sharing="middle_cycle", mor="expert", kv_sharing=True)
    assert rec.schedule == [0, 1, 2, 1, 2, 1, 2, 3] and len(rec.routers) == 3
    with torch.no_grad():
        out = rec.generate(_ids(1, 5), max_new_tokens=4)
    assert out.shape == (1, 9)
    with pytest.raises(ValueError, match="init"):
        from_pretrained_dense(dense, num_recursion=2, init="upper")
    with pytest.raises(TypeError, match="unexpected"):
        from_pretrained_dense(dense, num_recursion=2, num_recursions=3)


# ----------------------------------------------------------------------------------------------------------------
# Training and profiling


def _corpus_batches(seq_len, batch, steps, seed=0):
    """Byte-level sequences from CPython's bundled documentation text (a small real corpus)."""
    from pydoc_data.topics import topics

    data = torch.tensor(list("\n".join(topics.values()).encode("utf-8")[:200_000]), dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, data.numel() - seq_len - 1, (batch,), generator=gen)
        yield torch.stack([data[s : s + seq_len + 1] for s in starts.tolist()])


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_routed_model_learns_and_respects_capacity():
    torch.manual_seed(0)
    # the corpus is bytes (_corpus_batches): 256 token ids
    model = RecursiveLM(**dict(SMALL, vocab_size=256, num_hidden_layers=8, num_recursion=3, mor="expert")).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses, T = [], 32
    for batch in _corpus_batches(T, 8, 50):
        out = model(batch[:, :-1], return_routing=True)
        assert [m.sum(1).unique().tolist() for m in out.routing] == [[T], [int(2 / 3 * T)], [int(1 / 3 * T)]]
        loss = F.cross_entropy(out.logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()  # the router BCE joins through the logits' backward
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.5, losses
    assert all(r.net.weight.grad is not None and r.net.weight.grad.abs().sum() > 0 for r in model.routers)


def test_macs_are_counted_per_application():
    from zoo.profile import count_macs

    ids = _ids(1, 16)
    rec = _model()  # no routing: 8 applications of 4 unique blocks
    vanilla = _randomize(RecursiveLM(**dict(SMALL, num_hidden_layers=8)))
    small = _randomize(RecursiveLM(**dict(SMALL, num_hidden_layers=4)))
    macs = {name: count_macs(m, ids)[0] for name, m in (("rec", rec), ("vanilla", vanilla), ("small", small))}
    assert macs["rec"] == macs["vanilla"] and macs["small"] < macs["rec"]
    assert rec.num_params() == small.num_params() < vanilla.num_params()
    routed = _model(mor="expert", inference_routing="topk")  # the traced forward routes by top-k
    with torch.no_grad():
        counts = [m.sum().item() for m in routed(ids, return_routing=True).routing]
    macs_routed, uncounted = count_macs(routed, ids)
    assert counts == [16, 10, 5] and macs["small"] < macs_routed < macs["rec"]
    must = ("matmul", "mm", "linear", "attention", "einsum", "scatter_add")
    assert not [op for op in uncounted if any(m in op for m in must)], uncounted
    assert "aten::topk" not in uncounted and "aten::sort" not in uncounted


def test_lm_profile_of_recursive_models():
    from zoo.profile import profile_lm

    plain, shared = _model(), _model(kv_sharing=True)
    p, q = profile_lm(plain, seq_len=16), profile_lm(shared, seq_len=16)
    assert p["params"] == q["params"] == plain.num_params()
    # KV sharing: one cache slot per unique block (4) instead of one per application (8) ...
    assert p["kv_cache_bytes_per_token"] == 2 * q["kv_cache_bytes_per_token"] == 8 * 2 * 2 * 16 * 4
    # ... and later recursions skip their key/value projections (4 reader applications x 2 x (64 x 32) MACs)
    # and the element-wise RoPE of their keys
    saved = p["macs_per_token_decode"] - q["macs_per_token_decode"]
    assert 4 * 2 * 64 * 32 <= saved < 1.05 * 4 * 2 * 64 * 32, saved
