"""MTT: matching training trajectories (Cazenavette, Wang, Torralba, Efros, Zhu, "Dataset Distillation by
Matching Training Trajectories", CVPR 2022; code: GeorgeCazenavette/mtt-distillation).

Two stages.

1. **Experts** (the authors' ``buffer.py``). ``num_experts`` networks (ConvNet-3 by default) train on the real data
   with plain SGD: lr ``expert_lr`` 0.01, no momentum, no weight decay, no lr decay, batch 256, ``train_epochs`` 50
   epochs, DSA on every batch (one op per batch, its values drawn per image). Their flattened parameters are
   recorded at initialisation and after every epoch (``train_epochs + 1`` rows per expert). :func:`expert_epoch`
   is ``buffer.py``'s epoch draw for draw: the loader's base seed, the sampler's seed of a fresh generator for the
   permutation, each batch's augmentation, and the test pass's base seed, all from the expert's generator (theirs:
   torch's global RNG), so that one seed gives the authors' trajectory (``tests/condense/test_condense_parity_mtt.py``).
   The trajectories are kept in an *expert buffer*: a folder named after a digest of everything that shapes them
   (the data's fingerprint, the image shape, the model, the expert settings, ``expert_seed``) holding one
   safetensors file per expert. It lives under ``buffer`` when that option names a folder, else in the run's state
   folder (``OUT/.condense_state/experts``; kept by ``--resume``, cleared by a fresh run into that folder), else
   (no ``out``) only in memory. A buffer already there is reused and extended when more experts are asked for:
   expert ``i`` is seeded by ``(expert_seed, i)`` alone, so MTT and factorization, every ``ipc`` and every seed share
   one buffer.

2. **Distillation** (one iteration of ``distill.py``). Each iteration picks a random expert and a random start epoch
   ``t < max_start_epoch``. A student starts at the expert's parameters ``theta_t`` and takes ``syn_steps`` SGD
   steps on the synthetic set with a learnable learning rate ``alpha`` (initialised to ``lr_teacher``): each step
   one minibatch of ``batch_syn`` images (all of them by default; the last unused chunk of a random permutation, a
   new permutation when they are used up, as the authors' ``indices_chunks.pop()``), each image under its own DSA
   draw. The loss is the normalised distance to where the expert got ``expert_epochs`` epochs later::

       L = ||theta_student - theta_{t+M}||^2 / ||theta_t - theta_{t+M}||^2

   and is backpropagated through every unrolled step (second-order: each step's gradient is itself
   differentiated) into the images (SGD, ``lr_img``, momentum 0.5) and ``alpha`` (SGD, ``lr_lr``, momentum 0.5).
   Images start from random real ones. The learned ``alpha`` is what the set should be evaluated with: the result's
   meta carries it as ``eval_lr`` (and ``syn_lr``).

The unrolled steps run in functional form: the student is one flat parameter vector, each step calls the network
with ``torch.func.functional_call`` on views of it (the authors' ``ReparamModule``, same parameter order), and only
the newest vector is held by Python; autograd keeps what the backward pass through the steps needs (memory still
grows with ``syn_steps``, as in the paper). Exact: the loss, the image and lr gradients of one step and of a short
trajectory, and an expert epoch equal the authors' (``zoo/bench/reference/mtt.py``) to float64 rounding.

**Defaults per dataset and ipc** (:func:`published_settings`), from the hyper-parameter table of the authors' README
(ConvNet-3, 5,000 iterations; the zoo does not ZCA-whiten, so rows marked ZCA there run on per-channel normalised
images here). An option given by the user always wins; ``ipc`` takes the nearest published row (log scale: 1 for
ipc <= 3, 10 for ipc <= 22, else 50):

=========================  ===  =========  =============  ===============  ======  =====  ==========  =========
dataset                    ipc  syn_steps  expert_epochs  max_start_epoch  lr_img  lr_lr  lr_teacher  batch_syn
=========================  ===  =========  =============  ===============  ======  =====  ==========  =========
cifar10                    1    50         2              2                100     1e-7   0.01        all
cifar10                    10   30         2              20               100     1e-5   0.001       all
cifar10                    50   30         2              40               1000    1e-5   0.001       all
cifar100                   1    20         3              20               1000    1e-5   0.01        all
cifar100                   10   20         2              20               1000    1e-5   0.01        all
cifar100                   50   80         2              40               1000    1e-5   0.01        125
=========================  ===  =========  =============  ===============  ======  =====  ==========  =========

MNIST, Fashion-MNIST, SVHN, scikit-learn's digits and any other data have no published MTT row: they take CIFAR-10's
row at the same ipc (the closest published setting: 10 classes, ConvNet-3, 28-32 px). Digit data (``mnist``,
``svhn``, ``digits``) drop ``flip`` from the DSA strategy, for the experts and the distillation alike (a mirrored
digit is another symbol or none); CIFAR and Fashion-MNIST keep the authors' full strategy.

Where the zoo differs on purpose: ``num_experts`` is 20 (the paper trains 100; a ConvNet-3 trajectory is ~60 MB at
32x32, so 100 experts are ~6 GB; more experts can be added to a buffer later); no ZCA whitening (the zoo normalises
per channel); ``expert_images`` (default 0: all) may train the experts on a seeded class-balanced subset, which
the ``cpu`` preset uses to fit a small CPU; one generator drives every draw (theirs: numpy for the start epoch,
Python's ``random`` for the expert files, torch for the rest).
"""

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.func import functional_call
from tqdm import tqdm

from ..data.dsa import DSA
from . import distributed
from .augment import dsa_strategy
from .core import CondenseError, Method, RealData, make_network, register_method

__all__ = [
    "EXPERT_DEFAULTS",
    "MTT",
    "MTT_TABLE",
    "Chunks",
    "ExpertBuffer",
    "FlatModel",
    "expert_buffer",
    "expert_epoch",
    "flat_parameters",
    "published_settings",
    "trajectory_loss",
    "unroll",
]

BUFFER_FORMAT = "zoo-mtt-buffer/2"  # 2: the experts draw as buffer.py does

# The experts' options, shared by every trajectory-matching method (same names, same defaults: same buffer).
EXPERT_DEFAULTS: dict[str, Any] = {
    "model": "convnet_d3",
    "num_experts": 20,
    "train_epochs": 50,
    "expert_lr": 0.01,
    "expert_momentum": 0.0,
    "expert_weight_decay": 0.0,
    "expert_batch": 256,
    "expert_seed": 0,
    "expert_images": 0,  # experts train on this many real images (a seeded class-balanced subset); 0: all
    "dsa": True,
    "dsa_strategy": "color_crop_cutout_flip_scale_rotate",
    "buffer": "",
}


# The authors' README table: (dataset, ipc) -> syn_steps, expert_epochs, max_start_epoch, lr_img, lr_lr, lr_teacher,
# batch_syn (0 = every image each step).
MTT_TABLE: dict[tuple[str, int], tuple[int, int, int, float, float, float, int]] = {
    ("cifar10", 1): (50, 2, 2, 100.0, 1e-7, 0.01, 0),
    ("cifar10", 10): (30, 2, 20, 100.0, 1e-5, 0.001, 0),
    ("cifar10", 50): (30, 2, 40, 1000.0, 1e-5, 0.001, 0),
    ("cifar100", 1): (20, 3, 20, 1000.0, 1e-5, 0.01, 0),
    ("cifar100", 10): (20, 2, 20, 1000.0, 1e-5, 0.01, 0),
    ("cifar100", 50): (80, 2, 40, 1000.0, 1e-5, 0.01, 125),
}
MTT_KEYS = ("syn_steps", "expert_epochs", "max_start_epoch", "lr_img", "lr_lr", "lr_teacher", "batch_syn")


def published_row(ipc: int) -> int:
    """The published ipc (1, 10, 50) nearest to ``ipc`` on a log scale."""
    return 1 if ipc <= 3 else 10 if ipc <= 22 else 50


def published_settings(dataset: str, ipc: int) -> tuple[dict[str, Any], str]:
    """MTT's defaults for ``dataset`` (``RealData.source["name"]``) at ``ipc``, and where they come from."""
    row = published_row(ipc)
    name = dataset if (dataset, row) in MTT_TABLE else "cifar10"
    values = dict(zip(MTT_KEYS, MTT_TABLE[(name, row)]))
    values["dsa_strategy"] = dsa_strategy(dataset)
    src = f"mtt-distillation README table, {name} ipc {row}"
    if name != dataset:
        src += f" (no published row for {dataset or 'this data'}: the closest setting)"
    return values, src


# ----------------------------------------------------------------------------------------------------------------
# A network as a function of one flat parameter vector
# ----------------------------------------------------------------------------------------------------------------


def flat_parameters(net: nn.Module) -> torch.Tensor:
    """Every parameter of ``net``, flattened and concatenated in ``named_parameters`` order (on the CPU)."""
    return torch.cat([p.detach().reshape(-1).cpu() for p in net.parameters()])


class FlatModel:
    """``net`` called on a flat parameter vector: ``model(flat, x)`` runs ``net`` with its parameters replaced by
    views of ``flat`` (``torch.func.functional_call``), so gradients flow to ``flat`` and whatever made it."""

    def __init__(self, net: nn.Module):
        self.net = net.requires_grad_(False)
        named = list(net.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.size = sum(self.numels)
        self.buffers = dict(net.named_buffers())

    def params(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.numels), self.shapes)}

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.net, {**self.params(flat), **self.buffers}, (x,))


class Chunks:
    """Minibatch indices of ``n`` items: a random permutation cut into chunks of ``batch``, the last unused chunk
    per call (the authors' ``indices_chunks.pop()``), a new permutation when they are used up."""

    def __init__(self, n: int, batch: int, generator: torch.Generator, device: torch.device | str = "cpu"):
        self.n, self.batch, self.generator, self.device = n, max(1, min(batch or n, n)), generator, device
        self.pending: list[torch.Tensor] = []

    def next(self) -> torch.Tensor:
        if not self.pending:
            self.pending = list(torch.randperm(self.n, generator=self.generator).split(self.batch))
        return self.pending.pop().to(self.device)


def unroll(
    model: FlatModel,
    start: torch.Tensor,
    lr: torch.Tensor,
    steps: int,
    batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """The student's parameters after ``steps`` SGD steps from ``start`` with learning rate ``lr``; ``batch(step)``
    gives each step's (images, labels). The graph through every step is kept (``create_graph``), so the result is
    differentiable in the images, ``lr`` and whatever ``batch`` made the images from."""
    w = start.detach().requires_grad_(True)
    for s in range(steps):
        x, y = batch(s)
        ce = F.cross_entropy(model(w, x), y)
        (grad,) = torch.autograd.grad(ce, w, create_graph=True)
        w = w - lr * grad
    return w


def trajectory_loss(end: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||end - target||^2 / ||start - target||^2: how far the student ended from the expert's later parameters,
    relative to how far the expert travelled (scale-free across layers, epochs and experts)."""
    return (end - target).pow(2).sum() / (start - target).pow(2).sum()


# ----------------------------------------------------------------------------------------------------------------
# Expert trajectories
# ----------------------------------------------------------------------------------------------------------------


def buffer_settings(real: RealData, options: dict[str, Any]) -> dict[str, Any]:
    """Everything that shapes an expert trajectory (the buffer's identity)."""
    return {
        "format": BUFFER_FORMAT,
        "data": real.source["fingerprint"],
        "shape": list(real.shape),
        "classes": real.num_classes,
        "model": options["model"],
        "epochs": int(options["train_epochs"]),
        "lr": float(options["expert_lr"]),
        "momentum": float(options["expert_momentum"]),
        "weight_decay": float(options["expert_weight_decay"]),
        "batch": int(options["expert_batch"]),
        "dsa": options["dsa_strategy"] if options["dsa"] else None,
        "seed": int(options["expert_seed"]),
        **({"images": int(options["expert_images"])} if options.get("expert_images") else {}),
    }


def expert_epoch(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    generator: torch.Generator,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """One epoch of ``buffer.py``'s expert, draw for draw from ``generator``: the train loader's base seed, its
    sampler's seed for a fresh generator that permutes the data, per batch ``augment`` (which may draw), CE,
    ``zero_grad`` / ``backward`` / ``step``; then the base seed of the test pass ``buffer.py`` runs after every
    epoch (drawn and dropped, so the next epoch's draws line up with theirs)."""
    n = images.shape[0]
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # the train loader's base seed (unused)
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=generator))  # RandomSampler's seed
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(images.device)
    net.train()
    for i in range(0, n, batch):
        idx = perm[i : i + batch]
        x = images[idx]
        if augment is not None:
            x = augment(x)
        loss = F.cross_entropy(net(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # the test loader's base seed (unused)


def train_expert(real: RealData, settings: dict[str, Any], index: int, device: torch.device) -> torch.Tensor:
    """Expert ``index``'s trajectory: ``(epochs + 1, P)`` flat parameters, at initialisation and after each epoch
    (:func:`expert_epoch`; one optimiser for the run, no lr decay: ``buffer.py`` without ``--decay``). Seeded by
    ``(seed, index)`` only."""
    g = torch.Generator().manual_seed(int(settings["seed"]) * 1_000_003 + index)
    net = make_network(settings["model"], real.shape, real.num_classes, g).to(device)
    rows = [flat_parameters(net)]
    opt = torch.optim.SGD(net.parameters(), lr=settings["lr"], momentum=settings["momentum"],
                          weight_decay=settings["weight_decay"])  # fmt: skip
    dsa = DSA(settings["dsa"]) if settings["dsa"] else None
    augment = (lambda x: dsa(x, g, per_sample=True)) if dsa is not None else None
    images, labels = expert_data(real, int(settings.get("images", 0)), int(settings["seed"]))
    images, labels = images.to(device), labels.to(device)
    for _ in range(int(settings["epochs"])):
        expert_epoch(net, opt, images, labels, int(settings["batch"]), g, augment)
        rows.append(flat_parameters(net))
    return torch.stack(rows)


def expert_data(real: RealData, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The images the experts train on: all of ``real`` (``n`` 0), else ``n // classes`` per class drawn with a
    generator seeded by ``seed`` (kept in ``real``'s order), so that every expert of a buffer sees the same subset.
    A shortened run's option (the cpu preset): the authors train experts on the whole training split."""
    if not n or n >= real.labels.numel():
        return real.images, real.labels
    g = torch.Generator().manual_seed(seed)
    per = max(1, n // real.num_classes)
    keep = torch.cat([idx[torch.randperm(len(idx), generator=g)[:per]] for idx in real.by_class]).sort().values
    return real.images[keep], real.labels[keep]


class ExpertBuffer:
    """Expert trajectories, in memory or in ``folder`` (``expert_0000.safetensors``, ... each holding one
    ``trajectory`` tensor ``(epochs + 1, P)``, and ``buffer.json`` naming the settings). Files are read a row at a
    time, so a large buffer costs no memory."""

    def __init__(self, folder: Path | None, settings: dict[str, Any]):
        self.folder, self.settings = folder, settings
        self.key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        self.memory: dict[int, torch.Tensor] = {}
        self._open: dict[int, Any] = {}

    def _file(self, i: int) -> Path:
        return self.folder / f"expert_{i:04d}.safetensors"

    def has(self, i: int) -> bool:
        return i in self.memory or (self.folder is not None and self._file(i).is_file())

    def ensure(self, n: int, real: RealData, device: torch.device) -> None:
        """Train (and store) the experts among the first ``n`` that are not there yet.

        Under torchrun the missing experts (as rank 0 sees the folder) are dealt out in rounds, ``missing[j]`` to
        process ``j % N``; after each round every trajectory goes to every process and rank 0 stores it. A
        process that cannot see rank 0's file (no shared storage) keeps the trajectory in memory."""
        rank, size = distributed.world()
        missing = distributed.broadcast_object([i for i in range(n) if not self.has(i)] if rank == 0 else None)
        if self.folder is not None and rank == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            info = self.folder / "buffer.json"
            if not info.is_file():
                info.write_text(json.dumps({"key": self.key, **self.settings}, indent=2) + "\n")
        bar = tqdm(total=len(missing), desc="training experts", leave=False, disable=None if rank == 0 else True)
        for first in range(0, len(missing), size):
            group = missing[first : first + size]
            mine = group[rank] if rank < len(group) else None
            traj = train_expert(real, self.settings, mine, device).contiguous() if mine is not None else None
            received = {}
            for owner, i in enumerate(group):
                t = distributed.broadcast_tensor(traj if owner == rank else None, owner)
                if self.folder is None:
                    self.memory[i] = t
                elif rank == 0:
                    self._store(i, t)
                else:
                    received[i] = t
            distributed.barrier()  # rank 0's files are written
            self.memory.update({i: t for i, t in received.items() if not self._file(i).is_file()})
            bar.update(len(group))
        bar.close()

    def _store(self, i: int, traj: torch.Tensor) -> None:
        meta = {"format": BUFFER_FORMAT, "key": self.key, "index": str(i), "settings": json.dumps(self.settings)}
        tmp = self._file(i).with_name(f".{self._file(i).name}.tmp.{os.getpid()}")
        try:
            save_file({"trajectory": traj}, str(tmp), metadata=meta)
            os.replace(tmp, self._file(i))
        finally:
            tmp.unlink(missing_ok=True)

    def _handle(self, i: int):
        if i not in self._open:
            f = safe_open(str(self._file(i)), framework="pt")
            meta = f.metadata() or {}
            if meta.get("key") != self.key:
                raise CondenseError(
                    f"{self._file(i)} was made with other expert settings; remove it or pick another buffer"
                )
            self._open[i] = f
        return self._open[i]

    def rows(self, i: int, epochs: list[int]) -> list[torch.Tensor]:
        """Expert ``i``'s flat parameters after each of ``epochs`` (0 = at initialisation)."""
        if i in self.memory:
            return [self.memory[i][e] for e in epochs]
        sl = self._handle(i).get_slice("trajectory")
        return [sl[e : e + 1][0] for e in epochs]


def expert_buffer(method: Method) -> ExpertBuffer:
    """The buffer for ``method``'s options (its ``buffer`` folder, else the run's state folder, else memory), with
    its first ``num_experts`` experts trained."""
    o = method.options
    settings = buffer_settings(method.real, o)
    root = Path(o["buffer"]) if o.get("buffer") else None
    state_dir = getattr(method, "state_dir", None)
    if root is None and state_dir is not None:
        root = Path(state_dir) / "experts"
    buf = ExpertBuffer(None, settings)
    if root is not None:
        buf.folder = root / f"{o['model']}_{buf.key}"
    buf.ensure(int(o["num_experts"]), method.real, method.device)
    return buf


def check_trajectory_options(method: Method) -> None:
    o = method.options
    for k in ("num_experts", "train_epochs", "expert_epochs", "max_start_epoch", "syn_steps", "iterations"):
        if isinstance(o[k], bool) or not isinstance(o[k], int) or o[k] < (0 if k == "iterations" else 1):
            raise CondenseError(f"{method.name}: {k} must be a positive int, got {o[k]!r}")
    if o["max_start_epoch"] - 1 + o["expert_epochs"] > o["train_epochs"]:
        raise CondenseError(
            f"{method.name}: a start epoch up to max_start_epoch-1={o['max_start_epoch'] - 1} plus expert_epochs="
            f"{o['expert_epochs']} passes the experts' train_epochs={o['train_epochs']}: lower max_start_epoch or "
            "raise train_epochs"
        )


# ----------------------------------------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------------------------------------


class TrajectoryMatching(Method):
    """What MTT and factorization share: the buffer, the student, the learnable lr, the draw of a segment, and the
    published defaults for the data and ipc (below the user's options, above the class's ``defaults``)."""

    def __init__(self, real: RealData, ipc: int, options: dict[str, Any], seed: int, device: torch.device):
        super().__init__(real, ipc, options, seed, device)
        published, self.defaults_from = self.published_settings(str(real.source.get("name", "")), ipc)
        self.options = {**self.defaults, **published, **options}

    @classmethod
    def published_settings(cls, dataset: str, ipc: int) -> tuple[dict[str, Any], str]:
        return published_settings(dataset, ipc)

    def check(self) -> None:
        super().check()
        check_trajectory_options(self)

    def setup_trajectories(self) -> None:
        o = self.options
        self.dsa = DSA(o["dsa_strategy"]) if o["dsa"] else None
        self.buffer = expert_buffer(self)
        self.student = FlatModel(self.network())
        self.syn_lr = torch.tensor(float(o["lr_teacher"]), device=self.device).requires_grad_(True)

    def segment(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A random expert's parameters at a random start epoch and ``expert_epochs`` later (on the device)."""
        o, g = self.options, self.generator
        e = int(torch.randint(int(o["num_experts"]), (1,), generator=g))
        t = int(torch.randint(int(o["max_start_epoch"]), (1,), generator=g))
        start, target = self.buffer.rows(e, [t, t + int(o["expert_epochs"])])
        if start.numel() != self.student.size:
            raise CondenseError(
                f"the expert buffer holds {start.numel()} parameters, the student has {self.student.size}"
            )
        return start.to(self.device), target.to(self.device)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return self.dsa(x, self.generator, per_sample=True) if self.dsa is not None else x

    def split_description(self) -> str:
        return "expert buffer (the distillation runs whole on every process)"

    def describe_trajectories(self) -> dict[str, Any]:
        lr = float(self.syn_lr.detach())
        folder = self.buffer.folder
        return {"syn_lr": lr, "eval_lr": lr, "expert_buffer": str(folder) if folder is not None else None,
                "defaults_from": self.defaults_from}  # fmt: skip


@register_method
class MTT(TrajectoryMatching):
    name = "mtt"
    # syn_steps .. batch_syn and dsa_strategy are replaced per dataset and ipc (published_settings); these are
    # CIFAR-10's ipc-10 row
    defaults = {
        "iterations": 5000,
        "syn_steps": 30,
        "expert_epochs": 2,
        "max_start_epoch": 20,
        "lr_img": 100.0,
        "lr_lr": 1e-5,
        "lr_teacher": 0.001,
        "momentum": 0.5,
        "batch_syn": 0,
        "init": "real",
        **EXPERT_DEFAULTS,
    }

    def setup(self) -> None:
        o = self.options
        images, labels = self.init_from_real()
        if o["init"] == "noise":
            images = torch.randn(images.shape, generator=self.generator).to(self.device)
        self.images = images.detach().clone().requires_grad_(True)
        self.labels = labels
        self.setup_trajectories()
        self.make_optimizers()

    def make_optimizers(self) -> None:
        """``distill.py``'s: SGD with momentum 0.5 on the images (``lr_img``) and on the lr (``lr_lr``)."""
        o = self.options
        self.opt_img = torch.optim.SGD([self.images], lr=o["lr_img"], momentum=o["momentum"])
        self.opt_lr = torch.optim.SGD([self.syn_lr], lr=o["lr_lr"], momentum=o["momentum"])

    def step(self, it: int) -> float:
        o = self.options
        start, target = self.segment()
        chunks = Chunks(self.images.shape[0], int(o["batch_syn"]), self.generator, self.device)

        def batch(_):
            idx = chunks.next()
            return self.augment(self.images[idx]), self.labels[idx]

        end = unroll(self.student, start, self.syn_lr, int(o["syn_steps"]), batch)
        loss = trajectory_loss(end, start, target)
        self.opt_img.zero_grad(set_to_none=True)
        self.opt_lr.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_img.step()
        self.opt_lr.step()
        return loss.item()

    def result(self):
        return self.images.detach(), self.labels, None, {}

    def describe(self) -> dict[str, Any]:
        return self.describe_trajectories()

    def state_dict(self):
        return {
            "images": self.images.detach().cpu(),
            "syn_lr": self.syn_lr.detach().cpu(),
            "opt_img": self.opt_img.state_dict(),
            "opt_lr": self.opt_lr.state_dict(),
        }

    def load_state_dict(self, state):
        with torch.no_grad():
            self.images.copy_(state["images"].to(self.device))
            self.syn_lr.copy_(state["syn_lr"].to(self.device))
        self.opt_img.load_state_dict(state["opt_img"])
        self.opt_lr.load_state_dict(state["opt_lr"])
