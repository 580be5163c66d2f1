"""CPU benchmark of the zoo's MobileLLM decoders against transformers' ``LlamaForCausalLM`` on the same weights.

For every model name (default: ``mobilellm_125m``, ``mobilellm_350m``) this builds the zoo model with
deterministic random weights of realistic scale and a transformers ``LlamaForCausalLM(tie_word_embeddings=True)``
holding the very same tensors (the zoo's Llama export config; ``load_state_dict`` must leave only the tied
``lm_head.weight`` missing). Layer-shared variants have no stock Llama twin and are refused.

Measured at batch 1, eval mode, ``torch.inference_mode``, in ``--dtype`` (default float32), on CPU:

* **Prefill**: tokens/s of one forward over ``--prefill-tokens`` (512) tokens, logits of every position in both.
* **Decode**: greedy generation of ``--new-tokens`` (128) tokens after a ``--prompt-tokens`` (32) token prompt,
  end to end (``model.generate`` in both, KV cache on, no EOS); tokens/s = new tokens / wall time.
* **Floor**: the same decode with nothing but one 1-row ``F.linear`` per weight matrix per token (the tied output
  projection included): every weight must be read from memory once per token, so this bounds any implementation.
* **Fidelity**: whether both generate identical tokens, and the max abs logits difference at prefill.
* **Memory**: KV-cache bytes per token (keys + values of every layer run) and the peak increase of the process
  RSS during one generation (sampled every millisecond; the weights are resident before and not counted; glibc
  is told to return large freed blocks at once, so earlier runs' freed memory does not hide a run's own).

On a machine shared with other work, use ``--threads 1``: with more runnable threads than cores, every
multi-threaded GEMV waits for its slowest (descheduled) thread and decoding slows several-fold for both.

The two implementations are timed in interleaved rounds (transformers, zoo, then zoo, transformers, ...), so that
load from other processes on a shared machine hits both alike; medians are reported. Targets: decode >= 2x
transformers, prefill >= 1x.

Run as ``zoo bench lm --models mobilellm_125m,mobilellm_350m [--dtype bfloat16] [--threads 1]``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..factory import create_model
from ..models.mobilellm import to_llama_config
from ..profile import peak_rss
from .harness import Row, median, output_diff, peer_row, randomize_, time_interleaved

PEER = "transformers"
DEFAULT_MODELS = ("mobilellm_125m", "mobilellm_350m")
TARGETS = {"decode": 2.0, "prefill": 1.0}
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
SEED = 0


def build_pair(name: str, dtype: torch.dtype, **model_kwargs):
    """(transformers LlamaForCausalLM, zoo model) with identical weights, eval mode, in ``dtype``."""
    from transformers import LlamaConfig, LlamaForCausalLM  # the peer: heavy, imported only to benchmark

    model = create_model(name, **model_kwargs)
    if not getattr(model.config, "llama_compatible", False):  # the recursive LMs' configs have no such property
        raise ValueError(f"{name} has no stock LlamaForCausalLM twin (layer sharing / sliding windows / recursion)")
    randomize_(model)
    cfg = {k: v for k, v in to_llama_config(model.config).items() if k not in ("architectures", "model_type")}
    hf = LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation="sdpa"))
    result = hf.load_state_dict(model.state_dict(), strict=False)
    if result.unexpected_keys or result.missing_keys not in ([], ["lm_head.weight"]):
        raise RuntimeError(f"weights do not map onto LlamaForCausalLM: {result}")
    if hf.lm_head.weight.data_ptr() != hf.model.embed_tokens.weight.data_ptr():
        raise RuntimeError("transformers did not tie lm_head to the embeddings")
    return hf.to(dtype).eval(), model.to(dtype).eval()


def release_freed_memory() -> bool:
    """Make glibc return large freed blocks to the OS at once (a fixed 128 KiB mmap threshold), so that the RSS
    increase during a generation measures its own transient memory, not what earlier runs left in the heap."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 128 * 1024))  # M_MMAP_THRESHOLD: fixed, which also stops its growth
    except (OSError, AttributeError):
        return False


def _floor_decode(model: nn.Module, dtype: torch.dtype, new_tokens: int):
    """The memory-bandwidth floor of decoding: every weight matrix read once per token by a 1-row F.linear."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)] + [model.output_weight]
    rows = {w.shape[1]: torch.randn(1, w.shape[1], dtype=dtype) for w in weights}

    def run():
        for _ in range(new_tokens):
            for w in weights:
                F.linear(rows[w.shape[1]], w)

    return run


def transformers_greedy(hf: nn.Module, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """transformers' greedy generation of exactly ``new_tokens`` tokens after ``prompt`` (prompt included)."""
    return hf.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
    )


def _generators(hf: nn.Module, ours: nn.Module, prompt: torch.Tensor, new_tokens: int):
    """(transformers, zoo) greedy generation of ``new_tokens`` tokens after ``prompt``."""

    def hf_generate():
        return transformers_greedy(hf, prompt, new_tokens)

    def zoo_generate():
        return ours.generate(prompt, max_new_tokens=new_tokens)

    return hf_generate, zoo_generate


def compare(
    name: str,
    dtype: torch.dtype = torch.float32,
    runs: int = 5,
    warmup: int = 1,
    prefill_tokens: int = 512,
    prompt_tokens: int = 32,
    new_tokens: int = 128,
    **model_kwargs,
) -> list[Row]:
    """Prefill and greedy decode of the zoo model against transformers' Llama on the same weights (two rows)."""
    release_freed_memory()  # so that the peak-RSS figures measure each generation's own memory
    hf, ours = build_pair(name, dtype, **model_kwargs)
    gen = torch.Generator().manual_seed(SEED + 1)
    long_ids = torch.randint(0, ours.config.vocab_size, (1, prefill_tokens), generator=gen)
    prompt = torch.randint(0, ours.config.vocab_size, (1, prompt_tokens), generator=gen)
    hf_generate, zoo_generate = _generators(hf, ours, prompt, new_tokens)
    prefill = time_interleaved(
        {PEER: lambda: hf(long_ids), "zoo": lambda: ours(long_ids)}, runs, warmup, desc=f"{name} prefill"
    )
    decode = time_interleaved(
        {PEER: hf_generate, "zoo": zoo_generate, "floor": _floor_decode(ours, dtype, new_tokens)},
        runs,
        warmup,
        desc=f"{name} decode",
    )
    with torch.inference_mode():
        same = bool(torch.equal(hf_generate(), zoo_generate()))
        diff = output_diff(ours(long_ids[:, :128]), hf(long_ids[:, :128]).logits)
    setting = str(dtype).replace("torch.", "")
    pre = peer_row(
        name,
        f"prefill {prefill_tokens} ({setting})",
        PEER,
        "zoo",
        "tok/s",
        prefill[PEER],
        prefill["zoo"],
        runs,
        TARGETS["prefill"],
        work=prefill_tokens,
        **diff,
    )
    dec = peer_row(
        name,
        f"decode {new_tokens} ({setting})",
        PEER,
        "zoo",
        "tok/s",
        decode[PEER],
        decode["zoo"],
        runs,
        TARGETS["decode"],
        work=new_tokens,
        extra={
            "floor tok/s": new_tokens / median(decode["floor"]),
            "same tokens": same,
            "KV B/token": ours.kv_cache_bytes_per_token(),
            "peak RSS MiB peer/zoo": f"{peak_rss(hf_generate) / 2**20:.0f}/{peak_rss(zoo_generate) / 2**20:.0f}",
        },
        times_s={k: v["total"] for k, v in decode.items()},
    )
    return [pre, dec]


NOTES = [
    "floor = decode tok/s of the weight matrix-vector products alone (memory-bandwidth bound); KV B/token = "
    "keys + values of every layer run; peak RSS = increase during one generate",
    "on a machine shared with other work, use --threads 1: descheduled GEMV threads slow decoding for both",
]
