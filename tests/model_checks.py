"""The generic checks, by model name: what tests/models/test_models.py runs on every registered vision model,
tests/models/test_lm_models.py on every registered language model and tests/models/test_new_family.py on a family
registered at run time. Vision inputs are 64x64 except for models with a fixed input size (learned position tables,
frozen mixing matrices), which run at their cfg size; language models run at their tiny config (tests/small_lms.py)."""

import inspect

import pytest
import timm
import torch
from small_lms import tiny_lm
from timm.models import group_parameters
from tolerances import assert_float32_close, in_float64

import zoo
from zoo.export import ExportSpec
from zoo.export.lm_runtime import CachedDecoder, export_methods
from zoo.layers.saving import HubMixin
from zoo.lm import KVCache
from zoo.weights import save_state_dict


def input_size(name: str, variable: int = 64) -> int:
    cfg = zoo.model_info(name)["pretrained_cfg"]
    return cfg["input_size"][-1] if cfg.get("fixed_input_size") else variable


def sample(name: str, batch: int = 2, variable: int = 64) -> torch.Tensor:
    s = input_size(name, variable)
    return torch.randn(batch, 3, s, s, generator=torch.Generator().manual_seed(0))


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, what: str, rel: float = 1e-4) -> None:
    """``actual`` within ``rel`` x the largest magnitude of ``expected`` (comparisons with the authors' code)."""
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale, f"{what}: max abs diff {err:.3g} > {rel} x output scale {scale:.3g}"


def weights_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s state dict, for :func:`weights_unchanged` after a load that must not happen."""
    return {k: v.clone() for k, v in model.state_dict().items()}


def weights_unchanged(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, snapshot[k]) for k, v in model.state_dict().items())


# the models whose params and MACs tests/profile/test_profile.py measures by default (one per MetaFormer and SReT
# series); tests/profile/test_cards.py's default rows measure the other series
PROFILED_BY_DEFAULT = [n for n in zoo.list_models(task="image-classification") if n.endswith(("_s12", "_s18"))] + [
    "sret_tiny",
    "sret_tiny_wo_slice",
]


# ----------------------------------------------------------------------------------------------------------------
# The checks, by model name


def check_param_count(name: str) -> None:
    with torch.device("meta"):
        model = zoo.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == zoo.model_info(name)["reference"]["params"]


def check_cfg(name: str) -> None:
    """The pretrained cfg names modules that exist (meta device: nothing is allocated)."""
    with torch.device("meta"):
        model = zoo.create_model(name, num_classes=42)
    cfg, sd = model.pretrained_cfg, model.state_dict()
    assert cfg["architecture"] == name
    assert cfg["first_conv"] + ".weight" in sd
    assert sd[cfg["classifier"] + ".weight"].shape[0] == 42
    assert len(cfg["input_size"]) == 3 and len(cfg["mean"]) == len(cfg["std"]) == cfg["input_size"][0]


def check_train_step(name: str) -> None:
    """Backward with a new head: every trainable parameter gets a gradient; only frozen buffers-by-design freeze."""
    model = zoo.create_model(name, num_classes=42)
    out = model(sample(name))
    assert out.shape == (2, 42) and torch.isfinite(out).all()
    out.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all("random_matrix" in n for n in frozen)


@torch.no_grad()
def check_interface(name: str, tmp_path) -> None:
    """timm's face: features (at the last feature_info reduction), head with pre_logits, grad checkpointing,
    classifier reset, safetensors round trip. ``num_features`` is the map's channels, ``head_hidden_size`` the
    pre-logits width (the same, except for a head that flattens the map)."""
    model = zoo.create_model(name, num_classes=42).eval()
    cfg, x, s = model.pretrained_cfg, sample(name), input_size(name)
    m = s // model.feature_info[-1]["reduction"]
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features, m, m)
    if s == cfg["input_size"][-1]:
        assert tuple(feats.shape[-2:]) == tuple(cfg["pool_size"])
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
    ref = model(x)
    assert torch.equal(model.forward_head(feats), ref)  # eval is deterministic
    model.set_grad_checkpointing(True)
    assert torch.equal(model(x), ref)  # no grad: checkpointing runs the same blocks, bit for bit
    model.set_grad_checkpointing(False)

    path = save_state_dict(model, tmp_path / "w.safetensors")
    assert torch.equal(zoo.create_model(name, num_classes=42, checkpoint_path=str(path)).eval()(x), ref)

    model.reset_classifier(0)
    assert model(x).shape == (2, model.head_hidden_size)
    model.reset_classifier(0, "")
    assert model(x).shape == (2, model.num_features, m, m)
    model.reset_classifier(7, "avg")
    assert model(x).shape == (2, 7)
    assert model.get_classifier() is not None


@torch.no_grad()
def check_headless(name: str) -> None:
    """``num_classes=0``, timm's headless model: its output is ``head_hidden_size`` wide, as is
    ``forward_head(pre_logits=True)``, and ``num_features`` is the channels of ``forward_features``' map (timm's
    contract, which its own suite asserts). The two widths are one number unless the head flattens the map
    (ConvNet-D's, like timm's VGG): then the pre-logits width is the map's size. A name timm owns has the widths of
    timm's build. On the meta device: shapes only, nothing computed."""
    model = zoo.create_model(name, num_classes=0, device="meta").eval()
    s = input_size(name)
    x = torch.empty(2, 3, s, s, device="meta")
    feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features
    out, pre = model(x), model.forward_head(feats, pre_logits=True)
    assert out.shape == pre.shape == (2, model.head_hidden_size)
    flattened = getattr(model, "global_pool", None) == "flatten"
    assert model.head_hidden_size == model.num_features * (feats.shape[2] * feats.shape[3] if flattened else 1)
    if zoo.model_info(name)["timm_owns_name"]:
        theirs = timm.create_model(name, num_classes=0, device="meta").eval()
        assert (theirs.num_features, theirs.head_hidden_size) == (model.num_features, model.head_hidden_size)
        assert theirs(x).shape == out.shape


@torch.no_grad()
def check_features(name: str) -> None:
    """features_only: one map per feature_info entry, channels and strides as declared, equal to
    forward_intermediates; out_indices picks a subset."""
    model = zoo.create_model(name).eval()
    feat_model = zoo.create_model(name, features_only=True).eval()
    feat_model.model.load_state_dict(model.state_dict(), strict=False)
    x = sample(name, batch=1)
    feats = feat_model(x)
    info = feat_model.feature_info
    assert len(feats) == len(info) and info.channels() == [f.shape[1] for f in feats]
    for f, r in zip(feats, info.reduction()):
        assert f.shape[-2:] == (x.shape[-2] // r, x.shape[-1] // r)
    for a, b in zip(feats, model.forward_intermediates(x, intermediates_only=True)):
        assert torch.equal(a, b)
    final, inter = model.forward_intermediates(x)
    assert torch.equal(final, model.forward_features(x)) and torch.equal(inter[-1], final)
    last = len(info) - 1
    with torch.device("meta"):  # shapes and errors only: nothing to initialise
        sub = zoo.create_model(name, features_only=True, out_indices=(0, last)).eval()
        assert [f.shape[1] for f in sub(x.to("meta"))] == sub.feature_info.channels()
        assert sub.feature_info.channels() == [info.channels()[0], info.channels()[-1]]
        for bad in [(0, last + 1), (-(last + 2),)]:
            with pytest.raises(ValueError, match="out of range"):
                zoo.create_model(name, features_only=True, out_indices=bad)


def check_regularisation(name: str) -> None:
    """Stochastic depth (dropout before the classifier for a model without residual branches to drop) is active
    in training and off in eval; group_matcher covers every parameter."""
    with torch.device("meta"):
        model_cls = type(zoo.create_model(name))
    rate = "drop_path_rate" if "drop_path_rate" in inspect.signature(model_cls.__init__).parameters else "drop_rate"
    model = zoo.create_model(name, **{rate: 0.3})
    x = sample(name, batch=4)
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    grouped = {n for names in group_parameters(model, model.group_matcher()).values() for n in names}
    assert grouped == {n for n, _ in model.named_parameters()}


def check_autocast(name: str) -> None:
    """CPU autocast (bfloat16): forward and backward run and stay close to float32 (at the smallest input: CPU
    bfloat16 convolutions with large kernels are slow)."""
    model = zoo.create_model(name)
    x = sample(name, variable=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).float()
    assert (low - ref).abs().max() <= 0.1 * ref.abs().max()


# ----------------------------------------------------------------------------------------------------------------
# The language-model checks, by model name (a tiny model of the name's structure, tests/small_lms.py)

PROMPT, NEW = 5, 8  # prompt tokens, new tokens


def lm_tokens(model, batch: int = 2, length: int = PROMPT + NEW, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def _logits(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.logits


def check_lm_param_count(name: str) -> None:
    """At full size on the meta device (nothing allocated): ``num_params()`` is the reference figure and the sum
    over the parameters (tied output weights are the embedding, counted once); the non-embedding count leaves out
    the embedding alone."""
    with torch.device("meta"):
        model = zoo.create_model(name)
    c, params = model.config, zoo.model_info(name)["reference"]["params"]
    assert model.num_params() == sum(p.numel() for p in model.parameters()) == params
    assert model.num_params(non_embedding=True) == params - c.vocab_size * c.hidden_size
    assert (model.output_weight is model.model.embed_tokens.weight) == c.tie_word_embeddings


@torch.no_grad()
def check_lm_cache(name: str) -> None:
    """Decoding with a KV cache gives a full recompute's logits: the prompt, then one token at a time; in chunks of
    three; and from the cache that ``use_cache=True`` makes. The paths differ only in float32 summation order, so
    each stays within 4x the recompute's own float32 error against the same model in float64 (tests/tolerances.py)."""
    model = tiny_lm(name)
    seq = lm_tokens(model)
    T = seq.shape[1]
    full = _logits(model(seq))
    assert full.shape == (2, T, model.config.vocab_size)
    full64 = _logits(in_float64(model)(seq))  # each path within 4x the full recompute's own float32 error

    def close(got, what):
        assert_float32_close(got, full, full64, msg=f"{name} {what}")

    cache = model.new_cache(2, T)
    out = model(seq[:, :PROMPT], past_key_values=cache)
    assert out.past_key_values is cache and cache.seq_length == PROMPT
    steps = [out.logits] + [model(seq[:, t : t + 1], past_key_values=cache).logits for t in range(PROMPT, T)]
    assert cache.seq_length == T and cache.num_slots == model.num_cache_slots
    if type(cache) is KVCache:  # every slot holds every token (a routed cache's slots hold subsets)
        assert cache.lengths == [T] * cache.num_slots
    close(torch.cat(steps, 1), "one token at a time")
    chunked = model.new_cache(2, T)
    chunks = [model(seq[:, i : i + 3], past_key_values=chunked).logits for i in range(0, T, 3)]
    close(torch.cat(chunks, 1), "chunks of three")
    first = model(seq[:, :PROMPT], use_cache=True)
    rest = model(seq[:, PROMPT:], past_key_values=first.past_key_values).logits
    close(torch.cat([first.logits, rest], 1), "use_cache=True")


@torch.no_grad()
def check_lm_generate(name: str) -> None:
    """Greedy ``generate`` keeps the prompt, is deterministic, takes the argmax of a full recompute at every step,
    decodes each prompt of a batch as alone, and varies (not one repeated token)."""
    model = tiny_lm(name)
    prompt = lm_tokens(model, length=PROMPT)
    seq = model.generate(prompt, max_new_tokens=NEW, eos_token_id=[])
    assert seq.shape == (2, PROMPT + NEW) and torch.equal(seq[:, :PROMPT], prompt)
    assert torch.equal(model.generate(prompt, max_new_tokens=NEW, eos_token_id=[]), seq)
    assert torch.equal(_logits(model(seq))[:, PROMPT - 1 : -1].argmax(-1), seq[:, PROMPT:])
    assert torch.equal(model.generate(prompt[1:], max_new_tokens=NEW, eos_token_id=[]), seq[1:])
    assert len(set(seq[:, PROMPT:].flatten().tolist())) > 1


@torch.no_grad()
def check_lm_save_load(name: str, tmp_path) -> None:
    """``save_pretrained`` writes a folder that ``zoo.create_model(folder, pretrained=True)`` rebuilds as the same
    model: class, config, weights' names, identical logits and greedy tokens."""
    model = tiny_lm(name)
    assert isinstance(model, HubMixin)
    folder = model.save_pretrained(tmp_path / "saved")
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    loaded = zoo.create_model(str(folder), pretrained=True).eval()
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.state_dict().keys() == model.state_dict().keys()
    seq = lm_tokens(model)
    torch.testing.assert_close(_logits(loaded(seq)), _logits(model(seq)), rtol=0, atol=0)
    prompt = seq[:, :PROMPT]
    assert torch.equal(
        loaded.generate(prompt, max_new_tokens=NEW, eos_token_id=[]),
        model.generate(prompt, max_new_tokens=NEW, eos_token_id=[]),
    )


EXPORT_LEN = 16  # the exported static cache's length


@torch.no_grad()
def check_lm_export(name: str) -> None:
    """``torch.export`` of the cached decoder (the program every LM deployment format lowers): a prompt, then one
    token, give the eager model's last-token logits (within 4x the eager float32 error against float64)."""
    model = tiny_lm(name)
    seq = lm_tokens(model, batch=1, length=PROMPT + 1)
    want = _logits(model(seq))
    want64 = _logits(in_float64(model)(seq))  # the program within 4x the eager model's own float32 error
    decoder = CachedDecoder(model, EXPORT_LEN).eval()
    spec = ExportSpec(name=name, task="text-generation", format="pte", max_seq_len=EXPORT_LEN)
    program = export_methods(decoder, spec, {"prefill": None})["prefill"].module()
    got = program(seq[:, :PROMPT], torch.tensor([0]))
    assert_float32_close(got, want[:, PROMPT - 1], want64[:, PROMPT - 1], msg=f"{name} prefill")
    got = program(seq[:, PROMPT:], torch.tensor([PROMPT]))
    assert_float32_close(got, want[:, PROMPT], want64[:, PROMPT], msg=f"{name} decode")
