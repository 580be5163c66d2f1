"""Held-out evaluation: top-1/top-5/loss for image classifiers, perplexity for language models.

``python eval.py --model NAME (--checkpoint PATH | --pretrained) --data DATA`` or ``--model hf-hub:ORG/NAME``;
``--quantize bf16|int8|int4`` (``--group-size``) evaluates a language model with quantized weights
(:mod:`zoo.lm.quant`; a folder of quantized weights evaluates as it is); ``--backend llama.cpp`` computes a
language model's logits in llama.cpp (:mod:`zoo.export.llama_backend`) on a GGUF of its weights, ``--quantize
f32|f16|q8_0|q4_0`` its type.
Images are preprocessed with the model's own pretrained cfg (input size, crop_pct, interpolation, mean/std,
via timm's ``resolve_data_config`` + ``create_transform``); a checkpoint from a training run folder brings the
run's preprocessing and model arguments (its ``args.yaml``). Results are JSON (and CSV for many models), with
params and MACs (zoo.profile) alongside.

The evaluation is the training task's own (:mod:`zoo.train.tasks`): the same data preparation, metrics and
profiling that wrote the run's ``metrics.json``.

DATA (read by :func:`zoo.data.sources.resolve`, as train.py and ``zoo condense`` read it): ``digits`` (bundled),
``pydoc`` (bundled text), ``mnist`` / ``fashion_mnist`` / ``cifar10`` / ``cifar100`` / ``svhn`` (the folder of their
files as ``--data-path PATH`` or ``NAME:PATH``; their held-out split is ``test``), an image folder (ImageNet layout
or class folders), a ``datasets`` folder (``save_to_disk``), shards, or a text file / folder of text files.
``--split`` may be sliced: ``test[:1000]``.
"""

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data.images import BAD_FILES
from .data.sources import add_data_path_argument, resolve
from .data.text import write_atomic
from .export.llama_backend import NAME as LLAMA_CPP
from .export.llama_backend import LlamaCppLogits
from .factory import create_model
from .layers.args import add_device
from .lm.quant import INT4_GROUP_SIZES, QuantSpec, lookup, model_quantization, quant_names, quantize_argument
from .run_layout import is_run_folder
from .train.config import Recipe, load_run_recipe
from .train.distributed import DistState
from .train.tasks import EvalSource, Task, task_class, task_of_model

__all__ = ["build_model", "evaluate_model", "main"]


def _run_dir_of(checkpoint: str | None) -> Path | None:
    if not checkpoint:
        return None
    p = Path(checkpoint)
    for cand in (p if p.is_dir() else p.parent, p.parent.parent):
        if is_run_folder(cand):
            return cand
    return None


def _weights_path(checkpoint: str) -> str:
    p = Path(checkpoint)
    if p.is_dir():
        for name in ("model.safetensors", "checkpoints/last.pt"):
            if (p / name).is_file():
                return str(p / name)
        raise FileNotFoundError(f"{p} holds neither model.safetensors nor checkpoints/last.pt")
    return str(p)


def build_model(
    name: str,
    checkpoint: str | None,
    pretrained: bool,
    model_kwargs: dict[str, Any],
    num_classes: int | None,
    quantize: Any = None,
) -> tuple[nn.Module, Recipe | None, Path | None]:
    """(model, the recipe of the run the checkpoint comes from or None, that run's folder or None).

    A run's model arguments come from its recipe, with what its data decided (classes, vocabulary) read back by
    the run's task; ``model_kwargs`` and ``num_classes`` override them. ``quantize`` goes to ``create_model``.
    """
    kwargs = dict(model_kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    run = _run_dir_of(checkpoint)
    recipe = None
    if run is not None:
        recipe = load_run_recipe(run)
        if name != recipe.model:
            raise ValueError(f"--checkpoint comes from a run of {recipe.model}, not {name}")
        kwargs = task_class(recipe.task).complete_model_kwargs(
            {**recipe.model_kwargs, **kwargs}, run, _weights_path(checkpoint)
        )
    if quantize is not None:
        kwargs["quantize"] = quantize
    try:
        if checkpoint:
            return create_model(name, checkpoint_path=_weights_path(checkpoint), **kwargs), recipe, run
        return create_model(name, pretrained=pretrained, **kwargs), recipe, run
    except TypeError as e:  # the builder names the arguments it does not take (other TypeErrors are bugs)
        if "unexpected argument" not in str(e):
            raise
        given = "--model-kwargs" + (f" and the run's {run / 'args.yaml'}" if run is not None else "")
        raise ValueError(f"{e} (the arguments come from {given}): drop the ones {name} does not take") from None


def _eval_task(model: nn.Module, name: str, recipe: Recipe | None, run: Path | None, device: str) -> Task:
    """The run's task (with its recipe: its preprocessing), else the model's own."""
    if recipe is not None:
        return task_class(recipe.task)(recipe, DistState(device=device), run)
    cls = task_of_model(model, name)
    return cls(Recipe(model=name, task=cls.name), DistState(device=device), Path("."))


def _profile_row(task: Task, model: nn.Module, name: str) -> dict[str, Any]:
    try:
        return task.profile(model)
    except Exception as e:  # profiling is a report, not a reason to lose the evaluation
        print(f"eval.py: warning: profiling {name} failed ({e}); params and MACs left out", file=sys.stderr)
        return {}


def evaluate_model(
    name: str,
    data: str,
    checkpoint: str | None = None,
    pretrained: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    split: str = "validation",
    batch_size: int = 64,
    max_batches: int | None = None,
    num_classes: int | None = None,
    tokenizer: str | None = None,
    seq_len: int | None = None,
    device: str = "cpu",
    profile: bool = True,
    bad_files: str = "error",
    quantize: Any = None,
    backend: str = "torch",
    max_samples: int = 10_000,
    data_path: str | None = None,
    **keys,
) -> dict[str, Any]:
    """Evaluate one model; returns a flat dict of metrics, params and MACs.

    ``quantize``: ``"bf16"``, ``"int8"``, ``"int4"`` or a quantization dict (language models), applied after the
    weights load; the row records the format the model ran in (``quantization``). ``backend="llama.cpp"``: a
    language model's logits come from llama.cpp on a GGUF of its weights; ``quantize`` is then the GGUF's type
    (``"f32"``, the default, ``"f16"``, ``"q8_0"``, ``"q4_0"``), recorded as ``backend`` and ``gguf_type``.
    ``bad_files``: ``error`` (an image that does not decode stops with its name) or ``skip`` (the next image
    stands in for it). ``keys``: ``image_key``, ``label_key``, ``text_key`` (the columns of a ``datasets`` folder).
    ``max_samples``: of a stream (``hf_stream:NAME``, shards by URL or pattern), the first samples evaluated
    (text: documents). ``data_path``: the folder of ``data``'s files given apart (``data="mnist"``,
    ``data_path="../shared/datasets/mnist"``; the same as ``data="mnist:../shared/datasets/mnist"``).
    """
    t0 = time.time()
    gguf_type = _gguf_type(backend, quantize)
    if gguf_type is not None:
        quantize = None
    model, recipe, run = build_model(name, checkpoint, pretrained, model_kwargs or {}, num_classes, quantize)
    task = _eval_task(model, name, recipe, run, device)
    data_source = resolve(data, data_path)
    if data_source.kind not in task.data_kinds:
        raise ValueError(f"{name} is {task.data_hint}")
    source = EvalSource(
        data=data_source.path if data_source.path and not data_source.benchmark else data,  # a path, as tasks read it
        kind=data_source.kind,
        path=data_source.path,
        split=split,
        seq_len=seq_len,
        tokenizer=tokenizer,
        run_dir=run,
        weights=checkpoint,
        model_name=name,
        bad_files=bad_files,
        max_samples=min(max_samples, max_batches * batch_size) if max_batches else max_samples,
        **keys,
    )
    task.prepare_eval_data(model, source)
    model.eval().to(device)
    scored = model if gguf_type is None else LlamaCppLogits(model, gguf_type)
    metrics = task.evaluate(
        scored, batch_size, torch.device(device), contextlib.nullcontext, max_batches=max_batches, progress=True
    )
    desc = task.eval_description()
    row: dict[str, Any] = {
        "model": name,
        "weights": checkpoint or ("pretrained" if pretrained or name.startswith("hf-hub:") else "random"),
        "dataset": desc.pop("dataset"),
        "split": desc.pop("split"),
        **metrics,
        **desc,
    }
    quantization = model_quantization(model)
    if quantization is not None:
        row["quantization"] = quantization.to_dict()
    if gguf_type is not None:
        row.update(backend=LLAMA_CPP, gguf_type=gguf_type)
    if profile:
        row.update(_profile_row(task, model, name))
    row["seconds"] = round(time.time() - t0, 2)
    return row


def _gguf_type(backend: str, quantize: Any) -> str | None:
    """The GGUF type of ``backend="llama.cpp"`` (None for torch), the quantize names checked against the backend's
    part of the vocabulary (:func:`zoo.lm.quant.lookup`)."""
    if backend == "torch":
        if isinstance(quantize, str):
            try:
                lookup(quantize, "zoo")
            except ValueError as e:
                raise ValueError(f"{e} (a GGUF type: evaluate with backend='llama.cpp', --backend)") from None
        return None
    if backend != LLAMA_CPP:
        raise ValueError(f"unknown backend {backend!r}: 'torch' or {LLAMA_CPP!r}")
    if quantize is None:
        return "f32"
    try:
        return lookup(quantize, "gguf").native
    except ValueError as e:
        raise ValueError(f"backend='llama.cpp' quantizes its GGUF itself: {e}") from None


def _quantize(args: argparse.Namespace) -> Any:
    """``--quantize`` (and ``--group-size``) as ``evaluate_model`` takes them: the zoo's spec on torch, the GGUF
    type name for llama.cpp; each read through the one vocabulary."""
    spec = None
    if args.backend == "torch" and args.quantize is not None:
        _gguf_type("torch", args.quantize)  # a GGUF type on torch: said so
        spec = QuantSpec.parse(args.quantize)
    if args.group_size is not None and (spec is None or spec.bits != 4):
        raise ValueError("--group-size is for --quantize int4")
    if spec is not None and args.group_size is not None:
        spec = dataclasses.replace(spec, group_size=args.group_size)
    return args.quantize if args.backend != "torch" else spec


def _parser(prog: str = "eval.py"):
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model",
        "-m",
        action="append",
        required=True,
        help="registered name or hf-hub:ORG/NAME; repeat for many models (CSV)",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="weights: model.safetensors, a training checkpoint (.pt) or a run folder")
    src.add_argument("--pretrained", action="store_true", help="the model's registered weights (Hub)")
    p.add_argument(
        "--data",
        required=True,
        help="digits | pydoc | mnist | fashion_mnist | cifar10 | cifar100 | svhn (their files' folder: --data-path "
        "or NAME:PATH) | image folder | datasets folder | text path | shards (folder, URL or pattern) | "
        "hf_stream:NAME_OR_PATH",
    )
    add_data_path_argument(p)
    p.add_argument("--split", default="validation", help="held-out split (mnist ... svhn: test); sliced: test[:1000]")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-batches", type=int, default=None)
    p.add_argument(
        "--max-samples", type=int, default=10_000, help="a stream's first samples (text: documents; default 10000)"
    )
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--model-kwargs", default="{}", help="JSON, e.g. '{\"drop_rate\": 0.0}'")
    p.add_argument("--tokenizer", help="tokenizer.json (or a folder with one) for language models")
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--image-key"), p.add_argument("--label-key"), p.add_argument("--text-key")
    p.add_argument(
        "--quantize",
        type=quantize_argument("zoo", "gguf"),
        default=None,
        help=f"language models: evaluate with the zoo's {', '.join(quant_names('zoo'))} weights (int8 per row, int4 "
        "grouped; aN: the CPU kernels round activations to N bits, default 8); with --backend llama.cpp the GGUF's "
        f"type: {', '.join(quant_names('gguf'))} (default f32; also spelled gguf:NAME)",
    )
    p.add_argument(
        "--backend",
        choices=["torch", LLAMA_CPP],
        default="torch",
        help="language models: where the logits are computed (llama.cpp: a GGUF of the weights, cached in "
        "$ZOO_CACHE/gguf, default ~/.cache/zoo/gguf)",
    )
    p.add_argument(
        "--group-size",
        type=int,
        choices=INT4_GROUP_SIZES,
        default=None,
        help="--quantize int4: input columns per scale (default 32)",
    )
    add_device(p)
    p.add_argument(
        "--bad-files", choices=BAD_FILES, default="error", help="an image that does not decode: stop, or skip it"
    )
    p.add_argument("--no-profile", action="store_true", help="skip params/MACs")
    p.add_argument("--json", dest="json_out", help="write results to this JSON file")
    p.add_argument("--csv", dest="csv_out", help="write results to this CSV file (one row per model)")
    return p


def main(argv: list[str] | None = None, prog: str = "eval.py") -> int:
    """``eval.py``: one line and status 2 for what the user can fix, status 130 for Ctrl-C (results files are
    written whole, after every model was evaluated)."""
    args = _parser(prog).parse_args(argv)
    args.prog = prog  # eval.py, or zoo eval: the name its messages give
    try:
        return _main(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no results file was written: run the command again", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace) -> int:
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        print(f"{args.prog}: error: --model-kwargs is not valid JSON: {e}", file=sys.stderr)
        return 2
    if not isinstance(kwargs, dict):
        print(
            f"{args.prog}: error: --model-kwargs is a JSON object of argument names and values, e.g. "
            f"'{{\"drop_rate\": 0.0}}', got {args.model_kwargs}",
            file=sys.stderr,
        )
        return 2
    try:
        quantize = _quantize(args)
    except ValueError as e:
        print(f"{args.prog}: error: {e}", file=sys.stderr)
        return 2
    for flag in ("--max-samples", "--batch-size", "--max-batches", "--seq-len", "--num-classes"):
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None and value < 1:
            print(f"{args.prog}: error: {flag} {value}: give a count of 1 or more", file=sys.stderr)
            return 2
    rows = []
    for name in args.model:
        try:
            rows.append(
                evaluate_model(
                    name,
                    args.data,
                    checkpoint=args.checkpoint,
                    pretrained=args.pretrained,
                    model_kwargs=kwargs,
                    split=args.split,
                    batch_size=args.batch_size,
                    max_batches=args.max_batches,
                    num_classes=args.num_classes,
                    tokenizer=args.tokenizer,
                    seq_len=args.seq_len,
                    device=args.device,
                    profile=not args.no_profile,
                    image_key=args.image_key,
                    label_key=args.label_key,
                    text_key=args.text_key,
                    bad_files=args.bad_files,
                    quantize=quantize,
                    backend=args.backend,
                    max_samples=args.max_samples,
                    data_path=args.data_path,
                )
            )
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            print(f"{args.prog}: error: {name}: {e}", file=sys.stderr)
            return 2
    out = rows[0] if len(rows) == 1 else rows
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        write_atomic(args.json_out, text + "\n")
    if args.csv_out or len(rows) > 1:
        path = Path(args.csv_out or "eval_results.csv")
        fields = list(dict.fromkeys(k for r in rows for k in r))
        table = io.StringIO(newline="")
        w = csv.DictWriter(table, fields)
        w.writeheader()
        w.writerows([{k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()} for r in rows])
        write_atomic(path, table.getvalue())
        print(f"wrote {path}", file=sys.stderr)
    return 0
