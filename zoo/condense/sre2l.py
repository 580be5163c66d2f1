"""SRe2L: squeeze, recover, relabel (Yin, Xing, Shen; "Squeeze, Recover and Relabel: Dataset Condensation at
ImageNet Scale From A New Perspective", NeurIPS 2023; VILA-Lab/SRe2L).

- **Squeeze**: the given teacher, trained on the full data (the ``teacher`` option; see
  :mod:`zoo.condense.teacher`). It must have BatchNorm layers: their running statistics are what the images are
  recovered from (ConvNet-3 with ``norm=batchnorm``, a ResNet, ...).
- **Recover**: the images start from Gaussian noise (in the data's normalised space) and are optimised with Adam
  (lr ``lr_img`` 0.25, betas (0.5, 0.9), eps 1e-8, cosine decay to 0 over ``iterations``) to minimise
  ``CE(teacher(jitter(x)), class) + r_bn * sum_l w_l (||var_l(x) - running_var_l||_2 + ||mu_l(x) - running_mean_l||_2)``
  where ``mu_l``/``var_l`` are the batch statistics entering BatchNorm layer ``l`` (their ``BNFeatureHook``) and
  ``w_l`` is ``first_bn_multiplier`` (10) for the first layer, 1 for the others; ``r_bn`` 0.01. After every step the
  pixels are clipped to the image range. Exact to the authors' step (parity:
  ``tests/condense/test_condense_parity_teacher.py`` against ``zoo/bench/reference/sre2l.py``).
- **Jitter**, by image size (``jitter_mode`` ``auto``): below 64 px the authors' CIFAR recover
  (``small_dataset/recover_cifar.py``): a roll by ``(dy, dx)``, each drawn from ``0 .. jitter``, no crop and no flip;
  ``jitter`` defaults to ``size // 8``, their 4 px at 32 px kept in proportion (3 px at 28 px, 2 at 16). From 64 px
  ImageNet's (``recover/data_synthesis.py``): torchvision's ``RandomResizedCrop(size)`` (scale ``min_scale`` .. 1,
  ratio 3/4 .. 4/3, one draw for the batch) and ``RandomHorizontalFlip`` (``flip``), then the roll by ``0 ..
  jitter``, ``size // 7`` by default (their 32 at 224). One draw per batch and step, as theirs.
- **Batches**, as the authors': each holds one image index of up to ``batch`` (100) consecutive classes; its
  BatchNorm statistics are its own. With 10 classes a batch is the 10 images of one index (their CIFAR script
  recovers index by index). One Adam serves all batches: its update is per element, so this equals the authors'
  optimiser per batch.
- **Relabel**: the authors relabel each random crop while the student trains (FKD); the zoo evaluates with the
  teacher-relabelling student (:mod:`zoo.condense.student`). ``soft_labels`` (on) also stores the teacher's softmax
  of the final images at ``temperature`` for the plain evaluation.

Defaults follow the authors' CIFAR recipe (``recover_cifar.sh``): lr 0.25, r_bn 0.01, batch 100, 1000 iterations,
no L2/TV priors (4000 iterations at ImageNet, ``recover.sh``).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .core import CondenseError, ImageMethod, register_method
from .student import random_resized_crop_params, resized_crop
from .teacher import load_teacher

__all__ = ["SRe2L", "bn_statistics_loss", "jitter_settings"]


def _bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def bn_statistics_loss(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``||running_var - var(x)||_2 + ||running_mean - mean(x)||_2`` over the channels of the input ``x`` of a
    BatchNorm layer (batch statistics, biased variance): the authors' ``BNFeatureHook``."""
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dims)
    var = x.transpose(0, 1).reshape(x.shape[1], -1).var(1, unbiased=False)
    return torch.norm(module.running_var - var, 2) + torch.norm(module.running_mean - mean, 2)


def jitter_settings(size: int, mode: str = "auto", jitter: int | None = None, flip: bool | None = None):
    """``(mode, max roll, flip)`` for images of ``size`` px: ``cifar`` below 64 px (roll ``size // 8``, no flip),
    ``imagenet`` from 64 (crop, flip, roll ``size // 7``)."""
    if mode == "auto":
        mode = "cifar" if size < 64 else "imagenet"
    if mode not in ("cifar", "imagenet"):
        raise CondenseError(f"sre2l's jitter_mode is auto, cifar or imagenet, got {mode!r}")
    shift = int(jitter) if jitter is not None else size // (8 if mode == "cifar" else 7)
    return mode, shift, (mode == "imagenet") if flip is None else bool(flip)


@register_method
class SRe2L(ImageMethod):
    name = "sre2l"
    needs_teacher = True
    shards = "batches"
    defaults = {
        "iterations": 1000,
        "teacher": "",
        "teacher_weights": None,
        "lr_img": 0.25,
        "r_bn": 0.01,
        "first_bn_multiplier": 10.0,
        "batch": 100,
        "jitter_mode": "auto",
        "jitter": None,
        "flip": None,
        "min_scale": 0.08,
        "soft_labels": True,
        "temperature": 1.0,
    }

    def check(self) -> None:
        o = self.options
        if int(o["batch"]) < 2:
            raise CondenseError(f"sre2l's batch must be >= 2 (BatchNorm statistics of one image), got {o['batch']}")
        if self.real.num_classes < 2:
            raise CondenseError("sre2l's batches hold one image of each class: it needs at least 2 classes")
        if not 0 < float(o["min_scale"]) <= 1:
            raise CondenseError(f"sre2l's min_scale must be in (0, 1], got {o['min_scale']}")
        if not float(o["temperature"]) > 0:
            raise CondenseError(f"sre2l's temperature must be > 0, got {o['temperature']}")
        jitter_settings(min(self.real.shape[1:]), o["jitter_mode"], o["jitter"], o["flip"])
        self.teacher = load_teacher(o["teacher"], self.real, self.device, o["teacher_weights"])
        if not self.teacher.has_batchnorm():
            raise CondenseError(
                f"sre2l recovers images from the teacher's BatchNorm statistics and {self.teacher.name} has no "
                "BatchNorm layer: use a teacher with BatchNorm, e.g. convnet_d3 with norm=batchnorm"
            )

    def setup(self) -> None:
        if not hasattr(self, "teacher"):
            self.check()
        o = self.options
        k = self.real.num_classes
        dtype = self.real.images.dtype
        # image-index-major order: index i of every class, then index i + 1, ... (the authors' targets)
        self.order_labels = torch.arange(k).repeat(self.ipc).to(self.device)
        self.images = torch.randn(self.ipc * k, *self.real.shape, generator=self.generator, dtype=dtype)
        self.images = self.images.to(self.device).requires_grad_(True)
        self.opt = torch.optim.Adam([self.images], lr=float(o["lr_img"]), betas=(0.5, 0.9), eps=1e-8)
        c = self.real.shape[0]
        pre = self.real.preprocessing
        mean, std = [float(v) for v in pre["mean"]], [float(v) for v in pre["std"]]
        mean, std = (mean * c, std * c) if len(mean) == 1 else (mean[:c], std[:c])
        m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
        self.lo, self.hi = (-m / s).to(self.device, dtype), ((1 - m) / s).to(self.device, dtype)
        self.bns = _bn_layers(self.teacher.model)
        self.mode, self.max_shift, self.flip = jitter_settings(
            min(self.real.shape[1:]), o["jitter_mode"], o["jitter"], o["flip"]
        )
        # batches: one image index each, up to `batch` consecutive classes (the authors' kk loop)
        per = min(int(o["batch"]), k)
        self.batches = [(i * k + j, i * k + min(j + per, k)) for i in range(self.ipc) for j in range(0, k, per)]

    def _jitter_draw(self) -> tuple[tuple[int, int, int, int] | None, bool, tuple[int, int]]:
        """One batch's jitter, drawn in the authors' order: ImageNet's crop box, the flip, the roll."""
        g = self.generator
        box, flip, roll = None, False, (0, 0)
        if self.mode == "imagenet":
            h, w = self.real.shape[1:]
            box = random_resized_crop_params(h, w, (float(self.options["min_scale"]), 1.0), (3 / 4, 4 / 3), g)
        if self.flip:
            flip = bool(torch.rand(1, generator=g) < 0.5)
        if self.max_shift > 0:
            dy, dx = (int(v) for v in torch.randint(0, self.max_shift + 1, (2,), generator=g))
            roll = (dy, dx)
        return box, flip, roll

    def _jitter(self, x: torch.Tensor, draw=None) -> torch.Tensor:
        """The authors' jitter for this size (one draw for the batch): ImageNet's crop and flip, then the roll."""
        box, flip, roll = draw or self._jitter_draw()
        if box is not None:
            x = resized_crop(x, *box, tuple(x.shape[-2:]))
        if flip:
            x = x.flip(-1)
        if roll != (0, 0):
            x = torch.roll(x, shifts=roll, dims=(2, 3))
        return x

    def row_owner(self) -> torch.Tensor:
        """Under torchrun batch ``j`` (its rows) belongs to process ``j % N``: a batch's BatchNorm statistics
        couple its classes, so batches, not classes, are what the processes share out."""
        owner = torch.empty(self.images.shape[0], dtype=torch.long)
        for j, (a, b) in enumerate(self.batches):
            owner[a:b] = j % self.world
        return owner

    def step(self, it: int) -> float:
        o = self.options
        lr = 0.5 * (1 + math.cos(math.pi * it / max(1, self.iterations))) * float(o["lr_img"])
        for group in self.opt.param_groups:
            group["lr"] = lr
        stats: list[torch.Tensor] = []

        def hook(module, inputs, output):
            stats.append(bn_statistics_loss(module, inputs[0]))

        handles = [bn.register_forward_hook(hook) for bn in self.bns]
        self.opt.zero_grad(set_to_none=True)
        total, n = 0.0, self.images.shape[0]
        try:
            for j, (a, b) in enumerate(self.batches):
                draw = self._jitter_draw()  # every process draws every batch's jitter, in order
                if j % self.world != self.rank:
                    continue
                stats.clear()
                x = self._jitter(self.images[a:b], draw)
                ce = F.cross_entropy(self.teacher(x), self.order_labels[a:b])
                weights = [float(o["first_bn_multiplier"])] + [1.0] * (len(stats) - 1)
                r_bn = torch.stack([w * s for w, s in zip(weights, stats)]).sum()
                loss = ce + float(o["r_bn"]) * r_bn
                # the mean over batches is reported; each batch's gradient reaches only its own images
                loss.backward()
                total += float(loss.detach()) * (b - a) / n
        finally:
            for h in handles:
                h.remove()
        if self.images.grad is None:  # a process without a batch steps with the others (Adam's step count)
            self.images.grad = torch.zeros_like(self.images)
        self.opt.step()
        with torch.no_grad():
            self.images.copy_(torch.maximum(torch.minimum(self.images, self.hi), self.lo))
        return total

    def _class_major(self) -> torch.Tensor:
        return torch.argsort(self.order_labels, stable=True)

    def result(self):
        perm = self._class_major()
        images = self.images.detach()[perm]
        labels = self.order_labels[perm]
        soft = None
        if self.options["soft_labels"]:
            t, batch = float(self.options["temperature"]), int(self.options["batch"])
            soft = self.teacher.soft_labels(images, t, batch)
        return images, labels, soft, {}

    def describe(self):
        return {"model": self.teacher.name, "teacher": self.teacher.name, "sre2l_jitter": [self.mode, self.max_shift]}
