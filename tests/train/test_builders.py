"""The training parts build on their own from a recipe: optimizer, schedule (with cooldown), EMA, sparsity."""

import pytest
import torch
from torch import nn

from zoo.train.builders import build_ema, build_optimizer, build_scheduler, build_sparsity, schedule_steps
from zoo.train.config import RecipeError, recipe_from_dict
from zoo.train.sparse import SparseConfig


def _recipe(**sections):
    return recipe_from_dict({"model": "poolformer_s12", **sections})


def _lrs(recipe, total, steps_per_epoch=10):
    model = nn.Linear(4, 4)
    optimizer = build_optimizer(model, recipe)
    scheduler, min_lr = build_scheduler(optimizer, recipe, total, steps_per_epoch)
    lrs = []
    for step in range(1, total + 1):
        scheduler.step_update(step)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs, min_lr


def test_cooldown_holds_the_minimum_learning_rate():
    recipe = _recipe(optim={"lr": 0.1}, sched={"warmup_steps": 5, "cooldown_epochs": 2, "min_lr": 0.001})
    assert schedule_steps(recipe, 100, 10) == (5, 20)
    lrs, min_lr = _lrs(recipe, 100)
    assert min_lr == 0.001
    assert lrs[:5] == sorted(lrs[:5])  # warm-up rises
    assert all(abs(lr - 0.001) < 1e-12 for lr in lrs[-20:])  # the last two epochs hold min_lr
    assert lrs[-22] > 0.001  # still decaying before the cooldown
    no_cooldown, _ = _lrs(_recipe(optim={"lr": 0.1}, sched={"warmup_steps": 5, "min_lr": 0.001}), 100)
    assert no_cooldown[-20] > 0.001  # without it the decay runs to the last step


def test_negative_cooldown_is_a_recipe_error():
    with pytest.raises(RecipeError, match="cooldown"):
        _recipe(sched={"cooldown_epochs": -1})


def test_optimizer_ema_and_sparsity_from_their_sections():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))
    recipe = _recipe(
        optim={"opt": "sgd", "lr": 0.5, "lr_base_size": 64},
        train={"batch_size": 128},
        ema={"enabled": True, "decay": 0.9},
        sparse={"sparsity": 0.5, "init": "uniform"},
    )
    optimizer = build_optimizer(model, recipe)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["lr"] == pytest.approx(1.0)
    assert build_ema(model, recipe).decay == 0.9
    assert isinstance(recipe.sparse, SparseConfig) and recipe.sparse.density == pytest.approx(0.5)
    sparsity = build_sparsity(model, optimizer, recipe, total_steps=10)
    assert sparsity is not None
    plain = _recipe()
    assert build_ema(model, plain) is None and build_sparsity(model, optimizer, plain, 10) is None


def test_sparse_section_is_checked_when_the_recipe_loads():
    with pytest.raises(RecipeError, match="sparse: .*did you mean 'sparsity'"):
        _recipe(sparse={"sparsty": 0.5})
    with pytest.raises(RecipeError, match="sparse: .*sparsity must be a number strictly between 0 and 1"):
        _recipe(sparse={"sparsity": 1.5})
    with pytest.raises(RecipeError, match="section 'sparse' must be a mapping"):
        _recipe(sparse=0.5)


@pytest.mark.parametrize(
    ("opt", "step"),
    [("adamw", "fused"), ("sgd", "fused"), ("rmsprop", "foreach"), ("lamb", "foreach"), ("adamp", None)],
)
def test_optimizer_takes_the_fastest_step_it_has(opt, step):
    """PyTorch's fused step where the optimizer has one, else its multi-tensor step, else its own; the update is
    the for-loop step's within float32 rounding."""
    from timm.optim import create_optimizer_v2

    torch.manual_seed(0)
    model, twin = nn.Linear(16, 8), nn.Linear(16, 8)
    twin.load_state_dict(model.state_dict())
    recipe = _recipe(optim={"opt": opt, "lr": 0.01})
    optimizer = build_optimizer(model, recipe)
    group = optimizer.param_groups[0]
    assert [k for k in ("fused", "foreach") if group.get(k)] == ([step] if step else [])
    o = recipe.optim
    loop = create_optimizer_v2(twin, opt=opt, lr=recipe.scaled_lr(), weight_decay=o.weight_decay, momentum=o.momentum,
                               **({"foreach": False} if step else {}))  # fmt: skip
    for _ in range(3):
        for p, q in zip(model.parameters(), twin.parameters()):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        optimizer.step()
        loop.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
