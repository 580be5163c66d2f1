"""Worker for the two-process test in test_data_pruning.py.

Spawned children load ``zoo/train/data_pruning.py`` by path (it needs only torch and numpy), so each starts in a few
seconds instead of importing the whole zoo with timm.
"""

import importlib.util
from pathlib import Path

import torch

PRUNING_PY = Path(__file__).resolve().parents[2] / "zoo" / "train" / "data_pruning.py"
N, BATCH, EPOCHS = 96, 8, 6


def load_pruning():
    spec = importlib.util.spec_from_file_location("zoo_train_pruning_worker", PRUNING_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_loss(index: torch.Tensor, epoch: int) -> torch.Tensor:
    """A loss per sample that falls with the epochs, unevenly: a fixed function of (sample, epoch)."""
    return (torch.sin(index.double() * 1.7 + epoch) + 1.1).float() / (1 + epoch)


def simulate(mod, rank: int, world: int) -> dict:
    """Epochs of one rank: plan, read its pieces of the global batches, record their losses (gathered at the
    next plan); the orders, weights and final scores it saw."""
    cfg = mod.DataPruningConfig(method="infobatch", ratio=0.5, delta=0.875)
    steps = N // BATCH
    pruner = mod.Pruner(cfg, N, BATCH, steps, steps * EPOCHS, seed=5)
    orders, weights, mine = [], [], []
    for epoch in range(EPOCHS):
        order = pruner.plan(epoch)
        orders.append(order.clone())
        weights.append(pruner.weights.clone())
        batches = mod.epoch_batches(order, pruner.steps(epoch), 0, BATCH, 1, rank, world)
        for idx in batches:
            index = torch.tensor(idx)
            mine.append(index)
            pruner.record(index, fake_loss(index, epoch))
    state = pruner.state_dict()  # flushes: every rank's losses
    return {"orders": orders, "weights": weights, "scores": state["scores"], "mine": torch.cat(mine)}


def run(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    mod = load_pruning()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save(simulate(mod, rank, world), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
