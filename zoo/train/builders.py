"""The pieces of a training run, each built from its recipe section: usable on their own, outside ``train()``.

    optimizer = build_optimizer(model, recipe)
    scheduler, min_lr = build_scheduler(optimizer, recipe, total_steps, steps_per_epoch)
    ema = build_ema(model, recipe)
    sparsity = build_sparsity(model, optimizer, recipe, total_steps)

The schedule counts optimizer steps (timm's schedulers stepped per update): warm-up, the decay, then the
cooldown, which holds the minimum learning rate (timm's ``cooldown_epochs``).
"""

from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn

from .config import Recipe
from .sparse import DynamicSparsity

__all__ = ["build_ema", "build_optimizer", "build_scheduler", "build_sparsity", "schedule_steps"]


def build_optimizer(model: nn.Module, recipe: Recipe):
    """timm's ``create_optimizer_v2`` with the ``optim:`` section, at the batch-scaled learning rate."""
    o = recipe.optim
    kwargs = {}
    if o.betas is not None:
        kwargs["betas"] = tuple(o.betas)
    if o.eps is not None:
        kwargs["eps"] = o.eps
    return create_optimizer_v2(
        model,
        opt=o.opt,
        lr=recipe.scaled_lr(),
        weight_decay=o.weight_decay,
        momentum=o.momentum,
        layer_decay=o.layer_decay,
        **kwargs,
    )


def schedule_steps(recipe: Recipe, total_steps: int, steps_per_epoch: int) -> tuple[int, int]:
    """(warm-up steps, cooldown steps) of the ``sched:`` section, in optimizer steps."""
    s = recipe.sched
    warmup = s.warmup_steps if s.warmup_steps is not None else int(round(s.warmup_epochs * steps_per_epoch))
    cooldown = s.cooldown_steps if s.cooldown_steps is not None else int(round(s.cooldown_epochs * steps_per_epoch))
    return warmup, min(cooldown, max(total_steps - warmup - 1, 0))


def build_scheduler(optimizer, recipe: Recipe, total_steps: int, steps_per_epoch: int):
    """(scheduler, min_lr): warm-up, decay over the steps between warm-up and cooldown, then ``min_lr`` held."""
    s = recipe.sched
    lr = recipe.scaled_lr()
    warmup, cooldown = schedule_steps(recipe, total_steps, steps_per_epoch)
    min_lr = s.min_lr_ratio * lr if s.min_lr_ratio is not None else s.min_lr
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=s.sched,
        num_epochs=max(total_steps - warmup - cooldown, 1),
        warmup_epochs=warmup,
        warmup_lr=s.warmup_lr,
        min_lr=min_lr,
        warmup_prefix=True,
        step_on_epochs=False,
        updates_per_epoch=1,
    )
    return scheduler, min_lr


def build_ema(model: nn.Module, recipe: Recipe) -> ModelEmaV3 | None:
    """timm's ``ModelEmaV3`` of ``model`` when ``ema.enabled``."""
    e = recipe.ema
    if not e.enabled:
        return None
    return ModelEmaV3(model, decay=e.decay, use_warmup=e.warmup, update_after_step=e.update_after_step)


def build_sparsity(model: nn.Module, optimizer, recipe: Recipe, total_steps: int) -> DynamicSparsity | None:
    """Dynamic sparse training of ``model`` when the recipe has a ``sparse:`` section (masks not yet set)."""
    if recipe.sparse is None:
        return None
    return DynamicSparsity(model, optimizer, recipe.sparse, total_steps)
