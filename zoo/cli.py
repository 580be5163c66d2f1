"""The ``zoo`` command (also ``python -m zoo``): list, info, run, profile, cards, bench, convert, export, prune,
publish."""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from . import bench, cards, export, publish
from .compress import cli as prune_cli
from .condense import cli as condense_cli
from .data import shards
from .data.lm_tokenizer import apply_chat_template, load_lm_tokenizer
from .data.text import special_token_ids
from .export import llama_backend
from .export.run_folder import is_export_folder, run_export_folder
from .factory import create_model
from .hub import WEIGHTS_NAME
from .layers.args import parse_json_object
from .lm.decoder import DecoderLM, TextStreamer
from .profile import profile
from .publish import PublishError
from .registry import UnknownModelError, list_models, model_info
from .weights import CheckpointError, sha256_file


def _threads() -> str:
    n = torch.get_num_threads()
    return f"{n} thread" + ("" if n == 1 else "s")


def _cmd_list(args) -> int:
    names = list_models(args.pattern, family=args.family, pretrained=args.pretrained)
    if not names:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    rows, sparse = [], False
    for name in names:
        ref = model_info(name)["reference"]
        params = f"{ref['params'] / 1e6:.1f}M" if ref.get("params") else "-"
        gmacs = f"{ref['gmacs']:.2f}" if ref.get("gmacs") else "-"
        top1 = f"{ref['top1']:.1f}" if ref.get("top1") else "-"
        nonzero = "-"
        if ref.get("nonzero_params"):  # sparse models: the paper's table counts non-zero weights only
            sparse = True
            nonzero = f"{ref['nonzero_params'] / 1e6:.1f}M / {ref['nonzero_macs'] / 1e9:.2f}"
        rows.append((name, model_info(name)["family"], params, gmacs, top1, nonzero))
    header = ("model", "family", "params", "GMACs", "top-1", "non-zero params / GMACs (paper)")
    if not sparse:
        header, rows = header[:-1], [row[:-1] for row in rows]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    if sparse:
        print(
            "note: params / GMACs are dense (every weight, zeros included); the papers of sparse models count "
            "only the non-zero weights (last column); `zoo profile NAME` measures both"
        )
    return 0


def _cmd_info(args) -> int:
    print(json.dumps(model_info(args.model), indent=2, default=str))
    return 0


def _cmd_run(args) -> int:
    """Build a model (random weights unless --weights) and run it on a synthetic input seeded by --seed: a
    vision model classifies a batch of images, a language model continues a random prompt. A folder ``zoo export``
    wrote runs by its own runtime (pte, gguf, pt2, onnx)."""
    if is_export_folder(args.model):
        if args.weights or args.backend != "torch" or args.quantize is not None or args.chat is not None:
            raise ValueError(
                f"{args.model} is an export folder, run by its own runtime: --weights, --backend, --quantize and "
                "--chat are for models (export the weights again to change them)"
            )
        for line in run_export_folder(
            args.model,
            seed=args.seed,
            prompt_tokens=args.prompt_tokens,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        ):
            print(line)
        return 0
    torch.manual_seed(args.seed)  # the random init too: two runs with one seed print the same
    overlay = {"file": args.weights} if args.weights else None
    model = create_model(args.model, pretrained=bool(args.weights), pretrained_cfg_overlay=overlay).eval()
    params = sum(p.numel() for p in model.parameters())
    weights = args.weights or ("random init" if args.model in list_models() else f"from {args.model}")
    print(f"{args.model}: {params:,} params, weights: {weights}, seed {args.seed}")
    if isinstance(model, DecoderLM):
        return _run_language_model(model, args)
    if args.backend != "torch" or args.quantize is not None:
        raise ValueError("--backend and --quantize are for the language models (llama.cpp runs LMs only)")
    cfg = model.pretrained_cfg
    size = args.img_size or cfg["input_size"][-1]
    generator = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.batch_size, cfg["input_size"][0], size, size, generator=generator)
    x = (x - torch.tensor(cfg["mean"]).view(1, -1, 1, 1)) / torch.tensor(cfg["std"]).view(1, -1, 1, 1)
    with torch.inference_mode():
        model(x)  # warm-up
        start = time.perf_counter()
        logits = model(x)
        elapsed = time.perf_counter() - start
    print(
        f"input {tuple(x.shape)} -> logits {tuple(logits.shape)} in {elapsed * 1e3:.1f} ms "
        f"({args.batch_size / elapsed:.1f} img/s, {_threads()})"
    )
    top = logits.softmax(-1)[0].topk(5)
    print(
        "top-5 classes of image 0:",
        ", ".join(f"{i}:{p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist())),
    )
    return 0


def _run_language_model(model: DecoderLM, args) -> int:
    """Greedy continuation of a random prompt of ``--prompt-tokens`` ids; decoded when a tokenizer is found
    (``--chat``: the reply to a message, in the chat template of the tokenizer's folder)."""
    if args.chat is not None:
        return _chat(model, args)
    tokenizer = _find_tokenizer(args)
    vocab = model.config.vocab_size
    if tokenizer is not None:
        vocab = min(vocab, tokenizer.get_vocab_size())
    generator = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, vocab, (args.batch_size, args.prompt_tokens), generator=generator)
    engine = _prepare_backend(model, args, args.prompt_tokens + args.max_new_tokens)
    start = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=args.max_new_tokens, backend=args.backend, quantize=args.quantize)
    elapsed = time.perf_counter() - start
    new = out[:, prompt.shape[1] :]
    print(
        f"random prompt {tuple(prompt.shape)} -> {new.shape[1]} new tokens per sequence in {elapsed * 1e3:.1f} ms "
        f"(greedy, {engine}, {_threads()})"
    )
    print("prompt ids of sequence 0:   ", prompt[0].tolist())
    print("generated ids of sequence 0:", new[0].tolist())
    if tokenizer is None:
        print("no tokenizer beside the weights: ids only")
    else:
        print("prompt text:   ", repr(tokenizer.decode(prompt[0].tolist())))
        print("generated text:", repr(tokenizer.decode(new[0].tolist())))
    return 0


def _chat(model: DecoderLM, args) -> int:
    """``zoo run --chat MESSAGE``: the message in the tokenizer folder's chat template, the reply streamed as it is
    generated (greedy; it ends at the model's or the tokenizer's EOS, or after --max-new-tokens)."""
    folder = _tokenizer_folder(args)
    if folder is None:
        raise ValueError(
            "--chat needs the model's tokenizer: a folder (--weights or the model folder) with tokenizer.json or "
            "tokenizer.model and its chat template"
        )
    tokenizer = load_lm_tokenizer(folder)
    prompt = torch.tensor([apply_chat_template(folder, [{"role": "user", "content": args.chat}])])
    vocab = model.config.vocab_size
    stops = {model.config.eos_token_id, special_token_ids(tokenizer)["eos_token_id"]}
    stops = sorted(i for i in stops if isinstance(i, int) and 0 <= i < vocab)
    print(f"chat template of {folder}: {prompt.shape[1]} prompt tokens")
    engine = _prepare_backend(model, args, prompt.shape[1] + args.max_new_tokens)
    print("reply: ", end="", flush=True)
    start = time.perf_counter()
    out = model.generate(
        prompt,
        max_new_tokens=args.max_new_tokens,
        stop_token_ids=stops,
        streamer=TextStreamer(tokenizer, skip_prompt=True),
        backend=args.backend,
        quantize=args.quantize,
    )
    elapsed = time.perf_counter() - start
    print(f"{out.shape[1] - prompt.shape[1]} new tokens in {elapsed * 1e3:.1f} ms ({engine}, {_threads()})")
    return 0


def _prepare_backend(model: DecoderLM, args, length: int) -> str:
    """``--backend llama.cpp``: the GGUF written (or found in the cache) and loaded before the timed generation,
    said with the time it took; the engine's name for the timing line."""
    if args.backend == "torch":
        if args.quantize is not None:
            raise ValueError("--quantize picks the GGUF type of --backend llama.cpp; add --backend llama.cpp")
        return "torch"
    start = time.perf_counter()
    session = llama_backend.open_session(model, args.quantize, length)
    print(f"llama.cpp: {session.path} ({session.quantize}) ready in {time.perf_counter() - start:.1f} s")
    return f"llama.cpp {session.quantize}"


def _find_tokenizer(args):
    """The tokenizer in the model's folder (see :func:`_tokenizer_folder`), or None."""
    folder = _tokenizer_folder(args)
    return load_lm_tokenizer(folder) if folder is not None else None


def _tokenizer_folder(args) -> Path | None:
    """The folder holding the model's tokenizer (the --weights folder or file's folder, or a model folder given as
    the name, a training run's export/ included), or None."""
    places = []
    if args.weights:
        weights = Path(args.weights)
        places.append(weights if weights.is_dir() else weights.parent)
    name = str(args.model).removeprefix("local-dir:")
    if not name.startswith("hf-hub:") and Path(name).is_dir():
        places += [Path(name), Path(name) / "export"]
    for folder in places:
        if (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file():
            return folder
    return None


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _cmd_profile(args) -> int:
    size = tuple(int(v) for v in args.input_size.split(",")) if args.input_size else None
    batch_sizes = [int(v) for v in args.batch_sizes.split(",")] if args.batch_sizes else None
    result = profile(
        args.model,
        input_size=size,
        batch_size=args.batch_size,
        device=args.device,
        latency=args.latency or bool(batch_sizes),
        batch_sizes=batch_sizes,
        runs=args.runs,
        warmup=args.warmup,
        channels_last=args.channels_last,
        compile=args.compile,
        memory=args.memory,
        breakdown=args.breakdown,
        cross_check=not args.no_cross_check,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"{result.name} @ {result.input_size} on {result.device}")
    print(
        f"  params (dense):    {result.params:,} ({result.trainable_params:,} trainable, "
        f"{result.frozen_params:,} frozen)   [every weight, zeros included]"
    )
    print(
        f"  params (non-zero): {result.nonzero_params:,} ({_share(result.nonzero_params, result.params)} of dense)"
        f"   [weights that are not exactly zero]"
    )
    print(
        f"  MACs (dense):      {result.macs / 1e9:.3f} G   FLOPs (= 2 x MACs): {result.flops / 1e9:.3f} G   "
        f"[fvcore + zoo handles]"
    )
    if result.nonzero_macs is not None:
        print(
            f"  MACs (non-zero):   {result.nonzero_macs / 1e9:.3f} G ({_share(result.nonzero_macs, result.macs)} of "
            f"dense)   [each conv/linear layer's MACs scaled by its weight density]"
        )
    print(f"  left uncounted: {', '.join(sorted(result.uncounted_ops)) or 'nothing'}")
    if result.lm:  # language models: per-token costs
        lm = result.lm
        print(
            f"  per token: prefill {lm['macs_per_token_prefill'] / 1e6:.1f} M MACs (T={lm['seq_len']}), decode "
            f"{lm['macs_per_token_decode'] / 1e6:.1f} M MACs after {lm['seq_len']} cached; KV cache "
            f"{lm['kv_cache_bytes_per_token']:,} B/token"
        )
    if result.flop_counter_check:
        c = result.flop_counter_check
        print(
            f"  cross-check with FlopCounterMode ({c['ops']}): {c['fvcore_macs']:,} vs "
            f"{c['flop_counter_macs']:,} MACs ({c['rel_diff']:.3%})"
        )
    for t in result.latency:
        print(f"  batch {t['batch_size']}: {t['median_ms']:.2f} ms median of {t['runs']}, {t['throughput']:.1f} img/s")
    if result.peak_memory:
        print(f"  peak memory: {result.peak_memory['bytes'] / 2**20:.1f} MiB ({result.peak_memory['method']})")
    if result.module_table:
        print(result.module_table)
    print(f"  tools: {', '.join(f'{k} {v}' for k, v in result.tools.items())}")
    return 0


def _cmd_convert(args) -> int:
    """An authors' (or timm's, or transformers') checkpoint -> a zoo folder: safetensors, config.json, model card."""
    try:
        model_args = json.loads(args.model_args) if args.model_args else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-args must be a JSON object, e.g. '{{\"num_classes\": 10}}' ({e})") from None
    if not isinstance(model_args, dict):
        raise ValueError("--model-args must be a JSON object, e.g. '{\"num_classes\": 10}'")
    model = create_model(
        args.model, pretrained=True, pretrained_cfg_overlay={"file": args.checkpoint}, **model_args
    ).eval()
    out = publish.export_pretrained(
        model, args.out_dir, model_name=args.model, model_kwargs=model_args, latency_runs=args.latency_runs
    )
    print(f"converted {args.checkpoint} ({args.model}) -> {out}: " + ", ".join(sorted(f.name for f in out.iterdir())))
    return 0


def _cmd_publish(args) -> int:
    token = None
    try:
        if args.token_env:
            token = os.environ.get(args.token_env)
            if not token:
                raise PublishError(f"environment variable {args.token_env} (--token-env) is not set or empty")
        publish.check_repo_id(args.repo)
        folder = publish.export_run(
            args.run_dir, args.out_dir, repo_id=args.repo, license=args.license, latency_runs=args.latency_runs
        )
        print(f"exported {folder}: {', '.join(publish.exported_files(folder))}")
        print(f"  sha256 of {WEIGHTS_NAME}: {sha256_file(folder / WEIGHTS_NAME)}")
        if args.no_push:
            return 0
        url = publish.upload_folder(
            folder,
            args.repo,
            private=args.private,
            token=token,
            commit_message=f"Upload {args.repo} from run {Path(args.run_dir).name}",
        )
        card = publish.save_published_card(folder, args.repo, args.cards_dir)
        print(f"published {url}" + (" (private)" if args.private else ""))
        if card is not None:
            print(f"  model card also written to {card}")
        print(f'  load it with zoo.create_model("hf-hub:{args.repo}", pretrained=True)')
        return 0
    except (PublishError, CheckpointError, ValueError, TypeError) as e:
        print(f"zoo publish: error: {publish.scrub_token(str(e), token)}", file=sys.stderr)
        return 2


def _cmd_export(args) -> int:
    """A model, model folder or training run -> a deployment folder (artefact, card, config, preprocessing)."""
    model_args = parse_json_object(args.model_args, "--model-args")
    input_size = tuple(int(s) for s in args.input_size.split(",")) if args.input_size else None
    try:
        result = export.export(
            args.source,
            args.format,
            args.out,
            weights=args.weights,
            model_kwargs=model_args,
            dynamic_batch=args.dynamic_batch,
            dynamic_size=args.dynamic_size,
            input_size=input_size,
            opset=args.opset,
            quantize=None if args.quantize in (None, "none") else args.quantize,
            max_seq_len=args.max_seq_len,
            check=args.check,
            tokenizer=args.tokenizer,
            **({"backend": args.backend} if args.backend else {}),
            **({"dynamic_prompt": args.dynamic_prompt} if args.dynamic_prompt is not None else {}),
            **({"prompt_chunk": args.prompt_chunk} if args.prompt_chunk is not None else {}),
            **({"group_size": args.group_size} if args.group_size is not None else {}),
        )
    except export.ExportError as e:
        print(f"zoo export: error: {e}", file=sys.stderr)
        return 2
    files = sorted(p.name for p in result.folder.iterdir() if not p.name.startswith("."))
    print(f"exported {result.spec.name} to {result.folder}: {', '.join(files)}")
    if result.check is not None:
        check = result.check
        parts = [f"{k} {check[k]:.3g}" for k in ("max_abs_diff", "max_rel_diff") if isinstance(check.get(k), float)]
        if "tokens_equal" in check:
            parts.append(f"greedy tokens equal: {check['tokens_equal']}")
        print(f"  check ({check.get('runtime', args.format)}): " + ", ".join(parts) + " -> ok")
    return 0


def _add_list_parser(sub) -> None:
    p = sub.add_parser("list", help="list registered models with reference params / MACs / top-1")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'caformer_*'")
    p.add_argument("--family", default=None)
    p.add_argument("--pretrained", action="store_true", help="only models with published weights")
    p.set_defaults(func=_cmd_list)


def _add_info_parser(sub) -> None:
    p = sub.add_parser("info", help="family, paper, reference figures and pretrained cfg of a model")
    p.add_argument("model")
    p.set_defaults(func=_cmd_info)


def _add_run_parser(sub) -> None:
    p = sub.add_parser(
        "run", help="build a model and run it on a seeded synthetic input (images, or a language model's prompt)"
    )
    p.add_argument("model", help="registered name, hf-hub:ORG/NAME, a model folder, or a folder zoo export wrote")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--img-size", type=int, default=None, help="vision models: image size (default: the model's)")
    p.add_argument("--weights", default=None, help="checkpoint file or folder to load (any supported origin)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init and the synthetic input (default 0)")
    p.add_argument("--prompt-tokens", type=int, default=8, help="language models: random prompt length (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=8, help="language models: tokens to generate (default 8)")
    p.add_argument(
        "--chat",
        default=None,
        metavar="MESSAGE",
        help="language models: reply to MESSAGE in the chat template of the tokenizer folder (tokenizer_config.json "
        "or chat_template.jinja beside the weights), streamed",
    )
    p.add_argument(
        "--backend",
        choices=["torch", llama_backend.NAME],
        default="torch",
        help="language models: where the forward passes run (llama.cpp: a GGUF of the weights, written once into "
        "$ZOO_CACHE/gguf, default ~/.cache/zoo/gguf)",
    )
    p.add_argument(
        "--quantize",
        choices=llama_backend.QUANTIZE,
        default=None,
        help=f"--backend llama.cpp: the GGUF's weight type (default {llama_backend.DEFAULT_QUANTIZE})",
    )
    p.set_defaults(func=_cmd_run)


def _add_profile_parser(sub) -> None:
    p = sub.add_parser("profile", help="params, MACs (fvcore), latency and memory")
    p.add_argument("model")
    p.add_argument("--input-size", default=None, help="C,H,W (default: the model's cfg)")
    p.add_argument("--batch-size", type=int, default=1, help="batch for MACs and memory (default 1)")
    p.add_argument("--latency", action="store_true", help="time the forward pass")
    p.add_argument("--batch-sizes", default=None, help="comma-separated batch sizes to time (implies --latency)")
    p.add_argument("--runs", type=int, default=10, help="timed passes; the median is reported")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="time torch.compile(model)")
    p.add_argument("--memory", action="store_true", help="peak memory of one forward")
    p.add_argument("--breakdown", action="store_true", help="fvcore's per-module table")
    p.add_argument("--no-cross-check", action="store_true", help="skip the FlopCounterMode cross-check")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_profile)


def _add_cards_parser(sub) -> None:
    p = sub.add_parser("cards", help="regenerate model_cards/*.md and the model table (--check: verify)")
    cards.add_arguments(p)
    p.set_defaults(func=cards.run)


def _add_condense_parser(sub) -> None:
    p = sub.add_parser(
        "condense", help="dataset distillation: a few synthetic images per class that train almost like the data"
    )
    condense_cli.add_arguments(p)
    p.set_defaults(func=condense_cli.run)


def _add_data_parser(sub) -> None:
    p = sub.add_parser("data", help="datasets: `zoo data shard FOLDER --out DIR` writes an image folder as shards")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    shard = data_sub.add_parser("shard", help="an image folder as tar shards (WebDataset's layout) with an index")
    shards.add_arguments(shard)
    shard.set_defaults(func=shards.run)


def _add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="throughput vs timm on the same weights; --family/--all: the model table")
    bench.add_arguments(p)
    p.set_defaults(func=bench.run)


def _add_convert_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint of any supported origin (the authors', timm's, "
        "transformers') into a zoo folder: model.safetensors, config.json, card",
    )
    p.add_argument("model", help="registered name, e.g. slak_tiny")
    p.add_argument("checkpoint", help="the checkpoint file (or a transformers folder for LMs)")
    p.add_argument("out_dir")
    p.add_argument(
        "--model-args",
        default=None,
        help="JSON model arguments, e.g. '{\"num_classes\": 10}' or '{\"deploy\": true}' for SLaK",
    )
    p.add_argument("--latency-runs", type=int, default=0, help="time N CPU passes for the card (default: none)")
    p.set_defaults(func=_cmd_convert)


def _add_export_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a deployment artefact (torch.export pt2, ONNX, the LMs' compiled pte, GGUF) with its card",
    )
    p.add_argument("source", help="registered name, hf-hub:ORG/NAME, a model folder or a training run folder")
    p.add_argument("--format", required=True, choices=list(export.FORMATS))
    p.add_argument("--out", default=None, help="the folder to write (default ./NAME-FORMAT)")
    p.add_argument("--weights", default=None, help="checkpoint to load into a registered name (any supported origin)")
    p.add_argument("--model-args", default=None, help="JSON model arguments, e.g. '{\"num_classes\": 10}'")
    p.add_argument(
        "--dynamic-batch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a dynamic batch dimension (default: on)",
    )
    p.add_argument("--dynamic-size", action="store_true", help="vision: dynamic height/width where allowed")
    p.add_argument("--input-size", default=None, help="vision: C,H,W of the example input (default: the model's)")
    p.add_argument("--opset", type=int, default=20, help="ONNX opset (default 20, with native Gelu)")
    p.add_argument(
        "--quantize",
        default=None,
        help="stored weights: pt2 (LMs) bf16, int8, int4 (zoo's weight-only codes, groups of 32); onnx int8 "
        "(dynamic quantization, an extra model.int8.onnx); gguf f32, f16, q8_0, q4_0; pte (executorch) 8da4w, 8da8w "
        "(XNNPACK's int8-activation kernels with int4 weights in groups of 32 / int8 weights)",
    )
    p.add_argument("--max-seq-len", type=int, default=256, help="LMs: static KV cache length (default 256)")
    p.add_argument(
        "--backend",
        choices=["executorch", "aoti"],
        default=None,
        help="pte: ExecuTorch + XNNPACK (default when installed) or an AOTInductor package",
    )
    p.add_argument(
        "--tokenizer", default=None, help="LMs: tokenizer.json to ship (default: the one beside the weights)"
    )
    p.add_argument(
        "--group-size",
        type=int,
        default=None,
        help="pte --quantize 8da4w: input columns per int4 scale (default 32; 0: one scale per output row, XNNPACK's "
        "per-channel kernels, faster and coarser)",
    )
    p.add_argument(
        "--dynamic-prompt",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pte (executorch): one method for a prompt of any length (the export takes about twice as long, "
        "decoding 7%% longer) instead of a one-token method and a prompt-chunk method (the default)",
    )
    p.add_argument(
        "--prompt-chunk",
        type=int,
        default=None,
        help="pte (executorch): tokens per call of the prompt method, lowered beside the one-token method (default "
        "32; 0: no prompt method, the prompt fed token by token and an export of one method)",
    )
    p.add_argument("--check", action="store_true", help="run the artefact on a seeded sample and compare with eager")
    p.set_defaults(func=_cmd_export)


def _add_prune_parser(sub) -> None:
    p = sub.add_parser(
        "prune",
        help="structurally prune a model, folder or run (Torch-Pruning's dependency graph) into a loadable folder",
    )
    prune_cli.add_arguments(p)
    p.set_defaults(func=prune_cli.run)


def _add_publish_parser(sub) -> None:
    p = sub.add_parser(
        "publish", help="export a training run (weights, config.json, model card) and upload it to the Hub"
    )
    p.add_argument("run_dir", help="a training run folder (args.yaml, model.safetensors, metrics.json)")
    p.add_argument("--repo", required=True, help="the Hub repo, ORG/NAME (created if it does not exist)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument(
        "--token-env",
        default=None,
        metavar="VAR",
        help="read the write token from environment variable VAR (default: HF_TOKEN or the token of `hf auth login`)",
    )
    p.add_argument("--out-dir", default=None, help="where to write the exported folder (default RUN_DIR/publish)")
    p.add_argument(
        "--cards-dir",
        default=publish.AUTO_CARDS_DIR,
        help="where to copy the model card (default: model_cards/published when run from the zoo's own checkout)",
    )
    p.add_argument("--license", default=None, help="the weights' license (default: the architecture's)")
    p.add_argument(
        "--latency-runs",
        type=int,
        default=10,
        help="timed CPU passes for the card's latency figure (0: leave latency out)",
    )
    p.add_argument("--no-push", action="store_true", help="export only; upload nothing")
    p.set_defaults(func=_cmd_publish)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="A model zoo of compact, efficient backbones.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_list_parser(sub)
    _add_info_parser(sub)
    _add_run_parser(sub)
    _add_profile_parser(sub)
    _add_cards_parser(sub)
    _add_condense_parser(sub)
    _add_data_parser(sub)
    _add_bench_parser(sub)
    _add_convert_parser(sub)
    _add_export_parser(sub)
    _add_prune_parser(sub)
    _add_publish_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UnknownModelError, CheckpointError, ValueError, TypeError) as e:
        print(f"zoo {args.command}: error: {e}", file=sys.stderr)
        return 2
