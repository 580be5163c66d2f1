"""Data pruning during training (zoo.train.data_pruning): InfoBatch against a rendition of the authors' sampler, seeded
decisions, the unbiased rescaling, annealing, two gloo processes, resume, the recipe's bounds and the loop."""

import itertools
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from zoo.bench.reference.infobatch import InfoBatchReference
from zoo.train.config import RecipeError, load_recipe
from zoo.train.data_pruning import (
    DataPruningConfig,
    Pruner,
    el2n,
    epoch_batches,
    infobatch_keep_ratio,
    mean_weighted,
    per_sample_loss,
)

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "configs" / "quickstart_digits.yaml"


def _pruner(n=120, batch=10, epochs=8, seed=0, **cfg):
    steps = n // batch
    return Pruner(DataPruningConfig(**cfg), n, batch, steps, steps * epochs, seed)


def _losses(index: torch.Tensor, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + epoch)
    table = torch.rand(1000, generator=g) * 3 / (1 + epoch)
    return table[index]


# ------------------------------------------------------------------------------------------------------------
# InfoBatch: the authors' decisions
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio,delta,epochs", [(0.5, 0.875, 8), (0.7, 0.875, 5), (0.95, 0.6, 6)])
def test_infobatch_kept_sets_and_weights_match_the_authors_sampler(ratio, delta, epochs):
    n = 150
    ours, ref = _pruner(n=n, batch=10, epochs=epochs, seed=0, ratio=ratio, delta=delta), None
    ref = InfoBatchReference(n, epochs, prune_ratio=ratio, delta=delta)
    pruned_any = False
    for epoch in range(epochs):
        theirs = ref.epoch()
        mine = ours.plan(epoch).tolist()
        assert mine == theirs, epoch
        annealing = epoch + 1 > epochs * delta
        if annealing:
            assert sorted(mine) == list(range(n)) and torch.all(ours.weights == 1)
        else:
            assert torch.equal(ours.weights, ref.weights), epoch
            pruned_any |= len(mine) < n
        index = torch.tensor(mine)
        for batch in index.split(10):  # scores written batch by batch, the weighted mean as theirs
            losses = _losses(batch, epoch)
            expected = ref.update(batch, losses.clone())
            if annealing and not torch.all(ref.weights == 1):  # theirs keep stale weights (epochs * delta not whole)
                assert not float(epochs * delta).is_integer()
                expected = losses.mean()
            assert mean_weighted(losses, ours.weights_of(batch)).item() == pytest.approx(expected.item(), rel=1e-6)
            ours.record(batch, losses)
        ours.flush()
        assert torch.equal(ours.scores, ref.scores)
    assert pruned_any
    assert ours.keep == ref.keep_ratio == infobatch_keep_ratio(ratio)


def test_the_first_epoch_trains_on_everything_and_decisions_follow_the_seed():
    a, b, c = (_pruner(seed=s, ratio=0.5) for s in (3, 3, 4))
    assert len(a.plan(0)) == a.n  # every score starts at 3: nothing is below the mean
    orders = []
    for p in (a, b, c):
        p.plan(0)
        index = torch.arange(p.n)
        p.record(index, _losses(index, 0))
        orders.append(p.plan(1))
    assert torch.equal(orders[0], orders[1]) and torch.equal(a.weights, b.weights)
    assert not torch.equal(orders[0], orders[2])
    assert len(orders[0]) < a.n


def test_annealing_trains_on_every_sample_unweighted():
    p = _pruner(n=100, batch=10, epochs=8, ratio=0.8, delta=0.5)
    for epoch in range(8):
        order = p.plan(epoch)
        if epoch in (1, 2, 3):
            assert len(order) < 100 and (p.weights > 1).any()
        if epoch >= 4:
            assert sorted(order.tolist()) == list(range(100)) and torch.all(p.weights == 1)
            assert p.steps(epoch) * p.batch_size == 100
        p.record(order, _losses(order, epoch))
    assert p.kept[4:] == [100] * 4


# ------------------------------------------------------------------------------------------------------------
# the rescaling keeps the expected gradient
# ------------------------------------------------------------------------------------------------------------


def test_rescaled_loss_keeps_the_full_gradient_in_expectation():
    """A linear model, 6 samples of which 4 are well learned and 2 of those kept (keep 0.5): the gradient of the
    weighted loss summed over the kept samples, averaged over every draw of 2 of the 4, is the full data's."""
    torch.manual_seed(0)
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    w = torch.randn(2, 3, dtype=torch.float64)
    loss_fn = LabelSmoothingCrossEntropy(0.1)

    def grad(indices, weights):
        wt = w.clone().requires_grad_(True)
        logits = x[indices] @ wt.T
        per = per_sample_loss(loss_fn, logits, y[indices])
        (mean_weighted(per, weights) * len(indices)).backward()  # the epoch's sum of weighted losses
        return wt.grad

    full = grad(list(range(6)), torch.ones(6, dtype=torch.float64))
    p = _pruner(n=6, batch=1, epochs=4, ratio=0.5)
    p.scores = torch.tensor([0.1, 0.2, 0.1, 0.2, 5.0, 6.0])  # 0-3 below the mean
    order = p.plan(1).tolist()
    chosen = [i for i in range(4) if i in order]
    assert len(chosen) == 2 and {4, 5} <= set(order)
    assert torch.allclose(p.weights, torch.tensor([2.0 if i in chosen else 1.0 for i in range(6)]))
    draws = []
    for kept in itertools.combinations(range(4), 2):
        idx = [*kept, 4, 5]
        draws.append(grad(idx, torch.tensor([1 / p.keep] * 2 + [1.0, 1.0], dtype=torch.float64)))
    assert torch.allclose(torch.stack(draws).mean(0), full, atol=1e-12)  # float64: 1e-12 is ~4500 steps of 2**-52


def test_per_sample_losses_average_to_the_task_losses():
    torch.manual_seed(1)
    logits, y = torch.randn(5, 4), torch.tensor([0, 3, 1, 2, 2])
    soft = F.softmax(torch.randn(5, 4), -1)
    for fn, target in (
        (torch.nn.CrossEntropyLoss(), y),
        (torch.nn.CrossEntropyLoss(label_smoothing=0.2), y),
        (LabelSmoothingCrossEntropy(0.1), y),
        (SoftTargetCrossEntropy(), soft),
    ):
        assert per_sample_loss(fn, logits, target).mean().item() == pytest.approx(fn(logits, target).item(), rel=1e-6)
    scores = el2n(torch.tensor([[10.0, -10.0], [0.0, 0.0]]), torch.tensor([0, 1]))
    assert scores[0].item() < 1e-6 and scores[1].item() == pytest.approx(math.sqrt(0.5))


# ------------------------------------------------------------------------------------------------------------
# static baselines, schedule, checkpoints
# ------------------------------------------------------------------------------------------------------------


def test_random_and_el2n_keep_fixed_subsets():
    r = _pruner(n=100, batch=10, epochs=4, method="random", ratio=0.3)
    sets = [set(r.plan(e).tolist()) for e in range(4)]
    assert all(s == sets[0] for s in sets) and len(sets[0]) == 70
    e = _pruner(n=100, batch=10, epochs=4, method="el2n", ratio=0.4, score_epochs=1)
    assert len(e.plan(0)) == 100
    scores = torch.arange(100, dtype=torch.float32)
    kept = e.plan(1, score=lambda: scores)
    assert sorted(kept.tolist()) == list(range(40, 100)) and e.scored == 100
    assert sorted(e.plan(2, score=None).tolist()) == list(range(40, 100))  # scored once


def test_schedule_follows_the_epoch_fraction_and_the_last_epoch_stops_with_the_full_run():
    p = _pruner(n=100, batch=10, epochs=3, method="random", ratio=0.5)
    p.total_steps = 25  # a language model's train.steps: two and a half epochs
    p.plan(0)
    assert p.steps(0) == 5 and p.schedule_step(0, 5) == 10 and p.schedule_step(0, 2) == 4
    p.plan(2)
    assert p.steps(2) == 3 and p.schedule_step(2, 3) == 25


def test_state_dict_round_trip_keeps_the_epoch_plan():
    p = _pruner(ratio=0.6)
    for epoch in range(2):
        order = p.plan(epoch)
        p.record(order[:50], _losses(order[:50], epoch))
    state = p.state_dict()
    q = _pruner(ratio=0.6)
    q.load_state_dict(state)
    assert torch.equal(q.plan(1), p.plan(1)) and torch.equal(q.scores, p.scores)  # the saved plan, not a new one
    assert torch.equal(q.plan(2), p.plan(2)) and torch.equal(q.weights, p.weights)
    with pytest.raises(ValueError, match="random"):
        _pruner(method="random").load_state_dict(state)


def test_epoch_batches_cut_global_batches_into_rank_pieces():
    order = torch.arange(40)
    one = epoch_batches(order, 2, 0, 16, 2, 0, 1)
    two = [epoch_batches(order, 2, 0, 16, 2, r, 2) for r in (0, 1)]
    assert one == [list(range(0, 8)), list(range(8, 16)), list(range(16, 24)), list(range(24, 32))]
    assert two[0][0] + two[1][0] == one[0] and two[0][3] + two[1][3] == one[3]
    assert epoch_batches(order, 2, 1, 16, 1, 0, 1) == [list(range(16, 32))]


# ------------------------------------------------------------------------------------------------------------
# several processes
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_gloo_processes_prune_the_same_samples(tmp_path, monkeypatch):
    import pruning_ddp_worker  # beside this module (pytest puts its folder on sys.path)
    import torch.multiprocessing as mp

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.spawn(pruning_ddp_worker.run, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    one = pruning_ddp_worker.simulate(pruning_ddp_worker.load_pruning(), 0, 1)
    for a, b, c in zip(r0["orders"], r1["orders"], one["orders"]):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert any(len(o) < pruning_ddp_worker.N for o in r0["orders"])
    assert all(torch.equal(a, b) for a, b in zip(r0["weights"], r1["weights"]))
    assert torch.equal(r0["scores"], r1["scores"]) and torch.equal(r0["scores"], one["scores"])
    piece = pruning_ddp_worker.BATCH // 2  # each rank its own half of a global batch
    assert torch.equal(torch.cat([r0["mine"][:piece], r1["mine"][:piece]]), one["mine"][: 2 * piece])


# ------------------------------------------------------------------------------------------------------------
# the recipe's bounds
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,message",
    [
        (["--data_pruning.ratio", "1"], "ratio must be in [0, 1)"),
        (["--data_pruning.ratio", "-0.1"], "ratio must be in [0, 1)"),
        (["--data_pruning.delta", "0"], "delta must be in (0, 1]"),
        (["--data_pruning.delta", "1.5"], "delta must be in (0, 1]"),
        (
            ["--data_pruning.method", "el2n", "--data_pruning.score_epochs", "8", "--train.epochs", "8"],
            "leaves none of train.epochs 8 to prune",
        ),
        (["--data_pruning.method", "forget"], "method must be one of infobatch, random, el2n"),
        (["--data_pruning.method", "infobatch", "--data.name", "hf_stream", "--data.path", "x/y"], "unknown length"),
        (["--data_pruning.rate", "0.5"], "unknown override --data_pruning.rate"),
    ],
)
def test_bad_settings_get_one_line_and_exit_2(override, message, tmp_path, capsys):
    from zoo.train.cli import main

    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(str(DIGITS), override)
    assert main(["--config", str(DIGITS), "--output_dir", str(tmp_path / "r"), *override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data_pruning" in err or "unknown length" in err


def test_a_streamed_training_set_is_refused(tmp_path, capsys):
    from zoo.train.cli import main

    shards = tmp_path / "shards"
    shards.mkdir()
    args = ["--config", str(DIGITS), "--output_dir", str(tmp_path / "r"), "--data.name", "wds", "--data.path",
            "https://example.invalid/shard-{000..001}.tar", "--data_pruning.method", "random"]  # fmt: skip
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "data_pruning" in err[0], err


# ------------------------------------------------------------------------------------------------------------
# train.py: a pruned run, and kill-and-resume
# ------------------------------------------------------------------------------------------------------------

TINY = [
    "--model_kwargs.depths", "[1,1,1,1]", "--model_kwargs.dims", "[8,16,16,32]", "--data.image_size", "32",
    "--train.epochs", "4", "--train.batch_size", "32", "--train.threads", "1", "--export.enabled", "false",
    "--checkpoint.every_steps", "7", "--sched.warmup_epochs", "0", "--data.train_split", "train",
    "--data_pruning.method", "infobatch", "--data_pruning.ratio", "0.7", "--data_pruning.delta", "0.75",
]  # fmt: skip


def _tiny(out: Path, *extra):
    return load_recipe(str(DIGITS), [*TINY, "--output_dir", str(out), *extra])


@pytest.mark.slow
def test_pruned_run_logs_and_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from zoo.train import loop

    ref = loop.train(_tiny(tmp_path / "ref"), progress=False)
    pr = ref["metrics"]["data_pruning"]
    kept = pr["kept_per_epoch"]
    assert kept[0] == kept[3] == 1437 and min(kept[1:3]) < 1437  # epoch 0 unscored, epoch 3 anneals
    assert 0 < pr["saving"] < 1 and pr["sample_steps"] == ref["steps"] * 32
    rows = (tmp_path / "ref" / "log.csv").read_text().splitlines()
    assert rows[0].endswith("kept,saving") and sum(",prune," in r for r in rows) == 4

    real = loop._Run._after_step
    calls = {"n": 0}

    def dying(self, k, mean_loss):
        real(self, k, mean_loss)
        calls["n"] += 1
        if self.global_step == 56:  # after the checkpoint at step 56, in the second (pruned) epoch
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(loop._Run, "_after_step", dying)
    with pytest.raises(KeyboardInterrupt):
        loop.train(_tiny(tmp_path / "run"), progress=False)
    monkeypatch.setattr(loop._Run, "_after_step", real)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 56 and ckpt["data_position"]["epoch"] == 1 and ckpt["data_position"]["step_in_epoch"] > 0
    assert ckpt["data_pruning"]["order_epoch"] == 1 and len(ckpt["data_pruning"]["order"]) < 1437
    res = loop.train(_tiny(tmp_path / "run"), resume="auto", progress=False)
    assert res["steps"] == ref["steps"] and res["metrics"]["data_pruning"] == pr
    a, b = (
        load_file(str(tmp_path / "ref" / "model.safetensors")),
        load_file(str(tmp_path / "run" / "model.safetensors")),
    )
    for k in a:
        assert torch.equal(a[k], b[k]), k
    again = loop.train(_tiny(tmp_path / "run"), resume="auto", progress=False)
    assert again.get("complete") is True
    assert np.isfinite(res["metrics"]["top1"])


@pytest.mark.parametrize("data, channels", [("digits", 3), ("mnist", 1), ("fashion_mnist", 1), ("cifar10", 3)])
def test_bench_recipes_build_for_the_datas_channels(data, channels):
    """zoo bench data-pruning's image recipes give each model the channels its data loads with (digits load as RGB
    scans: its own defaults once failed at the first batch)."""
    import argparse

    from zoo.bench import add_arguments
    from zoo.bench.data_pruning import _image_recipe

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["data-pruning", "--data", data])
    for model in ("convnet_d3", "quickstart"):
        recipe = _image_recipe(args, model)
        assert recipe["model_kwargs"].get("in_chans", 3) == channels, (model, recipe["model_kwargs"])


@pytest.mark.parametrize(
    "resumed, key",
    [
        (["--data_pruning.ratio", "0.5"], "data_pruning.ratio"),
        (["--data_pruning.method", "random"], "data_pruning.method"),
        ([], "data_pruning"),  # the section removed
    ],
)
def test_resume_refuses_another_data_pruning_section(tmp_path, resumed, key):
    """A resumed run must train on the samples its checkpoint's run chose: a data_pruning section changed, added or
    removed since is refused naming the key (as the model and the data are)."""
    from zoo.train.checkpoint import FORMAT, _atomic_save, state_digest
    from zoo.train.config import recipe_to_dict
    from zoo.train.run_folder import read_checkpoint

    saved = _tiny(tmp_path / "run")
    state = {"format": FORMAT, "recipe": recipe_to_dict(saved), "step": 7}
    state["sha256"] = state_digest(state)
    path = tmp_path / "last.pt"
    _atomic_save(state, path)
    assert read_checkpoint(saved, str(path), tmp_path, main=True)["step"] == 7  # the same recipe resumes
    if resumed:
        other = _tiny(tmp_path / "run", *resumed)
    else:  # TINY without its data_pruning arguments (the last six)
        assert TINY[-6] == "--data_pruning.method"
        other = load_recipe(str(DIGITS), [*TINY[:-6], "--output_dir", str(tmp_path / "run")])
    with pytest.raises(RecipeError, match=re.escape(key)):
        read_checkpoint(other, str(path), tmp_path, main=True)


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--ratio", "2"], "data_pruning.ratio"),
        (["--delta", "1.5"], "data_pruning.delta"),
        (["--methods", "el2n", "--score-epochs", "8"], "score_epochs"),
    ],
)
def test_bench_settings_are_refused_before_the_first_run(flags, fragment, monkeypatch, capsys):
    """zoo bench data-pruning reads every run's recipe before training: a bad --ratio once failed after the
    full-data runs."""
    from zoo.bench import data_pruning
    from zoo.cli import main

    def no_training(*args, **kwargs):
        raise AssertionError("a run trained before the settings were checked")

    monkeypatch.setattr(data_pruning, "train", no_training)
    assert main(["bench", "data-pruning", "--seeds", "0", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo bench: error:") and fragment in err and len(err.splitlines()) == 1, err


def test_bench_recipes_are_read_from_configs_never_beside_the_package(tmp_path):
    """The quickstart's recipe comes from --configs (default ./configs, a path like any other), not from a folder
    found relative to zoo's own files: an installed zoo has none there. A folder without it is one clear line."""
    import argparse

    from zoo.bench import add_arguments
    from zoo.bench.data_pruning import _image_recipe

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["data-pruning", "--models", "quickstart", "--configs", str(tmp_path)])
    with pytest.raises(ValueError, match=r"quickstart_digits\.yaml, which is not there: pass --configs DIR"):
        _image_recipe(args, "quickstart")
    (tmp_path / "quickstart_digits.yaml").write_text(DIGITS.read_text())
    assert _image_recipe(args, "quickstart")["model_kwargs"]["depths"] == [2, 2, 4, 2]
