"""Condensation on many processes: ``torchrun --nproc-per-node N -m zoo condense --data ... --method ...``.

Every process loads the real data, builds the method with the same seed and draws every random number the single
process draws, in the same order; each then computes only its own share and the shares are exchanged, so the set
equals the one-process set for the same seed (to float rounding; on the CPU with equal thread counts, bit for bit
where the tests say so). Rank 0 alone prints, shows progress bars, writes the output folder (atomically, as one
process does) and the resumable checkpoints; every rank reads the checkpoint rank 0 names on ``--resume``.

What each method splits (``Method.shards``):

- ``dm``, ``dc``, ``dsa``: the classes, in contiguous blocks (:func:`split`; ``Method.classes`` is the process's
  block). The matching loss is a sum over classes and each class's images get gradient from their own term only,
  so a process updates its block's rows; the loss shown is the sum over processes. DC/DSA gather every class's
  images (``Method.sync_images``) before the network trains on the synthetic set.
- ``sre2l``: its batches. A batch holds one image index of up to ``batch`` consecutive classes and its BatchNorm
  statistics couple those classes, so the batch, not the class, is the independent unit; batch ``j`` goes to
  process ``j % N`` (with 10 classes and ipc 1 there is one batch: nothing to split).
- ``rded``: the classes. A process scores the candidate crops of its classes with the teacher; it replays the other
  classes' draws (image permutation, crop boxes) without cutting or scoring them.
- ``mtt``, ``factorization``: the expert buffer, the expensive part: the missing experts are dealt out in rounds,
  expert ``missing[j]`` to process ``j % N`` (each expert is seeded by ``(expert_seed, index)`` alone, so who trains
  it does not change it); each round's trajectories go to every process and rank 0 stores them. The distillation
  (one sequential unrolled trajectory per iteration) then runs whole on every process.
- ``random``, ``herding``, ``kcenter``: one cheap pass, run whole on every process (herding and k-center train
  their small embedding network on each).

A sharding method's rows are gathered with their per-row optimiser state (momentum, Adam's moments) before each
checkpoint and at the end, so rank 0's checkpoint is whole and a resumed run under torchrun ends with the
uninterrupted set. ``tests/condense/test_condense_distributed.py`` checks all of this on two gloo processes.

Methods that run whole do so on every process rather than refuse: a script that launches every method under one
``torchrun`` works, and the set is the same. Processes talk over the process group ``torchrun`` describes (gloo on
the CPU, NCCL on CUDA; one GPU per process, ``cuda:LOCAL_RANK``). Without a process group every function here
answers as the one process it is.
"""

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from ..train.distributed import DistState, init_distributed
from ..train.distributed import on_main as train_on_main

__all__ = [
    "all_sum",
    "barrier",
    "broadcast_object",
    "broadcast_tensor",
    "finish",
    "gather_rows_",
    "init",
    "is_main",
    "on_main",
    "split",
    "world",
]


def init(device: str = "auto") -> DistState:
    """The process group ``torchrun`` describes (``WORLD_SIZE`` > 1), once; one process otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and device == "cpu":
        return init_distributed("cpu", backend="gloo")
    return init_distributed(device)


def finish() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """``(rank, world size)`` of this process; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def split(n: int, size: int) -> list[range]:
    """``range(n)`` cut into ``size`` contiguous blocks, the first ``n % size`` one longer (rank 0 always gets
    one item while there is one)."""
    q, r = divmod(n, size)
    starts = [i * q + min(i, r) for i in range(size + 1)]
    return [range(starts[i], starts[i + 1]) for i in range(size)]


def _device() -> torch.device:
    """Where collective tensors live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def all_sum(x: float) -> float:
    """The sum of ``x`` over the processes (float64)."""
    if world()[1] == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return float(t[0])


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as process ``src`` has it (small picklable values between the group's own processes)."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_tensor(t: torch.Tensor | None, src: int) -> torch.Tensor:
    """Process ``src``'s tensor on every process (on the device it has there; the others get it on the CPU).
    Shape and dtype travel first, so only ``src`` needs ``t``."""
    rank, size = world()
    if size == 1:
        return t
    dev = _device()
    meta = broadcast_object((tuple(t.shape), t.dtype) if rank == src else None, src)
    buf = t.to(dev).contiguous() if rank == src else torch.empty(meta[0], dtype=meta[1], device=dev)
    dist.broadcast(buf, src=src)
    return t if rank == src else buf.cpu()


@torch.no_grad()
def gather_rows_(t: torch.Tensor, rows_of: list[torch.Tensor]) -> torch.Tensor:
    """In place: every process's rows of ``t`` (``rows_of[r]``: the row indices process ``r`` holds current) copied
    to every other process. The blocks are padded to the longest, so one ``all_gather`` moves them."""
    rank, size = world()
    if size == 1:
        return t
    dev = _device()
    n = max(len(r) for r in rows_of)
    mine = torch.zeros(n, *t.shape[1:], dtype=t.dtype, device=dev)
    own = rows_of[rank].to(t.device)
    mine[: len(own)] = t[own].to(dev)
    out = [torch.empty_like(mine) for _ in range(size)]
    dist.all_gather(out, mine)
    for r, rows in enumerate(rows_of):
        if r != rank and len(rows):
            t[rows.to(t.device)] = out[r][: len(rows)].to(t.device)
    return t


def on_main(fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0 only; every process returns its result or raises its error (no process is left
    waiting in a collective for one that failed): the trainer's :func:`zoo.train.distributed.on_main`."""
    rank, size = world()
    return train_on_main(DistState(rank, size), fn)
