"""The training loop shared by image classification and language modelling.

``train(recipe)`` runs a recipe end to end: data, model, optimizer (timm ``create_optimizer_v2``), schedule
(timm ``create_scheduler_v2``, stepped per optimizer update), AMP, gradient accumulation and clipping, EMA
(timm ``ModelEmaV3``), dynamic sparse training, distillation from a frozen teacher, data pruning
(:mod:`zoo.train.data_pruning`), checkpoints with exact resume, CSV/TensorBoard logs, a held-out
evaluation, profiling, ``model.safetensors`` + ``metrics.json`` and the publishable folder.

The run folder belongs to one run (:mod:`zoo.train.run_folder`: claiming, the lock, the checks of what the run
reads, resuming); the run's parts are built by :class:`~zoo.train.run_setup.RunSetup`; :class:`_Run` adds the
steps, the epochs and the end of the run. ``metrics.json`` is written last: a folder with it, the weights and the
final checkpoint holds a finished run, which ``--resume auto`` leaves as it is.
"""

import contextlib
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from timm.utils import dispatch_clip_grad
from torch import nn
from torch.utils.data import DataLoader, default_collate
from tqdm.auto import tqdm

from ..data.stream import SampleStream
from ..publish import PublishError, export_pretrained, publish_run
from ..run_layout import ARGS, LOG, METRICS, TENSORBOARD, WEIGHTS
from ..weights import CheckpointError, save_state_dict
from .checkpoint import naming_full_disk, write_text_atomic
from .config import Recipe, RecipeError, recipe_to_dict
from .data_pruning import el2n_scores, epoch_batches
from .distill import IndexedDataset
from .distributed import all_reduce_sum, barrier, model_state, unwrap
from .metrics import lm_logits
from .run_folder import (
    check_model_name,
    check_sources,
    check_sources_outside_run,
    checkpoint_from_elsewhere,
    read_checkpoint,
    run_export_dir,
)
from .run_setup import RunSetup

__all__ = ["NonFiniteLossError", "train"]

_logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped after saving a checkpoint of the last good state."""


def _profile(model: nn.Module, task) -> dict[str, Any]:
    """Params and MACs of the trained model (the task's way); a failure is reported, not fatal."""
    model = unwrap(model)
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
    if resume and overwrite and not checkpoint_from_elsewhere(resume, recipe):
        raise RecipeError("--resume continues the run in the folder and --overwrite replaces it: give one of them")
    check_model_name(recipe.model)
    check_sources(recipe)
    check_sources_outside_run(recipe, overwrite)
    threads = torch.get_num_threads()
    run = None
    try:
        run = _Run(recipe, progress)
        run.folder.claim(resume, overwrite)
        ckpt = read_checkpoint(recipe, resume, run.ckpt_dir, run.main)
        if ckpt is not None and run.folder.is_complete(ckpt):
            return run.folder.complete_summary(ckpt)
        if ckpt is not None:
            run.keep_threads()
        run.setup(ckpt)
        run.loop()
        return run.finish(push_to_hub)
    finally:
        if run is not None:
            run.folder.release()
        torch.set_num_threads(threads)


class _Run(RunSetup):
    """One training run: the steps that advance it, its epochs, and its end (final evaluation, weights, the
    publishable folder)."""

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
            self.ema.update(unwrap(self.model), step=self.global_step)
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
        model = self._whole_model() if self.fsdp else unwrap(self.model)
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
        weights = model_state(final_model, False)
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
            "args": str(run_dir / ARGS),
            "checkpoints": str(self.ckpt_dir),
            "weights": str(run_dir / WEIGHTS),
            "metrics": str(run_dir / METRICS),
            "log": str(run_dir / LOG),
            "tensorboard": str(run_dir / TENSORBOARD),
            **self.task.extra_files(),
        }
        if r.export.enabled:
            out = run_export_dir(r, run_dir)
            with naming_full_disk(out):
                paths["export"] = str(_export(r, final_model, out, metrics, self.task))
        write_text_atomic(run_dir / METRICS, json.dumps(metrics, indent=2) + "\n")
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


def _final_position(global_step: int, steps_per_epoch: int):
    return global_step // steps_per_epoch, global_step % steps_per_epoch
