"""MobileLLM family: registry and exact sizes, parity with transformers' Llama, sliding windows, generation,
checkpoint loading (the authors' layouts and their known defects), export/import through transformers,
tokenizers and LM profiling. Full-width 125M shapes with few layers keep it fast. Cached decoding against a full
recompute, greedy generation and the save/load round trip of every variant are tests/models/test_lm_models.py's."""

import json

import pytest
import torch
from small_lms import SMALL

import zoo
from zoo.bench.harness import randomize_
from zoo.models.mobilellm import MobileLLM, MobileLLMConfig, pro_layer_types, save_pretrained, to_llama_config
from zoo.weights import CheckpointError, CheckpointMismatchError, save_state_dict

# the authors' table (tied embeddings counted once)
EXPECTED = {
    "mobilellm_125m": (30, 576, 9, 3, 1536, 32000, 124_635_456),
    "mobilellm_350m": (32, 960, 15, 5, 2560, 32000, 345_355_200),
    "mobilellm_600m": (40, 1152, 18, 6, 3072, 32000, 603_188_352),
    "mobilellm_1b": (54, 1280, 20, 5, 3584, 32000, 1_005_461_760),
    "mobilellm_1.5b": (54, 1600, 25, 5, 4352, 32000, 1_511_188_800),
    "mobilellm_125m_ls": (30, 576, 9, 3, 1536, 32000, 124_635_456),
    "mobilellm_350m_ls": (32, 960, 15, 5, 2560, 32000, 345_355_200),
    "mobilellm_r1_140m": (15, 576, 9, 3, 2048, 128256, 140_248_512),
    "mobilellm_r1_360m": (15, 1024, 16, 4, 4096, 128256, 359_431_168),
    "mobilellm_r1_950m": (22, 1536, 24, 6, 6144, 128256, 949_685_760),
    "mobilellm_pro_1b": (30, 1280, 20, 4, 6144, 202048, 1_084_453_120),
}
# parity and the transformers round trip run 125M-shaped models (576 wide, 9/3 heads, 1536 FFN, 32k vocab) with
# LAYERS layers; the other checks run tests/small_lms.py's SMALL (as many layers), to keep the default test run short
LAYERS = SMALL["num_hidden_layers"]


def _randomize(model, seed=0):
    """Weights of realistic scale (N(0, 1/fan_in), embeddings N(0, 0.2^2), norms near 1): logits of a few units,
    well separated for greedy comparisons."""
    randomize_(model, seed)
    return model.eval()


def _model(name="mobilellm_125m", seed=0, small=True, **kwargs):
    shape = SMALL if small else {"num_hidden_layers": LAYERS}
    return _randomize(zoo.create_model(name, **{**shape, **kwargs}), seed)


def _llama(model, unroll=False):
    """transformers' LlamaForCausalLM(tie_word_embeddings=True) with the zoo model's weights (``unroll``: every
    layer twice, for layer sharing)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = {k: v for k, v in to_llama_config(model.config).items() if k not in ("architectures", "model_type")}
    sd = model.state_dict()
    if unroll:
        cfg["num_hidden_layers"] *= 2
        sd = {
            (k.replace(f"layers.{k.split('.')[2]}.", f"layers.{j}.") if ".layers." in k else k): v
            for k, v in sd.items()
            for j in ((2 * int(k.split(".")[2]), 2 * int(k.split(".")[2]) + 1) if ".layers." in k else (0,))
        }
    ref = LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation="sdpa"))
    result = ref.load_state_dict(sd, strict=False)
    assert result.unexpected_keys == [] and result.missing_keys in ([], ["lm_head.weight"])
    assert ref.lm_head.weight is ref.model.embed_tokens.weight
    return ref.eval()


def _ids(batch=2, length=12, seed=1, vocab=SMALL["vocab_size"]):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------------
# Registry, sizes, config


def test_registered_names_and_exact_param_counts_on_meta():
    assert zoo.list_models(family="mobilellm") == sorted(EXPECTED)
    for name, (layers, hidden, heads, kv, ffn, vocab, params) in EXPECTED.items():
        with torch.device("meta"):
            model = zoo.create_model(name)
        c = model.config
        assert (
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.intermediate_size,
            c.vocab_size,
        ) == (layers, hidden, heads, kv, ffn, vocab), name
        assert c.head_dim == 64 and c.rms_norm_eps == 1e-5 and c.tie_word_embeddings, name
        assert sum(p.numel() for p in model.parameters()) == params == zoo.model_info(name)["reference"]["params"]
        assert model.lm_head is None and model.output_weight is model.model.embed_tokens.weight
        assert len(model.schedule) == (2 * layers if name.endswith("_ls") else layers)
        # export format: stock Llama for everything but layer sharing and MobileLLM-Pro's local layers
        assert model.config.llama_compatible == (not name.endswith("_ls") and "pro" not in name), name
    info = zoo.model_info("mobilellm_125m")
    assert info["task"] == "text-generation" and "tied embeddings counted once" in info["reference"]["convention"]
    assert info["reference"]["commonsense_avg"] == 46.3


def test_config_fields_and_validation():
    c = MobileLLMConfig()
    assert c.rope_theta == 1e4 and c.max_position_embeddings == 2048 and not c.layer_sharing
    pro = zoo.create_model("mobilellm_pro_1b", **dict(SMALL, num_hidden_layers=8, layer_types=pro_layer_types(8)))
    assert pro.config.sliding_window == 512 and pro.config.layer_types == pro_layer_types(8)
    assert [layer.self_attn.sliding_window for layer in pro.model.layers] == [None, 512, 512, 512, None, 512, 512, None]
    types = pro_layer_types(30)
    assert types.count("sliding_attention") == 21 and types[0] == types[-1] == "full_attention"
    with pytest.raises(TypeError, match="did you mean 'num_hidden_layers'"):
        zoo.create_model("mobilellm_125m", num_hidden_layer=2)
    with pytest.raises(TypeError, match="num_classes"):
        zoo.create_model("mobilellm_125m", num_classes=10)
    with pytest.raises(ValueError, match="multiple of num_key_value_heads"):
        MobileLLMConfig(num_key_value_heads=4)
    with pytest.raises(ValueError, match="sliding_window"):
        MobileLLMConfig(num_hidden_layers=2, layer_types=["full_attention", "sliding_attention"])
    with pytest.raises(ValueError, match="entries for 30 layers"):
        MobileLLMConfig(layer_types=["full_attention"])


def test_input_validation():
    model = zoo.create_model("mobilellm_125m", **SMALL)
    vocab = SMALL["vocab_size"]
    with pytest.raises(ValueError, match=rf"token ids must lie in \[0, {vocab}\)"):
        model(torch.tensor([[5, vocab]]))
    with pytest.raises(ValueError, match="integer tensor of shape"):
        model(torch.randn(1, 4))
    with pytest.raises(ValueError, match="cache is full"):
        model(torch.tensor([[1, 2, 3]]), past_key_values=model.new_cache(1, 2))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(torch.tensor([[1]]), 2, do_sample=True, temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(torch.tensor([[1]]), 2, do_sample=True, top_p=1.5)


# ----------------------------------------------------------------------------------------------------------------
# Parity with transformers


def test_parity_with_transformers_llama_tied():
    model = _model(small=False)
    ref = _llama(model)
    ids = _ids(vocab=32000)
    with torch.no_grad():
        diff = (model(ids) - ref(ids).logits).abs().max().item()
    assert diff <= 1e-4, diff
    with torch.no_grad():
        ours = model.generate(ids, max_new_tokens=8)
        theirs = ref.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=8,
            min_new_tokens=8,
            do_sample=False,
            pad_token_id=0,
        )
    assert torch.equal(ours, theirs)


@pytest.mark.slow  # 2-7 s (a training run, a compile or a parity sweep): outside the 4-minute default run
def test_layer_sharing_parity_with_unrolled_llama():
    model = _model("mobilellm_125m_ls", small=False)
    assert model.schedule == [0, 0, 1, 1]
    ref = _llama(model, unroll=True)
    ids = _ids(vocab=32000)
    with torch.no_grad():
        diff = (model(ids) - ref(ids).logits).abs().max().item()
        ours = model.generate(ids, max_new_tokens=6)
        theirs = ref.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=6,
            min_new_tokens=6,
            do_sample=False,
            pad_token_id=0,
        )
    assert diff <= 1e-4, diff
    assert torch.equal(ours, theirs)
    # a layer-shared model is not its plain twin (the repeat changes the function)
    plain = zoo.create_model("mobilellm_125m", num_hidden_layers=LAYERS).eval()  # 125M-shaped, as model
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (plain(ids) - model(ids)).abs().max() > 1e-2


# ----------------------------------------------------------------------------------------------------------------
# Cached decoding


def _pro_small(**kwargs):
    return _randomize(
        zoo.create_model(
            "mobilellm_pro_1b",
            **dict(SMALL, num_hidden_layers=4, layer_types=pro_layer_types(4), sliding_window=5, **kwargs),
        )
    )


def test_sliding_window_restricts_attention():
    model = _pro_small()
    ids = _ids(1, 12)
    with torch.no_grad():
        base = model(ids)
        changed = ids.clone()
        changed[0, 0] = (changed[0, 0] + 1) % SMALL["vocab_size"]
        # the first token still reaches the last through the global layers
        assert (model(changed)[0, -1] - base[0, -1]).abs().max() > 1e-5
    all_local = _randomize(
        zoo.create_model(
            "mobilellm_pro_1b",
            **dict(SMALL, num_hidden_layers=2, sliding_window=3, layer_types=["sliding_attention"] * 2),
        )
    )
    with torch.no_grad():
        a, b = all_local(ids), all_local(changed)
    # two local layers of window 3 see at most 2 * 2 = 4 tokens back: position 5 on is untouched by token 0
    assert (a[0, 5:] - b[0, 5:]).abs().max() == 0 and (a[0, :5] - b[0, :5]).abs().max() > 0


def test_left_padded_batch_generates_like_single_prompts():
    model = _model()
    long, short = _ids(1, 10, seed=3), _ids(1, 6, seed=4)
    batch = torch.cat([long, torch.cat([torch.zeros(1, 4, dtype=torch.long), short], 1)])
    mask = torch.ones_like(batch)
    mask[1, :4] = 0
    out = model.generate(batch, max_new_tokens=6, attention_mask=mask)
    assert torch.equal(out[0], model.generate(long, max_new_tokens=6)[0])
    assert torch.equal(out[1, 4:], model.generate(short, max_new_tokens=6)[0])


# ----------------------------------------------------------------------------------------------------------------
# Generation


def test_generate_sampling_and_eos():
    model = _model()
    ids = _ids(2, 5)
    greedy = model.generate(ids, max_new_tokens=6)
    assert greedy.shape == (2, 11) and torch.equal(greedy[:, :5], ids)
    # top_k=1 sampling and a tiny top_p are greedy; a seeded generator is reproducible
    assert torch.equal(model.generate(ids, 6, do_sample=True, top_k=1), greedy)
    assert torch.equal(model.generate(ids, 6, do_sample=True, top_p=1e-6), greedy)
    s1 = model.generate(ids, 6, do_sample=True, temperature=5.0, generator=torch.Generator().manual_seed(0))
    s2 = model.generate(ids, 6, do_sample=True, temperature=5.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s1, s2) and not torch.equal(s1, greedy)
    topk = model.generate(
        ids, 20, do_sample=True, temperature=100.0, top_k=3, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        logits = model(topk[:, :-1])[:, 4:]
    allowed = logits.topk(3, dim=-1).indices
    assert (allowed == topk[:, 5:, None]).any(-1).all()  # every sampled token was among the top 3
    # eos: the first sequence stops at its first greedy eos, then pads; decoding ends when all have finished
    eos = int(greedy[0, 7])
    stop = next(j for j in range(5, 11) if greedy[0, j] == eos) + 1
    pad = model.config.vocab_size - 1
    out = model.generate(ids, max_new_tokens=6, eos_token_id=eos, pad_token_id=pad)
    assert torch.equal(out[0, :stop], greedy[0, :stop]) and (out[0, stop:] == pad).all()
    single = model.generate(ids[:1], max_new_tokens=6, eos_token_id=eos)
    assert single.shape[1] == stop and single[0, -1] == eos
    assert torch.equal(model.generate(ids, max_new_tokens=0), ids)


# ----------------------------------------------------------------------------------------------------------------
# Loading


def _authors_state_dict(model):
    """The authors' checkpoint layout: Llama keys, no lm_head, per-layer RoPE buffers, float16."""
    sd = {k: v.half() for k, v in model.state_dict().items()}
    for i in range(model.config.num_hidden_layers):
        sd[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.ones(32)
    return sd


def _authors_config(model, **extra):
    cfg = {k: v for k, v in to_llama_config(model.config).items()}
    cfg.update(
        architectures=["MobileLLMForCausalLM"],
        model_type="mobilellm",
        tie_word_embeddings=False,
        share_embedding=True,
        layer_sharing=model.config.layer_sharing,
        **extra,
    )
    return cfg


def test_load_authors_bin_with_shared_embeddings(tmp_path):
    src = _model()
    ref = zoo.create_model("mobilellm_125m", **SMALL).eval()
    ref.load_state_dict({k: v.half().float() for k, v in src.state_dict().items()})
    torch.save(_authors_state_dict(src), tmp_path / "pytorch_model.bin")
    ids = _ids()
    model = zoo.create_model(
        "mobilellm_125m", pretrained=True, **SMALL, pretrained_cfg_overlay={"file": str(tmp_path / "pytorch_model.bin")}
    ).eval()
    with torch.no_grad():
        assert torch.equal(model(ids), ref(ids))
    model2 = zoo.create_model("mobilellm_125m", **SMALL, checkpoint_path=str(tmp_path / "pytorch_model.bin")).eval()
    with torch.no_grad():
        assert torch.equal(model2(ids), ref(ids))


def test_load_authors_folder_config_and_layer_share(tmp_path):
    src = _model("mobilellm_125m_ls")
    torch.save(_authors_state_dict(src), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(_authors_config(src)))
    ids = _ids()
    # the folder's config (2 layers, layer_sharing, share_embedding) describes the weights
    model = zoo.create_model("mobilellm_125m_ls", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path)})
    same = MobileLLM.from_pretrained(tmp_path)
    assert model.config.num_hidden_layers == LAYERS and model.config.layer_sharing and model.lm_head is None
    with torch.no_grad():
        expected = src(ids)
        assert (model.eval()(ids) - expected).abs().max() < 0.05  # float16 weights
        assert torch.equal(same.eval()(ids), model(ids))


def test_bot_converted_safetensors_without_embeddings_is_refused(tmp_path):
    src = _model()
    sd = {k: v for k, v in src.state_dict().items() if k != "model.embed_tokens.weight"}
    save_state_dict(sd, tmp_path / "model.safetensors")
    model = zoo.create_model("mobilellm_125m", **SMALL)
    before = model.model.layers[0].self_attn.q_proj.weight.clone()
    with pytest.raises(CheckpointError, match="bot-converted model.safetensors.*pytorch_model.bin"):
        zoo.create_model(
            "mobilellm_125m",
            pretrained=True,
            **SMALL,
            pretrained_cfg_overlay={"file": str(tmp_path / "model.safetensors")},
        )
    with pytest.raises(CheckpointError, match="no model.embed_tokens.weight"):
        zoo.load_checkpoint(model, str(tmp_path / "model.safetensors"))
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, before)  # nothing half-loaded


def test_untied_output_weights_are_refused_for_a_tied_model(tmp_path):
    sd = _model().state_dict()
    sd["lm_head.weight"] = torch.randn_like(sd["model.embed_tokens.weight"])
    save_state_dict(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointMismatchError, match="tie_word_embeddings=False"):
        zoo.create_model("mobilellm_125m", **SMALL, checkpoint_path=str(tmp_path / "model.safetensors"))
    untied = zoo.create_model(
        "mobilellm_125m", **SMALL, tie_word_embeddings=False, checkpoint_path=str(tmp_path / "model.safetensors")
    )
    assert torch.equal(untied.lm_head.weight, sd["lm_head.weight"])


# ----------------------------------------------------------------------------------------------------------------
# Export / import through transformers


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_export_round_trip_through_transformers(tmp_path):
    from transformers import LlamaForCausalLM

    model = _model(small=False)
    out = save_pretrained(model, tmp_path / "hf", model_name="mobilellm_125m")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    hf = LlamaForCausalLM.from_pretrained(out).eval()
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    ids = _ids(vocab=32000)
    with torch.no_grad():
        diff = (hf(ids).logits - model(ids)).abs().max().item()
        assert diff <= 1e-4, diff
        theirs = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=8,
            min_new_tokens=8,
            do_sample=False,
            pad_token_id=0,
        )
    assert torch.equal(model.generate(ids, max_new_tokens=8), theirs)
    # import: a folder transformers itself wrote
    hf.save_pretrained(tmp_path / "saved")
    back = MobileLLM.from_pretrained(tmp_path / "saved").eval()
    via_registry = zoo.create_model(
        "mobilellm_125m",
        pretrained=True,  # the folder's config gives the shape
        pretrained_cfg_overlay={"file": str(tmp_path / "saved")},
    ).eval()
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids)) and torch.equal(via_registry(ids), model(ids))
    assert via_registry.config.num_hidden_layers == LAYERS


def test_layer_shared_and_windowed_models_export_in_zoo_format(tmp_path):
    for model in (_model("mobilellm_125m_ls"), _pro_small()):
        with pytest.raises(ValueError, match="cannot express"):
            save_pretrained(model, tmp_path / "x", format="transformers")
        out = save_pretrained(model, tmp_path / type(model).__name__ / str(model.config.layer_sharing))
        assert json.loads((out / "config.json").read_text())["model_type"] == "mobilellm"
        back = MobileLLM.from_pretrained(out).eval()
        assert back.config == model.config
        ids = _ids(vocab=model.config.vocab_size)
        with torch.no_grad():
            assert torch.equal(back(ids), model(ids))


# ----------------------------------------------------------------------------------------------------------------
# Tokenizers and profiling


def test_tokenizers_bpe_on_bundled_corpus_and_sentencepiece(tmp_path):
    from zoo.data.lm_tokenizer import SentencePieceTokenizer, load_lm_tokenizer
    from zoo.data.text import bundled_corpus, train_bpe_tokenizer

    texts = list(bundled_corpus().values())[:20]
    tok = train_bpe_tokenizer(texts, vocab_size=400, path=tmp_path / "bpe" / "tokenizer.json")
    loaded = load_lm_tokenizer(tmp_path / "bpe")
    sentence = "The while statement is used for repeated execution."
    assert loaded.encode(sentence).ids == tok.encode(sentence).ids
    assert loaded.decode(tok.encode(sentence).ids) == sentence
    assert loaded.get_vocab_size() == 400

    import sentencepiece as spm

    (tmp_path / "sp").mkdir()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(tmp_path / "sp" / "tokenizer"),
        vocab_size=300,
        model_type="bpe",
        minloglevel=2,
    )
    sp = load_lm_tokenizer(tmp_path / "sp")
    assert isinstance(sp, SentencePieceTokenizer)
    ids = sp.encode(sentence).ids
    assert ids[0] == sp.bos_token_id == 1 and sp.decode(ids) == sentence
    with pytest.raises(FileNotFoundError, match="train_bpe_tokenizer"):
        load_lm_tokenizer(tmp_path)
    # token ids from the trained tokenizer drive a small model end to end
    model = zoo.create_model("mobilellm_125m", **dict(SMALL, vocab_size=400))  # the tokenizer's vocabulary
    out = model.generate(torch.tensor([tok.encode(sentence).ids]), max_new_tokens=3)
    assert isinstance(loaded.decode(out[0].tolist()), str)


def test_lm_profile_macs_per_token_and_kv_bytes():
    from zoo.profile import profile_lm

    model = _model()
    T = 64
    p = profile_lm(model, seq_len=T)
    c = model.config
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    weights += c.vocab_size * c.hidden_size  # the tied output projection
    attention = LAYERS * c.num_attention_heads * 2 * c.head_dim  # q.k and p.v per head, per visible key
    # decode after T cached tokens: every weight once and T + 1 keys; element-wise ops add ~1-2 %
    assert weights + attention * (T + 1) <= p["macs_per_token_decode"] < 1.03 * (weights + attention * (T + 1))
    # prefill: every weight once per token, SDPA counted as the full T x T product
    assert weights + attention * T <= p["macs_per_token_prefill"] < 1.03 * (weights + attention * T)
    assert p["uncounted_ops"] == {}
    assert p["kv_cache_bytes_per_token"] == 2 * LAYERS * c.num_key_value_heads * c.head_dim * 4
    assert p["params"] == sum(x.numel() for x in model.parameters())
    assert p["non_embedding_params"] == p["params"] - c.vocab_size * c.hidden_size
    shared = profile_lm(_model("mobilellm_125m_ls"), seq_len=8)
    assert shared["kv_cache_bytes_per_token"] == 2 * p["kv_cache_bytes_per_token"]
    # zoo.profile of an LM takes (tokens,) and carries the same per-token figures
    prof = zoo.profile(model, input_size=(T,))
    assert prof.input_size == (1, T) and prof.lm["macs_per_token_decode"] == p["macs_per_token_decode"]
    assert prof.macs == p["macs_prefill"] and prof.uncounted_ops == {}


@pytest.mark.slow  # 2-7 s (a training run, a compile or a parity sweep): outside the 4-minute default run
def test_bench_lm_compares_with_transformers_on_the_same_weights():
    from zoo.bench import lm
    from zoo.bench.harness import format_rows

    prefill, decode = lm.compare(
        "mobilellm_125m",
        torch.float32,
        runs=1,
        warmup=0,
        prefill_tokens=8,
        prompt_tokens=4,
        new_tokens=3,
        num_hidden_layers=LAYERS,
    )
    with pytest.raises(ValueError, match="no stock LlamaForCausalLM twin"):
        lm.compare("mobilellm_125m_ls", torch.float32, 1, 0, 8, 4, 3, **SMALL)
    assert decode.extra["same tokens"] is True and prefill.max_abs_diff <= 1e-4
    assert decode.extra["KV B/token"] == 2 * LAYERS * 3 * 64 * 4
    assert min(decode.peer_rate, decode.rate, decode.extra["floor tok/s"], prefill.ratio, decode.ratio) > 0
    assert "mobilellm_125m" in format_rows([prefill, decode])


def test_from_pretrained_applies_the_config_rules(tmp_path):
    """MobileLLM.from_pretrained reads a folder itself: its config.json is held to the factory's rules."""
    src = _model("mobilellm_125m")
    torch.save(_authors_state_dict(src), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(_authors_config(src, vocab_size=10**9)))
    with pytest.raises(CheckpointError, match="vocab_size=1000000000 is not a plausible size"):
        MobileLLM.from_pretrained(tmp_path)  # refused before a 10^9-row embedding is allocated
