"""MTT: matching training trajectories (Cazenavette, Wang, Torralba, Efros, Zhu, "Dataset Distillation by
Matching Training Trajectories", CVPR 2022).

Two stages.

1. **Experts.** ``num_experts`` networks (ConvNet-3 by default) train on the real data with plain SGD: lr
   ``expert_lr`` 0.01, no momentum, no weight decay, no lr decay, batch 256, ``train_epochs`` 50 epochs, DSA on
   every batch (one op per batch, its values drawn per image), through :func:`zoo.condense.evaluate.train_network`.
   Their flattened parameters are recorded at initialisation and after every epoch (``train_epochs + 1`` rows per
   expert). The trajectories are kept in an *expert buffer*: a folder named after a digest of everything that
   shapes them (the data's fingerprint, the image shape, the model, the expert settings, ``expert_seed``) holding
   one safetensors file per expert. It lives under ``buffer`` when that option names a folder, else in the run's
   state folder (``OUT/.condense_state/experts``; kept by ``--resume``, cleared by a fresh run into that folder),
   else (no ``out``) only in memory. A buffer already there is
   reused and extended when more experts are asked for: expert ``i`` is seeded by ``(expert_seed, i)`` alone, so
   MTT and factorization, every ``ipc`` and every seed share one buffer.

2. **Distillation.** Each iteration picks a random expert and a random start epoch ``t < max_start_epoch``. A
   student starts at the expert's parameters ``theta_t`` and takes ``syn_steps`` SGD steps on the synthetic set
   with a learnable learning rate ``alpha`` (initialised to ``lr_teacher``): each step one minibatch of
   ``batch_syn`` images (all of them by default; chunks of a fresh random permutation, the next chunk each step),
   each image under its own DSA draw. The loss is the normalised distance to where the expert got ``expert_epochs``
   epochs later::

       L = ||theta_student - theta_{t+M}||^2 / ||theta_t - theta_{t+M}||^2

   and is backpropagated through every unrolled step (second-order: each step's gradient is itself
   differentiated) into the images (SGD, ``lr_img``, momentum 0.5) and ``alpha`` (SGD, ``lr_lr``, momentum 0.5).
   Images start from random real ones. The learned ``alpha`` is what the set should be evaluated with: the result's
   meta carries it as ``eval_lr`` (and ``syn_lr``).

The unrolled steps run in functional form: the student is one flat parameter vector, each step calls the network
with ``torch.func.functional_call`` on views of it, and only the newest vector is held by Python; autograd keeps
what the backward pass through the steps needs (memory still grows with ``syn_steps``, as in the paper).

Defaults are the paper's CIFAR-10 command line (5,000 iterations, ``syn_steps`` 20, ``expert_epochs`` 3,
``max_start_epoch`` 20, ``lr_img`` 1000, ``lr_lr`` 1e-5, ``lr_teacher`` 0.01, 50-epoch experts) with two
changes: ``num_experts`` is 20 (the paper trains 100; a ConvNet-3 trajectory is ~60 MB at 32x32, so 100 experts
are ~6 GB; more experts can be added to a buffer later), and no ZCA whitening (the zoo normalises per channel).
The paper uses 2 expert epochs and a smaller image lr (~100) for MNIST-like digits; set ``expert_epochs=2``
``lr_img=100`` there. DSA is the authors' full strategy (flips included) as for DM; drop ``flip`` for digits with
``dsa_strategy``.
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
from .core import CondenseError, Method, RealData, make_network, register_method
from .evaluate import EvalSettings, train_network

__all__ = [
    "EXPERT_DEFAULTS",
    "MTT",
    "Chunks",
    "ExpertBuffer",
    "FlatModel",
    "expert_buffer",
    "flat_parameters",
    "trajectory_loss",
    "unroll",
]

BUFFER_FORMAT = "zoo-mtt-buffer/1"

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
    "dsa": True,
    "dsa_strategy": "color_crop_cutout_flip_scale_rotate",
    "buffer": "",
}


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
    """Minibatch indices of ``n`` items: a random permutation cut into chunks of ``batch``, one chunk per call, a
    new permutation when they are used up."""

    def __init__(self, n: int, batch: int, generator: torch.Generator, device: torch.device | str = "cpu"):
        self.n, self.batch, self.generator, self.device = n, max(1, min(batch or n, n)), generator, device
        self.pending: list[torch.Tensor] = []

    def next(self) -> torch.Tensor:
        if not self.pending:
            self.pending = list(torch.randperm(self.n, generator=self.generator).split(self.batch))
        return self.pending.pop(0).to(self.device)


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
    }


def train_expert(real: RealData, settings: dict[str, Any], index: int, device: torch.device) -> torch.Tensor:
    """Expert ``index``'s trajectory: ``(epochs + 1, P)`` flat parameters, at initialisation and after each epoch.
    Seeded by ``(seed, index)`` only."""
    g = torch.Generator().manual_seed(int(settings["seed"]) * 1_000_003 + index)
    net = make_network(settings["model"], real.shape, real.num_classes, g).to(device)
    rows = [flat_parameters(net)]
    s = EvalSettings(
        model=settings["model"], lr=settings["lr"], batch=settings["batch"], momentum=settings["momentum"],
        weight_decay=settings["weight_decay"], dsa=settings["dsa"] is not None,
        dsa_strategy=settings["dsa"] or "color",
    )  # fmt: skip
    train_network(net, real.images, real.labels, settings["epochs"], s, None, g,
                  on_epoch=lambda ep, n: rows.append(flat_parameters(n)), decay=False)  # fmt: skip
    return torch.stack(rows)


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
        """Train (and store) the experts among the first ``n`` that are not there yet."""
        missing = [i for i in range(n) if not self.has(i)]
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            info = self.folder / "buffer.json"
            if not info.is_file():
                info.write_text(json.dumps({"key": self.key, **self.settings}, indent=2) + "\n")
        for i in tqdm(missing, desc="training experts", leave=False, disable=None):
            traj = train_expert(real, self.settings, i, device).contiguous()
            if self.folder is None:
                self.memory[i] = traj
                continue
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
    """What MTT and factorization share: the buffer, the student, the learnable lr, the draw of a segment."""

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

    def describe_trajectories(self) -> dict[str, Any]:
        lr = float(self.syn_lr.detach())
        folder = self.buffer.folder
        return {"syn_lr": lr, "eval_lr": lr, "expert_buffer": str(folder) if folder is not None else None}


@register_method
class MTT(TrajectoryMatching):
    name = "mtt"
    defaults = {
        "iterations": 5000,
        "syn_steps": 20,
        "expert_epochs": 3,
        "max_start_epoch": 20,
        "lr_img": 1000.0,
        "lr_lr": 1e-5,
        "lr_teacher": 0.01,
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
