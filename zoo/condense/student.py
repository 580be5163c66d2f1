"""The teacher-relabelling student recipe: how RDED (LINs-lab/RDED, ``validation/main.py``) evaluates a set, and
how the zoo evaluates RDED's and SRe2L's sets and the "random subset + the same teacher" baseline.

A fresh student trains on the set's images; every batch is augmented and mixed, and its targets are the teacher's
softmax of the *mixed* batch at temperature ``T``: the stored labels (hard or soft) are never used. Exact to the
authors' ``train`` (parity: ``tests/condense/test_condense_parity_teacher.py`` against ``zoo/bench/reference/rded.py``):

- per image (their dataset transform): ``ShufflePatches(factor)`` (the ``factor x factor`` grid's columns, then its
  rows, shuffled; like theirs, a width not divisible by ``factor`` loses its last ``width % factor`` columns), a
  random resized crop back to the image size (scale ``1/factor`` .. ``max_scale``, ratio 3/4 .. 4/3, bilinear with
  antialiasing: torchvision's draws and arithmetic), a horizontal flip with probability 0.5;
- per batch: cutmix (Beta(1, 1) area, the box and the partner permutation as their ``cutmix`` draws them; or
  mixup, or nothing); the student first sees the batch once without gradients (their accuracy meter: in train mode
  it moves BatchNorm's running statistics, so it is kept; their cutmix writes into that batch, mixup does not), then
  ``KL(softmax(teacher(x) / T) || softmax(student(x) / T))`` with ``batchmean`` (no ``T^2`` factor), ``T`` = 20
  with cutmix and 4 with mixup (``argument.py``);
- AdamW (betas 0.9, 0.999), lr 1e-3 (``argument.py``, every ConvNet), weight decay 0.01 on the weights of rank
  >= 2 and none on biases and norm parameters (``validation/utils.py:get_parameters``); the learning rate x
  ``0.5 (1 + cos(pi e / E / 2))`` at epoch ``e`` of ``E`` (``validation/main.py``: their cosine spans *half* a
  period, so the last epoch still runs at about half the initial rate); 300 epochs;
- batch (``argument.py``): 10 at ipc 1, 50 at ipc 10, 100 at ipc 50 (the zoo: 10 below ipc 10, 50 below 50, 100
  from 50), doubled for 100 classes or more, never above the set's size;
- the student: ConvNet-3 with BatchNorm (``synthesize/utils.py:load_model`` builds every ConvNet with
  ``net_norm="batch"``).

Randomness: the authors draw from three global generators; the zoo draws the same values in the same order from its
own three, all seeded by ``seed``: a ``torch.Generator`` (each epoch's order, the crops, the flips, cutmix's
permutation), numpy's legacy ``RandomState`` (cutmix's lambda and box centre) and python's ``random.Random`` (the
patch shuffle). The images are augmented in the data's normalised space (crop, resize and flip commute with the
per-channel normalisation; the authors augment pixels and normalise after).

Where the zoo differs on purpose: the accuracy is the last epoch's on the held-out split as it is (the authors
report the best of the evaluations after 80% of the epochs, on a validation transform that resizes 32 px images to
36 and crops the centre 32); the images are the set's tensors (the authors re-read JPEG files).
"""

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .augment import has_flips
from .core import CondenseError, RealData, SyntheticSet
from .evaluate import accuracy
from .teacher import Teacher, build_network, load_teacher

__all__ = [
    "StudentSettings",
    "default_student_batch",
    "evaluate_with_teacher",
    "random_resized_crop_params",
    "shuffle_patches",
    "student_batches",
    "train_student",
]


@dataclass
class StudentSettings:
    """The authors' student recipe (RDED ``argument.py`` / ``validation/main.py`` defaults).

    ``batch`` None: :func:`default_student_batch`; ``temperature`` None: 20 with cutmix, 4 with mixup, 20 without;
    ``factor`` None: the set's ``rded_factor`` (condense.json), else 1; ``norm`` reaches the ConvNet (None: the
    model's own default)."""

    model: str = "convnet_d3"
    norm: str | None = "batchnorm"
    model_kwargs: dict | None = None
    epochs: int = 300
    batch: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    temperature: float | None = None
    mix: str = "cutmix"
    cutmix_alpha: float = 1.0
    mixup_alpha: float = 0.8
    factor: int | None = None
    max_scale: float = 1.0
    flip: bool = True

    @classmethod
    def for_data(cls, data, **overrides) -> "StudentSettings":
        """The recipe for ``data`` (a name or a :class:`RealData`): flips only where the data allows them (not for
        digits, as :func:`zoo.condense.augment.has_flips` decides for the other evaluations)."""
        return cls(**{"flip": has_flips(data), **overrides})

    def resolved_temperature(self) -> float:
        if self.temperature is not None:
            return float(self.temperature)
        return 4.0 if self.mix == "mixup" else 20.0


def default_student_batch(ipc: int, num_classes: int) -> int:
    """RDED ``argument.py``'s batch: 10 / 50 / 100 at ipc 1 / 10 / 50 (below 10: 10, below 50: 50), x 2 from 100
    classes, at most the set's size."""
    b = 10 if ipc < 10 else 50 if ipc < 50 else 100
    if num_classes >= 100:
        b *= 2
    return max(1, min(b, ipc * num_classes))


def random_resized_crop_params(
    h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator
) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a random resized crop: torchvision's ``RandomResizedCrop.get_params``
    (ten tries, then the centre crop), the same draws from ``generator`` as it takes from the global one."""
    area = h * w
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]), generator=generator))
        aspect = aspect.item()
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, w - cw + 1, size=(1,), generator=generator).item())
            return top, left, ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def resized_crop(x: torch.Tensor, top: int, left: int, ch: int, cw: int, size: tuple[int, int]) -> torch.Tensor:
    """``x[..., top:top+ch, left:left+cw]`` resized to ``size`` (bilinear, antialiased; untouched when it already
    has that size): torchvision's ``resized_crop`` on a tensor."""
    x = x[..., top : top + ch, left : left + cw]
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    batched = x.dim() == 4
    y = F.interpolate(x if batched else x[None], size=size, mode="bilinear", align_corners=False, antialias=True)
    return y if batched else y[0]


def _shuffle_columns(x: torch.Tensor, factor: int, rng: random.Random) -> torch.Tensor:
    tw = x.shape[-1] // factor
    parts = []
    for k in range(factor):
        o = k * tw
        parts.append(x[..., o:] if o == factor - 1 else x[..., o : o + tw])  # the authors' test on the offset
    rng.shuffle(parts)
    return torch.cat(parts, -1)


def shuffle_patches(x: torch.Tensor, factor: int, rng: random.Random) -> torch.Tensor:
    """RDED's ``ShufflePatches``: the columns of a ``factor``-wide grid shuffled, then its rows (python's shuffle)."""
    x = _shuffle_columns(x, factor, rng)
    return _shuffle_columns(x.transpose(-1, -2), factor, rng).transpose(-1, -2)


def _augment(img: torch.Tensor, s: StudentSettings, factor: int, g: torch.Generator, rng: random.Random):
    size = tuple(img.shape[-2:])
    x = shuffle_patches(img, factor, rng)
    top, left, ch, cw = random_resized_crop_params(
        x.shape[-2], x.shape[-1], (1 / factor, s.max_scale), (3 / 4, 4 / 3), g
    )
    x = resized_crop(x, top, left, ch, cw, size)
    if s.flip and torch.rand(1, generator=g) < 0.5:
        x = x.flip(-1)
    return x


def student_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: StudentSettings,
    factor: int,
    batch: int,
    generator: torch.Generator,
    rng: random.Random,
):
    """One epoch of augmented batches ``(x, y)``: a random order, then every image through :func:`_augment`
    (patch shuffle, random resized crop, flip). Lazy, so that each batch's draws follow the previous batch's mix."""
    n = images.shape[0]
    perm = torch.randperm(n, generator=generator)
    for i in range(0, n, batch):
        idx = perm[i : i + batch]
        x = torch.stack([_augment(images[j], settings, factor, generator, rng) for j in idx.tolist()])
        yield x, labels[idx.to(labels.device)]


def _mix(x: torch.Tensor, s: StudentSettings, g: torch.Generator, nprng: np.random.RandomState) -> torch.Tensor:
    """The authors' ``mix_aug`` on a fresh copy: cutmix pastes a box of a permuted batch (the box's first axis is
    the height axis, as theirs), mixup blends with it."""
    if s.mix == "none":
        return x
    perm = torch.randperm(x.shape[0], generator=g).to(x.device)
    if s.mix == "mixup":
        lam = float(nprng.beta(s.mixup_alpha, s.mixup_alpha))
        return lam * x + (1 - lam) * x[perm]
    lam = nprng.beta(s.cutmix_alpha, s.cutmix_alpha)
    size_a, size_b = x.shape[2], x.shape[3]
    cut = np.sqrt(1.0 - lam)
    cut_a, cut_b = int(size_a * cut), int(size_b * cut)
    ca, cb = nprng.randint(size_a), nprng.randint(size_b)
    a1, b1 = np.clip(ca - cut_a // 2, 0, size_a), np.clip(cb - cut_b // 2, 0, size_b)
    a2, b2 = np.clip(ca + cut_a // 2, 0, size_a), np.clip(cb + cut_b // 2, 0, size_b)
    x = x.clone()
    x[:, :, a1:a2, b1:b2] = x[perm, :, a1:a2, b1:b2]
    return x


def _parameter_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    decay = [p for name, p in net.named_parameters() if "weight" in name and p.dim() > 1]
    rest = [p for name, p in net.named_parameters() if not ("weight" in name and p.dim() > 1)]
    return [dict(params=decay, weight_decay=weight_decay), dict(params=rest, weight_decay=0.0)]


def train_student(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    teacher: "Teacher | nn.Module",
    settings: StudentSettings | None = None,
    seed: int = 0,
    factor: int = 1,
    progress: bool = False,
) -> nn.Module:
    """Train ``net`` on ``images`` with targets from ``teacher`` (a :class:`Teacher` or a module taking the images
    as they are): the authors' ``train`` for ``settings.epochs`` epochs (see the module's docstring)."""
    s = settings or StudentSettings()
    if s.mix not in ("cutmix", "mixup", "none"):
        raise CondenseError(f"the student's mix is cutmix, mixup or none, got {s.mix!r}")
    if factor < 1:
        raise CondenseError(f"the student's factor must be >= 1, got {factor}")
    device = next(net.parameters()).device
    images, labels = images.to(device), labels.to(device)
    n = images.shape[0]
    k = int(labels.max()) + 1 if n else 1
    batch = int(s.batch) if s.batch else default_student_batch(max(1, n // k), k)
    t = s.resolved_temperature()
    g, nprng, rng = torch.Generator().manual_seed(seed), np.random.RandomState(seed), random.Random(seed)
    opt = torch.optim.AdamW(_parameter_groups(net, s.weight_decay), lr=s.lr, betas=tuple(s.betas))
    base = [group["lr"] for group in opt.param_groups]
    if isinstance(teacher, nn.Module):
        teacher.eval()
    net.train()
    for ep in tqdm(range(s.epochs), desc="student", disable=not progress, leave=False):
        scale = 0.5 * (1.0 + math.cos(math.pi * ep / s.epochs / 2))
        for group, lr in zip(opt.param_groups, base):
            group["lr"] = lr * scale
        for x, _ in student_batches(images, labels, s, factor, batch, g, rng):
            mixed = _mix(x, s, g, nprng)
            with torch.no_grad():
                # the authors' accuracy meter: in train mode it moves BatchNorm's running statistics; their cutmix
                # writes into the batch, so it sees the mixed batch then, the plain one with mixup
                net(mixed if s.mix == "cutmix" else x)
                target = F.softmax(teacher(mixed) / t, dim=1)
            opt.zero_grad()
            loss = F.kl_div(F.log_softmax(net(mixed) / t, dim=1), target, reduction="batchmean")
            loss.backward()
            opt.step()
    return net


def evaluate_with_teacher(
    synset: "SyntheticSet | tuple[torch.Tensor, torch.Tensor]",
    test: RealData,
    teacher: "Teacher | nn.Module | str",
    settings: StudentSettings | None = None,
    runs: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> list[float]:
    """Top-1 (%) on ``test`` of ``runs`` fresh students trained on ``synset``'s images (or ``(images, labels)``)
    with ``teacher``'s relabelling of every augmented batch (:func:`train_student`); the set's stored soft labels
    are not used. ``teacher``: anything :func:`zoo.condense.teacher.load_teacher` takes. Run ``r`` is seeded
    ``seed * 1000 + r`` (network and draws), as :func:`zoo.condense.evaluate.evaluate_set` seeds its runs."""
    s = settings or StudentSettings()
    if isinstance(synset, SyntheticSet):
        images, labels = synset.images, synset.labels
        set_factor = int(synset.meta.get("rded_factor", 1) or 1)
    else:
        images, labels = synset
        set_factor = 1
    factor = int(s.factor) if s.factor is not None else set_factor
    t = load_teacher(teacher, test, device)
    kwargs = dict(s.model_kwargs or {})
    if s.norm is not None:
        kwargs["norm"] = s.norm
    accs = []
    for r in tqdm(range(runs), desc=f"students ({s.model})", disable=not progress, leave=False):
        run_seed = seed * 1000 + r
        net = build_network(s.model, test, torch.Generator().manual_seed(run_seed), **kwargs).to(device)
        train_student(net, images.to(device), labels.to(device), t, s, seed=run_seed, factor=factor)
        accs.append(accuracy(net, test))
    return accs
