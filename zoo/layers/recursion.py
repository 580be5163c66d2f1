"""Weight-shared recursion: a few unique blocks applied along an explicit schedule.

A :class:`RecursiveStack` holds ``blocks`` (the unique, shared weights) and a ``schedule``: the block index of
every application, in order. Application ``i`` calls ``blocks[schedule[i]](x, recursion=r)`` where ``r`` counts
the earlier applications of the same block (0 on its first), and may be followed by its own non-shared
``step_layers[i]``. A stack called with a ``mode`` string passes it on, ``block(x, recursion=r, mode=mode)``, the
same for every application (SReT: where its token permutations come from). Recursion depth is a schedule change,
not a new module:

* ``sequence_schedule(3, 2) == [0, 0, 1, 1, 2, 2]``: each block twice in a row (SReT, MobileLLM-LS);
* ``cycle_schedule(3, 2) == [0, 1, 2, 0, 1, 2]``: the whole stack looped;
* :func:`sharing_schedule` names the four strategies of recursive LMs (Mixture-of-Recursions): ``cycle``,
  ``sequence``, and ``middle_cycle`` / ``middle_sequence`` (first and last block unique, the middle shared).

Parameters are stored once per unique block, so counts of ``parameters()`` count shared weights once.

The stack is traceable by ``torch.fx`` (the schedule unrolls into the graph) and scriptable by TorchScript when its
blocks take ``(x, recursion: int, mode: str)`` (:class:`ScheduledBlock`); gradient checkpointing is eager's only.
"""

import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .tracing import is_eager

__all__ = [
    "RecursiveStack",
    "SHARING_STRATEGIES",
    "ScheduledBlock",
    "cycle_schedule",
    "recursion_indices",
    "sequence_schedule",
    "shared_depth",
    "sharing_schedule",
]


def sequence_schedule(num_blocks: int, num_recursion: int) -> list[int]:
    """Each block ``num_recursion`` times in a row: [0]*r + [1]*r + ..."""
    return [b for b in range(num_blocks) for _ in range(num_recursion)]


def cycle_schedule(num_blocks: int, num_recursion: int) -> list[int]:
    """The blocks in order, ``num_recursion`` times: [0, 1, ..., B-1] * r."""
    return [b for _ in range(num_recursion) for b in range(num_blocks)]


SHARING_STRATEGIES = ("cycle", "sequence", "middle_cycle", "middle_sequence")


def shared_depth(sharing: str, num_layers: int, num_recursion: int) -> int:
    """Number of shared blocks ``B`` when a ``num_layers`` stack is made recursive ``num_recursion`` times.

    ``cycle``/``sequence``: ``num_layers // num_recursion``; ``middle_*``: ``(num_layers - 2) // num_recursion``
    (the first and last layer stay unique). When the division is not exact the recursive stack is shallower than
    ``num_layers`` (e.g. 30 layers, middle_cycle, 3 recursions: 1 + 9 x 3 + 1 = 29 applications).
    """
    if sharing not in SHARING_STRATEGIES:
        raise ValueError(f"sharing must be one of {SHARING_STRATEGIES}, got {sharing!r}")
    if not isinstance(num_recursion, int) or num_recursion < 1:
        raise ValueError(f"num_recursion must be a positive int, got {num_recursion!r}")
    middle = num_layers - 2 if sharing.startswith("middle") else num_layers
    if middle < num_recursion:
        raise ValueError(f"{num_layers} layers are too few for {sharing!r} sharing with {num_recursion} recursions")
    return middle // num_recursion


def sharing_schedule(sharing: str, num_blocks: int, num_recursion: int) -> list[int]:
    """The block index of every application for a sharing strategy over ``num_blocks`` shared blocks.

    ``middle_*`` strategies add a unique first block (index 0) and last block (index ``num_blocks + 1``):
    ``sharing_schedule("middle_cycle", 2, 2) == [0, 1, 2, 1, 2, 3]``.
    """
    if sharing not in SHARING_STRATEGIES:
        raise ValueError(f"sharing must be one of {SHARING_STRATEGIES}, got {sharing!r}")
    inner = (cycle_schedule if sharing.endswith("cycle") else sequence_schedule)(num_blocks, num_recursion)
    if sharing.startswith("middle"):
        return [0] + [b + 1 for b in inner] + [num_blocks + 1]
    return inner


def recursion_indices(schedule: Sequence[int]) -> list[int]:
    """For each application, how many times its block was applied before it."""
    seen: dict = {}
    out = []
    for b in schedule:
        out.append(seen.get(b, 0))
        seen[b] = out[-1] + 1
    return out


with warnings.catch_warnings():  # recent torch deprecates TorchScript's decorators; scripting the zoo still works
    warnings.simplefilter("ignore", FutureWarning)

    @torch.jit.interface
    class ScheduledBlock(nn.Module):
        """What a scripted stack calls its blocks as: TorchScript indexes a ``ModuleList`` at run time only through
        a module interface (eager and ``torch.fx`` call the blocks as modules, hooks included)."""

        def forward(self, x: torch.Tensor, recursion: int, mode: str) -> torch.Tensor:
            pass


class RecursiveStack(nn.Module):
    """Unique ``blocks`` applied in ``schedule`` order, each application optionally followed by its own step layer."""

    def __init__(
        self, blocks: Iterable[nn.Module], schedule: Sequence[int], step_layers: Iterable[nn.Module] | None = None
    ):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.schedule = [int(b) for b in schedule]
        if sorted(set(self.schedule)) != list(range(len(self.blocks))):
            raise ValueError(
                f"schedule {self.schedule} must use every one of the {len(self.blocks)} blocks and nothing else"
            )
        self.step_layers = nn.ModuleList(step_layers) if step_layers is not None else None
        if self.step_layers is not None and len(self.step_layers) != len(self.schedule):
            raise ValueError(f"{len(self.step_layers)} step layers for {len(self.schedule)} applications")
        self.recursion = recursion_indices(self.schedule)
        self.grad_checkpointing = False

    def _apply_step(self, i: int, x: torch.Tensor, mode: str) -> torch.Tensor:
        block, recursion = self.blocks[self.schedule[i]], self.recursion[i]
        x = block(x, recursion=recursion, mode=mode) if mode else block(x, recursion=recursion)
        if self.step_layers is not None:
            x = self.step_layers[i](x)
        return x

    def forward(self, x: torch.Tensor, mode: str = "") -> torch.Tensor:
        if torch.jit.is_scripting():
            return self._scripted(x, mode)
        for i in range(len(self.schedule)):
            if self.grad_checkpointing and is_eager() and torch.is_grad_enabled():
                x = checkpoint(self._apply_step, i, x, mode, use_reentrant=False)
            else:
                x = self._apply_step(i, x, mode)
        return x

    def _scripted(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        """The schedule under TorchScript: blocks through :class:`ScheduledBlock`, the step layers in an unrolled
        loop (they come one per application, in order)."""
        if self.step_layers is None:
            for i in range(len(self.schedule)):
                block: ScheduledBlock = self.blocks[self.schedule[i]]
                x = block.forward(x, self.recursion[i], mode)
            return x
        for i, step_layer in enumerate(self.step_layers):
            block: ScheduledBlock = self.blocks[self.schedule[i]]
            x = step_layer(block.forward(x, self.recursion[i], mode))
        return x

    def extra_repr(self) -> str:
        return f"schedule={self.schedule}"
