"""Training-step benchmark (``zoo bench train``): a zoo model against its peer on the same weights and batch.

One step is what a training loop does per batch: zero the gradients, forward, cross-entropy loss, backward,
optimizer step: by default the step of timm's ``benchmark.py --bench train`` (timm's ``create_optimizer_v2`` with
``opt='sgd'``, lr 1e-4), ``--opt adamw`` for AdamW; the same optimizer for both sides. The peers:

* MetaFormer (PoolFormer v1, ConvFormer, CAFormer, ...): timm's implementation of the same architecture
  (:func:`zoo.bench.vision.build_pair`: timm's random weights loaded into the zoo model);
* MobileLLM: transformers' ``LlamaForCausalLM`` (:func:`zoo.bench.lm.build_pair`), next-token loss on
  ``batch x seq_len`` random tokens.

Each side trains in a process of its own (spawned: a fresh interpreter), ``--rounds`` times, the two alternating
(peer, zoo, then zoo, peer, ...), as timm's ``benchmark.py`` is run one build per process: the zoo's process-wide
allocator policy (:func:`zoo.platform.allocator.hold_freed_memory`) never reaches the peer's steps, and neither side
runs in a heap the other left. A process takes ``--warmup`` untimed and ``--runs`` timed steps; the median step of all
of a side's processes gives images/s or tokens/s, and each round's ratio is printed beside it. Also: the loss of the
first step (before any update, the same weights and batch) of each side and their relative difference, and the peak
memory of one step (CUDA: ``max_memory_allocated``; CPU: the increase of the process RSS during the step after the
heap's free memory was returned to the OS: gradients and activations; the optimizer state exists by then).

Switches, as a recipe sets them: ``--amp bf16`` (autocast), ``--channels-last`` (vision), ``--compile``
(``torch.compile`` of both models), ``--grad-checkpointing`` (both models' own), ``--device cuda``. On a CUDA
device both sides compute their float32 products as timm's ``benchmark.py`` and ``train.py`` do, in TF32 (cuBLAS's
and cuDNN's alike, :func:`zoo.train.run_setup.cuda_precision`, with cuDNN's autotuning); ``--no-tf32`` runs them in
float32 on both sides.

``--e2e`` runs ``train.py`` itself (the model's recipe in ``--configs``, default ``./configs``, else the digits
quickstart's) for ``--steps`` steps on a generated image folder (:func:`zoo.bench.data.generate_images`) with the
recipe's loader workers and augmentation but the bench's ``--amp`` / ``--channels-last`` and thread count (so that both
sides compute alike), and sets its images/s (from ``log.csv``: every step from the second to the last, data loading,
augmentation, logging and checkpoints included, the final evaluation not) against the model-only step of the same model
and batch: what the rest of the engine costs.

Targets: zoo >= 1.3x timm for the MetaFormer models (batch 8 and 32 at 224, fp32) and >= 1.0x transformers for
mobilellm_125m (batch 4 x 512 tokens); end to end >= 0.85x the model-only rate. The same comparison through timm's
own unmodified ``benchmark.py``, each build in its own process, is ``tools/timm_benchmark.py`` in the zoo's checkout.

``--out results/train_throughput.json`` writes the model-only rows as that file's ``train_step`` list under the
run's provenance (:func:`write_results`), replacing the rows of the same model, batch and switches.
"""

from __future__ import annotations

import argparse
import csv
import gc
import multiprocessing
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from torch import nn
from tqdm import tqdm

from ..factory import create_model
from ..layers.args import add_device, int_between
from ..profile import peak_rss, trim_heap
from ..registry import get_entry, list_models
from ..train import cli as train_cli
from ..train.run_setup import cuda_precision
from . import lm, vision
from .data import CLASSES, generate_images
from .harness import (
    Row,
    environment,
    load_results,
    merge_rows,
    one_writer,
    peer_row,
    print_header,
    provenance,
    report,
    save_results,
    time_interleaved,
)
from .options import add_common, add_configs, add_out, check_out, recipe_path, recorded_command, refuse

DEFAULT_MODELS = ("poolformer_s12", "convformer_s18", "caformer_s18")
LM_DEFAULT_MODELS = ("mobilellm_125m",)
TARGETS = {"metaformer": 1.3, "mobilellm": 1.0}  # zoo / peer, by family
VISION_BATCHES = (8, 32)
LR = 1e-4
# relative difference of the first-step losses that counts as the same loss: fp32 arithmetic in another order;
# under bf16 autocast the two sides round differently
LOSS_TOLERANCE = {None: 1e-4, torch.bfloat16: 2e-2}
E2E_TARGET = 0.85


@dataclass
class Settings:
    """How the step runs: batch, input size, and the recipe's switches."""

    batch_size: int
    img_size: int = 224
    seq_len: int = 512
    amp: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False
    grad_checkpointing: bool = False
    device: str = "cpu"
    opt: str = "sgd"
    tf32: bool = True  # CUDA: TF32 float32 products (cuda_precision), as timm's benchmark.py and train.py

    def switches(self) -> list[str]:
        """The recipe switches that are on (``bf16``, ``channels-last``, ``compile``, ``grad-ckpt``, ``adamw``; on a
        CUDA device ``tf32`` or ``no-tf32``)."""
        gpu = self.device != "cpu"
        return [
            name
            for name, on in (
                ("bf16", self.amp is torch.bfloat16),
                ("channels-last", self.channels_last),
                ("compile", self.compile),
                ("grad-ckpt", self.grad_checkpointing),
                ("adamw", self.opt == "adamw"),
                ("tf32", gpu and self.tf32),
                ("no-tf32", gpu and not self.tf32),
            )
            if on
        ]

    def describe(self) -> str:
        return " ".join([f"batch {self.batch_size}", *self.switches(), self.device])


@dataclass
class Side:
    """One candidate: its parameters and its loss on the batch (forward included)."""

    module: nn.Module
    loss: Callable[[], torch.Tensor]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prepare(model: nn.Module, settings: Settings) -> nn.Module:
    """The model as the recipe would train it: on the device, in train mode, its switches applied."""
    model = model.to(settings.device).train()
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if settings.grad_checkpointing:
        if hasattr(model, "gradient_checkpointing_enable"):  # transformers
            model.gradient_checkpointing_enable()
        else:
            model.set_grad_checkpointing(True)
    return model


def _vision_side(name: str, settings: Settings, label: str) -> tuple[str, Side, str]:
    """(peer name, the ``label`` side: timm's or the zoo's, unit) on one batch of random images and labels. The
    zoo's side is built from timm's weights; timm's side never builds the zoo's model."""
    if label == "zoo":
        model = vision.build_pair(name)[1]
    else:
        model = vision.peer_model(name)
    gen = torch.Generator().manual_seed(settings.batch_size)
    x = torch.randn(settings.batch_size, 3, settings.img_size, settings.img_size, generator=gen)
    y = torch.randint(0, model.num_classes, (settings.batch_size,), generator=gen)
    x, y = x.to(settings.device), y.to(settings.device)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model = _prepare(model, settings)
    run = torch.compile(model) if settings.compile else model
    return vision.PEER, Side(model, lambda: F.cross_entropy(run(x), y)), "img/s"


def _lm_side(name: str, settings: Settings, label: str, **model_kwargs) -> tuple[str, Side, str]:
    """(peer name, the ``label`` side: transformers' or the zoo's, unit) on ``batch x seq_len`` random tokens."""
    hf, ours = lm.build_pair(name, torch.float32, **model_kwargs)
    model = ours if label == "zoo" else hf
    del hf, ours
    gen = torch.Generator().manual_seed(settings.batch_size)
    ids = torch.randint(0, model.config.vocab_size, (settings.batch_size, settings.seq_len), generator=gen)
    ids = ids.to(settings.device)

    def next_token_loss(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())

    model = _prepare(model, settings)
    run = torch.compile(model) if settings.compile else model
    if label == "zoo":
        return lm.PEER, Side(model, lambda: next_token_loss(run(ids))), "tok/s"
    return lm.PEER, Side(model, lambda: next_token_loss(run(input_ids=ids, use_cache=False).logits)), "tok/s"


def _side(name: str, settings: Settings, label: str, **lm_kwargs) -> tuple[str, Side, str]:
    """(peer name, the ``label`` side (``"zoo"`` or ``"peer"``), unit) of ``name``'s comparison."""
    if _family(name) == "metaformer":
        return _vision_side(name, settings, label)
    return _lm_side(name, settings, label, **lm_kwargs)


def _family(name: str) -> str:
    """``name``'s family, one that has a training peer; ValueError naming what the comparison covers otherwise."""
    family = get_entry(name).family
    if family not in TARGETS:
        raise ValueError(
            f"zoo bench train compares MetaFormer models with timm and MobileLLM with transformers; {name} is a "
            f"{family} model"
        )
    return family


def _optimizer(module: nn.Module, opt: str) -> torch.optim.Optimizer:
    """timm's ``create_optimizer_v2(module, opt=opt, lr=1e-4)``: what ``benchmark.py`` builds for ``sgd``."""
    return create_optimizer_v2(module, opt=opt, lr=LR)


def _step(side: Side, optimizer: torch.optim.Optimizer, settings: Settings) -> Callable[[], None]:
    device = torch.device(settings.device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=settings.amp or torch.bfloat16, enabled=settings.amp is not None):
            loss = side.loss()
        loss.backward()
        optimizer.step()
        _sync(device)

    return step


def _first_loss(side: Side, settings: Settings) -> float:
    device = torch.device(settings.device)
    with torch.no_grad(), torch.autocast(device.type, dtype=settings.amp or torch.bfloat16, enabled=bool(settings.amp)):
        return float(side.loss())


def _peak_memory(step: Callable[[], None], device: torch.device) -> int:
    """Bytes one step needs beyond what is resident before it (see the module docstring)."""
    if device.type != "cuda":
        gc.collect()
        trim_heap()  # so that the RSS the step reaches counts its own allocations, not what was freed and kept
        return peak_rss(step)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    return torch.cuda.max_memory_allocated(device) - before


def measure_side(
    name: str, settings: Settings, label: str, runs: int, warmup: int, threads: int, **lm_kwargs
) -> dict[str, Any]:
    """One side's training steps in this process: its first loss, ``warmup`` untimed and ``runs`` timed steps, and
    one step's peak memory; what :func:`compare` runs in a process of its own."""
    torch.set_num_threads(threads)
    cuda_precision(torch.device(settings.device), settings.tf32, deterministic=False)
    peer, side, unit = _side(name, settings, label, **lm_kwargs)
    gc.collect()  # the other side's model, where building this one needed it
    first = _first_loss(side, settings)
    step = _step(side, _optimizer(side.module, settings.opt), settings)
    times = time_interleaved({label: step}, runs, warmup, grad=True)[label]["total"]
    peak = _peak_memory(step, torch.device(settings.device))
    return {"peer": peer, "unit": unit, "first_loss": first, "times": times, "peak": peak, "pid": os.getpid()}


def _in_own_process(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)`` in a fresh interpreter (spawned: nothing of this process's heap, threads or
    allocator settings carried over); its exceptions are raised here."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(fn, *args, **kwargs).result()
        except BrokenProcessPool as e:
            raise ChildProcessError(
                f"the process measuring {args[0]} ended without a result (killed, e.g. out of memory?): try a "
                "smaller --batch-sizes"
            ) from e


def compare(name: str, settings: Settings, runs: int = 5, warmup: int = 2, rounds: int = 3, **lm_kwargs) -> list[Row]:
    """Training-step rates of the zoo and its peer on ``name``; one row. Each side runs in its own process, ``rounds``
    times, the two alternating (peer, zoo, then zoo, peer, ...): the zoo's process-wide allocator policy
    (:func:`zoo.platform.allocator.hold_freed_memory`) never reaches the peer's steps, and a side's later steps
    never run in a heap the other side left. ``lm_kwargs`` size a language model (e.g. fewer layers for a quick
    check)."""
    family = _family(name)
    if family != "metaformer":  # a length the model has no positions for: refused here, not in a spawned process
        with torch.device("meta"):
            positions = getattr(create_model(name, **lm_kwargs).config, "max_position_embeddings", None)
        if positions is not None and settings.seq_len > positions:
            raise ValueError(f"--seq-len {settings.seq_len}: {name} has {positions} positions; use at most {positions}")
    threads = torch.get_num_threads()
    measured: dict[str, list[dict[str, Any]]] = {"peer": [], "zoo": []}
    desc = f"{name} train {settings.describe()}"
    for i in tqdm(range(rounds), desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True):
        for label in ("peer", "zoo") if i % 2 == 0 else ("zoo", "peer"):
            measured[label].append(
                _in_own_process(measure_side, name, settings, label, runs, warmup, threads, **lm_kwargs)
            )
    peer, unit = measured["peer"][0]["peer"], measured["peer"][0]["unit"]
    times = {label: [t for m in sides for t in m["times"]] for label, sides in measured.items()}
    per_round = [
        statistics.median(p["times"]) / statistics.median(z["times"])
        for p, z in zip(measured["peer"], measured["zoo"], strict=True)
    ]
    losses = {label: sides[0]["first_loss"] for label, sides in measured.items()}
    per_step = settings.batch_size * (settings.seq_len if unit == "tok/s" else 1)
    loss_diff = abs(losses["zoo"] - losses["peer"])
    return [
        peer_row(
            name,
            settings.describe(),
            peer,
            "zoo",
            unit,
            {"total": times["peer"]},
            {"total": times["zoo"]},
            runs,
            TARGETS[family],
            work=per_step,
            max_abs_diff=loss_diff,
            rel_diff=loss_diff / max(abs(losses["peer"]), 1e-30),
            extra={
                "first loss peer": losses["peer"],
                "first loss zoo": losses["zoo"],
                "peak MiB peer": max(m["peak"] for m in measured["peer"]) / 2**20,
                "peak MiB zoo": max(m["peak"] for m in measured["zoo"]) / 2**20,
                "per round": ", ".join(f"{r:.2f}" for r in per_round),
            },
            times_s={peer: times["peer"], "zoo": times["zoo"]},
        )
    ]


def loss_agrees(row: Row, amp: torch.dtype | None, model: str) -> bool:
    """Whether the first-step losses agree; PoolFormer v1's head differs from timm's by design (see
    :func:`zoo.bench.vision.head_note`), so its loss is reported, not checked."""
    if vision.head_note(model).startswith("PoolFormer v1"):
        return True
    return row.rel_diff is not None and row.rel_diff <= LOSS_TOLERANCE[amp]


def notes(rows: list[Row]) -> list[str]:
    if not any("first loss zoo" in r.extra for r in rows):  # --e2e
        return ["train.py: images/s of its logged steps (loading, augmentation, logging, checkpoints included)"]
    lines = [
        "first loss: before any update, same weights and batch; max|d| / rel are the loss difference",
        "peak MiB: one step's memory beyond what is resident before it (CPU: process RSS increase)",
    ]
    lines += [f"  {r.model}: {vision.head_note(r.model)}" for r in rows if vision.head_note(r.model)]
    return lines


def _e2e_rate(log_csv: Path, batch_size: int) -> float:
    """Images/s of a run's training steps from its log.csv (one row per step): from the second row to the last."""
    with open(log_csv, newline="") as f:
        times = [float(r["time"]) for r in csv.DictReader(f) if r["split"] == "train"]
    if len(times) < 3:
        raise ValueError(f"{log_csv} logged {len(times)} training steps; --steps must be at least 3")
    return batch_size * (len(times) - 1) / (times[-1] - times[0])


def end_to_end(
    name: str,
    settings: Settings,
    steps: int = 20,
    workers: int | None = None,
    runs: int = 5,
    configs: Path = Path("configs"),
) -> Row:
    """``train.py`` on a generated image folder against the model-only training step (see the module docstring):
    the model's recipe ``configs/NAME.yaml``, else ``configs/quickstart_digits.yaml``."""
    if get_entry(name).task != "image-classification":
        raise ValueError(f"--train --e2e runs train.py on a generated image folder; {name} is not an image model")
    own = configs / f"{name}.yaml"
    recipe = own if own.is_file() else recipe_path(configs, "quickstart_digits", f"--e2e (no {own})")
    count = settings.batch_size * (steps + 1)
    with tempfile.TemporaryDirectory(prefix="zoo-bench-e2e-") as tmp:
        root = Path(tmp) / "images"
        generate_images(root / "train", count, settings.img_size)
        generate_images(root / "val", 2 * settings.batch_size, settings.img_size, seed=1)
        argv = ["--config", str(recipe), "--model", name, "--output_dir", str(Path(tmp) / "run"), "--overwrite"]
        argv += ["--data.name", "image_folder", "--data.path", str(root), "--data.image_size", str(settings.img_size)]
        argv += ["--train.steps", str(steps), "--train.batch_size", str(settings.batch_size)]
        argv += ["--train.log_interval", "1", "--train.eval_max_batches", "1", "--no-progress"]
        # the model-only step's threads: left unset, a run takes the cores the load leaves free (fewer here)
        argv += ["--train.threads", str(torch.get_num_threads())]
        # the run computes as the model-only step does: the same autocast and memory format
        argv += ["--train.amp", "bf16" if settings.amp is torch.bfloat16 else "none"]
        argv += ["--train.channels_last", str(settings.channels_last).lower()]
        argv += ["--train.tf32", str(settings.tf32).lower()]
        argv += [] if workers is None else ["--data.num_workers", str(workers)]
        if train_cli.main(argv) != 0:
            raise RuntimeError(f"train.py failed on the generated folder ({' '.join(argv)})")
        e2e = _e2e_rate(Path(tmp) / "run" / "log.csv", settings.batch_size)
    model = _prepare(create_model(name, num_classes=CLASSES), settings)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(settings.batch_size, 3, settings.img_size, settings.img_size, generator=gen).to(settings.device)
    y = torch.randint(0, CLASSES, (settings.batch_size,), generator=gen).to(settings.device)
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    side = Side(model, lambda: F.cross_entropy(model(x), y))
    step = _step(side, _optimizer(model, settings.opt), settings)
    times = time_interleaved({"model only": step}, runs, 2, desc=f"{name} model-only step", grad=True)
    return peer_row(
        name,
        f"{settings.describe()} {steps} steps",
        "model only",
        "train.py",
        "img/s",
        times["model only"],
        e2e,
        steps,
        E2E_TARGET,
        work=settings.batch_size,
        extra={"recipe": recipe.name},
    )


def result_row(row: Row, settings: Settings) -> dict[str, Any]:
    """One model-only row as ``results/train_throughput.json``'s ``train_step`` list holds it (rates to two
    decimals, losses to three, memory in whole MiB, each round's ratio)."""
    tokens = row.unit == "tok/s"
    out: dict[str, Any] = {
        "model": row.model,
        "batch": f"{settings.batch_size} x {settings.seq_len if tokens else settings.img_size}" + " tokens" * tokens,
        "peer": row.peer,
        "unit": row.unit,
        "peer_rate": round(row.peer_rate, 2),
        "zoo_rate": round(row.rate, 2),
        "ratio": round(row.ratio, 2),
        "first_loss_peer": round(row.extra["first loss peer"], 3),
        "first_loss_zoo": round(row.extra["first loss zoo"], 3),
        "peak_mib_peer": round(row.extra["peak MiB peer"]),
        "peak_mib_zoo": round(row.extra["peak MiB zoo"]),
        "per_round": [float(r) for r in row.extra["per round"].split(", ")],
    }
    switches = settings.switches() + ([] if settings.device == "cpu" else [settings.device])
    if switches:
        out["switches"] = switches
    if vision.head_note(row.model).startswith("PoolFormer v1"):
        out["loss_note"] = "head differs by design"
    return out


def _key(r: dict[str, Any]) -> tuple:
    return r["model"], r["batch"], tuple(r.get("switches", ()))


@one_writer
def write_results(path: Path, rows: list[dict[str, Any]], command: str, device: str = "cpu") -> dict[str, Any]:
    """Merge one run's :func:`result_row` rows into ``path`` (rows of the same model, batch and switches replaced,
    the others kept with their own run's provenance) and write it atomically; returns the document."""
    old = load_results(path)
    head = {k: old[k] for k in ("provenance", "command") if k in old}
    doc = {**old, "provenance": provenance(device=device), "command": command}  # every other key of the file stays
    doc["train_step"] = merge_rows(old.get("train_step", []), head, rows, _key)
    save_results(path, doc)
    return doc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``zoo bench train``: forward + backward + optimizer step against the peer (timm; transformers for
    MobileLLM)."""
    # a training step reaches its steady time after a few steps (allocator and kernel caches filling)
    add_common(parser, f"comma-separated model names (default: {','.join(DEFAULT_MODELS)})", warmup=5)
    parser.add_argument(
        "--img-size", type=int_between(8, 4096), default=224, help="vision: input height and width (default 224)"
    )
    parser.add_argument("--seq-len", type=int, default=512, help="language models: tokens per row")
    parser.add_argument("--amp", choices=["bf16"], default=None, help="bf16 autocast on both sides")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--grad-checkpointing", action="store_true", help="both models' gradient checkpointing")
    parser.add_argument("--channels-last", action="store_true", help="channels-last inputs and weights")
    add_device(parser)
    parser.add_argument(
        "--no-tf32",
        dest="tf32",
        action="store_false",
        help="CUDA: float32 products in float32 on both sides (default: TF32, as timm's benchmark.py)",
    )
    parser.add_argument(
        "--opt", choices=["sgd", "adamw"], default="sgd", help="optimizer of both sides (default: sgd, benchmark.py's)"
    )
    parser.add_argument(
        "--e2e", action="store_true", help="train.py on a generated image folder against the model-only step"
    )
    parser.add_argument(
        "--rounds", type=int_between(1), default=3, help="processes per side, alternating (default 3; not --e2e)"
    )
    parser.add_argument("--steps", type=int, default=20, help="--e2e: train.py steps (default 20)")
    parser.add_argument("--workers", type=int, default=None, help="--e2e: loader workers (default: the recipe's)")
    add_configs(parser, "--e2e (NAME.yaml, else quickstart_digits.yaml)")
    add_out(parser, "results/train_throughput.json")


def _measure(
    args: argparse.Namespace, models: list[str], amp, keep: Callable[[list[dict[str, Any]]], Any] | None = None
) -> tuple[list[Row], list[dict[str, Any]]]:
    """Every model at every batch size: the rows, and the model-only rows as the results file keeps them, handed to
    ``keep`` as each is measured (a run stopped later keeps what it measured)."""
    rows, results = [], []
    for name in models:
        lm_model = get_entry(name).task == "text-generation"
        for bs in args.batch_sizes or ([4] if lm_model else list(VISION_BATCHES)):
            settings = Settings(
                batch_size=bs,
                img_size=args.img_size,
                seq_len=args.seq_len,
                amp=amp,
                channels_last=args.channels_last,
                compile=args.compile,
                grad_checkpointing=args.grad_checkpointing,
                device=args.device,
                opt=args.opt,
                tf32=args.tf32,
            )
            if args.e2e:
                rows.append(end_to_end(name, settings, args.steps, args.workers, args.runs or 5, args.configs))
            else:
                measured = compare(name, settings, args.runs or 5, args.warmup, args.rounds)
                rows += measured
                results += [result_row(r, settings) for r in measured]
                if keep is not None:
                    keep(results)
    return rows, results


def run(args: argparse.Namespace) -> int:
    """Training steps side by side with the peer; ``--out`` merges the model-only rows into the results file."""
    if args.out is not None and args.e2e:
        return refuse("--out writes the model-only training steps; --e2e has no results file (drop one of them)")
    misplaced = check_out(args.out, "train")
    if misplaced:
        return refuse(misplaced)
    models = args.models or list(DEFAULT_MODELS)
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        return refuse(f"not registered: {', '.join(unknown)}")
    amp = torch.bfloat16 if args.amp == "bf16" else None
    env = environment(device=args.device)
    title = f"Training step (forward, backward, {args.opt}): zoo vs its peer, same weights, batch and optimizer"
    print_header(title, env, [f"warm-up {args.warmup}; medians of rounds alternating the candidates"])
    keep = None
    if args.out is not None:  # the rows so far, merged after every model and batch (same keys: replaced again)

        def keep(results: list[dict[str, Any]]) -> None:
            write_results(args.out, results, recorded_command(args), args.device)

    try:
        rows, results = _measure(args, models, amp, keep)
    except ValueError as e:
        return refuse(str(e))
    except ChildProcessError as e:
        print(f"zoo bench: error: {e}", file=sys.stderr)
        return 1
    report(rows, notes(rows), args.json, env, models=models, train=True)
    wrong = [r for r in rows if not args.e2e and not loss_agrees(r, amp, r.model)]
    for r in wrong:
        print(f"CHECK FAILED: {r.model} {r.setting}: first-step loss differs from {r.peer}", file=sys.stderr)
    return 1 if wrong else 0
