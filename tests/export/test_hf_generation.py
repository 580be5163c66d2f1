"""The zoo's transformers classes (zoo.export.hf_auto) behave as transformers' own LM classes do.

* ``activation_checkpointing_enable`` / ``gradient_checkpointing_enable`` (what ``Trainer(gradient_checkpointing=
  True)`` calls) make the zoo model recompute its layer runs in the backward pass, with the gradients of the model
  that keeps its activations, through transformers' checkpoint function (reentrant or not).
* A second ``generate`` continues with the cache the first returned (``return_dict_in_generate=True``): the cache,
  made for the first generation, grows to the conversation, and the tokens equal one long generate / a fresh
  generate over the whole sequence.
* The other generation utilities ``LlamaForCausalLM`` takes (left-padded batches, ``use_cache=False``, seeded
  sampling, beams over the zoo's cache, ``num_return_sequences``, a streamer) give the tokens ``LlamaForCausalLM``
  gives on the same weights.
"""

import warnings

import pytest
import small_lms
import torch
import transformers

import zoo
from zoo.export import hf_auto
from zoo.models.mobilellm import pro_layer_types
from zoo.publish import export_pretrained

pytestmark = pytest.mark.export

AutoModelForCausalLM = transformers.AutoModelForCausalLM

SMALL = dict(small_lms.SMALL, vocab_size=128)
PRO = dict(SMALL, num_hidden_layers=3, layer_types=pro_layer_types(3), sliding_window=4, max_position_embeddings=256)
RECURSIVE = dict(SMALL, num_hidden_layers=5)  # middle_cycle, 3 recursions: 1 shared block between unique ends
CASES = {  # the folders of the families whose format transformers lacks (zoo.export.hf_auto's classes)
    "ls": ("mobilellm_125m_ls", SMALL),
    "pro_untied": ("mobilellm_pro_1b", dict(PRO, tie_word_embeddings=False)),
    "mor": ("mor_135m", RECURSIVE),
    "recursive_kv_shared_lora": ("recursive_135m", dict(RECURSIVE, kv_sharing=True, lora_rank=4, ln_share=False)),
}


@torch.no_grad()
def _export(name, kwargs, folder):
    """A zoo model with weights well away from the init (matrices ~ 1.5 / sqrt(fan-in), norms ~ 1), published to
    ``folder`` as the zoo publishes it."""
    model = zoo.create_model(name, **kwargs)
    g = torch.Generator().manual_seed(0)
    for p in model.parameters():
        noise = torch.randn(p.shape, generator=g)
        p.copy_(noise * 1.5 / p.shape[-1] ** 0.5 if p.ndim >= 2 else 1 + 0.2 * noise)
    export_pretrained(model.eval(), folder, model_kwargs=kwargs, latency_runs=0)
    return model


def _prompts(vocab: int = SMALL["vocab_size"]):
    """Two prompts of 7 tokens, the second left-padded by 2."""
    ids = torch.randint(3, vocab, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    ids[1, :2] = 0
    return ids, mask


def _hf(case: str, folder):
    name, kwargs = CASES[case]
    model = _export(name, kwargs, folder)
    return model, AutoModelForCausalLM.from_pretrained(folder)


def _count_runs(layers) -> list:
    """A list that grows by one per forward of any of ``layers`` (their ``forward`` wrapped: module hooks do not
    fire in a non-reentrant checkpoint's recompute)."""
    calls = []
    for layer in layers:

        def forward(*args, _forward=layer.forward, **kwargs):
            calls.append(1)
            return _forward(*args, **kwargs)

        layer.forward = forward
    return calls


def _grads(hf, ids):
    hf.zero_grad(set_to_none=True)
    loss = hf(ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in hf.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "reentrant, case",
    # each family's recompute by default, one of them through the reentrant checkpoint; the rest under -m slow
    [(False, "ls"), (False, "mor"), (True, "recursive_kv_shared_lora")]
    + [
        pytest.param(*c, marks=pytest.mark.slow)
        for c in [(True, "ls"), (True, "mor"), (False, "recursive_kv_shared_lora")]
    ],
)
def test_gradient_checkpointing_recomputes_the_layers_with_equal_gradients(case, reentrant, tmp_path):
    _, hf = _hf(case, tmp_path)
    hf.train()
    ids, _ = _prompts()
    calls = _count_runs(hf.zoo_model.model.layers)
    plain_loss, plain = _grads(hf, ids)
    runs = len(calls)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # 5.24: gradient_checkpointing_enable is the old name
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    assert hf.is_activation_checkpointing and hf.zoo_model.grad_checkpointing
    calls.clear()
    loss, grads = _grads(hf, ids)
    assert len(calls) == 2 * runs  # every layer run again in the backward pass
    assert torch.equal(loss, plain_loss)
    assert grads.keys() == plain.keys() and "model.embed_tokens.weight" in grads
    for key, grad in grads.items():  # equal up to float32 summation order (a reentrant backward sums apart)
        scale = plain[key].abs().max().item()
        torch.testing.assert_close(grad, plain[key], rtol=1e-5, atol=1e-5 * scale, msg=key)

    calls.clear()
    with torch.no_grad():  # inference: nothing is checkpointed
        hf(ids)
    hf.eval()
    hf(ids).logits.sum().backward()  # eval mode: nothing is checkpointed either (as transformers' layers)
    assert len(calls) == 2 * runs

    hf.train()
    hf.activation_checkpointing_disable()
    assert not hf.is_activation_checkpointing and not hf.zoo_model.grad_checkpointing
    calls.clear()
    _grads(hf, ids)
    assert len(calls) == runs


def test_every_n_layers_checkpoints_every_nth_layer_run(tmp_path):
    _, hf = _hf("ls", tmp_path)  # layer sharing: 2 layers, 4 runs
    hf.train()
    ids, _ = _prompts()
    calls = _count_runs(hf.zoo_model.model.layers)
    hf.activation_checkpointing_enable(every_n_layers=2)
    _grads(hf, ids)
    assert len(calls) == 4 + 2  # runs 0 and 2 are recomputed


@pytest.mark.parametrize("case", ["ls", "mor", pytest.param("pro_untied", marks=pytest.mark.slow)])
def test_a_second_generate_continues_the_returned_cache(case, tmp_path):
    _, hf = _hf(case, tmp_path)
    ids, _ = _prompts()
    ids = ids[:1]
    first = hf.generate(ids, max_new_tokens=8, do_sample=False, return_dict_in_generate=True)
    cache = first.cache if hasattr(first, "cache") else first.past_key_values
    assert isinstance(cache, hf_auto.ZooCache)
    made = cache.cache.max_length
    # continued as it stands: the tokens of one long generate
    again = hf.generate(first.sequences, cache=cache, max_new_tokens=8, do_sample=False)
    assert cache.cache.max_length > made  # the cache grew to the conversation
    assert torch.equal(again, hf.generate(ids, max_new_tokens=16, do_sample=False))

    # continued with more tokens of the user's: the tokens of a fresh generate over the whole sequence
    first = hf.generate(ids, max_new_tokens=8, do_sample=False, return_dict_in_generate=True)
    more = torch.tensor([[5, 9, 17]])
    whole = torch.cat([first.sequences, more], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # 5.24's old name of the cache, as the issue spells it
        cont = hf.generate(whole, past_key_values=first.past_key_values, max_new_tokens=8, do_sample=False)
    assert torch.equal(cont, hf.generate(whole, max_new_tokens=8, do_sample=False))

    with pytest.raises(ValueError, match="greedy decoding and sampling"):
        hf.generate(cont, cache=first.past_key_values, max_new_tokens=2, num_beams=2, do_sample=False)


@pytest.mark.parametrize("case", ["mor", pytest.param("pro_untied", marks=pytest.mark.slow)])
def test_beam_search_reorders_the_cache(case, tmp_path):
    """Beams decode over the zoo's cache (each step feeds one token per beam, rows reordered as beams are kept):
    the tokens of beams that recompute the whole sequence each step. MoR: routed slots with their positions."""
    _, hf = _hf(case, tmp_path)
    ids, mask = _prompts()
    fed = []
    forward = hf.zoo_model.forward
    hf.zoo_model.forward = lambda input_ids, **kw: fed.append(input_ids.shape) or forward(input_ids, **kw)
    settings = dict(attention_mask=mask, max_new_tokens=6, num_beams=3, do_sample=False, pad_token_id=0)
    cached = hf.generate(ids, **settings)
    assert fed[0] == (6, 7) and set(fed[1:]) == {(6, 1)}  # the prompts once, then one token per beam
    assert torch.equal(cached, hf.generate(ids, use_cache=False, **settings))


def test_a_cache_grows_in_forward_and_stops_at_the_context(tmp_path):
    _, hf = _hf("mor", tmp_path)
    ids, _ = _prompts()
    cache = hf_auto.ZooCache(hf.zoo_model.new_cache(1, 4))
    with torch.no_grad():
        hf(ids[:1], cache=cache, use_cache=True)  # 7 tokens into a cache made for 4
        step = hf(ids[:1, :2], cache=cache, use_cache=True).logits
        full = hf(torch.cat([ids[:1], ids[:1, :2]], 1)).logits
    assert cache.get_seq_length() == 9 and cache.cache.max_length >= 9
    torch.testing.assert_close(step, full[:, -2:], rtol=1e-4, atol=1e-4)
    limit = hf.config.max_position_embeddings
    with pytest.raises(ValueError, match="context length"):
        hf(torch.zeros(1, limit, dtype=torch.long), cache=cache, use_cache=True)


@pytest.fixture(scope="module")
def zoo_and_llama(tmp_path_factory):
    """One Llama-expressible MobileLLM as the zoo's transformers class and as stock ``LlamaForCausalLM``."""
    kwargs = dict(CASES["ls"][1], pad_token_id=0)
    model = _export("mobilellm_125m", kwargs, tmp_path_factory.mktemp("zoo"))
    folder = tmp_path_factory.mktemp("llama")
    model.save_pretrained(folder)  # a Llama-expressible model: a stock Llama folder
    ours_folder = tmp_path_factory.mktemp("ours")
    model.save_pretrained(ours_folder, format="zoo")
    ours, llama = AutoModelForCausalLM.from_pretrained(ours_folder), AutoModelForCausalLM.from_pretrained(folder)
    assert type(ours) is hf_auto.MobileLLMForCausalLM and type(llama) is transformers.LlamaForCausalLM
    return ours.eval(), llama.eval()


class _Collect(transformers.generation.streamers.BaseStreamer):
    def __init__(self):
        self.got = []

    def put(self, value):
        self.got.append(value.tolist())

    def end(self):
        self.got.append("end")


@pytest.mark.parametrize(
    "settings",
    [
        dict(do_sample=False),
        dict(do_sample=False, use_cache=False),
        dict(do_sample=True, top_k=0),
        dict(do_sample=True, top_p=0.9, temperature=0.7, num_return_sequences=2),
        dict(do_sample=False, num_beams=3),
        dict(do_sample=False, num_beams=3, num_return_sequences=2),
    ],
    ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()),
)
def test_generation_utilities_give_llamas_tokens(zoo_and_llama, settings):
    ids, mask = _prompts()  # the second prompt left-padded
    got = []
    for model in zoo_and_llama:
        torch.manual_seed(7)  # sampling: the same seed, the same draws
        got.append(model.generate(ids, attention_mask=mask, max_new_tokens=6, pad_token_id=0, **settings))
    assert got[0].shape[1] == ids.shape[1] + 6
    assert torch.equal(got[0], got[1])


def test_a_streamer_sees_llamas_tokens(zoo_and_llama):
    ids, _ = _prompts()
    streams = []
    for model in zoo_and_llama:
        streamer = _Collect()
        model.generate(ids[:1], max_new_tokens=4, do_sample=False, streamer=streamer)
        streams.append(streamer.got)
    assert streams[0] == streams[1] and streams[0][0] == ids[:1].tolist() and streams[0][-1] == "end"
    assert len(streams[0]) == 6


def test_the_zoo_model_checkpoints_without_transformers():
    """``set_grad_checkpointing`` on the zoo model itself: the same recompute (default non-reentrant)."""
    model = zoo.create_model("mobilellm_125m", **CASES["ls"][1]).train()
    ids, _ = _prompts()
    calls = _count_runs(model.model.layers)
    model.set_grad_checkpointing()
    model(ids).sum().backward()
    assert len(calls) == 2 * len(model.schedule)
    with pytest.raises(ValueError, match="every_n_layers"):
        model.set_grad_checkpointing(True, every_n_layers=0)
