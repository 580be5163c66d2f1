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

Run as ``python -m zoo.bench_lm`` or ``zoo bench --models mobilellm_125m,mobilellm_350m``.
"""
import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import zoo
from zoo.profile import peak_rss

DEFAULT_MODELS = ("mobilellm_125m", "mobilellm_350m")
TARGETS = {"decode": 2.0, "prefill": 1.0}
SEED = 0


@dataclass
class LMResult:
    model: str
    dtype: str
    runs: int
    prefill_tokens: int
    prompt_tokens: int
    new_tokens: int
    hf_prefill_tok_s: float
    zoo_prefill_tok_s: float
    prefill_ratio: float
    hf_decode_tok_s: float
    zoo_decode_tok_s: float
    decode_ratio: float
    floor_decode_tok_s: float  # the weights alone: one F.linear per weight matrix per token, nothing else
    identical_tokens: bool
    prefill_logits_max_abs_diff: float
    kv_cache_bytes_per_token: int
    hf_peak_rss_bytes: int
    zoo_peak_rss_bytes: int
    times_s: Dict[str, List[float]] = field(default_factory=dict, repr=False)


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = SEED) -> None:
    """Deterministic weights of realistic scale: linear N(0, 1/fan_in), embeddings N(0, 0.2^2), norms ~1."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda item: item[0]):
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if p.ndim == 1:
            p.copy_(1.0 + 0.1 * noise)
        elif "embed" in name:
            p.copy_(0.2 * noise)
        else:
            p.copy_(noise / math.sqrt(p.shape[1]))


def build_pair(name: str, dtype: torch.dtype, **model_kwargs):
    """(transformers LlamaForCausalLM, zoo model) with identical weights, eval mode, in ``dtype``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from .models.mobilellm import to_llama_config

    model = zoo.create_model(name, **model_kwargs)
    if not model.config.llama_compatible:
        raise ValueError(f"{name} has no stock LlamaForCausalLM twin (layer sharing / sliding windows)")
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


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.inference_mode()
def bench_one(name: str, dtype: torch.dtype, runs: int, warmup: int, prefill_tokens: int, prompt_tokens: int,
              new_tokens: int, progress: tqdm, **model_kwargs) -> LMResult:
    progress.set_description(f"{name} build")
    hf, ours = build_pair(name, dtype, **model_kwargs)
    vocab = ours.config.vocab_size
    gen = torch.Generator().manual_seed(SEED + 1)
    long_ids = torch.randint(0, vocab, (1, prefill_tokens), generator=gen)
    prompt = torch.randint(0, vocab, (1, prompt_tokens), generator=gen)

    def hf_generate():
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)

    def zoo_generate():
        return ours.generate(prompt, max_new_tokens=new_tokens)

    # the memory-bandwidth floor of decoding: every weight matrix read once per token by a 1-row F.linear
    weights = [m.weight for m in ours.modules() if isinstance(m, nn.Linear)] + [ours.output_weight]
    rows = {w.shape[1]: torch.randn(1, w.shape[1], dtype=dtype) for w in weights}

    def floor_decode():
        for _ in range(new_tokens):
            for w in weights:
                F.linear(rows[w.shape[1]], w)

    tasks = {
        ("decode", "floor"): floor_decode,
        ("prefill", "hf"): lambda: hf(long_ids),
        ("prefill", "zoo"): lambda: ours(long_ids),
        ("decode", "hf"): hf_generate,
        ("decode", "zoo"): zoo_generate,
    }
    progress.set_description(f"{name} warm-up")
    for _ in range(warmup):
        for fn in tasks.values():
            fn()
            progress.update()
    times: Dict[str, List[float]] = {f"{kind}_{impl}": [] for kind, impl in tasks}
    progress.set_description(f"{name} timing")
    for i in range(runs):
        order = ("hf", "zoo") if i % 2 == 0 else ("zoo", "hf")
        for kind in ("prefill", "decode"):
            for impl in order + (("floor",) if kind == "decode" else ()):
                times[f"{kind}_{impl}"].append(_timed(tasks[(kind, impl)]))
                progress.update()

    hf_tokens, zoo_tokens = hf_generate(), zoo_generate()
    diff = (hf(long_ids[:, :128]).logits.float() - ours(long_ids[:, :128]).float()).abs().max().item()
    hf_peak = peak_rss(hf_generate)
    zoo_peak = peak_rss(zoo_generate)
    progress.update(2)

    med = {k: statistics.median(v) for k, v in times.items()}
    hf_pre, zoo_pre = prefill_tokens / med["prefill_hf"], prefill_tokens / med["prefill_zoo"]
    hf_dec, zoo_dec = new_tokens / med["decode_hf"], new_tokens / med["decode_zoo"]
    result = LMResult(
        model=name, dtype=str(dtype).replace("torch.", ""), runs=runs, prefill_tokens=prefill_tokens,
        prompt_tokens=prompt_tokens, new_tokens=new_tokens, hf_prefill_tok_s=hf_pre, zoo_prefill_tok_s=zoo_pre,
        prefill_ratio=zoo_pre / hf_pre, hf_decode_tok_s=hf_dec, zoo_decode_tok_s=zoo_dec, decode_ratio=zoo_dec / hf_dec,
        floor_decode_tok_s=new_tokens / med["decode_floor"],
        identical_tokens=bool(torch.equal(hf_tokens, zoo_tokens)), prefill_logits_max_abs_diff=diff,
        kv_cache_bytes_per_token=ours.kv_cache_bytes_per_token(), hf_peak_rss_bytes=hf_peak,
        zoo_peak_rss_bytes=zoo_peak, times_s=times,
    )
    return result


def format_table(results: Sequence[LMResult]) -> str:
    header = ("model", "dtype", "prefill tok/s hf", "zoo", "ratio", "decode tok/s hf", "zoo", "ratio",
              "floor", "same tokens", "logits max|d|", "KV B/token", "peak RSS hf", "zoo")

    def ok(ratio: float, kind: str) -> str:
        return f"{ratio:.2f}x {'ok' if ratio >= TARGETS[kind] else 'MISS'}"

    rows = [(r.model, r.dtype, f"{r.hf_prefill_tok_s:.1f}", f"{r.zoo_prefill_tok_s:.1f}",
             ok(r.prefill_ratio, "prefill"), f"{r.hf_decode_tok_s:.2f}", f"{r.zoo_decode_tok_s:.2f}",
             ok(r.decode_ratio, "decode"), f"{r.floor_decode_tok_s:.2f}", "yes" if r.identical_tokens else "NO",
             f"{r.prefill_logits_max_abs_diff:.1e}",
             f"{r.kv_cache_bytes_per_token:,}", f"{r.hf_peak_rss_bytes / 2**20:.0f} MiB",
             f"{r.zoo_peak_rss_bytes / 2**20:.0f} MiB") for r in results]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def run(models: Optional[Sequence[str]] = None, runs: Optional[int] = None, warmup: int = 1,
        dtype: str = "float32", prefill_tokens: int = 512, prompt_tokens: int = 32, new_tokens: int = 128,
        json_path: Optional[Path] = None) -> int:
    from .bench import environment

    models = list(models or DEFAULT_MODELS)
    known = zoo.list_models(family="mobilellm")
    unknown = [m for m in models if m not in known]
    if unknown:
        print(f"error: not a MobileLLM model: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if dtype not in _DTYPES:
        print(f"error: --dtype must be one of {', '.join(_DTYPES)}", file=sys.stderr)
        return 2
    runs = runs or 5
    exact_rss = release_freed_memory()
    env = environment()
    import transformers
    env["transformers"] = transformers.__version__
    env["peak RSS"] = ("glibc mmap threshold fixed at 128 KiB: freed blocks go back to the OS" if exact_rss
                       else "heap reuse may hide part of each run's transient memory")
    print("MobileLLM CPU benchmark: zoo vs transformers LlamaForCausalLM, same weights (batch 1, eval, "
          "inference_mode)")
    for key, value in env.items():
        print(f"  {key:<12} {value}")
    print(f"  prefill {prefill_tokens} tokens; decode {new_tokens} greedy tokens after a {prompt_tokens}-token "
          f"prompt (end-to-end generate); {dtype}; warm-up {warmup}, median of {runs} interleaved rounds\n", flush=True)
    results = []
    with tqdm(total=len(models) * (5 * (warmup + runs) + 2), unit="pass", file=sys.stderr,
              dynamic_ncols=True) as progress:
        for name in models:
            results.append(bench_one(name, _DTYPES[dtype], runs, warmup, prefill_tokens, prompt_tokens,
                                     new_tokens, progress))
    print(format_table(results))
    print(f"\ntargets: decode >= {TARGETS['decode']:g}x, prefill >= {TARGETS['prefill']:g}x transformers; "
          "floor = decode tok/s of the weight matrix-vector products alone (memory-bandwidth bound); "
          "KV B/token = keys + values of every layer run; peak RSS = increase during one generate")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"environment": env, "results": [asdict(r) for r in results]}, indent=2) + "\n")
        print(f"wrote {json_path}")
    return 0 if all(r.identical_tokens for r in results) else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.bench_lm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated MobileLLM names")
    parser.add_argument("--runs", type=int, default=5, help="interleaved timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16, for both implementations")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--prefill-tokens", type=int, default=512)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return run([m for m in args.models.split(",") if m], args.runs, args.warmup, args.dtype, args.prefill_tokens,
               args.prompt_tokens, args.new_tokens, args.json)


if __name__ == "__main__":
    sys.exit(main())
