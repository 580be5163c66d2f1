"""Worker for the two-process test in test_sparse.py.

Spawned children load the ``zoo/train/sparse`` package by path (it needs only torch), so each starts in a few
seconds instead of importing the whole zoo with timm.
"""

import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SPARSE = Path(__file__).resolve().parents[2] / "zoo" / "train" / "sparse"


def load_sparse():
    spec = importlib.util.spec_from_file_location(
        "zoo_train_sparse_worker", SPARSE / "__init__.py", submodule_search_locations=[str(SPARSE)]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its modules import each other relatively
    spec.loader.exec_module(mod)
    return mod


class SmallNet(nn.Module):
    def __init__(self, c=8, k=7, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 2, 2)
        self.lk1 = nn.Conv2d(c, c, (k, 5), padding=(k // 2, 2), groups=c, bias=False)
        self.lk2 = nn.Conv2d(c, c, (5, k), padding=(2, k // 2), groups=c, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, 4 * c, 1)
        self.head = nn.Linear(4 * c, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.bn(self.lk1(x) + self.lk2(x))
        x = F.gelu(self.pw(x))
        return self.head(x.mean((2, 3)))


def run(rank, world, init_file, out_file):
    """Every rank has its own seed (so its own sparse generator seed) and its own data; masks must agree."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    sparse_mod = load_sparse()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)
        model = SmallNet()
        ddp = nn.parallel.DistributedDataParallel(model)  # broadcasts rank 0's weights
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        cfg = sparse_mod.SparseConfig(sparsity=0.4, init="snip", prune_rate=0.5, update_frequency=2)
        sparse = sparse_mod.DynamicSparsity(ddp, opt, cfg, total_steps=8)
        g = torch.Generator().manual_seed(rank)
        x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        sparse.init_masks(batch=(x, y))
        init_masks = {n: m.clone() for n, m in sparse.masks.items()}
        for _ in range(8):
            F.cross_entropy(ddp(x), y).backward()
            opt.step()
            sparse.step()
            opt.zero_grad()
        names = sorted(sparse.masks)
        flat = torch.cat([sparse.masks[n].flatten().to(torch.uint8) for n in names])
        size = torch.tensor([flat.numel()])
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size)
        same = len({int(s) for s in sizes}) == 1
        if same:
            gathered = [torch.zeros_like(flat) for _ in range(world)]
            dist.all_gather(gathered, flat)
            same = all(torch.equal(gathered[0], t) for t in gathered)
        params = torch.cat([p.detach().flatten() for p in model.parameters()])
        all_params = [torch.zeros_like(params) for _ in range(world)]
        dist.all_gather(all_params, params)
        if rank == 0:
            moved = sum(int((init_masks[n] != sparse.masks[n]).sum()) for n in names if n in init_masks)
            torch.save(
                {
                    "same": same,
                    "weights_same": all(torch.equal(all_params[0], t) for t in all_params),
                    "updates": sparse.updates,
                    "moved": moved,
                    "density": sparse.density_report()["density"],
                },
                out_file,
            )
        # both ranks leave together, with the DDP reducer (which holds the group) gone before the group: a rank
        # tearing down while the other still uses the connection ends in std::terminate now and then
        dist.barrier()
        del sparse, opt, ddp
    finally:
        dist.destroy_process_group()
