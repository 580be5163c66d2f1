"""Worker for the two-process test in test_distill.py.

Spawned children load ``zoo/train/distill.py`` by path (it needs only torch), so each starts in a few seconds
instead of importing the whole zoo with timm.
"""

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DISTILL_PY = Path(__file__).resolve().parents[2] / "zoo" / "train" / "distill.py"


def load_distill():
    spec = importlib.util.spec_from_file_location("zoo_train_distill_worker", DISTILL_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def nets(seed: int):
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(12, 32), nn.Dropout(0.5), nn.GELU(), nn.Linear(32, 5))
    student = nn.Sequential(nn.Linear(12, 8), nn.GELU(), nn.Linear(8, 5))
    return teacher, student


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 12, generator=g), torch.randint(0, 5, (16,), generator=g)


def train_steps(distiller, student, x, y, steps: int, params=None):
    opt = torch.optim.SGD(params if params is not None else student.parameters(), lr=0.5)
    for _ in range(steps):
        loss = distiller.classification_loss(student(x), x, y, F.cross_entropy)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return loss.detach()


def run(rank, world, init_file, out_file):
    """Each rank takes its half of the batch; the teacher is a plain replica per rank, outside DDP."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    mod = load_distill()
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        teacher, student = nets(0)
        before = [p.detach().clone() for p in teacher.parameters()]
        ddp = nn.parallel.DistributedDataParallel(student)
        distiller = mod.Distiller(teacher, mod.DistillConfig(teacher="t", alpha=0.7, temperature=2.0))
        teacher.train()  # whoever switches it, the teacher predicts in eval mode (dropout off)
        x, y = data()
        half = x.shape[0] // world
        train_steps(distiller, ddp, x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half], 5)
        params = torch.cat([p.detach().flatten() for p in student.parameters()])
        gathered = [torch.zeros_like(params) for _ in range(world)]
        dist.all_gather(gathered, params)
        if rank == 0:
            torch.save(
                {
                    "student": params,
                    "same": all(torch.equal(gathered[0], t) for t in gathered),
                    "teacher_unchanged": all(torch.equal(a, b) for a, b in zip(before, teacher.parameters())),
                    "teacher_grads": [p.grad is not None for p in teacher.parameters()],
                    "ddp_params": sum(p.numel() for p in ddp.parameters()),
                },
                out_file,
            )
        dist.barrier()
        del ddp
    finally:
        dist.destroy_process_group()
