"""zoo.prune: every family prunes to half its MACs, still trains, saves as safetensors + config.json and reloads
with identical outputs; profiles of the pruned models count what runs; bad requests are refused.

Registry-driven: every registered family needs a small configuration here (``SMALL``), so a new family fails until
it is covered. The default run prunes one reduced model per family; ``-m slow`` prunes every registered model at
its full widths (language models with two layers), on small inputs.
"""

import ast
import importlib
import json
from pathlib import Path

import pytest
import small_lms
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import zoo
from zoo.compress import PruneError
from zoo.layers.pruning import PrunePlan
from zoo.models.mobilellm import ARCHS as MOBILELLM_ARCHS
from zoo.publish import export_pretrained

prune_mod = importlib.import_module("zoo.compress.prune")

IMAGE = (3, 64, 64)
# the tiny LM of the tests (tests/small_lms.py) at widths, heads and an FFN that are no multiples of 8
LM_ARCH = dict(small_lms.SMALL, hidden_size=120, num_attention_heads=6, num_key_value_heads=3, intermediate_size=320)
# per family: a registered model and the arguments that make it small (widths deliberately not multiples of 8)
SMALL = {
    "metaformer": [
        ("poolformer_s12", dict(depths=(1, 1, 2, 1), dims=(24, 40, 72, 96), num_classes=7)),
        ("convformer_s18", dict(depths=(1, 1, 2, 1), dims=(24, 40, 72, 96), num_classes=7)),
        ("caformer_s18", dict(depths=(1, 1, 2, 1), dims=(24, 40, 64, 96), num_classes=7)),
    ],
    "slak": [
        ("slak_tiny", dict(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), kernel_size=(13, 11, 9, 7, 5), num_classes=7))
    ],
    "sret": [("sret_tiny", dict(img_size=64, recursive_num=(1, 2, 1), num_classes=7))],
    # instance norm (GroupNorm, a group per channel) and the flattened classifier
    "convnet": [("convnet_d3", dict(width=40, img_size=64, num_classes=7))],
    "mobilellm": [("mobilellm_125m", LM_ARCH)],
    "recursive": [
        # Mixture-of-Recursions (expert routers) on a shared middle cycle with per-application LoRA deltas
        (
            "mor_135m",
            dict(
                LM_ARCH,
                num_hidden_layers=8,
                lora_rank=4,
                lora_targets=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
            ),
        )
    ],
}


def _cases():
    # by default the last model of each family (CAFormer: both of MetaFormer's mixers, convolution and attention);
    # the others, Mixture-of-Recursions (routers, LoRA deltas, the heaviest case) and ConvNet-3 (plain convolutions,
    # which CAFormer's and SLaK's cases prune too) in the slow run
    slow = {"mor_135m", "convnet_d3"}
    return [
        pytest.param(name, kw, id=name, marks=[pytest.mark.slow] if name in slow or i < len(family) - 1 else [])
        for family in SMALL.values()
        for i, (name, kw) in enumerate(family)
    ]


def _inputs(model, batch=2):
    if isinstance(model, zoo.lm.decoder.DecoderLM):
        return torch.randint(0, model.config.vocab_size, (batch, 24), generator=torch.Generator().manual_seed(1))
    return torch.randn(batch, *IMAGE, generator=torch.Generator().manual_seed(1))


def _logits(out):
    return out.logits if hasattr(out, "logits") else out


def _randomized(model):
    """Fresh LoRA deltas are zero; random ones make the reload check see them."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


def test_every_family_is_covered():
    assert set(zoo.list_families()) <= set(SMALL), "add a small configuration for the new family"


@pytest.mark.parametrize("name, kwargs", _cases())
def test_prune_half_macs_trains_and_reloads(name, kwargs, tmp_path):
    model = _randomized(zoo.create_model(name, **kwargs))
    x = _inputs(model)
    dense_params = sum(p.numel() for p in model.parameters())
    pruned = zoo.prune(model, target_macs=0.5, example_inputs=x[:1], round_to=None)
    assert pruned is model
    report = model.prune_report
    # the counts come from zoo.profile's own counter, independently of the search
    dense_macs, after = report.macs_before, prune_mod._macs(model, x[:1])
    assert after == report.macs_after
    assert abs(after / dense_macs - 0.5) <= 0.02, (after, dense_macs)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert params == report.params_after < dense_params
    # still a model: forward and backward, every parameter reached by a gradient
    model.train()
    _logits(model(x)).float().pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.numel() > 1)
    model.zero_grad(set_to_none=True)
    # saved as data (safetensors + config.json), rebuilt exactly from the folder
    model.eval()
    folder = export_pretrained(
        model,
        tmp_path / "pruned",
        model_name=name,
        model_kwargs=kwargs,
        data_config={"input_size": IMAGE},
        latency_runs=0,
    )
    assert not [p.name for p in folder.iterdir() if p.suffix in (".pt", ".pth", ".bin", ".pkl")]
    config = json.loads((folder / "config.json").read_text())
    for key, value in model.pruned_args.items():
        assert config["model_args"][key] == (list(value) if isinstance(value, tuple) else value)
    reloaded = zoo.create_model(folder, pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(_logits(model(x)), _logits(reloaded(x)))
    assert reloaded.state_dict().keys() == model.state_dict().keys()


def test_profile_counts_the_pruned_model():
    """zoo.profile of a pruned model: params are the tensors' sizes; MACs agree with FlopCounterMode on the ops
    both count, and the FlopCounterMode total falls as much as the profile's does."""
    name, kwargs = SMALL["metaformer"][2]  # CAFormer: convs, SepConv, attention with pruned heads
    model = zoo.create_model(name, **kwargs).eval()
    x = _inputs(model, batch=1)

    def flop_counter_macs(m):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:  # attention as the profile cross-checks it
            m(x)
        return counter.get_total_flops() // 2

    dense = zoo.profile(model, input_size=IMAGE, cross_check=True)
    dense_torch = flop_counter_macs(model)
    zoo.prune(model, ratio=0.5, example_inputs=x, round_to=None)
    pruned = zoo.profile(model, input_size=IMAGE, cross_check=True)
    assert pruned.params == sum(p.numel() for p in model.parameters())
    check = pruned.flop_counter_check
    assert check["rel_diff"] < 1e-3, check
    shared = check["flop_counter_macs"]
    assert shared == flop_counter_macs(model) < dense_torch
    # the MACs both tools count fall by the same factor; the profile's total (norms, activations too) follows
    assert abs(pruned.macs / dense.macs - shared / dense_torch) < 0.05
    assert pruned.uncounted_ops.keys() == dense.uncounted_ops.keys()


def test_round_to_keeps_widths_multiples():
    model = zoo.create_model("convformer_s18", depths=(1, 1, 1, 1), dims=(32, 64, 96, 128), num_classes=5)
    zoo.prune(model, ratio=0.4, example_inputs=_inputs(model, 1), round_to=8)
    args = model.pruned_args
    widths = args["dims"] + args["mlp_hidden"] + args["mixer_hidden"]
    assert all(w % 8 == 0 for w in widths), args
    assert args["dims"] != [32, 64, 96, 128]


def test_language_model_stays_gqa_and_tied():
    name, kwargs = SMALL["mobilellm"][0]
    model = zoo.create_model(name, **kwargs)
    c = model.config
    heads, kv, hidden = c.num_attention_heads, c.num_key_value_heads, c.hidden_size
    zoo.prune(model, ratio=0.4, example_inputs=_inputs(model, 1), round_to=None)
    c = model.config
    assert c.num_key_value_heads < kv and c.num_attention_heads == c.num_key_value_heads * (heads // kv)
    assert c.hidden_size < hidden and c.head_dim == kwargs["hidden_size"] // heads
    assert model.lm_head is None and model.output_weight is model.model.embed_tokens.weight
    for layer in model.model.layers:
        attn = layer.self_attn
        assert attn.q_proj.out_features == c.num_attention_heads * c.head_dim
        assert attn.k_proj.out_features == attn.v_proj.out_features == c.num_key_value_heads * c.head_dim
        assert layer.mlp.gate_proj.out_features == c.intermediate_size
    ids = _inputs(model, 1)[:, :6]
    out = model.generate(ids, max_new_tokens=4)  # the cache follows the pruned KV heads
    assert out.shape == (1, 10)


def test_untied_language_model_prunes_its_head_inputs():
    model = zoo.create_model("mobilellm_125m", **{**SMALL["mobilellm"][0][1], "tie_word_embeddings": False})
    zoo.prune(model, ratio=0.3, example_inputs=_inputs(model, 1), round_to=None)
    assert model.lm_head.in_features == model.config.hidden_size < 120
    assert model.lm_head.out_features == LM_ARCH["vocab_size"]  # the vocabulary stays


@pytest.mark.parametrize(
    "mor, router_type", [pytest.param("expert", "linear", marks=pytest.mark.slow), ("token", "mlp")]
)  # the expert router under -m slow
def test_recursive_routers_follow_the_hidden_channels(mor, router_type):
    kwargs = {**SMALL["recursive"][0][1], "mor": mor, "router_type": router_type}
    model = _randomized(zoo.create_model("mor_135m", **kwargs))
    zoo.prune(model, ratio=0.4, example_inputs=_inputs(model, 1), round_to=None)
    hidden = model.config.hidden_size
    assert hidden < 120
    for router in model.routers:
        first = next(m for m in router.net.modules() if isinstance(m, torch.nn.Linear))
        assert first.in_features == hidden
    for deltas in model.lora.values():
        assert deltas["q_proj"].lora_B.shape[0] == model.config.num_attention_heads * model.config.head_dim
        assert deltas["up_proj"].lora_A.shape[1] == hidden
    rebuilt = zoo.create_model("mor_135m", **{**kwargs, **model.pruned_args})
    rebuilt.load_state_dict(model.state_dict())
    ids = _inputs(model, 2)
    with torch.no_grad():
        assert torch.equal(_logits(model.eval()(ids)), _logits(rebuilt.eval()(ids)))
    assert model.generate(ids[:1, :5], max_new_tokens=3).shape == (1, 8)


def test_sret_shared_blocks_pruned_once_for_every_application():
    name, kwargs = SMALL["sret"][0]
    model = zoo.create_model(name, **kwargs)
    stacks = [stage.stack for stage in model.stages]
    counts = [(len(s.blocks), len(s.step_layers)) for s in stacks]
    zoo.prune(model, ratio=0.5, example_inputs=_inputs(model, 1), round_to=None)
    assert [(len(s.blocks), len(s.step_layers)) for s in stacks] == counts
    for stage, heads in zip(model.stages, (2, 4, 8)):
        for block in stage.stack.blocks:
            assert block.attn.num_heads == round(heads / 2)
            assert block.attn.qkv.out_features == 3 * block.attn.num_heads * block.attn.head_dim


@pytest.mark.slow  # 2-7 s (a training run, a compile or a parity sweep): outside the 4-minute default run
def test_taylor_and_random_importance():
    name, kwargs = SMALL["metaformer"][0]
    x = _inputs(zoo.create_model(name, **kwargs), 1)
    chosen = {}
    for importance in ("magnitude", "taylor", "random"):
        torch.manual_seed(0)
        model = zoo.create_model(name, **kwargs)
        zoo.prune(model, ratio=0.5, importance=importance, example_inputs=x, round_to=None)
        assert all(p.grad is None for p in model.parameters())
        chosen[importance] = model.stages[0].blocks[0].mlp.fc1.weight.detach().clone()
    assert chosen["magnitude"].shape == chosen["taylor"].shape == chosen["random"].shape
    assert not torch.equal(chosen["magnitude"], chosen["random"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ratio=1.5), "ratio must be"),
        (dict(ratio=0.5, target_macs=0.5), "exactly one"),
        (dict(), "exactly one"),
        (dict(ratio=0.5, importance="bogus"), "unknown importance"),
        (dict(ratio=0.5, round_to=0), "round_to"),
        (dict(target_macs=-3), "target_macs must be"),
        (dict(target_macs=10), "out of reach"),
        (dict(target_params=10**12), "not below"),
    ],
)
def test_bad_requests(kwargs, match):
    name, arch = SMALL["metaformer"][0]
    model = zoo.create_model(name, **arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PruneError, match=match):
        zoo.prune(model, example_inputs=torch.randn(1, *IMAGE), **{"round_to": None, **kwargs})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was touched


def test_unsupported_model_is_refused():
    with pytest.raises(PruneError, match="does not know how to prune a Sequential: its class declares no prune_plan"):
        zoo.prune(torch.nn.Sequential(torch.nn.Linear(4, 4)), ratio=0.5)


def test_every_family_declares_its_plan_and_the_pruner_names_none():
    """What a family prunes is its own file's (its class's ``prune_plan``); zoo.compress.prune knows no family."""
    for family, cases in SMALL.items():
        with torch.device("meta"):
            model = zoo.create_model(cases[0][0], **cases[0][1])
        assert issubclass(type(model).prune_plan, PrunePlan), family
    source = Path(prune_mod.__file__).read_text()
    imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) and n.module}
    assert not [m for m in imported if m == "models" or m.startswith("models.")], imported


def test_builders_refuse_bad_width_lists():
    with pytest.raises(ValueError, match="one entry per block"):
        zoo.create_model("poolformer_s12", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), mlp_hidden=[8, 8])
    with pytest.raises(ValueError, match="mlp_hidden"):
        zoo.create_model("slak_tiny", depths=(1, 1, 1, 1), mlp_hidden=[0, 1, 1, 1])
    with pytest.raises(ValueError, match="attn_heads"):
        zoo.create_model("sret_tiny", attn_heads=[9] * 10)


# ------------------------------------------------------------------------------------------------------------------
# Every registered model (slow): full widths, small inputs
# ------------------------------------------------------------------------------------------------------------------


def _full_size(name):
    """Every registered model at its own widths, heads and mixers, with fewer repeats of each block (the repeats
    are identical in structure) and small inputs: the sweep stays within a few minutes on 2 cores."""
    family = zoo.model_info(name)["family"]
    # language models: their widths and heads, two layers (five for a shared middle cycle), a 4,096-token
    # vocabulary (the vocabulary is never pruned; at 49,152 x 2,048 it alone would double the sweep)
    if family == "mobilellm":
        layers = dict(num_hidden_layers=2, max_position_embeddings=256, vocab_size=4096)
        if MOBILELLM_ARCHS[name].get("layer_types"):  # MobileLLM-Pro: a sliding-window layer and a global one
            layers["layer_types"] = ["sliding_attention", "full_attention"]
        return layers
    if family == "recursive":
        return dict(num_hidden_layers=5, max_position_embeddings=256, vocab_size=4096)
    if family == "sret":
        return dict(img_size=SWEEP[-1], recursive_num=(1, 2, 1))
    if family == "slak":
        return dict(depths=(1, 1, 2, 1))
    if family == "convnet":  # every block at its width; the flattened classifier sized for the sweep's input
        return dict(img_size=SWEEP[-1])
    return dict(depths=(1, 1, 2, 1), **({"img_size": SWEEP[-1]} if name.startswith("randformer") else {}))


SWEEP = (3, 32, 32)


def _variant(name):
    """A vision series (``caformer``, ``slak``) or an LM line without its size (``mobilellm_ls``, ``mor``)."""
    if zoo.model_info(name)["family"] in ("mobilellm", "recursive"):
        return "_".join(p for p in name.split("_") if not p[0].isdigit())
    return name.split("_", 1)[0]


def _one_per_variant(names):
    """The smallest model (reference params, then name) of each series or LM line."""
    best = {}
    for name in names:
        key = (zoo.model_info(name)["reference"].get("params") or 0, name)
        best[_variant(name)] = min(best.get(_variant(name), key), key)
    return sorted(name for _, name in best.values())


PRUNABLE = [n for n in zoo.list_models() if zoo.model_info(n)["family"] in SMALL]
PRUNE_CI = _one_per_variant(PRUNABLE)


# -m slow (CI): one model per series or LM line; -m sweep (by hand): every other registered model, the same check
@pytest.mark.slow
@pytest.mark.parametrize("name", [n if n in PRUNE_CI else pytest.param(n, marks=pytest.mark.sweep) for n in PRUNABLE])
def test_every_registered_model_prunes_to_half(name, tmp_path):
    kwargs = _full_size(name)
    model = _randomized(zoo.create_model(name, **kwargs))
    x = _inputs(model, batch=1) if isinstance(model, zoo.lm.decoder.DecoderLM) else torch.randn(1, *SWEEP)
    x = x[:, :16] if x.ndim == 2 else x
    zoo.prune(model, target_macs=0.5, example_inputs=x, tolerance=0.015)
    report = model.prune_report
    assert abs(report.macs_after / report.macs_before - 0.5) <= 0.02
    _logits(model.train()(torch.cat([x, x]))).float().mean().backward()  # batch 2: BatchNorm on 1x1 maps trains
    model.eval()
    folder = export_pretrained(
        model, tmp_path / "p", model_name=name, model_kwargs=kwargs, data_config={"input_size": SWEEP}, latency_runs=0
    )
    reloaded = zoo.create_model(folder, pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(_logits(model(x)), _logits(reloaded(x)))


def test_iterative_steps_ignore_and_params_target():
    name, kwargs = SMALL["metaformer"][1]  # ConvFormer
    model = zoo.create_model(name, **kwargs)
    x = _inputs(model, 1)
    kept = model.stages[0].blocks[0].mlp.fc1.weight.shape
    zoo.prune(
        model,
        target_params=0.6,
        iterative_steps=3,
        ignore=[model.stem, model.stages[0]],
        example_inputs=x,
        round_to=None,
    )
    report = model.prune_report
    assert abs(report.params_after / report.params_before - 0.6) <= 0.02
    assert model.stages[0].blocks[0].mlp.fc1.weight.shape == kept  # ignored: stage 0 and its MLP keep their widths
    assert model.pruned_args["dims"][0] == kwargs["dims"][0] and model.pruned_args["dims"][3] < kwargs["dims"][3]
    rebuilt = zoo.create_model(name, **{**kwargs, **model.pruned_args})
    rebuilt.load_state_dict(model.state_dict())


def test_ignored_attention_keeps_its_heads():
    name, kwargs = SMALL["mobilellm"][0]
    model = zoo.create_model(name, **kwargs)
    attention = [layer.self_attn for layer in model.model.layers]
    zoo.prune(model, ratio=0.5, ignore=attention, example_inputs=_inputs(model, 1), round_to=None)
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (6, 3)
    assert model.config.intermediate_size == 160
    with pytest.raises(PruneError, match="every layer's attention"):
        other = zoo.create_model(name, **kwargs)
        zoo.prune(other, ratio=0.5, ignore=[other.model.layers[0].self_attn], example_inputs=_inputs(other, 1))


@pytest.mark.slow
def test_round_to_8_reaches_half_macs_on_aligned_widths():
    """The quickstart's shape: every width a multiple of 32, so one ratio moves them all at once; the MLP widths'
    own ratio makes the finer step."""
    model = zoo.create_model("poolformer_s12", depths=(2, 2, 4, 2), dims=(32, 64, 128, 256), num_classes=10)
    zoo.prune(model, target_macs=0.5, example_inputs=torch.randn(1, 3, 32, 32))
    report = model.prune_report
    assert abs(report.macs_after / report.macs_before - 0.5) <= 0.02
    widths = model.pruned_args["dims"] + model.pruned_args["mlp_hidden"]
    assert all(w % 8 == 0 for w in widths)
