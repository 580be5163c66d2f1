"""RDED: realistic, diverse and efficient dataset distillation (Sun, Shi, Zhu, Yang, Wang; CVPR 2024,
LINs-lab/RDED). No optimisation: real patches, chosen by a trained observer (the teacher), stitched together.

Per class (the authors' ``synthesize/main.py:init_images``), exact to their code (parity:
``tests/condense/test_condense_parity_teacher.py`` against ``zoo/bench/reference/rded.py``):

1. up to ``n_candidates`` (300, ``--mipc``) random real images of the class;
2. ``n_crops`` (5, ``--num-crop``) random resized crops of each (``MultiRandomCrop``: torchvision's
   ``RandomResizedCrop(size // factor, scale=crop_scale, ratio=(1, 1), antialias=True)``, its draws in its order);
3. each crop is scored by the teacher's cross-entropy to the class, zero-padded back to the full size (their
   ``pad``); every image keeps its lowest-loss crop (``selector``);
4. the ``ipc x factor^2`` images with the lowest best-crop loss give their crops, ranked;
5. ``factor x factor`` crops are stitched per image (``mix_images``): grid cell ``k`` (row-major) of image ``j``
   holds the crop ranked ``k * ipc + j``; cells are ``size // factor`` wide, the first ``size % factor`` rows and
   columns one pixel more, a crop resized to its cell by nearest-neighbour interpolation when they differ.

``factor`` (None: the authors' scripts by image size: 1 up to 64 px, their CIFAR-10/100 and Tiny-ImageNet
setting, 2 above, their ImageNet setting) and ``crop_scale`` (0.08 .. 1, ``RandomResizedCrop``'s default, every
script) follow the authors. The factor used is recorded (``rded_factor`` in condense.json); the student recipe
(:mod:`zoo.condense.student`) reads it for its patch shuffle and crop scale, as the authors' validation uses the
same ``--factor``.

How the set is evaluated: the authors never train on stored labels; each augmented (cutmix) batch is relabelled
by the teacher (:func:`zoo.condense.student.evaluate_with_teacher`). ``soft_labels`` (off by default) stores one
teacher softmax per image at ``temperature`` for the plain evaluation (:func:`zoo.condense.evaluate.evaluate_set`),
which otherwise trains on the hard class labels.

Choices the zoo makes:

- an explicit ``factor`` is lowered until each patch has at least ``min_patch`` (8) pixels a side;
- when a class has fewer than ``ipc x factor^2`` candidate images, the rest of the patches are the next-best crops
  of the same images (the authors' loader always has 300 images); fewer crops than that in all is refused.
"""

import torch
import torch.nn.functional as F

from .core import CondenseError, Method, register_method
from .student import random_resized_crop_params, resized_crop
from .teacher import load_teacher

__all__ = ["RDED", "auto_factor", "effective_factor", "random_resized_crops", "score_crops", "select_crops", "stitch"]


def auto_factor(size: int) -> int:
    """The authors' factor for images of ``size`` pixels: 1 up to 64 (CIFAR, Tiny-ImageNet scripts), 2 above."""
    return 1 if size <= 64 else 2


def effective_factor(factor: int | None, size: int, min_patch: int) -> int:
    """The factor a run on ``size`` px images uses: ``factor`` (None: :func:`auto_factor`), lowered until each
    patch has at least ``min_patch`` pixels a side."""
    f = auto_factor(size) if factor is None else int(factor)
    if f < 1:
        raise CondenseError(f"rded's factor must be >= 1, got {f}")
    while f > 1 and size // f < int(min_patch):
        f -= 1
    return f


def random_resized_crops(
    x: torch.Tensor, n: int, size: tuple[int, int], scale: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """``n`` square random resized crops of every image of ``x`` (``(B, C, H, W)`` -> ``(B, n, C, *size)``):
    RDED's ``MultiRandomCrop``, torchvision's ``RandomResizedCrop(size, scale, ratio=(1, 1), antialias=True)``
    drawn ``n`` times per image, image after image."""
    b, c, h, w = x.shape
    out = torch.empty(b, n, c, *size, dtype=x.dtype, device=x.device)
    for i in range(b):
        for k in range(n):
            top, left, ch, cw = random_resized_crop_params(h, w, scale, (1.0, 1.0), generator)
            out[i, k] = resized_crop(x[i], top, left, ch, cw, size)
    return out


def _pad_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Zero padding around the centre (the authors' ``pad``)."""
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def _cells(size: int, factor: int) -> list[int]:
    s, rem = divmod(size, factor)
    return [s + 1 if i < rem else s for i in range(factor)]


@torch.no_grad()
def score_crops(teacher, crops: torch.Tensor, c: int, size: tuple[int, int], batch: int = 256) -> torch.Tensor:
    """The teacher's cross-entropy to class ``c`` of every crop of ``crops`` (``(n, m, C, ph, pw)`` -> ``(n, m)``),
    each zero-padded to ``size`` first (the authors' ``selector``)."""
    n, m = crops.shape[:2]
    flat = crops.reshape(n * m, *crops.shape[2:])
    device = teacher.device if hasattr(teacher, "device") else next(teacher.parameters()).device
    losses = []
    for i in range(0, flat.shape[0], batch):
        x = _pad_to(flat[i : i + batch], *size).to(device)
        y = torch.full((x.shape[0],), c, dtype=torch.long, device=device)
        losses.append(F.cross_entropy(teacher(x), y, reduction="none").cpu())
    return torch.cat(losses).view(n, m)


def select_crops(crops: torch.Tensor, losses: torch.Tensor, need: int) -> torch.Tensor:
    """The ``need`` most realistic crops, best first: each image's lowest-loss crop, the images ranked by it (the
    authors' ``selector``); when images run short, their next-best crops follow, ranked the same way."""
    order = losses.argsort(dim=1)  # each image's crops, best first
    ranked = losses.gather(1, order)
    picks: list[tuple[int, int]] = []
    for r in range(losses.shape[1]):
        best = ranked[:, r].argsort()
        picks.extend((int(i), int(order[i, r])) for i in best)
        if len(picks) >= need:
            break
    return torch.stack([crops[i, k] for i, k in picks[:need]])


def stitch(crops: torch.Tensor, n: int, factor: int, size: tuple[int, int]) -> torch.Tensor:
    """``n`` images of ``size`` from ``n * factor^2`` ranked crops: cell ``k`` (row-major) of image ``j`` holds
    crop ``k * n + j``, resized to its cell by nearest-neighbour interpolation where they differ (the authors'
    ``mix_images``)."""
    out = torch.zeros(n, crops.shape[1], *size, dtype=crops.dtype, device=crops.device)
    k, top = 0, 0
    for hr in _cells(size[0], factor):
        left = 0
        for wr in _cells(size[1], factor):
            part = crops[k * n : (k + 1) * n]
            if tuple(part.shape[-2:]) != (hr, wr):
                part = F.interpolate(part, size=(hr, wr), mode="nearest")
            out[:, :, top : top + hr, left : left + wr] = part
            left += wr
            k += 1
        top += hr
    return out


@register_method
class RDED(Method):
    name = "rded"
    learned = True  # a distillation method (its images are new), though it takes no optimisation steps
    needs_teacher = True
    shards = "classes"
    defaults = {
        "iterations": 0,
        "teacher": "",
        "teacher_weights": None,
        "n_candidates": 300,
        "n_crops": 5,
        "factor": None,
        "min_patch": 8,
        "crop_scale": [0.08, 1.0],
        "soft_labels": False,
        "temperature": 1.0,
        "relabel": "patches",
        "batch": 256,
    }

    def effective_factor(self) -> int:
        return effective_factor(self.options["factor"], min(self.real.shape[1:]), self.options["min_patch"])

    def check(self) -> None:
        o = self.options
        if int(o["n_crops"]) < 1 or int(o["n_candidates"]) < 1:
            raise CondenseError("rded needs n_candidates >= 1 and n_crops >= 1")
        lo, hi = (float(v) for v in o["crop_scale"])
        if not 0 < lo <= hi <= 1:
            raise CondenseError(f"rded's crop_scale must be (min, max) with 0 < min <= max <= 1, got {o['crop_scale']}")
        if not float(o["temperature"]) > 0:
            raise CondenseError(f"rded's temperature must be > 0, got {o['temperature']}")
        if o["relabel"] not in ("patches", "image"):
            raise CondenseError(f"rded's relabel is patches or image, got {o['relabel']!r}")
        f = self.effective_factor()
        need = self.ipc * f * f
        for c, idx in enumerate(self.real.by_class):
            have = min(len(idx), int(o["n_candidates"])) * int(o["n_crops"])
            if have < need:
                raise CondenseError(
                    f"rded needs {need} patches of class {self.real.class_names[c]!r} (ipc {self.ipc} x factor "
                    f"{f}^2) and can cut only {have}: lower --ipc or the factor, or raise n_crops"
                )
        self.teacher = load_teacher(o["teacher"], self.real, self.device, o["teacher_weights"])

    @torch.no_grad()
    def _class_patches(self, c: int, factor: int) -> torch.Tensor:
        o = self.options
        _, h, w = self.real.shape
        psize = (h // factor, w // factor)
        imgs = self.real.class_images(c, int(o["n_candidates"]), self.generator)
        crops = random_resized_crops(imgs, int(o["n_crops"]), psize, tuple(o["crop_scale"]), self.generator)
        losses = score_crops(self.teacher, crops, c, (h, w), int(o["batch"]))
        return select_crops(crops, losses, self.ipc * factor * factor).to(self.device)

    def _skip_class(self, c: int) -> None:
        """Class ``c``'s draws without its work (another process's class): the candidates' permutation and every
        crop box, as :meth:`_class_patches` draws them."""
        o, g = self.options, self.generator
        _, h, w = self.real.shape
        n = len(self.real.by_class[c])
        torch.randperm(n, generator=g)
        scale = tuple(float(v) for v in o["crop_scale"])
        for _ in range(min(n, int(o["n_candidates"])) * int(o["n_crops"])):
            random_resized_crop_params(h, w, scale, (1.0, 1.0), g)

    def setup(self) -> None:
        if not hasattr(self, "teacher"):
            self.check()
        f = self.effective_factor()
        self.factor = f
        _, h, w = self.real.shape
        images, labels = [], []
        for c in range(self.real.num_classes):
            if c in self.classes:
                images.append(stitch(self._class_patches(c, f), self.ipc, f, (h, w)).to(self.device))
            else:  # another process's class: its rows arrive with sync_images
                self._skip_class(c)
                images.append(torch.zeros(self.ipc, *self.real.shape, dtype=self.real.images.dtype, device=self.device))
            labels.append(torch.full((self.ipc,), c, dtype=torch.long))
        self.images = torch.cat(images).to(self.device)
        self.labels = torch.cat(labels).to(self.device)
        self.sync_images()
        self.soft = self._relabel(self.images, f) if self.options["soft_labels"] else None

    @torch.no_grad()
    def _relabel(self, images: torch.Tensor, factor: int) -> torch.Tensor:
        """Soft labels: of each stitched image, or the mean over its cells, each resized to the full size."""
        t, batch = float(self.options["temperature"]), int(self.options["batch"])
        if factor == 1 or self.options["relabel"] == "image":
            return self.teacher.soft_labels(images, t, batch)
        _, h, w = self.real.shape
        probs, top = 0.0, 0
        for hr in _cells(h, factor):
            left = 0
            for wr in _cells(w, factor):
                cell = images[:, :, top : top + hr, left : left + wr]
                cell = F.interpolate(cell, size=(h, w), mode="bilinear", align_corners=False)
                probs = probs + self.teacher.soft_labels(cell, t, batch)
                left += wr
            top += hr
        return probs / (factor * factor)

    def result(self):
        return self.images, self.labels, self.soft, {}

    def describe(self):
        return {"rded_factor": self.factor, "model": self.teacher.name, "teacher": self.teacher.name}
