"""``zoo export``: a model, model folder or training run -> a deployment folder, from the command line.

``add_arguments(parser)`` declares the options and ``run(args)`` does the work (:func:`zoo.export.core.export`);
``zoo/cli.py`` mounts the pair.
"""

import argparse
import sys

from ..layers.args import parse_json_object
from ..lm.quant import quant_names
from .core import FORMATS, ExportError, export

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``zoo export``'s arguments."""
    p.add_argument("source", help="registered name, hf-hub:ORG/NAME, a model folder or a training run folder")
    p.add_argument("--format", required=True, choices=list(FORMATS))
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
        help=f"stored weights: pt2 (LMs) {', '.join(quant_names('zoo'))} (zoo's weight-only codes, int4 in groups of "
        f"32); onnx {', '.join(quant_names('onnx'))} (dynamic quantization, an extra model.int8.onnx); gguf "
        f"{', '.join(quant_names('gguf'))}; pte (executorch) {', '.join(quant_names('pte'))} (XNNPACK's "
        "int8-activation kernels with int8 weights / int4 weights in groups of 32); the runtimes' names also spelled "
        "with their backend (gguf:q4_0, pte:8da4w)",
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


def run(args: argparse.Namespace) -> int:
    """A model, model folder or training run -> a deployment folder (artefact, card, config, preprocessing)."""
    model_args = parse_json_object(args.model_args, "--model-args")
    input_size = tuple(int(s) for s in args.input_size.split(",")) if args.input_size else None
    try:
        result = export(
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
    except ExportError as e:
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
