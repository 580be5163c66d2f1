"""``zoo bench formats``: its command (:func:`add_arguments`, :func:`run`), what it says against the targets
(:func:`notes`) and the run merged into ``results/lm_decode.json`` (:func:`write_results`, ``--out``). The measuring
is :mod:`zoo.bench.formats`."""

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..kernels import gemv
from ..registry import get_entry, list_models
from . import formats
from .formats import BACKEND, FORMATS, PEER, PTE, PTE_TYPES, TARGETS, _pair_columns, quality_pairs
from .harness import Row, load_results, merge_rows, one_writer, print_header, provenance, report, save_results
from .options import add_common, add_out, check_out, csv_of, recorded_command, refuse

__all__ = ["add_arguments", "notes", "run", "write_results"]


def notes(rows: Sequence[Row]) -> list[str]:
    """How the rows stand against the targets (module docstring)."""
    lines = []
    by_model: dict[str, list[Row]] = {}
    for r in rows:
        by_model.setdefault(r.model, []).append(r)
    for model, rs in by_model.items():
        for r in [r for r in rs if r.candidate == BACKEND]:
            ok = "ok" if r.meets_target else "MISS"
            lines.append(
                f"{model} {r.setting.split()[-1]}: zoo llama.cpp backend {r.ratio:.2f}x bare llama.cpp "
                f"{r.extra['llama.cpp type']} (>= {r.target:.2f}x: {ok}; median of the rounds' ratios "
                f"{r.extra['paired ratio']:.2f}x), "
                f"{100 * r.extra['same tokens as llama.cpp']:.0f}% of its tokens"
                + (
                    f"; per token alone (its session, no per-call weights check) "
                    f"{r.extra['per-token paired ratio']:.2f}x, the check {r.extra['check ms/call']:.0f} ms a call"
                    if "per-token paired ratio" in r.extra
                    else ""
                )
            )
        for r in [r for r in rs if r.candidate.startswith(PTE)]:
            quantize = r.candidate.split()[-1]
            line = f"{model} {quantize}: zoo pte {r.ratio:.2f}x bare llama.cpp {r.extra['llama.cpp type']}"
            if r.target is not None:
                line += f" (>= {r.target:.2f}x: {'ok' if r.meets_target else 'MISS'})"
            size = r.extra["size vs gguf"]
            line += f"; file {r.extra['pte MB']:.1f} MB = {size:.2f}x the GGUF's"
            if quantize == "8da4w":
                line += f" (<= {TARGETS['pte 8da4w size vs gguf']:.1f}x: {'ok' if size <= 1.3 else 'MISS'})"
            lines.append(line + f"; exported in {r.extra['export s']:.0f} s")
        lines += [_prefill_line(r) for r in rs if r.setting.startswith("prefill ")]
        rs = [
            r
            for r in rs
            if r.setting.startswith("decode ") and r.candidate != BACKEND and not r.candidate.startswith(PTE)
        ]
        lines += list(dict.fromkeys(line for r in rs for line in _pair_lines(model, r.setting.split()[-1], r.extra)))
        if not rs:
            continue
        best = max(rs, key=lambda r: r.rate)
        if not math.isnan(best.peer_rate):
            ratio = best.rate / best.peer_rate
            ok = "ok" if ratio >= TARGETS["fastest vs transformers"] else "MISS"
            lines.append(f"{model}: fastest format {best.setting.split()[-1]} {ratio:.2f}x transformers fp32 ({ok})")
        for r in rs:
            fmt = r.setting.split()[-1]
            if "vs llama.cpp" in r.extra:
                line = (
                    f"{model} {fmt}: zoo compiled {r.extra['vs llama.cpp']:.2f}x llama.cpp {r.extra['llama.cpp type']}"
                )
                if fmt != "bf16":
                    ok = "ok" if r.extra["vs llama.cpp"] >= TARGETS["vs llama.cpp"] else "MISS"
                    line += f" (>= {TARGETS['vs llama.cpp']:.1f}x: {ok})"
                lines.append(line)
            bound = TARGETS.get(f"ppl {fmt}")
            if bound is not None and "ppl vs fp32" in r.extra:
                ok = "ok" if r.extra["ppl vs fp32"] <= bound else "MISS"
                lines.append(
                    f"{model} {fmt}: perplexity {100 * r.extra['ppl vs fp32']:+.2f}% vs fp32 (<= {100 * bound:.0f}%: {ok})"
                )
            lines += _path_quality_lines(model, fmt, r.extra)
    return lines


def _prefill_line(r: Row) -> str:
    """A prefill row against llama.cpp's prompt processing: compiled, eager and pte ratios, and the target."""
    length, fmt = r.setting.split()[1:]
    if r.peer == "-":
        return f"{r.model} {fmt} prefill {length}: zoo compiled {r.rate:,.1f} tok/s, eager {r.extra['zoo eager']:,.1f}"
    line = f"{r.model} {fmt} prefill {length}: zoo compiled {r.ratio:.2f}x, eager {r.extra['eager vs llama.cpp']:.2f}x"
    if "pte vs llama.cpp" in r.extra:
        line += f", pte {r.extra['pte vs llama.cpp']:.2f}x"
    line += f" llama.cpp {r.extra['llama.cpp type']} prompt processing (n_batch = n_ubatch = {length})"
    if r.target is not None:
        line += f" (>= {r.target:.1f}x: {'ok' if r.meets_target else 'MISS'})"
    return line


def _pair_lines(model: str, fmt: str, extra: dict) -> list[str]:
    """Each (weight bits, activation bits) pair of a format's weights: perplexity against fp32, its bound and
    greedy agreement."""
    lines = []
    for pair in quality_pairs([fmt]):
        ppl, agreement = _pair_columns(pair)
        if ppl in extra:
            bound = TARGETS[f"ppl {pair}"]
            ok = "ok" if extra[ppl] <= bound else "MISS"
            lines.append(
                f"{model} {pair} (the trained --quality-run LM): perplexity {100 * extra[ppl]:+.2f}% vs fp32 "
                f"(<= {100 * bound:g}%: {ok}), greedy agreement with fp32 {100 * extra[agreement]:.0f}%"
            )
    return lines


def _path_quality_lines(model: str, fmt: str, extra: dict) -> list[str]:
    """Every quantized path's perplexity against fp32 (<= 2%) and its greedy agreement with fp32."""
    lines, bound = [], TARGETS["ppl quantized path"]
    paths = [("zoo", "ppl vs fp32", "agreement")] if fmt != "fp32" else []
    paths += [("llama.cpp " + FORMATS[fmt][1].upper(), "llama.cpp ppl vs fp32", "llama.cpp agreement")]
    if fmt in PTE_TYPES:
        paths.append((f"pte {PTE_TYPES[fmt]}", "pte ppl vs fp32", "pte agreement"))
    for label, ppl, agree in paths:
        if ppl in extra:
            ok = "ok" if extra[ppl] <= bound else "MISS"
            lines.append(
                f"{model} {fmt} {label} (the trained --quality-run LM): perplexity {100 * extra[ppl]:+.2f}% vs fp32 "
                f"(<= {100 * bound:.0f}%: {ok}), greedy agreement with fp32 {100 * extra[agree]:.0f}%"
            )
    return lines


def _format_entry(r: Row) -> dict[str, Any]:
    """One decode row as ``results/lm_decode.json``'s ``formats`` list holds it (rates to one decimal)."""
    x = r.extra
    entry: dict[str, Any] = {"format": r.setting.split()[-1], "zoo_eager": round(x["zoo eager"], 1),
                             "zoo_compiled": round(r.rate, 1)}  # fmt: skip
    if r.peer == PEER:
        entry["transformers_fp32"] = round(r.peer_rate, 1)
    if "llama.cpp" in x:
        entry.update(llama_cpp=round(x["llama.cpp"], 1), llama_cpp_type=x["llama.cpp type"])
    if r.peer == PEER:
        entry["compiled_vs_transformers"] = round(r.ratio, 2)
    if "vs llama.cpp" in x:
        entry["compiled_vs_llama_cpp"] = round(x["vs llama.cpp"], 2)
    entry["compiled_equals_eager"] = round(x["compiled = eager"], 2)
    entry["overhead_ms_per_token"] = round(x["overhead ms/tok"], 1)
    if "kernel path" in x:
        entry["kernel_path"] = x["kernel path"]
    if "perplexity" in x:
        entry.update(perplexity=round(x["perplexity"], 2), perplexity_change_pct=round(100 * x["ppl vs fp32"], 2),
                     greedy_agreement=round(x["agreement"], 2))  # fmt: skip
    return entry


def _pte_entry(r: Row) -> dict[str, Any]:
    x = r.extra
    return {"pte": r.candidate.split()[-1], "tok_s": round(r.rate, 1), "llama_cpp_tok_s": round(r.peer_rate, 1),
            "llama_cpp_type": x["llama.cpp type"], "ratio": round(r.ratio, 2), "file_mb": round(x["pte MB"], 1),
            "file_vs_gguf": round(x["size vs gguf"], 2), "gguf_mb": round(x["gguf MB"], 1),
            "export_s": round(x["export s"])}  # fmt: skip


@one_writer
def write_results(path: Path, rows: Sequence[Row], command: str, settings: str) -> dict[str, Any]:
    """Merge one run into ``path`` (``results/lm_decode.json``): each model's decode rows into its entry of ``runs``
    (the formats it measured replaced, the others kept with their run's provenance), the pte rows into ``pte``
    (same artefact type replaced); the quality section and other models stay. Written atomically."""
    doc = {"unit": "tok/s", **load_results(path)}
    prov = provenance()
    runs = list(doc.get("runs", []))
    for model in dict.fromkeys(r.model for r in rows):
        decode = [
            _format_entry(r)
            for r in rows
            if r.model == model and r.setting.startswith("decode ") and r.candidate.endswith(" compiled")
        ]
        if not decode:
            continue
        i = next((i for i, run in enumerate(runs) if run["model"] == model), None)
        old = runs[i] if i is not None else {}
        head = {k: old[k] for k in ("provenance", "command") if k in old}
        entry = {"model": model, "command": command, "provenance": prov, "settings": settings,
                 "kernel_choice": str(gemv.kernel_choice()) if gemv.available() else "torch",
                 "formats": merge_rows(old.get("formats", []), head, decode, lambda f: f["format"])}  # fmt: skip
        if i is None:
            runs.append(entry)
        else:
            runs[i] = entry
    doc["runs"] = runs
    ptes = [_pte_entry(r) for r in rows if r.candidate.startswith(PTE) and r.peer != "-"]
    if ptes:
        old = doc.get("pte", {})
        head = {k: old[k] for k in ("provenance", "command") if k in old}
        doc["pte"] = {"command": command, "provenance": prov,
                      "rows": merge_rows(old.get("rows", []), head, ptes, lambda p: p["pte"])}  # fmt: skip
    save_results(path, doc)
    return doc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``zoo bench formats``: the language models' weight formats side by side."""
    add_common(parser, "comma-separated language models (default: mobilellm_125m)", batch_sizes=False)
    parser.add_argument(
        "--formats",
        type=csv_of(str),
        default=list(FORMATS),
        help=f"weight formats side by side (default: {','.join(FORMATS)}): zoo eager/compiled, transformers fp32, "
        "llama.cpp at the same bits, perplexity and greedy agreement with fp32",
    )
    parser.add_argument("--prompt-tokens", type=int, default=None, help="decode prompt (default 32)")
    parser.add_argument("--new-tokens", type=int, default=None, help="greedy tokens decoded (default 128)")
    parser.add_argument(
        "--prefill",
        default=",".join(map(str, formats.PREFILL_LENGTHS)),
        metavar="N[,N...]",
        help="prompt lengths whose prefill tokens/s is timed beside llama.cpp's prompt processing "
        f"(default {','.join(map(str, formats.PREFILL_LENGTHS))}; 0: none)",
    )
    parser.add_argument(
        "--quality-run",
        type=Path,
        default=None,
        metavar="DIR",
        help="a trained LM (run or model folder with its tokenizer, e.g. runs/quickstart_lm) whose perplexity and "
        "greedy agreement are measured per format (default: none, speed only)",
    )
    parser.add_argument(
        "--backend-only",
        action="store_true",
        help="only the zoo llama.cpp backend against bare llama.cpp at each format's GGUF type (no compiling, "
        "transformers or quality run)",
    )
    parser.add_argument(
        "--pte",
        action="store_true",
        help="also the ExecuTorch pte artefacts (int8: 8da8w, int4: 8da4w) against llama.cpp at the same bits "
        "(each export takes minutes)",
    )
    parser.add_argument(
        "--pte-only",
        action="store_true",
        help="only the pte artefacts against bare llama.cpp (no compiling, transformers or quality run)",
    )
    add_out(parser, "results/lm_decode.json")


def _title(args: argparse.Namespace) -> str:
    if args.pte_only:
        return "LM weight formats: zoo pte (ExecuTorch, XNNPACK 8da8w / 8da4w) vs bare llama.cpp Q8_0 / Q4_0, batch 1"
    if args.backend_only:
        return "LM weight formats: the zoo llama.cpp backend vs the bare llama-cpp-python loop, same GGUF, batch 1"
    return "LM weight formats: zoo (eager / compiled) vs transformers fp32 and llama.cpp at the same bits, batch 1"


def _measure(args: argparse.Namespace, models: list[str], settings: tuple, prefill: tuple[int, ...]) -> list[Row]:
    if args.backend_only:
        return [r for name in models for r in formats.compare_backend(name, args.formats, args.runs or 9, *settings)]
    if args.pte_only:
        return [r for name in models for r in formats.compare_pte(name, args.formats, args.runs or 5, *settings)]
    return [
        r
        for name in models
        for r in formats.compare(
            name, args.formats, args.runs or 3, *settings, quality_run=args.quality_run, pte=args.pte, prefill=prefill
        )
    ]


def _refused(args: argparse.Namespace, models: list[str]) -> str | None:
    """Why this run cannot start (checked before anything is measured), or None."""
    if args.out is not None and args.backend_only:
        return "--out writes the formats' decode and pte rows; --backend-only has none (use --json)"
    misplaced = check_out(args.out, "formats")
    if misplaced:
        return misplaced
    unknown = [m for m in models if m not in list_models()]
    not_lm = [m for m in models if m not in unknown and get_entry(m).task != "text-generation"]
    if unknown or not_lm:
        why = f"not registered: {', '.join(unknown)}" if unknown else f"not language models: {', '.join(not_lm)}"
        return f"--formats is for the language models; {why}"
    return None


def run(args: argparse.Namespace) -> int:
    """The weight formats of ``--models`` side by side; ``--out`` merges the run into the results file."""
    models = args.models or ["mobilellm_125m"]
    refused = _refused(args, models)
    if refused:
        return refuse(refused)
    try:
        prefill = formats.parse_prefill(args.prefill)
    except ValueError as e:
        return refuse(str(e))
    env = formats.environment()
    weights = "speed: the named model with deterministic random weights of trained scale (the same in every engine)"
    if not (args.backend_only or args.pte_only) and args.quality_run is not None:
        weights += f"; perplexity and agreement: the trained LM in {args.quality_run}"
    print_header(
        _title(args), env, [f"warm-up {max(args.warmup, 1)}; medians of rounds alternating every candidate", weights]
    )
    settings = (max(args.warmup, 1), args.prompt_tokens or 32, args.new_tokens or 128)
    try:
        rows = _measure(args, models, settings, prefill)
    except ValueError as e:
        return refuse(str(e))
    report(rows, notes(rows), args.json, env, models=models, formats=args.formats, prefill=list(prefill))
    if args.out is not None:
        scored = args.quality_run is not None and not (args.backend_only or args.pte_only)
        quality = f"; perplexity and agreement: {args.quality_run}" if scored else ""
        described = f"random weights, {settings[2]} greedy tokens after a {settings[1]}-token prompt{quality}"
        write_results(args.out, rows, recorded_command(args), described)
    # fp32 compiled computes eager's arithmetic: its tokens must agree (the other formats' agreement is reported)
    wrong = [r for r in rows if r.setting.endswith(" fp32") and r.extra.get("compiled = eager", 1.0) < 1.0]
    for r in wrong:
        print(f"CHECK FAILED: {r.model} {r.setting}: compiled tokens differ from eager", file=sys.stderr)
    return 1 if wrong else 0
