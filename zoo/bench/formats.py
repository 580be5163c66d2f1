"""Weight formats of the language models side by side: speed against transformers and llama.cpp, and quality.

``zoo bench formats --models mobilellm_125m --formats fp32,bf16,int8,int4`` measures, in one run:

* **Speed** (the named model, deterministic random weights of realistic scale; speed does not depend on the
  values): greedy decode tokens/s at batch 1 after a ``--prompt-tokens`` prompt, for every format in zoo eager
  (``model.generate``) and zoo compiled (``generate(compile=True)``: one ``torch.compile``'d step over a static
  cache), for transformers' ``LlamaForCausalLM`` in float32 on the same weights (the peer of every row; models
  with no stock Llama twin have none), and for llama.cpp (llama-cpp-python) running the same weights written by
  ``zoo export --format gguf`` at the same bits: F32 for fp32, F16 for bf16 (llama.cpp's CPU path has no bf16
  matmul of its own), Q8_0 for int8, Q4_0 for int4. Beside each llama.cpp figure, the row ``zoo llama.cpp
  backend``: ``model.generate(..., backend="llama.cpp", quantize=TYPE)`` on the same weights (its own cached GGUF,
  in the run's temporary folder), against that bare llama.cpp loop: the zoo's overhead per token, split into its
  per-token part (``zoo llama.cpp session``: the same loaded session driven by ``generate_on_session``, timed in
  the same rounds; the ``per-token paired ratio`` column) and the weights check each ``generate`` call makes
  (``check ms/call``). All candidates of all formats are timed in one set of interleaved rounds, so load from other
  processes hits them alike. Every candidate starts each call from an empty cache and runs the whole prompt (the
  llama.cpp loop and the backend would otherwise keep the prompt of the call before). The per-token Python
  overhead of eager decoding is reported as eager minus compiled milliseconds per token.
  ``zoo bench formats ... --backend-only`` times the backend rows alone (:func:`compare_backend`).
* **Prefill** (``--prefill 128,512``, the default; ``--prefill 0``: none): prompt-processing tokens/s at each prompt
  length, for every format in zoo eager and zoo compiled (``generate(..., max_new_tokens=1)``: the prompt's forward
  pass over a fresh cache and the choice of its first token; the compiled path runs the prompt through its static
  decoder), beside llama.cpp on the same GGUF at the same bits with ``n_batch = n_ubatch =`` the prompt length
  (``eval`` of the prompt on a fresh context, every position's keys and values, the last position's logits), and
  the pte program (``--pte``) where its cache holds the prompt. Each prompt length is one set of interleaved rounds
  after the decode rounds.
* **Quality** (only with ``--quality-run DIR``, a trained LM's run or model folder with its tokenizer, e.g. the
  quickstart LM trained on CPython's ``pydoc_data`` by ``python train.py --config configs/quickstart_lm.yaml`` into
  ``runs/quickstart_lm``; without it the formats are timed and not scored): perplexity on the held-out
  documents of that corpus (the recipe's own split, whole windows of the model's context, with its tokenizer)
  and greedy-token agreement with fp32 over 256 generated tokens (4 held-out prompts x 64 tokens, position by
  position), each format quantized from the same float weights and run through the same CPU kernels as at speed;
  and for every (weight bits, activation bits) pair of the integer formats asked for (:data:`QUALITY_PAIRS`:
  ``int8a16``, ``int8a8``, ``int4a16``, ``int4a8``, the activation row rounded to int16 or int8 per block of 32).

Targets (:data:`TARGETS`, printed beside each ratio): the fastest format >= 4x transformers fp32; zoo compiled at fp32,
int8 and int4 >= 0.6x llama.cpp at the same bits (bf16 is printed without a target); the llama.cpp backend >= 0.95x bare
llama.cpp; perplexity within 1% of fp32 for int8 and 5% for int4, and with 8-bit activations within 0.5% at int8 and 1%
at int4; prefill at a 512-token prompt >= 0.8x llama.cpp's prompt processing at every format.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import inspect
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ..data.lm_tokenizer import load_lm_tokenizer
from ..data.text import EOS_TOKEN, bundled_corpus, split_documents
from ..export import export
from ..export.gguf_file import load_llama
from ..export.llama_backend import CACHE_ENV, open_session, release
from ..export.lm_runtime import load as load_pte
from ..export.xnnpack_quant import quantize_for_xnnpack
from ..factory import create_model
from ..kernels import gemv
from ..lm.quant import DEFAULT_ACT_BITS, VOCABULARY, counterpart, lookup, model_quantization, quantize_model
from ..lm.sessions import generate_on_session
from ..run_layout import ARGS, is_run_folder
from .deployed import _llama_cpp_decoder
from .harness import Row, median, peer_row, provenance, randomize_, time_interleaved
from .lm import build_pair, transformers_greedy

__all__ = [
    "FORMATS",
    "PREFILL_LENGTHS",
    "QUALITY_PAIRS",
    "compare",
    "compare_backend",
    "compare_pte",
    "environment",
    "parse_prefill",
    "perplexity",
    "prefill_row",
    "prefill_rows",
    "quality",
    "quality_pairs",
]

# format -> (zoo quantize=, llama.cpp type of the same bits): every zoo format of the vocabulary (zoo.lm.quant_format)
# with its GGUF counterpart; "int8" / "int4" run the kernels' default activation width, the "a8" / "a16" names
# choose it
FORMATS: dict[str, tuple[str | None, str]] = {
    q.name: (None if q.bits == 32 else q.name, counterpart(q.name, "gguf").native)
    for q in VOCABULARY.values()
    if q.backend == "zoo"
}
DEFAULT_FORMATS = ("fp32", "bf16", "int8", "int4")
# (weight bits, activation bits) whose quality every run measures beside the integer formats it times
QUALITY_PAIRS = ("int8a16", "int8a8", "int4a16", "int4a8")
PREFILL_LENGTHS = (128, 512)  # prompt lengths of the prefill rows (--prefill)
# format -> the ExecuTorch pte quantization of the same weight bits (XNNPACK's int8-activation kernels)
PTE_TYPES = {f: counterpart(f, "pte").native for f in ("int8", "int4")}
PTE = "zoo pte"
PEER = "transformers fp32"
BACKEND = "zoo llama.cpp backend"
SESSION = "zoo llama.cpp session"  # the backend's loaded session driven directly: no per-call weights check
TARGETS = {
    "fastest vs transformers": 4.0,
    "vs llama.cpp": 0.6,  # zoo compiled at fp32, int8, int4
    "backend vs llama.cpp": 0.95,
    "pte 8da4w vs llama.cpp": 0.8,
    "pte 8da4w size vs gguf": 1.3,
    "ppl quantized path": 0.02,
    "ppl int8": 0.01,
    "ppl int4": 0.05,
    "ppl int8a16": 0.01,
    "ppl int4a16": 0.05,
    "ppl int8a8": 0.005,
    "ppl int4a8": 0.01,
    "prefill 512 vs llama.cpp": 0.8,
}
AGREEMENT_PROMPTS, AGREEMENT_PROMPT_TOKENS, AGREEMENT_NEW_TOKENS = 4, 32, 64


def check_formats(formats: Sequence[str]) -> list[str]:
    """The zoo formats named, each read through the vocabulary (an old spelling as its name; an unknown name is its
    one error, with the closest name), once each."""
    names = []
    for f in formats:
        try:
            names.append(f if f in FORMATS else lookup(f, "zoo").name)
        except ValueError as e:
            raise ValueError(f"unknown weight format {f!r}: {e}") from None
    return list(dict.fromkeys(n for n in names if n in FORMATS))


def parse_prefill(text: str) -> tuple[int, ...]:
    """``--prefill``: comma-separated prompt lengths in tokens, or ``0`` for no prefill rows."""
    try:
        values = [int(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if values == [0]:
        return ()
    if not values or min(values) < 1:
        raise ValueError(
            f"--prefill takes comma-separated prompt lengths in tokens (e.g. 128,512), or 0 for no prefill rows; "
            f"got {text!r}"
        )
    return tuple(dict.fromkeys(values))


def environment() -> dict[str, str]:
    """The run's provenance (date, commit, machine, threads, load, versions) with the peers' versions."""
    env = provenance()
    for package in ("llama-cpp-python", "transformers", "executorch", "torchao"):
        try:
            env[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            env[package] = "not installed"
    return env


def _quantized(model: nn.Module, quantize: str | None, act_bits: int | None = None) -> nn.Module:
    """A quantized copy of ``model`` (``quantize``: a format's zoo quantization; ``act_bits``: the activation
    width of int8 / int4 kernels), or ``model`` itself for None."""
    if quantize is None:
        return model
    kwargs = {} if act_bits is None else {"act_bits": act_bits}
    return quantize_model(copy.deepcopy(model), quantize, **kwargs).eval()


# ------------------------------------------------------------------------------------------------------------------
# Quality
# ------------------------------------------------------------------------------------------------------------------


def _held_out_ids(folder: Path, tokenizer) -> list[int]:
    """The held-out pydoc documents (the run's own split: its args.yaml's data.val_fraction, else 0.1), tokenized
    and joined with the tokenizer's end-of-text id between them."""
    val_fraction = 0.1
    if is_run_folder(folder):
        recipe = yaml.safe_load((folder / ARGS).read_text()) or {}
        val_fraction = float((recipe.get("data") or {}).get("val_fraction") or val_fraction)
    _, val = split_documents(list(bundled_corpus().values()), val_fraction)
    eos = tokenizer.token_to_id(EOS_TOKEN) if hasattr(tokenizer, "token_to_id") else None
    ids: list[int] = []
    for doc in val:
        encoded = tokenizer.encode(doc)
        ids += encoded.ids if hasattr(encoded, "ids") else list(encoded)
        if eos is not None:
            ids.append(eos)
    return ids


@torch.inference_mode()
def perplexity(model: nn.Module, ids: Sequence[int], window: int, max_tokens: int = 32768) -> float:
    """exp(mean next-token loss) over non-overlapping windows of ``window`` tokens (the first ``max_tokens``)."""
    data = torch.tensor(list(ids[:max_tokens]), dtype=torch.long)
    n = (data.numel() - 1) // window
    if n < 1:
        raise ValueError(f"{data.numel()} held-out tokens are too few for one window of {window}")
    total, count = 0.0, 0
    for i in range(0, n, 8):  # 8 windows per forward
        rows = [data[j * window : (j + 1) * window + 1] for j in range(i, min(n, i + 8))]
        batch = torch.stack(rows)
        out = model(batch[:, :-1])
        logits = out if isinstance(out, torch.Tensor) else out.logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten(), reduction="sum")
        total, count = total + loss.item(), count + batch[:, 1:].numel()
    return math.exp(total / count)


@torch.inference_mode()
def _agreement(model: nn.Module, reference: list[torch.Tensor], prompts: list[torch.Tensor]) -> float:
    same = total = 0
    for prompt, want in zip(prompts, reference):
        got = model.generate(prompt, max_new_tokens=AGREEMENT_NEW_TOKENS, eos_token_id=[])[0, prompt.shape[1] :]
        same += int((got == want).sum())
        total += want.numel()
    return same / total


def _weights(fmt: str) -> str:
    """The weight format of a format name: ``"int8a8"`` -> ``"int8"``."""
    return fmt[:4] if fmt[:4] in ("int8", "int4") else fmt


def act_bits_available() -> bool:
    """Whether this zoo's kernels take the activation width (``quantize_model(..., act_bits=)``)."""
    return "act_bits" in inspect.signature(quantize_model).parameters


def quality_pairs(formats: Sequence[str]) -> list[str]:
    """The (weight bits, activation bits) pairs measured beside ``formats``: both activation widths of every
    integer weight width among them (:data:`QUALITY_PAIRS`)."""
    weights = {_weights(f) for f in formats}
    return [pair for pair in QUALITY_PAIRS if _weights(pair) in weights]


def _pair_columns(pair: str) -> tuple[str, str]:
    """A pair's columns on its weight format's row: ``("ppl a8 vs fp32", "agreement a8")``."""
    act = pair[4:]
    return f"ppl {act} vs fp32", f"agreement {act}"


def quality(folder: str | Path, formats: Sequence[str], paths: bool = True) -> dict[str, dict[str, float]]:
    """``{format: {"perplexity", "ppl vs fp32", "agreement", ...}}`` of the trained LM in ``folder`` (module
    docstring). Every integer format's scores also hold both activation widths of its weights
    (:func:`quality_pairs`: ``"ppl a8 vs fp32"``, ``"agreement a8"``, ``"ppl a16 vs fp32"``, ``"agreement a16"``;
    each quantization is measured once). ``paths``: also the other engines' paths at the format's bits, on the same
    trained weights -- llama.cpp on ``zoo export``'s GGUF (``"llama.cpp ppl vs fp32"``, ``"llama.cpp agreement"``)
    and, for int8 / int4, the pte's ``8da8w`` / ``8da4w`` weights run by torchao in float (``"pte ppl vs fp32"``,
    ``"pte agreement"``; the artefact's XNNPACK kernels agree with them to about 0.5% of the logits)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(
            f"no trained LM at {folder} to measure perplexity with: train the quickstart LM first (python train.py "
            "--config configs/quickstart_lm.yaml, a few minutes) or pass --quality-run FOLDER (a run or model "
            "folder with its tokenizer)"
        )
    base = create_model(str(folder), pretrained=True).eval()
    tokenizer = load_lm_tokenizer(folder)
    ids = _held_out_ids(folder, tokenizer)
    window = min(base.config.max_position_embeddings, 256)
    prompts = [
        torch.tensor([ids[i * 997 : i * 997 + AGREEMENT_PROMPT_TOKENS]], dtype=torch.long)
        for i in range(AGREEMENT_PROMPTS)
    ]
    with torch.inference_mode():
        reference = [
            base.generate(p, max_new_tokens=AGREEMENT_NEW_TOKENS, eos_token_id=[])[0, p.shape[1] :] for p in prompts
        ]
    fp32 = perplexity(base, ids, window)
    measured: dict[str, tuple[float, float]] = {}  # the quantization's description -> (perplexity, agreement)

    def scores_of(quantize: str | None, act_bits: int | None = None) -> tuple[float, float]:
        if quantize is None:
            return fp32, 1.0
        model = _quantized(base, quantize, act_bits)
        key = describe(model)
        if key not in measured:
            measured[key] = perplexity(model, ids, window), _agreement(model, reference, prompts)
        return measured[key]

    out = {}
    for fmt in formats:
        ppl, agreement = scores_of(FORMATS[fmt][0])
        scores = out[fmt] = {"perplexity": ppl, "ppl vs fp32": ppl / fp32 - 1.0, "agreement": agreement}
        if act_bits_available():
            for pair in quality_pairs([fmt]):
                ppl_column, agreement_column = _pair_columns(pair)
                pair_ppl, scores[agreement_column] = scores_of(_weights(pair), int(pair[5:]))
                scores[ppl_column] = pair_ppl / fp32 - 1.0
        if not paths:
            continue
        llama_ppl, llama_agree = _llama_cpp_quality(base, FORMATS[fmt][1], ids, window, prompts, reference)
        scores["llama.cpp ppl vs fp32"], scores["llama.cpp agreement"] = llama_ppl / fp32 - 1.0, llama_agree
        if fmt in PTE_TYPES:
            pte = quantize_for_xnnpack(base, PTE_TYPES[fmt])
            scores["pte ppl vs fp32"] = perplexity(pte, ids, window) / fp32 - 1.0
            scores["pte agreement"] = _agreement(pte, reference, prompts)
    return out


def describe(model: nn.Module) -> str:
    """The model's quantization as its config records it (``"float"`` for none): equal for equal quantizations."""
    spec = model_quantization(model)
    return "float" if spec is None else json.dumps(spec.to_dict(), sort_keys=True)


def _llama_cpp_quality(
    base: nn.Module, gguf_type: str, ids: list[int], window: int, prompts: list, reference: list
) -> tuple[float, float]:
    """Perplexity (the same windows as :func:`perplexity`) and greedy agreement with ``reference`` of ``base``'s
    GGUF at ``gguf_type`` run by llama.cpp."""
    with tempfile.TemporaryDirectory(prefix="zoo-bench-quality-") as tmp:
        export(base, "gguf", Path(tmp), quantize=gguf_type)
        llm = load_llama(
            Path(tmp) / "model.gguf",
            n_ctx=window,
            n_batch=window,
            logits_all=True,
            n_threads=torch.get_num_threads(),
            verbose=False,
        )
        try:
            data = list(ids[:32768])
            total, count = 0.0, 0
            for j in range((len(data) - 1) // window):
                chunk = data[j * window : (j + 1) * window + 1]
                llm.reset()
                llm.eval(chunk[:-1])
                logits = torch.tensor(llm.scores[:window], dtype=torch.float32)
                total += F.cross_entropy(logits, torch.tensor(chunk[1:]), reduction="sum").item()
                count += window
            same = done = 0
            for prompt, want in zip(prompts, reference):
                got = []
                for token in llm.generate(
                    prompt[0].tolist(), top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True
                ):
                    got.append(int(token))
                    if len(got) == AGREEMENT_NEW_TOKENS:
                        break
                same += sum(a == b for a, b in zip(got, want.tolist()))
                done += want.numel()
        finally:
            llm.close()
    return math.exp(total / count), same / done


# ------------------------------------------------------------------------------------------------------------------
# Speed
# ------------------------------------------------------------------------------------------------------------------


def _transformers_decoder(hf: nn.Module, prompt: torch.Tensor, new_tokens: int):
    """Greedy decoding of ``new_tokens`` by transformers (the peer of every row): the new tokens."""
    return lambda: transformers_greedy(hf, prompt, new_tokens)[0, prompt.shape[1] :].tolist()


def _zoo_decoders(model: nn.Module, fmt: str, prompt: torch.Tensor, new_tokens: int) -> dict:
    """Zoo eager and zoo compiled greedy decoding of one format's model: label -> the new tokens."""

    def decode(**kwargs) -> list[int]:
        return model.generate(prompt, max_new_tokens=new_tokens, eos_token_id=[], **kwargs)[
            0, prompt.shape[1] :
        ].tolist()

    return {f"zoo {fmt} eager": decode, f"zoo {fmt} compiled": lambda: decode(compile=True)}


def kernel_path(fmt: str, rows: int) -> str:
    """What runs a format's products of ``rows`` rows on this CPU, recorded beside each figure: the 8-bit activation
    kernels' path for int8 / int4 at 8-bit activations and the float32 one-row kernel's for fp32 decoding
    (:func:`zoo.kernels.gemv.kernel_choice`: measured here where the CPU runs several), else PyTorch's kernels."""
    q = VOCABULARY[fmt]
    if not gemv.available() or q.bits == 16:
        return "torch"
    if q.bits == 32:
        return f"zoo f32 {gemv.kernel_choice().f32}" if rows == 1 else "torch"
    if (q.act_bits or DEFAULT_ACT_BITS) == 8:
        return f"zoo a8 {gemv.kernel_path(rows)}"
    return "zoo a16 avx2" if rows == 1 else "torch"


def _extra_columns(fmt: str, rate: dict, tokens: dict, new_tokens: int, note: str | None, scores: dict | None) -> dict:
    """A format's columns beside the compiled rate: eager, overhead, llama.cpp, note, quality."""
    compiled, eager = f"zoo {fmt} compiled", f"zoo {fmt} eager"
    llama = f"llama.cpp {FORMATS[fmt][1]}"
    extra: dict = {
        "zoo eager": rate[eager],
        "overhead ms/tok": 1e3 * (1 / rate[eager] - 1 / rate[compiled]),
        # fp32/int8: the same arithmetic, so the same tokens; bf16/int4 on random weights (near-tied logits) may
        # round a tie differently once compiled
        "compiled = eager": sum(a == b for a, b in zip(tokens[compiled], tokens[eager])) / new_tokens,
        "kernel path": kernel_path(fmt, 1),
    }
    if llama in rate:
        extra[llama.split()[0]] = rate[llama]
        extra["llama.cpp type"] = FORMATS[fmt][1].upper()
        extra["vs llama.cpp"] = rate[compiled] / rate[llama]
    if note is not None:
        extra["note"] = note
    if scores is not None:
        extra.update({k: v for k, v in scores.items()})
    return extra


def compare(
    name: str,
    formats: Sequence[str] = DEFAULT_FORMATS,
    runs: int = 3,
    warmup: int = 1,
    prompt_tokens: int = 32,
    new_tokens: int = 128,
    quality_run: str | Path | None = None,
    llama_cpp: bool = True,
    pte: bool = False,
    prefill: Sequence[int] = PREFILL_LENGTHS,
    **model_kwargs,
) -> list[Row]:
    """One row per format: zoo compiled tokens/s against transformers fp32, with zoo eager, llama.cpp at the same
    bits, the per-token overhead, and the quality figures as extra columns (module docstring); ``pte``: for int8 /
    int4 also the ExecuTorch artefact (``8da8w`` / ``8da4w``) against llama.cpp, as :func:`compare_pte`;
    ``prefill``: one prefill row per prompt length and format (:func:`prefill_row`)."""
    formats = check_formats(formats)
    try:
        hf, base = build_pair(name, torch.float32, **model_kwargs)
    except ValueError:  # no stock Llama twin (layer sharing, windows, recursion): no transformers column
        hf, base = None, randomize_(create_model(name, **model_kwargs)).eval()
    _check_prefill(name, base, prefill)
    scores = quality(quality_run, formats) if quality_run is not None else {}
    prompt = torch.randint(0, base.config.vocab_size, (1, prompt_tokens), generator=torch.Generator().manual_seed(1))
    candidates, notes, pte_info, ptes = {}, {}, {}, {}
    ggufs, made = {}, {}  # format -> its GGUF; GGUF type -> the file
    if hf is not None:
        candidates[PEER] = _transformers_decoder(hf, prompt, new_tokens)
    models = {fmt: _quantized(base, FORMATS[fmt][0]) for fmt in formats}
    with (
        tempfile.TemporaryDirectory(prefix="zoo-bench-formats-") as tmp,
        _cache_in(Path(tmp) / "cache"),
        contextlib.ExitStack() as engines,  # llama.cpp engines closed before their folder goes, also on failure
    ):
        for fmt in formats:
            candidates.update(_zoo_decoders(models[fmt], fmt, prompt, new_tokens))
            gguf_type = FORMATS[fmt][1]
            if llama_cpp and gguf_type in made:  # another format of the same weight bits made it
                ggufs[fmt] = made[gguf_type]
            elif llama_cpp:
                try:
                    found, close = _llama_cpp_decoders(base, name, gguf_type, Path(tmp), prompt, new_tokens)
                except Exception as e:  # e.g. MoR's routing has no llama.cpp graph: said, not fatal
                    notes[fmt] = f"llama.cpp: {type(e).__name__}: {str(e)[:160]}"
                    continue
                candidates.update(found)
                engines.callback(close)
                ggufs[fmt] = made[gguf_type] = Path(tmp) / gguf_type / "model.gguf"
            if pte and fmt in PTE_TYPES:
                found, pte_info[fmt], ptes[fmt] = _pte_decoder(base, name, fmt, Path(tmp), prompt, new_tokens)
                candidates.update(found)
        rate, tokens, times = _time(candidates, runs, warmup, f"{name} formats", new_tokens)
        prefills = [row for length in prefill for row in prefill_rows(name, models, ggufs, ptes, length, runs, warmup)]
    peer_rate = rate.get(PEER, float("nan"))
    firsts: dict[str, str] = {}  # one backend row per GGUF type
    for fmt in formats:
        firsts.setdefault(FORMATS[fmt][1], fmt)
    backend_rows = [_backend_row(name, fmt, rate, tokens, times, new_tokens, runs) for fmt in firsts.values()]
    backend_rows += [_pte_row(name, fmt, rate, tokens, times, new_tokens, runs, info) for fmt, info in pte_info.items()]
    decode_rows = [
        peer_row(
            name,
            f"decode {new_tokens} {fmt}",
            PEER if PEER in rate else "-",
            f"zoo {fmt} compiled",
            "tok/s",
            peer_rate,
            rate[f"zoo {fmt} compiled"],
            runs,
            extra=_extra_columns(fmt, rate, tokens, new_tokens, notes.get(fmt), scores.get(fmt)),
            times_s={k: v["total"] for k, v in times.items()},
        )
        for fmt in formats
    ]
    return decode_rows + [r for r in backend_rows if r is not None] + prefills


def _check_prefill(name: str, model: nn.Module, lengths: Sequence[int]) -> None:
    """ValueError for a prefill prompt the model's context cannot hold with the token it chooses."""
    limit = model.config.max_position_embeddings - 1
    longer = [n for n in lengths if n > limit]
    if longer:
        raise ValueError(
            f"--prefill {','.join(map(str, longer))}: {name} holds {limit + 1} positions, so a prefill prompt has at "
            f"most {limit} tokens; choose shorter prompts"
        )


def prefill_rows(
    name: str, models: dict, ggufs: dict[str, Path], ptes: dict, length: int, runs: int, warmup: int
) -> list[Row]:
    """Prefill rows at a ``length``-token prompt for every format (:func:`prefill_row`), its candidates timed in one
    set of interleaved rounds: zoo eager and compiled (``generate(..., max_new_tokens=1)``), llama.cpp's prompt
    processing on the format's GGUF (``ggufs``), and the pte program (``ptes``) where its cache holds the prompt."""
    vocab = next(iter(models.values())).config.vocab_size
    prompt = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(2))
    ids = prompt[0].tolist()
    candidates: dict = {}
    with contextlib.ExitStack() as engines:
        for fmt, model in models.items():
            candidates[f"zoo {fmt} eager"] = lambda m=model: m.generate(prompt, max_new_tokens=1, eos_token_id=[])
            candidates[f"zoo {fmt} compiled"] = lambda m=model: m.generate(
                prompt, max_new_tokens=1, eos_token_id=[], compile=True
            )
            llama = f"llama.cpp {FORMATS[fmt][1]}"
            if fmt in ggufs and llama not in candidates:
                llm = _llama_cpp_prompt(ggufs[fmt], length)
                engines.callback(llm.close)
                candidates[llama] = lambda llm=llm: _eval_prompt(llm, ids)
            if fmt in ptes and ptes[fmt].max_seq_len >= length:
                candidates[f"{PTE} {PTE_TYPES[fmt]}"] = lambda lm=ptes[fmt]: lm.prefill(prompt)
        times = time_interleaved(candidates, runs, warmup, desc=f"{name} prefill {length}")
    rate = {label: length / median(t) for label, t in times.items()}
    return [prefill_row(name, fmt, length, rate, runs, times) for fmt in models]


def _llama_cpp_prompt(path: Path, length: int):
    """llama.cpp (llama-cpp-python) for ``length``-token prompts: a context of that length, the whole prompt in one
    batch and one micro-batch (``n_batch = n_ubatch = length``), torch's threads for the prompt too."""
    threads = torch.get_num_threads()
    return load_llama(
        path, n_ctx=length, n_batch=length, n_ubatch=length, n_threads=threads, n_threads_batch=threads, verbose=False
    )


def _eval_prompt(llm, ids: list[int]) -> None:
    """llama.cpp's prompt processing of ``ids`` on a fresh context (the KV cache emptied first)."""
    llm.reset()
    llm.eval(ids)


def prefill_row(name: str, fmt: str, length: int, rate: dict, runs: int, times: dict | None = None) -> Row:
    """A format's prefill at a ``length``-token prompt: zoo compiled tokens/s against llama.cpp's prompt processing
    at the same bits (``rate``: label -> tokens/s), zoo eager and the pte program beside them with their ratios
    to llama.cpp; the target (>= 0.8x) at 512 tokens."""
    llama = f"llama.cpp {FORMATS[fmt][1]}"
    compiled, eager = f"zoo {fmt} compiled", f"zoo {fmt} eager"
    peer_rate = rate.get(llama, float("nan"))
    extra: dict = {
        "zoo eager": rate[eager],
        "llama.cpp type": FORMATS[fmt][1].upper(),
        "kernel path": kernel_path(fmt, length),
    }
    if llama in rate:
        extra["eager vs llama.cpp"] = rate[eager] / peer_rate
        extra["llama.cpp n_batch"] = length
    pte = f"{PTE} {PTE_TYPES[fmt]}" if fmt in PTE_TYPES else None
    if pte in rate:
        extra["zoo pte"] = rate[pte]
        extra["pte vs llama.cpp"] = rate[pte] / peer_rate
    target = TARGETS.get(f"prefill {length} vs llama.cpp") if llama in rate else None
    labels = (compiled, eager, llama, pte)
    return peer_row(
        name,
        f"prefill {length} {fmt}",
        llama if llama in rate else "-",
        compiled,
        "tok/s",
        peer_rate,
        rate[compiled],
        runs,
        target=target,
        extra=extra,
        times_s={k: times[k]["total"] for k in labels if times is not None and k in times},
    )


@contextlib.contextmanager
def _cache_in(folder: Path):
    """The llama.cpp backend's GGUF cache (``ZOO_CACHE``) in ``folder`` for the bench's duration: its random
    weights' files go with the run's temporary folder, not into the user's cache."""
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = before


def _pte_decoder(base: nn.Module, name: str, fmt: str, tmp: Path, prompt: torch.Tensor, new_tokens: int):
    """``zoo export --format pte --quantize 8da8w | 8da4w`` of ``base`` (ExecuTorch, XNNPACK), its greedy decoding
    by :class:`~zoo.export.lm_runtime.CompiledLM`: label -> the new tokens, the export's seconds and bytes, and the
    loaded program."""
    quantize = PTE_TYPES[fmt]
    folder = tmp / f"pte-{quantize}"
    start = time.perf_counter()
    export(
        base,
        "pte",
        folder,
        model_name=name,
        max_seq_len=prompt.shape[1] + new_tokens,
        quantize=quantize,
        backend="executorch",
    )
    seconds = time.perf_counter() - start
    lm = load_pte(folder)
    gguf = tmp / FORMATS[fmt][1] / "model.gguf"
    info = {
        "export s": seconds,
        "pte MB": lm.info["file_bytes"] / 1e6,
        "gguf MB": gguf.stat().st_size / 1e6 if gguf.is_file() else float("nan"),
    }

    def decode() -> list[int]:
        return lm.generate(prompt, new_tokens, eos_token_id=[])[0, prompt.shape[1] :].tolist()

    return {f"{PTE} {quantize}": decode}, info, lm


def _pte_row(name: str, fmt: str, rate: dict, tokens: dict, times: dict, new_tokens: int, runs: int, info: dict):
    """The pte artefact against bare llama.cpp at the same bits (int8: Q8_0, int4: Q4_0)."""
    quantize, gguf_type = PTE_TYPES[fmt], FORMATS[fmt][1]
    bare, ours = f"llama.cpp {gguf_type}", f"{PTE} {quantize}"
    same = sum(a == b for a, b in zip(tokens[ours], tokens[bare])) / new_tokens if bare in tokens else float("nan")
    return peer_row(
        name,
        f"decode {new_tokens} {fmt}",
        bare if bare in rate else "-",
        f"{PTE} {quantize}",
        "tok/s",
        rate.get(bare, float("nan")),
        rate[ours],
        runs,
        target=TARGETS["pte 8da4w vs llama.cpp"] if quantize == "8da4w" else None,
        extra={
            "llama.cpp type": gguf_type.upper(),
            **info,
            "size vs gguf": info["pte MB"] / info["gguf MB"],
            "same tokens as llama.cpp (random weights)": same,
        },
        times_s={k: times[k]["total"] for k in (bare, ours) if k in times},
    )


def compare_pte(
    name: str,
    formats: Sequence[str] = ("int8", "int4"),
    runs: int = 5,
    warmup: int = 1,
    prompt_tokens: int = 32,
    new_tokens: int = 128,
    **model_kwargs,
) -> list[Row]:
    """Only the ``zoo pte`` rows: ``zoo export --format pte --quantize 8da8w / 8da4w`` (ExecuTorch, XNNPACK) of
    the int8 / int4 formats against bare llama.cpp at Q8_0 / Q4_0 on the same weights, in one set of interleaved
    rounds, with each export's seconds and the files' sizes."""
    formats = [f for f in check_formats(formats) if f in PTE_TYPES]
    if not formats:
        raise ValueError(f"the pte rows are for the formats {', '.join(PTE_TYPES)}")
    base = randomize_(create_model(name, **model_kwargs)).eval()
    prompt = torch.randint(0, base.config.vocab_size, (1, prompt_tokens), generator=torch.Generator().manual_seed(1))
    candidates, info = {}, {}
    with (
        tempfile.TemporaryDirectory(prefix="zoo-bench-pte-") as tmp,
        _cache_in(Path(tmp) / "cache"),
        contextlib.ExitStack() as engines,
    ):
        for fmt in formats:
            folder = Path(tmp) / FORMATS[fmt][1]
            export(base, "gguf", folder, model_name=name, quantize=FORMATS[fmt][1])
            llm, generate = _llama_cpp_decoder(folder / "model.gguf", prompt_tokens + new_tokens)
            engines.callback(llm.close)
            candidates[f"llama.cpp {FORMATS[fmt][1]}"] = lambda g=generate: g(prompt[0].tolist(), new_tokens)
            found, info[fmt], _ = _pte_decoder(base, name, fmt, Path(tmp), prompt, new_tokens)
            candidates.update(found)
        rate, tokens, times = _time(candidates, runs, warmup, f"{name} pte", new_tokens)
    return [_pte_row(name, fmt, rate, tokens, times, new_tokens, runs, info[fmt]) for fmt in formats]


def _time(candidates: dict, runs: int, warmup: int, desc: str, new_tokens: int):
    """The candidates timed in interleaved rounds, and their tokens: (rate, tokens, times)."""
    times = time_interleaved(candidates, runs, warmup, desc=desc)
    with torch.inference_mode():
        tokens = {label: list(fn()) for label, fn in candidates.items()}
    return {label: new_tokens / median(t) for label, t in times.items()}, tokens, times


def _llama_cpp_decoders(base: nn.Module, name: str, gguf_type: str, tmp: Path, prompt: torch.Tensor, new_tokens: int):
    """Bare llama.cpp (llama-cpp-python's own greedy loop on ``zoo export``'s GGUF), the zoo's llama.cpp backend
    (``generate(backend="llama.cpp")``) and the backend's session driven directly (``open_session`` once, then
    ``generate_on_session``: the backend's per-token work without its per-call weights check) at ``gguf_type``:
    label -> the new tokens, and what closes them."""
    folder = tmp / gguf_type
    export(base, "gguf", folder, model_name=name, quantize=gguf_type)
    llm, generate = _llama_cpp_decoder(folder / "model.gguf", prompt.shape[1] + new_tokens)

    session = open_session(base, gguf_type, prompt.shape[1] + new_tokens)  # the one generate() goes on using
    vocab, config = base.config.vocab_size, base.generation_config

    def backend() -> list[int]:
        session.forget()  # the whole prompt, as every other candidate runs it
        out = base.generate(prompt, max_new_tokens=new_tokens, eos_token_id=[], backend="llama.cpp", quantize=gguf_type)
        return out[0, prompt.shape[1] :].tolist()

    def on_session() -> list[int]:
        session.forget()
        out = generate_on_session(session, prompt, vocab, config, max_new_tokens=new_tokens, eos_token_id=[])
        return out[0, prompt.shape[1] :].tolist()

    found = {
        f"llama.cpp {gguf_type}": lambda: generate(prompt[0].tolist(), new_tokens),
        f"{BACKEND} {gguf_type}": backend,
        f"{SESSION} {gguf_type}": on_session,
    }

    def close() -> None:
        llm.close()
        release(base)  # the backend's llama.cpp models (their files go with the temporary folder)

    return found, close


def _backend_row(name: str, fmt: str, rate: dict, tokens: dict, times: dict, new_tokens: int, runs: int) -> Row | None:
    """The zoo llama.cpp backend against the bare llama.cpp loop at the format's GGUF type (None: not measured)."""
    gguf_type = FORMATS[fmt][1]
    bare, ours = f"llama.cpp {gguf_type}", f"{BACKEND} {gguf_type}"
    if bare not in rate or ours not in rate:
        return None
    same = sum(a == b for a, b in zip(tokens[ours], tokens[bare])) / new_tokens
    # each round times both back to back: the median of the rounds' own ratios is steadier than the medians' ratio
    paired = statistics.median(b / o for b, o in zip(times[bare]["total"], times[ours]["total"]))
    split = {}
    session = f"{SESSION} {gguf_type}"
    if session in times:  # the overhead split: per token (the session alone) and per call (the weights check)
        split["per-token paired ratio"] = statistics.median(
            b / o for b, o in zip(times[bare]["total"], times[session]["total"])
        )
        split["check ms/call"] = 1e3 * (median(times[ours]) - median(times[session]))
    return peer_row(
        name,
        f"decode {new_tokens} {fmt}",
        bare,
        BACKEND,
        "tok/s",
        rate[bare],
        rate[ours],
        runs,
        target=TARGETS["backend vs llama.cpp"],
        extra={
            "llama.cpp type": gguf_type.upper(),
            "overhead ms/tok": 1e3 * (1 / rate[ours] - 1 / rate[bare]),
            "paired ratio": paired,
            **split,
            "same tokens as llama.cpp": same,
        },
        times_s={k: times[k]["total"] for k in (bare, ours, session) if k in times},
    )


def compare_backend(
    name: str,
    formats: Sequence[str] = DEFAULT_FORMATS,
    runs: int = 9,
    warmup: int = 1,
    prompt_tokens: int = 32,
    new_tokens: int = 128,
    **model_kwargs,
) -> list[Row]:
    """Only the ``zoo llama.cpp backend`` rows of :func:`compare` (no compiling, no transformers, no quality): the
    backend and the bare llama.cpp loop at each format's GGUF type, in one set of interleaved rounds."""
    formats = check_formats(formats)
    base = randomize_(create_model(name, **model_kwargs)).eval()
    prompt = torch.randint(0, base.config.vocab_size, (1, prompt_tokens), generator=torch.Generator().manual_seed(1))
    candidates = {}
    with (
        tempfile.TemporaryDirectory(prefix="zoo-bench-backend-") as tmp,
        _cache_in(Path(tmp) / "cache"),
        contextlib.ExitStack() as engines,
    ):
        for fmt in formats:
            found, close = _llama_cpp_decoders(base, name, FORMATS[fmt][1], Path(tmp), prompt, new_tokens)
            candidates.update(found)
            engines.callback(close)
        rate, tokens, times = _time(candidates, runs, warmup, f"{name} backend", new_tokens)
    return [_backend_row(name, fmt, rate, tokens, times, new_tokens, runs) for fmt in formats]
