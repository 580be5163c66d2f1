"""Language models under misuse and outside no_grad (issue 13, items 7 and 13).

* The KV cache works with grad enabled, for all three LM families (MobileLLM, its -LS / sliding-window variants,
  the recursive LMs with routing and KV sharing): the logits equal the no_grad ones, a cached decode step too,
  gradients reach the parameters as in a cache-free forward, and the cache holds no graph.
* Bad generation and forward inputs, one row each: the call, the error class (or warning) and a fragment of
  the message. Tiny models, so that every row runs in milliseconds.
"""

import warnings

import pytest
import torch
from small_lms import SMALL, tiny_lm_args
from tolerances import assert_float32_close, in_float64

import zoo
from zoo.bench.harness import randomize_
from zoo.data import lm_tokenizer

CONTEXT = 64
# (registered name, options on top of its tiny config, tests/small_lms.py's tiny_lm_args)
FAMILIES = {
    "mobilellm": ("mobilellm_125m", {}),
    "mobilellm_ls": ("mobilellm_125m_ls", {}),
    "mobilellm_pro": ("mobilellm_pro_1b", {}),  # a global layer and a sliding window of 4
    "mor_expert": ("mor_135m", {}),
    "mor_token": ("mor_135m", dict(mor="token")),
    "recursive_kv_sharing": ("recursive_135m", dict(kv_sharing=True)),
    "recursive_lora": ("recursive_135m", dict(lora_rank=2)),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model(family: str):
    name, kwargs = FAMILIES[family]
    model = randomize_(zoo.create_model(name, **tiny_lm_args(name), max_position_embeddings=CONTEXT, **kwargs)).eval()
    with torch.no_grad():
        for router in getattr(model, "routers", []):  # larger router weights: mixed routing decisions
            for p in router.parameters():
                p.mul_(3.0)
    return model


def _ids(batch=2, length=7, seed=0):
    return torch.randint(0, SMALL["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(seed))


def _grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


# ----------------------------------------------------------------------------------------------------------------
# Item 7: the cache API with grad enabled
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_forward_with_grad_equals_no_grad_and_backpropagates(family):
    model = _model(family)
    ids, step = _ids(), _ids(length=1, seed=1)
    with torch.no_grad():
        cache = model.new_cache(2, 16)
        prefill_ref = model(ids, past_key_values=cache).logits
        step_ref = model(step, past_key_values=cache).logits

    # the documented calls, outside no_grad
    out = model(ids, use_cache=True)
    torch.testing.assert_close(out.logits, prefill_ref, rtol=0, atol=0)
    cache = model.new_cache(2, 16)
    prefill = model(ids, past_key_values=cache).logits
    decoded = model(step, past_key_values=cache).logits
    torch.testing.assert_close(prefill, prefill_ref, rtol=0, atol=0)
    torch.testing.assert_close(decoded, step_ref, rtol=0, atol=0)
    assert prefill.requires_grad and decoded.requires_grad
    assert not any(t.requires_grad for t in cache._slot_keys + cache._slot_values)  # the cache holds no graph

    # gradients flow through the logits: a prefill into an empty cache gives the cache-free forward's gradients
    decoded.square().sum().backward()  # a decode step backpropagates too
    assert _grads(model)
    model(ids, past_key_values=model.new_cache(2, 16)).logits.square().sum().backward()
    cached = _grads(model)
    model(ids).square().sum().backward()
    plain = _grads(model)
    model64 = in_float64(model)
    model64(ids).square().sum().backward()
    plain64 = _grads(model64)
    assert cached.keys() == plain.keys() and plain
    for name in plain:  # float32 summation order only: within 4x the cache-free gradients' own error
        assert_float32_close(cached[name], plain[name], plain64[name], msg=name)


# ----------------------------------------------------------------------------------------------------------------
# Item 13: bad generation and forward inputs
# ----------------------------------------------------------------------------------------------------------------


def _mask(*rows):
    return torch.tensor(rows)


ONES, LEFT, RIGHT = [1] * 7, [0, 0] + [1] * 5, [1] * 5 + [0, 0]

# (id, call, error class or warning class, message fragment)
ROWS = [
    # generate: context length (the prompt, max_new_tokens, the limit, what to do)
    (
        "new tokens past the context",
        lambda m: m.generate(_ids(), max_new_tokens=10**9),
        ValueError,
        f"a prompt of 7 tokens and max_new_tokens=1000000000 make 1000000007 tokens, more than this model's "
        f"context length of {CONTEXT} (config.max_position_embeddings): lower max_new_tokens to {CONTEXT - 7}",
    ),
    (
        "prompt past the context",
        lambda m: m.generate(_ids(length=CONTEXT + 6), max_new_tokens=4),
        ValueError,
        f"a prompt of {CONTEXT + 6} tokens and max_new_tokens=4 make {CONTEXT + 10} tokens, more than this "
        f"model's context length of {CONTEXT} (config.max_position_embeddings): keep the prompt's last "
        f"{CONTEXT - 4} tokens",
    ),
    (
        "prompt and new tokens just past the context",
        lambda m: m.generate(_ids(), max_new_tokens=CONTEXT - 6),
        ValueError,
        f"keep the prompt's last 6 tokens (input_ids[:, -6:]) or lower max_new_tokens to {CONTEXT - 7} or less",
    ),
    # generate: attention masks
    (
        "right-padded prompt",
        lambda m: m.generate(_ids(), max_new_tokens=3, attention_mask=_mask(ONES, RIGHT)),
        UserWarning,
        "right-padding was detected in attention_mask (a row ends with 0)",
    ),
    (
        "mask of another batch size",
        lambda m: m.generate(_ids(), max_new_tokens=3, attention_mask=_mask(LEFT)),
        ValueError,
        "attention_mask must be a tensor of shape (batch, cached + new tokens) = (2, 7), got (1, 7)",
    ),
    (
        "mask of another length",
        lambda m: m.generate(_ids(), max_new_tokens=3, attention_mask=_mask(ONES[1:], LEFT[1:])),
        ValueError,
        "= (2, 7), got (2, 6)",
    ),
    (
        "mask with an all-zero row",
        lambda m: m.generate(_ids(), max_new_tokens=3, attention_mask=_mask(ONES, [0] * 7)),
        ValueError,
        "attention_mask rows [1] are all 0: every sequence needs at least one real token",
    ),
    (
        "mask with values other than 0 and 1",
        lambda m: m.generate(_ids(), max_new_tokens=3, attention_mask=_mask(ONES, [0, 2, 2, 1, 1, 1, 1])),
        ValueError,
        "attention_mask may hold only 0 (padding) and 1 (real token), got [2]",
    ),
    # generate: a pad id the model cannot read, refused before decoding (not as the model's input mid-way)
    (
        "pad id outside the vocabulary",
        lambda m: m.generate(_ids(), max_new_tokens=5, eos_token_id=_first_token(m), pad_token_id=10**6),
        ValueError,
        "pad_token_id=1000000 (the call's or the generation config's) lies outside the vocabulary "
        f"[0, {SMALL['vocab_size']}): a sequence that stops is padded with it",
    ),
    # the plain forward
    (
        "forward: mask of another batch size",
        lambda m: m(_ids(), attention_mask=_mask(LEFT)),
        ValueError,
        "attention_mask must be a tensor of shape (batch, cached + new tokens) = (2, 7), got (1, 7)",
    ),
    (
        "forward: a list as mask",
        lambda m: m(_ids(), attention_mask=[ONES, LEFT]),
        ValueError,
        "= (2, 7), got list",
    ),
    (
        "forward: fractional mask",
        lambda m: m(_ids(), attention_mask=torch.full((2, 7), 0.5)),
        ValueError,
        "may hold only 0 (padding) and 1 (real token), got [0.5]",
    ),
    (
        "forward: all-zero row",
        lambda m: m(_ids(), attention_mask=_mask([0] * 7, ONES)),
        ValueError,
        "attention_mask rows [0] are all 0",
    ),
    (
        "forward: past the context",
        lambda m: m(_ids(length=CONTEXT + 1)),
        ValueError,
        f"{CONTEXT + 1} tokens exceed this model's context length of {CONTEXT} tokens",
    ),
    (
        "forward: past the context with a cache",
        lambda m: m(_ids(length=2), past_key_values=_filled_cache(m, CONTEXT - 1)),
        ValueError,
        f"2 tokens after {CONTEXT - 1} cached ones exceed this model's context length of {CONTEXT} tokens",
    ),
    (
        "forward: mask of the new tokens only, with a cache",
        lambda m: m(_ids(length=1), attention_mask=torch.ones(2, 1), past_key_values=_filled_cache(m, 7)),
        ValueError,
        "= (2, 8), got (2, 1)",
    ),
]


def _first_token(model) -> int:
    """The first new token of _ids()'s first row: as a stop id, that row finishes at once and the other goes on."""
    with torch.no_grad():
        return int(model(_ids())[0, -1].argmax())


def _filled_cache(model, length: int):
    """A cache that has seen ``length`` tokens (room for two more)."""
    cache = model.new_cache(2, length + 2)
    with torch.no_grad():
        model(_ids(length=length), past_key_values=cache)
    return cache


@pytest.mark.parametrize("family", ["mobilellm", "mor_expert"])
@pytest.mark.parametrize("call, error, fragment", [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_bad_generation_inputs(family, call, error, fragment):
    model = _model(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if issubclass(error, Warning):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call(model)
        messages = [str(w.message) for w in caught if issubclass(w.category, error)]
        assert len(messages) == 1 and fragment in messages[0], messages  # once per call, not once per step
    else:
        with pytest.raises(error) as info:
            call(model)
        assert fragment in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing in the model changed


def test_the_checks_refuse_only_what_is_wrong():
    """The edge of what is accepted: a left-padded batch decoding up to exactly the context length (quiet, the
    full length), one token more refused; all-ones and bool masks give the unpadded and the integer results."""
    model = _model("mobilellm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model.generate(_ids(), max_new_tokens=CONTEXT - 7, attention_mask=_mask(ONES, LEFT))
    assert out.shape == (2, CONTEXT)
    with pytest.raises(ValueError, match=f"lower max_new_tokens to {CONTEXT - 7} or less"):
        model.generate(_ids(), max_new_tokens=CONTEXT - 6, attention_mask=_mask(ONES, LEFT))
    with torch.no_grad():
        torch.testing.assert_close(model(_ids(), attention_mask=torch.ones(2, 7)), model(_ids()), rtol=0, atol=0)
        mask = _mask(ONES, LEFT)
        # the same mask in another dtype: bit for bit
        torch.testing.assert_close(
            model(_ids(), attention_mask=mask.bool()), model(_ids(), attention_mask=mask), rtol=0, atol=0
        )


def test_python_side_checks_are_skipped_while_tracing(monkeypatch):
    """Under torch.compile / torch.export the data-dependent checks would break the graph: they step aside."""
    model = _model("mobilellm")
    bad = torch.full((2, 7), 2)
    with pytest.raises(ValueError, match="only 0"):
        model._padding_mask(bad, 2, 7)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert model._padding_mask(bad, 2, 7).dtype == torch.bool
    model._check_ids(torch.full((2, 7), 10**6))  # out of the vocabulary: the embedding's own check is left


# ----------------------------------------------------------------------------------------------------------------
# Chat templates are data from elsewhere: bounded in size, rendered size and time
# ----------------------------------------------------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT_ROWS = [
    # (id, template, fragment)
    ("template too long", "x" * (lm_tokenizer.MAX_TEMPLATE_CHARS + 1), "has 262145 characters, more than 262144"),
    ("a loop that writes nothing", "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
     "ran for more than 1 s and was stopped"),
    ("a loop that writes", "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}",
     "rendering passed 100000 characters and was stopped"),
    ("one huge repetition", "{{ 'a' * 10**10 }}", "repeats a value of length 1 10000000000 times, past the 100000"),
    ("one huge power", "{{ 10 ** 100000000 }}", "raises to the power 100000000 (at most 64)"),
]  # fmt: skip


@pytest.mark.parametrize("template, fragment", [r[1:] for r in CHAT_ROWS], ids=[r[0] for r in CHAT_ROWS])
def test_chat_templates_are_bounded(monkeypatch, template, fragment):
    # the time bound is the one under test only where nothing is written; elsewhere it stays far above what a busy
    # machine takes to write 100,000 characters, so the written-size bound is the one that stops the loop
    seconds = 1.0 if "ran for more than" in fragment else 60.0
    monkeypatch.setattr(lm_tokenizer, "MAX_RENDER_SECONDS", seconds)
    monkeypatch.setattr(lm_tokenizer, "MAX_RENDERED_CHARS", 100_000)
    with pytest.raises(ValueError) as info:
        lm_tokenizer.render_chat_template(template, MESSAGES)
    assert fragment in str(info.value)
    ok = "{% for m in messages %}<{{ m.role }}>{{ m.content * 2 }}{% endfor %}{{ 2 ** 3 }}"
    assert lm_tokenizer.render_chat_template(ok, MESSAGES) == "<user>hihi8"  # what is within the bounds renders
