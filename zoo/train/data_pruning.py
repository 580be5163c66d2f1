"""Data pruning during training (the recipe's ``data_pruning:``): each epoch trains on part of the training set.

Methods:

* ``infobatch`` (Qin, Wang et al., ICLR 2024, "InfoBatch: Lossless Training Speed Up by Unbiased Dynamic Data
  Pruning"), the authors' arithmetic: every sample keeps a score, its last training loss (3 before it is first
  seen, so the first epoch trains on everything). At the start of an epoch the samples whose score is below the
  mean are the well-learned ones; ``int(keep * count)`` of them are drawn at random (``keep = max(0.1, 1 - ratio)``:
  the authors' cap, a ratio above 0.9 prunes as 0.9) and train with their loss scaled by ``1 / keep``, so that
  the gradient's expectation is the full data's; the rest of the well-learned samples are skipped this epoch. The
  kept samples are shuffled. The epochs ``e`` with ``e + 1 > delta * epochs`` (annealing) train on every sample
  with weight 1. Each epoch's draws come from ``numpy.random.RandomState(seed * 1_000_003 + e + 1)``: with seed
  0 the authors' own stream (they seed numpy with the epoch number plus one), so the kept sets equal theirs.
* ``random``: a fixed random subset of ``1 - ratio`` of the samples (drawn once from the seed) trains every epoch;
  the static baseline at a chosen cost (``zoo bench data-pruning`` sets the ratio that costs what InfoBatch
  cost).
* ``el2n`` (Paul, Ganguli, Dziugaite, "Deep Learning on a Data Diet", NeurIPS 2021): the first ``score_epochs``
  epochs train on every sample; then each training sample is scored once by its EL2N score,
  ``|| softmax(f(x)) - onehot(y) ||_2`` with the model in eval mode (a language model's row: the mean over its
  tokens), and the highest-scoring ``1 - ratio`` of the samples train in every later epoch. The authors average
  the score over ten early-trained networks; within one run it is the run's own network (one draw).

The static methods do not anneal (``delta`` applies to infobatch). A language model's sample is one row of
``data.seq_len`` tokens.

The run's length: the epochs the full-data run would take (``train.epochs``; a language model's ``train.steps``
divided by the full-data steps per epoch, rounded up, the last epoch cut where the full run would stop). An epoch
takes ``kept // train.batch_size`` optimizer steps (whole global batches, as every zoo run). The learning-rate
schedule is the full-data run's, followed by epoch fraction (the authors rebuild their schedule each epoch
for its number of steps): the ``k``-th of ``s`` steps of epoch ``e`` sets the schedule at full-data step
``e * S + round(k * S / s)``.

Several processes: every rank holds the scores; the per-sample losses of a step are gathered from all ranks
(``all_gather``) before they update them, and the draws are seeded, so every rank prunes the same samples; a
global batch is cut into ranks' pieces as every zoo run does (one process and N processes train on the same
batches). The authors' DDP wrapper instead reshuffles the kept list with torch and strides it by rank.

This module needs torch and numpy alone (two-process tests load it by path); :mod:`zoo.train.loop` drives it.
"""

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "DataPruningConfig",
    "PRUNING_METHODS",
    "Pruner",
    "el2n",
    "el2n_scores",
    "epoch_batches",
    "infobatch_keep_ratio",
    "mean_weighted",
    "per_sample_loss",
]

PRUNING_METHODS = ("infobatch", "random", "el2n")
INITIAL_SCORE = 3.0  # the authors' score of a sample not yet seen


@dataclass
class DataPruningConfig:
    method: str = "infobatch"  # infobatch | random | el2n
    ratio: float = 0.5  # infobatch: the share of the well-learned samples skipped; random/el2n: of all samples
    delta: float = 0.875  # infobatch: the share of the epochs that prune (the rest train on everything)
    score_epochs: int = 1  # el2n: epochs on the full data before the samples are scored

    def check(self) -> None:
        """Values out of their bounds (ValueError naming the key and what to do)."""
        if self.method not in PRUNING_METHODS:
            raise ValueError(f"data_pruning.method must be one of {', '.join(PRUNING_METHODS)}, got {self.method!r}")
        if not 0 <= self.ratio < 1:
            raise ValueError(f"data_pruning.ratio must be in [0, 1) (the share pruned), got {self.ratio!r}")
        if not 0 < self.delta <= 1:
            raise ValueError(
                f"data_pruning.delta must be in (0, 1] (the share of the epochs that prune), got {self.delta!r}"
            )
        if self.score_epochs < 0:
            raise ValueError(f"data_pruning.score_epochs must be 0 or more, got {self.score_epochs!r}")


def infobatch_keep_ratio(ratio: float) -> float:
    """The share of the well-learned samples InfoBatch keeps (the authors clamp it to [0.1, 1])."""
    return min(1.0, max(0.1, 1.0 - ratio))


# ----------------------------------------------------------------------------------------------------------------
# per-sample losses
# ----------------------------------------------------------------------------------------------------------------


def per_sample_loss(loss_fn: Callable, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The loss of each sample (no reduction) for the zoo's classification losses: cross-entropy, timm's label
    smoothing (``(1 - s) * nll + s * mean(-log p)``) and soft targets (mixup/cutmix: ``sum(-t * log p)``); their
    mean is what ``loss_fn`` returns."""
    name = type(loss_fn).__name__
    if name == "SoftTargetCrossEntropy":
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1)
    if name == "LabelSmoothingCrossEntropy":
        logp = F.log_softmax(logits, dim=-1)
        nll = -logp.gather(dim=-1, index=target.unsqueeze(1)).squeeze(1)
        return loss_fn.confidence * nll + loss_fn.smoothing * (-logp.mean(dim=-1))
    if isinstance(loss_fn, torch.nn.CrossEntropyLoss):
        return F.cross_entropy(
            logits, target, weight=loss_fn.weight, ignore_index=loss_fn.ignore_index, reduction="none",
            label_smoothing=loss_fn.label_smoothing,
        )  # fmt: skip
    if loss_fn is F.cross_entropy:
        return F.cross_entropy(logits, target, reduction="none")
    raise TypeError(f"data_pruning needs a per-sample loss; {name} has none here")


def el2n(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """EL2N per sample: ``|| softmax(logits) - onehot(target) ||_2``; for a sequence, the mean over its tokens."""
    p = F.softmax(logits.float(), dim=-1)
    onehot = F.one_hot(targets.long(), p.shape[-1]).to(p.dtype)
    norms = (p - onehot).norm(dim=-1)
    return norms.reshape(norms.shape[0], -1).mean(dim=1)


@torch.no_grad()
def el2n_scores(
    n: int,
    batches: Callable[[list[int]], Any],
    forward: Callable[[Any], tuple[torch.Tensor, torch.Tensor]],
    batch_size: int,
    amp_ctx: Callable[[], Any] = contextlib.nullcontext,
) -> torch.Tensor:
    """EL2N of all ``n`` samples: ``batches(indices)`` reads them, ``forward(batch)`` gives (logits, targets).
    Several processes each score every ``world_size``-th sample and sum the results."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
    scores = torch.zeros(n, dtype=torch.float64)
    mine = list(range(rank, n, world))
    for i in range(0, len(mine), batch_size):
        idx = mine[i : i + batch_size]
        with amp_ctx():
            logits, targets = forward(batches(idx))
        scores[idx] = el2n(logits, targets).double().cpu()
    if world > 1:
        dist.all_reduce(scores, op=dist.ReduceOp.SUM)
    return scores.float()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


# ----------------------------------------------------------------------------------------------------------------
# the pruner
# ----------------------------------------------------------------------------------------------------------------


class Pruner:
    """Which samples each epoch trains on, in which order and with which loss weight; the per-sample scores.

    ``n`` samples, global batches of ``batch_size``, ``steps_per_epoch`` full-data steps per epoch and
    ``total_steps`` full-data steps in all (the schedule's length).
    """

    def __init__(self, cfg: DataPruningConfig, n: int, batch_size: int, steps_per_epoch: int, total_steps: int,
                 seed: int):  # fmt: skip
        self.cfg, self.n, self.batch_size, self.seed = cfg, n, batch_size, seed
        self.full_steps, self.total_steps = steps_per_epoch, total_steps
        self.epochs = math.ceil(total_steps / steps_per_epoch)
        self.keep = infobatch_keep_ratio(cfg.ratio)
        self.scores = torch.full((n,), INITIAL_SCORE)
        self.weights = torch.ones(n)
        self.subset: torch.Tensor | None = None  # random / el2n: the samples kept
        self.order: torch.Tensor | None = None  # this epoch's samples, in training order
        self.order_epoch = -1
        self.kept: list[int] = []  # samples kept, per epoch planned
        self.sample_steps = 0  # samples trained on so far (forward and backward)
        self.scored = 0  # samples scored by forward passes alone (el2n)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        if cfg.method == "random":
            rng = np.random.RandomState(self._seed(-1))
            self.subset = torch.from_numpy(np.sort(rng.choice(n, self._static_count(), replace=False)))

    # -- what an epoch trains on ---------------------------------------------------------------------------------
    def _seed(self, epoch: int) -> int:
        return (self.seed * 1_000_003 + epoch + 1) % 2**32

    def _static_count(self) -> int:
        return max(self.batch_size, min(self.n, round((1.0 - self.cfg.ratio) * self.n)))

    def prunes(self, epoch: int) -> bool:
        """Whether ``epoch`` trains on part of the data."""
        if self.cfg.method == "infobatch":
            return epoch + 1 <= self.epochs * self.cfg.delta
        if self.cfg.method == "el2n":
            return epoch >= self.cfg.score_epochs
        return True

    def plan(self, epoch: int, score: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """This epoch's samples in training order (and their weights in ``weights``); ``score()`` gives the EL2N
        scores when el2n needs them. A plan restored from a checkpoint for this epoch is kept as it is."""
        if self.order_epoch == epoch and self.order is not None:
            return self.order
        self.flush()
        rng = np.random.RandomState(self._seed(epoch))
        method = self.cfg.method
        if method == "infobatch" and self.prunes(epoch):
            order = self._infobatch_prune(rng)
        elif method == "infobatch" or not self.prunes(epoch):
            self.weights.fill_(1.0)
            order = list(range(self.n))
            rng.shuffle(order)
        else:
            if self.subset is None:  # el2n: score once, keep the highest
                if score is None:
                    raise RuntimeError("el2n pruning needs the samples' scores")
                self.scores = score().float()
                self.scored += self.n
                ranked = torch.sort(self.scores, descending=True, stable=True).indices
                self.subset = torch.sort(ranked[: self._static_count()]).values
            order = self.subset.tolist()
            rng.shuffle(order)
        self.order = torch.tensor(order, dtype=torch.long)
        self.order_epoch = epoch
        self.kept.append(len(order))
        return self.order

    def _infobatch_prune(self, rng: np.random.RandomState) -> list[int]:
        """The authors' ``prune``: skip ``1 - keep`` of the samples scored below the mean, at random; weight the
        kept ones ``1 / keep``; shuffle."""
        well = (self.scores < self.scores.mean()).numpy()
        well_idx = np.where(well)[0]
        order = np.where(~well)[0].tolist()
        chosen = rng.choice(well_idx, int(self.keep * len(well_idx)), replace=False)
        self.weights.fill_(1.0)
        if len(chosen) > 0:
            self.weights[chosen] = 1.0 / self.keep
            order.extend(int(i) for i in chosen)
        rng.shuffle(order)
        return order

    def steps(self, epoch: int) -> int:
        """Optimizer steps of ``epoch`` (after :meth:`plan`): whole global batches of its samples; the last epoch
        stops where the full-data run would."""
        steps = self._planned_steps()
        left = self.total_steps - epoch * self.full_steps
        if left < self.full_steps:
            steps = math.ceil(steps * left / self.full_steps)
        return steps

    def _planned_steps(self) -> int:
        return len(self.order) // self.batch_size if self.order is not None else self.full_steps

    def schedule_step(self, epoch: int, done: int) -> int:
        """The full-data step the schedule is at after ``done`` steps of ``epoch``."""
        planned = self._planned_steps()
        within = self.full_steps if planned == 0 else round(done * self.full_steps / planned)
        return min(self.total_steps, epoch * self.full_steps + within)

    def weights_of(self, index: torch.Tensor) -> torch.Tensor:
        return self.weights[index.cpu().long()]

    # -- scores ---------------------------------------------------------------------------------------------------
    def record(self, index: torch.Tensor, losses: torch.Tensor) -> None:
        """This process's per-sample losses of a micro-batch (unweighted, detached): the samples' new scores,
        written at the next :meth:`flush`."""
        if self.cfg.method == "infobatch":
            self._pending.append((index.detach().cpu().long(), losses.detach().float().cpu()))

    def flush(self) -> None:
        """Write the recorded losses as scores; under several processes, every rank's (all_gather)."""
        if self.cfg.method != "infobatch" or (not self._pending and not _distributed()):
            return
        if self._pending:
            index = torch.cat([i for i, _ in self._pending]).double()
            losses = torch.cat([v for _, v in self._pending]).double()
        else:
            index, losses = torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
        self._pending = []
        pairs = torch.stack([index, losses])
        if _distributed():
            sizes = [torch.zeros(1, dtype=torch.long) for _ in range(dist.get_world_size())]
            dist.all_gather(sizes, torch.tensor([pairs.shape[1]]))
            most = int(max(s.item() for s in sizes))
            padded = torch.full((2, most), -1.0, dtype=torch.float64)
            padded[:, : pairs.shape[1]] = pairs
            gathered = [torch.empty_like(padded) for _ in sizes]
            dist.all_gather(gathered, padded)
            pairs = torch.cat([g[:, : int(s.item())] for g, s in zip(gathered, sizes)], dim=1)
        if pairs.shape[1]:
            self.scores[pairs[0].long()] = pairs[1].float()

    def count_step(self, samples: int) -> None:
        self.sample_steps += samples

    # -- reports and checkpoints ----------------------------------------------------------------------------------
    def saving(self, epoch: int, done: int) -> float:
        """1 - sample-steps / the full-data run's at the same point of the schedule."""
        full = self.schedule_step(epoch, done) * self.batch_size
        return 1.0 - self.sample_steps / full if full else 0.0

    def summary(self) -> dict[str, Any]:
        full = self.total_steps * self.batch_size
        return {
            "method": self.cfg.method,
            "ratio": self.cfg.ratio,
            "delta": self.cfg.delta if self.cfg.method == "infobatch" else None,
            "kept_per_epoch": list(self.kept),
            "sample_steps": self.sample_steps,
            "full_sample_steps": full,
            "saving": round(1.0 - self.sample_steps / full, 4) if full else 0.0,
            "scored_samples": self.scored,
        }

    def state_dict(self) -> dict[str, Any]:
        self.flush()
        return {
            "method": self.cfg.method,
            "scores": self.scores.clone(),
            "weights": self.weights.clone(),
            "subset": self.subset.clone() if self.subset is not None else None,
            "order": self.order.clone() if self.order is not None else None,
            "order_epoch": self.order_epoch,
            "kept": list(self.kept),
            "sample_steps": self.sample_steps,
            "scored": self.scored,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("method") != self.cfg.method:
            raise ValueError(
                f"the checkpoint pruned its data with {state.get('method')!r}, this recipe with {self.cfg.method!r}"
            )
        if state["scores"].shape[0] != self.n:
            raise ValueError(f"the checkpoint scored {state['scores'].shape[0]} samples, this run has {self.n}")
        self.scores, self.weights = state["scores"].float().clone(), state["weights"].float().clone()
        self.subset = state["subset"].clone() if state.get("subset") is not None else None
        self.order = state["order"].clone() if state.get("order") is not None else None
        self.order_epoch = int(state["order_epoch"])
        self.kept = [int(k) for k in state["kept"]]
        self.sample_steps, self.scored = int(state["sample_steps"]), int(state["scored"])
        self._pending = []


def epoch_batches(order: torch.Tensor, steps: int, start_step: int, global_batch: int, grad_accum: int, rank: int,
                  world_size: int) -> list[list[int]]:  # fmt: skip
    """This rank's micro-batches of indices for steps ``start_step..steps-1`` of an epoch whose samples are
    ``order``: global batch ``k`` is ``order[k*B:(k+1)*B]``, cut into ``grad_accum`` micro-batches and each into
    ``world_size`` contiguous pieces (the zoo's :class:`~zoo.train.distributed.GlobalBatchSampler` convention)."""
    micro = global_batch // (grad_accum * world_size)
    out: list[list[int]] = []
    for k in range(start_step, steps):
        batch = order[k * global_batch : (k + 1) * global_batch]
        for m in range(grad_accum):
            part = batch[m * micro * world_size : (m + 1) * micro * world_size]
            out.append(part[rank * micro : (rank + 1) * micro].tolist())
    return out


def mean_weighted(per_sample: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``mean(loss * weight)`` (the authors' ``values.mul_(weights); values.mean()``)."""
    if weights is None:
        return per_sample.mean()
    return (per_sample * weights.to(per_sample.device, per_sample.dtype)).mean()
