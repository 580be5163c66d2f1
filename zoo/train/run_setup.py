"""A training run's parts, built from its recipe: data (the task), model, optimizer, schedule, AMP, EMA, sparsity,
a teacher, data pruning; a new run's start or a checkpoint's restore; checkpoints and held-out evaluation.

:class:`RunSetup` holds what the steps of :class:`zoo.train.loop._Run` advance.
"""

import contextlib
import copy
import logging
import os
import random
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.errors import DataError
from ..data.stream import SampleStream, head_items
from ..registry import UnknownModelError
from ..run_layout import ARGS
from .builders import build_distiller, build_ema, build_optimizer, build_scheduler, build_sparsity, schedule_steps
from .checkpoint import capture_rng_state, naming_full_disk, restore_rng_state, save_training_checkpoint
from .config import Recipe, RecipeError, load_run_args, recipe_to_dict, save_recipe
from .data_pruning import Pruner
from .distill import DistillError
from .distributed import (
    DistState,
    GlobalBatchSampler,
    barrier,
    init_distributed,
    is_fsdp,
    load_model_optim,
    model_state,
    optim_state,
    unwrap,
    wrap_fsdp,
)
from .run_folder import RunFolder, describe_data, train_data_record
from .run_log import RunLogger
from .tasks import build_task

__all__ = ["RunSetup"]

_logger = logging.getLogger(__name__)


def _seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _scheduler_state(sched) -> dict[str, Any]:
    """timm scheduler state, primitives only (weights_only loading)."""
    return {
        k: v
        for k, v in sched.state_dict().items()
        if v is None or isinstance(v, (bool, int, float, str, list, tuple, dict))
    }


def _amp_context(amp: str, device: torch.device):
    if amp == "none":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise RecipeError("train.amp fp16 needs CUDA; use bf16 (or none) on CPU")
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def cuda_precision(device: torch.device, tf32: bool, deterministic: bool) -> None:
    """On a CUDA device, the float32 products as timm's ``train.py`` runs them: TF32 in cuBLAS's matrix products
    and cuDNN's convolutions (``tf32``; PyTorch alone turns it on for the convolutions only, so that the zoo's
    pointwise layers, which are matrix products where timm's are 1x1 convolutions, would train in full float32
    while timm's ran in TF32), and cuDNN's autotuning of the convolutions unless the run is deterministic.
    ``train.tf32: false`` turns TF32 off in both: float32 products throughout. A CPU run changes nothing."""
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = not deterministic


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


def _plain(value: Any) -> Any:
    """Tuples as lists, for YAML's safe dumper."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


class RunSetup:
    """One training run's parts (built from the recipe), its position, its checkpoints and its evaluation."""

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
        cuda_precision(self.device, r.train.tf32, r.train.deterministic)
        self.folder = RunFolder(r, self.dstate)  # claimed by train() before the run is set up
        self.run_dir, self.ckpt_dir = self.folder.run_dir, self.folder.ckpt_dir
        self.main = self.dstate.is_main
        self.global_step, self.epoch, self.step_in_epoch = 0, 0, 0

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
        names = getattr(getattr(task, "info", None), "class_names", None)  # image tasks: labels by name
        self.train_data = train_data_record(task.train_set, n, names)  # in the checkpoint; checked by _restore
        self.sampler = GlobalBatchSampler(n, r.train.batch_size, r.train.grad_accum, self.dstate, r.seed)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        if stream is not None:  # the stream splits itself by rank and loader worker, micro-batch by micro-batch
            micro_per_epoch = self.steps_per_epoch * r.train.grad_accum
            stream.configure(self.sampler.micro, self.dstate.rank, self.dstate.world_size, micro_per_epoch)
        self.total_steps = task.total_steps(self.steps_per_epoch)
        self.pruner = self._build_pruner(n)
        self.epoch_steps = self.steps_per_epoch
        self.fsdp = is_fsdp(r, self.dstate)
        if self.fsdp:  # an unsharded twin without storage (meta), filled when the run evaluates (_whole_model)
            self.whole = copy.deepcopy(model).to("meta")
            model = wrap_fsdp(model, self.dstate)
        self.model = model
        self.optimizer = build_optimizer(model, r)
        self.scheduler, self.min_lr = build_scheduler(self.optimizer, r, self.total_steps, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if r.train.amp == "fp16" else None
        self.amp_ctx = _amp_context(r.train.amp, self.device)
        self.ema = build_ema(unwrap(model), r)
        self.sparsity = build_sparsity(unwrap(model), self.optimizer, r, self.total_steps)
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

    def _build_pruner(self, n: int) -> Pruner | None:
        """The data pruner of a recipe with ``data_pruning:`` (its samples picked by index, never a stream's:
        :func:`~zoo.train.config.check_prunable_data` refused that when the recipe was read), or None."""
        cfg = self.r.data_pruning
        if cfg is None:
            return None
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
                f"cannot resume: the training data ({data}) holds {describe_data(self.train_data, was)} now, and the "
                f"checkpoint's run trained on {describe_data(was, self.train_data)}: its epochs and data position "
                "belong to that set. Resume with the data it trained on, or start a new run (--overwrite, or another "
                "--output_dir; init_from keeps the weights)"
            )
        load_model_optim(self.model, self.optimizer, ckpt, self.fsdp)
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
        path = self.run_dir / ARGS
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
            "model": model_state(self.model, self.fsdp),
            "optimizer": optim_state(self.model, self.optimizer, self.fsdp),
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
        weights = model_state(self.model, True, everywhere=True)
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
        return self._whole_model() if self.fsdp else unwrap(self.model)

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
