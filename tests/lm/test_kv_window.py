"""Sliding-window layers keep only their window in the KV cache (MobileLLM-Pro's local layers)."""

import pytest
import torch
from small_lms import SMALL, tiny_lm_args
from tolerances import assert_float32_close, in_float64

import zoo
from zoo.bench.harness import randomize_
from zoo.lm import KVCache

W = 5
PRO = dict(SMALL, num_hidden_layers=4, layer_types=["sliding_attention", "full_attention"] * 2, sliding_window=W)


@pytest.fixture(scope="module")
def pro():
    return randomize_(zoo.create_model("mobilellm_pro_1b", **PRO), 0).eval()


def _ids(batch, length, seed=0):
    return torch.randint(0, SMALL["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(seed))


def test_window_slots_hold_only_their_window(pro):
    cache = pro.new_cache(2, 64)
    full = pro.new_cache(2, 64, windowed=False)
    lengths = [k.shape[2] for k in cache._slot_keys]
    assert lengths == [W, 64, W, 64]
    assert cache.nbytes == full.nbytes // 64 * (64 + W) // 2
    assert cache.bytes_per_token == full.bytes_per_token // 2  # once the windows are full, half the layers grow
    assert pro.kv_cache_bytes_per_token(length=2048) == pytest.approx(
        pro.kv_cache_bytes_per_token() * (2 * 2048 + 2 * W) / (4 * 2048)
    )


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_windowed_cache_equals_full_recompute(pro, chunk):
    ids = _ids(2, 19)
    with torch.no_grad():
        want = pro(ids)
        cache = pro.new_cache(2, 19)
        got = [pro(ids[:, i : i + chunk], past_key_values=cache).logits for i in range(0, 19, chunk)]
    assert any(cache.evicted(s) > 0 for s in range(cache.num_slots))  # the windows did drop tokens
    assert cache.evicted(1) == 0  # full-attention slots never do
    # the windowed steps differ from the recompute in float32 summation order only
    assert_float32_close(torch.cat(got, 1), want, in_float64(pro)(ids), msg=f"chunk {chunk}")


def test_windowed_cache_with_left_padding(pro):
    ids = _ids(2, 12, seed=3)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :4] = 0
    with torch.no_grad():
        windowed = pro.generate(ids, attention_mask=mask, max_new_tokens=10)
        # the same decode over a cache without windows (everything held and masked)
        cache = pro.new_cache(2, 22, windowed=False)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        full_mask = torch.cat([mask, torch.ones(2, 10, dtype=torch.long)], 1)
        logits = pro(ids, attention_mask=mask, position_ids=positions, past_key_values=cache).logits[:, -1]
        out = []
        for n in range(10):
            token = logits.argmax(-1)
            out.append(token)
            positions = positions[:, -1:] + 1
            logits = pro(token[:, None], attention_mask=full_mask[:, : 13 + n], position_ids=positions,
                         past_key_values=cache).logits[:, -1]  # fmt: skip
    assert torch.equal(windowed[:, 12:], torch.stack(out, 1))


def test_grad_flows_through_a_windowed_cache(pro):
    ids = _ids(1, 12, seed=5)

    def loss_and_grads(model, windowed):
        model.zero_grad()
        cache = model.new_cache(1, 12, windowed=windowed)
        loss = sum(model(ids[:, i : i + 4], past_key_values=cache).logits.square().mean() for i in range(0, 12, 4))
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        return loss.detach(), grads

    loss, grads = loss_and_grads(pro, True)
    loss2, grads2 = loss_and_grads(pro, False)
    loss64, grads64 = loss_and_grads(in_float64(pro), False)
    # the windowed and the full cache differ in float32 summation order only: within 4x the full cache's own error
    assert_float32_close(loss, loss2, loss64, msg="loss")
    for (name, _), a, b, b64 in zip(pro.named_parameters(), grads, grads2, grads64):
        assert_float32_close(a, b, b64, msg=name)


def test_crop_cannot_rewind_past_the_window(pro):
    cache = pro.new_cache(1, 32)
    with torch.no_grad():
        pro(_ids(1, 12), past_key_values=cache)
    cache.crop(10)  # two tokens back: the windows still hold them
    assert cache.seq_length == 10 and cache.held[0] == W - 2
    with pytest.raises(ValueError, match="crop to at least"):
        cache.crop(2)


def test_kv_cache_argument_checks():
    with pytest.raises(ValueError, match="windows must be 2 entries"):
        KVCache(2, 1, 1, 8, 4, windows=[3])
    with pytest.raises(ValueError, match="routed slots"):
        KVCache(2, 1, 1, 8, 4, track_positions=True, windows=[3, None])


MOR = tiny_lm_args("mor_135m")


@pytest.mark.parametrize("threshold", [None, 0.0])
def test_routed_slots_start_at_their_capacity_and_grow(threshold):
    extra = {} if threshold is None else dict(inference_routing="threshold", routing_threshold=threshold)
    model = randomize_(zoo.create_model("mor_135m", **MOR, **extra), 0).eval()
    cache = model.new_cache(2, 40)
    caps = list(cache.capacity)
    assert min(caps) < 40  # the routed steps' slots are smaller than the sequence
    assert cache.nbytes < model.kv_cache_bytes_per_token() * 2 * 40
    ids = _ids(2, 40, seed=7)
    with torch.no_grad():
        want = model(ids)
        got = [model(ids[:, :30], past_key_values=cache).logits]
        got += [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(30, 40)]
        want64 = in_float64(model)(ids)  # the routing is decided by clear margins: float64 routes the same
    assert_float32_close(torch.cat(got, 1), want, want64, msg=f"threshold {threshold}")
    if threshold == 0.0:  # every token routed everywhere: the small slots had to grow
        assert any(after > before for before, after in zip(caps, cache.capacity))
