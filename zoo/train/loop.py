"""The training loop shared by image classification and language modelling.

``train(recipe)`` runs a recipe end to end: data, model, optimizer (timm ``create_optimizer_v2``), schedule
(timm ``create_scheduler_v2``, stepped per optimizer update), AMP, gradient accumulation and clipping, EMA
(timm ``ModelEmaV3``), dynamic sparse training, checkpoints with exact resume, CSV/TensorBoard logs, a held-out
evaluation, profiling, ``model.safetensors`` + ``metrics.json`` and the publishable folder.
"""
import contextlib
import csv
import json
import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import (capture_rng_state, latest_good_checkpoint, load_training_checkpoint, restore_rng_state,
                         save_training_checkpoint)
from .config import Recipe, RecipeError, recipe_to_dict, save_recipe
from .distributed import DistState, GlobalBatchSampler, all_reduce_sum, barrier, init_distributed
from .tasks import build_task

__all__ = ["NonFiniteLossError", "RunLogger", "train"]

_logger = logging.getLogger(__name__)

LOG_FIELDS = ["step", "epoch", "split", "loss", "lr", "throughput", "top1", "top5", "perplexity", "time"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped after saving a checkpoint of the last good state."""


class RunLogger:
    """log.csv + TensorBoard (RUN_DIR/tb) on rank 0; nothing elsewhere."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: Optional[int] = None):
        self.enabled = enabled
        self.path = run_dir / "log.csv"
        self.tb = None
        if not enabled:
            return
        rows = []
        if resume_step is not None and self.path.is_file():  # drop rows logged after the checkpoint
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, LOG_FIELDS)
            w.writeheader()
            w.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)
        except ImportError:
            _logger.warning("tensorboard is not installed: logging to log.csv only (pip install tensorboard)")

    def log(self, step: int, epoch: float, split: str, **values):
        if not self.enabled:
            return
        row = {"step": step, "epoch": round(epoch, 4), "split": split, "time": round(time.time(), 3)}
        row.update({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items() if k in LOG_FIELDS})
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writerow(row)
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and v is not None:
                    self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self):
        if self.tb is not None:
            self.tb.close()


def _seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _is_fsdp(recipe: Recipe, dstate: DistState) -> bool:
    return dstate.enabled and recipe.dist.strategy == "fsdp"


def _model_state(model: nn.Module, fsdp: bool) -> Dict[str, torch.Tensor]:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}


def _optim_state(model: nn.Module, optimizer, fsdp: bool) -> Dict[str, Any]:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
        return get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


def _load_model_optim(model, optimizer, ckpt, fsdp: bool):
    if fsdp:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)
        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, ckpt["model"], options=opts)
        set_optimizer_state_dict(model, optimizer, ckpt["optimizer"], options=opts)
    else:
        _unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])


def _scheduler_state(sched) -> Dict[str, Any]:
    """timm scheduler state, primitives only (weights_only loading)."""
    return {k: v for k, v in sched.state_dict().items()
            if v is None or isinstance(v, (bool, int, float, str, list, tuple, dict))}


def _wrap_fsdp(model: nn.Module, dstate: DistState) -> nn.Module:
    from torch.distributed.fsdp import fully_shard
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


def _profile(model: nn.Module, task) -> Dict[str, Any]:
    """Params and MACs of the trained model (zoo.profile; fvcore on token ids for language models)."""
    model = _unwrap(model)
    was_training = model.training
    try:
        if task.name == "image-classification":
            import zoo
            p = zoo.profile(model, input_size=task.profile_input())
            return {"params": p.params, "macs": p.macs, "macs_input": list(p.input_size)}
        from fvcore.nn import FlopCountAnalysis

        from zoo.profile import count_params
        ids = torch.zeros(1, task.recipe.data.seq_len, dtype=torch.long,
                          device=next(model.parameters()).device)
        model.eval()
        a = FlopCountAnalysis(model, (ids,))
        a.unsupported_ops_warnings(False)
        a.uncalled_modules_warnings(False)
        return {"params": count_params(model)["params"], "macs": int(a.total()),
                "macs_input": [1, task.recipe.data.seq_len]}
    except Exception as e:  # profiling is a report, not a reason to lose a finished run
        _logger.warning("profiling failed: %s", e)
        return {"params": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())}
    finally:
        model.train(was_training)


def _export(recipe: Recipe, model: nn.Module, run_dir: Path, metrics: Dict[str, Any], task) -> Optional[Path]:
    try:
        from zoo.publish import export_pretrained
    except ImportError:
        _logger.warning("zoo.hub.export_pretrained is not available in this version: no publishable folder")
        return None
    out = Path(recipe.export.dir) if recipe.export.dir else run_dir / "export"
    kwargs = dict(task.model_kwargs) if hasattr(task, "model_kwargs") else dict(recipe.model_kwargs)
    if recipe.task == "image-classification":
        kwargs.setdefault("num_classes", task.info.num_classes)
        kwargs.pop("drop_path_rate", None)
    return Path(export_pretrained(model, out, model_name=recipe.model, model_kwargs=kwargs, metrics=metrics,
                                  recipe=recipe_to_dict(recipe), dataset=task.dataset_name,
                                  tokenizer_file=str(getattr(task, "tokenizer_file", "")) or None))


def train(recipe: Recipe, resume: Optional[str] = None, push_to_hub: Optional[str] = None,
          progress: bool = True) -> Dict[str, Any]:
    """Run ``recipe``; ``resume`` is a checkpoint path or ``"auto"`` (RUN_DIR/checkpoints/last.pt).

    Returns a summary: run_dir, metrics, paths of what was written.
    """
    threads = torch.get_num_threads()
    try:
        return _train(recipe, resume, push_to_hub, progress)
    finally:
        torch.set_num_threads(threads)


def _train(recipe: Recipe, resume: Optional[str], push_to_hub: Optional[str], progress: bool) -> Dict[str, Any]:
    t_start = time.time()
    r = recipe
    dstate = init_distributed(r.train.device, r.dist.backend)
    device = dstate.device
    if r.train.threads:
        torch.set_num_threads(r.train.threads)
    if r.train.deterministic:
        torch.use_deterministic_algorithms(True)
    run_dir = Path(r.output_dir or "runs/run")
    ckpt_dir = run_dir / "checkpoints"
    main = dstate.is_main

    ckpt = None
    if resume:
        path = ckpt_dir / "last.pt" if resume == "auto" else Path(resume)
        if resume == "auto" and not path.is_file():  # killed between writing step_<N>.pt and linking last.pt
            path = latest_good_checkpoint(ckpt_dir) or path
        if resume == "auto" and not path.is_file():
            if main:
                print(f"no checkpoint in {ckpt_dir}: starting a new run", file=sys.stderr)
        else:
            ckpt = load_training_checkpoint(path)
            saved = ckpt.get("recipe", {})
            for key in ("model", "model_kwargs", "task"):
                if saved.get(key) != getattr(r, key):
                    raise RecipeError(f"checkpoint {path} was written by a run with {key}={saved.get(key)!r}, "
                                      f"this recipe has {getattr(r, key)!r}")

    _seed_everything(r.seed)
    task = build_task(r, dstate, run_dir)
    task.prepare_data()
    _seed_everything(r.seed)  # model init does not depend on what data preparation drew
    model = task.build_model().to(device)
    if r.train.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise RecipeError(f"{r.model} has no set_grad_checkpointing; set train.grad_checkpointing false")
        model.set_grad_checkpointing(True)
    channels_last = r.train.channels_last and device.type == "cuda" and r.task == "image-classification"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    # --- data order -------------------------------------------------------------------------------------------
    sampler = GlobalBatchSampler(len(task.train_set), r.train.batch_size, r.train.grad_accum, dstate, r.seed)
    steps_per_epoch = sampler.steps_per_epoch
    if r.task == "image-classification":
        total_steps = r.train.epochs * steps_per_epoch
        if r.train.steps:
            total_steps = min(total_steps, r.train.steps)
    else:
        total_steps = r.train.steps
    warmup_steps = r.sched.warmup_steps if r.sched.warmup_steps is not None \
        else int(round(r.sched.warmup_epochs * steps_per_epoch))

    # --- optimizer, schedule, EMA, sparsity ----------------------------------------------------------------------
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3, dispatch_clip_grad

    fsdp = _is_fsdp(r, dstate)
    if fsdp:
        model = _wrap_fsdp(model, dstate)
    lr = r.scaled_lr()
    opt_kwargs = {}
    if r.optim.betas is not None:
        opt_kwargs["betas"] = tuple(r.optim.betas)
    if r.optim.eps is not None:
        opt_kwargs["eps"] = r.optim.eps
    optimizer = create_optimizer_v2(model, opt=r.optim.opt, lr=lr, weight_decay=r.optim.weight_decay,
                                    momentum=r.optim.momentum, layer_decay=r.optim.layer_decay, **opt_kwargs)
    min_lr = r.sched.min_lr_ratio * lr if r.sched.min_lr_ratio is not None else r.sched.min_lr
    scheduler, _ = create_scheduler_v2(optimizer, sched=r.sched.sched, num_epochs=max(total_steps - warmup_steps, 1),
                                       warmup_epochs=warmup_steps, warmup_lr=r.sched.warmup_lr, min_lr=min_lr,
                                       warmup_prefix=True, step_on_epochs=False, updates_per_epoch=1)
    scaler = torch.amp.GradScaler("cuda") if r.train.amp == "fp16" else None
    amp_ctx = _amp_context(r.train.amp, device)
    ema = None
    if r.ema.enabled:
        ema = ModelEmaV3(_unwrap(model), decay=r.ema.decay, use_warmup=r.ema.warmup,
                         update_after_step=r.ema.update_after_step)
    sparsity = None
    if r.sparse is not None:
        try:
            from . import sparse as sparse_mod
        except ImportError:
            raise RecipeError("the recipe has a sparse: section but zoo.train.sparse is not available") from None
        import dataclasses as _dc
        valid = {f.name for f in _dc.fields(sparse_mod.SparseConfig)}
        unknown = sorted(set(r.sparse) - valid)
        if unknown:
            import difflib
            hints = [k + (f" (did you mean {c[0]!r}?)" if (c := difflib.get_close_matches(k, valid, 1)) else "")
                     for k in unknown]
            raise RecipeError(f"unknown key(s) in sparse: {', '.join(hints)}; valid: {', '.join(sorted(valid))}")
        sparsity = sparse_mod.DynamicSparsity(_unwrap(model), optimizer, sparse_mod.SparseConfig.from_dict(r.sparse),
                                              total_steps)

    # --- resume or start -----------------------------------------------------------------------------------------
    global_step, epoch, step_in_epoch = 0, 0, 0
    mixup = task.build_mixup()
    loss_fn = task.build_loss(mixup)
    if ckpt is not None:
        _load_model_optim(model, optimizer, ckpt, fsdp)
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            if ckpt.get("ema") is None:
                raise RecipeError("this recipe uses EMA but the checkpoint has no EMA state")
            ema.load_state_dict(ckpt["ema"])
        if sparsity is not None:
            if ckpt.get("sparsity") is None:
                raise RecipeError("this recipe has a sparse: section but the checkpoint has no sparsity state")
            sparsity.load_state_dict(ckpt["sparsity"])
        global_step = int(ckpt["step"])
        epoch, step_in_epoch = int(ckpt["data_position"]["epoch"]), int(ckpt["data_position"]["step_in_epoch"])
        restore_rng_state(ckpt["rng"][min(dstate.rank, len(ckpt["rng"]) - 1)])
    else:
        if sparsity is not None:
            init_idx = list(range(min(len(task.train_set), sampler.micro)))
            items = [task.train_set[i] for i in init_idx]
            batch = torch.utils.data.default_collate(items)
            batch = task.prepare_batch(batch, device, channels_last)

            def _sparse_loss(m, b):
                return task.forward_loss(m, b, loss_fn if mixup is None else torch.nn.CrossEntropyLoss())[0]
            sparsity.init_masks(batch=batch, loss_fn=_sparse_loss)
            if ema is not None:
                sparsity.apply_to_ema(ema.module)
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
    if dstate.enabled and not fsdp:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if r.train.compile:
        model = torch.compile(model)

    if main:
        save_recipe(r, run_dir / "args.yaml", extra={
            "lr": lr, "min_lr": min_lr, "total_steps": total_steps, "warmup_steps": warmup_steps,
            "steps_per_epoch": steps_per_epoch, "world_size": dstate.world_size,
            "micro_batch": sampler.micro, "device": str(device)})
    logger = RunLogger(run_dir, main, resume_step=global_step if ckpt is not None else None)
    eval_bs = r.data.eval_batch_size or max(sampler.micro, 1)

    def checkpoint_state(ep: int, sie: int) -> Dict[str, Any]:
        rng = capture_rng_state()
        if dstate.enabled:  # every rank's RNG, so a resumed run draws what it would have drawn
            gathered = [None] * dstate.world_size
            torch.distributed.all_gather_object(gathered, rng)
            rng = gathered
        else:
            rng = [rng]
        return {
            "model": _model_state(model, fsdp),
            "optimizer": _optim_state(model, optimizer, fsdp),
            "scheduler": _scheduler_state(scheduler),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": {k: v.detach().cpu() for k, v in ema.state_dict().items()} if ema is not None else None,
            "sparsity": sparsity.state_dict() if sparsity is not None else None,
            "rng": rng,
            "data_position": {"epoch": ep, "step_in_epoch": sie},
            "recipe": recipe_to_dict(r),
            "world_size": dstate.world_size,
        }

    def save(ep: int, sie: int):
        state = checkpoint_state(ep, sie)
        if main:
            save_training_checkpoint(state, ckpt_dir, global_step, keep=r.checkpoint.keep)
        barrier(dstate)

    def evaluate(split="val") -> Dict[str, float]:
        eval_model = ema.module if ema is not None else model
        metrics = task.evaluate(eval_model, eval_bs, device, amp_ctx, channels_last,
                                max_batches=r.train.eval_max_batches)
        model.train()
        return metrics

    # --- the loop ------------------------------------------------------------------------------------------------
    pbar = None
    if main and progress:
        from tqdm.auto import tqdm
        pbar = tqdm(total=total_steps, initial=global_step, desc=f"train {r.model}", dynamic_ncols=True,
                    file=sys.stderr)
    model.train()
    last_metrics: Dict[str, float] = {}
    window_t, window_n = time.time(), 0
    try:
        while global_step < total_steps:
            sampler.set_position(epoch, step_in_epoch)
            task.set_epoch(epoch)
            g = torch.Generator()
            g.manual_seed(r.seed * 7_919 + epoch)
            loader = DataLoader(task.train_set, batch_sampler=sampler, num_workers=r.data.num_workers,
                                generator=g, pin_memory=device.type == "cuda")
            it = iter(loader)
            for k in range(step_in_epoch, steps_per_epoch):
                if global_step >= total_steps:
                    break
                loss_sum = torch.zeros((), dtype=torch.float64)
                n_items = 0
                for m in range(r.train.grad_accum):
                    batch = task.prepare_batch(next(it), device, channels_last)
                    last_micro = m == r.train.grad_accum - 1
                    sync = contextlib.nullcontext() if last_micro or not isinstance(
                        model, nn.parallel.DistributedDataParallel) else model.no_sync()
                    with sync:
                        with amp_ctx():
                            loss, n = task.forward_loss(model, batch, loss_fn, mixup)
                        scaled = loss / r.train.grad_accum
                        if scaler is not None:
                            scaler.scale(scaled).backward()
                        else:
                            scaled.backward()
                    loss_sum += loss.detach().double().cpu() / r.train.grad_accum
                    n_items += n
                stats = all_reduce_sum(torch.stack([loss_sum, torch.tensor(
                    0.0 if torch.isfinite(loss_sum) else 1.0, dtype=torch.float64)]).to(device), dstate).cpu()
                mean_loss = stats[0].item() / dstate.world_size
                if stats[1].item() > 0:
                    optimizer.zero_grad(set_to_none=True)
                    save(epoch, k)  # the state before this step, which is still finite
                    raise NonFiniteLossError(
                        f"the loss became {'NaN' if math.isnan(mean_loss) else 'infinite'} at optimizer step "
                        f"{global_step + 1} (epoch {epoch}); stopped. The last good state is saved in "
                        f"{ckpt_dir / 'last.pt'}. Lower optim.lr, set optim.clip_grad, or use train.amp none/bf16, "
                        f"then resume with --resume {ckpt_dir / 'last.pt'}.")
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if r.optim.clip_grad:
                    dispatch_clip_grad(model.parameters(), r.optim.clip_grad, mode=r.optim.clip_mode)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if sparsity is not None:
                    sparsity.step()
                global_step += 1
                if ema is not None:
                    ema.update(_unwrap(model), step=global_step)
                    if sparsity is not None:
                        sparsity.apply_to_ema(ema.module)
                scheduler.step_update(global_step)
                window_n += n_items * dstate.world_size
                if pbar is not None:
                    pbar.update(1)
                if global_step % max(r.train.log_interval, 1) == 0 or global_step == total_steps:
                    now = time.time()
                    rate = window_n / max(now - window_t, 1e-9)
                    window_t, window_n = now, 0
                    cur_lr = optimizer.param_groups[0]["lr"]
                    logger.log(global_step, epoch + (k + 1) / steps_per_epoch, "train", loss=mean_loss, lr=cur_lr,
                               throughput=rate)
                    if pbar is not None:
                        pbar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{cur_lr:.2e}",
                                         **{task.throughput_unit.replace("/", "_per_"): f"{rate:.0f}"})
                if r.train.eval_every_steps and global_step % r.train.eval_every_steps == 0 \
                        and global_step < total_steps:
                    last_metrics = evaluate()
                    logger.log(global_step, epoch, "val", **last_metrics)
                if r.checkpoint.every_steps and global_step % r.checkpoint.every_steps == 0 \
                        and global_step < total_steps:
                    save(epoch, k + 1)
            else:  # the epoch ran to its end
                epoch, step_in_epoch = epoch + 1, 0
                if r.task == "image-classification" and global_step < total_steps and \
                        epoch % max(r.train.eval_every_epochs, 1) == 0:
                    last_metrics = evaluate()
                    logger.log(global_step, epoch, "val", **last_metrics)
                    if pbar is not None:
                        pbar.write(f"epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" for k, v in last_metrics.items()
                                                                  if isinstance(v, float)))
                if global_step < total_steps:
                    save(epoch, 0)
                continue
            break  # total_steps reached inside the epoch
    finally:
        if pbar is not None:
            pbar.close()
    save(*_final_position(global_step, steps_per_epoch))

    # --- final evaluation, weights, metrics, export ---------------------------------------------------------------
    final = evaluate()
    logger.log(global_step, global_step / steps_per_epoch, "val", **final)
    logger.close()
    summary: Dict[str, Any] = {"run_dir": str(run_dir), "steps": global_step, "metrics": final}
    final_model = ema.module if ema is not None else _unwrap(model)
    weights = _model_state(ema.module if ema is not None else model, fsdp and ema is None)
    if main:
        from zoo.weights import save_state_dict
        save_state_dict(weights, run_dir / "model.safetensors")
        metrics = dict(final)
        metrics["dataset"] = task.dataset_name
        metrics["split"] = r.data.val_split
        if getattr(getattr(task, "info", None), "class_names", None):
            metrics["label_names"] = list(task.info.class_names)  # travel with the weights (export_run, Hub)
        if r.task == "text-generation":
            metrics.update(task.token_counts)
            metrics["vocab_size"] = task.vocab_size
        metrics.update(_profile(final_model, task))
        metrics["train_steps"] = global_step
        metrics["train_seconds"] = round(time.time() - t_start, 1)
        metrics["ema"] = ema is not None
        if r.task == "image-classification":
            metrics["num_classes"] = task.info.num_classes
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        summary["metrics"] = metrics
        summary["paths"] = {"args": str(run_dir / "args.yaml"), "checkpoints": str(ckpt_dir),
                            "weights": str(run_dir / "model.safetensors"), "metrics": str(run_dir / "metrics.json"),
                            "log": str(run_dir / "log.csv"), "tensorboard": str(run_dir / "tb")}
        if r.task == "text-generation":
            summary["paths"]["tokenizer"] = str(task.tokenizer_file)
        if r.export.enabled:
            exported = _export(r, final_model, run_dir, metrics, task)
            if exported is not None:
                summary["paths"]["export"] = str(exported)
        repo = push_to_hub or r.export.push_to_hub
        if repo:
            from zoo.publish import PublishError, publish_run
            from zoo.weights import CheckpointError
            try:
                summary["paths"]["hub"] = publish_run(run_dir, repo, private=r.export.private,
                                                      license=r.export.license)
            except (PublishError, CheckpointError) as e:
                raise PublishError(f"the run finished and is saved in {run_dir}, but publishing it to {repo} "
                                   f"failed: {e}\nPublish it again with: zoo publish {run_dir} --repo {repo}"
                                   f"{' --private' if r.export.private else ''}") from None
    barrier(dstate)
    return summary


def _final_position(global_step: int, steps_per_epoch: int):
    return global_step // steps_per_epoch, global_step % steps_per_epoch
