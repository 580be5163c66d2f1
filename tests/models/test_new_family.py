"""A new family touches only its own file: a tiny vision family and a tiny language-model family, each written
here as its family file would be (model class on the shared bases, its pruning plan and, for the LM, its
``llama_blocks()``; builder; ``FAMILY`` / ``default_cfgs`` / ``reference_figures``; ``register_model``), are
built, profiled, put through the generic checks (tests/model_checks.py), saved and loaded, pruned through their
``prune_plan`` and (the LM) generated from and written as GGUF, with no other file knowing them. The LM family
without ``llama_blocks()`` is refused by the GGUF writer with the reason.
"""

import importlib.util
import sys
import types

import pytest
import timm
import torch
from model_checks import (
    check_cfg,
    check_features,
    check_interface,
    check_lm_cache,
    check_lm_generate,
    check_lm_param_count,
    check_lm_save_load,
    check_param_count,
    check_regularisation,
    check_train_step,
)
from small_lms import SMALL, tiny_lm
from timm.models import _registry as timm_registry
from torch import nn

import zoo
from zoo.export import ExportError
from zoo.factory import register_in_timm
from zoo.layers import Linear, VisionBackbone, imagenet_cfg
from zoo.layers.pruning import PrunePlan, sync_stage_widths
from zoo.lm import (
    BlockRun,
    DecoderBody,
    DecoderConfig,
    DecoderLM,
    DecoderPrunePlan,
    KVCache,
    LlamaBlocks,
    LMOutput,
    RotaryEmbedding,
    build_attention_masks,
)
from zoo.models._builder import build_lm, build_vision_model
from zoo.profile import profile
from zoo.publish import export_pretrained
from zoo.registry import register_model, unregister_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

VISION, LM, LM_PLAIN = "pebble_t1", "pebblelm_t1", "pebblelm_plain_t1"


# ------------------------------------------------------------------------------------------------------------------
# The vision family's file
# ------------------------------------------------------------------------------------------------------------------


class PebbleStage(nn.Module):
    """A strided conv, then a residual pointwise MLP (channels-first in and out)."""

    def __init__(self, in_dim: int, dim: int, stride: int):
        super().__init__()
        self.downsample = nn.Conv2d(in_dim, dim, 3, stride=stride, padding=1)
        self.blocks = nn.Sequential(nn.Conv2d(dim, 2 * dim, 1), nn.GELU(), nn.Conv2d(2 * dim, dim, 1))
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        return x + self.blocks(x)


class PebblePrunePlan(PrunePlan):
    """Stage widths and MLP widths; the classifier keeps its width."""

    def mlps(self) -> list[nn.Module]:
        return [stage.blocks[0] for stage in self.model.stages]

    def finish(self) -> None:
        sync_stage_widths(self.model, self.widths()["dims"])

    def widths(self) -> dict:
        return {"dims": [stage.downsample.out_channels for stage in self.model.stages]}


class PebbleNet(VisionBackbone, nn.Module):
    prune_plan = PebblePrunePlan

    def __init__(self, in_chans=3, num_classes=1000, dims=(8, 16, 24), drop_rate=0.0, global_pool="avg"):
        super().__init__()
        self.in_chans, self.num_classes, self.global_pool, self.drop_rate = (
            in_chans,
            num_classes,
            global_pool,
            drop_rate,
        )
        self.num_features = self.head_hidden_size = dims[-1]
        self.stem = nn.Module()
        self.stem.conv = nn.Conv2d(in_chans, dims[0], 4, stride=4)
        self.stages = nn.Sequential(*[PebbleStage(dims[max(i - 1, 0)], d, 2 if i else 1) for i, d in enumerate(dims)])
        self.feature_info = [dict(num_chs=d, reduction=4 * 2**i, module=f"stages.{i}") for i, d in enumerate(dims)]
        self.head = nn.Module()
        self.head.drop = nn.Dropout(drop_rate)
        self.head.fc = Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x):
        self.check_input(x)
        return self.stem.conv(x)

    def forward_head(self, x, pre_logits: bool = False):
        if not self.global_pool:
            return x
        x = self.head.drop(x.mean((2, 3)))
        return x if pre_logits else self.head.fc(x)


def pebble_t1(pretrained=False, **kwargs):
    return build_vision_model(PebbleNet, VISION, pretrained, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# The language-model family's file
# ------------------------------------------------------------------------------------------------------------------


class PebbleLM(DecoderLM):
    """A plain Llama decoder on the shared bases: every layer once, global attention."""

    prune_plan = DecoderPrunePlan

    def __init__(self, config: DecoderConfig | None = None, **kwargs):
        super().__init__()
        self.config = c = DecoderConfig.resolve(config, kwargs, "PebbleLM")
        self.model = DecoderBody(c, [None] * c.num_hidden_layers)
        self.lm_head = None if c.tie_word_embeddings else nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.rotary = RotaryEmbedding(c.head_dim, c.rope_theta, initial_length=min(c.max_position_embeddings, 4096))
        self.schedule = list(range(c.num_hidden_layers))
        self.grad_checkpointing = False
        self.pretrained_cfg = {}
        self.init_weights()

    def new_cache(self, batch_size, max_length, dtype=None, device=None) -> KVCache:
        p, c = self.model.embed_tokens.weight, self.config
        return KVCache(
            len(self.schedule),
            batch_size,
            c.num_key_value_heads,
            max_length,
            c.head_dim,
            dtype or p.dtype,
            device or p.device,
        )

    def kv_cache_bytes_per_token(self, dtype=None, length=None) -> float:
        size = torch.empty((), dtype=dtype or self.model.embed_tokens.weight.dtype).element_size()
        return 2 * self.config.num_key_value_heads * self.config.head_dim * size * len(self.schedule)

    def forward(
        self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False, logits_to_keep=0
    ):
        x, cache, past, padding, rope, _ = self.start_pass(
            input_ids, attention_mask, position_ids, past_key_values, use_cache
        )
        mask, causal = build_attention_masks(past, input_ids.shape[1], [None], padding, x.device).get(None)
        for slot, layer in enumerate(self.model.layers):
            x = layer(x, rope, cache, slot, mask, causal)
        logits = self.finish_pass(x, logits_to_keep)
        return LMOutput(logits, cache) if use_cache or past_key_values is not None else logits

    def llama_blocks(self) -> LlamaBlocks:
        return LlamaBlocks([BlockRun(i) for i in self.schedule])


class PebbleLMPlain(PebbleLM):
    """The same model, its class declaring no llama_blocks(): the GGUF writer cannot know how it computes."""

    llama_blocks = None


# the family's one architecture: the tiny LM of the tests (tests/small_lms.py's SMALL: two layers, grouped heads)
ARCHS = {name: dict(SMALL) for name in (LM, LM_PLAIN)}


def pebblelm_t1(pretrained=False, **kwargs):
    return build_lm(PebbleLM, ARCHS, LM, pretrained, **kwargs)


def pebblelm_plain_t1(pretrained=False, **kwargs):
    return build_lm(PebbleLMPlain, ARCHS, LM_PLAIN, pretrained, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# Registration (a family file's last lines), undone afterwards
# ------------------------------------------------------------------------------------------------------------------


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _register(module_name: str, family: dict, builders: dict, cfgs: dict, params: dict) -> None:
    module = types.ModuleType(module_name)
    module.FAMILY = family
    module.default_cfgs = cfgs
    module.reference_figures = {name: dict(params=n, macs=None, gmacs=None, top1=None) for name, n in params.items()}
    sys.modules[module_name] = module
    for name, builder in builders.items():
        builder.__module__ = module_name
        setattr(module, builder.__name__, builder)
        register_model(builder, name=name)


@pytest.fixture(scope="module")
def families():
    cfg = imagenet_cfg(input_size=(3, 64, 64), pool_size=(4, 4), license="apache-2.0", paper_name="a test family")
    family = dict(name="pebble", task="image-classification")
    _register("zoo_test_pebble", family, {VISION: pebble_t1}, {VISION: cfg}, {VISION: _params(PebbleNet())})
    lm_cfg = dict(license="apache-2.0", paper_name="a test family")
    lm_params = _params(PebbleLM(DecoderConfig(**ARCHS[LM])))
    _register(
        "zoo_test_pebblelm",
        dict(name="pebblelm", task="text-generation"),
        {LM: pebblelm_t1, LM_PLAIN: pebblelm_plain_t1},
        {LM: lm_cfg, LM_PLAIN: lm_cfg},
        {LM: lm_params, LM_PLAIN: lm_params},
    )
    register_in_timm()
    yield
    for name in (VISION, LM, LM_PLAIN):
        unregister_model(name)
        timm_registry._model_entrypoints.pop(name, None)
        timm_registry._model_pretrained_cfgs.pop(name, None)
    for module in ("zoo_test_pebble", "zoo_test_pebblelm"):
        sys.modules.pop(module, None)


# ------------------------------------------------------------------------------------------------------------------
# The vision family
# ------------------------------------------------------------------------------------------------------------------


def test_a_new_vision_family_is_built_profiled_and_checked(families, tmp_path):
    assert zoo.model_info(VISION)["family"] == "pebble" and VISION in zoo.list_models(family="pebble")
    assert isinstance(zoo.create_model(VISION), PebbleNet)
    report = profile(VISION)
    assert report.params == zoo.model_info(VISION)["reference"]["params"] and report.macs > 0
    for check in (check_param_count, check_cfg, check_train_step, check_features, check_regularisation):
        check(VISION)
    check_interface(VISION, tmp_path)


def test_timm_builds_the_new_vision_family_through_the_zoo(families):
    model = timm.create_model(VISION, num_classes=5)
    assert isinstance(model, PebbleNet) and model.num_classes == 5
    assert zoo.model_info(VISION)["timm_owns_name"] is False


def test_a_new_vision_family_prunes_through_its_plan_and_reloads(families, tmp_path):
    model = zoo.create_model(VISION, num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    zoo.prune(model, ratio=0.5, example_inputs=x, round_to=None)
    assert model.pruned_args == {"dims": [4, 8, 12]}  # the plan's widths
    assert [e["num_chs"] for e in model.feature_info] == [4, 8, 12] and model.num_features == 12  # its finish()
    assert model.prune_report.macs_after < model.prune_report.macs_before
    folder = export_pretrained(model, tmp_path / "pruned", model_name=VISION, latency_runs=0)
    loaded = zoo.create_model(str(folder), pretrained=True).eval()
    with torch.no_grad():
        assert model(x).shape == (1, 5)
        assert type(loaded) is PebbleNet and torch.equal(loaded(x), model(x))


# ------------------------------------------------------------------------------------------------------------------
# The language-model family
# ------------------------------------------------------------------------------------------------------------------


def test_a_new_lm_family_passes_the_generic_lm_checks(families, tmp_path):
    assert zoo.model_info(LM)["family"] == "pebblelm" and LM in zoo.list_models(task="text-generation")
    check_lm_param_count(LM)
    check_lm_cache(LM)
    check_lm_generate(LM)
    check_lm_save_load(LM, tmp_path)
    report = profile(zoo.create_model(LM), input_size=(16,))
    assert report.lm["params"] == zoo.model_info(LM)["reference"]["params"] and report.lm["macs_per_token_decode"] > 0


def test_a_new_lm_family_prunes_through_the_shared_decoder_plan(families):
    model = zoo.create_model(LM).eval()
    ids = torch.randint(0, ARCHS[LM]["vocab_size"], (1, 12), generator=torch.Generator().manual_seed(0))
    zoo.prune(model, ratio=0.5, example_inputs=ids, round_to=None)
    assert model.pruned_args == dict(
        hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=16
    )
    rebuilt = zoo.create_model(LM, **model.pruned_args)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(ids), model(ids))
    out = model.generate(ids, max_new_tokens=4, eos_token_id=[])
    assert out.shape == (1, 16) and torch.equal(out[:, :12], ids)


def test_a_new_lm_family_is_written_as_gguf_from_its_llama_blocks(families, tmp_path):
    gguf = pytest.importorskip("gguf")
    model = tiny_lm(LM)  # weights spread out: greedy tokens decided by clear margins
    result = zoo.export(model, "gguf", tmp_path / "gguf", check=importlib.util.find_spec("llama_cpp") is not None)
    reader = gguf.GGUFReader(str(tmp_path / "gguf" / result.files[0]))
    assert reader.get_field("general.architecture").contents() == "llama"
    assert reader.get_field("llama.block_count").contents() == model.config.num_hidden_layers
    assert {t.name for t in reader.tensors} >= {"token_embd.weight", "blk.0.attn_q.weight", "blk.1.ffn_down.weight"}
    if result.check is not None:  # llama.cpp runs the file: the same greedy tokens as eager
        assert result.check["ok"] and result.check["tokens_equal"], result.check


def test_a_new_lm_family_without_llama_blocks_is_refused_with_the_reason(families, tmp_path):
    model = zoo.create_model(LM_PLAIN).eval()
    with pytest.raises(ExportError, match=r"does not know how PebbleLMPlain computes: its class declares no llama_"):
        zoo.export(model, "gguf", tmp_path / "gguf")
    assert not (tmp_path / "gguf" / "model.gguf").exists()
