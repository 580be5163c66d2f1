"""CPU throughput of Mixture-of-Recursions against vanilla and recursive baselines: prefill and decode tokens/s.

Models (SmolLM shapes, random weights, fp32, eval, ``torch.inference_mode``), for a size such as ``135m``:

* ``mor``: ``mor_<size>`` (middle_cycle, 3 recursions, expert-choice, recursion-wise KV cache);
* ``mor_kv_share``: the same with recursive KV sharing;
* ``recursive``: ``recursive_<size>`` (the same shared blocks, every token through every recursion);
* ``vanilla_same_params``: a dense stack with as many layers as the recursive model has unique blocks;
* ``vanilla_same_depth``: the dense base (``vanilla_<size>``).

Routing. Random routers do not behave like trained ones, so the routed models replay decisions drawn per token
at the paper's capacities (each token runs step 1 with probability 2/3 and step 2 with probability 1/3, nested),
passed as ``route_masks``: the computation a trained router at those capacities would cause under the zoo's
causal (per-token) inference rule. In a batch, a step runs when any row needs it (rows are padded to the
longest), so batch 8 gains less than batch 1.

Prefill: one forward of ``--prompt`` tokens that fills a fresh cache; decode: ``--new`` single-token steps after
it. Timings are medians over ``--runs`` rounds that alternate the models.

    zoo bench mor --models mor_135m [--batch-sizes 1,8] [--prompt-tokens 128] [--new-tokens 32] [--runs 3]
"""

import time
from collections.abc import Sequence

import torch

from ..factory import create_model
from .harness import Phases, Row, peer_row, randomize_, time_interleaved

PEER = "vanilla_same_depth"
DEFAULT_MODELS = ("mor_135m",)
DEFAULT_BATCH_SIZES = (1, 8)


def build_models(size: str, **overrides) -> dict[str, torch.nn.Module]:
    """The MoR model, its KV-sharing form, plain recursion and two vanilla stacks, with random weights."""
    mor = create_model(f"mor_{size}", **overrides)
    blocks = len(mor.model.layers)
    models = {
        "mor": mor,
        "mor_kv_share": create_model(f"mor_{size}", kv_sharing=True, **overrides),
        "recursive": create_model(f"recursive_{size}", **overrides),
        "vanilla_same_params": create_model(f"vanilla_{size}", **{**overrides, "num_hidden_layers": blocks}),
        PEER: create_model(f"vanilla_{size}", **overrides),
    }
    return {k: randomize_(m).eval() for k, m in models.items()}


def sample_routes(batch: int, length: int, capacities: Sequence[float], gen: torch.Generator) -> list[torch.Tensor]:
    """Nested per-token masks: P(active at step r) = capacities[r] (each step keeps a fraction of the last)."""
    masks, active, prev = [], torch.ones(batch, length, dtype=torch.bool), 1.0
    for cap in capacities:
        keep = torch.rand(batch, length, generator=gen) < cap / prev
        active = active & keep
        masks.append(active)
        prev = cap
    return masks


def prefill_decode(model, ids, routes, new_tokens: int) -> Phases:
    """``{"prefill": s, "decode": s}`` of a prompt and ``new_tokens`` single-token steps."""
    B, T = ids.shape
    routed = getattr(model.config, "mor", None) is not None
    cache = model.new_cache(B, T + new_tokens)
    start = time.perf_counter()
    kwargs = {"route_masks": [m[:, :T] for m in routes]} if routed else {}
    logits = model(ids, past_key_values=cache, logits_to_keep=1, **kwargs).logits
    prefill = time.perf_counter() - start
    token = logits[:, -1].argmax(-1, keepdim=True)
    start = time.perf_counter()
    for t in range(new_tokens):
        kwargs = {"route_masks": [m[:, T + t : T + t + 1] for m in routes]} if routed else {}
        logits = model(token, past_key_values=cache, **kwargs).logits
        token = logits[:, -1].argmax(-1, keepdim=True)
    return Phases(prefill=prefill, decode=time.perf_counter() - start)


def compare(
    name: str,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    runs: int = 3,
    warmup: int = 1,
    prompt_tokens: int = 128,
    new_tokens: int = 32,
    **overrides,
) -> list[Row]:
    """Prefill and decode tokens/s of every recursive form of ``name``'s size against the vanilla stack."""
    size = name.split("_", 1)[1]
    models = build_models(size, **overrides)
    capacities = models["mor"].config.capacities()
    rows = []
    for bs in batch_sizes:
        gen = torch.Generator().manual_seed(bs)
        ids = torch.randint(0, models["mor"].config.vocab_size, (bs, prompt_tokens), generator=gen)
        routes = sample_routes(bs, prompt_tokens + new_tokens, capacities, gen)
        with torch.inference_mode():
            for _ in range(warmup):  # short warm-up passes: the timed ones are long
                for m in models.values():
                    prefill_decode(m, ids[:, :16], routes, 2)
        times = time_interleaved(
            {
                k: (lambda m=m, ids=ids, routes=routes: prefill_decode(m, ids, routes, new_tokens))
                for k, m in models.items()
            },
            runs,
            warmup=0,
            desc=f"{size} b{bs}",
        )
        for phase, tokens in (("prefill", bs * prompt_tokens), ("decode", bs * new_tokens)):
            for key, model in models.items():
                if key == PEER:
                    continue
                rows.append(
                    peer_row(
                        name,
                        f"{phase} batch {bs}",
                        PEER,
                        key,
                        "tok/s",
                        times[PEER],
                        times[key],
                        runs,
                        work=tokens,
                        phase=phase,
                        extra={
                            "applications": len(model.schedule),
                            "blocks": len(model.model.layers),
                            "params": model.num_params(),
                        },
                    )
                )
    return rows
