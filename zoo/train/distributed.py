"""Many processes: ``torchrun --nproc_per_node N train.py ...`` (DDP; FSDP as an option for language models).

Batches are global: for optimizer step ``k`` of an epoch, the global batch is positions ``[k*B, (k+1)*B)`` of
that epoch's seeded permutation; it is cut into ``grad_accum`` micro-batches and each micro-batch into
``world_size`` equal contiguous pieces, one per rank. One process with the same global batch (and accumulation
steps x processes) therefore sees the same samples and averages the same gradients. Logging, progress bars
and file writes happen on rank 0 only. A run's whole model and optimizer state, for checkpoints and evaluation,
is gathered here from a DDP-wrapped or FSDP-sharded model (:func:`model_state`, :func:`optim_state`).
"""

import datetime
import os
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..data.errors import DataError
from .config import Recipe, RecipeError

__all__ = [
    "DistState",
    "GlobalBatchSampler",
    "all_reduce_sum",
    "barrier",
    "init_distributed",
    "is_fsdp",
    "load_model_optim",
    "model_state",
    "on_main",
    "optim_state",
    "shard_indices",
    "unwrap",
    "wrap_fsdp",
]


class DistState:
    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, device: str = "cpu"):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device = torch.device(device)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto", backend: str | None = None) -> DistState:
    """Initialise the process group when started by torchrun (``WORLD_SIZE`` > 1); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is cuda but CUDA is not available here; use --train.device cpu")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if world > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if device.startswith("cuda") else "gloo")
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistState(rank, world, local_rank, device)


def barrier(state: DistState):
    if state.enabled:
        dist.barrier()


def on_main(state: DistState, fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0 only; every rank returns its result or raises its error, so that no rank waits in a
    collective for one that failed."""
    if not state.enabled:
        return fn()
    box: list[Any] = [None]
    if state.is_main:
        try:
            box[0] = (fn(), None)
        except Exception as e:  # passed to the other ranks, then raised here too
            try:
                pickle.dumps(e)
                box[0] = (None, e)
            except Exception:  # an error that does not pickle reaches the others as its message
                box[0] = (None, RuntimeError(f"rank 0: {type(e).__name__}: {e}"))
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    result, error = box[0]
    if error is not None:
        raise error
    return result


def all_reduce_sum(t: torch.Tensor, state: DistState) -> torch.Tensor:
    if state.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def shard_indices(n: int, state: DistState) -> list[int]:
    """Evaluation shard of this rank (strided, no padding: summed counts are exact)."""
    return list(range(state.rank, n, state.world_size))


class GlobalBatchSampler:
    """Yields this rank's micro-batches of indices, resumable at any optimizer step of an epoch."""

    def __init__(self, n: int, global_batch: int, grad_accum: int, state: DistState, seed: int, shuffle: bool = True):
        parts = grad_accum * state.world_size
        if global_batch % parts:
            raise RecipeError(
                f"train.batch_size {global_batch} must divide evenly into grad_accum ({grad_accum}) x "
                f"processes ({state.world_size}) micro-batches"
            )
        if n < global_batch:
            raise DataError(
                f"the training set has {n} samples, fewer than one batch of {global_batch}: lower "
                "train.batch_size or use more data"
            )
        self.n, self.global_batch, self.grad_accum, self.state = n, global_batch, grad_accum, state
        self.micro = global_batch // parts
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_position(self, epoch: int, step_in_epoch: int = 0):
        self.epoch, self.start_step = epoch, step_in_epoch

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order()
        for k in range(self.start_step, self.steps_per_epoch):
            batch = order[k * self.global_batch : (k + 1) * self.global_batch]
            for m in range(self.grad_accum):
                micro = batch[m * self.micro * self.state.world_size : (m + 1) * self.micro * self.state.world_size]
                yield micro[self.state.rank * self.micro : (self.state.rank + 1) * self.micro].tolist()

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.grad_accum


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``torch.compile``'s and DDP's wrappers (others as they are): its weights, checkpoints and
    profile are the model's own, with the names a model built without ``train.compile`` has."""
    if isinstance(model, torch._dynamo.eval_frame.OptimizedModule):  # train.compile: compile(model or DDP(model))
        model = model._orig_mod
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def is_fsdp(recipe: Recipe, dstate: DistState) -> bool:
    """Whether the run shards its model with FSDP (``dist.strategy: fsdp`` on many processes)."""
    return dstate.enabled and recipe.dist.strategy == "fsdp"


# FSDP's state-dict API is imported where it is used: it is only needed by FSDP runs, costs about a second to
# import, and is missing from torch builds without distributed support.
def model_state(model: nn.Module, fsdp: bool, everywhere: bool = False) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU; under FSDP gathered from the shards (a collective), on rank 0 only
    unless ``everywhere`` (then on every rank, on the model's device)."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=not everywhere)
        return get_model_state_dict(model, options=options)
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}


def optim_state(model: nn.Module, optimizer, fsdp: bool) -> dict[str, Any]:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(
            model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    return optimizer.state_dict()


def load_model_optim(model, optimizer, ckpt, fsdp: bool):
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
        unwrap(model).load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])


def wrap_fsdp(model: nn.Module, dstate: DistState) -> nn.Module:
    from torch.distributed.fsdp import fully_shard  # FSDP runs only (see model_state)

    layers = getattr(getattr(model, "model", model), "layers", None) or getattr(model, "layers", None)
    for layer in layers or []:
        fully_shard(layer)
    fully_shard(model)
    return model
