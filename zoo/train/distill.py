"""Knowledge distillation: a frozen teacher's logits as a second training target (the recipe's ``distill:``).

Losses, per sample (per token for language models, over the tokens the mask keeps):

* ``kind: soft`` (Hinton et al., 2015): ``KL(softmax(t / T) || softmax(s / T)) * T**2``, summed over the classes
  (the vocabulary) and averaged over samples (tokens); the ``T**2`` keeps the gradients' scale as T changes;
* ``kind: hard`` (DeiT's hard distillation): cross-entropy of the student against the teacher's argmax.

The training loss is ``(1 - alpha) * label_loss + alpha * distillation_loss``. A student with a distillation
token (DeiT's interface: ``set_distilled_training(True)``, after which a training forward returns
``(class_logits, distillation_logits)``) takes its label loss on the class head and the distillation loss on the
distillation head; every other student (SReT's ``_distill`` variants included: the authors' distilled SReT has
the plain architecture, one head) takes both on its one output.

The teacher stays in eval mode with ``requires_grad`` off and runs under ``torch.no_grad()``: it is never part of
the student (not in its DDP/FSDP wrapper, its optimizer, its EMA or its checkpoints; a resumed run builds it
again). With ``cache_logits`` its logits are computed once per training sample before the first step (on every
process, in a fixed order, so a resumed run has the same targets) and looked up by sample index; that is only
right when a sample gives the same input every epoch, so recipes with random augmentation are refused.

This module needs torch alone (two-process tests load it by path); :func:`zoo.train.builders.build_teacher` builds
the teacher, :mod:`zoo.train.loop` drives it.
"""

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

__all__ = [
    "DISTILL_KINDS",
    "DistillConfig",
    "DistillError",
    "Distiller",
    "IndexedDataset",
    "hard_distill_loss",
    "soft_distill_loss",
]

DISTILL_KINDS = ("soft", "hard")

# teacher logits held in memory by cache_logits, at most (a cache beyond it is refused before it is filled)
CACHE_LIMIT_BYTES = 2 * 1024**3


class DistillError(ValueError):
    """A distillation setting that cannot work (the teacher, its outputs, the cache); the message says why."""


@dataclass
class DistillConfig:
    teacher: str = ""  # a registered name (pretrained weights), a model or run folder, or hf-hub:ORG/NAME
    teacher_weights: str | None = None  # a weights file for a registered teacher name (must fit it exactly)
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)  # the teacher's model arguments
    alpha: float = 0.5  # weight of the distillation loss; 1 - alpha weighs the label loss
    temperature: float = 1.0  # soft targets' temperature T (kind soft)
    kind: str = "soft"  # soft (KL at temperature T, times T^2) | hard (cross-entropy on the teacher's argmax)
    cache_logits: bool = False  # teacher logits computed once per sample (no random augmentation)

    def check(self) -> None:
        """Values out of their bounds (ValueError, naming the key and what to do)."""
        if not self.teacher:
            raise ValueError(
                "distill.teacher is not set: name the teacher (a registered model, a model or run folder, or "
                "hf-hub:ORG/NAME), e.g. --distill.teacher runs/quickstart_digits"
            )
        if self.kind not in DISTILL_KINDS:
            raise ValueError(f"distill.kind must be soft or hard, got {self.kind!r}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"distill.alpha must be in [0, 1] (the distillation loss's weight), got {self.alpha!r}")
        if not self.temperature > 0:
            raise ValueError(f"distill.temperature must be greater than 0, got {self.temperature!r}")
        if self.kind == "hard" and self.temperature != 1.0:
            raise ValueError(
                "distill.temperature applies to kind soft; hard distillation takes the teacher's argmax "
                "(leave the temperature at 1)"
            )


# --------------------------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------------------------


def _rows(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None):
    if student.shape != teacher.shape:
        raise DistillError(
            f"the teacher's logits have shape {tuple(teacher.shape)}, the student's {tuple(student.shape)}: "
            "the teacher must predict the same classes (the same vocabulary) as the student"
        )
    n = student.shape[-1]
    s, t = student.float().reshape(-1, n), teacher.float().reshape(-1, n)
    if mask is not None:
        keep = mask.reshape(-1).to(torch.bool)
        s, t = s[keep], t[keep]
    return s, t


def _mean(per_row: torch.Tensor, like: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    if reduction == "none":  # one value per row (per sample; per token for language models)
        return per_row
    return per_row.mean() if per_row.numel() else like.float().sum() * 0.0  # every token masked: no signal


def soft_distill_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """``KL(softmax(teacher / T) || softmax(student / T)) * T**2``, summed over the last dimension and averaged over
    the rows (samples, or the tokens ``mask`` keeps)."""
    s, t = _rows(student, teacher, mask)
    log_s = F.log_softmax(s / temperature, dim=-1)
    log_t = F.log_softmax(t / temperature, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    return _mean(kl, student, reduction) * temperature**2


def hard_distill_loss(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of ``student`` against ``teacher.argmax(-1)`` (DeiT's hard distillation), averaged over the
    rows ``mask`` keeps."""
    s, t = _rows(student, teacher, mask)
    return _mean(F.cross_entropy(s, t.argmax(-1), reduction="none"), student, reduction)


def output_logits(out: Any) -> torch.Tensor:
    """Logits from a model's output: a tensor, an object or dict with ``logits``, or a tuple (logits first)."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, dict) and "logits" in out:
        return out["logits"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise DistillError(f"cannot find logits in the teacher's output of type {type(out).__name__}")


def split_heads(out: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(class logits, distillation logits) of a student's training output: DeiT-style ``(cls, dist)`` pairs, else
    the one output twice."""
    if isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(o, torch.Tensor) for o in out):
        return out[0], out[1]
    logits = output_logits(out)
    return logits, logits


class IndexedDataset(Dataset):
    """``(item, index)`` for every item of ``base``: cached teacher logits are looked up by sample index."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i], i


# --------------------------------------------------------------------------------------------------------------
# the distiller: a frozen teacher, its loss, its cache
# --------------------------------------------------------------------------------------------------------------


class Distiller:
    """A frozen ``teacher`` and the ``distill:`` settings: the teacher's logits for a batch and the combined loss.

    Not an ``nn.Module`` on purpose: nothing that walks the student's modules (``train()``, DDP, the optimizer,
    EMA, checkpoints) reaches the teacher.
    """

    def __init__(self, teacher: nn.Module, cfg: DistillConfig):
        self.teacher = teacher.eval().requires_grad_(False)
        self.cfg = cfg
        self.cache: torch.Tensor | None = None

    # -- the teacher's logits ----------------------------------------------------------------------------------------
    def teacher_logits(self, inputs: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """The teacher's logits for ``inputs`` (cached ones by sample ``index`` when the cache is filled)."""
        if self.cache is not None:
            if index is None:
                raise DistillError("cached teacher logits are looked up by sample index, and the batch has none")
            return self.cache[index.cpu()].to(inputs.device)
        if self.teacher.training:  # whoever switched it, the teacher predicts in eval mode
            self.teacher.eval()
        with torch.no_grad():
            return output_logits(self.teacher(inputs)).detach()

    def wrap_dataset(self, dataset: Dataset) -> Dataset:
        """The training set as the loader should read it: with sample indices when the logits are cached."""
        return IndexedDataset(dataset) if self.cfg.cache_logits else dataset

    def split_batch(self, batch) -> tuple[Any, torch.Tensor | None]:
        """(the task's batch, sample indices or None) of a batch read from :meth:`wrap_dataset`'s dataset."""
        if self.cfg.cache_logits:
            items, index = batch
            return items, index
        return batch, None

    def fill_cache(
        self,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
        total: int,
        amp_ctx: Callable[[], Any] = contextlib.nullcontext,
    ) -> None:
        """Compute and keep the teacher's logits of every training sample: ``batches`` yields ``(teacher inputs,
        sample indices)`` covering ``total`` samples."""
        self.cache = None
        cache = None
        for inputs, index in batches:
            with amp_ctx():
                logits = self.teacher_logits(inputs).float().cpu()
            if cache is None:
                shape = (total, *logits.shape[1:])
                size = torch.Size(shape).numel() * 4
                if size > CACHE_LIMIT_BYTES:
                    raise DistillError(
                        f"distill.cache_logits would hold {size / 1024**3:.1f} GiB of teacher logits ({total} samples "
                        f"of {tuple(logits.shape[1:])}), more than {CACHE_LIMIT_BYTES // 1024**3} GiB: set "
                        "distill.cache_logits false (the teacher then runs at every step)"
                    )
                cache = torch.full(shape, float("nan"))
            cache[index] = logits
        if cache is None or torch.isnan(cache).any():
            raise DistillError("the teacher-logit cache did not cover every training sample")
        self.cache = cache

    # -- the loss ----------------------------------------------------------------------------------------------------
    def distill_loss(
        self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None, reduction: str = "mean"
    ) -> torch.Tensor:
        if self.cfg.kind == "hard":
            return hard_distill_loss(student, teacher, mask, reduction)
        return soft_distill_loss(student, teacher, self.cfg.temperature, mask, reduction)

    def combine(self, label_loss: torch.Tensor, distill_loss: torch.Tensor) -> torch.Tensor:
        a = self.cfg.alpha
        return (1.0 - a) * label_loss + a * distill_loss

    def classification_loss(
        self,
        out: Any,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        label_loss_fn: Callable,
        index: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """An image classifier's loss: the label loss on the class head, the distillation loss on the distillation
        head (the same head without a distillation token). ``reduction="none"``: one loss per sample
        (``label_loss_fn`` then gives one per sample too)."""
        cls_logits, dist_logits = split_heads(out)
        teacher = self.teacher_logits(inputs, index)
        distill = self.distill_loss(dist_logits, teacher, reduction=reduction)
        return self.combine(label_loss_fn(cls_logits, targets), distill)

    def lm_loss(
        self,
        logits: torch.Tensor,
        inputs: torch.Tensor,
        label_loss: torch.Tensor,
        mask: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """A language model's loss: token-level distillation on the positions ``mask`` keeps (padding out).
        ``reduction="none"``: one loss per sequence (``label_loss`` is one per sequence too), the distillation
        loss averaged over the sequence's kept positions."""
        teacher = self.teacher_logits(inputs, index)
        if reduction == "none":
            per_token = self.distill_loss(logits, teacher, reduction="none").reshape(logits.shape[0], -1)
            keep = mask.reshape(per_token.shape).to(per_token.dtype) if mask is not None else torch.ones_like(per_token)
            per_row = (per_token * keep).sum(1) / keep.sum(1).clamp_min(1.0)
            return self.combine(label_loss, per_row)
        return self.combine(label_loss, self.distill_loss(logits, teacher, mask))
