"""KV-cache memory of a long generation, before and after the windowed / capacity-sized caches.

``zoo bench kv-memory`` generates ``--tokens`` (2048) tokens greedily at batch 1 with each model twice:
with the cache every layer run allocated at the full length (``before``: what the zoo did before sliding-window
slots held only their window and routed slots only their capacity share) and with the model's own cache
(``after``), and prints the cache's bytes per token of the sequence, its allocated bytes, and the peak increase of
the process RSS during the generation (sampled every millisecond; the weights are resident before and not
counted).

The models are reduced in depth and vocabulary (``--layers``, a 32000-token vocabulary) so that 2048 tokens take
about a minute on a small CPU; the layer pattern (MobileLLM-Pro's 3:1 local:global, MoR's recursion) and the
widths are the registered ones, and the full model's figures are given from its configuration alongside.
"""

from __future__ import annotations

import argparse
import functools

import torch

from ..factory import create_model
from ..lm.routing import RoutedKVCache
from ..models.mobilellm import pro_layer_types
from ..profile import peak_rss
from .harness import randomize_
from .lm import release_freed_memory

__all__ = ["measure"]


def _full_length_cache(model, batch_size, max_length, dtype=None, device=None):
    """The cache as it was: every slot at the full length."""
    if not hasattr(model, "slot_of"):  # MobileLLM: no windows
        return type(model).new_cache(model, batch_size, max_length, dtype, device, windowed=False)
    p, c = model.model.embed_tokens.weight, model.config
    return RoutedKVCache(
        model.num_slots, batch_size, c.num_key_value_heads, max_length, c.head_dim, dtype or p.dtype, device or p.device
    )


def _model(name: str, layers: int):
    kwargs = dict(num_hidden_layers=layers, vocab_size=32000)
    if name.startswith("mobilellm_pro"):
        kwargs["layer_types"] = pro_layer_types(layers)
    return randomize_(create_model(name, **kwargs)).eval()


@torch.inference_mode()
def measure(name: str, layers: int = 8, tokens: int = 2048, prompt: int = 32) -> list[dict]:
    """Two rows (before, after) for ``name`` reduced to ``layers`` layers."""
    model = _model(name, layers)
    ids = torch.randint(0, 32000, (1, prompt), generator=torch.Generator().manual_seed(0))
    model.generate(ids, max_new_tokens=2, eos_token_id=[])  # one-off allocations (RoPE tables) before measuring
    rows = []
    own = model.new_cache
    for label, maker in (("before", functools.partial(_full_length_cache, model)), ("after", own)):
        model.new_cache = maker
        cache = maker(1, tokens)
        allocated = cache.nbytes
        del cache
        release_freed_memory()
        rss = peak_rss(lambda: model.generate(ids, max_new_tokens=tokens - prompt, eos_token_id=[]))
        rows.append(
            {
                "model": f"{name} ({layers} layers)",
                "cache": label,
                "KV bytes/token": allocated / tokens,
                "KV MiB allocated": allocated / 2**20,
                "peak RSS MiB": rss / 2**20,
            }
        )
    model.new_cache = own
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``zoo bench kv-memory``: the KV cache of a long generation, full-length against the model's own."""
    p.add_argument("--models", default="mobilellm_pro_1b,mor_135m")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)


def run(args: argparse.Namespace) -> int:
    """Measure every model both ways and print the table."""
    torch.set_num_threads(args.threads)
    print("| model | cache | KV bytes/token | KV MiB allocated | peak RSS MiB (generation) |\n|---|---|---|---|---|")
    for name in args.models.split(","):
        for r in measure(name, args.layers, args.tokens):
            print(
                f"| {r['model']} | {r['cache']} | {r['KV bytes/token']:,.0f} | {r['KV MiB allocated']:.1f} | "
                f"{r['peak RSS MiB']:.1f} |"
            )
    return 0
