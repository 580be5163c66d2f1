"""The training loop shared by image classification and language modelling.

``train(recipe)`` runs a recipe end to end: data, model, optimizer (timm ``create_optimizer_v2``), schedule
(timm ``create_scheduler_v2``, stepped per optimizer update), AMP, gradient accumulation and clipping, EMA
(timm ``ModelEmaV3``), dynamic sparse training, distillation from a frozen teacher, data pruning
(:mod:`zoo.train.pruning`), checkpoints with exact resume, CSV/TensorBoard logs, a held-out
evaluation, profiling, ``model.safetensors`` + ``metrics.json`` and the publishable folder.

The run folder belongs to one run: a new run refuses a folder that holds files unless it resumes or overwrites,
and the run holds ``RUN_DIR/.lock`` while it writes. ``metrics.json`` is written last: a folder with it, the
weights and the final checkpoint holds a finished run, which ``--resume auto`` leaves as it is.
"""

import contextlib
import copy
import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.utils import dispatch_clip_grad
from torch import nn
from torch.utils.data import DataLoader, default_collate
from tqdm.auto import tqdm

from ..data.errors import DataError
from ..data.sources import is_stream
from ..data.stream import SampleStream, head_items
from ..factory import resolve_source
from ..publish import PublishError, export_pretrained, publish_run
from ..registry import UnknownModelError, get_entry
from ..weights import CheckpointError, save_state_dict
from .builders import (
    build_distiller,
    build_ema,
    build_optimizer,
    build_scheduler,
    build_sparsity,
    check_teacher_name,
    schedule_steps,
)
from .checkpoint import (
    RunFolderError,
    RunLock,
    capture_rng_state,
    clear_run_outputs,
    find_checkpoints,
    latest_good_checkpoint,
    load_training_checkpoint,
    naming_full_disk,
    remove_temp_files,
    restore_rng_state,
    save_training_checkpoint,
    write_text_atomic,
)
from .config import Recipe, RecipeError, load_run_args, recipe_to_dict, save_recipe
from .distill import DistillError, IndexedDataset
from .distributed import DistState, GlobalBatchSampler, all_reduce_sum, barrier, init_distributed, on_main
from .metrics import lm_logits
from .pruning import Pruner, el2n_scores, epoch_batches
from .tasks import build_task

__all__ = ["NonFiniteLossError", "RunLogger", "train"]

_logger = logging.getLogger(__name__)

LOG_FIELDS = ["step", "epoch", "split", "loss", "lr", "throughput", "top1", "top5", "perplexity", "time", "kept",
              "saving"]  # fmt: skip


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped after saving a checkpoint of the last good state."""


class RunLogger:
    """log.csv + TensorBoard (RUN_DIR/tb) on rank 0; nothing elsewhere."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None = None, total_steps: int | None = None):
        self.enabled = enabled
        self.path = run_dir / "log.csv"
        self.tb = None
        if not enabled:
            return
        rows = []
        if resume_step is not None and self.path.is_file():  # keep the rows logged before the checkpoint
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if _logged_before(r, resume_step, total_steps)]
        text = io.StringIO()
        w = csv.DictWriter(text, LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)
        write_text_atomic(self.path, text.getvalue())
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: tensorboard is a training extra

            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)
        except ImportError:
            _logger.warning("tensorboard is not installed: logging to log.csv only (pip install tensorboard)")

    def log(self, step: int, epoch: float, split: str, **values):
        if not self.enabled:
            return
        row = {"step": step, "epoch": round(epoch, 4), "split": split, "time": round(time.time(), 3)}
        row.update({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items() if k in LOG_FIELDS})
        with naming_full_disk(self.path), open(self.path, "a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writerow(row)
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and v is not None:
                    self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self):
        if self.tb is not None:
            self.tb.close()


def _logged_before(row: dict[str, str], step: int, total_steps: int | None) -> bool:
    """Whether a log row was written before the checkpoint at ``step`` was saved: rows of earlier steps, and of
    that step, except the final evaluation, which follows the last checkpoint."""
    if not row.get("step"):
        return False
    logged = int(row["step"])
    final_eval = row.get("split") == "val" and total_steps is not None and logged >= total_steps
    return logged < step or (logged == step and not final_eval)


def _seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _is_fsdp(recipe: Recipe, dstate: DistState) -> bool:
    return dstate.enabled and recipe.dist.strategy == "fsdp"


# FSDP's state-dict API is imported where it is used: it is only needed by FSDP runs, costs about a second to
# import, and is missing from torch builds without distributed support.
def _model_state(model: nn.Module, fsdp: bool, everywhere: bool = False) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU; under FSDP gathered from the shards (a collective), on rank 0 only
    unless ``everywhere`` (then on every rank, on the model's device)."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=not everywhere)
        return get_model_state_dict(model, options=options)
    return {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}


def _optim_state(model: nn.Module, optimizer, fsdp: bool) -> dict[str, Any]:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(
            model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    return optimizer.state_dict()


def _load_model_optim(model, optimizer, ckpt, fsdp: bool):
    if fsdp:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, ckpt["model"], options=opts)
        set_optimizer_state_dict(model, optimizer, ckpt["optimizer"], options=opts)
    else:
        _unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])


def _scheduler_state(sched) -> dict[str, Any]:
    """timm scheduler state, primitives only (weights_only loading)."""
    return {
        k: v
        for k, v in sched.state_dict().items()
        if v is None or isinstance(v, (bool, int, float, str, list, tuple, dict))
    }


def _wrap_fsdp(model: nn.Module, dstate: DistState) -> nn.Module:
    from torch.distributed.fsdp import fully_shard  # FSDP runs only (see _model_state)

    layers = getattr(getattr(model, "model", model), "layers", None) or getattr(model, "layers", None)
    for layer in layers or []:
        fully_shard(layer)
    fully_shard(model)
    return model


def _amp_context(amp: str, device: torch.device):
    if amp == "none":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise RecipeError("train.amp fp16 needs CUDA; use bf16 (or none) on CPU")
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def _profile(model: nn.Module, task) -> dict[str, Any]:
    """Params and MACs of the trained model (the task's way); a failure is reported, not fatal."""
    model = _unwrap(model)
    was_training = model.training
    try:
        return task.profile(model)
    except Exception as e:  # profiling is a report, not a reason to lose a finished run
        _logger.warning("profiling failed: %s", e)
        return {"params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())}
    finally:
        model.train(was_training)


def _export(recipe: Recipe, model: nn.Module, out: Path, metrics: dict[str, Any], task) -> Path:
    return Path(
        export_pretrained(
            model,
            out,
            model_name=recipe.model,
            model_kwargs=task.export_kwargs(),
            metrics=metrics,
            recipe=recipe_to_dict(recipe),
            dataset=task.dataset_name,
            tokenizer_file=task.extra_files().get("tokenizer"),
        )
    )


def train(
    recipe: Recipe,
    resume: str | None = None,
    push_to_hub: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run ``recipe``; ``resume`` is a checkpoint path or ``"auto"`` (RUN_DIR/checkpoints/last.pt); ``overwrite``
    replaces the run a non-empty run folder holds (without it, or ``resume``, such a folder is refused).

    Returns a summary: run_dir, metrics, paths of what was written (``complete: True`` when ``resume`` found the
    recipe's run already finished, and changed nothing).
    """
    if resume and overwrite and not _checkpoint_from_elsewhere(resume, recipe):
        raise RecipeError("--resume continues the run in the folder and --overwrite replaces it: give one of them")
    _check_model_name(recipe.model)
    _check_sources(recipe)
    _check_sources_outside_run(recipe, overwrite)
    threads = torch.get_num_threads()
    run = None
    try:
        run = _Run(recipe, progress)
        run.claim_folder(resume, overwrite)
        ckpt = _read_checkpoint(recipe, resume, run.ckpt_dir, run.main)
        if ckpt is not None and run.is_complete(ckpt):
            return run.complete_summary(ckpt)
        if ckpt is not None:
            run.keep_threads()
        run.setup(ckpt)
        run.loop()
        return run.finish(push_to_hub)
    finally:
        if run is not None:
            run.release()
        torch.set_num_threads(threads)


def _check_model_name(name: str) -> None:
    """An unknown registry name fails before any data is read (Hub names and model folders resolve later)."""
    if not name.startswith(("hf-hub:", "local-dir:")) and not Path(name).is_dir():
        get_entry(name)


def _check_sources(r: Recipe) -> None:
    """``init_from`` and the teacher name something loadable, checked before any data is read."""
    if r.init_from and not r.init_from.startswith(("hf-hub:", "local-dir:")) and not Path(r.init_from).is_dir():
        raise RecipeError(
            f"init_from {r.init_from} is not a folder: give a model folder (zoo publish / zoo prune --out), a "
            "training run folder, or hf-hub:ORG/NAME"
        )
    if r.data_pruning is not None and is_stream(r.data.name, r.data.path):
        raise RecipeError(
            f"data_pruning picks samples by index and data.name {r.data.name} ({r.data.path}) streams them: use a "
            "dataset on disk (a folder of images or shards, hf_disk, a text file), or drop the data_pruning: section"
        )
    if r.distill is not None:
        try:
            check_teacher_name(r.distill)
        except DistillError as e:
            raise RecipeError(str(e)) from None


def _run_dir(r: Recipe) -> Path:
    return Path(r.output_dir or "runs/run")


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (links resolved)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _checkpoint_from_elsewhere(resume: str, r: Recipe) -> bool:
    """Whether ``--resume PATH`` names a checkpoint outside the recipe's run folder (another run's)."""
    return resume != "auto" and not _inside(Path(resume), _run_dir(r))


def _local_path(source: str | None) -> Path | None:
    """The file or folder a source names on this machine (``local-dir:`` stripped); None for a Hub repo, a
    registered name or nothing."""
    if not source or source.startswith("hf-hub:"):
        return None
    path = Path(source.removeprefix("local-dir:"))
    return path if path.exists() else None


def _sources(r: Recipe) -> list[tuple[str, str | None]]:
    """The recipe's keys that name something the run reads to start (weights, a teacher, a tokenizer)."""
    found = [("init_from", r.init_from), ("init_checkpoint", r.init_checkpoint), ("data.tokenizer", r.data.tokenizer)]
    if r.distill is not None:
        found += [("distill.teacher", r.distill.teacher), ("distill.teacher_weights", r.distill.teacher_weights)]
    return found


def _check_sources_outside_run(r: Recipe, overwrite: bool) -> None:
    """A source of the run (init_from, its teacher, start weights, tokenizer) that is the run folder or lies
    inside it is refused before anything there is touched: the run writes (and ``--overwrite`` first removes)
    what the folder holds. Folder sources are read now, so that one that cannot be loaded fails before
    ``--overwrite`` removes anything."""
    run_dir = _run_dir(r)
    for key, source in _sources(r):
        path = _local_path(source)
        if path is None:
            continue
        if _inside(path, run_dir):
            where = "is the run folder" if path.resolve() == run_dir.resolve() else "lies inside the run folder"
            fate = "--overwrite would remove it before it is read" if overwrite else "the run would write over it"
            raise RecipeError(
                f"{key} {source} {where} output_dir {run_dir}: {fate}. Copy it out first (e.g. cp -r {path} "
                f"{path.resolve().parent / (path.resolve().name + '_source')}) and name the copy, or use another "
                "--output_dir"
            )
        if key in ("init_from", "distill.teacher") and path.is_dir():
            _check_model_folder(key, source, path)


def _check_model_folder(key: str, source: str, path: Path) -> None:
    """A folder source is a model folder (config.json) or a run folder with its export; read it now."""
    if not (path / "config.json").is_file():
        if not (path / "args.yaml").is_file():
            raise RecipeError(
                f"{key} {source} is not a model folder (it has no config.json): name a model folder (zoo publish, "
                "zoo prune --out, save_pretrained), a training run folder, or hf-hub:ORG/NAME"
            )
        if not (path / "export" / "config.json").is_file():
            raise RecipeError(
                f"{key} {source} is a training run folder without export/ (it ran with export.enabled false), "
                f"which {key} reads the model from: write its export with `zoo publish {path} --repo ORG/NAME "
                f"--no-push --out-dir {path / 'export'}`, then run again"
            )
    resolve_source(source)  # config.json names a model the zoo builds (CheckpointError: a user error)


def _names(held: list[str]) -> str:
    return ", ".join(held[:6]) + (", ..." if len(held) > 6 else "")


def _pick_threads(dstate: DistState) -> int | None:
    """Intra-op threads for a recipe without ``train.threads``: the cores this process may use that the last
    minute's load leaves free, shared among this host's processes (oversubscribed cores slow training many
    times over); None where ``OMP_NUM_THREADS`` decides."""
    if os.environ.get("OMP_NUM_THREADS"):
        if dstate.is_main:
            _logger.info("train.threads unset: using %d thread(s) (OMP_NUM_THREADS)", torch.get_num_threads())
        return None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    per_host = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    threads = max(1, (usable - round(load)) // per_host)
    if dstate.is_main:
        _logger.info(
            "train.threads unset: using %d thread(s) per process (%d usable cores, 1-minute load %.1f, %d process(es) "
            "on this host)",
            threads,
            usable,
            load,
            per_host,
        )
    return threads


# Recipe keys a resumed run must share with its checkpoint: the model, and what made its training data (and a
# language model's tokenizer, which the run folder keeps).
_RESUME_KEYS = ("model", "model_kwargs", "task", "init_from")
_RESUME_DATA_KEYS = ("name", "train_split", "seq_len", "vocab_size", "val_fraction")


def _read_checkpoint(r: Recipe, resume: str | None, ckpt_dir: Path, main: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (``"auto"``: the last complete one), checked against the recipe."""
    if not resume:
        return None
    path = ckpt_dir / "last.pt" if resume == "auto" else Path(resume)
    if resume == "auto" and not path.is_file():  # killed between writing step_<N>.pt and linking last.pt
        path = latest_good_checkpoint(ckpt_dir) or path
    if resume == "auto" and not path.is_file():
        if main:
            print(f"no checkpoint in {ckpt_dir}: starting a new run", file=sys.stderr)
        return None
    ckpt = load_training_checkpoint(path)
    saved = ckpt.get("recipe", {})
    data = saved.get("data") or {}
    pairs = [(key, saved.get(key), getattr(r, key)) for key in _RESUME_KEYS]
    pairs += [(f"data.{key}", data.get(key), getattr(r.data, key)) for key in _RESUME_DATA_KEYS]
    for key, was, now in pairs:
        if was != now:
            raise RecipeError(
                f"checkpoint {path} was written by a run with {key}={was!r}, this recipe has {now!r}: resume "
                "with the run's value, or start a new run (--overwrite, or another --output_dir)"
            )
    return ckpt


def _train_data(train_set, samples: int) -> dict[str, Any]:
    """What a resumed run must find again: the training samples, and the shards of a shard folder read by
    position (found through the wrappers' ``dataset`` or ``base``)."""
    record, ds = {"samples": int(samples)}, train_set
    for _ in range(8):
        if isinstance(getattr(ds, "files", None), list) and isinstance(getattr(ds, "samples", None), list):
            per_shard = [0] * len(ds.files)
            for sample in ds.samples:  # (shard, offset, size, label, member)
                per_shard[sample[0]] += 1
            record["shards"] = per_shard
            break
        ds = getattr(ds, "dataset", None) or getattr(ds, "base", None)
    return record


def _describe_data(record: dict[str, Any], other: dict[str, Any]) -> str:
    """``record``'s counts; where both hold as many samples and shards, the first shard that differs."""
    shards, theirs = record.get("shards"), other.get("shards")
    text = f"{record.get('samples', 0):,} samples" + (f" in {len(shards):,} shards" if shards is not None else "")
    if shards and theirs and len(shards) == len(theirs) and record.get("samples") == other.get("samples"):
        i = next((i for i, (a, b) in enumerate(zip(shards, theirs)) if a != b), None)
        if i is not None:
            text += f" (shard {i}: {shards[i]} samples)"
    return text


class _Run:
    """One training run: its parts (built from the recipe), its position, and the steps that advance it."""

    def __init__(self, recipe: Recipe, progress: bool):
        self.t_start = time.time()
        self.r = r = recipe
        self.progress = progress
        self.dstate = init_distributed(r.train.device, r.dist.backend)
        self.device = self.dstate.device
        threads = r.train.threads or _pick_threads(self.dstate)
        if threads:
            torch.set_num_threads(threads)
        if r.train.deterministic:
            torch.use_deterministic_algorithms(True)
        self.run_dir = Path(r.output_dir or "runs/run")
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.main = self.dstate.is_main
        self.lock = RunLock(self.run_dir)
        self.made_run_dir = False
        self.global_step, self.epoch, self.step_in_epoch = 0, 0, 0

    # -- the run folder -------------------------------------------------------------------------------------------
    def claim_folder(self, resume: str | None, overwrite: bool) -> None:
        """Rank 0 locks the run folder, refuses one that holds another run (unless resuming or overwriting) and
        removes what killed writes left; every rank learns the outcome."""
        run_dir = self.run_dir

        def claim():
            self.made_run_dir = not run_dir.exists()
            self.lock.acquire()
            held = sorted(p.name for p in run_dir.iterdir() if p.name != RunLock.name)
            if held and overwrite:
                _logger.warning("--overwrite: removing the previous run's %s", ", ".join(clear_run_outputs(run_dir)))
            elif held and resume and _checkpoint_from_elsewhere(resume, self.r):
                raise RunFolderError(
                    f"--resume {resume} is a checkpoint from outside {run_dir}, which already holds files "
                    f"({_names(held)}): continue that checkpoint's run in its own folder (--resume auto there), "
                    "in an empty or new --output_dir, or replace what this folder holds with --overwrite"
                )
            elif held and resume == "auto" and not self._has_checkpoint():
                if (run_dir / "model.safetensors").exists() or (run_dir / "metrics.json").exists():
                    raise RunFolderError(
                        f"{run_dir} holds a finished run's results but no checkpoint to resume from; start anew "
                        "with --overwrite (its files are removed) or use another --output_dir"
                    )
                removed = clear_run_outputs(run_dir)  # a run killed before its first checkpoint: nothing to keep
                if removed:
                    _logger.info("no checkpoint in %s: removing %s of a run that saved none", self.ckpt_dir, removed)
            elif held and not resume:
                raise RunFolderError(
                    f"{run_dir} already holds files ({_names(held)}): "
                    "continue that run with --resume auto, replace it with --overwrite, or use another --output_dir"
                )
            remove_temp_files(run_dir)

        on_main(self.dstate, claim)

    def _has_checkpoint(self) -> bool:
        return (self.ckpt_dir / "last.pt").is_file() or bool(find_checkpoints(self.ckpt_dir))

    def release(self) -> None:
        """Give the lock back; a run folder this run created and left empty (it failed early) is removed."""
        self.lock.release()
        if self.made_run_dir:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                self.run_dir.rmdir()

    def keep_threads(self) -> None:
        """A resumed run without ``train.threads`` uses the thread count its run recorded: float sums split over
        another number of threads differ in the last bits, and a resumed run is bit-identical to an unbroken one."""
        if self.r.train.threads:
            return
        try:
            recorded = load_run_args(self.run_dir)[1].get("threads")
        except RecipeError:
            return
        if isinstance(recorded, int) and recorded > 0 and recorded != torch.get_num_threads():
            if self.main:
                _logger.info("resuming with the run's %d thread(s), as it started", recorded)
            torch.set_num_threads(recorded)

    def is_complete(self, ckpt: dict[str, Any]) -> bool:
        """Whether the folder holds this recipe's finished run: the final checkpoint, weights and metrics.json."""
        if not all((self.run_dir / n).is_file() for n in ("model.safetensors", "metrics.json", "args.yaml")):
            return False
        try:
            saved, resolved = load_run_args(self.run_dir)
        except RecipeError:
            return False
        same_recipe = dataclasses.replace(saved, output_dir=self.r.output_dir) == self.r  # the folder may have moved
        if ckpt.get("data_pruning") is not None:  # a pruned run's steps are known as it goes: its last epoch ended
            ended = int(ckpt["data_position"]["epoch"]) * int(resolved.get("steps_per_epoch") or 0)
            return same_recipe and ended >= int(resolved.get("total_steps") or 0) > 0
        return same_recipe and int(ckpt["step"]) == resolved.get("total_steps")

    def complete_summary(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        """The summary of a finished run found in the folder; nothing is written."""
        run_dir = self.run_dir
        paths = {n: str(run_dir / f) for n, f in (("weights", "model.safetensors"), ("metrics", "metrics.json"))}
        export = Path(self.r.export.dir) if self.r.export.dir else run_dir / "export"
        if self.r.export.enabled and export.is_dir():
            paths["export"] = str(export)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        return {
            "run_dir": str(run_dir),
            "steps": int(ckpt["step"]),
            "metrics": metrics,
            "paths": paths,
            "complete": True,
        }

    # -- building ---------------------------------------------------------------------------------------------------
    def setup(self, ckpt: dict[str, Any] | None) -> None:
        r = self.r
        _seed_everything(r.seed)
        self.task = task = build_task(r, self.dstate, self.run_dir)
        task.prepare_data()
        _seed_everything(r.seed)  # model init does not depend on what data preparation drew
        model = self._build_model()  # (it also settles the training transforms: train_set)
        stream = task.train_set if isinstance(task.train_set, SampleStream) else None
        n = stream.num_samples if stream is not None else len(task.train_set)
        self.train_data = _train_data(task.train_set, n)  # in the checkpoint; a resume checks it (_restore)
        self.sampler = GlobalBatchSampler(n, r.train.batch_size, r.train.grad_accum, self.dstate, r.seed)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        if stream is not None:  # the stream splits itself by rank and loader worker, micro-batch by micro-batch
            micro_per_epoch = self.steps_per_epoch * r.train.grad_accum
            stream.configure(self.sampler.micro, self.dstate.rank, self.dstate.world_size, micro_per_epoch)
        self.total_steps = task.total_steps(self.steps_per_epoch)
        self.pruner = self._build_pruner(stream, n)
        self.epoch_steps = self.steps_per_epoch
        self.fsdp = _is_fsdp(r, self.dstate)
        if self.fsdp:  # an unsharded twin without storage (meta), filled when the run evaluates (_whole_model)
            self.whole = copy.deepcopy(model).to("meta")
            model = _wrap_fsdp(model, self.dstate)
        self.model = model
        self.optimizer = build_optimizer(model, r)
        self.scheduler, self.min_lr = build_scheduler(self.optimizer, r, self.total_steps, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if r.train.amp == "fp16" else None
        self.amp_ctx = _amp_context(r.train.amp, self.device)
        self.ema = build_ema(_unwrap(model), r)
        self.sparsity = build_sparsity(_unwrap(model), self.optimizer, r, self.total_steps)
        self.mixup = task.build_mixup()
        self.loss_fn = task.build_loss(self.mixup)
        self.eval_bs = r.data.eval_batch_size or max(self.sampler.micro, 1)
        self.distiller = self._build_distiller(model)
        cached = self.distiller is not None and self.distiller.cfg.cache_logits
        self.indexed = cached or self.pruner is not None  # the loader yields (items, sample indices)
        self._restore(ckpt) if ckpt is not None else self._start()
        self._wrap_model()
        self._write_recipe()
        resume_step = self.global_step if ckpt is not None else None
        total = self.total_steps if self.pruner is None else None  # a pruned run's step count is known at its end
        self.logger = RunLogger(self.run_dir, self.main, resume_step=resume_step, total_steps=total)

    def _build_pruner(self, stream, n: int) -> Pruner | None:
        """The data pruner of a recipe with ``data_pruning:`` (its samples picked by index), or None."""
        cfg = self.r.data_pruning
        if cfg is None:
            return None
        if stream is not None:
            raise RecipeError(
                f"data_pruning picks samples by index and data.name {self.r.data.name} ({self.r.data.path}) streams "
                "them: use a dataset on disk (a folder of images or shards, hf_disk, a text file), or drop the "
                "data_pruning: section"
            )
        if cfg.method == "infobatch" and cfg.ratio > 0.9 and self.main:
            _logger.warning("data_pruning.ratio %.2f prunes as 0.9 (InfoBatch keeps at least 10%%)", cfg.ratio)
        return Pruner(cfg, n, self.r.train.batch_size, self.steps_per_epoch, self.total_steps, self.r.seed)

    def _build_distiller(self, model: nn.Module):
        """The frozen teacher (each process its own copy, outside DDP/FSDP; rebuilt on resume), or None."""
        try:
            return build_distiller(
                self.r, self.task, model, self.device, self.channels_last, self.amp_ctx, batch_size=self.eval_bs
            )
        except DistillError as e:
            raise RecipeError(str(e)) from None

    def _build_model(self) -> nn.Module:
        r = self.r
        try:
            model = self.task.build_model()
        except TypeError as e:  # the builder names the arguments it does not take
            if "got unexpected argument" not in str(e):
                raise
            hint = " (train.drop_path is passed as drop_path_rate)" if r.train.drop_path is not None else ""
            raise RecipeError(f"model_kwargs do not fit {r.model}{hint}: {e}") from None
        except (RecipeError, DataError, UnknownModelError):
            raise
        except ValueError as e:  # the builder refuses a value (a width of 0, a list of the wrong length)
            where = f"model_args of init_from {r.init_from} and model_kwargs" if r.init_from else "model_kwargs"
            raise RecipeError(f"the model arguments ({where}) do not build {r.model}: {e}") from None
        model = model.to(self.device)
        if r.train.grad_checkpointing:
            if not hasattr(model, "set_grad_checkpointing"):
                raise RecipeError(f"{r.model} has no set_grad_checkpointing; set train.grad_checkpointing false")
            model.set_grad_checkpointing(True)
        self.channels_last = r.train.channels_last and self.device.type == "cuda" and self.task.supports_channels_last
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def _restore(self, ckpt: dict[str, Any]) -> None:
        was = ckpt.get("train_data")  # (checkpoints written before it was recorded carry none)
        if was is not None and was != self.train_data:
            data = " ".join(str(v) for v in (self.r.data.name, self.r.data.path) if v)
            raise RecipeError(
                f"cannot resume: the training data ({data}) holds {_describe_data(self.train_data, was)} now, and the "
                f"checkpoint's run trained on {_describe_data(was, self.train_data)}: its epochs and data position "
                "belong to that set. Resume with the data it trained on, or start a new run (--overwrite, or another "
                "--output_dir; init_from keeps the weights)"
            )
        _load_model_optim(self.model, self.optimizer, ckpt, self.fsdp)
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        for part, key, what in ((self.ema, "ema", "uses EMA"), (self.sparsity, "sparsity", "has a sparse: section")):
            if part is not None:
                if ckpt.get(key) is None:
                    raise RecipeError(f"this recipe {what} but the checkpoint has no {key} state")
                part.load_state_dict(ckpt[key])
        if self.pruner is not None:
            if ckpt.get("data_pruning") is None:
                raise RecipeError("this recipe prunes its data (data_pruning:) but the checkpoint has no pruning state")
            try:
                self.pruner.load_state_dict(ckpt["data_pruning"])
            except ValueError as e:
                raise RecipeError(f"cannot resume: {e}") from None
        self.global_step = int(ckpt["step"])
        self.epoch, self.step_in_epoch = (
            int(ckpt["data_position"]["epoch"]),
            int(ckpt["data_position"]["step_in_epoch"]),
        )
        restore_rng_state(ckpt["rng"][min(self.dstate.rank, len(ckpt["rng"]) - 1)])

    def _start(self) -> None:
        task = self.task
        if self.sparsity is not None:  # masks from one batch (SNIP) before the first step
            batch = task.prepare_batch(head_items(task.train_set, self.sampler.micro), self.device, self.channels_last)
            plain_loss = self.loss_fn if self.mixup is None else torch.nn.CrossEntropyLoss()
            self.sparsity.init_masks(batch=batch, loss_fn=lambda m, b: task.forward_loss(m, b, plain_loss)[0])
            if self.ema is not None:
                self.sparsity.apply_to_ema(self.ema.module)
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    def _wrap_model(self) -> None:
        if self.dstate.enabled and not self.fsdp:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self.r.train.compile:
            self.model = torch.compile(self.model)

    def _write_recipe(self) -> None:
        if not self.main:
            return
        warmup, cooldown = schedule_steps(self.r, self.total_steps, self.steps_per_epoch)
        path = self.run_dir / "args.yaml"
        extra = {}
        if self.r.init_from:  # the architecture the folder gave (eval.py rebuilds the run's model from it)
            extra["model_args"] = _plain(self.task.export_kwargs())
        with naming_full_disk(path):
            save_recipe(
                self.r,
                path,
                extra={
                    "lr": self.r.scaled_lr(),
                    "min_lr": self.min_lr,
                    "total_steps": self.total_steps,
                    "warmup_steps": warmup,
                    "cooldown_steps": cooldown,
                    "steps_per_epoch": self.steps_per_epoch,
                    **({"pruned_epochs": self.pruner.epochs} if self.pruner is not None else {}),
                    "world_size": self.dstate.world_size,
                    "micro_batch": self.sampler.micro,
                    "device": str(self.device),
                    "threads": torch.get_num_threads(),
                    **extra,
                },
            )

    # -- checkpoints and evaluation -----------------------------------------------------------------------------------
    def checkpoint_state(self, epoch: int, step_in_epoch: int) -> dict[str, Any]:
        rng = capture_rng_state()
        if self.dstate.enabled:  # every rank's RNG, so a resumed run draws what it would have drawn
            gathered = [None] * self.dstate.world_size
            torch.distributed.all_gather_object(gathered, rng)
            rng = gathered
        else:
            rng = [rng]
        ema, sparsity = self.ema, self.sparsity
        return {
            "model": _model_state(self.model, self.fsdp),
            "optimizer": _optim_state(self.model, self.optimizer, self.fsdp),
            "scheduler": _scheduler_state(self.scheduler),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": {k: v.detach().cpu() for k, v in ema.state_dict().items()} if ema is not None else None,
            "sparsity": sparsity.state_dict() if sparsity is not None else None,
            "data_pruning": self.pruner.state_dict() if self.pruner is not None else None,
            "rng": rng,
            "data_position": {"epoch": epoch, "step_in_epoch": step_in_epoch},
            "recipe": recipe_to_dict(self.r),
            "world_size": self.dstate.world_size,
            "train_data": self.train_data,
        }

    def save(self, epoch: int, step_in_epoch: int) -> None:
        state = self.checkpoint_state(epoch, step_in_epoch)
        if self.main:
            save_training_checkpoint(state, self.ckpt_dir, self.global_step, keep=self.r.checkpoint.keep)
        barrier(self.dstate)

    def _whole_model(self) -> nn.Module:
        """Under FSDP, the unsharded model with the trained weights on every rank. Evaluation runs on it, so that
        each rank goes through its share of the held-out data alone (FSDP's forward passes gather parameters
        from all ranks, and shares of unequal length would leave one rank waiting forever); rank 0 profiles and
        exports it."""
        weights = _model_state(self.model, True, everywhere=True)
        if next(self.whole.parameters()).is_meta:
            self.whole.to_empty(device=self.device)
        self.whole.load_state_dict(weights)
        for name, buf in self.model.named_buffers():  # buffers are not sharded (and some are not in state dicts)
            self.whole.get_buffer(name).copy_(buf)
        return self.whole.eval()

    def final_model(self) -> nn.Module:
        """The model evaluation and export see: the EMA, else the trained model (unsharded under FSDP)."""
        if self.ema is not None:
            return self.ema.module
        return self._whole_model() if self.fsdp else _unwrap(self.model)

    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        metrics = self.task.evaluate(
            model if model is not None else self.final_model(),
            self.eval_bs,
            self.device,
            self.amp_ctx,
            self.channels_last,
            max_batches=self.r.train.eval_max_batches,
        )
        self.model.train()
        return metrics

    # -- training -----------------------------------------------------------------------------------------------------
    def _accumulate(self, it) -> tuple[torch.Tensor, int]:
        """Forward and backward of ``train.grad_accum`` micro-batches; (mean loss, items)."""
        r, model = self.r, self.model
        loss_sum, n_items = torch.zeros((), dtype=torch.float64), 0
        for m in range(r.train.grad_accum):
            raw, index = next(it) if self.indexed else (next(it), None)
            batch = self.task.prepare_batch(raw, self.device, self.channels_last)
            last_micro = m == r.train.grad_accum - 1
            sync = (
                contextlib.nullcontext()
                if last_micro or not isinstance(model, nn.parallel.DistributedDataParallel)
                else model.no_sync()
            )
            with sync:
                with self.amp_ctx():
                    if self.pruner is not None:  # per-sample losses: weighted here, the samples' new scores
                        loss, n, losses = self.task.forward_loss(
                            model, batch, self.loss_fn, self.mixup, self.distiller, index, self.pruner.weights_of(index)
                        )
                        self.pruner.record(index, losses)
                    else:
                        loss, n = self.task.forward_loss(
                            model, batch, self.loss_fn, self.mixup, distill=self.distiller, index=index
                        )
                scaled = loss / r.train.grad_accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_sum += loss.detach().double().cpu() / r.train.grad_accum
            n_items += n
        return loss_sum, n_items

    def _check_finite(self, loss_sum: torch.Tensor, step_in_epoch: int) -> float:
        """The mean loss over processes; a non-finite one saves the last good state and stops the run."""
        flag = torch.tensor(0.0 if torch.isfinite(loss_sum) else 1.0, dtype=torch.float64)
        stats = all_reduce_sum(torch.stack([loss_sum, flag]).to(self.device), self.dstate).cpu()
        mean_loss = stats[0].item() / self.dstate.world_size
        if stats[1].item() > 0:
            self.optimizer.zero_grad(set_to_none=True)
            self.save(self.epoch, step_in_epoch)  # the state before this step, which is still finite
            last = self.ckpt_dir / "last.pt"
            raise NonFiniteLossError(
                f"the loss became {'NaN' if math.isnan(mean_loss) else 'infinite'} at optimizer step "
                f"{self.global_step + 1} (epoch {self.epoch}); stopped. The last good state is saved in {last}. "
                f"Lower optim.lr, set optim.clip_grad, or use train.amp none/bf16, then resume with --resume {last}."
            )
        return mean_loss

    def _update(self, done: int) -> None:
        """Clip, step the optimizer (through the scaler under fp16), then sparsity, EMA and the schedule (``done``:
        the epoch's steps after this one; a pruned run's schedule follows the epoch's fraction)."""
        r, optimizer, scaler = self.r, self.optimizer, self.scaler
        if scaler is not None:
            scaler.unscale_(optimizer)
        if r.optim.clip_grad:
            dispatch_clip_grad(self.model.parameters(), r.optim.clip_grad, mode=r.optim.clip_mode)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if self.sparsity is not None:
            self.sparsity.step()
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(_unwrap(self.model), step=self.global_step)
            if self.sparsity is not None:
                self.sparsity.apply_to_ema(self.ema.module)
        pruner = self.pruner
        self.scheduler.step_update(self.global_step if pruner is None else pruner.schedule_step(self.epoch, done))

    def _log_step(self, k: int, mean_loss: float) -> None:
        now = time.time()
        rate = self.window_n / max(now - self.window_t, 1e-9)
        self.window_t, self.window_n = now, 0
        lr = self.optimizer.param_groups[0]["lr"]
        self.logger.log(
            self.global_step,
            self.epoch + (k + 1) / max(self.epoch_steps, 1),
            "train",
            loss=mean_loss,
            lr=lr,
            throughput=rate,
        )
        if self.pbar is not None:
            unit = self.task.throughput_unit.replace("/", "_per_")
            extra = {}
            if self.pruner is not None:
                extra = {"kept": self.pruner.kept[-1], "saved": f"{self.pruner.saving(self.epoch, k + 1):.0%}"}
            self.pbar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", **{unit: f"{rate:.0f}"}, **extra)

    def _after_step(self, k: int, mean_loss: float) -> None:
        r, step = self.r, self.global_step
        if self.pbar is not None:
            self.pbar.update(1)
        last = self._at_end(k)
        if step % max(r.train.log_interval, 1) == 0 or last:
            self._log_step(k, mean_loss)
        if r.train.eval_every_steps and step % r.train.eval_every_steps == 0 and not last:
            self.logger.log(step, self.epoch, "val", **self.evaluate())
        if r.checkpoint.every_steps and step % r.checkpoint.every_steps == 0 and not last:
            self.save(self.epoch, k + 1)

    def _at_end(self, k: int) -> bool:
        """Whether step ``k`` of this epoch was the run's last."""
        if self.pruner is None:
            return self.global_step >= self.total_steps
        return self.epoch >= self.pruner.epochs - 1 and k + 1 >= self.epoch_steps

    def _done(self) -> bool:
        if self.pruner is None:
            return self.global_step >= self.total_steps
        return self.epoch >= self.pruner.epochs

    def _epoch_loader(self):
        self.epoch_steps = self.steps_per_epoch
        self.sampler.set_position(self.epoch, self.step_in_epoch)
        self.task.set_epoch(self.epoch)
        g = torch.Generator()
        g.manual_seed(self.r.seed * 7_919 + self.epoch)
        dataset = self.task.train_set
        if isinstance(dataset, SampleStream):  # micro-batches already made, in order, by the workers in turn
            dataset.set_position(self.epoch, self.step_in_epoch * self.r.train.grad_accum)
            loader = DataLoader(
                dataset, batch_size=None, num_workers=self.r.data.num_workers, pin_memory=self.device.type == "cuda"
            )
            return iter(loader)
        batches = self.sampler
        if self.pruner is not None:  # the epoch's kept samples, in whole global batches
            batches = self._pruned_batches()
        if self.indexed:  # with sample indices: cached teacher logits, pruning scores
            dataset = IndexedDataset(dataset)
        return iter(
            DataLoader(
                dataset,
                batch_sampler=batches,
                num_workers=self.r.data.num_workers,
                generator=g,
                pin_memory=self.device.type == "cuda",
            )
        )

    def _pruned_batches(self) -> list[list[int]]:
        pruner, r = self.pruner, self.r
        order = pruner.plan(self.epoch, self._el2n_scores)
        self.epoch_steps = pruner.steps(self.epoch)
        if self.pbar is not None:  # known exactly once the pruning epochs are over
            left = max(0, self.total_steps - (self.epoch + 1) * self.steps_per_epoch)
            self.pbar.total = self.global_step - self.step_in_epoch + self.epoch_steps + left
            self.pbar.refresh()
        d = self.dstate
        return epoch_batches(order, self.epoch_steps, self.step_in_epoch, r.train.batch_size, r.train.grad_accum,
                             d.rank, d.world_size)  # fmt: skip

    def _el2n_scores(self):
        """EL2N of every training sample under the current model (eval mode, no gradients)."""
        task = self.task
        model = self._whole_model() if self.fsdp else _unwrap(self.model)
        was_training = model.training
        model.eval()
        dataset = task.train_set

        def read(indices):
            return task.prepare_batch(default_collate([dataset[i] for i in indices]), self.device, self.channels_last)

        def forward(batch):
            targets = batch[1] if isinstance(batch, (tuple, list)) else batch[:, 1:]
            return lm_logits(model(task.model_inputs(batch))), targets

        try:
            return el2n_scores(len(dataset), read, forward, self.eval_bs, self.amp_ctx)
        finally:
            model.train(was_training)

    def _run_epoch(self) -> bool:
        """Optimizer steps to the epoch's end or the run's; True when the epoch ran to its end."""
        it = self._epoch_loader()
        for k in range(self.step_in_epoch, self.epoch_steps):
            if self._done():
                return False
            loss_sum, n_items = self._accumulate(it)
            mean_loss = self._check_finite(loss_sum, k)
            self._update(k + 1)
            self.window_n += n_items * self.dstate.world_size
            if self.pruner is not None:
                self.pruner.count_step(self.r.train.batch_size)
            self._after_step(k, mean_loss)
        return True

    def _end_epoch(self) -> None:
        if self.pruner is not None:
            saving = self.pruner.saving(self.epoch, self.epoch_steps)
            self.logger.log(self.global_step, self.epoch + 1, "prune", kept=self.pruner.kept[-1], saving=saving)
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        if self._done():
            return
        if self.task.evaluates_each_epoch and self.epoch % max(self.r.train.eval_every_epochs, 1) == 0:
            metrics = self.evaluate()
            self.logger.log(self.global_step, self.epoch, "val", **metrics)
            if self.pbar is not None:
                self.pbar.write(
                    f"epoch {self.epoch}: "
                    + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
                )
        self.save(self.epoch, 0)

    def loop(self) -> None:
        show = self.main and self.progress
        self.pbar = (
            tqdm(
                total=self.total_steps,
                initial=self.global_step,
                desc=f"train {self.r.model}",
                dynamic_ncols=True,
                file=sys.stderr,
            )
            if show
            else None
        )
        self.model.train()
        self.window_t, self.window_n = time.time(), 0
        try:
            while not self._done():
                if not self._run_epoch():
                    break  # total_steps reached inside the epoch
                self._end_epoch()
        finally:
            if self.pbar is not None:
                self.pbar.close()
        if self.pruner is not None:
            self.save(self.epoch, self.step_in_epoch)
        else:
            self.save(*_final_position(self.global_step, self.steps_per_epoch))

    # -- the end of the run ---------------------------------------------------------------------------------------------
    def finish(self, push_to_hub: str | None) -> dict[str, Any]:
        """Final evaluation, then (rank 0) weights, metrics.json, the publishable folder and the upload."""
        final_model = self.final_model()
        final = self.evaluate(final_model)
        epoch = self.global_step / self.steps_per_epoch if self.pruner is None else self.epoch
        self.logger.log(self.global_step, epoch, "val", **final)
        self.logger.close()
        summary: dict[str, Any] = {"run_dir": str(self.run_dir), "steps": self.global_step, "metrics": final}
        weights = _model_state(final_model, False)
        if self.main:
            path = self.run_dir / "model.safetensors"
            with naming_full_disk(path):
                save_state_dict(weights, path)
            summary["metrics"] = metrics = self._metrics(final, final_model)
            summary["paths"] = self._publish(final_model, metrics, push_to_hub)
        barrier(self.dstate)
        return summary

    def _metrics(self, final: dict[str, Any], final_model: nn.Module) -> dict[str, Any]:
        metrics = {**final, "dataset": self.task.dataset_name, "split": self.r.data.val_split}
        metrics.update(self.task.run_metrics())
        metrics.update(_profile(final_model, self.task))
        metrics.update(
            train_steps=self.global_step, train_seconds=round(time.time() - self.t_start, 1), ema=self.ema is not None
        )
        if self.pruner is not None:
            metrics["data_pruning"] = self.pruner.summary()
        return metrics

    def _publish(self, final_model: nn.Module, metrics: dict[str, Any], push_to_hub: str | None) -> dict[str, str]:
        """The publishable folder, then metrics.json (last: with it the run is complete), then the upload."""
        r, run_dir = self.r, self.run_dir
        paths = {
            "args": str(run_dir / "args.yaml"),
            "checkpoints": str(self.ckpt_dir),
            "weights": str(run_dir / "model.safetensors"),
            "metrics": str(run_dir / "metrics.json"),
            "log": str(run_dir / "log.csv"),
            "tensorboard": str(run_dir / "tb"),
            **self.task.extra_files(),
        }
        if r.export.enabled:
            out = Path(r.export.dir) if r.export.dir else run_dir / "export"
            with naming_full_disk(out):
                paths["export"] = str(_export(r, final_model, out, metrics, self.task))
        write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        repo = push_to_hub or r.export.push_to_hub
        if repo:
            try:
                paths["hub"] = publish_run(run_dir, repo, private=r.export.private, license=r.export.license)
            except (PublishError, CheckpointError) as e:
                raise PublishError(
                    f"the run finished and is saved in {run_dir}, but publishing it to {repo} "
                    f"failed: {e}\nPublish it again with: zoo publish {run_dir} --repo {repo}"
                    f"{' --private' if r.export.private else ''}"
                ) from None
        return paths


def _plain(value: Any) -> Any:
    """Tuples as lists, for YAML's safe dumper."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _final_position(global_step: int, steps_per_epoch: int):
    return global_step // steps_per_epoch, global_step % steps_per_epoch
