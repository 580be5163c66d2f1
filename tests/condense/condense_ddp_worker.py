"""Worker for the two-process tests in test_condense_distributed.py: every rank runs the same condensation jobs in
one gloo group; rank 0 saves what they made (safetensors), and every rank reports what it wrote and trained."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from zoo.condense import core
from zoo.condense.core import ImageMethod, RealData, _fingerprint, condense, load_real, run_method
from zoo.condense.teacher import train_teacher

MTT = dict(num_experts=3, train_epochs=2, expert_epochs=1, max_start_epoch=2, syn_steps=2, expert_batch=25)


def real() -> RealData:
    """Digits at 16 px, 10 images per class."""
    full = load_real("digits", image_size=16)
    idx = torch.cat([i[:10] for i in full.by_class])
    images, labels = full.images[idx].contiguous(), full.labels[idx]
    source = dict(full.source, fingerprint=_fingerprint(images, labels), size=len(idx))
    return RealData(images, labels, full.class_names, source, full.preprocessing)


def teacher(data: RealData, weights: str | None = None, epochs: int = 1) -> torch.nn.Module:
    """A small BatchNorm ConvNet-3; trained for ``epochs``, or with ``weights`` loaded into the same network."""
    if weights is None:
        return train_teacher(data, epochs=epochs, seed=0, width=8, lr=0.05)
    net = train_teacher(data, epochs=0, seed=0, width=8)
    net.load_state_dict(load_file(weights))
    return net


class ClassMeans(ImageMethod):
    """A toy sharding method: pull each class's mean image towards a target drawn afresh for every class at every
    step (SGD with momentum, so the optimiser state must reach the checkpoint whole)."""

    name = "class_means"
    shards = "classes"
    defaults = {"iterations": 4, "lr_img": 0.5, "momentum": 0.9}

    def setup(self):
        self.init_images()
        self.opt = torch.optim.SGD([self.images], lr=self.options["lr_img"], momentum=self.options["momentum"])

    def step(self, it):
        loss = self.images.new_zeros(())
        for c in range(self.real.num_classes):
            target = torch.randn(self.real.shape, generator=self.generator)  # every class draws, owned or not
            if c in self.classes:
                loss = loss + (self.images[c * self.ipc : (c + 1) * self.ipc].mean(0) - target).pow(2).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item() / self.real.num_classes


def class_means(data: RealData, iterations: int, state_dir=None, resume=False):
    m = ClassMeans(data, 2, {"iterations": iterations}, 0, torch.device("cpu"))
    losses = run_method(m, state_dir, save_every=1, resume=resume, progress=False)
    return m, losses


def jobs(data: RealData, net, folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every job of the test, as one process or as each process of a group runs it."""
    out: dict[str, dict[str, torch.Tensor]] = {}

    def keep(name, s):
        out[name] = {"images": s.images, "labels": s.labels}
        if s.soft_labels is not None:
            out[name]["soft"] = s.soft_labels

    keep("rded", condense(data, "rded", ipc=2, teacher=net, n_candidates=6, n_crops=2, soft_labels=True,
                          progress=False, out=folder / "rded"))  # fmt: skip
    keep("dm", condense(data, "dm", ipc=2, iterations=3, batch_real=8, progress=False))
    keep("dsa", condense(data, "dsa", ipc=2, iterations=2, batch_real=8, inner_loop=1, progress=False))
    keep("sre2l", condense(data, "sre2l", ipc=2, teacher=net, iterations=3, batch=5, progress=False))
    keep("mtt", condense(data, "mtt", ipc=1, iterations=2, progress=False, buffer=str(folder / "experts"), **MTT))
    keep("random", condense(data, "random", ipc=2, progress=False))
    m, losses = class_means(data, 4)
    out["means"] = {"images": m.images.detach(), "losses": torch.tensor(losses, dtype=torch.float64)}
    class_means(data, 2, folder / "means_state")  # "killed" after 2 of 4 iterations
    m, _ = class_means(data, 4, folder / "means_state", resume=True)
    out["means_resumed"] = {"images": m.images.detach()}
    return out


def run(rank, world, init_file, folder):
    import torch.distributed as dist

    torch.set_num_threads(1)
    folder = Path(folder)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    writes = []
    original = core.SyntheticSet._write
    core.SyntheticSet._write = lambda self, tmp: (writes.append(str(tmp)), original(self, tmp))[1]
    try:
        data = real()
        results = jobs(data, teacher(data, str(folder / "teacher.safetensors")), folder / "two")
        if rank == 0:
            for name, tensors in results.items():
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / f"{name}.safetensors"))
        report = {"rank": rank, "writes": len(writes), "classes": ClassMeans(data, 2, {}, 0, "cpu").classes}
        (folder / f"rank{rank}.json").write_text(json.dumps(report))
        dist.barrier()
    finally:
        core.SyntheticSet._write = original
        dist.destroy_process_group()
