"""The tiny LM of the tests, typed once: :data:`SMALL` (64 wide, 2 blocks, grouped heads), which a test overrides
only where it is about another value (a tokenizer's vocabulary, a depth, a width); the tiny configs of every
registered text-generation model (:func:`tiny_lm_args`, the same dimensions); and, for the GGUF export and llama.cpp
backend tests, :func:`small_lm`: SMALL with weights scaled up from the init, so that greedy tokens are decided by
clear margins, not by ties that float rounding could flip."""

import dataclasses
import functools

import torch
from model_groups import smallest_of_each

import zoo
from zoo.bench.harness import randomize_

# the dimensions of every tiny LM (tiny_lm_args adds each model's depth and keeps its heads grouped where they are)
TINY_DIMS = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_attention_heads=4)
# the tiny LM a test builds: TINY_DIMS in two blocks with grouped heads; dict(SMALL, ...) changes what a test is about
SMALL = dict(TINY_DIMS, num_hidden_layers=2, num_key_value_heads=2)

PROMPTS = torch.tensor([[3, 5, 7, 9, 11, 13], [1, 2, 3, 4, 5, 6]])


def small_lm(name: str, **overrides) -> torch.nn.Module:
    """``name`` at SMALL (plus overrides), in eval mode, its weights spread out (from torch's current seed)."""
    model = zoo.create_model(name, **{**SMALL, **overrides}).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "norm" in key:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif "lora_B" in key:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif p.ndim == 2:
                p.mul_(5)
            else:  # biases
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def seeded_small_lm(name: str = "mobilellm_125m", **overrides) -> torch.nn.Module:
    """:func:`small_lm` built from seed 0: the same model wherever it is called."""
    torch.manual_seed(0)
    return small_lm(name, **overrides)


# ----------------------------------------------------------------------------------------------------------------
# Tiny configs of every registered text-generation model (tests/models/test_lm_models.py), derived from the registry

TINY_WINDOW = 4  # attention windows shrink to a few tokens, so that a short test sequence crosses them


def text_generation_models() -> list[str]:
    """Every registered text-generation model (a family registered later is in the list too)."""
    return zoo.list_models(task="text-generation")


def tiny_lm_args(name: str) -> dict:
    """Keyword arguments that build ``name`` at a tiny size and keep its structure, derived from its full config
    (built on the meta device): :data:`TINY_DIMS`; ``num_key_value_heads`` 2 when the full model groups its
    heads, else 4; windows at most :data:`TINY_WINDOW`; token ids past the tiny vocabulary dropped; the smallest
    depth (from 2) its config accepts (recursion needs room for its shared blocks), per-layer lists cut to it.
    Only the arguments that differ from the registered defaults are returned."""
    return dict(_tiny_lm_args(name, zoo.registry.get_entry(name).fn))


@functools.cache
def _tiny_lm_args(name: str, builder) -> dict:  # by builder too: a name registered again is derived again
    with torch.device("meta"):
        full = zoo.create_model(name).config
    base = dataclasses.asdict(full)
    depth_full = full.num_hidden_layers
    grouped = full.num_key_value_heads < full.num_attention_heads
    args = dict(TINY_DIMS, num_key_value_heads=2 if grouped else 4)
    for key, value in base.items():
        if key.endswith("_token_id") and isinstance(value, int) and value >= args["vocab_size"]:
            args[key] = None
        elif "window" in key and isinstance(value, int) and not isinstance(value, bool):
            args[key] = min(value, TINY_WINDOW)
    for depth in range(2, depth_full + 1):
        trial = dict(args, num_hidden_layers=depth)
        for key, value in base.items():
            if isinstance(value, list) and len(value) == depth_full:  # one entry per layer
                trial[key] = value[:depth]
        try:
            type(full)(**{**base, **trial, "head_dim": None})
        except ValueError:  # too shallow for this model's structure
            continue
        return {key: value for key, value in trial.items() if base[key] != value}
    raise ValueError(f"{name}: no depth from 2 to {depth_full} gives a valid tiny config")


def tiny_lm(name: str, seed: int = 0) -> torch.nn.Module:
    """``name`` at :func:`tiny_lm_args`, in eval mode, with deterministic weights of realistic scale
    (``zoo.bench.harness.randomize_``: logits of a few units, greedy tokens decided by clear margins)."""
    return randomize_(zoo.create_model(name, **tiny_lm_args(name)), seed).eval()


def tiny_lm_structure(name: str) -> tuple:
    """What the tiny model of ``name`` is: its config's class and fields. Variants that differ only in size (the
    125M and 350M of one line) give the same tiny model."""
    with torch.device("meta"):
        config = zoo.create_model(name, **tiny_lm_args(name)).config
    return (type(config).__name__, repr(sorted(dataclasses.asdict(config).items())))


def lm_representatives(names: list[str]) -> list[str]:
    """One model per distinct tiny structure (the smallest by reference parameters, then name)."""
    return smallest_of_each(names, tiny_lm_structure)
